"""Thin, typed HTTP layer over the orchestrator's bridge contract v1 (``/api/v1``)."""

from __future__ import annotations

import email.utils
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import httpx

from ._version import __version__
from .backoff import BOOTSTRAP_BASE_SECONDS, BOOTSTRAP_MAX_SECONDS, Backoff
from .errors import (
    ApiError,
    AuthError,
    Conflict,
    LeaseLost,
    NotFound,
    ProtocolError,
    RateLimited,
    ServerError,
    TransportError,
    ValidationError,
)
from .types import (
    Artifact,
    FailResult,
    HeartbeatResult,
    JSONObject,
    Lease,
    LogLine,
    Progress,
    RunnerConfig,
)

__all__ = [
    "Client",
    "Enqueued",
    "TokenSource",
    "error_from_response",
    "is_retryable",
    "token_from_file",
    "MAX_LOG_LINES_PER_CALL",
    "MAX_LOG_MESSAGE_BYTES",
    "MAX_ERROR_MESSAGE_CHARS",
    "MAX_PROGRESS_MESSAGE_CHARS",
    "MAX_REASON_CHARS",
]

T = TypeVar("T")

TokenSource = str | Callable[[], str]
"""A bearer token, or a callable returning the current one (read before every request)."""

MAX_LOG_LINES_PER_CALL = 500
MAX_LOG_MESSAGE_BYTES = 8 * 1024
# The server's limits on other free text (characters): a longer text is refused with 400,
# which would lose the outcome or the heartbeat carrying it.
MAX_ERROR_MESSAGE_CHARS = 4000  # fail: error.message
MAX_PROGRESS_MESSAGE_CHARS = 2000  # heartbeat: progress.message
MAX_REASON_CHARS = 2000  # release: reason
_TRUNCATED = "...[truncated]"
# The server refuses strings holding NUL (PostgreSQL jsonb cannot store it) or lone
# surrogates (not encodable as UTF-8, e.g. a surrogate-escaped file name).
_UNSENDABLE = re.compile("[\x00\ud800-\udfff]")

ENQUEUE_OPTIONS = frozenset(
    {
        "source",
        "priority",
        "idempotency_key",
        "run_id",
        "depends_on",
        "not_before",
        "max_attempts",
        "correlation_id",
    }
)

_log = logging.getLogger("stellaops_worker.client")


@dataclass(frozen=True)
class Enqueued:
    """Answer of ``Client.enqueue``.

    Attributes:
        job: the job object from the server (``job_id``, ``status``, ...).
        replayed: ``True`` when the server answered 200 ``Idempotent-Replayed: true``
            (an earlier enqueue with the same idempotency key and body), ``False`` on 201.
    """

    job: JSONObject
    replayed: bool

    @property
    def job_id(self) -> int:
        """The job's id (``job["job_id"]``)."""
        return int(self.job["job_id"])


def token_from_file(path: str | Path) -> Callable[[], str]:
    """Return a token source that reads ``path`` and re-reads it when its mtime changes.

    Lets a sidecar rotate the JWT without restarting the worker. Surrounding whitespace
    is stripped.

    Raises (when called):
        OSError: the file cannot be read.
        ValueError: the file is empty.
    """
    file = Path(path)
    lock = threading.Lock()
    cache: dict[str, Any] = {"mtime": None, "token": ""}

    def read() -> str:
        mtime = file.stat().st_mtime_ns
        with lock:
            if cache["mtime"] != mtime:
                token = file.read_text(encoding="utf-8").strip()
                if not token:
                    raise ValueError(f"token file {file} is empty")
                cache["mtime"], cache["token"] = mtime, token
            return str(cache["token"])

    return read


def _parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or HTTP-date), ``None`` if absent/invalid."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def error_from_response(response: httpx.Response) -> ApiError:
    """Map an error response to the ``ApiError`` subclass the caller should handle.

    Reads the contract body ``{"error": {"code", "message", "details"}}``; a body of
    another shape gives code ``http_<status>`` and the first 500 characters as message.

    Mapping: 409 ``lease_lost`` -> ``LeaseLost``; other 409 -> ``Conflict``; 401/403 ->
    ``AuthError``; 404 -> ``NotFound``; 400/422 -> ``ValidationError``; 429 ->
    ``RateLimited``; >= 500 -> ``ServerError``; anything else -> ``ApiError``.
    """
    status = response.status_code
    code = f"http_{status}"
    message = ""
    details: dict[str, Any] = {}
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        code = str(err.get("code") or code)
        message = str(err.get("message") or "")
        if isinstance(err.get("details"), dict):
            details = err["details"]
    else:
        try:
            message = response.text[:500]
        except (UnicodeDecodeError, httpx.ResponseNotRead):
            message = ""
    if not message:
        message = response.reason_phrase or code
    retry_after = _parse_retry_after(response.headers.get("Retry-After"))
    cls: type[ApiError]
    if status == 409 and code == "lease_lost":
        cls = LeaseLost
    elif status == 409:
        cls = Conflict
    elif status in (401, 403):
        cls = AuthError
    elif status == 404:
        cls = NotFound
    elif status in (400, 422):
        cls = ValidationError
    elif status == 429:
        cls = RateLimited
    elif status >= 500:
        cls = ServerError
    else:
        cls = ApiError
    return cls(status, code, message, details, retry_after_seconds=retry_after)


