"""Admission operator API: quotas with live state, throttles, pause keys, tenant share,
breakers, the event log; scopes, reason/ticket, bad input, tenant isolation."""
from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlencode

import pytest
from django.utils.dateparse import parse_datetime

from ledger.clock import db_now
from ledger.models import Source
from quotas.bucket import MICRO, Bucket, BucketState
from quotas.models import AdmissionEvent, CircuitBreaker, Pause, Quota, TenantShare

pytestmark = pytest.mark.django_db

WHY = {"reason": "NVD rate limits us", "ticket": "OPS-7"}


@pytest.fixture
def quota_admin(api):
    """orch:quota + orch:read of tenant acme."""
    return api(scopes=("orch:quota", "orch:read"))


@pytest.fixture
def reader(api):
    return api(scopes=("orch:read",))


def state():
    return (list(Quota.objects.order_by("pk").values()), list(Pause.objects.order_by("pk").values()),
            list(TenantShare.objects.values()), list(CircuitBreaker.objects.values()),
            AdmissionEvent.objects.count(), Source.objects.count())


def events(*types):
    return list(AdmissionEvent.objects.filter(type__in=types).order_by("id"))


def put_quota(client, **body):
    return client.put("/api/v1/quotas", {**WHY, **body}, format="json")


# --- quotas -----------------------------------------------------------------------------------

def test_put_quota_creates_it_with_a_full_bucket_and_an_event(quota_admin):
    response = put_quota(quota_admin, job_type="advisory.ingest", source="nvd", max_active=4,
                         rate_per_second=2, burst=5, max_queued=100)
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["job_type"] == "advisory.ingest" and body["source"] == "nvd"
    assert (body["max_active"], body["rate_per_second"], body["burst"], body["max_queued"]) == (4, 2.0, 5, 100)
    assert (body["reason"], body["ticket"], body["updated_by"]) == (WHY["reason"], "OPS-7", "tester")
    assert body["state"]["tokens"] == 5.0 and body["state"]["whole_tokens"] == 5
    assert body["state"]["next_token_at"] is None
    assert (body["state"]["active"], body["state"]["queued"]) == (0, 0)
    [event] = events("quota.changed")
    assert (event.actor_type, event.actor_label, event.reason, event.ticket) == (
        "operator", "tester", WHY["reason"], "OPS-7")
    assert event.data["before"] is None and event.data["after"]["burst"] == 5
    # a source the tenant had not used yet is created (a feed can be limited before its first job)
    assert Source.objects.filter(tenant="acme", name="nvd").exists()


