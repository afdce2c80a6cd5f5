"""Retry backoff: capped exponential backoff with full jitter.

Source: Marc Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015:
``sleep = random_between(0, min(cap, base * 2 ** attempt))``. Full jitter spreads retries of a
failed batch over the whole window, so a flaky upstream is not hit by synchronized waves.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings


@dataclass(frozen=True)
class BackoffPolicy:
    """``base`` and ``cap`` of the curve; the server's single definition is ``from_settings()``."""

    base: timedelta
    cap: timedelta

    @classmethod
    def from_settings(cls) -> BackoffPolicy:
        return cls(
            base=timedelta(seconds=settings.ORCH_RETRY_BASE_SECONDS),
            cap=timedelta(seconds=settings.ORCH_RETRY_MAX_SECONDS),
        )

    def ceiling(self, attempt: int) -> timedelta:
        """Upper bound of the delay after failed attempt number ``attempt`` (1-based)."""
        exponent = max(0, min(attempt - 1, 32))  # 2**32 * base already exceeds any sane cap
        return min(self.cap, self.base * (2**exponent))

    def delay(self, attempt: int, *, rng: random.Random | None = None) -> timedelta:
        """A uniformly random delay in ``[0, ceiling(attempt)]`` (full jitter)."""
        ceiling = self.ceiling(attempt).total_seconds()
        return timedelta(seconds=(rng or random).uniform(0.0, ceiling))
