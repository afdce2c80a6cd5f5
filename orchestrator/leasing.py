"""The lease service: claim, heartbeat, ack, fail, release and logs on the Task Runner bridge.

Invariants (see docs/state-machine.md):

* A job is handed to at most one runner at a time. The claim (``orchestrator.claiming``, under
  admission control) holds its tenants' dispatch locks and flips the chosen jobs from ``ready``
  to ``leased`` with a compare-and-set in one short transaction.
* Every lease carries a fencing token (the job's lease epoch, +1 per claim). A call naming a
  lease that is no longer the job's current, unexpired lease raises ``LeaseLost`` and changes
  nothing: the job row is locked first, then checked, then written.
* Times come from the database clock (``ledger.clock.db_now``), read once per call.
* A waiting claim holds no transaction: each attempt is its own short transaction.
"""
from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction
from psycopg.types.json import Jsonb

from ledger.clock import db_now, require_aware
from ledger.exceptions import NotFound
from ledger.models import ActorType, Artifact, Job, JobLogLine, Lease, LeaseStatus
from ledger.services import Actor, event_for, job_transition, notify_ready_on_commit
from ledger.states import JobStatus

from .breakers import breaker_record_failure
from .claiming import Grant, lease_claim, lease_claim_wait  # noqa: F401 (the lease service's API)
from .exceptions import LeaseLost
from .lease_config import LeaseConfig
from .lease_sql import ORCH_ACK_V3


@dataclass(frozen=True)
class HeartbeatState:
    """Answer to a heartbeat: new expiry, granted length, and whether to stop (cancel)."""

    lease_expires_at: datetime
    lease_seconds: int
    cancel_requested: bool


@dataclass(frozen=True)
class Outcome:
    """How an ending call left the job: ``job_status`` and, for a retry, ``next_attempt_at``."""

    job_id: int
    job_status: str
    next_attempt_at: datetime | None = None
    replayed: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "job_status": self.job_status,
            "next_attempt_at": self.next_attempt_at.isoformat() if self.next_attempt_at else None,
        }


@dataclass(frozen=True)
class ArtifactIn:
    """An artifact reported with an ack. ``sha256`` is 64 lowercase hex; ``size_bytes`` >= 0."""

    name: str
    uri: str
    sha256: str
    size_bytes: int
    media_type: str


@dataclass(frozen=True)
class LogLineIn:
    """A runner log line: runner-side timestamp, level and message."""

    ts: datetime
    level: str
    message: str


def _runner(runner_id: str) -> Actor:
    return Actor(ActorType.RUNNER, runner_id)


def _now(now: datetime | None) -> datetime:
    return require_aware(now) if now is not None else db_now()


def _lock_current(tenant: str, lease_id: uuid.UUID, now: datetime) -> tuple[Job, Lease] | Lease:
    """Lock the job whose current lease is ``lease_id`` and return ``(job, lease)`` when that
    lease is still live; otherwise return the (ended or superseded) ``Lease`` row.

    Raises:
        NotFound: no such lease for this tenant.
    """
    found = (
        Job.objects.select_for_update(of=("self",))
        .select_related("current_lease")
        .filter(current_lease_id=lease_id, tenant=tenant)
        # No ORDER BY (``first()`` would add one by pk, and the planner may then walk the
        # primary key instead of the current_lease index): at most one job names a lease.
        .order_by()[:1]
    )
    job = found[0] if found else None
    if (job is not None and job.status == JobStatus.LEASED and job.lease_expires_at is not None
            and job.lease_expires_at > now):
        assert job.current_lease is not None
        return job, job.current_lease
    lease = Lease.objects.filter(pk=lease_id, tenant=tenant).first()
    if lease is None:
        raise NotFound(f"lease {lease_id} not found", lease_id=str(lease_id))
    return lease


def _lost(lease: Lease) -> LeaseLost:
    # An 'active' lease row that is not live has run out and waits for the reaper.
    status = LeaseStatus.EXPIRED if lease.status == LeaseStatus.ACTIVE else lease.status
    return LeaseLost("the lease is no longer current; stop work on this job and do not ack it",
                     lease_id=str(lease.id), job_id=lease.job_id, lease_status=status,
                     fencing_token=lease.fencing_token)