def test_get_quotas_shows_the_bucket_refilled_at_the_database_clock(quota_admin):
    put_quota(quota_admin, rate_per_second=2, burst=5)
    started = db_now()
    Quota.objects.update(tokens_micro=MICRO // 2, refilled_at=started - timedelta(seconds=1))
    [quota] = quota_admin.get("/api/v1/quotas").json()["quotas"]
    as_of = parse_datetime(quota["state"]["as_of"])
    bucket, stored = Bucket(2.0, 5), BucketState(MICRO // 2, started - timedelta(seconds=1))
    expected = bucket.refill(stored, as_of)
    assert 2.5 <= quota["state"]["tokens"] == expected.tokens < 5
    assert quota["state"]["whole_tokens"] == expected.whole_tokens
    assert parse_datetime(quota["state"]["next_token_at"]) == bucket.next_token_at(stored, as_of)
    assert Quota.objects.get().tokens_micro == MICRO // 2  # reading never stores the refill


def test_a_bucket_refilled_ahead_of_now_shows_its_stored_tokens(quota_admin):
    put_quota(quota_admin, rate_per_second=2, burst=5)
    ahead = db_now() + timedelta(hours=1)
    Quota.objects.update(tokens_micro=2_500_000, refilled_at=ahead)
    [quota] = quota_admin.get("/api/v1/quotas").json()["quotas"]
    assert (quota["state"]["tokens"], quota["state"]["whole_tokens"]) == (2.5, 2)
    assert parse_datetime(quota["state"]["next_token_at"]) == ahead + timedelta(milliseconds=250)


def test_live_counts_of_active_and_queued_jobs(quota_admin, enqueue, runner):
    put_quota(quota_admin, job_type="scan", max_active=5, max_queued=10)
    for _ in range(3):
        enqueue("scan")
    enqueue("other")
    claimed = runner.post("/api/v1/claims", {"runner_id": "r", "job_types": ["scan"]}, format="json")
    assert len(claimed.json()["leases"]) == 1
    [quota] = quota_admin.get("/api/v1/quotas").json()["quotas"]
    assert (quota["state"]["active"], quota["state"]["queued"]) == (1, 2)
    assert quota["state"]["tokens"] is None  # no rate, no bucket


def test_put_quota_replaces_limits_and_records_before_and_after(quota_admin):
    put_quota(quota_admin, max_active=4, rate_per_second=2, burst=5)
    response = put_quota(quota_admin, max_queued=9, **{"ticket": "OPS-8"})
    assert response.status_code == 200
    body = response.json()
    assert (body["max_active"], body["rate_per_second"], body["max_queued"]) == (None, None, 9)
    first, second = events("quota.changed")
    assert second.data["before"] == first.data["after"]
    assert second.data["after"] == {"max_active": None, "rate_per_second": None, "burst": None,
                                    "max_queued": 9}


def test_delete_quota_takes_scope_reason_and_ticket_in_the_query(quota_admin):
    put_quota(quota_admin, source="nvd", max_active=1)
    query = urlencode({"source": "nvd", **WHY})
    assert quota_admin.delete(f"/api/v1/quotas?{query}").status_code == 204
    assert not Quota.objects.exists()
    [event] = events("quota.deleted")
    assert event.data["before"]["max_active"] == 1 and event.data["after"] is None
    again = quota_admin.delete(f"/api/v1/quotas?{query}")
    assert again.status_code == 404 and again.json()["error"]["code"] == "not_found"
    missing = quota_admin.delete("/api/v1/quotas?" + urlencode({"source": "never-seen", **WHY}))
    assert missing.status_code == 404
    assert not Source.objects.filter(name="never-seen").exists()
    no_ticket = quota_admin.delete("/api/v1/quotas?" + urlencode({"reason": "x"}))
    assert no_ticket.json()["error"]["code"] == "ticket_required"


# --- scopes and reason/ticket -------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "body"), [
    ("put", "/api/v1/quotas", {**WHY, "max_active": 1}),
    ("delete", "/api/v1/quotas?" + urlencode(WHY), None),
    ("put", "/api/v1/throttles", {**WHY, "rate_per_second": 1, "burst": 1}),
    ("put", "/api/v1/tenant-share", {**WHY, "weight": 2}),
    ("put", "/api/v1/sources/nvd/breaker", {**WHY, "failure_ratio": 0.5}),
])
def test_quota_changes_need_orch_quota(api, method, path, body):
    for scopes in (("orch:read",), ("orch:operate", "orch:read", "orch:runner", "orch:backfill")):
        response = getattr(api(scopes=scopes), method)(path, body, format="json")
        assert response.status_code == 403, response.json()
        assert response.json()["error"]["code"] == "insufficient_scope"
    assert state() == ([], [], [], [], 0, 0)


def test_pause_needs_orch_operate_and_reads_need_orch_read(api, reader):
    body = {"key": "ops", "reason": "freeze"}
    for path in ("/api/v1/pauses", "/api/v1/pauses/resume"):
        response = reader.post(path, body, format="json")
        assert response.status_code == 403
    quota_only = api(scopes=("orch:quota",))
    for path in ("/api/v1/quotas", "/api/v1/pauses", "/api/v1/breakers", "/api/v1/tenant-share",
                 "/api/v1/admission", "/api/v1/admission/events"):
        assert quota_only.get(path).status_code == 403
        assert reader.get(path).status_code == 200


@pytest.mark.parametrize(("method", "path"), [
    ("get", "/api/v1/quotas"), ("put", "/api/v1/quotas"), ("delete", "/api/v1/quotas"),
    ("get", "/api/v1/pauses"), ("post", "/api/v1/pauses"), ("post", "/api/v1/pauses/resume"),
    ("put", "/api/v1/throttles"), ("get", "/api/v1/tenant-share"), ("put", "/api/v1/tenant-share"),
    ("get", "/api/v1/breakers"), ("put", "/api/v1/sources/nvd/breaker"),
    ("get", "/api/v1/admission"), ("get", "/api/v1/admission/events"),
])
def test_no_token_is_401(client, method, path):
    response = getattr(client, method)(path, content_type="application/json")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"


