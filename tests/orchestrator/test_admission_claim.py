"""Admission in the claim: caps, buckets, pauses, no head-of-line blocking, fair dispatch.
(Concurrency proofs are in test_admission_concurrency.py.)"""
from __future__ import annotations

import pytest

from ledger.models import Job
from quotas.models import Pause, TenantShare

from .admission_helpers import claim, pause, quota, ready_jobs, source

pytestmark = pytest.mark.django_db


def test_max_active_caps_the_claim_and_frees_on_ack(enqueue):
    from orchestrator.leasing import lease_ack

    quota(max_active=2)
    for _ in range(5):
        enqueue()
    grants = claim(max_jobs=10)
    assert len(grants) == 2
    assert claim(max_jobs=10) == []
    lease_ack(tenant="acme", lease_id=grants[0].lease.id)
    assert len(claim(max_jobs=10)) == 1


def test_bucket_grants_burst_then_nothing_until_refill(enqueue):
    quota(job_type="test.noop", rate_per_second=0.001, burst=3)
    for _ in range(5):
        enqueue()
    assert len(claim(max_jobs=10)) == 3
    assert claim(max_jobs=10) == []


def test_a_paused_or_capped_lane_never_blocks_another_lane_of_the_tenant(enqueue):
    noisy, quiet = source("noisy"), source("quiet")
    for _ in range(30):
        enqueue(source="noisy", priority=100)
    for _ in range(3):
        enqueue(source="quiet", priority=0)
    pause("operator", source_id=noisy.pk)
    grants = claim(max_jobs=10)
    assert sorted({g.job.source_id for g in grants}) == [quiet.pk] and len(grants) == 3
    Pause.objects.all().delete()
    quota(source_id=noisy.pk, max_active=0)
    for _ in range(2):
        enqueue(source="quiet")
    grants = claim(max_jobs=10)
    assert {g.job.source_id for g in grants} == {quiet.pk} and len(grants) == 2


def test_out_of_tokens_job_type_never_blocks_another_job_type(enqueue):
    quota(job_type="hot", rate_per_second=0.001, burst=1)
    for _ in range(10):
        enqueue(job_type="hot", priority=50)
    for _ in range(4):
        enqueue(job_type="cold")
    first = claim(max_jobs=10, job_types=("hot", "cold"))
    assert sorted(g.job.job_type for g in first) == ["cold"] * 4 + ["hot"]
    enqueue(job_type="cold")
    assert [g.job.job_type for g in claim(max_jobs=10, job_types=("hot", "cold"))] == ["cold"]


def test_a_tenant_at_its_cap_never_blocks_another_tenant_in_the_same_call(enqueue):
    quota(tenant="big", max_active=0)
    for _ in range(20):
        enqueue(tenant="big", priority=1000)
    for _ in range(3):
        enqueue(tenant="small")
    grants = claim(tenant="big", tenants=["big", "small"], max_jobs=10)
    assert [g.job.tenant for g in grants] == ["small"] * 3


def test_pause_keys_each_holder_must_resume(enqueue):
    job = enqueue()
    pause("operator")
    pause("deploy", job_type="test.noop")
    assert claim() == []
    Pause.objects.filter(key="operator").delete()
    assert claim() == []  # the deploy still holds its key
    Pause.objects.filter(key="deploy").delete()
    assert [g.job.pk for g in claim()] == [job.pk]


def test_priorities_order_jobs_within_a_tenant_across_lanes(enqueue):
    low = enqueue(source="a", priority=1)
    high = enqueue(source="b", priority=9)
    mid = enqueue(priority=5)
    assert [g.job.pk for g in claim(max_jobs=3)] == [high.pk, mid.pk, low.pk]


def test_weighted_round_robin_shares_each_claim_by_weight(enqueue):
    for _ in range(40):
        enqueue(tenant="heavy")
        enqueue(tenant="light")
    claim(tenant="heavy", tenants=["heavy", "light"], max_jobs=2)  # creates both shares
    TenantShare.objects.filter(tenant="heavy").update(weight=3)
    counts = {"heavy": 0, "light": 0}
    for _ in range(8):
        for g in claim(tenant="heavy", tenants=["heavy", "light"], max_jobs=4):
            counts[g.job.tenant] += 1
    assert counts == {"heavy": 24, "light": 8}


def test_weights_hold_when_runners_claim_one_job_at_a_time(enqueue):
    for _ in range(30):
        enqueue(tenant="heavy")
        enqueue(tenant="light")
    claim(tenant="heavy", tenants=["heavy", "light"], max_jobs=2)  # creates both shares
    TenantShare.objects.filter(tenant="heavy").update(weight=3)
    counts = {"heavy": 0, "light": 0}
    for _ in range(32):
        (grant,) = claim(tenant="heavy", tenants=["heavy", "light"], max_jobs=1)
        counts[grant.job.tenant] += 1
    assert counts == {"heavy": 24, "light": 8}


@pytest.mark.postgres
def test_starvation_bound_one_job_beside_a_hundred_thousand(enqueue):
    """docs/admission.md: a tenant with an admissible ready job is served within N claims that
    lease anything, N = tenants with admissible ready jobs (here 2), whatever the backlogs."""
    ready_jobs(100_000, tenant="flood")
    assert len(claim(tenant="flood", tenants=["flood", "lone"], max_jobs=1)) == 1
    lone = enqueue(tenant="lone")
    for _ in range(2):
        grants = claim(tenant="flood", tenants=["flood", "lone"], max_jobs=1)
        if grants[0].job.pk == lone.pk:
            break
    else:
        raise AssertionError("the lone job was not claimed within 2 claims")
    assert Job.objects.get(pk=lone.pk).status == "leased"
