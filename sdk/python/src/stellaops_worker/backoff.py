"""Capped exponential backoff with full jitter."""

from __future__ import annotations

import random
import threading

__all__ = ["Backoff", "full_jitter_delay", "BOOTSTRAP_BASE_SECONDS", "BOOTSTRAP_MAX_SECONDS"]

# Used only until the server's ``GET /runner-config`` has been read (the SDK cannot ask the
# server for its backoff curve while it cannot reach the server). Afterwards the worker uses
# ``runner-config.backoff.{base_seconds,max_seconds}``.
BOOTSTRAP_BASE_SECONDS = 1.0
BOOTSTRAP_MAX_SECONDS = 30.0


def full_jitter_delay(
    attempt: int, base_seconds: float, max_seconds: float, rng: random.Random | None = None
) -> float:
    """Return one "full jitter" delay in seconds for the given retry attempt.

    ``delay = uniform(0, min(max_seconds, base_seconds * 2 ** attempt))``, the "Full Jitter"
    variant of Marc Brooker, "Exponential Backoff and Jitter", AWS Architecture Blog, 2015
    (https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/). Spreading
    retries uniformly over the whole window keeps many workers from retrying in lock-step
    after an outage.

    Args:
        attempt: 0 for the first retry, 1 for the second, ... (negative is treated as 0).
        base_seconds: window of the first retry, in seconds (> 0).
        max_seconds: cap of the window, in seconds (>= base_seconds).
        rng: random source; tests pass a seeded ``random.Random``.

    Returns:
        A float in ``[0, min(max_seconds, base_seconds * 2 ** attempt)]``.

    Raises:
        ValueError: ``base_seconds <= 0`` or ``max_seconds < base_seconds``.
    """
    if base_seconds <= 0:
        raise ValueError("base_seconds must be > 0")
    if max_seconds < base_seconds:
        raise ValueError("max_seconds must be >= base_seconds")
    attempt = max(0, attempt)
    # 2 ** 64 is already far past any cap; clamping the exponent avoids huge ints/overflow.
    ceiling = min(max_seconds, base_seconds * (2.0 ** min(attempt, 64)))
    return (rng or random).uniform(0.0, ceiling)


class Backoff:
    """A stateful capped exponential backoff with full jitter (thread-safe).

    Each ``next_delay()`` returns ``full_jitter_delay(attempt, base, max)`` and increments
    ``attempt``; ``reset()`` after a success. See "Exponential Backoff and Jitter", Marc
    Brooker, AWS Architecture Blog, 2015.

    Args:
        base_seconds: window of the first retry, in seconds (> 0).
        max_seconds: cap of the window, in seconds (>= base_seconds).
        rng: random source; defaults to the ``random`` module.

    Raises:
        ValueError: as ``full_jitter_delay``.
    """

    def __init__(
        self, base_seconds: float, max_seconds: float, *, rng: random.Random | None = None
    ) -> None:
        full_jitter_delay(0, base_seconds, max_seconds, rng)  # validates the arguments
        self.base_seconds = float(base_seconds)
        self.max_seconds = float(max_seconds)
        self._rng = rng
        self._attempt = 0
        self._lock = threading.Lock()

    @classmethod
    def bootstrap(cls, *, rng: random.Random | None = None) -> Backoff:
        """Backoff used before the server's runner-config is known (1 s base, 30 s cap)."""
        return cls(BOOTSTRAP_BASE_SECONDS, BOOTSTRAP_MAX_SECONDS, rng=rng)

    @property
    def attempt(self) -> int:
        """Number of delays handed out since the last ``reset()``."""
        return self._attempt

    def next_delay(self) -> float:
        """Return the next delay in seconds and advance the attempt counter."""
        with self._lock:
            attempt = self._attempt
            self._attempt += 1
        return full_jitter_delay(attempt, self.base_seconds, self.max_seconds, self._rng)

    def reset(self) -> None:
        """Start again from the first (shortest) window, e.g. after a success."""
        with self._lock:
            self._attempt = 0

    def __repr__(self) -> str:
        return (
            f"Backoff(base_seconds={self.base_seconds}, max_seconds={self.max_seconds}, "
            f"attempt={self._attempt})"
        )
