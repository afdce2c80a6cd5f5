"""Idempotent enqueue, including 20 concurrent identical requests."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from ledger.models import Job

BODY = {"job_type": "test.noop", "project": "p", "payload": {"a": 1}, "idempotency_key": "k-1"}


@pytest.mark.django_db
def test_same_key_and_body_returns_the_same_job(operator):
    first = operator.post("/api/v1/jobs", BODY, format="json")
    second = operator.post("/api/v1/jobs", BODY, format="json")
    assert first.status_code == 201 and second.status_code == 200
    assert second["Idempotent-Replayed"] == "true"
    assert first.json()["job_id"] == second.json()["job_id"]
    assert Job.objects.count() == 1


@pytest.mark.django_db
def test_same_key_other_body_is_a_conflict_and_changes_nothing(operator):
    operator.post("/api/v1/jobs", BODY, format="json")
    other = operator.post("/api/v1/jobs", {**BODY, "payload": {"a": 2}}, format="json")
    assert other.status_code == 409
    assert other.json()["error"]["code"] == "idempotency_conflict"
    assert Job.objects.get().payload == {"a": 1}


@pytest.mark.django_db
def test_keys_are_scoped_per_tenant(api):
    a = api(tenant="a").post("/api/v1/jobs", BODY, format="json")
    b = api(tenant="b").post("/api/v1/jobs", BODY, format="json")
    assert a.status_code == b.status_code == 201
    assert a.json()["job_id"] != b.json()["job_id"]


@pytest.mark.django_db(transaction=True)
def test_twenty_concurrent_requests_create_one_job_and_conflicting_bodies_get_409(api):
    def post(body):
        try:
            response = api().post("/api/v1/jobs", body, format="json")
            return response.status_code, response.json()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=20) as pool:
        same = list(pool.map(post, [BODY] * 20))
    statuses = sorted(status for status, _ in same)
    assert statuses == [200] * 19 + [201]
    assert {body["job_id"] for _, body in same} == {Job.objects.get().pk}

    with ThreadPoolExecutor(max_workers=20) as pool:
        other = list(pool.map(post, [{**BODY, "payload": {"a": 2}}] * 20))
    assert {status for status, _ in other} == {409}
    assert {body["error"]["code"] for _, body in other} == {"idempotency_conflict"}
    assert Job.objects.count() == 1 and Job.objects.get().payload == {"a": 1}
