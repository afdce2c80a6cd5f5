"""Replay: put a finished job back to work, and decide what that means for the jobs below it.

Rules (docs/dependencies.md): the replayed job starts over (attempt 0); descendants canceled
with ``upstream_failed`` are revived to ``blocked``; succeeded descendants are re-run only when
asked; a job reset here is no longer succeeded, so its children that have not started (ready,
scheduled) go back to ``blocked`` and its blocked children are recounted, so ``pending_parents``
stays "parents not succeeded" and no child runs before its parent's re-run. Everything is
decided under row locks taken in id order (parents before children, see
``ledger.dependencies``), in one transaction. The walk that finds the rows to lock is one
recursive query on PostgreSQL, whatever the depth (``REACH_SQL``).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import connection, transaction

from .clock import db_now, require_aware
from .dependencies import (
    CHUNK,
    FAILED,
    UPSTREAM_FAILED,
    children_map,
    chunks,
    fence,
    lock_until_stable,
    parents_map,
    walk_ids,
    write_locked,
)
from .exceptions import NotFound, UpstreamFailed
from .models import Artifact, Job, JobEvent
from .services import Actor, event_for, notify_ready_on_commit
from .states import IllegalTransition, JobStatus, is_terminal, require


@dataclass(frozen=True)
class ReplayResult:
    """The replayed job as it now stands, the descendants revived or set to run again, and the
    children put back to ``blocked`` (ready or scheduled, not started yet)."""

    job: Job
    revived_job_ids: list[int]
    rerun_job_ids: list[int]
    reblocked_job_ids: list[int]


def _resettable(status: str, last_error: Any, rerun: bool) -> bool:
    if status == JobStatus.CANCELED:
        return isinstance(last_error, dict) and last_error.get("code") == UPSTREAM_FAILED
    return rerun and status == JobStatus.SUCCEEDED


# Statuses of a child of a reset job that the replay may change: blocked (recounted), ready
# and scheduled (not started: back to blocked). A leased child is locked too, so one released
# between the walk and the lock is seen as ready under the lock.
CHILD_STATUSES = (JobStatus.BLOCKED, JobStatus.READY, JobStatus.SCHEDULED, JobStatus.LEASED)

# ``_reach`` in one statement: `reset` walks from the root through resettable jobs (the
# condition of ``_resettable``; ->> is NULL for anything but an object with that key), `touched`
# adds their children that the replay may change, and the result adds every parent of those.
# Each step is a LATERAL subquery behind OFFSET 0, so it stays an index lookup from the rows
# found (edges by parent_id or child_id, jobs by primary key) whatever the statistics say; see
# ledger.dependencies.BLOCKED_BELOW_SQL.
REACH_SQL = """
WITH RECURSIVE reset(id) AS (
    SELECT %(root)s::bigint
  UNION
    SELECT j.id FROM reset
    CROSS JOIN LATERAL (SELECT d.child_id FROM ledger_jobdependency AS d
                        WHERE d.parent_id = reset.id OFFSET 0) AS e
    CROSS JOIN LATERAL (
        SELECT j.id FROM ledger_job AS j
        WHERE j.id = e.child_id
          AND ((j.status = %(canceled)s AND j.last_error ->> 'code' = %(upstream_failed)s)
               OR (%(rerun)s AND j.status = %(succeeded)s))
        OFFSET 0) AS j
), touched(id) AS (
    SELECT id FROM reset
  UNION
    SELECT j.id FROM reset
    CROSS JOIN LATERAL (SELECT d.child_id FROM ledger_jobdependency AS d
                        WHERE d.parent_id = reset.id OFFSET 0) AS e
    CROSS JOIN LATERAL (SELECT j.id FROM ledger_job AS j
                        WHERE j.id = e.child_id AND j.status = ANY(%(child_statuses)s::text[])
                        OFFSET 0) AS j
)
SELECT id FROM touched
UNION
SELECT p.parent_id FROM touched
CROSS JOIN LATERAL (SELECT d.parent_id FROM ledger_jobdependency AS d
                    WHERE d.child_id = touched.id OFFSET 0) AS p