@pytest.mark.parametrize(("path", "body", "code"), [
    ("/api/v1/quotas", {"max_active": 1, "ticket": "T"}, "reason_required"),
    ("/api/v1/quotas", {"max_active": 1, "reason": "   ", "ticket": "T"}, "reason_required"),
    ("/api/v1/quotas", {"max_active": 1, "reason": None, "ticket": "T"}, "reason_required"),
    ("/api/v1/quotas", {"max_active": 1, "reason": "r"}, "ticket_required"),
    ("/api/v1/quotas", {"max_active": 1, "reason": "r", "ticket": ""}, "ticket_required"),
    ("/api/v1/throttles", {"rate_per_second": 1, "burst": 1, "reason": "r"}, "ticket_required"),
    ("/api/v1/tenant-share", {"weight": 2, "ticket": "T"}, "reason_required"),
    ("/api/v1/sources/nvd/breaker", {"failure_ratio": 0.5, "reason": "r"}, "ticket_required"),
])
def test_missing_reason_or_ticket_is_400_and_changes_nothing(quota_admin, path, body, code):
    response = quota_admin.put(path, body, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == code
    assert state() == ([], [], [], [], 0, 0)


def test_pause_and_resume_need_a_reason(operator):
    response = operator.post("/api/v1/pauses", {"key": "ops"}, format="json")
    assert response.json()["error"]["code"] == "reason_required"
    operator.post("/api/v1/pauses", {"key": "ops", "reason": "r"}, format="json")
    response = operator.post("/api/v1/pauses/resume", {"key": "ops", "reason": ""}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == "reason_required"
    assert Pause.objects.count() == 1


# --- bad input ------------------------------------------------------------------------------------

BAD = [
    ("/api/v1/quotas", {"max_active": -1}, "validation_error"),
    ("/api/v1/quotas", {"max_active": 2**70}, "validation_error"),
    ("/api/v1/quotas", {"max_active": 1_000_000_001}, "validation_error"),
    ("/api/v1/quotas", {"max_active": "5"}, "validation_error"),
    ("/api/v1/quotas", {"max_active": 1.5}, "validation_error"),
    ("/api/v1/quotas", {"max_active": True}, "validation_error"),
    ("/api/v1/quotas", {"rate_per_second": 2}, "validation_error"),
    ("/api/v1/quotas", {"burst": 2}, "validation_error"),
    ("/api/v1/quotas", {"rate_per_second": 0, "burst": 2}, "validation_error"),
    ("/api/v1/quotas", {"rate_per_second": -2, "burst": 2}, "validation_error"),
    ("/api/v1/quotas", {"rate_per_second": "2", "burst": 2}, "validation_error"),
    ("/api/v1/quotas", {"rate_per_second": False, "burst": 2}, "validation_error"),
    ("/api/v1/quotas", {"rate_per_second": 1e300, "burst": 2}, "validation_error"),
    ("/api/v1/quotas", {"rate_per_second": 2**80, "burst": 2}, "validation_error"),
    ("/api/v1/quotas", {"rate_per_second": 1e-9, "burst": 2}, "validation_error"),
    ("/api/v1/quotas", {"rate_per_second": 1, "burst": 0}, "validation_error"),
    ("/api/v1/quotas", {}, "validation_error"),
    ("/api/v1/quotas", {"max_active": None}, "validation_error"),
    ("/api/v1/quotas", {"max_active": 1, "job_type": "bad type!"}, "validation_error"),
    ("/api/v1/quotas", {"max_active": 1, "job_type": ""}, "validation_error"),
    ("/api/v1/quotas", {"max_active": 1, "source": 123}, "validation_error"),
    ("/api/v1/quotas", {"max_active": 1, "source": ["nvd"]}, "validation_error"),
    ("/api/v1/quotas", {"max_active": 1, "tenant": "other"}, "unknown_field"),
    ("/api/v1/quotas", {"max_active": 1, "max_actve": 2}, "unknown_field"),
    ("/api/v1/quotas", {"max_active": 1, "reason": "a" * 2001}, "validation_error"),
    ("/api/v1/quotas", {"max_active": 1, "ticket": "t" * 201}, "validation_error"),
    ("/api/v1/quotas", {"max_active": 1, "reason": 5}, "validation_error"),
    ("/api/v1/quotas", {"max_active": 1, "reason": "nul\u0000"}, "invalid_characters"),
    ("/api/v1/throttles", {"rate_per_second": 1}, "validation_error"),
    ("/api/v1/throttles", {"rate_per_second": 1, "burst": None}, "validation_error"),
    ("/api/v1/throttles", {"rate_per_second": 1, "burst": 1, "max_active": 3}, "unknown_field"),
    ("/api/v1/tenant-share", {"weight": 0}, "validation_error"),
    ("/api/v1/tenant-share", {"weight": 1001}, "validation_error"),
    ("/api/v1/tenant-share", {"weight": "2"}, "validation_error"),
    ("/api/v1/tenant-share", {"weight": 2, "tenant": "other"}, "unknown_field"),
    ("/api/v1/sources/nvd/breaker", {"failure_ratio": 0}, "validation_error"),
    ("/api/v1/sources/nvd/breaker", {"failure_ratio": 1.01}, "validation_error"),
    ("/api/v1/sources/nvd/breaker", {"window_seconds": 0}, "validation_error"),
    ("/api/v1/sources/nvd/breaker", {"cooldown_seconds": 10**12}, "validation_error"),
    ("/api/v1/sources/nvd/breaker", {"min_samples": "10"}, "validation_error"),
    ("/api/v1/sources/nvd/breaker", {"state": "open"}, "unknown_field"),
]


@pytest.mark.parametrize(("path", "body", "code"), BAD)
def test_bad_input_is_400_and_changes_nothing(quota_admin, path, body, code):
    put_quota(quota_admin, job_type="x", max_active=1)
    before = state()
    response = quota_admin.put(path, {**WHY, **body}, format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == code
    assert state() == before


@pytest.mark.parametrize(("raw", "code"), [
    (b'{"max_active": 1, "reason": "r", "ticket": "t", "rate_per_second": NaN, "burst": 1}',
     "malformed_json"),
    (b'{"max_active": 1, "reason": "r", "ticket": "t", "rate_per_second": Infinity, "burst": 1}',
     "malformed_json"),
    (b'{"max_active": 1, "reason": "r", "ticket": "t", "rate_per_second": 1e400, "burst": 1}',
     "validation_error"),
    (b'[1]', "malformed_json"),
])
def test_non_finite_numbers_never_reach_the_database(quota_admin, raw, code):
    response = quota_admin.generic("PUT", "/api/v1/quotas", raw, content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["code"] == code
    assert state() == ([], [], [], [], 0, 0)


@pytest.mark.parametrize(("path", "body", "code"), [
    ("/api/v1/pauses", {"key": "", "reason": "r"}, "validation_error"),
    ("/api/v1/pauses", {"key": "k" * 101, "reason": "r"}, "validation_error"),
    ("/api/v1/pauses", {"key": "has space", "reason": "r"}, "validation_error"),
    ("/api/v1/pauses", {"key": "ops", "reason": "r", "scope": "tenant"}, "unknown_field"),
    ("/api/v1/pauses", {"key": "ops", "reason": "r", "ticket": 7}, "validation_error"),
    ("/api/v1/pauses/resume", {"key": 5, "reason": "r"}, "validation_error"),
])
def test_bad_pause_input_is_400_and_changes_nothing(operator, path, body, code):
    response = operator.post(path, body, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == code
    assert state() == ([], [], [], [], 0, 0)


def test_bad_queries_are_400(quota_admin):
    assert quota_admin.get("/api/v1/admission/events?cursor=bogus").json()["error"]["code"] == "invalid_cursor"
    assert quota_admin.get("/api/v1/admission/events?page_size=0").status_code == 400
    assert quota_admin.get("/api/v1/admission/events?colour=red").json()["error"]["code"] == "unknown_field"
    response = quota_admin.delete("/api/v1/quotas?" + urlencode({**WHY, "tenant": "x"}))
    assert response.status_code == 400 and response.json()["error"]["code"] == "unknown_field"


# --- tenant isolation ---------------------------------------------------------------------------

def test_another_tenants_admission_state_is_invisible_and_untouchable(quota_admin, operator, api):
    put_quota(quota_admin, source="nvd", max_active=1)
    operator.post("/api/v1/pauses", {"key": "ops", "reason": "r"}, format="json")
    quota_admin.put("/api/v1/sources/nvd/breaker", {**WHY}, format="json")
    quota_admin.put("/api/v1/tenant-share", {**WHY, "weight": 9}, format="json")
    before = state()
    other = api(tenant="other")
    assert other.get("/api/v1/quotas").json() == {"quotas": []}
    assert other.get("/api/v1/pauses").json() == {"scopes": []}
    assert other.get("/api/v1/breakers").json() == {"breakers": []}
    assert other.get("/api/v1/tenant-share").json() == {"weight": 1}
    assert other.get("/api/v1/admission/events").json()["results"] == []
    response = other.delete("/api/v1/quotas?" + urlencode({"source": "nvd", **WHY}))
    assert response.status_code == 404
    response = other.post("/api/v1/pauses/resume", {"key": "ops", "reason": "r"}, format="json")
    assert response.status_code == 404
    assert state() == before


# --- pauses ----------------------------------------------------------------------------------------

def test_two_holders_pause_a_source_and_it_runs_only_when_both_resumed(operator):
    first = operator.post("/api/v1/pauses", {"source": "nvd", "key": "operator",
                                             "reason": "bad data", "ticket": "INC-1"}, format="json")
    assert first.status_code == 201, first.json()
    second = operator.post("/api/v1/pauses", {"source": "nvd", "key": "deploy-42",
                                              "reason": "deploying"}, format="json")
    assert second.status_code == 201
    body = second.json()
    assert body["paused"] and [h["key"] for h in body["holders"]] == ["deploy-42", "operator"]
    assert body["holders"][1] | {"created_at": None} == {
        "key": "operator", "reason": "bad data", "ticket": "INC-1", "actor": "tester", "created_at": None}

    resumed = operator.post("/api/v1/pauses/resume", {"source": "nvd", "key": "operator",
                                                      "reason": "data fixed"}, format="json")
    assert resumed.status_code == 200
    assert resumed.json()["paused"] and [h["key"] for h in resumed.json()["holders"]] == ["deploy-42"]
    [scope] = operator.get("/api/v1/pauses").json()["scopes"]
    assert scope["source"] == "nvd" and [h["key"] for h in scope["holders"]] == ["deploy-42"]

    done = operator.post("/api/v1/pauses/resume", {"source": "nvd", "key": "deploy-42",
                                                   "reason": "deployed"}, format="json")
    assert done.json() == {"job_type": None, "source": "nvd", "paused": False, "holders": []}
    assert operator.get("/api/v1/pauses").json() == {"scopes": []}
    assert [e.type for e in events("source.paused", "source.resumed")] == [
        "source.paused", "source.paused", "source.resumed", "source.resumed"]
    assert events("source.resumed")[0].data["keys"] == ["deploy-42"]


def test_pausing_again_with_the_same_key_updates_it(operator):
    body = {"job_type": "scan", "key": "ops", "reason": "r1"}
    assert operator.post("/api/v1/pauses", body, format="json").status_code == 201
    again = operator.post("/api/v1/pauses", {**body, "reason": "r2"}, format="json")
    assert again.status_code == 200 and again.json()["holders"][0]["reason"] == "r2"
    assert Pause.objects.count() == 1
    assert [e.type for e in events("job_type.paused")] == ["job_type.paused"] * 2


def test_resuming_a_missing_key_or_unknown_source_is_404(operator):
    operator.post("/api/v1/pauses", {"key": "ops", "reason": "tenant freeze"}, format="json")
    for body in ({"key": "nobody", "reason": "r"}, {"key": "ops", "reason": "r", "source": "nope"},
                 {"key": "ops", "reason": "r", "job_type": "scan"}):
        response = operator.post("/api/v1/pauses/resume", body, format="json")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert Pause.objects.count() == 1 and [e.type for e in events("tenant.paused")] == ["tenant.paused"]
    assert not Source.objects.filter(name="nope").exists()


# --- throttles, share, breakers, whole state, events ------------------------------------------------

def test_throttle_sets_and_clears_the_scope_quota_bucket(quota_admin):
    put_quota(quota_admin, job_type="scan", max_active=3)
    response = quota_admin.put("/api/v1/throttles", {**WHY, "job_type": "scan",
                                                     "rate_per_second": 0.5, "burst": 2}, format="json")
    assert response.status_code == 200
    quota = response.json()["quota"]
    assert (quota["max_active"], quota["rate_per_second"], quota["burst"]) == (3, 0.5, 2)
    assert quota["state"]["tokens"] == 2.0
    cleared = quota_admin.put("/api/v1/throttles", {**WHY, "job_type": "scan",
                                                    "rate_per_second": None, "burst": None}, format="json")
    assert cleared.json()["quota"]["rate_per_second"] is None
    assert cleared.json()["quota"]["max_active"] == 3
    assert len(events("throttle.changed")) == 2
    fresh = quota_admin.put("/api/v1/throttles", {**WHY, "source": "osv", "rate_per_second": 1,
                                                  "burst": 1}, format="json")
    assert fresh.json()["quota"]["source"] == "osv"
    gone = quota_admin.put("/api/v1/throttles", {**WHY, "source": "osv", "rate_per_second": None,
                                                 "burst": None}, format="json")
    assert gone.json() == {"quota": None}
    assert not Quota.objects.filter(source_id__gt=0).exists()


def test_tenant_share_weight(quota_admin):
    assert quota_admin.get("/api/v1/tenant-share").json() == {"weight": 1}
    response = quota_admin.put("/api/v1/tenant-share", {**WHY, "weight": 5}, format="json")
    assert response.status_code == 200 and response.json() == {"weight": 5}
    assert quota_admin.get("/api/v1/tenant-share").json() == {"weight": 5}
    [event] = events("share.changed")
    assert event.data == {"before": None, "after": {"weight": 5}} and event.ticket == "OPS-7"


def test_breaker_config_and_state(quota_admin):
    response = quota_admin.put("/api/v1/sources/nvd/breaker",
                               {**WHY, "failure_ratio": 0.3, "min_samples": 20}, format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body | {"changed_at": None} == {
        "source": "nvd", "state": "closed", "opened_at": None, "changed_at": None,
        "probe_job_id": None, "failure_ratio": 0.3, "window_seconds": 300, "min_samples": 20,
        "cooldown_seconds": 60}
    quota_admin.put("/api/v1/sources/nvd/breaker", {**WHY, "cooldown_seconds": 120}, format="json")
    quota_admin.put("/api/v1/sources/ghsa/mirror/breaker", {**WHY}, format="json")
    breakers = quota_admin.get("/api/v1/breakers").json()["breakers"]
    assert [(b["source"], b["failure_ratio"], b["cooldown_seconds"]) for b in breakers] == [
        ("ghsa/mirror", 0.5, 60), ("nvd", 0.3, 120)]
    assert [e.data["after"]["cooldown_seconds"] for e in events("breaker.configured")] == [60, 120, 60]
    assert quota_admin.put("/api/v1/sources/bad name!/breaker", {**WHY}, format="json").status_code == 404


def test_whole_admission_state(quota_admin, operator):
    put_quota(quota_admin, max_active=2)
    operator.post("/api/v1/pauses", {"job_type": "scan", "key": "ops", "reason": "r"}, format="json")
    quota_admin.put("/api/v1/sources/nvd/breaker", {**WHY}, format="json")
    body = quota_admin.get("/api/v1/admission").json()
    assert [q["max_active"] for q in body["quotas"]] == [2]
    assert [(s["job_type"], s["paused"]) for s in body["paused_scopes"]] == [("scan", True)]
    assert [b["source"] for b in body["breakers"]] == ["nvd"]
    assert body["share"] == {"weight": 1}


def test_events_newest_first_paginated_and_filtered(quota_admin, operator):
    put_quota(quota_admin, max_active=1)
    put_quota(quota_admin, max_active=2)
    operator.post("/api/v1/pauses", {"source": "nvd", "key": "ops", "reason": "r"}, format="json")
    page = quota_admin.get("/api/v1/admission/events?page_size=2").json()
    assert [e["type"] for e in page["results"]] == ["source.paused", "quota.changed"]
    assert page["results"][0]["source"] == "nvd" and page["results"][0]["job_type"] is None
    assert page["results"][1]["data"]["after"]["max_active"] == 2
    rest = quota_admin.get(page["next"]).json()
    assert [e["data"]["after"]["max_active"] for e in rest["results"]] == [1]
    assert rest["next"] is None
    only = quota_admin.get("/api/v1/admission/events?type=source.paused").json()["results"]
    assert len(only) == 1 and only[0]["actor_label"] == "tester" and only[0]["reason"] == "r"
