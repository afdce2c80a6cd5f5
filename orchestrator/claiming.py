"""The claim: lease ready jobs to a runner under admission control, in one transaction.

Every rule is decided inside the claim's transaction, against rows it holds locked:

1. Candidate lanes (tenant, job_type, source) with a ready job, not paused by any pause key,
   their source's breaker closed (or half-open with its one probe not yet out).
2. Tenant dispatch locks (``TenantShare`` rows), least recently served first, ``FOR UPDATE SKIP
   LOCKED``: concurrent claimers serve different tenants instead of queueing. Only a claimer that
   holds no lock yet may wait for one (so no two claimers ever wait on each other).
3. Under those locks, with the database clock read after locking: every covering quota's
   budget = min(max_active - leased jobs counted now, whole tokens after refill).
4. The heads of the tenants' lanes (one ``job_lane_idx`` range each) and the weighted
   round-robin decision (``quotas.dispatch.allocate``); lanes without budget are skipped, so a
   capped or drained lane never blocks another (no head-of-line blocking).
5. The chosen jobs leased (status re-checked), buckets charged, tenants moved to the back.

A job is leased only by a holder of its tenant's dispatch lock, so caps and buckets are exact:
no count is taken outside the transaction that acts on it. See docs/admission.md.
"""
from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from django.db import IntegrityError, connection, transaction

from ledger.clock import db_now, require_aware
from ledger.models import ActorType, Claim, Job, JobEvent, Lane, Lease, LeaseStatus
from ledger.services import Actor, event_for
from ledger.states import JobStatus, require
from quotas.bucket import Bucket, BucketState
from quotas.dispatch import Head, LaneKey, Served, TenantTurn, allocate
from quotas.models import (
    ANY_JOB_TYPE,
    ANY_SOURCE,
    BreakerState,
    CircuitBreaker,
    Pause,
    Quota,
    TenantShare,
)

from . import claim_sql, wakeups
from .admission import scope_jobs
from .lease_config import LeaseConfig


@dataclass(frozen=True)
class Grant:
    """One lease handed out by a claim, with the job it covers (both as stored)."""

    lease: Lease
    job: Job
    heartbeat_interval_seconds: int
    backoff_seconds: int


@dataclass(frozen=True)
class _Lane:
    tenant: str
    job_type: str
    source_id: int
    served_seq: int | None
    weight: int
    turn_taken: int
    probe: bool

    @property
    def key(self) -> LaneKey:
        return (self.tenant, self.job_type, self.source_id)


class _NothingClaimed(Exception):
    """Rolls back a claim transaction that found no job (and so its Claim row)."""


def lease_claim(*, tenant: str, runner_id: str, job_types: Sequence[str], max_jobs: int,
                lease_for: timedelta | None = None, claim_id: str | None = None,
                now: datetime | None = None, config: LeaseConfig | None = None,
                tenants: Sequence[str] | None = None) -> list[Grant]:
    """Lease up to ``max_jobs`` ready jobs of ``job_types`` to ``runner_id``, in one transaction,
    under every admission rule (quotas, pauses, breakers, fair dispatch; module docstring).

    Within a tenant, jobs go by ``priority`` (high first), then id (oldest first). Each job
    gets a new ``Lease`` row (one per attempt), its fencing token and attempt go up by one, and a
    ``job.leased`` event is appended.

    With ``claim_id``: the first claim that grants leases records ``(tenant, runner_id,
    claim_id)``; a repeat returns those same leases (as they stand now) and never new ones.
    A claim that found nothing records nothing, so a retried ``claim_id`` may still poll.

    Args:
        tenant: the caller's tenant (the Claim row's tenant).
        tenants: the tenants served (a shared runner pool); None serves ``[tenant]``.
        lease_for: lease length; the server default when None; within the configured bounds.
        now: aware instant standing for the database clock (tests); defaults to the database
            clock read after the dispatch locks are taken.

    Returns:
        The grants, possibly empty.

    Raises:
        ValueError: ``max_jobs`` outside 1..config.max_jobs, or ``lease_for`` out of bounds.
    """
    config = config or LeaseConfig.from_settings()
    if not 1 <= max_jobs <= config.max_jobs:
        raise ValueError(f"max_jobs must be between 1 and {config.max_jobs}")
    length = config.clamp_lease(lease_for)
    types = sorted(set(job_types))
    served = sorted(set(tenants)) if tenants is not None else [tenant]
    if now is not None:
        require_aware(now)
    try:
        with transaction.atomic():
            claim = None
            if claim_id is not None:
                try:
                    with transaction.atomic():
                        claim = Claim.objects.create(tenant=tenant, runner_id=runner_id,
                                                     claim_id=claim_id,
                                                     created_at=now or db_now())
                except IntegrityError:
                    # Another request with this claim_id committed leases first (on PostgreSQL
                    # our insert waited for it): answer with its leases.
                    return _grants_of_claim(tenant, runner_id, claim_id, config)
            grants = _claim_admitted(tenants=served, runner_id=runner_id, types=types,
                                     max_jobs=max_jobs, length=length, claim=claim, now=now,
                                     config=config)
            if not grants:
                raise _NothingClaimed  # roll back the Claim row: a retry may still poll
            return grants
    except _NothingClaimed:
        return []