"""


def _reach(root: int, rerun: bool) -> set[int]:
    """What a replay of ``root`` may touch, read without locks: the root, the descendants it
    would reset (walking through resettable jobs only), the children of those that it may
    change (``CHILD_STATUSES``), and every parent of all of them (their statuses decide the
    counts). One recursive query on PostgreSQL; level by level with the ORM on SQLite."""
    if connection.vendor != "postgresql":
        return reach_orm(root, rerun)
    return walk_ids(REACH_SQL, {
        "root": root, "rerun": rerun, "canceled": JobStatus.CANCELED.value,
        "succeeded": JobStatus.SUCCEEDED.value, "upstream_failed": UPSTREAM_FAILED,
        "child_statuses": [status.value for status in CHILD_STATUSES]})


def reach_orm(root: int, rerun: bool) -> set[int]:
    """``_reach`` with the ORM, one level per round (SQLite; on PostgreSQL the tests compare it
    with ``REACH_SQL``)."""
    touched = {root}
    frontier = {root}
    while frontier:
        kids = {c for cs in children_map(frontier).values() for c in cs} - touched
        frontier = set()
        for part in chunks(kids):
            for pk, status, last_error in Job.objects.filter(pk__in=part).values_list(
                    "pk", "status", "last_error"):
                if _resettable(status, last_error, rerun):
                    frontier.add(pk)
                    touched.add(pk)
                elif status in CHILD_STATUSES:
                    touched.add(pk)
    return touched | {p for ps in parents_map(touched).values() for p in ps}


def _previous(job: Job, artifacts: list[Artifact]) -> dict[str, Any]:
    """What a replay clears, kept in its event."""
    return {
        "status": job.status, "attempt": job.attempt, "result": job.result,
        "last_error": job.last_error,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
        "artifacts": [{"name": a.name, "uri": a.uri, "sha256": a.sha256,
                       "size_bytes": a.size_bytes, "media_type": a.media_type,
                       "lease_id": str(a.lease_id)} for a in artifacts],
    }


def job_replay(*, tenant: str, job_id: int, actor: Actor, reason: str,
               rerun_succeeded_descendants: bool = False,
               now: datetime | None = None) -> ReplayResult:
    """Put a finished job (succeeded, dead_lettered or canceled) back to work, in one
    transaction.

    The job becomes ``ready``, or ``blocked`` while some of its own parents have not succeeded,
    with ``attempt`` 0 and ``cancel_requested``, ``last_error``, ``result`` and ``finished_at``
    cleared and its artifacts dropped (all kept in the ``job.replayed`` event's
    ``data.previous``). ``fencing_token`` is not reset: it keeps growing, so no lease of an
    earlier attempt can ever act on the job again. Below it:

    * descendants canceled with ``upstream_failed`` are revived to ``blocked``;
    * succeeded descendants are reset to ``blocked`` only if ``rerun_succeeded_descendants``;
    * each revived/reset job gets ``pending_parents`` = its parents not succeeded, and so does
      every blocked child of a revived/reset job (recounted: +1 per parent reset from
      ``succeeded``);
    * a child of a revived/reset job that has not started (``ready``, ``scheduled``) goes back
      to ``blocked`` with ``pending_parents`` = its parents not succeeded (``job.reblocked``,
      ``data``: ``replay_of``, ``parent_job_ids`` (its parents reset here),
      ``pending_parents``); it may not run before its parent's re-run. A ``leased`` child
      started before the replay and keeps running;
    * a descendant that another dead_lettered or canceled parent still keeps from running is
      left as it is, and so is anything canceled by an operator; the walk continues only below
      revived/reset jobs.

    Every revived/reset job gets a ``job.replayed`` event (``data.replay_of``: ``job_id``).

    Args:
        reason: why (kept in the events); required.
        now: aware instant standing for the database clock (tests).

    Returns:
        The replayed job and the ids of the revived, re-run and reblocked descendants.

    Raises:
        NotFound: no such job for this tenant.
        IllegalTransition: the job has not finished (nothing to replay).
        UpstreamFailed: one of the job's own parents is dead_lettered or canceled
            (``details.parents``): replay that parent first. Nothing is written.
        ValueError: ``reason`` is empty.
    """
    if not reason:
        raise ValueError("a replay needs a reason")
    rerun = rerun_succeeded_descendants
    with transaction.atomic():
        now = require_aware(now) if now is not None else db_now()
        if not Job.objects.filter(pk=job_id, tenant=tenant).exists():
            raise NotFound(f"job {job_id} not found", job_id=job_id)
        locked = lock_until_stable(lambda: _reach(job_id, rerun))
        root = locked[job_id]
        if not is_terminal(root.status):
            raise IllegalTransition(root.status, JobStatus.READY,
                                    "only a finished job can be replayed")
        parents_of = parents_map(locked)
        final = {pk: job.status for pk, job in locked.items()}
        failed = [{"job_id": p, "status": final[p]} for p in sorted(parents_of[job_id])
                  if final[p] in FAILED]
        if failed:
            raise UpstreamFailed("a parent of this job failed or was canceled; replay it first",
                                 parents=failed)

        def waiting_on(pk: int) -> int:
            return sum(1 for p in parents_of[pk] if final[p] != JobStatus.SUCCEEDED)

        pending = {job_id: waiting_on(job_id)}
        final[job_id] = JobStatus.BLOCKED if pending[job_id] else JobStatus.READY
        # Children of reset jobs, counted under the locks of all their parents: the count is
        # the one they had plus one per parent this replay took out of `succeeded`.
        recount: dict[int, int] = {}
        reblock: dict[int, int] = {}
        for pk in sorted(locked):  # ascending id: every parent is decided before its children
            if pk == job_id or not any(p in pending for p in parents_of[pk]):
                continue
            job = locked[pk]
            if _resettable(job.status, job.last_error, rerun):
                if any(final[p] in FAILED for p in parents_of[pk]):
                    continue
                pending[pk] = waiting_on(pk)
                final[pk] = JobStatus.BLOCKED
            elif job.status == JobStatus.BLOCKED:
                recount[pk] = waiting_on(pk)
            elif job.status in (JobStatus.READY, JobStatus.SCHEDULED):  # not started yet
                reblock[pk] = waiting_on(pk)
                final[pk] = JobStatus.BLOCKED

        artifacts: dict[int, list[Artifact]] = defaultdict(list)
        for part in chunks(pending):
            for artifact in Artifact.objects.filter(job_id__in=part).order_by("id"):
                artifacts[artifact.job_id].append(artifact)
        events: list[JobEvent] = []
        reset = [locked[pk] for pk in sorted(pending)]
        for job in reset:
            old = job.status
            event_type = require(old, final[job.pk])
            previous = _previous(job, artifacts[job.pk])
            job.status = final[job.pk]
            job.pending_parents = pending[job.pk]
            job.attempt = 0
            job.cancel_requested = False
            job.last_error = None
            job.result = None
            job.finished_at = None
            job.updated_at = now
            events.append(event_for(job, type=event_type, actor=actor, now=now, from_status=old,
                                    to_status=job.status, reason=reason,
                                    data={"replay_of": job_id, "previous": previous}))
        revived = [e.job_id for e in events if e.from_status == JobStatus.CANCELED
                   and e.job_id != job_id]
        rerun_ids = [e.job_id for e in events if e.from_status == JobStatus.SUCCEEDED
                     and e.job_id != job_id]
        for pk in sorted(reblock):
            job = locked[pk]
            old = job.status
            event_type = require(old, JobStatus.BLOCKED)
            job.status = JobStatus.BLOCKED
            job.pending_parents = reblock[pk]
            job.updated_at = now
            events.append(event_for(job, type=event_type, actor=actor, now=now, from_status=old,
                                    to_status=job.status, reason=reason,
                                    data={"replay_of": job_id, "parent_job_ids": sorted(
                                        p for p in parents_of[pk] if p in pending),
                                        "pending_parents": job.pending_parents}))
        for pk, count in recount.items():
            locked[pk].pending_parents = count
            locked[pk].updated_at = now
        # The rows are locked and their statuses checked above: this is the compare-and-set's
        # second half, a statement per distinct set of values and chunk.
        write_locked(reset, ["status", "pending_parents", "attempt", "cancel_requested",
                             "last_error", "result", "finished_at", "updated_at"])
        write_locked([locked[pk] for pk in reblock], ["status", "pending_parents", "updated_at"])
        write_locked([locked[pk] for pk in recount], ["pending_parents", "updated_at"])
        for part in chunks(pending):
            Artifact.objects.filter(job_id__in=part).delete()
        JobEvent.objects.bulk_create(events, batch_size=CHUNK)
        fence([pk for pk, job in locked.items() if job.status == JobStatus.LEASED])
        if root.status == JobStatus.READY:
            notify_ready_on_commit(tenant=root.tenant, job_types=[root.job_type])
    return ReplayResult(job=root, revived_job_ids=revived, rerun_job_ids=rerun_ids,
                        reblocked_job_ids=sorted(reblock))
