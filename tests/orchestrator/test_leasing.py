"""Lease lifecycle at the service layer, with the clock passed in (``now=``)."""
from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.forms.models import model_to_dict

from ledger.clock import db_now
from ledger.exceptions import NotFound
from ledger.models import Job, JobEvent, JobLogLine, Lease
from ledger.services import Actor, job_cancel
from orchestrator.exceptions import LeaseLost
from orchestrator.lease_config import LeaseConfig
from orchestrator.leasing import (
    LogLineIn,
    lease_ack,
    lease_claim,
    lease_fail,
    lease_heartbeat,
    lease_logs_append,
    lease_release,
)
from orchestrator.reaper import leases_reap_expired
from orchestrator.scheduling import jobs_promote_due

pytestmark = pytest.mark.django_db
T = "acme"
LEASE = timedelta(seconds=30)


def claim_one(now, runner="r1", **kw):
    grants = lease_claim(tenant=T, runner_id=runner, job_types=["test.noop"], max_jobs=1,
                         lease_for=kw.pop("lease_for", LEASE), now=now, **kw)
    assert len(grants) == 1
    return grants[0]


def snapshot(job_id):
    job = model_to_dict(Job.objects.get(pk=job_id))
    return job, Lease.objects.count(), JobEvent.objects.count(), JobLogLine.objects.count()


def test_claim_takes_higher_priority_first_then_oldest(enqueue):
    older_low = enqueue(priority=0)
    high = enqueue(priority=5)
    enqueue(priority=0)
    now = db_now()
    grants = lease_claim(tenant=T, runner_id="r", job_types=["test.noop"], max_jobs=2, now=now)
    assert [g.job.pk for g in grants] == [high.pk, older_low.pk]


def test_claim_sees_only_its_tenant_and_job_types(enqueue):
    enqueue(tenant="other")
    enqueue(job_type="test.other")
    assert lease_claim(tenant=T, runner_id="r", job_types=["test.noop"], max_jobs=5) == []


def test_expired_lease_is_reaped_and_reclaimed_with_a_higher_fencing_token(enqueue):
    job = enqueue()
    t0 = db_now()
    old = claim_one(t0, runner="slow")
    after = t0 + LEASE + timedelta(seconds=1)
    result = leases_reap_expired(now=after, rng=random.Random(1))
    assert result.expired == 1 and result.by_status == {"scheduled": 1}
    jobs_promote_due(now=after + timedelta(hours=1))
    new = claim_one(after + timedelta(hours=1), runner="fast")
    assert new.lease.fencing_token == old.lease.fencing_token + 1
    assert Lease.objects.get(pk=old.lease.pk).status == "expired"

    later = after + timedelta(hours=1, seconds=1)
    before = snapshot(job.pk)
    calls = [
        lambda: lease_heartbeat(tenant=T, lease_id=old.lease.pk, now=later),
        lambda: lease_ack(tenant=T, lease_id=old.lease.pk, result={"x": 1}, now=later),
        lambda: lease_fail(tenant=T, lease_id=old.lease.pk, error={"code": "e", "message": "m"},
                           retryable=True, now=later),
        lambda: lease_release(tenant=T, lease_id=old.lease.pk, now=later),
        lambda: lease_logs_append(tenant=T, lease_id=old.lease.pk, max_per_job=10, now=later,
                                  lines=[LogLineIn(ts=later, level="info", message="hi")]),
    ]
    for call in calls:
        with pytest.raises(LeaseLost):
            call()
        assert snapshot(job.pk) == before
    lease_ack(tenant=T, lease_id=new.lease.pk, now=later)
    assert Job.objects.get(pk=job.pk).status == "succeeded"


def test_an_expired_but_unreaped_lease_is_already_lost(enqueue):
    enqueue()
    t0 = db_now()
    grant = claim_one(t0)
    with pytest.raises(LeaseLost):
        lease_ack(tenant=T, lease_id=grant.lease.pk, now=t0 + LEASE)


