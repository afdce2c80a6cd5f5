"""Reads for the dashboard."""
from __future__ import annotations

from django.db.models import Count

from ledger.models import Job
from ledger.states import JobStatus


def job_counts_by_tenant() -> list[dict[str, object]]:
    """``[{"tenant": str, "counts": {status: n}}]`` over all jobs, tenants sorted."""
    rows = Job.objects.values_list("tenant", "status").annotate(n=Count("id")).order_by("tenant")
    table: dict[str, dict[str, int]] = {}
    for tenant, status, n in rows:
        table.setdefault(tenant, {s: 0 for s in JobStatus.values})[status] = n
    return [{"tenant": t, "counts": c} for t, c in sorted(table.items())]