class _NeedsAdmission(Exception):
    """Rolls back the fast claim's savepoint: the tenant has a quota or a breaker not closed."""


def _claim_admitted(*, tenants: list[str], runner_id: str, types: list[str], max_jobs: int,
                    length: timedelta, claim: Claim | None, now: datetime | None,
                    config: LeaseConfig) -> list[Grant]:
    if connection.vendor == "postgresql" and len(tenants) == 1:
        try:
            with transaction.atomic():  # a savepoint: falling back releases the share lock
                grants = _claim_fast(tenants[0], runner_id=runner_id, types=types,
                                     max_jobs=max_jobs, length=length, claim=claim, now=now,
                                     config=config)
            if grants is not None:
                return grants
        except _NeedsAdmission:
            pass
    lanes = _candidate_lanes(tenants, types)
    if not lanes:
        return []
    _shares_ensure({lane.tenant for lane in lanes if lane.served_seq is None})
    by_tenant: dict[str, list[_Lane]] = {}
    # First-seen tenants were just put at the back of the order (_shares_ensure).
    for lane in sorted(lanes, key=lambda la: (la.served_seq is None, la.served_seq or 0,
                                              la.tenant)):
        by_tenant.setdefault(lane.tenant, []).append(lane)
    order = list(by_tenant)
    credits = {lane.tenant: max(1, lane.weight - lane.turn_taken) for lane in lanes}
    grants: list[Grant] = []
    tried: set[str] = set()
    first = True
    while len(grants) < max_jobs:
        candidates = [t for t in order if t not in tried]
        if not candidates:
            break
        # Lock only the tenants the first round-robin turn can serve (each takes up to its
        # weight): a tenant locked but left unserved would be skipped by concurrent claimers.
        locked = _tenants_lock(candidates, limit=_turn_size(candidates, credits,
                                                            max_jobs - len(grants)))
        if not locked:
            if not first:
                break
            # Every candidate is being served by another claimer; we hold no lock, so waiting
            # for the first one cannot deadlock.
            locked = _tenant_lock_wait(candidates[0])
        first = False
        tried.update(t for t, _, _ in locked)
        grants += _serve(locked, by_tenant, runner_id=runner_id, max_jobs=max_jobs - len(grants),
                         length=length, claim=claim, now=now, config=config)
    return grants


def _claim_fast(tenant: str, *, runner_id: str, types: list[str], max_jobs: int,
                length: timedelta, claim: Claim | None, now: datetime | None,
                config: LeaseConfig) -> list[Grant] | None:
    """The claim of one tenant with nothing to count (orch_claim_fast_v1): None when the tenant
    has no dispatch row yet (the full claim makes it).

    Raises:
        _NeedsAdmission: the tenant has a quota or a breaker that is not closed.
    """
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM quotas_tenantshare WHERE tenant = %s FOR SHARE", [tenant])
        if cursor.fetchone() is None:
            return None
        cursor.execute(claim_sql.ORCH_FAST_GUARD_V1, {"tenant": tenant})
        if not cursor.fetchone()[0]:
            raise _NeedsAdmission
        cursor.execute(claim_sql.ORCH_CLAIM_FAST_V1, {
            "now": now, "tenant": tenant, "types": types, "limit": max_jobs,
            "seconds": int(length.total_seconds()), "runner": runner_id,
            "claim_pk": claim.pk if claim else None})
        rows = sorted(cursor.fetchall(), key=lambda r: (-r[9], r[0]))
    return _grants_of_rows(rows, runner_id=runner_id, length=length,
                           claim_pk=claim.pk if claim else None, config=config)


