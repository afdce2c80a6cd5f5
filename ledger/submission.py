"""Whole-run submission: a run, its jobs and their dependency edges, all or nothing.

The graph is checked before anything is written (unknown parents, cycles: ``ledger.dag``);
jobs are created in topological order, so every edge points from a lower id to a higher one
(the lock order of ``ledger.dependencies`` relies on it).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction

from . import dependencies
from .canonical import digest
from .clock import db_now, require_aware
from .dag import CycleFound, topological_order
from .exceptions import DependencyCycle, IdempotencyConflict, UnknownParent
from .models import Job, JobEvent, Run
from .services import (
    Actor,
    Admit,
    event_for,
    lane_register,
    notify_ready_on_commit,
    run_create,
    source_resolve,
)
from .states import JobStatus

MAX_JOBS = 1000
MAX_EDGES = 10_000


@dataclass(frozen=True)
class JobSpec:
    """One job of a submission. ``depends_on`` holds keys of this submission (``str``) and ids
    of the tenant's existing jobs (``int``)."""

    key: str
    job_type: str
    max_attempts: int
    payload: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    source: str | None = None
    not_before: datetime | None = None
    depends_on: tuple[str | int, ...] = ()

    @property
    def parent_keys(self) -> list[str]:
        return sorted({d for d in self.depends_on if isinstance(d, str)})

    @property
    def parent_ids(self) -> list[int]:
        return sorted({d for d in self.depends_on if isinstance(d, int)})

    def canonical(self) -> dict[str, Any]:
        return {"key": self.key, "job_type": self.job_type, "payload": self.payload,
                "priority": self.priority, "max_attempts": self.max_attempts,
                "source": self.source,
                "not_before": self.not_before.isoformat() if self.not_before else None,
                "depends_on": {"keys": self.parent_keys, "job_ids": self.parent_ids}}


@dataclass(frozen=True)
class SubmitResult:
    """The run and its jobs (``(key, job)`` in the order submitted); ``replayed`` when an
    earlier identical request created them."""

    run: Run
    jobs: list[tuple[str, Job]]
    replayed: bool


def _job_key(run_key: str, index: int) -> str:
    """The idempotency key of the ``index``-th job of a submission keyed ``run_key``."""
    return f"run:{run_key}:{index}"


def run_submit(*, tenant: str, project: str, name: str, jobs: Sequence[JobSpec], actor: Actor,
               source: str | None = None, correlation_id: str | None = None,
               idempotency_key: str | None = None, now: datetime | None = None,
               admit: Admit | None = None) -> SubmitResult:
    """Create a run with its jobs and their dependencies in one transaction, or nothing.

    A job with parents starts ``blocked`` (``pending_parents`` = parents not succeeded), else
    ``ready`` or ``scheduled`` (``not_before`` ahead). Jobs take the run's project and
    correlation id. ``admit`` is called once per lane (tenant, job_type, source) with the
    lane's job count, lanes in sorted order; every lane is registered.

    Idempotency: with ``idempotency_key`` the whole request is reduced to one sha256 digest,
    stored on every job; the job at position ``i`` gets the idempotency key
    ``run:<idempotency_key>:<i>`` (the namespace of ``job_enqueue`` keys). The same key and body
    returns the stored run (``replayed=True``); the same key with another body raises, and so
    does a position's key held by any other job. Two requests racing meet at the unique index
    ``job_tenant_idem_uniq`` (as ``job_enqueue``): the loser reads what the winner committed,
    so one run exists, or the loser gets the conflict.

    Args:
        jobs: 1..MAX_JOBS specs with distinct keys and at most MAX_EDGES ``depends_on``
            entries in all.

    Raises:
        ValueError: size limits exceeded or repeated keys (the API checks them first).
        UnknownParent: ``details.keys`` (not in this request) and ``details.job_ids`` (not
            jobs of this tenant).
        DependencyCycle: ``details.cycle``: keys in edge order, first == last.
        UpstreamFailed: an existing parent is dead_lettered or canceled.
        IdempotencyConflict: the key was used with another body (``details.run_id``), or the
            key of some position is held by another job (``details.job_id``).
        Whatever ``admit`` raises. Nothing is written when anything is raised.
    """
    if not 1 <= len(jobs) <= MAX_JOBS:
        raise ValueError(f"a run holds 1 to {MAX_JOBS} jobs")
    keys = [spec.key for spec in jobs]
    if len(set(keys)) != len(keys):
        raise ValueError("job keys must be unique within a run")
    if sum(len(spec.depends_on) for spec in jobs) > MAX_EDGES:
        raise ValueError(f"a run holds at most {MAX_EDGES} dependencies")
    request_digest = digest({
        "project": project, "name": name, "source": source, "correlation_id": correlation_id,
        "jobs": [spec.canonical() for spec in jobs],
    })
    with transaction.atomic():
        now = require_aware(now) if now is not None else db_now()
        if idempotency_key is not None:
            found = _replay(tenant, idempotency_key, request_digest, keys)
            if found is not None:
                return found
        order = _check_graph(tenant, jobs)
        try:
            with transaction.atomic():
                return _create(tenant=tenant, project=project, name=name, jobs=jobs,
                               order=order, actor=actor,
                               source=source, correlation_id=correlation_id,
                               idempotency_key=idempotency_key, request_digest=request_digest,
                               now=now, admit=admit)
        except IntegrityError:
            if idempotency_key is None:
                raise
            found = _replay(tenant, idempotency_key, request_digest, keys)
            if found is None:  # the winner rolled back between our insert and our read
                raise
            return found


