"""Admission at enqueue: the ``max_queued`` limit of every quota that covers a new job.

The check runs inside the enqueue transaction (``ledger.services.job_enqueue(admit=...)``):
each applicable quota row is locked ``FOR UPDATE`` (in id order, so two enqueues never
deadlock), then the scope's waiting jobs are counted. Every enqueue into a scope takes the same
row lock, so the count sees every earlier committed enqueue: the limit is exact, never
approximated. The count stops at ``max_queued`` (``LIMIT``), so its cost is bounded by the limit.
"""
from __future__ import annotations

from django.conf import settings
from django.db.models import Q, QuerySet
from django.db.models.functions import Coalesce

from ledger.models import Job, Source
from ledger.states import JobStatus
from quotas.models import ANY_JOB_TYPE, ANY_SOURCE, Quota

from .exceptions import QueueFull, QueueLimitExceeded

WAITING = (JobStatus.BLOCKED, JobStatus.SCHEDULED, JobStatus.READY)


def quotas_covering(tenant: str, job_type: str, source_id: int) -> Q:
    """The filter of the quotas whose scope covers jobs of (tenant, job_type, source_id)."""
    return (Q(tenant=tenant) & Q(job_type__in=[ANY_JOB_TYPE, job_type])
            & Q(source_id__in=[ANY_SOURCE, source_id]))


def scope_jobs(quota: Quota, statuses: tuple[str, ...]) -> QuerySet[Job]:
    """The jobs in ``quota``'s scope with one of ``statuses``."""
    jobs = Job.objects.filter(tenant=quota.tenant, status__in=statuses)
    if quota.job_type != ANY_JOB_TYPE:
        jobs = jobs.filter(job_type=quota.job_type)
    if quota.source_id != ANY_SOURCE:
        jobs = jobs.alias(lane_source=Coalesce("source_id", 0)).filter(lane_source=quota.source_id)
    return jobs


def _scope(quota: Quota) -> dict[str, str | None]:
    """The quota's scope for an error's details: job type and source name (None: any)."""
    source = (Source.objects.filter(pk=quota.source_id).values_list("name", flat=True).first()
              if quota.source_id else None)
    return {"job_type": quota.job_type or None, "source": source}


def admit_enqueue(tenant: str, job_type: str, source_id: int, count: int) -> None:
    """Refuse ``count`` new waiting jobs of one lane when a covering quota's ``max_queued``
    would be exceeded. Call inside the enqueue transaction (the locks last until commit).

    Raises:
        QueueFull: ``details`` names the quota scope (job type, source name), its limit and
            ``retry_after_seconds``.
        QueueLimitExceeded: ``count`` alone exceeds a limit (a retry can never succeed).
    """
    quotas = list(
        Quota.objects.select_for_update()
        .filter(quotas_covering(tenant, job_type, source_id), max_queued__isnull=False)
        .order_by("id")
    )
    for quota in quotas:
        limit = quota.max_queued
        assert limit is not None
        if count > limit:
            raise QueueLimitExceeded(
                f"{count} new jobs can never fit a queue of {limit} waiting jobs at most",
                **_scope(quota), max_queued=limit, jobs=count)
        waiting = scope_jobs(quota, WAITING).order_by()[:limit].count()
        if waiting + count > limit:
            raise QueueFull(
                f"the queue is full ({limit} waiting jobs at most)", **_scope(quota),
                max_queued=limit, waiting=waiting,
                retry_after_seconds=settings.ORCH_QUEUE_FULL_RETRY_AFTER_SECONDS,
            )
