"""No double lease: 3 processes x 4 threads claim and ack 2,000 jobs on PostgreSQL."""
from __future__ import annotations

import multiprocessing
from collections import Counter

import pytest
from django.db import connection

from ledger.models import Job, JobEvent, Lane, Lease

from .claim_worker import run

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.postgres]
JOBS = 2000


def _db_url() -> str:
    s = connection.settings_dict
    return f"postgres://{s['USER'] or 'postgres'}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def test_every_job_is_leased_and_acked_exactly_once(enqueue):
    from django.utils import timezone

    now = timezone.now()
    Job.objects.bulk_create([
        Job(tenant="acme", project="p", job_type="test.noop", payload={"i": i},
            request_digest="x", max_attempts=3, status="ready", created_at=now, updated_at=now)
        for i in range(JOBS)
    ])
    Lane.objects.create(tenant="acme", job_type="test.noop", source_id=0)  # bulk_create skips enqueue
    context = multiprocessing.get_context("spawn")
    with context.Pool(3) as pool:
        results = pool.starmap(run, [(_db_url(), 4, seed) for seed in range(3)], chunksize=1)
    acks = [ack for result in results for ack in result]
    per_job = Counter(job_id for job_id, _, _ in acks)
    assert len(acks) == JOBS
    assert set(per_job.values()) == {1}
    assert sum(1 for r in results if r) >= 2, "the work was not actually shared"
    assert Job.objects.filter(status="succeeded").count() == JOBS
    assert Lease.objects.count() == JOBS and set(Lease.objects.values_list("fencing_token", flat=True)) == {1}
    succeeded = Counter(JobEvent.objects.filter(type="job.succeeded").values_list("job_id", flat=True))
    assert len(succeeded) == JOBS and set(succeeded.values()) == {1}
