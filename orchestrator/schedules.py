"""Recurring job schedules: create, change, delete, preview, and the beat's fire pass.

A schedule enqueues a job at each fire time of its cron expression in its IANA time zone
(rule and DST behaviour: ``orchestrator.cron``, docs/schedules.md). ``next_fire_at`` is the
watermark, the first fire time not yet enqueued (UTC). The fire pass (``schedules_fire_due``,
Celery task ``orch.schedules.fire``) enqueues each due fire time with the idempotency key
``schedule:<id>:<fire time, UTC ISO 8601>``, so no fire time ever makes two jobs.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet

from ledger.clock import db_now, require_aware
from ledger.exceptions import IdempotencyConflict, NotFound
from ledger.models import CatchUp, Schedule
from ledger.services import Actor, job_enqueue, source_resolve

from .admission import admit_enqueue
from .cron import CronSpec, FirePlan, catch_up_plan
from .exceptions import InvalidCron, InvalidTimezone, QueueFull, ScheduleNameTaken

log = logging.getLogger(__name__)

# Fields an operator may set; the rest (watermark, timestamps) belong to the services.
EDITABLE = ("name", "cron", "timezone", "job_type", "project", "source", "payload", "priority",
            "max_attempts", "catch_up", "enabled")
PREVIEW_MAX = 100
MAX_FIRES_PER_SCHEDULE = 1000


def skip_grace() -> timedelta:
    """How late a fire may be and still count as on time under ``catch_up=skip``:
    max(60 s, 2 x ORCH_SCHEDULES_TICK_SECONDS). A beat delayed by a restart, a deploy or a
    slow tick fires; anything later is downtime, and skipped."""
    return timedelta(seconds=max(60, 2 * settings.ORCH_SCHEDULES_TICK_SECONDS))


def schedule_key(schedule_id: int, fire_time: datetime) -> str:
    """The idempotency key of one fire: ``schedule:<id>:<UTC ISO 8601, Z>``."""
    return f"schedule:{schedule_id}:{fire_time.isoformat().replace('+00:00', 'Z')}"


# --- Selectors -----------------------------------------------------------------------------

def schedule_list(*, tenant: str, enabled: bool | None = None) -> QuerySet[Schedule]:
    """The tenant's schedules (source joined), optionally only enabled or disabled ones."""
    schedules = Schedule.objects.filter(tenant=tenant).select_related("source")
    return schedules if enabled is None else schedules.filter(enabled=enabled)


def schedule_get(*, tenant: str, schedule_id: int) -> Schedule:
    """One schedule of ``tenant``.

    Raises:
        NotFound: no such schedule for this tenant (another tenant's is indistinguishable).
    """
    schedule = schedule_list(tenant=tenant).filter(pk=schedule_id).first()
    if schedule is None:
        raise NotFound(f"schedule {schedule_id} not found", schedule_id=schedule_id)
    return schedule


# --- Writes --------------------------------------------------------------------------------

def schedule_create(*, tenant: str, name: str, cron: str, job_type: str, project: str,
                    max_attempts: int, timezone: str = "UTC", source: str | None = None,
                    payload: dict[str, Any] | None = None, priority: int = 0,
                    catch_up: str = CatchUp.ONE, enabled: bool = True,
                    now: datetime | None = None) -> Schedule:
    """Create a schedule; its first fire time is the first one strictly after ``now``.

    Args:
        cron: five-field cron expression or macro (``orchestrator.cron.CronSpec.parse``).
        timezone: IANA zone name the expression is read in (default UTC).
        source: source name, created on first use (as at enqueue).
        catch_up: ``skip`` / ``one`` / ``all`` (see ``orchestrator.cron.catch_up_plan``).
        now: aware; defaults to the database clock.

    Raises:
        InvalidCron, InvalidTimezone: the expression or zone is not valid.
        ScheduleNameTaken: the tenant already has a schedule called ``name``.
    """
    spec = CronSpec.parse(cron, timezone)
    with transaction.atomic():
        now = require_aware(now) if now else db_now()
        schedule = Schedule(
            tenant=tenant, name=name, cron=spec.cron, timezone=timezone, job_type=job_type,
            project=project, source=source_resolve(tenant=tenant, name=source),
            payload=payload or {}, priority=priority, max_attempts=max_attempts,
            catch_up=catch_up, enabled=enabled,
            next_fire_at=spec.next_after(now) if enabled else None,
            created_at=now, updated_at=now,
        )
        _save(schedule, force_insert=True)
    return schedule


