"""Bad input gets a 4xx with a machine-readable code and changes nothing."""
from __future__ import annotations

import base64
import uuid

import pytest
from django.forms.models import model_to_dict

from ledger.models import Artifact, Job, JobEvent, JobLogLine, Lease, Run

pytestmark = pytest.mark.django_db


def state():
    return (
        [model_to_dict(j) for j in Job.objects.order_by("pk")],
        [model_to_dict(lease) for lease in Lease.objects.order_by("pk")],
        JobEvent.objects.count(), Artifact.objects.count(), JobLogLine.objects.count(),
        Run.objects.count(),
    )


@pytest.fixture
def leased(operator, runner):
    operator.post("/api/v1/jobs", {"job_type": "test.noop", "project": "p"}, format="json")
    [lease] = runner.post("/api/v1/claims", {"runner_id": "r", "job_types": ["test.noop"]},
                          format="json").json()["leases"]
    return lease["lease_id"]


def raw(client, path, body: bytes):
    return client.generic("POST", path, body, content_type="application/json")


JOB = {"job_type": "test.noop", "project": "p"}
CASES = [
    # (path template, body, status, code)
    ("/api/v1/jobs", {**JOB, "priority": "high"}, 400, "validation_error"),
    ("/api/v1/jobs", {**JOB, "priority": "5"}, 400, "validation_error"),
    ("/api/v1/jobs", {**JOB, "priority": 5.0}, 400, "validation_error"),
    ("/api/v1/jobs", {**JOB, "priority": True}, 400, "validation_error"),
    ("/api/v1/jobs", {**JOB, "project": 123}, 400, "validation_error"),
    ("/api/v1/jobs", {**JOB, "run_id": 2**70}, 400, "validation_error"),
    ("/api/v1/jobs", {**JOB, "idempotency_key": ["k"]}, 400, "validation_error"),
    ("/api/v1/jobs", {**JOB, "payload": [1, 2]}, 400, "validation_error"),
    ("/api/v1/jobs", {**JOB, "max_attempts": 0}, 400, "validation_error"),
    ("/api/v1/jobs", {**JOB, "colour": "red"}, 400, "unknown_field"),
    ("/api/v1/jobs", {**JOB, "payload": {"a": "nul\u0000byte"}}, 400, "invalid_characters"),
    ("/api/v1/jobs", {**JOB, "payload": {"a\u0000": 1}}, 400, "invalid_characters"),
    ("/api/v1/jobs", {**JOB, "payload": {"blob": "x" * 300_000}}, 413, "payload_too_large"),
    ("/api/v1/jobs", {**JOB, "job_type": "bad type!"}, 400, "validation_error"),
    ("/api/v1/jobs", {**JOB, "run_id": 999999}, 404, "not_found"),
    ("/api/v1/jobs", {**JOB, "not_before": "yesterday"}, 400, "validation_error"),
    ("/api/v1/claims", {"runner_id": "r", "job_types": "test.noop"}, 400, "validation_error"),
    ("/api/v1/claims", {"runner_id": "r", "job_types": ["t"], "max_jobs": 101}, 400, "validation_error"),
    ("/api/v1/claims", {"runner_id": "r", "job_types": ["t"], "wait_seconds": 31}, 400, "validation_error"),
    ("/api/v1/claims", {"runner_id": "r", "job_types": ["t"], "lease_seconds": 1}, 400, "validation_error"),
    ("/api/v1/claims", {"runner_id": "r", "job_types": []}, 400, "validation_error"),
    ("/api/v1/claims", {"runner_id": "r", "job_types": ["t"], "max_jobs": "5"}, 400, "validation_error"),
    ("/api/v1/claims", {"runner_id": "r", "job_types": ["t"] * 10000}, 400, "validation_error"),
    ("/api/v1/claims", {"runner_id": "r", "job_types": ["t"], "lease_seconds": 10**30}, 400, "validation_error"),
    ("/api/v1/claims", {"runner": "r", "job_types": ["t"]}, 400, "unknown_field"),
    ("/api/v1/leases/{lease}/heartbeat", {"extend_seconds": 100000}, 400, "validation_error"),
    ("/api/v1/leases/{lease}/heartbeat", {"extend_seconds": 10**30}, 400, "validation_error"),
    ("/api/v1/leases/{lease}/heartbeat", {"progress": {"done": 2**64}}, 400, "validation_error"),
    ("/api/v1/leases/{lease}/heartbeat", {"progress": {"done": -1}}, 400, "validation_error"),
    ("/api/v1/leases/{lease}/heartbeat", {"progress": {"done": 1, "eta": 3}}, 400, "unknown_field"),
    ("/api/v1/leases/{lease}/ack", {"artifacts": [{"name": "a", "uri": "u", "sha256": "zz",
                                                   "size_bytes": 1, "media_type": "m"}]}, 400, "validation_error"),
    ("/api/v1/leases/{lease}/ack", {"artifacts": [{"name": "a", "uri": "u", "sha256": "a" * 64,
                                                   "size_bytes": -1, "media_type": "m"}]}, 400, "validation_error"),
    ("/api/v1/leases/{lease}/ack", {"result": [1]}, 400, "validation_error"),
    ("/api/v1/leases/{lease}/ack", {"artifacts": [{"name": "../../etc/passwd", "uri": "file:///x",
                                                   "sha256": "a" * 64, "size_bytes": 1, "media_type": "m"}]}, 400, "validation_error"),
    ("/api/v1/leases/{lease}/ack", {"artifacts": [{"name": "a", "uri": "javascript:alert(1)",
                                                   "sha256": "a" * 64, "size_bytes": 1, "media_type": "m"}]}, 400, "validation_error"),
    ("/api/v1/leases/{lease}/ack", {"artifacts": [{"name": "a", "uri": "file:///a", "sha256": "a" * 64,
                                                   "size_bytes": 2**63, "media_type": "m"}]}, 400, "validation_error"),
    ("/api/v1/leases/{lease}/heartbeat", {"progress": {"done": 5, "total": 3}}, 400, "validation_error"),
    ("/api/v1/leases/{lease}/fail", {"error": {"code": "x", "message": "m"}}, 400, "validation_error"),
    ("/api/v1/leases/{lease}/fail", {"error": "boom", "retryable": True}, 400, "validation_error"),
    ("/api/v1/leases/{lease}/fail", {"error": {"code": "x", "message": "m"}, "retryable": "yes"}, 400, "validation_error"),
    ("/api/v1/leases/{lease}/logs", {"lines": []}, 400, "validation_error"),
    ("/api/v1/leases/{lease}/logs", {"lines": [{"ts": "now", "level": "info", "message": "m"}]}, 400, "validation_error"),
    ("/api/v1/leases/{lease}/logs", {"lines": [{"ts": "2026-01-01T00:00:00Z", "level": "loud", "message": "m"}]}, 400, "validation_error"),
    ("/api/v1/leases/{unknown}/ack", {}, 404, "not_found"),
    ("/api/v1/leases/{unknown}/heartbeat", {}, 404, "not_found"),
    ("/api/v1/leases/not-a-uuid/ack", {}, 404, "not_found"),
]


