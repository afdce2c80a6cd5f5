"""orch_ack_v3 is index-bound: an ack touches its own job, lease and children, never a scan of
every leased or blocked job or every dependency edge."""
from __future__ import annotations

import re

import pytest
from django.db import connection
from django.utils import timezone
from psycopg.types.json import Jsonb

from ledger.models import Job, JobDependency
from orchestrator.lease_sql import ORCH_ACK_V3
from orchestrator.leasing import lease_claim

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def test_ack_plan_probes_indexes_only(enqueue):
    now = timezone.now()
    # 3,000 blocked jobs hanging off 1,500 parents, and 1,000 leased jobs of another type
    parents = Job.objects.bulk_create([
        Job(tenant="acme", project="p", job_type="parent", payload={}, request_digest="x",
            max_attempts=3, status="succeeded", created_at=now, updated_at=now)
        for _ in range(1500)])
    blocked = Job.objects.bulk_create([
        Job(tenant="acme", project="p", job_type="child", payload={}, request_digest="x",
            max_attempts=3, status="blocked", pending_parents=1, created_at=now, updated_at=now)
        for _ in range(3000)])
    JobDependency.objects.bulk_create([
        JobDependency(parent=parents[i // 2], child=child, tenant="acme")
        for i, child in enumerate(blocked)])
    for _ in range(1000):
        enqueue(job_type="busy")
    for _ in range(10):
        lease_claim(tenant="acme", runner_id="r", job_types=["busy"], max_jobs=100)
    a = enqueue()
    enqueue(depends_on=[a.pk])
    grants = lease_claim(tenant="acme", runner_id="r", job_types=["test.noop"], max_jobs=1)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
        cursor.execute("EXPLAIN (ANALYZE, FORMAT TEXT) " + ORCH_ACK_V3, {
            "now": None, "tenant": "acme",
            "acks": Jsonb([{"lease_id": str(grants[0].lease.pk), "result": None,
                            "artifacts": []}])})
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "Seq Scan on ledger_job " not in plan, plan
    assert "Seq Scan on ledger_jobdependency" not in plan, plan
    assert "job_reap_idx" not in plan and "job_waiting_idx" not in plan, plan
    actual_rows = [int(n) for n in re.findall(r"actual time=[0-9.]+\.\.[0-9.]+ rows=(\d+)", plan)]
    assert actual_rows and max(actual_rows) <= 2, plan
