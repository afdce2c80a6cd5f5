"""The claim is index-bound: its plan walks job_claim_idx per job type, never the table."""
from __future__ import annotations

import re

import pytest
from django.db import connection
from django.utils import timezone

from ledger.models import Job
from orchestrator.lease_sql import ORCH_CLAIM_V2

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def test_claim_plan_uses_the_partial_index_and_sorts_only_candidates():
    now = timezone.now()
    Job.objects.bulk_create([
        Job(tenant="acme", project="p", job_type=("a.x", "b.y")[i % 2], payload={},
            request_digest="x", max_attempts=3, priority=i % 3, status="ready",
            created_at=now, updated_at=now)
        for i in range(5000)
    ], batch_size=1000)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE ledger_job")
        cursor.execute("EXPLAIN (ANALYZE, FORMAT TEXT) " + ORCH_CLAIM_V2, {
            "now": None, "tenant": "acme", "job_types": ["a.x", "b.y"], "limit": 10,
            "seconds": 30, "runner": "r", "claim_pk": None})
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "job_claim_idx" in plan, plan
    assert "Seq Scan on ledger_job" not in plan, plan
    # no node of the plan handles more than the k x limit candidates (5,000 rows are ready)
    actual_rows = [int(n) for n in re.findall(r"actual time=[0-9.]+\.\.[0-9.]+ rows=(\d+)", plan)]
    assert actual_rows and max(actual_rows) <= 20, plan