@pytest.mark.parametrize("path,body,status,code", CASES)
def test_bad_request_is_refused_with_a_code_and_changes_nothing(api, leased, path, body, status, code):
    client = api()
    before = state()
    response = client.post(path.format(lease=leased, unknown=uuid.uuid4()), body, format="json")
    assert response.status_code == status, response.content
    assert response.json()["error"]["code"] == code
    assert state() == before


@pytest.mark.parametrize("body,code", [
    (b'{"job_type": "t", "project": ', "malformed_json"),
    (b"[1, 2, 3]", "malformed_json"),
    (b'{"job_type": "t", "project": "p", "priority": NaN}', "malformed_json"),
    (b"\xff\xfe{}", "malformed_json"),
    (b'{"job_type": "t", "project": "p", "payload": {"a": "\\u0000"}}', "invalid_characters"),
    (b'{"job_type": "t", "project": "p", "payload": {"a": "\\ud800"}}', "invalid_characters"),
    (b"[" * 5000 + b"]" * 5000, "malformed_json"),
    (b'{"job_type": "t", "project": "p", "project": "q"}', "malformed_json"),
])
def test_malformed_bodies_are_refused(operator, leased, body, code):
    before = state()
    response = raw(operator, "/api/v1/jobs", body)
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == code
    assert state() == before


def test_body_over_the_request_limit_is_413(operator, settings, leased):
    before = state()
    response = raw(operator, "/api/v1/jobs", b'{"job_type": "' + b"x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 10) + b'"}')
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert state() == before


def test_wrong_content_type_is_415(operator):
    response = operator.generic("POST", "/api/v1/jobs", "job_type=t", content_type="text/plain")
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_wrong_method_is_405(runner):
    response = runner.get("/api/v1/claims")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


def test_unknown_route_is_a_json_404(runner):
    response = runner.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


def test_huge_ids_in_the_path_are_404(api):
    assert api().get(f"/api/v1/jobs/{10**30}").status_code == 404
    assert api().get(f"/api/v1/runs/{10**30}").status_code == 404


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


NOT_ISSUED_CURSORS = [
    "garbage", "!!", "%%%", "cD0x\n", " cD0x", "cD0x====",   # not (canonical) base64
    _b64("p=abc"), _b64("p="), _b64("p=-5"), _b64("p=007"), _b64(f"p={2**63}"),   # position
    _b64("o=-1"), _b64("o=5000"), _b64("o=0"), _b64("r=0"), _b64("r=2"),   # offset, direction
    _b64("x=1"), _b64("p=1&x=1"), _b64("p=1&p=2"), _b64("r=1&o=1"),   # keys
]


@pytest.mark.parametrize("path", ["/api/v1/jobs", "/api/v1/schedules",
                                  "/api/v1/admission/events"])
@pytest.mark.parametrize("cursor", NOT_ISSUED_CURSORS)
def test_a_cursor_we_did_not_issue_is_400(api, path, cursor):
    response = api().get(path, {"cursor": cursor})
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == "invalid_cursor"


@pytest.mark.parametrize("path", ["/api/v1/jobs", "/api/v1/schedules",
                                  "/api/v1/admission/events"])
def test_an_empty_cursor_is_400(api, path):
    response = api().get(path, {"cursor": ""})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"


def test_issued_cursors_page_forward_and_back(api, enqueue):
    ids = [enqueue().pk for _ in range(5)][::-1]   # newest first
    client = api()
    first = client.get("/api/v1/jobs", {"page_size": 2}).json()
    second = client.get(first["next"]).json()
    third = client.get(second["next"]).json()
    assert [j["job_id"] for j in first["results"] + second["results"] + third["results"]] == ids
    assert third["next"] is None
    back = client.get(third["previous"]).json()
    assert [j["job_id"] for j in back["results"]] == ids[2:4]
    assert client.get(back["previous"]).json()["results"] == first["results"]


def test_bad_list_filters_are_400(api):
    response = api().get("/api/v1/jobs", {"status": "sleeping"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "validation_error"
