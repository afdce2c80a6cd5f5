"""Admission control writes: quotas, throttles, pause keys (``quotas.pauses``, re-exported
here), tenant shares, breaker settings.

Every service runs in one transaction that locks the row it changes (``SELECT ... FOR
UPDATE``, so concurrent edits serialize instead of losing one) and appends an
``AdmissionEvent`` (actor, reason, ticket, ``data: {before, after}``) with the change. A call
that changes no row (the same values again: a retried request) stores nothing and records
nothing. Scopes: ``job_type = ""`` is every job type, ``source_id = 0`` every source.

Callers pass ``now`` (``ledger.clock.db_now()``: quotas cannot import the ledger) and an
``actor`` with ``type`` and ``label``. Errors (``quotas.exceptions``) change nothing.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from django.db import transaction

from .audit import (
    ActorLike,
    check_int,
    check_now,
    check_number,
    check_scope,
    check_why,
    dispatch_lock,
    event_append,
    lock,
    lock_or_insert,
)
from .bucket import Bucket, BucketState
from .exceptions import AdmissionInvalid, AdmissionNotFound
from .models import ANY_JOB_TYPE, ANY_SOURCE, CircuitBreaker, Quota, TenantShare
from .pauses import pause_add, pause_remove

# Bounds. Integers stay far inside PostgreSQL's integer columns; the rate floor (one token per
# 11.6 days) keeps ``Bucket.next_token_at`` within datetime's range.
LIMIT_MAX = 1_000_000_000
RATE_MIN = 0.000001
RATE_MAX = 1_000_000.0
WEIGHT_MAX = 1000
WINDOW_SECONDS_MAX = 7 * 86_400
COOLDOWN_SECONDS_MAX = 7 * 86_400
MIN_SAMPLES_MAX = 1_000_000


@dataclass(frozen=True)
class Limits:
    """A quota's limits; None is "no limit". ``rate_per_second`` (tokens/s) and ``burst``
    (tokens) are the token bucket: both set or both None."""

    max_active: int | None = None
    rate_per_second: float | None = None
    burst: int | None = None
    max_queued: int | None = None

    @classmethod
    def of(cls, quota: Quota) -> Limits:
        return cls(quota.max_active, quota.rate_per_second, quota.burst, quota.max_queued)

    def check(self) -> None:
        """Raise ``AdmissionInvalid`` (naming the field) for an out-of-range or lone bucket
        parameter."""
        for field in ("max_active", "max_queued"):
            if getattr(self, field) is not None:
                check_int(field, getattr(self, field), 0, LIMIT_MAX)
        if (self.rate_per_second is None) != (self.burst is None):
            raise AdmissionInvalid("burst" if self.burst is None else "rate_per_second",
                                   "rate_per_second and burst go together (both or neither)")
        if self.rate_per_second is not None:
            check_number("rate_per_second", self.rate_per_second, RATE_MIN, RATE_MAX)
            check_int("burst", self.burst, 1, LIMIT_MAX)

    @property
    def bucket(self) -> Bucket | None:
        if self.rate_per_second is None or self.burst is None:
            return None
        return Bucket(float(self.rate_per_second), self.burst)


@dataclass(frozen=True)
class BreakerConfig:
    """Breaker parameters; None keeps the current value (the model default for a new row).
    ``failure_ratio`` in (0, 1]; durations in seconds."""

    failure_ratio: float | None = None
    window_seconds: int | None = None
    min_samples: int | None = None
    cooldown_seconds: int | None = None

    def check(self) -> None:
        """Raise ``AdmissionInvalid`` for an out-of-range value."""
        if self.failure_ratio is not None:
            check_number("failure_ratio", self.failure_ratio, 0.0, 1.0, low_open=True)
        for field, high in (("window_seconds", WINDOW_SECONDS_MAX), ("min_samples", MIN_SAMPLES_MAX),
                            ("cooldown_seconds", COOLDOWN_SECONDS_MAX)):
            if getattr(self, field) is not None:
                check_int(field, getattr(self, field), 1, high)


def _limits_json(quota: Quota | None) -> dict[str, Any] | None:
    return None if quota is None else asdict(Limits.of(quota))


def _bucket_retuned(quota: Quota, new: Limits, now: datetime) -> tuple[int, datetime | None]:
    """The bucket state ``(tokens_micro, refilled_at)`` under ``new`` parameters.

    A new bucket starts full (``refilled_at`` None). A changed one is first refilled to
    ``now`` under the old rate (tokens earned so far are kept), then clamped to the new burst,
    so a lowered burst never leaves more tokens than it allows.
    """
    old_bucket, new_bucket = Limits.of(quota).bucket, new.bucket
    if new_bucket is None:
        return 0, None
    if old_bucket is None or quota.refilled_at is None:
        return new_bucket.capacity_micro, None
    if old_bucket == new_bucket:
        return quota.tokens_micro, quota.refilled_at
    state = old_bucket.refill(BucketState(quota.tokens_micro, quota.refilled_at), now)
    return min(state.tokens_micro, new_bucket.capacity_micro), state.refilled_at


def _apply(quota: Quota, limits: Limits, *, actor: ActorLike, reason: str, ticket: str,
           now: datetime) -> None:
    quota.tokens_micro, quota.refilled_at = _bucket_retuned(quota, limits, now)
    quota.max_active = limits.max_active
    quota.rate_per_second = None if limits.rate_per_second is None else float(limits.rate_per_second)
    quota.burst, quota.max_queued = limits.burst, limits.max_queued
    quota.reason, quota.ticket, quota.updated_by, quota.updated_at = reason, ticket, actor.label, now


def _write_limits(*, tenant: str, job_type: str, source_id: int, limits: Limits,
                  actor: ActorLike, reason: str, ticket: str, now: datetime,
                  event_type: str) -> Quota:
    """Create or update the scope's quota to ``limits`` (checked), with its event.

    Call with the tenant's ``dispatch_lock`` held (taken first: claims in flight finish before
    the change commits, and every later claim decides under the new limits)."""
    new = Quota(tenant=tenant, job_type=job_type, source_id=source_id)
    _apply(new, limits, actor=actor, reason=reason, ticket=ticket, now=now)
    quota, inserted = lock_or_insert(Quota, new, tenant=tenant, job_type=job_type,
                                     source_id=source_id)
    before = None if inserted else _limits_json(quota)
    if not inserted:
        if Limits.of(quota) == limits and (quota.reason, quota.ticket) == (reason, ticket):
            return quota  # the same request again: nothing changes, nothing is recorded
        _apply(quota, limits, actor=actor, reason=reason, ticket=ticket, now=now)
        quota.save()
    event_append(tenant=tenant, type=event_type, job_type=job_type, source_id=source_id,
                 actor=actor, reason=reason, ticket=ticket, now=now,
                 data={"before": before, "after": _limits_json(quota)})
    return quota


def quota_set(*, tenant: str, job_type: str = ANY_JOB_TYPE, source_id: int = ANY_SOURCE,
              limits: Limits, actor: ActorLike, reason: str, ticket: str,
              now: datetime) -> Quota:
    """Create or replace the limits of one scope's quota (every limit: None = no limit).

    Bucket state: a new bucket is full; changed bucket parameters keep the tokens earned so
    far, clamped to the new ``burst`` (see ``_bucket_retuned``). Appends ``quota.changed``.

    Args:
        tenant, job_type ("" = every type), source_id (0 = every source): the scope.
        limits: at least one set; ``max_active``/``max_queued`` 0..LIMIT_MAX jobs;
            ``rate_per_second`` RATE_MIN..RATE_MAX tokens/s with ``burst`` 1..LIMIT_MAX tokens.
        reason, ticket: required, non-blank (stored on the quota and in the event).
        now: the database clock (aware).

    Returns:
        The quota as stored.

    Raises:
        ReasonRequired, TicketRequired: blank reason or ticket.
        AdmissionInvalid: a limit out of range, a lone bucket parameter, or no limit at all
            (``quota_delete`` removes a quota).
    """
    check_now(now)
    check_scope(tenant, job_type, source_id)
    reason, ticket = check_why(reason, ticket, ticket_required=True)
    limits.check()
    if limits == Limits():
        raise AdmissionInvalid("limits", "set at least one limit (delete the quota to lift all)")
    with transaction.atomic():
        dispatch_lock(tenant)
        return _write_limits(tenant=tenant, job_type=job_type, source_id=source_id,
                             limits=limits, actor=actor, reason=reason, ticket=ticket, now=now,
                             event_type="quota.changed")


def quota_delete(*, tenant: str, job_type: str = ANY_JOB_TYPE, source_id: int = ANY_SOURCE,
                 actor: ActorLike, reason: str, ticket: str, now: datetime) -> dict[str, Any]:
    """Delete one scope's quota (its scope is then unlimited); append ``quota.deleted``.

    Returns:
        The deleted limits (``Limits`` as a dict).

    Raises:
        ReasonRequired, TicketRequired: blank reason or ticket.
        AdmissionNotFound: the scope has no quota.
    """
    check_now(now)
    check_scope(tenant, job_type, source_id)
    reason, ticket = check_why(reason, ticket, ticket_required=True)
    with transaction.atomic():
        quota = lock(Quota, tenant=tenant, job_type=job_type, source_id=source_id)
        if quota is None:
            raise AdmissionNotFound("this scope has no quota", job_type=job_type or None,
                                    source_id=source_id or None)
        before = _limits_json(quota)
        assert before is not None
        quota.delete()
        event_append(tenant=tenant, type="quota.deleted", job_type=job_type,
                     source_id=source_id, actor=actor, reason=reason, ticket=ticket, now=now,
                     data={"before": before, "after": None})
    return before


def throttle_set(*, tenant: str, job_type: str = ANY_JOB_TYPE, source_id: int = ANY_SOURCE,
                 rate_per_second: float | None, burst: int | None, actor: ActorLike,
                 reason: str, ticket: str, now: datetime) -> Quota | None:
    """Set (or, with both None, clear) a scope's throttle: the token bucket of its quota.

    A throttle is not a separate object: it is ``rate_per_second``/``burst`` of the scope's
    quota, whose other limits are kept (a quota is created if the scope has none). Clearing
    the throttle of a quota with no other limit deletes the quota; clearing an absent throttle
    changes nothing. Appends ``throttle.changed`` (``data`` holds the quota's limits before
    and after; ``after`` None when the quota was deleted).

    Returns:
        The quota as stored, or None when the scope has no quota afterwards.

    Raises:
        ReasonRequired, TicketRequired: blank reason or ticket.
        AdmissionInvalid: rate out of RATE_MIN..RATE_MAX, burst out of 1..LIMIT_MAX, or only
            one of the two given.
    """
    check_now(now)
    check_scope(tenant, job_type, source_id)
    reason, ticket = check_why(reason, ticket, ticket_required=True)
    Limits(rate_per_second=rate_per_second, burst=burst).check()
    with transaction.atomic():
        dispatch_lock(tenant)  # before the quota row: the claims' lock order
        quota = lock(Quota, tenant=tenant, job_type=job_type, source_id=source_id)
        current = Limits() if quota is None else Limits.of(quota)
        limits = Limits(current.max_active, rate_per_second, burst, current.max_queued)
        if limits == Limits():
            if quota is None or current == limits:
                return quota
            before = _limits_json(quota)
            quota.delete()
            event_append(tenant=tenant, type="throttle.changed", job_type=job_type,
                         source_id=source_id, actor=actor, reason=reason, ticket=ticket,
                         now=now, data={"before": before, "after": None})
            return None
        return _write_limits(tenant=tenant, job_type=job_type, source_id=source_id,
                             limits=limits, actor=actor, reason=reason, ticket=ticket, now=now,
                             event_type="throttle.changed")


def throttle_clear(*, tenant: str, job_type: str = ANY_JOB_TYPE, source_id: int = ANY_SOURCE,
                   actor: ActorLike, reason: str, ticket: str, now: datetime) -> Quota | None:
    """``throttle_set`` with no rate and no burst (see there)."""
    return throttle_set(tenant=tenant, job_type=job_type, source_id=source_id,
                        rate_per_second=None, burst=None, actor=actor, reason=reason,
                        ticket=ticket, now=now)


def share_set_weight(*, tenant: str, weight: int, actor: ActorLike, reason: str, ticket: str,
                     now: datetime) -> TenantShare:
    """Set the tenant's weight in fair dispatch (jobs per turn, 1..WEIGHT_MAX); creates the
    share row (weight 1 by default) if missing. Appends ``share.changed``.

    Raises:
        ReasonRequired, TicketRequired: blank reason or ticket.
        AdmissionInvalid: weight out of range.
    """
    check_now(now)
    check_scope(tenant, ANY_JOB_TYPE, ANY_SOURCE)
    reason, ticket = check_why(reason, ticket, ticket_required=True)
    check_int("weight", weight, 1, WEIGHT_MAX)
    with transaction.atomic():
        # The share row is also the tenant's dispatch lock: held here for one UPDATE only.
        share, created = lock_or_insert(TenantShare, TenantShare(tenant=tenant, weight=weight),
                                        tenant=tenant)
        before = None if created else {"weight": share.weight}
        if not created:
            if share.weight == weight:
                return share
            share.weight = weight
            share.save(update_fields=["weight"])
        event_append(tenant=tenant, type="share.changed", actor=actor, reason=reason,
                     ticket=ticket, now=now, data={"before": before, "after": {"weight": weight}})
    return share


def _breaker_json(breaker: CircuitBreaker) -> dict[str, Any]:
    return {"failure_ratio": breaker.failure_ratio, "window_seconds": breaker.window_seconds,
            "min_samples": breaker.min_samples, "cooldown_seconds": breaker.cooldown_seconds}


def breaker_configure(*, tenant: str, source_id: int, config: BreakerConfig, actor: ActorLike,
                      reason: str, ticket: str, now: datetime) -> CircuitBreaker:
    """Set a source's breaker parameters; a missing breaker is created ``closed``.

    Only the configuration changes: the state (closed/open/half_open, ``opened_at``,
    ``changed_at``, the probe) belongs to the breaker's evaluation. Appends
    ``breaker.configured`` with the parameters before (None if created) and after.

    Raises:
        ReasonRequired, TicketRequired: blank reason or ticket.
        AdmissionInvalid: a value out of range, or ``source_id`` 0.
    """
    check_now(now)
    check_scope(tenant, ANY_JOB_TYPE, source_id)
    if source_id == ANY_SOURCE:
        raise AdmissionInvalid("source_id", "a breaker belongs to one source")
    reason, ticket = check_why(reason, ticket, ticket_required=True)
    config.check()
    changes = {k: v for k, v in asdict(config).items() if v is not None}
    with transaction.atomic():
        breaker, created = lock_or_insert(
            CircuitBreaker, CircuitBreaker(tenant=tenant, source_id=source_id, changed_at=now,
                                           **changes),
            tenant=tenant, source_id=source_id)
        before = None if created else _breaker_json(breaker)
        if not created:
            if all(getattr(breaker, k) == v for k, v in changes.items()):
                return breaker
            for k, v in changes.items():
                setattr(breaker, k, v)
            breaker.save(update_fields=list(changes))
        event_append(tenant=tenant, type="breaker.configured", source_id=source_id,
                     actor=actor, reason=reason, ticket=ticket, now=now,
                     data={"before": before, "after": _breaker_json(breaker)})
    return breaker


__all__ = ["BreakerConfig", "Limits", "breaker_configure", "pause_add", "pause_remove",
           "quota_delete", "quota_set", "share_set_weight", "throttle_clear", "throttle_set"]