def _turn_size(candidates: list[str], credits: dict[str, int], slots: int) -> int:
    """How many candidates, in order, ``slots`` jobs reach when each takes its turn's
    remaining ``credits`` (>= 1)."""
    total = count = 0
    for tenant in candidates:
        if total >= slots:
            break
        total += max(1, credits.get(tenant, 1))
        count += 1
    return max(1, count)


def _candidate_lanes(tenants: list[str], types: list[str]) -> list[_Lane]:
    if connection.vendor == "postgresql":
        sql = claim_sql.ORCH_LANES_V1.format(tenant_filter="l.tenant = ANY(%(tenants)s) AND")
        with connection.cursor() as cursor:
            cursor.execute(sql, {"tenants": tenants, "types": types})
            return [_Lane(t, jt, src, seq, weight, taken, bool(probe))
                    for t, jt, src, seq, weight, taken, probe in cursor.fetchall()]
    # SQLite (standalone): the same rule with the ORM; the transaction holds the write lock.
    shares = {s.tenant: s for s in TenantShare.objects.filter(tenant__in=tenants)}
    lanes = [_Lane(lane.tenant, lane.job_type, lane.source_id,
                   shares[lane.tenant].served_seq if lane.tenant in shares else None,
                   shares[lane.tenant].weight if lane.tenant in shares else 1,
                   shares[lane.tenant].turn_taken if lane.tenant in shares else 0, False)
             for lane in Lane.objects.filter(tenant__in=tenants, job_type__in=types)]
    return [lane for lane in _gate(lanes)
            if _lane_jobs(lane.tenant, lane.job_type, lane.source_id).exists()]


def _gate(lanes: list[_Lane]) -> list[_Lane]:
    """The ``lanes`` no pause key covers and whose breaker lets jobs out, with ``probe`` set
    for a half-open breaker's lane (read under the dispatch locks: orch_gate_v1)."""
    if not lanes:
        return []
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(claim_sql.ORCH_GATE_V1, {
                "tenants": [la.tenant for la in lanes], "types": [la.job_type for la in lanes],
                "sources": [la.source_id for la in lanes]})
            open_ = {(t, jt, src): bool(probe) for t, jt, src, probe in cursor.fetchall()}
        return [replace(la, probe=open_[la.key]) for la in lanes if la.key in open_]
    tenants = {la.tenant for la in lanes}
    breakers = {b.source_id: b for b in CircuitBreaker.objects.filter(tenant__in=tenants)}
    pauses = list(Pause.objects.filter(tenant__in=tenants))
    result = []
    for lane in lanes:
        breaker = breakers.get(lane.source_id) if lane.source_id else None
        if breaker is not None and not (
                breaker.state == BreakerState.CLOSED
                or (breaker.state == BreakerState.HALF_OPEN and breaker.probe_job_id is None)):
            continue
        if any(_covers_key(p, lane.key) for p in pauses):
            continue
        result.append(replace(lane, probe=breaker is not None
                              and breaker.state == BreakerState.HALF_OPEN))
    return result


def _lane_jobs(tenant: str, job_type: str, source_id: int) -> Any:
    jobs = Job.objects.filter(status=JobStatus.READY, tenant=tenant, job_type=job_type)
    return jobs.filter(source__isnull=True) if source_id == 0 else jobs.filter(source_id=source_id)


def _shares_ensure(tenants: Iterable[str]) -> None:
    """Give first-seen tenants a dispatch row, at the back of the order."""
    tenants = sorted(tenants)
    if not tenants:
        return
    top = TenantShare.objects.order_by("-served_seq").values_list("served_seq", flat=True).first()
    TenantShare.objects.bulk_create(
        [TenantShare(tenant=t, weight=1, served_seq=(top or 0) + 1) for t in tenants],
        ignore_conflicts=True)


