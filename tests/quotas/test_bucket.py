"""Token-bucket arithmetic: property tests (hypothesis) of the bound and the bookkeeping."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quotas.bucket import MICRO, Bucket, BucketState

T0 = datetime(2026, 1, 1, tzinfo=UTC)
rates = st.floats(min_value=0.001, max_value=10_000, allow_nan=False, allow_infinity=False)
bursts = st.integers(min_value=1, max_value=1000)
# a run of (microseconds since the previous request, tokens wanted)
requests = st.lists(st.tuples(st.integers(0, 5_000_000), st.integers(0, 50)), max_size=200)


def _run(bucket: Bucket, steps: list[tuple[int, int]], state: BucketState | None = None):
    state = state or BucketState(0, None)
    at = T0
    taken = []  # (instant, granted)
    for gap, wanted in steps:
        at += timedelta(microseconds=gap)
        granted, state = bucket.take(state, at, wanted)
        assert 0 <= granted <= wanted
        assert 0 <= state.tokens_micro <= bucket.burst * MICRO
        taken.append((at, granted))
    return taken, state


@settings(max_examples=300, deadline=None)
@given(rate=rates, burst=bursts, steps=requests)
def test_no_window_grants_more_than_burst_plus_rate_times_window(rate, burst, steps):
    bucket = Bucket(rate, burst)
    taken, _ = _run(bucket, steps)
    # every window [t_i, t_j] between two grant instants
    for i in range(len(taken)):
        total = 0
        for j in range(i, len(taken)):
            total += taken[j][1]
            window = (taken[j][0] - taken[i][0]).total_seconds()
            assert total <= burst + rate * window + 1e-9, (i, j, total, window)


@settings(max_examples=200, deadline=None)
@given(rate=rates, burst=bursts, gap=st.integers(0, 10**12))
def test_refill_never_exceeds_burst_and_never_runs_backwards(rate, burst, gap):
    bucket = Bucket(rate, burst)
    start = BucketState(0, T0)
    later = bucket.refill(start, T0 + timedelta(microseconds=gap))
    assert 0 <= later.tokens_micro <= burst * MICRO
    assert later.refilled_at == T0 + timedelta(microseconds=gap)
    # an earlier clock reading gains nothing and keeps the later time
    earlier = bucket.refill(later, T0)
    assert earlier == later


@settings(max_examples=200, deadline=None)
@given(rate=rates, burst=bursts, seconds=st.integers(0, 3600))
def test_a_drained_bucket_regains_rate_times_elapsed_up_to_burst(rate, burst, seconds):
    bucket = Bucket(rate, burst)
    state = bucket.refill(BucketState(0, T0), T0 + timedelta(seconds=seconds))
    expected = min(burst * MICRO, Fraction(rate) * seconds * MICRO)  # exact
    # floors only: at most one millionth of a token under, never over
    assert expected - 1 < state.tokens_micro <= expected


@settings(max_examples=200, deadline=None)
@given(rate=rates, burst=bursts, steps=requests)
def test_next_token_at_is_when_a_whole_token_appears(rate, burst, steps):
    bucket = Bucket(rate, burst)
    _, state = _run(bucket, steps)
    at = state.refilled_at or T0
    nxt = bucket.next_token_at(state, at)
    now_tokens = bucket.refill(state, at).whole_tokens
    if nxt is None:
        assert now_tokens == burst
    else:
        assert nxt > at
        assert bucket.refill(state, nxt).whole_tokens == now_tokens + 1
        before = nxt - timedelta(microseconds=1)
        assert bucket.refill(state, before).whole_tokens == now_tokens


def test_a_new_bucket_starts_full():
    granted, state = Bucket(2.0, 5).take(BucketState(0, None), T0, 10)
    assert granted == 5 and state.tokens_micro == 0


@pytest.mark.parametrize("rate, burst", [(0, 1), (-1, 1), (float("nan"), 1), (float("inf"), 1),
                                         (1.0, 0)])
def test_bad_parameters_are_refused(rate, burst):
    with pytest.raises(ValueError):
        Bucket(rate, burst)