def lease_heartbeat(*, tenant: str, lease_id: uuid.UUID, extend: timedelta | None = None,
                    progress: dict[str, Any] | None = None, now: datetime | None = None,
                    config: LeaseConfig | None = None) -> HeartbeatState:
    """Extend a live lease to ``now + extend`` and record progress.

    Args:
        extend: new lease length from now; the lease's own length when None; within bounds.
        progress: ``{"done": int, "total": int|None, "message": str|None}``, stored on the lease.

    Returns:
        The new expiry, the granted length and ``cancel_requested``.

    Raises:
        LeaseLost: the lease expired, was re-claimed, released or ended; nothing changed.
        NotFound: no such lease for this tenant.
        ValueError: ``extend`` out of bounds.
    """
    config = config or LeaseConfig.from_settings()
    with transaction.atomic():
        now = _now(now)
        found = _lock_current(tenant, lease_id, now)
        if isinstance(found, Lease):
            raise _lost(found)
        job, lease = found
        length = config.clamp_lease(extend) if extend is not None else timedelta(
            seconds=lease.lease_seconds)
        expires = now + length
        Job.objects.filter(pk=job.pk).update(lease_expires_at=expires, updated_at=now)
        changes: dict[str, Any] = {"expires_at": expires, "heartbeat_at": now}
        if progress is not None:
            changes["progress"] = progress
        Lease.objects.filter(pk=lease.pk).update(**changes)
        if progress is not None:
            event_for(job, type="job.progress", actor=_runner(lease.runner_id), now=now,
                      lease_id=lease.id, data={"progress": progress}).save()
        return HeartbeatState(lease_expires_at=expires, lease_seconds=int(length.total_seconds()),
                              cancel_requested=job.cancel_requested)


@dataclass(frozen=True)
class AckIn:
    """One ack of a batch: the lease, its result (a JSON object or None) and artifacts."""

    lease_id: uuid.UUID
    result: Any = None
    artifacts: tuple[ArtifactIn, ...] = ()


@dataclass(frozen=True)
class AckResult:
    """How one ack of a batch ended: ``succeeded`` (``replayed`` for a repeat), ``lease_lost``
    or ``not_found``; ``job_id`` is None only for ``not_found``."""

    lease_id: uuid.UUID
    status: str
    job_id: int | None = None
    replayed: bool = False


def lease_ack(*, tenant: str, lease_id: uuid.UUID, result: Any = None,
              artifacts: Iterable[ArtifactIn] = (), now: datetime | None = None) -> Outcome:
    """Mark the job of a live lease ``succeeded`` with its result and artifacts.

    Idempotent: acking an already-acked lease returns the same outcome (``replayed=True``)
    and writes nothing.

    Raises:
        LeaseLost: the lease is not current (and was not acked); nothing changed.
        NotFound: no such lease for this tenant.
    """
    ack = AckIn(lease_id=lease_id, result=result, artifacts=tuple(artifacts))
    if connection.vendor == "postgresql":
        done = _ack_sql(tenant, [ack], now)
        if lease_id in done:
            return Outcome(job_id=done[lease_id], job_status=JobStatus.SUCCEEDED)
    # Not acked by orch_ack_v3: lost, a repeat, or its row changed after the statement's
    # snapshot (see lease_sql); the locked path decides.
    return _ack_orm(tenant, ack, now)


def lease_ack_many(*, tenant: str, acks: Sequence[AckIn],
                   now: datetime | None = None) -> list[AckResult]:
    """Ack several leases at once (one statement on PostgreSQL); one result per ack, in order.

    Each ack succeeds or fails on its own, exactly as ``lease_ack`` would: a lost or unknown
    lease changes nothing and does not stop the others. Lease ids must be distinct.

    Raises:
        ValueError: a lease id appears twice.
    """
    if len({a.lease_id for a in acks}) != len(acks):
        raise ValueError("each lease may appear once in a batch")
    done = _ack_sql(tenant, acks, now) if connection.vendor == "postgresql" else {}
    results = []
    for ack in acks:
        try:
            if ack.lease_id in done:
                outcome = Outcome(job_id=done[ack.lease_id], job_status=JobStatus.SUCCEEDED)
            else:  # as in lease_ack: the locked path decides
                outcome = _ack_orm(tenant, ack, now)
        except LeaseLost as exc:
            results.append(AckResult(ack.lease_id, LeaseLost.code, exc.details.get("job_id")))
        except NotFound:
            results.append(AckResult(ack.lease_id, NotFound.code))
        else:
            results.append(AckResult(ack.lease_id, JobStatus.SUCCEEDED, outcome.job_id,
                                     outcome.replayed))
    return results