def test_heartbeats_keep_a_long_job_leased_past_several_lease_lengths(enqueue):
    job = enqueue()
    t = db_now()
    grant = claim_one(t)
    for _ in range(10):  # 10 x 20 s = 200 s, almost 7 lease lengths
        t += timedelta(seconds=20)
        assert leases_reap_expired(now=t).expired == 0
        state = lease_heartbeat(tenant=T, lease_id=grant.lease.pk, now=t)
        assert state.lease_expires_at == t + LEASE
    lease_ack(tenant=T, lease_id=grant.lease.pk, now=t + timedelta(seconds=1))
    job.refresh_from_db()
    assert job.status == "succeeded" and job.attempt == 1


def test_retryable_failures_back_off_then_dead_letter(enqueue):
    job = enqueue(max_attempts=3)
    config = LeaseConfig.from_settings()
    t = db_now()
    for attempt in (1, 2):
        grant = claim_one(t)
        assert grant.lease.attempt == attempt
        outcome = lease_fail(tenant=T, lease_id=grant.lease.pk, retryable=True,
                             error={"code": "upstream_503", "message": "try later"}, now=t)
        assert outcome.job_status == "scheduled"
        assert t <= outcome.next_attempt_at <= t + config.backoff.ceiling(attempt)
        assert jobs_promote_due(now=outcome.next_attempt_at - timedelta(microseconds=1)) == 0
        t = outcome.next_attempt_at
        assert jobs_promote_due(now=t) == 1
    grant = claim_one(t)
    outcome = lease_fail(tenant=T, lease_id=grant.lease.pk, retryable=True,
                         error={"code": "upstream_503", "message": "still down"}, now=t)
    assert outcome.job_status == "dead_lettered" and outcome.next_attempt_at is None
    job.refresh_from_db()
    assert (job.status, job.attempt, job.last_error["code"]) == ("dead_lettered", 3, "upstream_503")
    types = list(JobEvent.objects.filter(job=job).values_list("type", flat=True).order_by("id"))
    assert types.count("job.retry_scheduled") == 2 and types[-1] == "job.dead_lettered"


def test_backoff_is_capped_full_jitter():
    config = LeaseConfig.from_settings()
    rng = random.Random(7)
    for attempt in range(1, 40):
        ceiling = config.backoff.ceiling(attempt)
        assert ceiling <= config.backoff.cap
        assert timedelta(0) <= config.backoff.delay(attempt, rng=rng) <= ceiling
    assert config.backoff.ceiling(1) == config.backoff.base
    assert config.backoff.ceiling(3) == min(config.backoff.cap, config.backoff.base * 4)


def test_non_retryable_failure_dead_letters_at_once(enqueue):
    job = enqueue(max_attempts=5)
    grant = claim_one(db_now())
    outcome = lease_fail(tenant=T, lease_id=grant.lease.pk, retryable=False,
                         error={"code": "malformed_document", "message": "bad"})
    assert outcome.job_status == "dead_lettered"
    job.refresh_from_db()
    assert job.attempt == 1


def test_fail_repeated_returns_the_recorded_outcome(enqueue):
    enqueue()
    grant = claim_one(db_now())
    first = lease_fail(tenant=T, lease_id=grant.lease.pk, retryable=False,
                       error={"code": "x", "message": ""})
    again = lease_fail(tenant=T, lease_id=grant.lease.pk, retryable=False,
                       error={"code": "x", "message": ""})
    assert (again.job_status, again.replayed) == (first.job_status, True)


def test_release_consumes_no_attempt(enqueue):
    job = enqueue(max_attempts=1)
    for _ in range(3):
        grant = claim_one(db_now())
        assert grant.lease.attempt == 1
        assert lease_release(tenant=T, lease_id=grant.lease.pk, reason="shutdown").job_status == "ready"
    job.refresh_from_db()
    assert (job.status, job.attempt, job.fencing_token) == ("ready", 0, 3)