def schedule_update(*, tenant: str, schedule_id: int, changes: dict[str, Any],
                    now: datetime | None = None) -> Schedule:
    """Change the fields in ``changes`` (keys from ``EDITABLE``; ``source`` by name).

    Changing ``cron`` or ``timezone``, or enabling a disabled schedule, restarts the watermark
    at the first fire time after ``now``: fire times missed while it was disabled are not
    caught up. Disabling clears it. The row is locked ``FOR UPDATE``, so an update waits for a
    fire pass holding the schedule and the pass never fires a half-changed definition.

    Raises:
        NotFound: no such schedule for this tenant.
        InvalidCron, InvalidTimezone, ScheduleNameTaken: as ``schedule_create``.
        ValueError: a key outside ``EDITABLE``.
    """
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise ValueError(f"not editable: {', '.join(sorted(unknown))}")
    with transaction.atomic():
        now = require_aware(now) if now else db_now()
        schedule = (Schedule.objects.select_for_update()
                    .filter(pk=schedule_id, tenant=tenant).first())
        if schedule is None:
            raise NotFound(f"schedule {schedule_id} not found", schedule_id=schedule_id)
        was_enabled = schedule.enabled
        spec = CronSpec.parse(changes.get("cron", schedule.cron),
                              changes.get("timezone", schedule.timezone))
        for name, value in changes.items():
            if name == "source":
                schedule.source = source_resolve(tenant=tenant, name=value)
            elif name == "payload":
                schedule.payload = value or {}
            else:
                setattr(schedule, name, value)
        schedule.cron = spec.cron
        retimed = ("cron" in changes or "timezone" in changes or not was_enabled
                   or schedule.next_fire_at is None)  # None while enabled: parked
        if not schedule.enabled:
            schedule.next_fire_at = None
        elif retimed:
            schedule.next_fire_at = spec.next_after(now)
        schedule.updated_at = now
        _save(schedule)
    return schedule


def schedule_delete(*, tenant: str, schedule_id: int) -> None:
    """Delete a schedule (the jobs it enqueued stay). Waits for a fire pass holding it.

    Raises:
        NotFound: no such schedule for this tenant.
    """
    with transaction.atomic():
        schedule = (Schedule.objects.select_for_update()
                    .filter(pk=schedule_id, tenant=tenant).first())
        if schedule is None:
            raise NotFound(f"schedule {schedule_id} not found", schedule_id=schedule_id)
        schedule.delete()


def _save(schedule: Schedule, **kwargs: Any) -> None:
    try:
        with transaction.atomic():
            schedule.save(**kwargs)
    except IntegrityError:
        # The only unique constraint besides the key is schedule_tenant_name_uniq.
        if Schedule.objects.filter(tenant=schedule.tenant, name=schedule.name) \
                .exclude(pk=schedule.pk).exists():
            raise ScheduleNameTaken(f"a schedule named {schedule.name!r} already exists",
                                    name=schedule.name) from None
        raise


# --- Preview -------------------------------------------------------------------------------

@dataclass(frozen=True)
class FireTime:
    """A fire time as UTC (``at``) and as the local wall clock of the schedule (``local``)."""

    at: datetime
    local: datetime


def schedule_preview(*, cron: str, timezone: str, after: datetime, count: int) -> list[FireTime]:
    """The next ``count`` (1..PREVIEW_MAX) fire times strictly after ``after`` (aware).

    Fewer are returned only if there are no more: none within 50 years, or the end of year
    9999 (the end of ``datetime``) comes first.

    Raises:
        InvalidCron, InvalidTimezone: as ``schedule_create``.
        ValueError: ``count`` out of range or ``after`` naive.
    """
    if not 1 <= count <= PREVIEW_MAX:
        raise ValueError(f"count must be within 1..{PREVIEW_MAX}")
    spec = CronSpec.parse(cron, timezone)
    return [FireTime(at, at.astimezone(spec.zone))
            for at in spec.preview(after=require_aware(after), count=count)]


# --- The fire pass ---------------------------------------------------------------------------

@dataclass
class FirePassResult:
    """Counts of one fire pass: schedules handled, jobs created, fires that found their job
    already there (replayed), fires refused by a full queue, schedules parked (stored
    definition no longer valid)."""

    schedules: int = 0
    created: int = 0
    replayed: int = 0
    refused: int = 0
    parked: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"schedules": self.schedules, "created": self.created,
                "replayed": self.replayed, "refused": self.refused, "parked": self.parked}


# Fire time last logged as refused, per schedule: a full queue is retried every tick and
# would otherwise log a line per second. Process-local; worst case one line per process.
_refusal_logged: dict[int, datetime] = {}