def _ack_sql(tenant: str, acks: Sequence[AckIn], now: datetime | None) -> dict[uuid.UUID, int]:
    """Run orch_ack_v3; return ``{lease_id: job_id}`` of the acks that took effect, and wake
    claimers for the children it made ready."""
    body = [{"lease_id": str(a.lease_id), "result": a.result,
             "artifacts": [artifact.__dict__ for artifact in a.artifacts]} for a in acks]
    with connection.cursor() as cursor:
        cursor.execute(ORCH_ACK_V3, {"now": require_aware(now) if now is not None else None,
                                     "tenant": tenant, "acks": Jsonb(body)})
        rows = cursor.fetchall()
    ready: dict[str, set[str]] = {}
    done = {}
    for lease, job_id, ready_tenant, job_type in rows:
        if lease is not None:
            done[_uuid(lease)] = job_id
        else:
            ready.setdefault(ready_tenant, set()).add(job_type)
    for ready_tenant, job_types in ready.items():
        notify_ready_on_commit(tenant=ready_tenant, job_types=job_types)
    return done


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def _ack_orm(tenant: str, ack: AckIn, now: datetime | None) -> Outcome:
    """The locked ack, same writes as orch_ack_v3 (its children through ``job_transition``):
    the only path on SQLite (standalone mode); on PostgreSQL it decides every ack the
    statement did not take (lost, repeated, or changed after its snapshot)."""
    with transaction.atomic():
        now = _now(now)
        found = _lock_current(tenant, ack.lease_id, now)
        if isinstance(found, Lease):
            return _ack_not_current(tenant, ack.lease_id, found)
        job, lease = found
        job_transition(job=job, to=JobStatus.SUCCEEDED, actor=_runner(lease.runner_id), now=now,
                       data={"fencing_token": lease.fencing_token,
                             "artifacts": len(ack.artifacts)},
                       result=ack.result)
        outcome = Outcome(job_id=job.pk, job_status=JobStatus.SUCCEEDED)
        Lease.objects.filter(pk=lease.pk).update(status=LeaseStatus.ACKED, ended_at=now,
                                                 outcome=outcome.as_json())
        if ack.artifacts:
            Artifact.objects.bulk_create([
                Artifact(job_id=job.pk, lease_id=lease.pk, tenant=tenant, name=a.name, uri=a.uri,
                         sha256=a.sha256, size_bytes=a.size_bytes, media_type=a.media_type,
                         created_at=now)
                for a in ack.artifacts
            ])
        return outcome


def _ack_not_current(tenant: str, lease_id: uuid.UUID, lease: Lease | None = None) -> Outcome:
    """An ack that matched no live lease: a repeat of an ack (answer it again), else lost."""
    lease = lease or Lease.objects.filter(pk=lease_id, tenant=tenant).first()
    if lease is None:
        raise NotFound(f"lease {lease_id} not found", lease_id=str(lease_id))
    if lease.status == LeaseStatus.ACKED:
        return Outcome(job_id=lease.job_id, job_status=JobStatus.SUCCEEDED, replayed=True)
    raise _lost(lease)


def lease_fail(*, tenant: str, lease_id: uuid.UUID, error: dict[str, str], retryable: bool,
               retry_after: timedelta | None = None, now: datetime | None = None,
               rng: random.Random | None = None, config: LeaseConfig | None = None) -> Outcome:
    """Record a failed attempt and decide what comes next.

    * cancel requested -> ``canceled``;
    * not ``retryable``, or attempts exhausted -> ``dead_lettered``;
    * otherwise ``scheduled`` until ``now + delay``: ``retry_after`` (capped at the backoff cap)
      when given, else the full-jitter backoff of ``orchestrator.retry``.

    Idempotent: repeating the fail of an already-failed lease returns its recorded outcome.

    Raises:
        LeaseLost: the lease is not current; nothing changed.
        NotFound: no such lease for this tenant.
    """
    config = config or LeaseConfig.from_settings()

    def decide(job: Job, lease: Lease, now: datetime) -> _Decision:
        next_at = None
        if job.cancel_requested:
            to = JobStatus.CANCELED
        elif not retryable or job.attempt >= job.max_attempts:
            to = JobStatus.DEAD_LETTERED
        else:
            to = JobStatus.SCHEDULED
            delay = (min(retry_after, config.backoff.cap) if retry_after is not None
                     else config.backoff.delay(job.attempt, rng=rng))
            next_at = now + delay
        changes: dict[str, Any] = {"last_error": error}
        if next_at is not None:
            changes["not_before"] = next_at
        return _Decision(to=to, next_at=next_at, changes=changes,
                         reason=error.get("message", "")[:2000],
                         data={"error": error, "retryable": retryable,
                               "fencing_token": lease.fencing_token, "attempt": job.attempt})

    outcome = _end_attempt(tenant=tenant, lease_id=lease_id, now=now, ending=LeaseStatus.FAILED,
                           decide=decide)
    if not outcome.replayed:
        # After the commit: the breaker counts this attempt among the source's outcomes.
        source_id = Lease.objects.filter(pk=lease_id).values_list("source_id", flat=True).first()
        breaker_record_failure(tenant=tenant, source_id=source_id, now=now)
    return outcome


