"""Celery tasks. Stable explicit names; each only calls a service (every service is a
compare-and-set over SKIP LOCKED rows, so overlapping runs are harmless)."""
from __future__ import annotations

from celery import shared_task

from .breakers import breakers_advance
from .reaper import leases_reap_expired
from .schedules import schedules_fire_due
from .scheduling import jobs_promote_due


@shared_task(name="orch.leases.reap_expired", ignore_result=True)
def reap_expired() -> dict[str, object]:
    """Beat task: expire overdue leases (see ``orchestrator.reaper``)."""
    return leases_reap_expired().as_dict()


@shared_task(name="orch.scheduler.tick", ignore_result=True)
def scheduler_tick() -> int:
    """Beat task: promote due scheduled jobs to ready (see ``orchestrator.scheduling``)."""
    return jobs_promote_due()


@shared_task(name="orch.schedules.fire", ignore_result=True)
def schedules_fire() -> dict[str, int]:
    """Beat task: enqueue the due fire times of recurring schedules (see
    ``orchestrator.schedules``)."""
    return schedules_fire_due().as_dict()


@shared_task(name="orch.breakers.advance", ignore_result=True)
def breakers_advance_task() -> dict[str, int]:
    """Beat task: open breakers past their cool-down go half-open; settled probes close or
    re-open theirs (see ``orchestrator.breakers``)."""
    return breakers_advance()
