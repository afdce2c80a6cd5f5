"""The lease reaper: expired leases -> retry with backoff, dead letter, or cancel.

Set-based and safe to run concurrently: each batch locks expired leased rows with
``FOR UPDATE SKIP LOCKED`` over ``job_reap_idx`` (lease_expires_at) WHERE status='leased',
decides every row in memory and writes the batch with one UPDATE; a second reaper skips the
rows the first holds, and a heartbeat racing it waits for the lock and then finds the lease
gone. Terminal jobs are never in the index, so they are never touched.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime

from django.db import transaction

from ledger.clock import db_now, require_aware
from ledger.dependencies import descendants_cancel
from ledger.models import Job, JobEvent, Lease, LeaseStatus
from ledger.services import Actor, event_for
from ledger.states import JobStatus, require

from .breakers import breaker_record_failure
from .lease_config import LeaseConfig


@dataclass
class ReapResult:
    """Counts of what one reaper pass did, by the status each expired job moved to."""

    expired: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    upstream_canceled: int = 0  # blocked descendants of jobs that ended dead-lettered/canceled

    def as_dict(self) -> dict[str, object]:
        return {"expired": self.expired, "by_status": dict(self.by_status),
                "upstream_canceled": self.upstream_canceled}


def leases_reap_expired(*, now: datetime | None = None, batch_size: int = 500,
                        max_batches: int = 100, rng: random.Random | None = None,
                        config: LeaseConfig | None = None) -> ReapResult:
    """Expire every lease whose ``lease_expires_at <= now`` (database clock by default).

    An expired job becomes ``canceled`` if a cancel was requested, ``dead_lettered`` if its
    attempts are used up, else ``scheduled`` with a full-jitter backoff. Its lease row ends
    ``expired``; a ``lease.expired`` event and the transition's event are appended. A job that
    ends dead-lettered or canceled cancels its blocked descendants in the same transaction
    (reason ``upstream_failed``, counted in ``upstream_canceled``).

    Args:
        batch_size: rows per transaction (short transactions keep snapshots young).
        max_batches: bound on one pass; the next beat continues.
    """
    config = config or LeaseConfig.from_settings()
    result = ReapResult()
    actor = Actor.system("reaper")
    for _ in range(max_batches):
        with transaction.atomic():
            batch_now = require_aware(now) if now is not None else db_now()
            jobs = list(
                Job.objects.select_for_update(skip_locked=True)
                .filter(status=JobStatus.LEASED, lease_expires_at__lte=batch_now)
                .order_by("lease_expires_at")[:batch_size]
            )
            if not jobs:
                break
            events: list[JobEvent] = []
            lease_ids = []
            for job in jobs:
                lease_ids.append(job.current_lease_id)
                if job.cancel_requested:
                    to = JobStatus.CANCELED
                elif job.attempt >= job.max_attempts:
                    to = JobStatus.DEAD_LETTERED
                else:
                    to = JobStatus.SCHEDULED
                    job.not_before = batch_now + config.backoff.delay(job.attempt, rng=rng)
                events.append(event_for(job, type="lease.expired", actor=actor, now=batch_now,
                                        lease_id=job.current_lease_id,
                                        data={"fencing_token": job.fencing_token,
                                              "expired_at": job.lease_expires_at.isoformat()}))
                events.append(event_for(job, type=require(JobStatus.LEASED, to), actor=actor,
                                        now=batch_now, from_status=JobStatus.LEASED, to_status=to,
                                        lease_id=job.current_lease_id, reason="lease expired",
                                        data={"attempt": job.attempt}))
                job.status = to
                job.lease_expires_at = None
                job.updated_at = batch_now
                if to != JobStatus.SCHEDULED:
                    job.finished_at = batch_now
                    job.last_error = {"code": "lease_expired", "message": "lease expired"}
                result.by_status[to] = result.by_status.get(to, 0) + 1
            Job.objects.bulk_update(jobs, ["status", "lease_expires_at", "not_before",
                                           "updated_at", "finished_at", "last_error"])
            Lease.objects.filter(pk__in=lease_ids, status=LeaseStatus.ACTIVE).update(
                status=LeaseStatus.EXPIRED, ended_at=batch_now)
            JobEvent.objects.bulk_create(events)
            ended = [job.pk for job in jobs if job.status != JobStatus.SCHEDULED]
            if ended:
                # Same transaction: their blocked descendants could never start. Locked after
                # the batch, in id order (parents before children, ledger.dependencies).
                result.upstream_canceled += descendants_cancel(job_ids=ended, now=batch_now)
            result.expired += len(jobs)
        # After the commit: each expiry is a failed outcome for its source's circuit breaker.
        for tenant, source_id in sorted({(j.tenant, j.source_id) for j in jobs if j.source_id}):
            breaker_record_failure(tenant=tenant, source_id=source_id, now=now)
        if len(jobs) < batch_size:
            break
    return result
