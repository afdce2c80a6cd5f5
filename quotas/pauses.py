"""Pause keys: several holders (an operator, a deploy, the breaker) each pause a scope under
their own key; the scope runs again only when every key is removed. Conventions as in
``quotas.services`` (row locks, one event per change, ``now`` and ``actor`` from the caller).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import transaction

from .audit import (
    KEY_MAX,
    ActorLike,
    check_now,
    check_scope,
    check_why,
    dispatch_lock,
    event_append,
    lock,
    lock_or_insert,
    scope_kind,
)
from .exceptions import AdmissionInvalid, AdmissionNotFound
from .models import ANY_JOB_TYPE, ANY_SOURCE, Pause


def _pause_json(pause: Pause | None) -> dict[str, Any] | None:
    if pause is None:
        return None
    return {"reason": pause.reason, "ticket": pause.ticket, "actor": pause.actor}


def _pause_keys(tenant: str, job_type: str, source_id: int) -> list[str]:
    return list(Pause.objects.filter(tenant=tenant, job_type=job_type, source_id=source_id)
                .order_by("key").values_list("key", flat=True))


def pause_add(*, tenant: str, job_type: str = ANY_JOB_TYPE, source_id: int = ANY_SOURCE,
              key: str, actor: ActorLike, reason: str, ticket: str = "",
              now: datetime) -> tuple[Pause, bool]:
    """Pause a scope under holder ``key`` (operator, deploy, breaker...).

    The scope runs again only when every key is removed (``pause_remove``). Takes the
    tenant's dispatch lock, so no claim grants a lease in the scope after this returns. Pausing again
    under the same key updates its reason and ticket (idempotent). Appends
    ``tenant.paused``/``job_type.paused``/``source.paused`` (the widest part of the scope
    names the type) with ``data {key, before, after, keys}``.

    Args:
        key: 1..KEY_MAX characters naming the holder.
        reason: required; ticket: optional.

    Returns:
        ``(pause, created)``.

    Raises:
        ReasonRequired: blank reason. AdmissionInvalid: bad key or over-long text.
    """
    check_now(now)
    check_scope(tenant, job_type, source_id)
    reason, ticket = check_why(reason, ticket, ticket_required=False)
    key = (key or "").strip()
    if not key or len(key) > KEY_MAX:
        raise AdmissionInvalid("key", f"1 to {KEY_MAX} characters")
    with transaction.atomic():
        # Once this returns, no lease in the scope is granted (docs/admission.md).
        dispatch_lock(tenant)
        new = Pause(tenant=tenant, job_type=job_type, source_id=source_id, key=key,
                    reason=reason, ticket=ticket, actor=actor.label[:200], created_at=now)
        pause, created = lock_or_insert(Pause, new, tenant=tenant, job_type=job_type,
                                        source_id=source_id, key=key)
        before = None if created else _pause_json(pause)
        if not created:
            if (pause.reason, pause.ticket) == (reason, ticket):
                return pause, False
            pause.reason, pause.ticket, pause.actor = reason, ticket, actor.label[:200]
            pause.save(update_fields=["reason", "ticket", "actor"])
        event_append(tenant=tenant, type=f"{scope_kind(job_type, source_id)}.paused",
                     job_type=job_type, source_id=source_id, actor=actor, reason=reason,
                     ticket=ticket, now=now,
                     data={"key": key, "before": before, "after": _pause_json(pause),
                           "keys": _pause_keys(tenant, job_type, source_id)})
    return pause, created


def pause_remove(*, tenant: str, job_type: str = ANY_JOB_TYPE, source_id: int = ANY_SOURCE,
                 key: str, actor: ActorLike, reason: str, ticket: str = "",
                 now: datetime) -> list[str]:
    """Remove holder ``key``'s pause of a scope; appends ``*.resumed`` (as ``pause_add``).

    Returns:
        The keys still pausing the scope, sorted (empty: it runs again).

    Raises:
        ReasonRequired: blank reason. AdmissionNotFound: ``key`` does not pause this scope.
    """
    check_now(now)
    check_scope(tenant, job_type, source_id)
    reason, ticket = check_why(reason, ticket, ticket_required=False)
    key = (key or "").strip()
    with transaction.atomic():
        pause = lock(Pause, tenant=tenant, job_type=job_type, source_id=source_id, key=key)
        if pause is None:
            raise AdmissionNotFound(f"no pause with key {key!r} on this scope", key=key,
                                    job_type=job_type or None, source_id=source_id or None)
        before = _pause_json(pause)
        pause.delete()
        keys = _pause_keys(tenant, job_type, source_id)
        event_append(tenant=tenant, type=f"{scope_kind(job_type, source_id)}.resumed",
                     job_type=job_type, source_id=source_id, actor=actor, reason=reason,
                     ticket=ticket, now=now,
                     data={"key": key, "before": before, "after": None, "keys": keys})
    return keys
