"""Ledger write services: enqueue, runs, sources, the generic transition and cancellation.

Every status change goes through ``ledger.states`` and appends a ``JobEvent`` in the same
transaction. Lease-specific writes (claim, heartbeat, ack, fail, release, reap) live in
``orchestrator.leasing`` and ``orchestrator.reaper`` because they carry lease semantics.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction

from .canonical import digest
from .clock import db_now, require_aware
from .exceptions import IdempotencyConflict, NotFound
from .models import ActorType, Job, JobEvent, Lane, Run, Source
from .signals import jobs_ready
from .states import IllegalTransition, JobStatus, is_terminal, require

if TYPE_CHECKING:
    pass


@dataclass(frozen=True)
class Actor:
    """Who did it: ``type`` is runner/operator/system; ``label`` survives user deletion."""

    type: str
    label: str

    @classmethod
    def system(cls, label: str = "orchestrator") -> Actor:
        """The orchestrator itself acting (reaper, scheduler), named by ``label``."""
        return cls(ActorType.SYSTEM, label)


@dataclass(frozen=True)
class EnqueueResult:
    """``job`` as stored; ``replayed`` is True when an earlier identical request created it."""

    job: Job
    replayed: bool


def notify_ready_on_commit(*, tenant: str | None, job_types: Iterable[str]) -> None:
    """Send ``jobs_ready`` once the current transaction commits (never before)."""
    types = frozenset(job_types)
    if types:
        transaction.on_commit(lambda: jobs_ready.send(sender=Job, tenant=tenant, job_types=types))


def event_for(job: Job, *, type: str, actor: Actor, now: datetime, from_status: str = "",
              to_status: str = "", lease_id: Any = None, reason: str = "",
              data: dict[str, Any] | None = None) -> JobEvent:
    """Build (not save) a JobEvent for ``job``; callers bulk-insert them with the change."""
    return JobEvent(
        job_id=job.pk, tenant=job.tenant, type=type, from_status=from_status, to_status=to_status,
        lease_id=lease_id, actor_type=actor.type, actor_label=actor.label, reason=reason,
        data=data or {}, occurred_at=now,
    )


# ``admit(tenant, job_type, source_id, count)``: called inside the enqueue transaction before
# ``count`` new jobs of one lane are written; raises to refuse them (the orchestrator passes its
# max_queued check, ``orchestrator.admission.admit_enqueue``).
Admit = Callable[[str, str, int, int], None]


def lane_register(*, tenant: str, job_type: str, source_id: int | None) -> None:
    """Make sure the claim knows the lane of a new job (an insert that ignores duplicates).

    Not cached in the process: a restored or imported database must never leave a job in a
    lane the claim does not walk; the insert costs one index probe.
    """
    Lane.objects.bulk_create([Lane(tenant=tenant, job_type=job_type, source_id=source_id or 0)],
                             ignore_conflicts=True)


def source_resolve(*, tenant: str, name: str | None) -> Source | None:
    """Return the tenant's source called ``name``, creating it on first use; None for None."""
    if name is None:
        return None
    source, _ = Source.objects.get_or_create(tenant=tenant, name=name)
    return source


def run_create(*, tenant: str, project: str, name: str, source: str | None = None,
               correlation_id: str | None = None) -> Run:
    """Create a run (a named group of jobs) for ``tenant``."""
    return Run.objects.create(
        tenant=tenant, project=project, name=name,
        source=source_resolve(tenant=tenant, name=source), correlation_id=correlation_id,
    )


