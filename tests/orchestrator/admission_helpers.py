"""Test helpers for admission: quotas and pauses as rows, bulk ready jobs, a claim shortcut."""
from __future__ import annotations

from typing import Any

from django.db import connection
from django.utils import timezone

from ledger.models import Lane, Source
from orchestrator.leasing import lease_claim
from quotas.models import Pause, Quota


def quota(tenant: str = "acme", job_type: str = "", source_id: int = 0, **limits: Any) -> Quota:
    """A quota row (the operator API's service is tested elsewhere)."""
    return Quota.objects.create(tenant=tenant, job_type=job_type, source_id=source_id,
                                updated_at=timezone.now(), **limits)


def pause(key: str, tenant: str = "acme", job_type: str = "", source_id: int = 0) -> Pause:
    return Pause.objects.create(tenant=tenant, job_type=job_type, source_id=source_id, key=key,
                                reason=f"held by {key}", created_at=timezone.now())


def source(name: str, tenant: str = "acme") -> Source:
    return Source.objects.get_or_create(tenant=tenant, name=name)[0]


def ready_jobs(count: int, *, tenant: str = "acme", job_type: str = "test.noop",
               source_id: int | None = None, priority: int = 0) -> None:
    """Insert ``count`` ready jobs in one statement (PostgreSQL) and register their lane."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO ledger_job (tenant, project, job_type, source_id, payload, request_digest,"
            " priority, status, attempt, max_attempts, fencing_token, cancel_requested,"
            " pending_parents, created_at, updated_at)"
            " SELECT %s, 'p', %s, %s, '{}'::jsonb, 'x', %s, 'ready', 0, 3, 0, false, 0,"
            " now(), now() FROM generate_series(1, %s)",
            [tenant, job_type, source_id, priority, count])
    Lane.objects.get_or_create(tenant=tenant, job_type=job_type, source_id=source_id or 0)


def claim(tenant: str = "acme", max_jobs: int = 10, job_types: tuple[str, ...] = ("test.noop",),
          tenants: list[str] | None = None, runner: str = "r", **kwargs: Any):
    return lease_claim(tenant=tenant, runner_id=runner, job_types=list(job_types),
                       max_jobs=max_jobs, tenants=tenants, **kwargs)
