"""Shared fixtures: API clients per persona, tokens, and job factories."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
from rest_framework.test import APIClient

from ledger.services import Actor, job_enqueue
from orchestrator.tokens import token_issue


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``@pytest.mark.postgres`` tests when the suite runs on SQLite (ORCH_TEST_SQLITE)."""
    from django.db import connection

    if connection.vendor == "postgresql":
        return
    skip = pytest.mark.skip(reason="needs PostgreSQL")
    for item in items:
        if "postgres" in item.keywords:
            item.add_marker(skip)


ALL_SCOPES = ("orch:read", "orch:operate", "orch:runner", "orch:quota", "orch:backfill")


@pytest.fixture
def make_token() -> Callable[..., str]:
    """``make_token(tenant="acme", scopes=("orch:runner",), subject="tester")`` -> JWT."""

    def make(tenant: str = "acme", scopes: Iterable[str] = ALL_SCOPES, subject: str = "tester",
             **kwargs: Any) -> str:
        return token_issue(tenant=tenant, scopes=scopes, subject=subject, **kwargs)

    return make


@pytest.fixture
def api(make_token: Callable[..., str]) -> Callable[..., APIClient]:
    """``api(tenant="acme", scopes=...)`` -> an APIClient sending that bearer token."""

    def make(tenant: str = "acme", scopes: Iterable[str] = ALL_SCOPES) -> APIClient:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {make_token(tenant=tenant, scopes=scopes)}")
        return client

    return make


@pytest.fixture
def runner(api: Callable[..., APIClient]) -> APIClient:
    """A runner of tenant ``acme`` (orch:runner only)."""
    return api(scopes=("orch:runner",))


@pytest.fixture
def operator(api: Callable[..., APIClient]) -> APIClient:
    """An operator of tenant ``acme`` (orch:operate + orch:read)."""
    return api(scopes=("orch:operate", "orch:read"))


@pytest.fixture
def enqueue() -> Callable[..., Any]:
    """``enqueue(job_type="t", tenant="acme", **kw)`` -> Job, through the service."""

    def make(job_type: str = "test.noop", tenant: str = "acme", **kwargs: Any) -> Any:
        kwargs.setdefault("project", "proj")
        kwargs.setdefault("payload", {})
        kwargs.setdefault("max_attempts", 3)
        return job_enqueue(tenant=tenant, job_type=job_type, actor=Actor.system("test"),
                           **kwargs).job

    return make
