"""Portal pages. Staff sign in through the Django admin login until the Authority (OIDC)
integration lands."""
from __future__ import annotations

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from ledger.models import Job
from ledger.states import JobStatus

from .selectors import job_counts_by_tenant


@staff_member_required
def dashboard(request: HttpRequest) -> HttpResponse:
    """Job counts per tenant and status, and the 25 most recently changed jobs."""
    recent = Job.objects.select_related("source").order_by("-updated_at")[:25]
    return render(request, "portal/dashboard.html", {
        "statuses": JobStatus.values, "tenants": job_counts_by_tenant(), "recent": recent,
    })