def _tenants_lock(candidates: list[str], *, limit: int) -> list[tuple[str, int, int]]:
    """Lock up to ``limit`` dispatch rows of ``candidates``, least recently served first,
    skipping rows other claimers hold. Returns ``[(tenant, weight, turn_taken)]`` in order."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(claim_sql.ORCH_LOCK_TENANTS_V1, {"tenants": candidates, "limit": limit})
            return list(cursor.fetchall())
    rows = TenantShare.objects.filter(tenant__in=candidates).order_by("served_seq", "tenant")
    return [(s.tenant, s.weight, s.turn_taken) for s in rows[:limit]]


def _tenant_lock_wait(tenant: str) -> list[tuple[str, int, int]]:
    share = TenantShare.objects.select_for_update().filter(tenant=tenant).first()
    return [(share.tenant, share.weight, share.turn_taken)] if share else []


def _serve(locked: list[tuple[str, int, int]], by_tenant: dict[str, list[_Lane]], *, runner_id: str,
           max_jobs: int, length: timedelta, claim: Claim | None, now: datetime | None,
           config: LeaseConfig) -> list[Grant]:
    """Admit and lease for the ``locked`` tenants (their dispatch rows are ours)."""
    names = [t for t, _, _ in locked]
    lanes = _gate([lane for t in names for lane in by_tenant[t]])
    clock, quotas, active = _budgets_load(names)
    now = require_aware(now) if now is not None else clock
    budgets: dict[object, int] = {}
    states: dict[int, BucketState] = {}
    for q in quotas:
        limit = None
        if q.max_active is not None:
            limit = max(0, q.max_active - active[q.pk])
        if q.rate_per_second is not None and q.burst is not None:
            state = Bucket(q.rate_per_second, q.burst).refill(
                BucketState(q.tokens_micro, q.refilled_at), now)
            states[q.pk] = state
            limit = state.whole_tokens if limit is None else min(limit, state.whole_tokens)
        if limit is not None:
            budgets[("quota", q.pk)] = limit
    lane_budgets: dict[LaneKey, list[object]] = {}
    for lane in lanes:
        keys: list[object] = [("quota", q.pk) for q in quotas
                              if ("quota", q.pk) in budgets and _covers_key(q, lane.key)]
        if lane.probe:
            keys.append(("probe", lane.source_id))
            budgets[("probe", lane.source_id)] = 1
        lane_budgets[lane.key] = keys
    open_lanes = [la for la in lanes if all(budgets[k] > 0 for k in lane_budgets[la.key])]
    if not open_lanes:
        return []
    heads = _heads(open_lanes, limit=max_jobs)
    turns = [TenantTurn(t, weight, [h for h in heads if h.lane[0] == t],
                        credit=weight - taken) for t, weight, taken in locked]
    choice = allocate(turns, max_jobs=max_jobs, lane_budgets=lane_budgets, budgets=budgets)
    if not choice.job_ids:
        return []
    lane_of = {h.job_id: h.lane for h in heads}
    charged = _charge([lane_of[i] for i in choice.job_ids], quotas, states, now)
    grants = _lease(choice.job_ids, runner_id=runner_id, length=length, claim=claim, now=now,
                    config=config, charged=charged, served=choice.served)
    _probes_mark(grants, {la.key for la in lanes if la.probe})
    return grants


def _covers_key(scope: Quota | Pause, lane: LaneKey) -> bool:
    """True when the quota's or pause's scope (tenant, job type or all, source or all) covers
    the lane ``(tenant, job_type, source_id)``."""
    tenant, job_type, source_id = lane
    return (scope.tenant == tenant and scope.job_type in (ANY_JOB_TYPE, job_type)
            and scope.source_id in (ANY_SOURCE, source_id))


def _budgets_load(tenants: list[str]) -> tuple[datetime, list[Quota], dict[int, int]]:
    """Under the dispatch locks: the clock, the tenants' quotas, and the leased jobs now in each
    capped quota's scope. The clock is read after the locks and with the counts: every lease
    the counts no longer see ended before it (lease intervals never overlap beyond a cap), and
    the buckets' time only moves forward across claimers."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(claim_sql.ORCH_BUDGETS_V1, {"tenants": tenants})
            rows = cursor.fetchall()
        quotas, active = [], {}
        for (_, pk, tenant, job_type, source_id, max_active, rate, burst, tokens, refilled,
             count) in rows:
            if pk is None:
                continue
            quotas.append(Quota(id=pk, tenant=tenant, job_type=job_type, source_id=source_id,
                                max_active=max_active, rate_per_second=rate, burst=burst,
                                tokens_micro=tokens, refilled_at=refilled))
            active[pk] = count
        return rows[0][0], quotas, active
    quotas = list(Quota.objects.filter(tenant__in=tenants).order_by("id"))
    active = {q.pk: scope_jobs(q, (JobStatus.LEASED,)).count()
              for q in quotas if q.max_active is not None}
    return db_now(), quotas, active


