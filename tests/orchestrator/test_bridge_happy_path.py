"""The bridge end to end over HTTP (Django test client, real PostgreSQL)."""
from __future__ import annotations

import uuid

import pytest

from ledger.models import Artifact, JobEvent, Lease

pytestmark = pytest.mark.django_db

SHA = "a" * 64


def _claim(client, **body):
    body = {"runner_id": "r1", "job_types": ["test.noop"], **body}
    response = client.post("/api/v1/claims", body, format="json")
    assert response.status_code == 200, response.content
    return response.json()["leases"]


def test_enqueue_claim_heartbeat_ack_records_every_step(operator, runner):
    created = operator.post("/api/v1/jobs", {"job_type": "test.noop", "project": "p",
                                             "payload": {"n": 1}, "source": "osv"}, format="json")
    assert created.status_code == 201, created.content
    job_id = created.json()["job_id"]

    [lease] = _claim(runner)
    assert lease["job_id"] == job_id
    assert lease["fencing_token"] == 1 and lease["attempt"] == 1
    assert lease["payload"] == {"n": 1} and lease["source"] == "osv"
    assert lease["heartbeat_interval_seconds"] <= lease["lease_seconds"] // 3
    assert lease["retry_hint"]["attempts_left"] == lease["max_attempts"] - 1

    beat = runner.post(f"/api/v1/leases/{lease['lease_id']}/heartbeat",
                       {"progress": {"done": 1, "total": 2}}, format="json")
    assert beat.status_code == 200, beat.content
    assert beat.json()["cancel_requested"] is False

    ack_body = {"result": {"records": 2}, "artifacts": [
        {"name": "out.ndjson", "uri": "file:///tmp/out.ndjson", "sha256": SHA,
         "size_bytes": 10, "media_type": "application/x-ndjson"}]}
    ack = runner.post(f"/api/v1/leases/{lease['lease_id']}/ack", ack_body, format="json")
    assert ack.status_code == 200, ack.content
    again = runner.post(f"/api/v1/leases/{lease['lease_id']}/ack", ack_body, format="json")
    assert again.status_code == 200

    job = operator.get(f"/api/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded" and job["result"] == {"records": 2}
    assert job["artifacts"][0]["sha256"] == SHA
    assert Artifact.objects.count() == 1
    assert Lease.objects.get().status == "acked"
    types = list(JobEvent.objects.filter(job_id=job_id).order_by("id").values_list("type", flat=True))
    assert types == ["job.created", "job.leased", "job.progress", "job.succeeded"]


def test_runner_config_serves_the_server_defaults(runner, settings):
    body = runner.get("/api/v1/runner-config").json()
    assert body["lease_seconds"] == settings.ORCH_LEASE_SECONDS
    assert body["heartbeat_interval_seconds"] == settings.ORCH_HEARTBEAT_INTERVAL_SECONDS
    assert body["backoff"] == {"base_seconds": settings.ORCH_RETRY_BASE_SECONDS,
                               "max_seconds": settings.ORCH_RETRY_MAX_SECONDS, "jitter": "full"}


def test_old_holder_gets_409_lease_lost_over_http_and_changes_nothing(operator, runner):
    from datetime import timedelta

    from django.forms.models import model_to_dict

    from ledger.clock import db_now
    from ledger.models import Job
    from orchestrator.leasing import lease_claim
    from orchestrator.reaper import leases_reap_expired
    from orchestrator.scheduling import jobs_promote_due

    job_id = operator.post("/api/v1/jobs", {"job_type": "test.noop", "project": "p"},
                           format="json").json()["job_id"]
    # The first holder's lease started an hour ago and ran out long since.
    [old] = lease_claim(tenant="acme", runner_id="stale", job_types=["test.noop"], max_jobs=1,
                        now=db_now() - timedelta(hours=1))
    assert leases_reap_expired().expired == 1
    Job.objects.filter(pk=job_id).update(not_before=db_now())
    assert jobs_promote_due() == 1
    [new] = _claim(runner)
    assert new["fencing_token"] == old.lease.fencing_token + 1

    before = (model_to_dict(Job.objects.get(pk=job_id)), JobEvent.objects.count(),
              Lease.objects.filter(status="active").count())
    for action, body in [("heartbeat", {}), ("ack", {}), ("release", {}),
                         ("fail", {"error": {"code": "x", "message": "m"}, "retryable": True}),
                         ("logs", {"lines": [{"ts": "2026-01-01T00:00:00Z", "level": "info",
                                              "message": "late"}]})]:
        response = runner.post(f"/api/v1/leases/{old.lease.pk}/{action}", body, format="json")
        assert response.status_code == 409, (action, response.content)
        error = response.json()["error"]
        assert error["code"] == "lease_lost"
        assert error["details"]["lease_status"] == "expired"
    after = (model_to_dict(Job.objects.get(pk=job_id)), JobEvent.objects.count(),
             Lease.objects.filter(status="active").count())
    assert after == before
    assert runner.post(f"/api/v1/leases/{new['lease_id']}/ack", {}, format="json").status_code == 200


def test_batch_ack_acks_each_lease_on_its_own(operator, runner):
    for _ in range(3):
        operator.post("/api/v1/jobs", {"job_type": "test.noop", "project": "p"}, format="json")
    leases = _claim(runner, max_jobs=3)
    lost = leases[2]["lease_id"]
    runner.post(f"/api/v1/leases/{lost}/release", {}, format="json")
    unknown = "00000000-0000-4000-8000-000000000000"
    artifact = {"name": "a.ndjson", "uri": "file:///tmp/a", "sha256": SHA, "size_bytes": 3,
                "media_type": "application/x-ndjson"}
    body = {"acks": [
        {"lease_id": leases[0]["lease_id"], "result": {"n": 1}, "artifacts": [artifact]},
        {"lease_id": leases[1]["lease_id"]},
        {"lease_id": lost},
        {"lease_id": unknown},
    ]}
    response = runner.post("/api/v1/acks", body, format="json")
    assert response.status_code == 200, response.content
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["succeeded", "succeeded", "lease_lost", "not_found"]
    assert [r["replayed"] for r in results[:2]] == [False, False]
    again = runner.post("/api/v1/acks", body, format="json").json()["results"]
    assert [r["replayed"] for r in again[:2]] == [True, True]
    assert JobEvent.objects.filter(type="job.succeeded").count() == 2
    assert Artifact.objects.get().lease_id == uuid.UUID(leases[0]["lease_id"])
    job = operator.get(f"/api/v1/jobs/{leases[0]['job_id']}").json()
    assert job["result"] == {"n": 1} and job["status"] == "succeeded"
    assert operator.get(f"/api/v1/jobs/{leases[2]['job_id']}").json()["status"] == "ready"


def test_batch_ack_refuses_a_lease_twice_and_changes_nothing(operator, runner):
    operator.post("/api/v1/jobs", {"job_type": "test.noop", "project": "p"}, format="json")
    [lease] = _claim(runner)
    response = runner.post("/api/v1/acks", {"acks": [{"lease_id": lease["lease_id"]}] * 2},
                           format="json")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
    assert Lease.objects.get().status == "active"