def job_enqueue(*, tenant: str, job_type: str, project: str, payload: dict[str, Any],
                max_attempts: int, actor: Actor, source: str | None = None, priority: int = 0,
                idempotency_key: str | None = None, run_id: int | None = None,
                not_before: datetime | None = None, correlation_id: str | None = None,
                depends_on: Collection[int] = (), now: datetime | None = None,
                admit: Admit | None = None) -> EnqueueResult:
    """Create a job, or return the one an earlier identical request created.

    The job is ``ready``, or ``scheduled`` when ``not_before`` is in the future, or ``blocked``
    while some of ``depends_on`` (ids of this tenant's jobs) have not succeeded
    (``pending_parents`` counts them; see ``ledger.dependencies``). With an
    ``idempotency_key``, the request body (every argument but ``now`` and ``actor``; the sorted
    distinct ``depends_on`` only when not empty, so digests of earlier requests still match) is
    reduced to a sha256 digest: the same key with the same digest returns the stored job
    (``replayed=True``); the same key with another digest raises.

    Concurrency: two identical requests racing on PostgreSQL meet at the unique index
    ``job_tenant_idem_uniq``; the loser waits for the winner's commit, gets an IntegrityError in
    its savepoint and then reads the winner's row (READ COMMITTED takes a new snapshot per
    statement), so exactly one job exists.

    Raises:
        IdempotencyConflict: same key, different body (``details.job_id`` names the holder).
        NotFound: ``run_id`` is not a run of this tenant.
        UnknownParent: ``depends_on`` names ids that are not jobs of this tenant.
        UpstreamFailed: a parent already ended dead_lettered or canceled.
        Whatever ``admit`` raises (nothing is written then).
    """
    # ledger.dependencies builds on this module (Actor, event_for): imported here, not on top.
    from . import dependencies

    parents = sorted(set(depends_on))
    body: dict[str, Any] = {
        "job_type": job_type, "project": project, "payload": payload, "source": source,
        "priority": priority, "run_id": run_id, "max_attempts": max_attempts,
        "not_before": not_before.isoformat() if not_before else None,
        "correlation_id": correlation_id,
    }
    if parents:
        body["depends_on"] = parents
    request_digest = digest(body)
    with transaction.atomic():
        now = require_aware(now) if now else db_now()
        if idempotency_key is not None:
            existing = _idempotent_match(tenant, idempotency_key, request_digest)
            if existing is not None:
                return EnqueueResult(existing, True)
        if run_id is not None and not Run.objects.filter(pk=run_id, tenant=tenant).exists():
            raise NotFound(f"run {run_id} not found", run_id=run_id)
        statuses = dependencies.parents_lock(tenant=tenant, parent_ids=parents)
        pending = sum(1 for st in statuses.values() if st != JobStatus.SUCCEEDED)
        status = JobStatus.SCHEDULED if not_before and not_before > now else JobStatus.READY
        if pending:
            status = JobStatus.BLOCKED
        source_row = source_resolve(tenant=tenant, name=source)
        source_id = source_row.pk if source_row else None
        if admit is not None:
            admit(tenant, job_type, source_id or 0, 1)
        lane_register(tenant=tenant, job_type=job_type, source_id=source_id)
        job = Job(
            tenant=tenant, project=project, job_type=job_type, payload=payload,
            source=source_row, run_id=run_id,
            request_digest=request_digest, priority=priority, idempotency_key=idempotency_key,
            correlation_id=correlation_id, status=status, max_attempts=max_attempts,
            not_before=not_before, pending_parents=pending, created_at=now, updated_at=now,
        )
        try:
            with transaction.atomic():
                job.save(force_insert=True)
        except IntegrityError:
            if idempotency_key is None:
                raise
            existing = _idempotent_match(tenant, idempotency_key, request_digest)
            if existing is None:  # the winner rolled back between our insert and our read
                raise
            return EnqueueResult(existing, True)
        if parents:
            dependencies.edges_create(tenant=tenant, edges=((p, job.pk) for p in parents))
        created: dict[str, Any] = {"idempotency_key": idempotency_key}
        if parents:
            created.update(depends_on=parents, pending_parents=pending)
        event_for(job, type="job.created", actor=actor, now=now, to_status=status,
                  data=created).save()
        if status == JobStatus.READY:
            notify_ready_on_commit(tenant=tenant, job_types=[job_type])
    return EnqueueResult(job, False)