def _heads(lanes: list[_Lane], *, limit: int) -> list[Head]:
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(claim_sql.ORCH_HEADS_V1, {
                "tenants": [la.tenant for la in lanes], "types": [la.job_type for la in lanes],
                "sources": [la.source_id for la in lanes], "limit": limit})
            return [Head(job_id, priority, (t, jt, src))
                    for t, jt, src, job_id, priority in cursor.fetchall()]
    heads = []
    for lane in lanes:
        rows = _lane_jobs(lane.tenant, lane.job_type, lane.source_id).order_by(
            "-priority", "id").values_list("id", "priority")[:limit]
        heads += [Head(job_id, priority, lane.key) for job_id, priority in rows]
    return heads


def _lease(ids: list[int], *, runner_id: str, length: timedelta, claim: Claim | None,
           now: datetime, config: LeaseConfig, charged: list[Quota],
           served: list[Served]) -> list[Grant]:
    """Lease the chosen jobs still ready and store the charged buckets and the served order."""
    if connection.vendor != "postgresql":
        jobs = list(Job.objects.filter(pk__in=ids, status=JobStatus.READY))
        jobs.sort(key=lambda j: ids.index(j.pk))
        grants = _grant(jobs, runner_id=runner_id, claim=claim, length=length, now=now,
                        config=config)
        _admitted_store(charged, served)
        return grants
    with connection.cursor() as cursor:
        cursor.execute(claim_sql.ORCH_LEASE_IDS_V2, {
            "now": now, "ids": ids, "seconds": int(length.total_seconds()), "runner": runner_id,
            "claim_pk": claim.pk if claim else None,
            "quota_ids": [q.pk for q in charged], "tokens": [q.tokens_micro for q in charged],
            "refilled": [q.refilled_at for q in charged],
            "served": [x.tenant for x in served], "to_back": [x.to_back for x in served],
            "turn_taken": [x.turn_taken for x in served]})
        rows = {row[0]: row for row in cursor.fetchall()}
    # in the decided order; a job no longer ready (canceled meanwhile) is simply absent
    return _grants_of_rows([rows[i] for i in ids if i in rows], runner_id=runner_id,
                           length=length, claim_pk=claim.pk if claim else None, config=config)


def _grants_of_rows(rows: list[tuple[Any, ...]], *, runner_id: str, length: timedelta,
                    claim_pk: int | None, config: LeaseConfig) -> list[Grant]:
    """Grants from the rows orch_lease_ids_v1 / orch_claim_plain_v3 return."""
    seconds = int(length.total_seconds())
    interval = config.heartbeat_for(length)
    grants = []
    for (job_id, tenant, project, job_type, source_id, run_id, payload, idempotency_key,
         correlation_id, priority, attempt, max_attempts, fencing_token, lease_id, expires_at,
         created_at, leased_at) in rows:
        job = Job(id=job_id, tenant=tenant, project=project, job_type=job_type,
                  source_id=source_id, run_id=run_id, payload=_json(payload),
                  idempotency_key=idempotency_key, correlation_id=correlation_id,
                  priority=priority, status=JobStatus.LEASED, attempt=attempt,
                  max_attempts=max_attempts, fencing_token=fencing_token,
                  current_lease_id=lease_id, lease_expires_at=expires_at, runner_id=runner_id,
                  created_at=created_at, updated_at=leased_at)
        lease = Lease(id=lease_id, job_id=job_id, tenant=tenant, source_id=source_id,
                      fencing_token=fencing_token, attempt=attempt, runner_id=runner_id,
                      claim_id=claim_pk, status=LeaseStatus.ACTIVE, lease_seconds=seconds,
                      leased_at=leased_at, expires_at=expires_at)
        grants.append(Grant(lease=lease, job=job, heartbeat_interval_seconds=interval,
                            backoff_seconds=int(config.backoff.ceiling(attempt).total_seconds())))
    return grants


