"""Shared plumbing of the admission write services: who acts, reason/ticket and value checks,
row locks, and the admission event appended with every change.

``quotas`` cannot read the ledger's clock or actor types (sibling packages never import each
other): callers pass ``now`` (``ledger.clock.db_now()``) and any object with ``type`` and
``label`` (``ledger.services.Actor`` fits).
"""
from __future__ import annotations

import math
from datetime import datetime
from typing import Any, Protocol, TypeVar

from django.db import IntegrityError, models, transaction
from django.utils import timezone

from .exceptions import AdmissionInvalid, ReasonRequired, TicketRequired
from .models import (
    ANY_JOB_TYPE,
    ANY_SOURCE,
    NAME_MAX,
    TENANT_MAX,
    AdmissionEvent,
    TenantShare,
)

REASON_MAX = 2000
TICKET_MAX = 200
KEY_MAX = 100

M = TypeVar("M", bound=models.Model)


class ActorLike(Protocol):
    """Who makes a change: ``type`` (operator/system...) and a ``label`` that outlives users."""

    @property
    def type(self) -> str: ...

    @property
    def label(self) -> str: ...


def check_now(now: datetime) -> datetime:
    """Return ``now``; raise ``ValueError`` if it is naive."""
    if timezone.is_naive(now):
        raise ValueError("now must be an aware datetime")
    return now


def check_scope(tenant: str, job_type: str, source_id: int) -> None:
    """Raise ``AdmissionInvalid`` for an empty/over-long tenant, an over-long job type or a
    negative source id (0 is "every source")."""
    if not tenant or len(tenant) > TENANT_MAX:
        raise AdmissionInvalid("tenant", f"1 to {TENANT_MAX} characters")
    if len(job_type) > NAME_MAX:
        raise AdmissionInvalid("job_type", f"at most {NAME_MAX} characters")
    if isinstance(source_id, bool) or not isinstance(source_id, int) or source_id < 0:
        raise AdmissionInvalid("source_id", "a source id, or 0 for every source")


def check_why(reason: str, ticket: str, *, ticket_required: bool) -> tuple[str, str]:
    """Return ``(reason, ticket)`` stripped.

    Raises:
        ReasonRequired: blank reason. TicketRequired: blank ticket when required.
        AdmissionInvalid: over REASON_MAX / TICKET_MAX characters.
    """
    reason, ticket = (reason or "").strip(), (ticket or "").strip()
    if not reason:
        raise ReasonRequired("a reason is required for this change", field="reason")
    if ticket_required and not ticket:
        raise TicketRequired("a ticket is required for this change", field="ticket")
    if len(reason) > REASON_MAX:
        raise AdmissionInvalid("reason", f"at most {REASON_MAX} characters")
    if len(ticket) > TICKET_MAX:
        raise AdmissionInvalid("ticket", f"at most {TICKET_MAX} characters")
    return reason, ticket


def check_int(field: str, value: Any, low: int, high: int) -> None:
    """Raise ``AdmissionInvalid`` unless ``value`` is an int (not a bool) in ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise AdmissionInvalid(field, f"an integer from {low} to {high}")


def check_number(field: str, value: Any, low: float, high: float, *,
                 low_open: bool = False) -> None:
    """Raise ``AdmissionInvalid`` unless ``value`` is a finite number in the range
    (``low`` excluded when ``low_open``)."""
    ok = (not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)
          and (value > low if low_open else value >= low) and value <= high)
    if not ok:
        raise AdmissionInvalid(field, f"a finite number {'above' if low_open else 'from'} "
                                      f"{low} {'and at most' if low_open else 'to'} {high}")


def scope_kind(job_type: str, source_id: int) -> str:
    """``source``, ``job_type`` or ``tenant``: the widest name of a scope, for event types."""
    if source_id != ANY_SOURCE:
        return "source"
    return "job_type" if job_type != ANY_JOB_TYPE else "tenant"


def lock(model: type[M], **lookup: Any) -> M | None:
    """The row matching ``lookup``, locked ``FOR UPDATE`` until the transaction ends (a
    concurrent edit waits, then sees this one's result: no lost update)."""
    return model._default_manager.select_for_update().filter(**lookup).first()


def lock_or_insert(model: type[M], row: M, **lookup: Any) -> tuple[M, bool]:
    """The locked row matching ``lookup``, or ``row`` inserted: ``(row, inserted)``.

    Call inside a transaction. Two first writers of one scope race on its unique index: the
    loser's INSERT waits for the winner's commit and fails; the savepoint keeps the
    transaction usable and the loser then locks the winner's row.
    """
    found = lock(model, **lookup)
    if found is not None:
        return found, False
    try:
        with transaction.atomic():
            row.save(force_insert=True)
        return row, True
    except IntegrityError:
        found = lock(model, **lookup)
        if found is None:  # not a unique-scope race: a real constraint violation
            raise
        return found, False


def event_append(*, tenant: str, type: str, actor: ActorLike, reason: str, ticket: str,
                 data: dict[str, Any], now: datetime, job_type: str = ANY_JOB_TYPE,
                 source_id: int = ANY_SOURCE) -> AdmissionEvent:
    """Append one admission event (call in the transaction of the change it records)."""
    return AdmissionEvent.objects.create(
        tenant=tenant, type=type, job_type=job_type, source_id=source_id,
        actor_type=actor.type[:16], actor_label=actor.label[:200], reason=reason, ticket=ticket,
        data=data, occurred_at=now)


def dispatch_lock(tenant: str) -> TenantShare:
    """Lock the tenant's dispatch row (``TenantShare``) ``FOR UPDATE``, creating it (at the back
    of the dispatch order) when the tenant was never claimed for. Call it first in the
    transaction of any change to what a claim may grant (quota, throttle, pause, breaker
    opening): claims hold this row while they decide, so the change waits for claims in flight
    and every later claim sees it. Lock order: this row before any quota, pause or breaker row.
    """
    top = TenantShare.objects.order_by("-served_seq").values_list("served_seq", flat=True).first()
    share, _ = lock_or_insert(TenantShare, TenantShare(tenant=tenant, served_seq=(top or 0) + 1),
                              tenant=tenant)
    return share
