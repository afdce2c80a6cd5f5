"""System checks on relations between settings (run by ``manage.py check`` and at start)."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, register


@register()
def lease_settings_check(app_configs: Any, **kwargs: Any) -> list[Error]:
    """Heartbeats must fit well inside a lease, and the reaper must run within a lease length."""
    errors = []
    lease = settings.ORCH_LEASE_SECONDS
    if settings.ORCH_HEARTBEAT_INTERVAL_SECONDS * 2 > lease:
        errors.append(Error(
            "ORCH_HEARTBEAT_INTERVAL_SECONDS must be at most half of ORCH_LEASE_SECONDS",
            hint="a runner must be able to miss one heartbeat without losing its lease",
            id="orchestrator.E001"))
    if settings.ORCH_REAPER_PERIOD_SECONDS >= lease:
        errors.append(Error("ORCH_REAPER_PERIOD_SECONDS must be below ORCH_LEASE_SECONDS",
                            id="orchestrator.E002"))
    if not settings.ORCH_LEASE_MIN_SECONDS <= lease <= settings.ORCH_LEASE_MAX_SECONDS:
        errors.append(Error("ORCH_LEASE_SECONDS must lie within [ORCH_LEASE_MIN_SECONDS, "
                            "ORCH_LEASE_MAX_SECONDS]", id="orchestrator.E003"))
    if settings.ORCH_CLAIM_POLL_MIN_MS > settings.ORCH_CLAIM_POLL_MAX_MS:
        errors.append(Error("ORCH_CLAIM_POLL_MIN_MS must not exceed ORCH_CLAIM_POLL_MAX_MS",
                            id="orchestrator.E004"))
    return errors