def schedules_fire_due(*, now: datetime | None = None, max_schedules: int = 1000,
                       max_fires: int = MAX_FIRES_PER_SCHEDULE) -> FirePassResult:
    """Enqueue the due fire times of every enabled schedule whose watermark is ``<= now``.

    Each schedule is handled in its own transaction: its row is locked ``FOR UPDATE SKIP
    LOCKED`` (so concurrent passes, e.g. two beats, take different schedules), the catch-up
    policy picks the fire times (``orchestrator.cron.catch_up_plan``), each is enqueued with
    its idempotency key and the ``max_queued`` admission check, and the watermark and
    ``last_fired_at`` move in the same transaction. ``updated_at`` (the definition's) stays.

    A fire refused by a full queue (``QueueFull``) stops the schedule's fires for this pass and
    leaves the watermark on the refused fire time: the next tick retries, and if the queue
    stays full the catch-up policy treats the wait like downtime (skip drops it, one keeps
    only the latest, all keeps every one). A stored cron or zone that no longer parses (e.g.
    a zone removed from the database) parks the schedule (``next_fire_at`` null, logged) until
    an update fixes it.

    Args:
        now: aware; defaults to the database clock, read per schedule. Tests pass it.
        max_schedules: bound on schedules per pass; each is handled at most once per pass.
        max_fires: bound on jobs per schedule per pass (catch_up=all); the next pass goes on.
    """
    result = FirePassResult()
    handled: list[int] = []
    for _ in range(max_schedules):
        with transaction.atomic():
            pass_now = require_aware(now) if now is not None else db_now()
            # schedule_due_idx (next_fire_at) WHERE enabled serves the filter and the order.
            schedule = (Schedule.objects.select_for_update(skip_locked=True, of=("self",))
                        .select_related("source")
                        .filter(enabled=True, next_fire_at__lte=pass_now)
                        .exclude(pk__in=handled)
                        .order_by("next_fire_at").first())
            if schedule is None:
                break
            handled.append(schedule.pk)
            result.schedules += 1
            _fire(schedule, pass_now, max_fires, result)
    return result


def _fire(schedule: Schedule, now: datetime, max_fires: int, result: FirePassResult) -> None:
    assert schedule.next_fire_at is not None
    try:
        spec = CronSpec.parse(schedule.cron, schedule.timezone)
    except (InvalidCron, InvalidTimezone) as exc:
        log.error("schedule %s (%s/%s) parked: %s", schedule.pk, schedule.tenant,
                  schedule.name, exc.message)
        Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=None)
        result.parked += 1
        return
    plan: FirePlan = catch_up_plan(spec=spec, policy=schedule.catch_up,
                                   watermark=schedule.next_fire_at, now=now,
                                   max_fires=max_fires, skip_grace=skip_grace())
    if plan.skipped is not None:
        log.info("schedule %s (%s/%s): catch_up=%s skipped the fire times from %s to %s",
                 schedule.pk, schedule.tenant, schedule.name, schedule.catch_up,
                 plan.skipped[0].isoformat(), plan.skipped[1].isoformat())
    watermark, last_fired = plan.next_watermark, schedule.last_fired_at
    for fire_time in plan.fire_times:
        try:
            replayed = _enqueue(schedule, fire_time, now)
        except QueueFull as exc:
            watermark = fire_time
            result.refused += 1
            if _refusal_logged.get(schedule.pk) != fire_time:
                _refusal_logged[schedule.pk] = fire_time
                log.warning("schedule %s (%s/%s): fire time %s refused (%s); retrying every "
                            "tick", schedule.pk, schedule.tenant, schedule.name,
                            fire_time.isoformat(), exc.message)
            break
        _refusal_logged.pop(schedule.pk, None)
        last_fired = fire_time
        if replayed:
            result.replayed += 1
        else:
            result.created += 1
    if watermark is None:
        log.info("schedule %s (%s/%s) has no fire time left (next_fire_at null)", schedule.pk,
                 schedule.tenant, schedule.name)
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=watermark,
                                                   last_fired_at=last_fired)


def _enqueue(schedule: Schedule, fire_time: datetime, now: datetime) -> bool:
    """Enqueue one fire; True if its job already existed (a replayed fire)."""
    key = schedule_key(schedule.pk, fire_time)
    try:
        return job_enqueue(
            tenant=schedule.tenant, job_type=schedule.job_type, project=schedule.project,
            payload=schedule.payload, max_attempts=schedule.max_attempts,
            priority=schedule.priority, source=schedule.source.name if schedule.source else None,
            idempotency_key=key, actor=Actor.system(f"schedule:{schedule.pk}"), now=now,
            admit=admit_enqueue,
        ).replayed
    except IdempotencyConflict:
        # The fire time already has its job, made from an older definition (edited since):
        # the fire happened, so it counts as done and is not made twice.
        log.warning("schedule %s: fire time %s already has job (key %s) from an earlier "
                    "definition", schedule.pk, fire_time.isoformat(), key)
        return True