def lease_claim_plain(*, tenant: str, runner_id: str, job_types: Sequence[str], max_jobs: int,
                      config: LeaseConfig | None = None) -> list[Grant]:
    """The claim WITHOUT admission control (PostgreSQL only): the benchmark's baseline for the
    cost of admission. Not used by the API: it ignores quotas, pauses, breakers and fairness.

    Raises:
        RuntimeError: not on PostgreSQL.
    """
    if connection.vendor != "postgresql":
        raise RuntimeError("lease_claim_plain is PostgreSQL-only")
    config = config or LeaseConfig.from_settings()
    length = config.clamp_lease(None)
    with connection.cursor() as cursor:
        cursor.execute(claim_sql.ORCH_CLAIM_PLAIN_V3, {
            "now": None, "tenant": tenant, "types": sorted(set(job_types)), "limit": max_jobs,
            "seconds": int(length.total_seconds()), "runner": runner_id, "claim_pk": None})
        rows = sorted(cursor.fetchall(), key=lambda r: (-r[9], r[0]))
    return _grants_of_rows(rows, runner_id=runner_id, length=length, claim_pk=None,
                           config=config)


def _json(value: Any) -> Any:
    """Raw cursors get jsonb as text on Django's psycopg 3 backend (JSONField decodes it)."""
    return json.loads(value) if isinstance(value, str | bytes) else value


def _grant(jobs: list[Job], *, runner_id: str, claim: Claim | None, length: timedelta,
           now: datetime, config: LeaseConfig) -> list[Grant]:
    """The portable lease writes (SQLite), the same rows as orch_lease_ids_v1."""
    event_type = require(JobStatus.READY, JobStatus.LEASED)
    actor = Actor(ActorType.RUNNER, runner_id)
    expires = now + length
    seconds = int(length.total_seconds())
    leases: list[Lease] = []
    events: list[JobEvent] = []
    for job in jobs:
        lease = Lease(
            job_id=job.pk, tenant=job.tenant, source_id=job.source_id,
            fencing_token=job.fencing_token + 1, attempt=job.attempt + 1, runner_id=runner_id,
            claim=claim, status=LeaseStatus.ACTIVE, lease_seconds=seconds, leased_at=now,
            expires_at=expires,
        )
        leases.append(lease)
        job.status = JobStatus.LEASED
        job.fencing_token = lease.fencing_token
        job.attempt = lease.attempt
        job.current_lease = lease
        job.lease_expires_at = expires
        job.runner_id = runner_id
        job.updated_at = now
        events.append(event_for(job, type=event_type, actor=actor, now=now,
                                from_status=JobStatus.READY, to_status=JobStatus.LEASED,
                                lease_id=lease.id,
                                data={"fencing_token": lease.fencing_token, "attempt": lease.attempt}))
    Lease.objects.bulk_create(leases)
    # The transaction holds SQLite's write lock and the rows were 'ready' when read: this write
    # is the compare-and-set's second half, one statement for the whole batch.
    Job.objects.bulk_update(
        jobs, ["status", "fencing_token", "attempt", "current_lease", "lease_expires_at",
               "runner_id", "updated_at"],
    )
    JobEvent.objects.bulk_create(events)
    interval = config.heartbeat_for(length)
    return [
        Grant(lease=lease, job=job, heartbeat_interval_seconds=interval,
              backoff_seconds=int(config.backoff.ceiling(job.attempt).total_seconds()))
        for lease, job in zip(leases, jobs, strict=True)
    ]


