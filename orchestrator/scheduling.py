"""The scheduler tick: scheduled jobs whose ``not_before`` (start time or retry backoff) has
come become ``ready``. Set-based, SKIP LOCKED, safe to run concurrently."""
from __future__ import annotations

from datetime import datetime

from django.db import transaction

from ledger.clock import db_now, require_aware
from ledger.models import Job, JobEvent
from ledger.services import Actor, event_for, notify_ready_on_commit
from ledger.states import JobStatus, require


def jobs_promote_due(*, now: datetime | None = None, batch_size: int = 1000,
                     max_batches: int = 100) -> int:
    """Move every ``scheduled`` job with ``not_before <= now`` to ``ready``; return how many.

    Each batch locks its rows (``job_due_idx``, SKIP LOCKED), flips them with one UPDATE that
    re-checks ``status='scheduled'`` (the compare-and-set), appends ``job.ready`` events and,
    after commit, wakes waiting claims.
    """
    event_type = require(JobStatus.SCHEDULED, JobStatus.READY)
    actor = Actor.system("scheduler")
    total = 0
    for _ in range(max_batches):
        with transaction.atomic():
            batch_now = require_aware(now) if now is not None else db_now()
            jobs = list(
                Job.objects.select_for_update(skip_locked=True)
                .filter(status=JobStatus.SCHEDULED, not_before__lte=batch_now)
                .order_by("not_before")
                .only("id", "tenant", "job_type", "status")[:batch_size]
            )
            if not jobs:
                break
            Job.objects.filter(pk__in=[j.pk for j in jobs], status=JobStatus.SCHEDULED).update(
                status=JobStatus.READY, updated_at=batch_now)
            JobEvent.objects.bulk_create([
                event_for(job, type=event_type, actor=actor, now=batch_now,
                          from_status=JobStatus.SCHEDULED, to_status=JobStatus.READY)
                for job in jobs
            ])
            notify_ready_on_commit(tenant=None, job_types={j.job_type for j in jobs})
            total += len(jobs)
        if len(jobs) < batch_size:
            break
    return total
