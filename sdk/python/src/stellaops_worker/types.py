"""Typed shapes of the bridge contract v1 (JSON bodies as ``TypedDict``).

Times are RFC 3339 UTC strings; durations are integer seconds named ``*_seconds``.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

__all__ = [
    "JSONObject",
    "RetryHint",
    "Lease",
    "Progress",
    "HeartbeatResult",
    "Artifact",
    "FailResult",
    "LogLevel",
    "LogLine",
    "BackoffConfig",
    "RunnerConfig",
]

JSONObject = dict[str, Any]

LogLevel = Literal["debug", "info", "warning", "error"]


class RetryHint(TypedDict):
    """``lease.retry_hint``: ``backoff_seconds`` before a retry, ``attempts_left`` after this one."""

    backoff_seconds: int
    attempts_left: int


class Lease(TypedDict):
    """One element of ``POST /claims`` -> ``{"leases": [Lease]}``."""

    lease_id: str
    job_id: int
    fencing_token: int
    job_type: str
    tenant: str
    project: str
    source: str | None
    payload: JSONObject
    idempotency_key: str | None
    correlation_id: str | None
    attempt: int
    max_attempts: int
    lease_seconds: int
    lease_expires_at: str
    heartbeat_interval_seconds: int
    retry_hint: RetryHint


class Progress(TypedDict):
    """``heartbeat.progress``: ``done`` of ``total`` units (``total`` may be unknown)."""

    done: int
    total: int | None
    message: str | None


class HeartbeatResult(TypedDict):
    """200 answer of ``POST /leases/{id}/heartbeat``."""

    lease_expires_at: str
    lease_seconds: int
    cancel_requested: bool


class Artifact(TypedDict):
    """An artifact reference sent with ack. ``sha256`` is 64 lowercase hex digits."""

    name: str
    uri: str
    sha256: str
    size_bytes: int
    media_type: str


class FailResult(TypedDict):
    """200 answer of ``POST /leases/{id}/fail``."""

    job_status: Literal["scheduled", "dead_lettered", "canceled"]
    next_attempt_at: str | None


class LogLine(TypedDict):
    """One line of ``POST /leases/{id}/logs`` (message at most 8 KiB)."""

    ts: str
    level: LogLevel
    message: str


class BackoffConfig(TypedDict):
    """``runner-config.backoff``: the server's retry curve for workers, in seconds."""

    base_seconds: float
    max_seconds: float
    jitter: str


class RunnerConfig(TypedDict):
    """200 answer of ``GET /runner-config``: lease defaults, defined once on the server."""

    lease_seconds: int
    max_lease_seconds: int
    heartbeat_interval_seconds: int
    max_wait_seconds: int
    max_jobs: int
    backoff: BackoffConfig
