"""Bearer tokens: 401 for missing/expired/bad tokens, 403 for a missing scope, 404 across tenants."""
from __future__ import annotations

import uuid
from datetime import timedelta

import jwt
import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from ledger.models import Job, Lease

pytestmark = pytest.mark.django_db


def client_with(header: str | None) -> APIClient:
    client = APIClient()
    if header is not None:
        client.credentials(HTTP_AUTHORIZATION=header)
    return client


def claims(settings, **overrides):
    now = int(timezone.now().timestamp())
    base = {"iss": settings.ORCH_JWT_ISSUER, "aud": settings.ORCH_JWT_AUDIENCE, "sub": "x",
            "tenant": "acme", "scope": "orch:read orch:runner orch:operate",
            "iat": now, "nbf": now, "exp": now + 600}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def test_missing_token_is_401(settings):
    response = client_with(None).get("/api/v1/jobs")
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "not_authenticated"
    assert response["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize("mutate,code", [
    (lambda s: jwt.encode(claims(s, exp=int(timezone.now().timestamp()) - 3600,
                                 iat=int(timezone.now().timestamp()) - 7200), s.ORCH_JWT_SECRET),
     "token_expired"),
    (lambda s: jwt.encode(claims(s), "another-secret-another-secret-another-secret"), "invalid_token"),
    (lambda s: jwt.encode(claims(s), None, algorithm="none"), "invalid_token"),
    (lambda s: jwt.encode(claims(s, aud="someone-else"), s.ORCH_JWT_SECRET), "invalid_token"),
    (lambda s: jwt.encode(claims(s, iss="elsewhere"), s.ORCH_JWT_SECRET), "invalid_token"),
    (lambda s: jwt.encode(claims(s, tenant=None), s.ORCH_JWT_SECRET), "invalid_token"),
    (lambda s: jwt.encode(claims(s, exp=None), s.ORCH_JWT_SECRET), "invalid_token"),
    (lambda s: jwt.encode(claims(s, nbf=int(timezone.now().timestamp()) + 3600), s.ORCH_JWT_SECRET),
     "invalid_token"),
    (lambda s: "not.a.jwt", "invalid_token"),
    (lambda s: jwt.encode(claims(s, tenant="a" * 65), s.ORCH_JWT_SECRET), "invalid_token"),
    (lambda s: jwt.encode(claims(s, tenant="ac\u0000me"), s.ORCH_JWT_SECRET), "invalid_token"),
    (lambda s: jwt.encode(claims(s, tenant="*"), s.ORCH_JWT_SECRET), "invalid_token"),
    (lambda s: jwt.encode(claims(s, sub="x" * 201), s.ORCH_JWT_SECRET), "invalid_token"),
])
def test_bad_tokens_are_401(settings, mutate, code):
    response = client_with(f"Bearer {mutate(settings)}").get("/api/v1/jobs")
    assert response.status_code == 401, response.content
    assert response.json()["error"]["code"] == code


def test_non_bearer_scheme_is_401():
    response = client_with("Basic dXNlcjpwYXNz").get("/api/v1/jobs")
    assert response.status_code == 401


@pytest.mark.parametrize("method,path,scope", [
    ("get", "/api/v1/jobs", "orch:read"),
    ("post", "/api/v1/jobs", "orch:operate"),
    ("post", "/api/v1/claims", "orch:runner"),
    ("get", "/api/v1/runner-config", "orch:runner"),
    ("post", "/api/v1/runs", "orch:operate"),
])
def test_wrong_scope_is_403(api, method, path, scope):
    others = [s for s in ("orch:read", "orch:operate", "orch:runner") if s != scope]
    response = getattr(api(scopes=others), method)(path, {}, format="json")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "insufficient_scope"


def test_another_tenants_job_and_lease_are_404(api, make_token):
    mine = api(tenant="acme")
    theirs = api(tenant="globex")
    job_id = mine.post("/api/v1/jobs", {"job_type": "t.x", "project": "p"}, format="json").json()["job_id"]
    [lease] = mine.post("/api/v1/claims", {"runner_id": "r", "job_types": ["t.x"]},
                        format="json").json()["leases"]
    lease_id = lease["lease_id"]
    assert theirs.get(f"/api/v1/jobs/{job_id}").status_code == 404
    assert theirs.get(f"/api/v1/jobs/{job_id}/events").status_code == 404
    assert theirs.post(f"/api/v1/jobs/{job_id}/cancel", {"reason": "x"}, format="json").status_code == 404
    for action, body in [("heartbeat", {}), ("ack", {}), ("release", {}),
                         ("fail", {"error": {"code": "x", "message": ""}, "retryable": True}),
                         ("logs", {"lines": [{"ts": "2026-01-01T00:00:00Z", "level": "info", "message": "m"}]})]:
        response = theirs.post(f"/api/v1/leases/{lease_id}/{action}", body, format="json")
        assert response.status_code == 404, (action, response.content)
        assert response.json()["error"]["code"] == "not_found"
    assert theirs.get("/api/v1/jobs").json()["results"] == []
    assert theirs.post("/api/v1/claims", {"runner_id": "r", "job_types": ["t.x"]},
                       format="json").json()["leases"] == []
    assert Job.objects.get(pk=job_id).status == "leased"
    assert Lease.objects.get(pk=uuid.UUID(lease_id)).status == "active"


def test_issue_token_command_signs_a_usable_token(capsys):
    from django.core.management import call_command

    call_command("issue_token", "--tenant", "acme", "--scopes", "orch:read", "--ttl-seconds", "60")
    token = capsys.readouterr().out.strip()
    assert client_with(f"Bearer {token}").get("/api/v1/jobs").status_code == 200


def test_issue_token_command_refuses_unknown_scopes():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="unknown scopes"):
        call_command("issue_token", "--tenant", "acme", "--scopes", "orch:everything")


def test_issue_token_command_names_the_malformed_runner_tenant():
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="'BAD TENANT' is not a tenant id"):
        call_command("issue_token", "--tenant", "t", "--scopes", "orch:runner",
                     "--runner-tenants", "f1,BAD TENANT")


def test_token_issue_says_why_runner_tenants_are_refused(make_token):
    with pytest.raises(ValueError, match="'a/b' is not a tenant id"):
        make_token(runner_tenants=["ok", "a/b"])
    with pytest.raises(ValueError, match="at most 1000 tenant ids"):
        make_token(runner_tenants=[f"t{n}" for n in range(1000)])   # + acme: 1001
    assert make_token(runner_tenants=[f"t{n}" for n in range(999)])


def test_token_issue_validates_its_input(make_token):
    with pytest.raises(ValueError):
        make_token(ttl=timedelta(seconds=0))
    with pytest.raises(ValueError, match="tenant"):
        make_token(tenant="a" * 65)
    with pytest.raises(ValueError, match="subject"):
        make_token(subject="")


def test_a_cached_token_still_expires(settings):
    from orchestrator.tokens import TokenInvalid, token_issue, token_verify

    settings.ORCH_JWT_LEEWAY_SECONDS = 0
    token = token_issue(tenant="acme", scopes=["orch:read"], subject="x", ttl=timedelta(seconds=1))
    assert token_verify(token).tenant == "acme"
    assert token_verify(token).tenant == "acme"  # served from the cache
    import time

    deadline = time.monotonic() + 10
    while True:  # wait for exp to pass (1 s), then the cached entry must not answer
        try:
            token_verify(token)
        except TokenInvalid as exc:
            assert exc.code == "token_expired"
            break
        assert time.monotonic() < deadline, "an expired token was still accepted"
        time.sleep(0.05)
