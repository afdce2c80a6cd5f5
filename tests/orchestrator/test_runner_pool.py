"""Shared runner pools: one token serving several tenants, claimed fairly, reported per lease."""
from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from ledger.models import Job
from orchestrator.tokens import TokenInvalid, token_issue, token_verify

pytestmark = pytest.mark.django_db


def _pool(tenants=("acme", "globex")) -> APIClient:
    client = APIClient()
    token = token_issue(tenant="acme", scopes=["orch:runner"], subject="pool",
                        runner_tenants=tenants)
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _claim(client, **body):
    return client.post("/api/v1/claims", {"runner_id": "pool-1", "job_types": ["test.noop"],
                                          **body}, format="json")


def test_a_pool_claims_across_its_tenants_in_turn_and_reports_on_each_lease(enqueue):
    for _ in range(3):
        enqueue(tenant="acme")
        enqueue(tenant="globex")
    pool = _pool()
    first = _claim(pool, max_jobs=4)
    assert first.status_code == 200, first.content
    tenants = [lease["tenant"] for lease in first.json()["leases"]]
    assert sorted(tenants) == ["acme", "acme", "globex", "globex"]  # one each per turn
    for lease in first.json()["leases"]:
        beat = pool.post(f"/api/v1/leases/{lease['lease_id']}/heartbeat", {}, format="json")
        assert beat.status_code == 200, beat.content
    acks = pool.post("/api/v1/acks", {"acks": [{"lease_id": lease["lease_id"]}
                                               for lease in first.json()["leases"]]},
                     format="json")
    assert acks.status_code == 200, acks.content
    assert [r["status"] for r in acks.json()["results"]] == ["succeeded"] * 4
    assert Job.objects.filter(status="succeeded").count() == 4


def test_a_pool_may_narrow_its_tenants_but_not_widen_them(enqueue):
    enqueue(tenant="acme")
    job = enqueue(tenant="globex")
    pool = _pool()
    narrowed = _claim(pool, tenants=["globex"], max_jobs=5)
    assert [lease["job_id"] for lease in narrowed.json()["leases"]] == [job.pk]
    widened = _claim(pool, tenants=["initech"])
    assert widened.status_code == 403
    assert widened.json()["error"]["code"] == "tenant_not_allowed"


def test_a_single_tenant_runner_never_sees_another_tenants_lease(enqueue, api):
    enqueue(tenant="globex")
    [lease] = _claim(_pool(), max_jobs=1).json()["leases"]
    outsider = api(tenant="acme", scopes=("orch:runner",))
    assert _claim(outsider, tenants=["globex"]).status_code == 403
    beat = outsider.post(f"/api/v1/leases/{lease['lease_id']}/heartbeat", {}, format="json")
    assert beat.status_code == 404


def test_the_pool_claim_is_checked_on_verify():
    import jwt
    from django.conf import settings

    token = token_issue(tenant="acme", scopes=["orch:runner"], subject="pool")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["orch_runner_tenants"] = "globex"  # not a list
    forged = jwt.encode(claims, settings.ORCH_JWT_SECRET, algorithm="HS256")
    with pytest.raises(TokenInvalid):
        token_verify(forged)
    with pytest.raises(ValueError):
        token_issue(tenant="acme", scopes=["orch:runner"], subject="pool",
                    runner_tenants=["bad tenant!"])


def test_a_tenant_id_with_a_trailing_newline_is_not_a_tenant():
    with pytest.raises(ValueError):
        token_issue(tenant="acme\n", scopes=["orch:runner"], subject="pool")
    with pytest.raises(ValueError):
        token_issue(tenant="acme", scopes=["orch:runner"], subject="pool",
                    runner_tenants=["globex\n"])