def _idempotent_match(tenant: str, key: str, request_digest: str) -> Job | None:
    job = Job.objects.filter(tenant=tenant, idempotency_key=key).first()
    if job is None:
        return None
    if job.request_digest != request_digest:
        raise IdempotencyConflict(
            "idempotency key already used with a different request body",
            job_id=job.pk, idempotency_key=key,
        )
    return job


def job_transition(*, job: Job, to: str, actor: Actor, now: datetime, reason: str = "",
                   data: dict[str, Any] | None = None, **changes: Any) -> Job:
    """Move ``job`` from its loaded status to ``to``, as a compare-and-set, with its event.

    One ``UPDATE ... WHERE id = job.id AND status = job.status`` must touch exactly one row; the
    JobEvent is written in the same transaction (callers hold ``transaction.atomic``).
    Dependencies follow in the same transaction: to ``succeeded`` counts down the job's blocked
    children, to ``dead_lettered``/``canceled`` cancels its blocked descendants
    (``ledger.dependencies``).

    Raises:
        IllegalTransition: ``job.status -> to`` is not in the table, or another writer changed
            the status first (re-read and decide again).
    """
    event_type = require(job.status, to)
    old = job.status
    fields = {"status": to, "updated_at": now, **changes}
    if to in (JobStatus.SUCCEEDED, JobStatus.DEAD_LETTERED, JobStatus.CANCELED):
        fields.setdefault("finished_at", now)
    if old == JobStatus.LEASED:
        fields.setdefault("lease_expires_at", None)
    touched = Job.objects.filter(pk=job.pk, status=old).update(**fields)
    if touched != 1:
        raise IllegalTransition(old, to, "status changed concurrently")
    for name, value in fields.items():
        setattr(job, name, value)
    event_for(job, type=event_type, actor=actor, now=now, from_status=old, to_status=to,
              reason=reason, data=data).save()
    if to == JobStatus.READY:
        notify_ready_on_commit(tenant=job.tenant, job_types=[job.job_type])
    if to in (JobStatus.SUCCEEDED, JobStatus.DEAD_LETTERED, JobStatus.CANCELED):
        from . import dependencies  # builds on this module; see job_enqueue

        if to == JobStatus.SUCCEEDED:
            dependencies.children_release(parent_ids=[job.pk], now=now)
        else:
            dependencies.descendants_cancel(job_ids=[job.pk], now=now)
    return job


def job_cancel(*, tenant: str, job_id: int, actor: Actor, reason: str,
               now: datetime | None = None) -> Job:
    """Cancel a job: at once when it is not leased; a leased job gets ``cancel_requested`` and
    ends ``canceled`` when its runner reports back (fail/release) or its lease expires.

    Returns the job as it now stands. Canceling an already-canceled job is a no-op. A job that
    ends canceled takes its blocked descendants with it (reason ``upstream_failed``).

    Raises:
        NotFound: no such job for this tenant.
        IllegalTransition: the job already ended otherwise (succeeded or dead-lettered).
    """
    with transaction.atomic():
        now = require_aware(now) if now else db_now()
        job = Job.objects.select_for_update().filter(pk=job_id, tenant=tenant).first()
        if job is None:
            raise NotFound(f"job {job_id} not found", job_id=job_id)
        if job.status == JobStatus.CANCELED:
            return job
        if is_terminal(job.status):
            raise IllegalTransition(job.status, JobStatus.CANCELED, "the job has already ended")
        if job.status == JobStatus.LEASED:
            if not job.cancel_requested:
                Job.objects.filter(pk=job.pk).update(cancel_requested=True, updated_at=now)
                job.cancel_requested = True
                event_for(job, type="job.cancel_requested", actor=actor, now=now,
                          reason=reason).save()
            return job
        return job_transition(job=job, to=JobStatus.CANCELED, actor=actor, now=now, reason=reason)
