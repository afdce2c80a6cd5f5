"""Dependency chains at run time: parents locked when a child is created, children counted
down when a parent succeeds, blocked descendants canceled when a parent fails.

Invariant: a ``blocked`` job's ``pending_parents`` is the number of its parents
(``JobDependency``) that have not succeeded; at 0 it becomes ``ready`` (``scheduled`` while its
``not_before`` is ahead). The count moves only under the child's row lock (``SELECT ... FOR
UPDATE`` here, the ``UPDATE`` of ``orch_ack_v3``) and never by re-counting, so two parents
succeeding at once in two transactions both land: the second decrement waits for the first and
applies to the row it left. See docs/dependencies.md.

Lock order: rows are locked in ascending id order. Every edge points from a lower id to a
higher one (a parent exists before its child; a submission creates its jobs in topological
order), so ascending id is also "parents before children", the order in which an ack (its own
job, then the children) and the reaper (its expired jobs, then their descendants) lock: no
path holds a child while waiting for a parent, so these paths do not deadlock each other.

Fencing the single-statement ack: ``orch_ack_v3`` reads a parent's children from the snapshot
its statement started with. A transaction that makes a child count a *leased* parent (an
enqueue with ``depends_on``, a submission naming existing jobs, a replay reviving a child)
and commits while such a statement runs would be missed by it, and the child would wait
forever. So that transaction rewrites each leased parent it counts (``fence``); orch_ack_v3
acks a job only while its row version (``xmin``) is still the one its snapshot saw, and the
lease service retries any other ack on the locked ORM path, which reads the children only
after taking the parent's lock.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from datetime import datetime

from django.db import connection
from django.db.models import F

from .exceptions import UnknownParent, UpstreamFailed
from .models import Job, JobDependency, JobEvent
from .services import Actor, event_for, notify_ready_on_commit
from .states import JobStatus, require

UPSTREAM_FAILED = "upstream_failed"
FAILED = frozenset({JobStatus.DEAD_LETTERED, JobStatus.CANCELED})
# Ids per ``IN (...)`` list: a walk may find any number of jobs (chains are unbounded, and a
# parent may have any number of children), and PostgreSQL takes at most 65,535 parameters.
CHUNK = 1000


def chunks(ids: Iterable[int], size: int = CHUNK) -> Iterator[list[int]]:
    """The distinct ``ids`` in ascending order, ``size`` at a time (so locks taken chunk by
    chunk are still taken in ascending id order)."""
    ordered = sorted(set(ids))
    for start in range(0, len(ordered), size):
        yield ordered[start:start + size]


def system_actor() -> Actor:
    """The actor of changes a dependency causes (unblock, upstream cancel)."""
    return Actor.system("dependencies")


def parents_lock(*, tenant: str, parent_ids: Collection[int]) -> dict[int, str]:
    """Lock the existing jobs new jobs will depend on; return ``{job_id: status}``.

    Call inside the transaction that creates the child; the locks last until its commit, so no
    parent can succeed, fail or be claimed between this count and the new edges becoming
    visible (an ack already running is fenced, see the module doc).

    Raises:
        UnknownParent: ``details.job_ids``: ids that are not jobs of ``tenant``.
        UpstreamFailed: ``details.parents`` ``[{job_id, status}]``: parents already ended
            ``dead_lettered`` or ``canceled`` (the child could never start).
    """
    ids = sorted(set(parent_ids))
    if not ids:
        return {}
    rows = list(Job.objects.select_for_update().filter(tenant=tenant, pk__in=ids)
                .order_by("id").values_list("id", "status"))
    missing = sorted(set(ids) - {pk for pk, _ in rows})
    if missing:
        raise UnknownParent(f"depends_on names unknown jobs: {missing}", job_ids=missing)
    failed = [{"job_id": pk, "status": status} for pk, status in rows if status in FAILED]
    if failed:
        raise UpstreamFailed("a parent already failed or was canceled; replay it first",
                             parents=failed)
    fence([pk for pk, status in rows if status == JobStatus.LEASED])
    return dict(rows)


def write_locked(jobs: Iterable[Job], fields: Sequence[str]) -> None:
    """Write ``fields`` of jobs this transaction has locked, as they stand in memory: one
    ``UPDATE`` per distinct combination of values and chunk of ids. The values repeat (a status,
    a small count, one instant), so that is a few statements, where ``bulk_update`` builds a
    ``CASE`` arm per row and field (over 20 s of Python for 7000 rows)."""
    groups: dict[tuple[object, ...], list[int]] = defaultdict(list)
    for job in jobs:
        groups[tuple(getattr(job, name) for name in fields)].append(job.pk)
    for values, ids in groups.items():
        for part in chunks(ids):
            Job.objects.filter(pk__in=part).update(**dict(zip(fields, values, strict=True)))


def fence(job_ids: Collection[int]) -> None:
    """Give locked leased jobs a new row version without changing a value (see module doc):
    an orch_ack_v3 statement that started before our commit then acks none of them and the
    lease service acks them again on the locked path, which sees what we committed."""
    if job_ids:
        Job.objects.filter(pk__in=job_ids, status=JobStatus.LEASED).update(
            pending_parents=F("pending_parents"))


def edges_create(*, tenant: str, edges: Iterable[tuple[int, int]]) -> None:
    """Insert ``(parent_id, child_id)`` edges (parents locked by ``parents_lock`` or created in
    the same transaction)."""
    JobDependency.objects.bulk_create(
        [JobDependency(parent_id=parent, child_id=child, tenant=tenant) for parent, child in edges],
        batch_size=1000)


def children_release(*, parent_ids: Collection[int], now: datetime) -> list[Job]:
    """Count down the blocked children of jobs that just succeeded, in the same transaction.

    Each child loses as many counts as it has parents among ``parent_ids``; a child reaching 0
    becomes ``ready`` (``scheduled`` if its ``not_before`` is after ``now``) with a
    ``job.unblocked`` event (``data.parent_job_ids``), and waiting claims are woken after commit.
    The children part of ``orch_ack_v3`` does the same in SQL.

    Returns:
        The children that left ``blocked``.
    """
    parents_of: dict[int, list[int]] = defaultdict(list)
    for parent, kids in children_map(parent_ids).items():
        for child in kids:
            parents_of[child].append(parent)
    if not parents_of:
        return []
    # Locked in id order (see module doc); a child canceled meanwhile is no longer blocked.
    children = [
        child for part in chunks(parents_of)
        for child in Job.objects.select_for_update().filter(pk__in=part, status=JobStatus.BLOCKED)
        .order_by("id").only("id", "tenant", "job_type", "status", "pending_parents", "not_before")
    ]
    released: list[Job] = []
    for child in children:
        child.pending_parents -= len(parents_of[child.pk])
        child.updated_at = now
        if child.pending_parents == 0:
            ahead = child.not_before is not None and child.not_before > now
            child.status = JobStatus.SCHEDULED if ahead else JobStatus.READY
            released.append(child)
    write_locked(children, ["pending_parents", "status", "updated_at"])
    actor = system_actor()
    type_ = require(JobStatus.BLOCKED, JobStatus.READY)
    JobEvent.objects.bulk_create([
        event_for(child, type=type_, actor=actor, now=now, from_status=JobStatus.BLOCKED,
                  to_status=child.status, data={"parent_job_ids": sorted(parents_of[child.pk])})
        for child in released
    ], batch_size=CHUNK)
    for tenant in {c.tenant for c in released if c.status == JobStatus.READY}:
        notify_ready_on_commit(tenant=tenant, job_types={
            c.job_type for c in released if c.tenant == tenant and c.status == JobStatus.READY})
    return released


def lock_until_stable(walk: Callable[[], set[int]]) -> dict[int, Job]:
    """Lock every job ``walk`` names, in id order, and walk again until it names none not yet
    locked; return the locked rows as they now stand.

    ``walk`` reads edges and statuses without locks. A child linked to a job of the set by a
    transaction that committed before we locked that job shows up in the next walk (its id is
    newer, so later rounds keep locking upwards). The walks are set-based on PostgreSQL
    (``blocked_below``, ``ledger.replay``), so a deep chain costs a few statements per round,
    not one per level; each round locks in chunks of ``CHUNK`` ids, ascending.
    """
    locked: dict[int, Job] = {}
    while True:
        wanted = walk() - locked.keys()
        if not wanted:
            return locked
        found = 0
        for part in chunks(wanted):
            rows = list(Job.objects.select_for_update().filter(pk__in=part).order_by("id"))
            locked.update((job.pk, job) for job in rows)
            found += len(rows)
        if not found:  # named jobs that do not exist: nothing more to lock
            return locked


def children_map(job_ids: Collection[int]) -> dict[int, list[int]]:
    """``parent_id -> [child_id]`` for the edges leaving ``job_ids``."""
    children: dict[int, list[int]] = defaultdict(list)
    for part in chunks(job_ids):
        for parent, child in JobDependency.objects.filter(parent_id__in=part).values_list(
                "parent_id", "child_id"):
            children[parent].append(child)
    return children


def parents_map(job_ids: Collection[int]) -> dict[int, list[int]]:
    """``child_id -> [parent_id]`` for the edges reaching ``job_ids``."""
    parents: dict[int, list[int]] = defaultdict(list)
    for part in chunks(job_ids):
        for parent, child in JobDependency.objects.filter(child_id__in=part).values_list(
                "parent_id", "child_id"):
            parents[child].append(parent)
    return parents


# Jobs reachable from the roots through blocked jobs, in one statement. Each step goes from a
# found row to its edges (index jobdep_parent_child_uniq, parent_id first) and from an edge to
# its child (primary key); UNION drops the rows already found, so a diamond is walked once and
# the walk ends. The steps are LATERAL subqueries behind OFFSET 0 (not pulled up into a join):
# otherwise a planner whose statistics see few blocked jobs (a table filled since the last
# ANALYZE) starts each step from every blocked job (job_waiting_idx) instead, a scan of them all
# per level (15 s for a 2000-deep chain).
BLOCKED_BELOW_SQL = """
WITH RECURSIVE below(id) AS (
    SELECT j.id FROM unnest(%(roots)s::bigint[]) AS r(id)
    CROSS JOIN LATERAL (SELECT d.child_id FROM ledger_jobdependency AS d
                        WHERE d.parent_id = r.id OFFSET 0) AS e
    CROSS JOIN LATERAL (SELECT j.id FROM ledger_job AS j
                        WHERE j.id = e.child_id AND j.status = %(blocked)s OFFSET 0) AS j
  UNION
    SELECT j.id FROM below
    CROSS JOIN LATERAL (SELECT d.child_id FROM ledger_jobdependency AS d
                        WHERE d.parent_id = below.id OFFSET 0) AS e
    CROSS JOIN LATERAL (SELECT j.id FROM ledger_job AS j
                        WHERE j.id = e.child_id AND j.status = %(blocked)s OFFSET 0) AS j
)
SELECT id FROM below WHERE id <> ALL(%(roots)s::bigint[])
"""


def blocked_below(roots: Collection[int]) -> set[int]:
    """Jobs reachable from ``roots`` through blocked jobs (read without locks; not the roots).

    One recursive query on PostgreSQL, whatever the depth; level by level with the ORM on
    SQLite (the standalone mode's small ledgers).
    """
    if not roots:
        return set()
    if connection.vendor == "postgresql":
        return walk_ids(BLOCKED_BELOW_SQL, {"roots": sorted(set(roots)),
                                            "blocked": JobStatus.BLOCKED.value})
    return blocked_below_orm(roots)


def walk_ids(sql: str, params: dict[str, object]) -> set[int]:
    """Run a recursive walk (PostgreSQL, inside the caller's transaction) and return the ids
    of its single column.

    JIT compilation is off for the statement: a recursive query's row estimates multiply
    along its steps, its cost easily passes ``jit_above_cost``, and compiling then costs
    hundreds of milliseconds for a walk that takes one. ``set_config(..., true)`` changes the
    setting for this transaction only, and the previous value is put back right after.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('jit'), set_config('jit', 'off', true)")
        previous = cursor.fetchone()[0]
        try:
            cursor.execute(sql, params)
            return {row[0] for row in cursor.fetchall()}
        finally:
            cursor.execute("SELECT set_config('jit', %s, true)", [previous])


def blocked_below_orm(roots: Collection[int]) -> set[int]:
    """``blocked_below`` with the ORM, one level per round (SQLite; on PostgreSQL the tests
    compare it with the recursive query)."""
    roots = set(roots)
    found: set[int] = set()
    frontier = set(roots)
    while frontier:
        kids = {c for cs in children_map(frontier).values() for c in cs} - found - roots
        frontier = set()
        for part in chunks(kids):
            frontier.update(Job.objects.filter(pk__in=part, status=JobStatus.BLOCKED)
                            .values_list("pk", flat=True))
        found |= frontier
    return found


def descendants_cancel(*, job_ids: Collection[int], now: datetime) -> int:
    """Cancel every blocked descendant of jobs that just ended ``dead_lettered`` or
    ``canceled``, in the same transaction (they could never start).

    The walk goes through blocked jobs only: a descendant that is ready, leased or finished
    (possible after a replay) is left alone, and so is what lies below it. Each canceled job
    gets ``last_error {"code": "upstream_failed", "upstream_job_id", "upstream_status"}`` and a
    ``job.canceled`` event with reason ``upstream_failed`` and ``data.upstream_job_id`` (the
    ended job it descends from; the lowest id when several).

    Returns:
        How many jobs were canceled.
    """
    roots = set(job_ids)
    if not any(JobDependency.objects.filter(parent_id__in=part).exists()
               for part in chunks(roots)):
        return 0
    locked = lock_until_stable(lambda: blocked_below(roots))
    children = children_map(roots | locked.keys())  # read again, under the locks
    upstream: dict[int, int] = {}
    for root in sorted(roots):
        stack = [root]
        while stack:
            for child in children.get(stack.pop(), ()):
                job = locked.get(child)
                if job is not None and job.status == JobStatus.BLOCKED and child not in upstream:
                    upstream[child] = root
                    stack.append(child)
    if not upstream:
        return 0
    root_status: dict[int, str] = {}
    for part in chunks(upstream.values()):
        root_status.update(Job.objects.filter(pk__in=part).values_list("pk", "status"))
    by_root: dict[int, list[int]] = defaultdict(list)
    for child, root in upstream.items():
        by_root[root].append(child)
    for root, ids in by_root.items():
        for part in chunks(ids):
            Job.objects.filter(pk__in=part, status=JobStatus.BLOCKED).update(
                status=JobStatus.CANCELED, finished_at=now, updated_at=now,
                last_error={"code": UPSTREAM_FAILED, "upstream_job_id": root,
                            "upstream_status": root_status[root],
                            "message": f"upstream job {root} ended {root_status[root]}"})
    actor = system_actor()
    type_ = require(JobStatus.BLOCKED, JobStatus.CANCELED)
    JobEvent.objects.bulk_create([
        event_for(locked[child], type=type_, actor=actor, now=now,
                  from_status=JobStatus.BLOCKED, to_status=JobStatus.CANCELED,
                  reason=UPSTREAM_FAILED, data={"upstream_job_id": root})
        for child, root in sorted(upstream.items())
    ], batch_size=CHUNK)
    return len(upstream)
