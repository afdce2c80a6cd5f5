"""The claim is index-bound: its lane probe and its heads walk job_lane_idx, never the table."""
from __future__ import annotations

import re

import pytest
from django.db import connection
from django.utils import timezone

from ledger.models import Job, Lane
from orchestrator import claim_sql

pytestmark = [pytest.mark.django_db, pytest.mark.postgres]


def _plan(sql: str, params: dict) -> str:
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, FORMAT TEXT) " + sql, params)
        return "\n".join(row[0] for row in cursor.fetchall())


def _max_rows(plan: str) -> int:
    rows = [int(n) for n in re.findall(r"actual time=[0-9.]+\.\.[0-9.]+ rows=(\d+)", plan)]
    assert rows, plan
    return max(rows)


def test_lane_probe_and_heads_use_the_lane_index_and_touch_only_candidates():
    now = timezone.now()
    Job.objects.bulk_create([
        Job(tenant="acme", project="p", job_type=("a.x", "b.y")[i % 2], payload={},
            request_digest="x", max_attempts=3, priority=i % 3, status="ready",
            created_at=now, updated_at=now)
        for i in range(5000)
    ], batch_size=1000)
    Lane.objects.bulk_create([Lane(tenant="acme", job_type=t, source_id=0) for t in ("a.x", "b.y")])
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE ledger_job")
    lanes = _plan(claim_sql.ORCH_LANES_V1.format(tenant_filter="l.tenant = ANY(%(tenants)s) AND"),
                  {"tenants": ["acme"], "types": ["a.x", "b.y"]})
    assert "job_lane_idx" in lanes, lanes
    assert "Seq Scan on ledger_job" not in lanes, lanes
    assert _max_rows(lanes) <= 2, lanes  # one probe row per lane, not the 5,000 ready jobs
    heads = _plan(claim_sql.ORCH_HEADS_V1, {"tenants": ["acme", "acme"], "types": ["a.x", "b.y"],
                                            "sources": [0, 0], "limit": 10})
    assert "job_lane_idx" in heads, heads
    assert "Seq Scan on ledger_job" not in heads, heads
    assert _max_rows(heads) <= 20, heads  # k lanes x limit
