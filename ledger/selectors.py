"""Ledger reads. Every selector filters by tenant: another tenant's rows do not exist."""
from __future__ import annotations

from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from django.db.models import QuerySet

from .exceptions import NotFound
from .models import Job, JobEvent, Lease


def job_get(*, tenant: str, job_id: int) -> Job:
    """Return the tenant's job with its current lease, artifacts and parent edges loaded.

    Raises:
        NotFound: no such job for this tenant.
    """
    job = (
        Job.objects.select_related("current_lease", "source")
        .prefetch_related("artifacts", "parent_edges")
        .filter(pk=job_id, tenant=tenant)
        .first()
    )
    if job is None:
        raise NotFound(f"job {job_id} not found", job_id=job_id)
    return job


def job_list(*, tenant: str, status: str | None = None, job_type: str | None = None,
             source: str | None = None, run: int | None = None,
             correlation_id: str | None = None, created_after: datetime | None = None) -> QuerySet[Job]:
    """Return the tenant's jobs matching every given filter, newest first (by id)."""
    qs = Job.objects.filter(tenant=tenant).select_related("current_lease", "source")
    if status:
        qs = qs.filter(status=status)
    if job_type:
        qs = qs.filter(job_type=job_type)
    if source:
        qs = qs.filter(source__name=source)
    if run is not None:
        qs = qs.filter(run_id=run)
    if correlation_id:
        qs = qs.filter(correlation_id=correlation_id)
    if created_after:
        qs = qs.filter(created_at__gt=created_after)
    return qs.order_by("-id")


def job_events_list(*, tenant: str, job_id: int) -> QuerySet[JobEvent]:
    """Return a job's events in the order they happened."""
    return JobEvent.objects.filter(tenant=tenant, job_id=job_id).order_by("id")


def lease_tenants(lease_ids: Iterable[Any], tenants: Collection[str]) -> dict[Any, str]:
    """``{lease_id: tenant}`` for the leases among ``lease_ids`` that belong to one of
    ``tenants`` (a shared runner pool's); other ids are absent."""
    return dict(Lease.objects.filter(pk__in=list(lease_ids), tenant__in=list(tenants))
                .values_list("pk", "tenant"))