def is_retryable(exc: BaseException) -> bool:
    """True for failures worth repeating an idempotent call for: no answer, 429 or 5xx."""
    return isinstance(exc, TransportError | RateLimited | ServerError)


def _sendable(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD (the server refuses them)."""
    return _UNSENDABLE.sub("\ufffd", str(text))


def _truncate_utf8(text: str, limit: int) -> str:
    """``text`` made sendable and cut to at most ``limit`` bytes of UTF-8."""
    text = _sendable(text)
    raw = text.encode("utf-8")
    if len(raw) <= limit:
        return text
    return raw[: limit - len(_TRUNCATED)].decode("utf-8", errors="ignore") + _TRUNCATED


def _truncate_chars(text: str, limit: int) -> str:
    """``text`` made sendable and cut to at most ``limit`` characters."""
    text = _sendable(text)
    if len(text) <= limit:
        return text
    return text[: limit - len(_TRUNCATED)] + _TRUNCATED


def _require(obj: Mapping[str, Any], key: str, typ: type | tuple[type, ...], what: str) -> Any:
    value = obj.get(key)
    # bool is an int subclass; a boolean where an integer is due is a protocol error.
    if not isinstance(value, typ) or (isinstance(value, bool) and typ is int):
        raise ProtocolError(f"{what}: field {key!r} missing or not {typ}")
    return value


def _parse_lease(obj: Any) -> Lease:
    if not isinstance(obj, dict):
        raise ProtocolError("claim: lease is not an object")
    for key in ("lease_id", "job_type", "lease_expires_at"):
        _require(obj, key, str, "lease")
    for key in (
        "job_id",
        "fencing_token",
        "attempt",
        "max_attempts",
        "lease_seconds",
        "heartbeat_interval_seconds",
    ):
        _require(obj, key, int, "lease")
    if obj["heartbeat_interval_seconds"] <= 0 or obj["lease_seconds"] <= 0:
        raise ProtocolError("lease: lease_seconds and heartbeat_interval_seconds must be > 0")
    payload = obj.get("payload")
    lease: dict[str, Any] = dict(obj)
    lease["payload"] = payload if isinstance(payload, dict) else {}
    for key in ("tenant", "project"):
        lease[key] = str(obj.get(key) or "")
    for key in ("source", "idempotency_key", "correlation_id"):
        lease.setdefault(key, None)
    hint = obj.get("retry_hint")
    lease["retry_hint"] = hint if isinstance(hint, dict) else {}
    return cast(Lease, lease)


class Client:
    """Typed client of the bridge contract v1, shareable between threads.

    Args:
        base_url: the orchestrator's origin (``http://host:8000``) or its API root
            (``http://host:8000/api/v1``); ``/api/v1`` is appended when missing.
        token: bearer JWT, or a callable returning it (read before every request, so a
            rotated token is picked up; see ``token_from_file``).
        timeout: per-request timeout in seconds (a claim adds its ``wait_seconds``).
        retry_seconds: how long ack, fail and release keep retrying a call that got no
            answer, 429 or 5xx, in seconds (they are idempotent on the server). 0 disables.
        transport: an ``httpx`` transport (e.g. one that injects network faults in tests).
        user_agent: ``User-Agent`` header; defaults to ``stellaops-worker/<version>``.

    Every method raises ``TransportError`` (no answer), ``ApiError`` subclasses (error
    status, see ``error_from_response``) or ``ProtocolError`` (2xx with a body outside the
    contract). ``close()`` (or ``with Client(...)``) releases the connection pool.
    """

    def __init__(
        self,
        base_url: str,
        token: TokenSource,
        *,
        timeout: float = 30.0,
        retry_seconds: float = 60.0,
        transport: httpx.BaseTransport | None = None,
        user_agent: str | None = None,
    ) -> None:
        root = base_url.rstrip("/")
        if not root.endswith("/api/v1"):
            root += "/api/v1"
        self.base_url = root
        self._token = token
        self.timeout = float(timeout)
        self.retry_seconds = float(retry_seconds)
        self._backoff_curve = (BOOTSTRAP_BASE_SECONDS, BOOTSTRAP_MAX_SECONDS)
        self._http = httpx.Client(
            base_url=root,
            timeout=timeout,
            transport=transport,
            headers={
                "User-Agent": user_agent or f"stellaops-worker/{__version__}",
                "Accept": "application/json",
            },
        )

    # -- plumbing -------------------------------------------------------------------------

    def configure_backoff(self, base_seconds: float, max_seconds: float) -> None:
        """Set the retry curve (seconds) used by ack/fail/release, e.g. from runner-config."""
        Backoff(base_seconds, max_seconds)  # validates
        self._backoff_curve = (float(base_seconds), float(max_seconds))

    def new_backoff(self) -> Backoff:
        """A fresh ``Backoff`` on the configured curve."""
        return Backoff(*self._backoff_curve)

    def close(self) -> None:
        """Close the underlying connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _auth(self) -> dict[str, str]:
        token = self._token() if callable(self._token) else self._token
        return {"Authorization": f"Bearer {token}"}

    def _request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> httpx.Response:
        try:
            response = self._http.request(
                method,
                path,
                json=body,
                params=params,
                headers=self._auth(),
                timeout=timeout if timeout is not None else self.timeout,
            )
        except httpx.HTTPError as exc:
            raise TransportError(f"{method} {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise error_from_response(response)
        return response

    @staticmethod
    def _json(response: httpx.Response, what: str) -> JSONObject:
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError) as exc:
            raise ProtocolError(f"{what}: answer is not JSON") from exc
        if not isinstance(body, dict):
            raise ProtocolError(f"{what}: answer is not a JSON object")
        return body

    def _retrying(self, what: str, call: Callable[[], T], retry_seconds: float | None) -> T:
        budget = self.retry_seconds if retry_seconds is None else retry_seconds
        deadline = time.monotonic() + budget
        backoff = self.new_backoff()
        while True:
            try:
                return call()
            except (TransportError, RateLimited, ServerError) as exc:
                delay = backoff.next_delay()
                if isinstance(exc, ApiError) and exc.retry_after_seconds is not None:
                    delay = max(delay, exc.retry_after_seconds)
                if time.monotonic() + delay > deadline:
                    raise
                _log.warning("%s failed (%s); retrying in %.1fs", what, exc, delay)
                time.sleep(delay)

    # -- worker calls ---------------------------------------------------------------------

    def claim(
        self,
        *,
        runner_id: str,
        job_types: Sequence[str],
        max_jobs: int = 1,
        wait_seconds: int = 0,
        lease_seconds: int | None = None,
        claim_id: str | None = None,
    ) -> list[Lease]:
        """``POST /claims``: lease up to ``max_jobs`` ready jobs, long-polling if none.

        Single attempt: the caller retries. Repeating a claim with the same ``claim_id``
        (after a ``TransportError`` or 5xx) returns the same leases, never new ones, so a
        lost answer does not strand leases.

        Args:
            runner_id: stable name of this worker process.
            job_types: job types this worker can run (non-empty).
            max_jobs: 1..100 leases at most.
            wait_seconds: 0..30 seconds the server may hold the request while nothing is
                ready (the HTTP read timeout is ``timeout + wait_seconds``).
            lease_seconds: requested lease length in seconds; ``None`` = server default.
            claim_id: idempotency id of this claim (a fresh uuid per new claim).

        Returns:
            The leases, possibly an empty list.
        """
        body = {
            "runner_id": runner_id,
            "job_types": list(job_types),
            "max_jobs": max_jobs,
            "wait_seconds": wait_seconds,
            "lease_seconds": lease_seconds,
            "claim_id": claim_id,
        }
        response = self._request(
            "POST", "/claims", body=body, timeout=self.timeout + max(0, wait_seconds)
        )
        leases = self._json(response, "claim").get("leases")
        if not isinstance(leases, list):
            raise ProtocolError("claim: 'leases' is not a list")
        return [_parse_lease(item) for item in leases]

    def heartbeat(
        self,
        lease_id: str,
        *,
        progress: Progress | None = None,
        extend_seconds: int | None = None,
    ) -> HeartbeatResult:
        """``POST /leases/{lease_id}/heartbeat``: extend the lease, report progress.

        Args:
            lease_id: the lease to extend.
            progress: ``{"done", "total", "message"}`` counters, or ``None``; the message
                is cut to 2,000 characters.
            extend_seconds: new expiry is now + this many seconds; ``None`` = server default.

        Returns:
            ``{"lease_expires_at", "lease_seconds", "cancel_requested"}``.

        Raises:
            LeaseLost: the lease is gone; stop the work and do not ack.
        """
        if progress is not None and progress.get("message") is not None:
            message = _truncate_chars(str(progress["message"]), MAX_PROGRESS_MESSAGE_CHARS)
            progress = Progress(done=progress["done"], total=progress["total"], message=message)
        body = {"progress": progress, "extend_seconds": extend_seconds}
        data = self._json(
            self._request("POST", f"/leases/{lease_id}/heartbeat", body=body), "heartbeat"
        )
        _require(data, "lease_seconds", int, "heartbeat")
        data["cancel_requested"] = bool(data.get("cancel_requested", False))
        return cast(HeartbeatResult, data)

    def ack(
        self,
        lease_id: str,
        *,
        result: JSONObject | None = None,
        artifacts: Iterable[Artifact] = (),
        retry_seconds: float | None = None,
    ) -> JSONObject:
        """``POST /leases/{lease_id}/ack``: mark the job succeeded.

        Retried on no answer/429/5xx for ``retry_seconds`` (a repeated ack is 200).

        Args:
            lease_id: the lease being completed.
            result: JSON object stored as the job's result, or ``None``.
            artifacts: ``{"name", "uri", "sha256", "size_bytes", "media_type"}`` items.
            retry_seconds: retry budget in seconds; ``None`` = the client's default.

        Returns:
            ``{"job_id", "status": "succeeded"}``.

        Raises:
            LeaseLost: the lease is no longer current; the result was not recorded.
        """
        body = {"result": result, "artifacts": list(artifacts)}

        def call() -> JSONObject:
            return self._json(self._request("POST", f"/leases/{lease_id}/ack", body=body), "ack")

        return self._retrying(f"ack {lease_id}", call, retry_seconds)

    def ack_many(
        self,
        acks: Iterable[JSONObject],
        *,
        retry_seconds: float | None = None,
    ) -> list[JSONObject]:
        """``POST /acks``: ack up to 100 leases in one request (one statement on the server).

        Retried on no answer/429/5xx for ``retry_seconds`` (a repeated ack is answered again).

        Args:
            acks: ``{"lease_id", "result"?, "artifacts"?}`` items, distinct leases.
            retry_seconds: retry budget in seconds; ``None`` = the client's default.

        Returns:
            One ``{"lease_id", "status", "job_id", "replayed"}`` per ack, in order; ``status``
            is ``succeeded``, ``lease_lost`` (do not count the work as done) or ``not_found``.
        """
        body = {"acks": list(acks)}

        def call() -> list[JSONObject]:
            data = self._json(self._request("POST", "/acks", body=body), "ack_many")
            return cast(list[JSONObject], data["results"])

        return self._retrying("ack_many", call, retry_seconds)

    def fail(
        self,
        lease_id: str,
        *,
        code: str,
        message: str,
        retryable: bool = True,
        retry_after_seconds: int | None = None,
        retry_seconds: float | None = None,
    ) -> FailResult:
        """``POST /leases/{lease_id}/fail``: end this attempt with an error.

        Retried on no answer/429/5xx for ``retry_seconds``.

        Args:
            lease_id: the lease being failed.
            code: short error code (e.g. ``"ValueError"``, ``"canceled"``).
            message: human-readable message (cut to 4,000 characters, the server's limit).
            retryable: ``False`` dead-letters the job (``canceled`` for code ``canceled``
                after a cancel request); ``True`` schedules a retry if attempts are left.
            retry_after_seconds: minimum delay before the retry in seconds, or ``None``.
            retry_seconds: retry budget of this call in seconds; ``None`` = client default.

        Returns:
            ``{"job_status": "scheduled"|"dead_lettered"|"canceled", "next_attempt_at"}``.

        Raises:
            LeaseLost: the lease is no longer current.
        """
        body = {
            "error": {"code": code, "message": _truncate_chars(message, MAX_ERROR_MESSAGE_CHARS)},
            "retryable": retryable,
            "retry_after_seconds": retry_after_seconds,
        }

        def call() -> FailResult:
            data = self._json(self._request("POST", f"/leases/{lease_id}/fail", body=body), "fail")
            return cast(FailResult, data)

        return self._retrying(f"fail {lease_id}", call, retry_seconds)

    def release(
        self, lease_id: str, *, reason: str | None = None, retry_seconds: float | None = None
    ) -> JSONObject:
        """``POST /leases/{lease_id}/release``: give the job back without using an attempt.

        Retried on no answer/429/5xx for ``retry_seconds``.

        Returns:
            ``{"job_status": "ready"}``.

        Raises:
            LeaseLost: the lease is no longer current.
        """
        body = {"reason": None if reason is None else _truncate_chars(reason, MAX_REASON_CHARS)}

        def call() -> JSONObject:
            return self._json(
                self._request("POST", f"/leases/{lease_id}/release", body=body), "release"
            )

        return self._retrying(f"release {lease_id}", call, retry_seconds)

    def logs(self, lease_id: str, lines: Sequence[LogLine]) -> int:
        """``POST /leases/{lease_id}/logs`` in batches of at most 500 lines.

        Messages longer than 8 KiB (UTF-8) are truncated; in every free-text field the SDK
        replaces NUL and lone surrogates, which the server refuses, with U+FFFD. Single attempt per batch: on an
        error the batches already sent stay sent and the exception propagates.

        Returns:
            The total of ``accepted`` counts reported by the server.

        Raises:
            LeaseLost: the lease is no longer current.
        """
        accepted = 0
        for start in range(0, len(lines), MAX_LOG_LINES_PER_CALL):
            batch = [
                {
                    "ts": line["ts"],
                    "level": line["level"],
                    "message": _truncate_utf8(line["message"], MAX_LOG_MESSAGE_BYTES),
                }
                for line in lines[start : start + MAX_LOG_LINES_PER_CALL]
            ]
            data = self._json(
                self._request("POST", f"/leases/{lease_id}/logs", body={"lines": batch}), "logs"
            )
            count = data.get("accepted", len(batch))
            accepted += count if isinstance(count, int) else len(batch)
        return accepted

    def runner_config(self) -> RunnerConfig:
        """``GET /runner-config``: the server's lease length, heartbeat interval, limits and
        backoff curve (all in seconds)."""
        data = self._json(self._request("GET", "/runner-config"), "runner-config")
        for key in ("lease_seconds", "heartbeat_interval_seconds", "max_wait_seconds", "max_jobs"):
            _require(data, key, int, "runner-config")
        backoff = data.get("backoff")
        if not isinstance(backoff, dict) or not isinstance(
            backoff.get("base_seconds"), int | float
        ):
            raise ProtocolError("runner-config: 'backoff' missing or malformed")
        return cast(RunnerConfig, data)

    # -- producer / operator calls --------------------------------------------------------

    def enqueue(self, job_type: str, project: str, payload: JSONObject, **opts: Any) -> Enqueued:
        """``POST /jobs``: create a job (or replay the one with the same idempotency key).

        Args:
            job_type: e.g. ``"concelier.advisory.ingest"``.
            project: project the job belongs to (the tenant comes from the token).
            payload: JSON object handed to the worker.
            **opts: any of ``source``, ``priority``, ``idempotency_key``, ``run_id``,
                ``depends_on`` (list of job ids), ``not_before`` (RFC 3339 string or aware
                ``datetime``), ``max_attempts``, ``correlation_id``.

        Returns:
            ``Enqueued(job, replayed)``.

        Raises:
            TypeError: an unknown option, or a naive ``not_before`` datetime.
            Conflict: the idempotency key was used before with another body.
        """
        unknown = set(opts) - ENQUEUE_OPTIONS
        if unknown:
            raise TypeError(f"enqueue: unknown option(s) {sorted(unknown)}")
        body: dict[str, Any] = {"job_type": job_type, "project": project, "payload": payload}
        for key, value in opts.items():
            if value is None:
                continue
            if isinstance(value, datetime):
                if value.tzinfo is None:
                    raise TypeError(f"enqueue: {key} must be timezone-aware")
                value = value.astimezone(UTC).isoformat().replace("+00:00", "Z")
            body[key] = value
        response = self._request("POST", "/jobs", body=body)
        replayed = response.headers.get("Idempotent-Replayed", "").lower() == "true"
        return Enqueued(job=self._json(response, "enqueue"), replayed=replayed)

    def get_job(self, job_id: int) -> JSONObject:
        """``GET /jobs/{job_id}``: ``{"job_id", "status", "attempt", "max_attempts",
        "lease", "result", "artifacts", "last_error", ...}``.

        Raises:
            NotFound: no such job for this tenant.
        """
        return self._json(self._request("GET", f"/jobs/{int(job_id)}"), "get_job")


def dumps_compact(obj: Any) -> str:
    """JSON text without spaces (used to check a handler result is JSON-able)."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)
