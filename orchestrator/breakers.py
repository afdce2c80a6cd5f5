"""Circuit breakers per source (Nygard, *Release It!*, 2007: closed -> open -> half-open).

* closed -> open: after a failed or expired attempt of the source's job, the outcomes of the
  source's attempts that ended within the last ``window_seconds`` (and since the breaker last
  changed state) are counted; with at least ``min_samples`` of them and a failure ratio at or
  above ``failure_ratio``, the breaker opens. Failures are leases ended ``failed`` or
  ``expired``; successes ``acked``; released attempts are no outcome.
* open -> half-open: ``cooldown_seconds`` after opening (the beat task ``orch.breakers.advance``).
* half-open: the claim lets exactly one job of the source through (the probe,
  ``probe_job_id``); its success closes the breaker, its failure or expiry re-opens it (a new
  cool-down); a probe that ends otherwise (released, canceled) frees the slot for another.

While open, or half-open with the probe out, no job of the source is handed out; other sources
are not affected. Every change appends an ``AdmissionEvent`` (breaker.opened / half_opened /
closed / reopened) with the reason. Transitions lock the breaker row, so concurrent evaluators
(two beats, many failing runners) apply each change once.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Count, Q

from ledger.clock import db_now, require_aware
from ledger.models import Job, Lease, LeaseStatus
from ledger.services import Actor
from ledger.states import JobStatus
from quotas.audit import dispatch_lock, event_append, lock, lock_or_insert
from quotas.models import BreakerState, CircuitBreaker

FAILED = (LeaseStatus.FAILED, LeaseStatus.EXPIRED)
ACTOR = Actor.system("breaker")


def _now(now: datetime | None) -> datetime:
    return require_aware(now) if now is not None else db_now()


def _change(breaker: CircuitBreaker, state: str, *, now: datetime, type: str, reason: str,
            data: dict[str, object]) -> None:
    old = breaker.state
    breaker.state = state
    breaker.changed_at = now
    if state == BreakerState.OPEN:
        breaker.opened_at = now
    if state != BreakerState.HALF_OPEN:
        breaker.probe_job_id = None
    breaker.save(update_fields=["state", "changed_at", "opened_at", "probe_job_id"])
    event_append(tenant=breaker.tenant, type=type, source_id=breaker.source_id, actor=ACTOR,
                 reason=reason, ticket="", now=now, data={"from": old, "to": state, **data})


def breaker_window(breaker: CircuitBreaker, now: datetime) -> tuple[int, int]:
    """``(failures, outcomes)`` of the source's attempts ended in the breaker's window (the last
    ``window_seconds``, and not before its last state change)."""
    floor = max(now - timedelta(seconds=breaker.window_seconds), breaker.changed_at)
    counts = Lease.objects.filter(source_id=breaker.source_id, ended_at__gt=floor,
                                  ended_at__lte=now).aggregate(
        failures=Count("id", filter=Q(status__in=FAILED)),
        outcomes=Count("id", filter=Q(status__in=(*FAILED, LeaseStatus.ACKED))))
    return counts["failures"], counts["outcomes"]


def breaker_record_failure(*, tenant: str, source_id: int | None,
                           now: datetime | None = None) -> str | None:
    """Evaluate the source's breaker after one of its attempts failed or expired (call after
    that attempt's transaction committed). Creates the breaker (closed, model defaults) on a
    source's first failure. Returns the breaker's state, or None for a job without a source."""
    if not source_id:
        return None
    with transaction.atomic():
        # A claim in flight finishes before an opening commits; later claims see it.
        dispatch_lock(tenant)
        now = _now(now)
        breaker, _ = lock_or_insert(
            CircuitBreaker, CircuitBreaker(tenant=tenant, source_id=source_id, changed_at=now),
            source_id=source_id)
        if breaker.state == BreakerState.CLOSED:
            failures, outcomes = breaker_window(breaker, now)
            if outcomes >= breaker.min_samples and failures >= breaker.failure_ratio * outcomes:
                _change(breaker, BreakerState.OPEN, now=now, type="breaker.opened",
                        reason=(f"{failures} of {outcomes} attempts failed within "
                                f"{breaker.window_seconds} s (threshold {breaker.failure_ratio:g})"),
                        data={"failures": failures, "outcomes": outcomes})
        elif breaker.state == BreakerState.HALF_OPEN:
            _probe_settle(breaker, now)
        return breaker.state


def _probe_settle(breaker: CircuitBreaker, now: datetime) -> None:
    """Close, re-open or free the probe slot of a half-open breaker from its probe's fate."""
    if breaker.probe_job_id is None:
        return
    job = Job.objects.filter(pk=breaker.probe_job_id).only("status").first()
    if job is not None and job.status == JobStatus.LEASED:
        return  # the probe is still running
    if job is not None and job.status == JobStatus.SUCCEEDED:
        _change(breaker, BreakerState.CLOSED, now=now, type="breaker.closed",
                reason=f"probe job {breaker.probe_job_id} succeeded",
                data={"probe_job_id": breaker.probe_job_id})
        return
    last = (Lease.objects.filter(job_id=breaker.probe_job_id).order_by("-fencing_token")
            .values_list("status", flat=True).first())
    if last in FAILED:
        _change(breaker, BreakerState.OPEN, now=now, type="breaker.reopened",
                reason=f"probe job {breaker.probe_job_id} {last}",
                data={"probe_job_id": breaker.probe_job_id})
    else:  # released or canceled without an outcome: let another job probe
        breaker.probe_job_id = None
        breaker.save(update_fields=["probe_job_id"])


def breakers_advance(*, now: datetime | None = None) -> dict[str, int]:
    """Beat task body: open breakers past their cool-down go half-open; half-open breakers
    whose probe has ended close or re-open. Safe to run concurrently (row locks; each breaker
    is re-read under its lock). Returns counts by new state."""
    done: dict[str, int] = {}
    ids = list(CircuitBreaker.objects.exclude(state=BreakerState.CLOSED)
               .values_list("pk", flat=True))
    for pk in ids:
        with transaction.atomic():
            at = _now(now)
            breaker = lock(CircuitBreaker, pk=pk)
            if breaker is None:
                continue
            before = breaker.state
            if (breaker.state == BreakerState.OPEN and breaker.opened_at is not None
                    and at >= breaker.opened_at + timedelta(seconds=breaker.cooldown_seconds)):
                _change(breaker, BreakerState.HALF_OPEN, now=at, type="breaker.half_opened",
                        reason=f"cool-down of {breaker.cooldown_seconds} s over: one probe job",
                        data={})
            elif breaker.state == BreakerState.HALF_OPEN:
                _probe_settle(breaker, at)
            if breaker.state != before:
                done[breaker.state] = done.get(breaker.state, 0) + 1
    return done