def _check_graph(tenant: str, jobs: Sequence[JobSpec]) -> list[str]:
    """Unknown parents, then cycles (pure), before anything is locked or written; returns the
    job keys in topological order (parents first)."""
    keys = {spec.key for spec in jobs}
    unknown_keys = sorted({k for spec in jobs for k in spec.parent_keys} - keys)
    wanted_ids = {i for spec in jobs for i in spec.parent_ids}
    known_ids = set(Job.objects.filter(tenant=tenant, pk__in=wanted_ids)
                    .values_list("pk", flat=True)) if wanted_ids else set()
    unknown_ids = sorted(wanted_ids - known_ids)
    if unknown_keys or unknown_ids:
        raise UnknownParent("depends_on names jobs that do not exist",
                            keys=unknown_keys, job_ids=unknown_ids)
    try:
        return topological_order([spec.key for spec in jobs],
                                 {spec.key: spec.parent_keys for spec in jobs})
    except CycleFound as exc:
        raise DependencyCycle("the dependencies contain a cycle", cycle=exc.cycle) from None


def _create(*, tenant: str, project: str, name: str, jobs: Sequence[JobSpec], order: list[str],
            actor: Actor,
            source: str | None, correlation_id: str | None, idempotency_key: str | None,
            request_digest: str, now: datetime, admit: Admit | None) -> SubmitResult:
    position = {spec.key: i for i, spec in enumerate(jobs)}
    by_key = {spec.key: spec for spec in jobs}
    existing = dependencies.parents_lock(
        tenant=tenant, parent_ids={i for spec in jobs for i in spec.parent_ids})
    run = run_create(tenant=tenant, project=project, name=name, source=source,
                     correlation_id=correlation_id)
    sources = {n: source_resolve(tenant=tenant, name=n) for n in sorted(
        {spec.source for spec in jobs if spec.source is not None})}
    source_ids = {n: row.pk for n, row in sources.items() if row is not None}
    lanes = Counter((spec.job_type, source_ids.get(spec.source or "", 0)) for spec in jobs)
    # Sorted, so two submissions lock the quotas of shared lanes in the same order.
    for (job_type, source_id), count in sorted(lanes.items()):
        if admit is not None:
            admit(tenant, job_type, source_id, count)
        lane_register(tenant=tenant, job_type=job_type, source_id=source_id or None)
    rows: list[Job] = []
    for key in order:
        spec = by_key[key]
        pending = len(spec.parent_keys) + sum(
            1 for i in spec.parent_ids if existing[i] != JobStatus.SUCCEEDED)
        if pending:
            status = JobStatus.BLOCKED
        elif spec.not_before is not None and spec.not_before > now:
            status = JobStatus.SCHEDULED
        else:
            status = JobStatus.READY
        rows.append(Job(
            tenant=tenant, project=project, job_type=spec.job_type, payload=spec.payload,
            source=sources.get(spec.source) if spec.source else None, run=run,
            request_digest=request_digest, priority=spec.priority,
            idempotency_key=(_job_key(idempotency_key, position[key])
                             if idempotency_key is not None else None),
            correlation_id=correlation_id, status=status, max_attempts=spec.max_attempts,
            not_before=spec.not_before, pending_parents=pending, created_at=now, updated_at=now,
        ))
    # Created in topological order: ids ascend along every edge (RETURNING gives them back).
    Job.objects.bulk_create(rows, batch_size=500)
    created = dict(zip(order, rows, strict=True))
    edges = [(created[p].pk, created[spec.key].pk) for spec in jobs for p in spec.parent_keys]
    edges += [(i, created[spec.key].pk) for spec in jobs for i in spec.parent_ids]
    dependencies.edges_create(tenant=tenant, edges=edges)
    parents_of: dict[int, list[int]] = {}
    for parent, child in edges:
        parents_of.setdefault(child, []).append(parent)
    JobEvent.objects.bulk_create([
        event_for(job, type="job.created", actor=actor, now=now, to_status=job.status,
                  data={"idempotency_key": job.idempotency_key, "run_id": run.pk, "key": key,
                        "depends_on": sorted(parents_of.get(job.pk, [])),
                        "pending_parents": job.pending_parents})
        for key, job in created.items()
    ], batch_size=1000)
    ready = {job.job_type for job in rows if job.status == JobStatus.READY}
    notify_ready_on_commit(tenant=tenant, job_types=ready)
    return SubmitResult(run=run, jobs=[(spec.key, created[spec.key]) for spec in jobs],
                        replayed=False)


def _replay(tenant: str, run_key: str, request_digest: str,
            keys: list[str]) -> SubmitResult | None:
    """The run an earlier identical request created, or None when no position's key is held.

    Every position's key is checked, not only the first: the keys share the namespace of
    ``POST /jobs`` keys, so a single job (or another run) may hold any of them. The request is
    a repeat only when every position is held by a job of one run with this body's digest.

    Raises:
        IdempotencyConflict: some position's key is held otherwise, or the earlier run lacks a
            position; ``details.job_id``: the first foreign holder (else the first job found),
            ``details.run_id``: the run of the first job found (null for a single job).
    """
    names = [_job_key(run_key, i) for i in range(len(keys))]
    held = {job.idempotency_key: job for job in Job.objects.filter(
        tenant=tenant, idempotency_key__in=names)}
    if not held:
        return None
    ordered = [held.get(name) for name in names]
    first = next(job for job in ordered if job is not None)
    foreign = next((job for job in ordered if job is not None and (
        job.request_digest != request_digest or job.run_id is None
        or job.run_id != first.run_id)), None)
    if foreign is not None or None in ordered:
        raise IdempotencyConflict(
            "idempotency key already used with a different request body",
            run_id=first.run_id, job_id=(foreign or first).pk, idempotency_key=run_key)
    run = Run.objects.get(pk=first.run_id)
    return SubmitResult(run=run, jobs=[(key, job) for key, job in zip(keys, ordered, strict=True)
                                       if job is not None], replayed=True)
