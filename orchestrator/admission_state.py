"""Admission state as operators read it: each quota with its live numbers, pause keys by
scope, breakers, the tenant's share weight, the admission event log. Read-only selectors.

Live bucket numbers are computed, never stored: the quota's ``(tokens_micro, refilled_at)``
refilled to the database clock (``ledger.clock.db_now``, read once per call). Reading a
quota therefore never takes its lock or races a claim.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import QuerySet

from ledger.clock import db_now
from ledger.models import Source
from ledger.states import JobStatus
from quotas.bucket import Bucket, BucketState
from quotas.models import AdmissionEvent, CircuitBreaker, Pause, Quota, TenantShare

from .admission import WAITING, scope_jobs

# Counting a scope's jobs is a range scan; it stops here so a huge backlog cannot make a read
# of the quotas slow. Counts at the cap mean "at least this many".
COUNT_CAP = 100_000


@dataclass(frozen=True)
class BucketLive:
    """A token bucket at ``as_of``: ``tokens`` (with fraction), ``whole_tokens`` (leases it
    can grant now), ``next_token_at`` (None when full)."""

    tokens: float
    whole_tokens: int
    next_token_at: datetime | None


@dataclass(frozen=True)
class QuotaLive:
    """A quota with its scope's source name (None = every source), the leased (``active``)
    and waiting (``queued``: blocked/scheduled/ready) job counts, capped at COUNT_CAP, and its
    bucket (None without a rate) at ``as_of``."""

    quota: Quota
    source: str | None
    active: int
    queued: int
    bucket: BucketLive | None
    as_of: datetime


@dataclass
class PauseScope:
    """One paused scope (``job_type``/``source`` None = every) and its holders, by key."""

    job_type: str | None
    source: str | None
    pauses: list[Pause] = field(default_factory=list)

    @property
    def paused(self) -> bool:
        return bool(self.pauses)


def source_names(*, tenant: str, ids: Iterable[int]) -> dict[int, str]:
    """``{source_id: name}`` of the tenant's sources among ``ids`` (0, "every", left out)."""
    wanted = {i for i in ids if i}
    if not wanted:
        return {}
    return dict(Source.objects.filter(tenant=tenant, pk__in=wanted).values_list("pk", "name"))


def _count(quota: Quota, statuses: tuple[str, ...]) -> int:
    return scope_jobs(quota, statuses).order_by()[:COUNT_CAP].count()


def bucket_live(quota: Quota, now: datetime) -> BucketLive | None:
    """The quota's bucket refilled to ``now`` (not stored); None when it has no rate."""
    if quota.rate_per_second is None or quota.burst is None:
        return None
    bucket = Bucket(quota.rate_per_second, quota.burst)
    state = BucketState(quota.tokens_micro, quota.refilled_at)
    refilled = bucket.refill(state, now)
    return BucketLive(refilled.tokens, refilled.whole_tokens, bucket.next_token_at(state, now))


def quota_live(quota: Quota, *, now: datetime, names: dict[int, str]) -> QuotaLive:
    """``quota`` with its live numbers at ``now`` (two bounded counts)."""
    return QuotaLive(quota=quota, source=names.get(quota.source_id),
                     active=_count(quota, (JobStatus.LEASED,)), queued=_count(quota, WAITING),
                     bucket=bucket_live(quota, now), as_of=now)


def quota_states(*, tenant: str, now: datetime | None = None) -> list[QuotaLive]:
    """Every quota of the tenant with live numbers, widest scope first (job type, source)."""
    now = now or db_now()
    quotas = list(Quota.objects.filter(tenant=tenant).order_by("job_type", "source_id"))
    names = source_names(tenant=tenant, ids=(q.source_id for q in quotas))
    return [quota_live(q, now=now, names=names) for q in quotas]


def pause_scopes(*, tenant: str, job_type: str | None = None,
                 source_id: int | None = None) -> list[PauseScope]:
    """The tenant's paused scopes with their holders (keys sorted), optionally only one
    scope (``job_type``/``source_id`` "" / 0 = every)."""
    pauses = Pause.objects.filter(tenant=tenant)
    if job_type is not None:
        pauses = pauses.filter(job_type=job_type)
    if source_id is not None:
        pauses = pauses.filter(source_id=source_id)
    rows = list(pauses.order_by("job_type", "source_id", "key"))
    names = source_names(tenant=tenant, ids=(p.source_id for p in rows))
    scopes: dict[tuple[str, int], PauseScope] = defaultdict(lambda: PauseScope(None, None))
    for pause in rows:
        scope = scopes[(pause.job_type, pause.source_id)]
        scope.job_type = pause.job_type or None
        scope.source = names.get(pause.source_id)
        scope.pauses.append(pause)
    return list(scopes.values())


def pause_scope(*, tenant: str, job_type: str, source_id: int, source: str | None) -> PauseScope:
    """One scope's holders (an empty list: the scope is not paused)."""
    found = pause_scopes(tenant=tenant, job_type=job_type, source_id=source_id)
    return found[0] if found else PauseScope(job_type or None, source)


def breaker_list(*, tenant: str) -> list[tuple[CircuitBreaker, str | None]]:
    """The tenant's breakers with their source names, by source name."""
    breakers = list(CircuitBreaker.objects.filter(tenant=tenant))
    names = source_names(tenant=tenant, ids=(b.source_id for b in breakers))
    return sorted(((b, names.get(b.source_id)) for b in breakers), key=lambda p: p[1] or "")


def share_weight(*, tenant: str) -> int:
    """The tenant's fair-dispatch weight (1 when never set)."""
    weight = TenantShare.objects.filter(tenant=tenant).values_list("weight", flat=True).first()
    return 1 if weight is None else weight


def admission_events(*, tenant: str, type: str | None = None) -> QuerySet[AdmissionEvent]:
    """The tenant's admission events, newest first (``admevent_tenant_idx``)."""
    events = AdmissionEvent.objects.filter(tenant=tenant)
    if type:
        events = events.filter(type=type)
    return events.order_by("-id")
