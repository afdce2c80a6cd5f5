"""Admission under many concurrent claimers on PostgreSQL: caps are never exceeded at any
sampled instant, and no window holds more leases than burst + rate x window."""
from __future__ import annotations

import random
import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from ledger.models import Lease
from orchestrator.leasing import lease_ack
from tests.waiting import wait_until

from .admission_helpers import claim, quota, ready_jobs, source

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.postgres]

CLAIMERS = 8


def _claimers(work, seconds: float) -> list[BaseException]:
    """Run ``work(rng)`` in CLAIMERS threads until ``seconds`` pass; return their errors."""
    errors: list[BaseException] = []
    deadline = time.monotonic() + seconds

    def loop(seed: int) -> None:
        rng = random.Random(seed)
        try:
            while time.monotonic() < deadline:
                work(rng)
        except BaseException as exc:  # reported by the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=loop, args=(i,)) for i in range(CLAIMERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + 60)
    assert not any(t.is_alive() for t in threads)
    return errors


def _max_overlap(intervals: list[tuple[object, object]]) -> int:
    """Most intervals [start, end) open at one instant (sweep; an end before a start at a tie)."""
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals],
                    key=lambda p: (p[0], p[1]))
    best = now = 0
    for _, step in points:
        now += step
        best = max(best, now)
    return best


def test_caps_are_never_exceeded_with_concurrent_claimers():
    capped = source("capped")
    quota(max_active=5)  # the tenant: 5 leased jobs at most
    quota(source_id=capped.pk, max_active=2)  # and 2 of them from this source
    ready_jobs(400)
    ready_jobs(400, source_id=capped.pk, priority=5)
    samples: list[tuple[int, int]] = []
    stop = threading.Event()

    def sample() -> None:
        try:
            with connections["default"].cursor() as cursor:
                while not stop.is_set():
                    cursor.execute(
                        "SELECT COUNT(*), COUNT(*) FILTER (WHERE source_id = %s) FROM ledger_job"
                        " WHERE status = 'leased' AND tenant = 'acme'", [capped.pk])
                    samples.append(cursor.fetchone())
        finally:
            connections["default"].close()

    def work(rng: random.Random) -> None:
        for grant in claim(max_jobs=rng.randint(1, 4), runner=f"r{rng.random()}"):
            time.sleep(rng.uniform(0, 0.004))  # hold the lease a little
            lease_ack(tenant="acme", lease_id=grant.lease.id)

    sampler = threading.Thread(target=sample)
    sampler.start()
    errors = _claimers(work, seconds=4)
    stop.set()
    sampler.join()
    assert not errors, errors
    leases = list(Lease.objects.filter(status="acked").values_list("leased_at", "ended_at",
                                                                      "source_id"))
    assert len(leases) > 100, "the claimers made too little progress to prove anything"
    assert len(samples) > 100
    assert max(total for total, _ in samples) <= 5
    assert max(src for _, src in samples) <= 2
    assert max(total for total, _ in samples) == 5, "the cap was never reached: no proof"
    # the same from the ledger: lease intervals (database clock) never overlap beyond the caps
    assert _max_overlap([(s, e) for s, e, _ in leases]) <= 5
    assert _max_overlap([(s, e) for s, e, src in leases if src == capped.pk]) <= 2


def test_no_window_holds_more_than_burst_plus_rate_times_window():
    rate, burst = 25.0, 5
    quota(job_type="test.noop", rate_per_second=rate, burst=burst)
    ready_jobs(2000)

    def work(rng: random.Random) -> None:
        for grant in claim(max_jobs=rng.randint(1, 3), runner=f"r{rng.random()}"):
            lease_ack(tenant="acme", lease_id=grant.lease.id)

    started = time.monotonic()
    errors = _claimers(work, seconds=3)
    elapsed = time.monotonic() - started
    assert not errors, errors
    times = sorted(Lease.objects.values_list("leased_at", flat=True))
    for i in range(len(times)):
        for j in range(i, len(times)):
            window = (times[j] - times[i]) / timedelta(seconds=1)
            assert j - i + 1 <= burst + rate * window + 1e-6, (i, j, window)
    # and the bucket is not starving the claimers either: close to the rate over the run
    assert len(times) >= burst + rate * (elapsed - 0.5) * 0.8, (len(times), elapsed)


def test_a_half_open_breaker_lets_exactly_one_probe_out_to_concurrent_claimers():
    from quotas.models import CircuitBreaker

    flaky = source("flaky")
    CircuitBreaker.objects.create(tenant="acme", source_id=flaky.pk, state="half_open",
                                  changed_at=timezone.now())
    ready_jobs(60, source_id=flaky.pk)

    def work(rng: random.Random) -> None:
        claim(max_jobs=1, runner=f"r{rng.random()}")  # holds what it gets: the probe stays out

    errors = _claimers(work, seconds=1.5)
    assert not errors, errors
    assert Lease.objects.filter(source_id=flaky.pk).count() == 1
    assert CircuitBreaker.objects.get(source_id=flaky.pk).probe_job_id is not None


