"""The per-source circuit breaker: closed -> open -> half-open (one probe) -> closed/re-open."""
from __future__ import annotations

from datetime import timedelta

import pytest

from orchestrator.breakers import breakers_advance
from orchestrator.leasing import lease_ack, lease_fail
from quotas.models import AdmissionEvent, CircuitBreaker

from .admission_helpers import claim, source

pytestmark = pytest.mark.django_db


def _fail(grant) -> None:
    lease_fail(tenant="acme", lease_id=grant.lease.id, retryable=True,
               error={"code": "upstream_500", "message": "feed answered 500"})


def _open_breaker(enqueue, flaky):
    CircuitBreaker.objects.create(tenant="acme", source_id=flaky.pk, min_samples=4,
                                  failure_ratio=0.5, window_seconds=300, cooldown_seconds=30,
                                  changed_at=flaky.created_at - timedelta(days=1))
    for _ in range(12):
        enqueue(source="flaky", max_attempts=5)
    for grant in claim(max_jobs=4):
        _fail(grant)
    breaker = CircuitBreaker.objects.get(source_id=flaky.pk)
    assert breaker.state == "open"
    return breaker


def test_failures_open_the_breaker_and_only_that_source_stops(enqueue):
    flaky = source("flaky")
    _open_breaker(enqueue, flaky)
    other = enqueue(source="steady")
    assert [g.job.pk for g in claim(max_jobs=10)] == [other.pk]
    event = AdmissionEvent.objects.get(type="breaker.opened")
    assert event.source_id == flaky.pk and "4 of 4 attempts failed" in event.reason


def test_half_open_lets_one_probe_through_and_its_success_closes(enqueue):
    flaky = source("flaky")
    breaker = _open_breaker(enqueue, flaky)
    assert breakers_advance(now=breaker.opened_at + timedelta(seconds=29)) == {}
    assert breakers_advance(now=breaker.opened_at + timedelta(seconds=30)) == {"half_open": 1}
    probe = claim(max_jobs=10)
    assert len(probe) == 1  # one probe, however many jobs are ready and asked for
    assert claim(max_jobs=10) == []
    lease_ack(tenant="acme", lease_id=probe[0].lease.id)
    assert breakers_advance() == {"closed": 1}
    assert len(claim(max_jobs=3)) == 3  # the earlier failures no longer count
    types = list(AdmissionEvent.objects.order_by("id").values_list("type", flat=True))
    assert types == ["breaker.opened", "breaker.half_opened", "breaker.closed"]


def test_a_failed_probe_reopens_the_breaker(enqueue):
    flaky = source("flaky")
    breaker = _open_breaker(enqueue, flaky)
    breakers_advance(now=breaker.opened_at + timedelta(seconds=30))
    (probe,) = claim(max_jobs=10)
    _fail(probe)  # settles at once: the failure path evaluates the breaker
    breaker.refresh_from_db()
    assert breaker.state == "open" and breaker.probe_job_id is None
    assert claim(max_jobs=10) == []
    assert AdmissionEvent.objects.filter(type="breaker.reopened").count() == 1


def test_expired_leases_count_as_failures(enqueue):
    from ledger.clock import db_now
    from orchestrator.reaper import leases_reap_expired

    flaky = source("flaky")
    now = db_now()
    CircuitBreaker.objects.create(tenant="acme", source_id=flaky.pk, min_samples=2,
                                  changed_at=now - timedelta(days=1))
    for _ in range(3):
        enqueue(source="flaky")
    assert len(claim(max_jobs=2, now=now)) == 2
    leases_reap_expired(now=now + timedelta(hours=1))
    assert CircuitBreaker.objects.get(source_id=flaky.pk).state == "open"