def lease_release(*, tenant: str, lease_id: uuid.UUID, reason: str = "",
                  now: datetime | None = None) -> Outcome:
    """Give a live lease back: the job is ``ready`` again and its attempt is not consumed
    (``canceled`` instead when a cancel was requested).

    Idempotent: repeating the release of an already-released lease returns its outcome.

    Raises:
        LeaseLost: the lease is not current; nothing changed.
        NotFound: no such lease for this tenant.
    """

    def decide(job: Job, lease: Lease, now: datetime) -> _Decision:
        data = {"fencing_token": lease.fencing_token}
        if job.cancel_requested:
            return _Decision(to=JobStatus.CANCELED, reason=reason, data=data)
        return _Decision(to=JobStatus.READY, changes={"attempt": job.attempt - 1},
                         reason=reason, data=data)

    return _end_attempt(tenant=tenant, lease_id=lease_id, now=now, ending=LeaseStatus.RELEASED,
                        decide=decide)


@dataclass(frozen=True)
class _Decision:
    """What ending an attempt does to its job: the target status and the fields it sets."""

    to: str
    next_at: datetime | None = None
    changes: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    data: dict[str, Any] = field(default_factory=dict)


def _end_attempt(*, tenant: str, lease_id: uuid.UUID, now: datetime | None, ending: str,
                 decide: Callable[[Job, Lease, datetime], _Decision]) -> Outcome:
    """The shared body of fail and release: lock the job of a live lease, apply ``decide``,
    end the lease ``ending`` with the outcome stored on it; a repeat of the same ending
    returns the stored outcome; anything else on a lease that is not live is ``LeaseLost``."""
    with transaction.atomic():
        now = _now(now)
        found = _lock_current(tenant, lease_id, now)
        if isinstance(found, Lease):
            if found.status == ending and found.outcome:
                return _replayed(found)
            raise _lost(found)
        job, lease = found
        decision = decide(job, lease, now)
        job_transition(job=job, to=decision.to, actor=_runner(lease.runner_id), now=now,
                       reason=decision.reason, data=decision.data, **decision.changes)
        outcome = Outcome(job_id=job.pk, job_status=decision.to, next_attempt_at=decision.next_at)
        Lease.objects.filter(pk=lease.pk).update(status=ending, ended_at=now,
                                                 outcome=outcome.as_json())
        return outcome


def _replayed(lease: Lease) -> Outcome:
    stored = lease.outcome or {}
    next_at = stored.get("next_attempt_at")
    return Outcome(job_id=lease.job_id, job_status=stored["job_status"],
                   next_attempt_at=datetime.fromisoformat(next_at) if next_at else None,
                   replayed=True)


def lease_logs_append(*, tenant: str, lease_id: uuid.UUID, lines: Sequence[LogLineIn],
                      max_per_job: int, now: datetime | None = None) -> int:
    """Store log lines of a live lease, up to ``max_per_job`` lines per job in all.

    Returns:
        How many lines were stored (lines past the per-job bound are dropped, oldest kept).

    Raises:
        LeaseLost: the lease is not current; nothing stored.
        NotFound: no such lease for this tenant.
    """
    with transaction.atomic():
        now = _now(now)
        found = _lock_current(tenant, lease_id, now)
        if isinstance(found, Lease):
            raise _lost(found)
        job, lease = found
        room = max(0, max_per_job - JobLogLine.objects.filter(job_id=job.pk).count())
        kept = list(lines)[:room]
        JobLogLine.objects.bulk_create([
            JobLogLine(job_id=job.pk, lease_id=lease.pk, tenant=tenant, ts=line.ts,
                       level=line.level, message=line.message, received_at=now)
            for line in kept
        ])
        return len(kept)