def _charge(lanes: list[LaneKey], quotas: list[Quota], states: dict[int, BucketState],
            now: datetime) -> list[Quota]:
    """Take one token per chosen job (``lanes``: each job's lane) from every covering bucket;
    return the quotas changed, their new state set on them."""
    changed = []
    for q in quotas:
        if q.pk not in states:
            continue
        used = sum(1 for lane in lanes if _covers_key(q, lane))
        if not used:
            continue
        assert q.rate_per_second is not None and q.burst is not None
        granted, state = Bucket(q.rate_per_second, q.burst).take(states[q.pk], now, used)
        if granted != used:  # allocate() never exceeds the whole tokens it was given
            raise AssertionError(f"bucket of {q} over-drawn: {used} > {granted}")
        q.tokens_micro, q.refilled_at = state.tokens_micro, state.refilled_at
        changed.append(q)
    return changed


def _probes_mark(grants: list[Grant], probe_lanes: set[LaneKey]) -> None:
    """Record the half-open breakers' probe jobs (one per breaker, by construction)."""
    for g in grants:
        key = (g.job.tenant, g.job.job_type, g.job.source_id or 0)
        if key in probe_lanes:
            CircuitBreaker.objects.filter(source_id=key[2], state=BreakerState.HALF_OPEN,
                                          probe_job_id__isnull=True).update(probe_job_id=g.job.pk)


def _admitted_store(charged: list[Quota], served: list[Served]) -> None:
    """SQLite: store the charged buckets and the served tenants' turns (orch_lease_ids_v2 does
    both on PostgreSQL)."""
    Quota.objects.bulk_update(charged, ["tokens_micro", "refilled_at"])
    top = TenantShare.objects.order_by("-served_seq").values_list("served_seq", flat=True).first()
    for offset, x in enumerate(served, start=1):
        changes: dict[str, int] = {"turn_taken": x.turn_taken}
        if x.to_back:
            changes["served_seq"] = (top or 0) + offset
        TenantShare.objects.filter(tenant=x.tenant).update(**changes)


def _grants_of_claim(tenant: str, runner_id: str, claim_id: str,
                     config: LeaseConfig) -> list[Grant]:
    leases = list(
        Lease.objects.select_related("job")
        .filter(claim__tenant=tenant, claim__runner_id=runner_id, claim__claim_id=claim_id)
        .order_by("-job__priority", "job_id")
    )
    return [
        Grant(lease=lease, job=lease.job,
              heartbeat_interval_seconds=config.heartbeat_for(timedelta(seconds=lease.lease_seconds)),
              backoff_seconds=int(config.backoff.ceiling(lease.attempt).total_seconds()))
        for lease in leases
    ]


def lease_claim_wait(*, wait: timedelta, config: LeaseConfig | None = None,
                     **claim: Any) -> list[Grant]:
    """``lease_claim``, long-polling up to ``wait`` while nothing is ready.

    Between attempts the caller holds no transaction and sleeps on ``orchestrator.wakeups``
    (woken at once by an enqueue in this process), re-checking on a capped exponential schedule
    so jobs made ready by other processes are found within ``config.poll_max``.

    Args:
        wait: 0 for a single attempt; at most ``config.max_wait``.
        claim: keyword arguments of ``lease_claim`` (without ``now``).

    Raises:
        ValueError: ``wait`` out of range, or as ``lease_claim``.
    """
    config = config or LeaseConfig.from_settings()
    if not timedelta(0) <= wait <= config.max_wait:
        raise ValueError(f"wait_seconds must be between 0 and {int(config.max_wait.total_seconds())}")
    deadline = time.monotonic() + wait.total_seconds()
    delay = config.poll_min.total_seconds()
    while True:
        seen = wakeups.generation()
        grants = lease_claim(config=config, **claim)
        remaining = deadline - time.monotonic()
        if grants or remaining <= 0 or wakeups.closing():
            return grants
        woken = wakeups.wait(seen, min(delay, remaining))
        delay = config.poll_min.total_seconds() if woken else min(
            delay * 2, config.poll_max.total_seconds())