def test_reaper_dead_letters_when_attempts_are_used_up(enqueue):
    job = enqueue(max_attempts=1)
    t0 = db_now()
    claim_one(t0)
    assert leases_reap_expired(now=t0 + LEASE).by_status == {"dead_lettered": 1}
    job.refresh_from_db()
    assert job.status == "dead_lettered" and job.last_error["code"] == "lease_expired"


def test_reaper_never_touches_terminal_jobs(enqueue):
    job = enqueue()
    t0 = db_now()
    grant = claim_one(t0)
    lease_ack(tenant=T, lease_id=grant.lease.pk, now=t0)
    assert leases_reap_expired(now=t0 + timedelta(days=1)).expired == 0
    job.refresh_from_db()
    assert job.status == "succeeded"


def test_cancel_of_a_leased_job_reaches_the_runner_through_its_heartbeat(enqueue):
    job = enqueue()
    grant = claim_one(db_now())
    job_cancel(tenant=T, job_id=job.pk, actor=Actor.system("op"), reason="wrong feed")
    assert lease_heartbeat(tenant=T, lease_id=grant.lease.pk).cancel_requested is True
    outcome = lease_fail(tenant=T, lease_id=grant.lease.pk, retryable=False,
                         error={"code": "canceled", "message": "stopped"})
    assert outcome.job_status == "canceled"


def test_claim_id_returns_the_same_leases_and_never_new_ones(enqueue):
    for priority in (1, 5, 0, 0):
        enqueue(priority=priority)
    first = lease_claim(tenant=T, runner_id="r", job_types=["test.noop"], max_jobs=2, claim_id="c1")
    again = lease_claim(tenant=T, runner_id="r", job_types=["test.noop"], max_jobs=2, claim_id="c1")
    assert [g.lease.pk for g in again] == [g.lease.pk for g in first]
    assert Lease.objects.count() == 2
    other_runner = lease_claim(tenant=T, runner_id="r2", job_types=["test.noop"], max_jobs=2,
                               claim_id="c1")
    assert {g.lease.pk for g in other_runner}.isdisjoint({g.lease.pk for g in first})


def test_an_empty_claim_id_may_poll_again(enqueue):
    assert lease_claim(tenant=T, runner_id="r", job_types=["test.noop"], max_jobs=1,
                       claim_id="c2") == []
    enqueue()
    assert len(lease_claim(tenant=T, runner_id="r", job_types=["test.noop"], max_jobs=1,
                           claim_id="c2")) == 1


def test_unknown_lease_is_not_found():
    import uuid

    with pytest.raises(NotFound):
        lease_heartbeat(tenant=T, lease_id=uuid.uuid4())


def test_log_lines_are_bounded_per_job(enqueue):
    enqueue()
    grant = claim_one(db_now())
    now = db_now()
    lines = [LogLineIn(ts=now, level="info", message=str(i)) for i in range(8)]
    assert lease_logs_append(tenant=T, lease_id=grant.lease.pk, lines=lines, max_per_job=10) == 8
    assert lease_logs_append(tenant=T, lease_id=grant.lease.pk, lines=lines, max_per_job=10) == 2
    assert JobLogLine.objects.count() == 10


def test_claim_over_several_job_types_takes_the_best_across_them(enqueue):
    enqueue(job_type="a.x", priority=1)
    best = enqueue(job_type="b.y", priority=9)
    second = enqueue(job_type="a.x", priority=5)
    enqueue(job_type="c.z", priority=99)  # not asked for
    grants = lease_claim(tenant=T, runner_id="r", job_types=["a.x", "b.y"], max_jobs=2)
    assert [g.job.pk for g in grants] == [best.pk, second.pk]
    assert Job.objects.filter(status="leased").count() == 2