def test_no_lease_is_granted_in_a_scope_after_its_pause_returns():
    from ledger.clock import db_now
    from ledger.services import Actor
    from quotas.pauses import pause_add

    ready_jobs(3000)
    paused_at: list[object] = []

    def work(rng: random.Random) -> None:
        for grant in claim(max_jobs=rng.randint(1, 3), runner=f"r{rng.random()}"):
            lease_ack(tenant="acme", lease_id=grant.lease.id)

    def pause_soon() -> None:
        try:
            wait_until(lambda: Lease.objects.count() >= 20, "the claimers to lease", 30)
            pause_add(tenant="acme", key="deploy", actor=Actor.system("test"),
                      reason="deploy", now=db_now())
            paused_at.append(db_now())
        finally:
            connection.close()

    pauser = threading.Thread(target=pause_soon)
    pauser.start()
    errors = _claimers(work, seconds=1.5)
    claimers_done = db_now()
    pauser.join()
    assert not errors, errors
    # the pause got its dispatch lock while the claimers were still claiming (no starvation)
    assert paused_at and paused_at[0] < claimers_done
    leased = list(Lease.objects.values_list("leased_at", flat=True))
    assert len(leased) > 20, "the claimers made too little progress to prove anything"
    assert max(leased) < paused_at[0]


def test_a_cap_set_while_fast_claims_run_holds_for_every_later_lease():
    """Fast claims (no quota yet) share the dispatch row; the quota write takes it exclusively,
    so every lease granted after the write returns was admitted under the cap."""
    from ledger.clock import db_now
    from ledger.services import Actor
    from quotas.services import Limits, quota_set

    ready_jobs(3000)
    claim(max_jobs=1)  # creates the tenant's dispatch row: later claims take the fast path
    capped_at: list[object] = []

    def work(rng: random.Random) -> None:
        for grant in claim(max_jobs=rng.randint(1, 3), runner=f"r{rng.random()}"):
            time.sleep(rng.uniform(0, 0.003))  # hold the lease a little
            lease_ack(tenant="acme", lease_id=grant.lease.id)

    def cap_soon() -> None:
        try:
            wait_until(lambda: Lease.objects.count() >= 30, "the claimers to lease", 30)
            quota_set(tenant="acme", limits=Limits(max_active=2), actor=Actor.system("test"),
                      reason="cap", ticket="T-1", now=db_now())
            capped_at.append(db_now())
        finally:
            connection.close()

    capper = threading.Thread(target=cap_soon)
    capper.start()
    errors = _claimers(work, seconds=2.5)
    capper.join()
    assert not errors, errors
    leases = list(Lease.objects.exclude(ended_at=None).values_list("leased_at", "ended_at"))
    later = [s for s, _ in leases if s > capped_at[0]]
    assert len(later) > 20, "too few leases after the cap to prove anything"
    for start in later:  # each later lease found fewer than 2 others active when it began
        others = sum(1 for s, e in leases if s < start < e)
        assert others < 2, (start, others)


def test_throttle_and_quota_changes_during_claims_never_deadlock():
    """Writers take the dispatch row before the quota row, as claims do (a reversed order
    deadlocks: PostgreSQL would abort one side with an error)."""
    from ledger.clock import db_now
    from ledger.services import Actor
    from quotas.services import throttle_set

    quota(job_type="test.noop", rate_per_second=500.0, burst=50)
    ready_jobs(3000)
    changes: list[BaseException | int] = []

    def work(rng: random.Random) -> None:
        for grant in claim(max_jobs=rng.randint(1, 3), runner=f"r{rng.random()}"):
            lease_ack(tenant="acme", lease_id=grant.lease.id)

    def retune() -> None:
        try:
            wait_until(lambda: Lease.objects.count() >= 20, "the claimers to lease", 30)
            for n in range(20):
                throttle_set(tenant="acme", job_type="test.noop", rate_per_second=400.0 + n,
                             burst=50, actor=Actor.system("test"), reason="retune",
                             ticket="T-2", now=db_now())
            changes.append(20)
        except BaseException as exc:  # reported by the test
            changes.append(exc)
        finally:
            connection.close()

    tuner = threading.Thread(target=retune)
    tuner.start()
    errors = _claimers(work, seconds=2.5)
    tuner.join(timeout=60)
    assert not errors, errors
    assert changes == [20]
