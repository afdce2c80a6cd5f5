"""Token-bucket arithmetic in integer millionths of a token (exact, never over-grants).

The classic token bucket (Turner 1986; RFC 2697's single-rate meter uses the same rule): a
bucket holds at most ``burst`` tokens, gains ``rate_per_second`` tokens per second, and each
lease takes one. Hence, over any window of W seconds, at most ``burst + rate * W`` leases.

State is ``(tokens_micro, refilled_at)``: millionths of a token as of ``refilled_at``
(``refilled_at`` None: a bucket never used, full). Refilling floors the fraction it gains, so
rounding can only under-grant (by at most a millionth of a token per refill); products and quotients
with the float rate are exact (``fractions.Fraction`` of its binary value), never rounded up.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from fractions import Fraction

MICRO = 1_000_000


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * MICRO + delta.microseconds


@dataclass(frozen=True)
class BucketState:
    """``tokens_micro`` (0..burst x 1e6) as of ``refilled_at`` (aware; None = full, unused)."""

    tokens_micro: int
    refilled_at: datetime | None

    @property
    def tokens(self) -> float:
        """Tokens as a decimal number (for display)."""
        return self.tokens_micro / MICRO

    @property
    def whole_tokens(self) -> int:
        """How many leases the bucket can grant right now (after a refill)."""
        return self.tokens_micro // MICRO


@dataclass(frozen=True)
class Bucket:
    """A bucket's parameters: ``rate_per_second`` > 0 tokens per second, ``burst`` >= 1 tokens.

    Raises:
        ValueError: a non-positive or non-finite rate, or a burst below 1.
    """

    rate_per_second: float
    burst: int

    def __post_init__(self) -> None:
        if not (math.isfinite(self.rate_per_second) and self.rate_per_second > 0):
            raise ValueError("rate_per_second must be a finite number above 0")
        if self.burst < 1:
            raise ValueError("burst must be at least 1")

    @property
    def capacity_micro(self) -> int:
        return self.burst * MICRO

    def refill(self, state: BucketState, now: datetime) -> BucketState:
        """The state at ``now``: tokens gained since ``refilled_at``, capped at ``burst``.

        A ``now`` earlier than ``refilled_at`` (a clock read before another claimer's) gains
        nothing and keeps the later time, so time never runs backwards in the bucket.
        """
        if state.refilled_at is None:
            return BucketState(self.capacity_micro, now)
        at = max(state.refilled_at, now)
        missing = self.capacity_micro - state.tokens_micro
        if missing <= 0:
            return BucketState(self.capacity_micro, at)
        elapsed = _micros(at - state.refilled_at)
        # Beyond the time to fill up, elapsed time gains nothing: clamp before multiplying so
        # the float product stays far below 2**53.
        useful = min(elapsed, math.ceil(missing / Fraction(self.rate_per_second)) + 1)
        # Exact (the float rate's own binary value times an integer): a float product could
        # round up past the true value and over-grant by a fraction of a millionth.
        gained = min(missing, math.floor(Fraction(self.rate_per_second) * useful))
        return BucketState(state.tokens_micro + gained, at)

    def take(self, state: BucketState, now: datetime, wanted: int) -> tuple[int, BucketState]:
        """Refill to ``now`` and take up to ``wanted`` whole tokens.

        Returns:
            ``(granted, new_state)`` with ``0 <= granted <= wanted``.
        """
        state = self.refill(state, now)
        granted = max(0, min(wanted, state.whole_tokens))
        return granted, BucketState(state.tokens_micro - granted * MICRO, state.refilled_at)

    def next_token_at(self, state: BucketState, now: datetime) -> datetime | None:
        """When the bucket next gains a whole token (None when full)."""
        state = self.refill(state, now)
        missing = MICRO - state.tokens_micro % MICRO
        if state.tokens_micro >= self.capacity_micro:
            return None
        assert state.refilled_at is not None
        return state.refilled_at + timedelta(
            microseconds=math.ceil(missing / Fraction(self.rate_per_second)))
