"""``JobContext``: what a handler sees of its lease (payload, progress, logs, artifacts,
cancellation)."""

from __future__ import annotations

import hashlib
import logging
import re
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from .errors import JobCancelled, LeaseLost
from .types import Artifact, JSONObject, Lease, LogLevel, LogLine, Progress, RetryHint

__all__ = ["JobContext", "CANCEL_REQUESTED", "LEASE_LOST", "RELEASED"]

#: ``cancel_reason`` values.
CANCEL_REQUESTED: Final = "cancel_requested"  # operator asked; the SDK fails with "canceled"
LEASE_LOST: Final = "lease_lost"  # 409 lease_lost, or the lease expired locally
RELEASED: Final = "released"  # the worker gave the lease back while shutting down
_LOST_REASONS = frozenset({LEASE_LOST, RELEASED})

_LEVELS: dict[str, LogLevel] = {
    "debug": "debug",
    "info": "info",
    "warning": "warning",
    "warn": "warning",
    "error": "error",
    "critical": "error",
    "exception": "error",
}
_PY_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

# Flush the log buffer when it holds this many lines (the server takes 500 per call).
LOG_BATCH_LINES = 100
# Keep at most this many unsent lines (e.g. while the server is unreachable); older lines
# are dropped and their number reported in a warning line, so memory stays bounded.
LOG_BUFFER_MAX_LINES = 10_000


def _now_rfc3339() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JobContext:
    """The handler's view of one lease. Created by ``Worker``; thread-safe.

    Attributes (read-only, from the lease):
        job_id (int), lease_id (str), fencing_token (int), job_type (str), tenant (str),
        project (str), source (str | None), payload (dict), attempt (int, 1-based),
        max_attempts (int), correlation_id (str | None), idempotency_key (str | None),
        lease_seconds (int), heartbeat_interval_seconds (int), retry_hint (dict),
        runner_id (str), lease (the raw lease dict).
        cancelled: ``threading.Event`` set when the job must stop: an operator requested
            cancellation, the lease was lost, or the worker released it while shutting
            down. ``cancel_reason`` says which.
    """

    def __init__(
        self,
        lease: Lease,
        *,
        runner_id: str,
        logger: logging.Logger | None = None,
    ) -> None:
        self.lease = lease
        self.runner_id = runner_id
        self.job_id: int = lease["job_id"]
        self.lease_id: str = lease["lease_id"]
        self.fencing_token: int = lease["fencing_token"]
        self.job_type: str = lease["job_type"]
        self.tenant: str = lease["tenant"]
        self.project: str = lease["project"]
        self.source: str | None = lease["source"]
        self.payload: JSONObject = lease["payload"]
        self.attempt: int = lease["attempt"]
        self.max_attempts: int = lease["max_attempts"]
        self.correlation_id: str | None = lease["correlation_id"]
        self.idempotency_key: str | None = lease["idempotency_key"]
        self.lease_seconds: int = lease["lease_seconds"]
        self.heartbeat_interval_seconds: int = lease["heartbeat_interval_seconds"]
        self.retry_hint: RetryHint = lease["retry_hint"]
        self.cancelled = threading.Event()
        self._logger = logger or logging.getLogger("stellaops_worker.job")
        self._lock = threading.Lock()
        self._cancel_reason: str | None = None
        self._cancel_detail = ""
        self._progress: Progress | None = None
        self._logs: list[LogLine] = []
        self._first_log_at: float | None = None
        self._dropped_logs = 0
        self._artifacts: list[Artifact] = []
        self._last_send = time.monotonic()
        self._heartbeat_now = False
        # Wakes the lease's heartbeat thread (progress overdue, log batch full, stop).
        self._wake = threading.Event()

    def __repr__(self) -> str:
        return (
            f"JobContext(job_id={self.job_id}, job_type={self.job_type!r}, "
            f"attempt={self.attempt}/{self.max_attempts}, lease_id={self.lease_id!r})"
        )

    # -- for handlers ---------------------------------------------------------------------

    @property
    def cancel_reason(self) -> str | None:
        """``None`` while the job may run; else ``"cancel_requested"``, ``"lease_lost"`` or
        ``"released"``."""
        return self._cancel_reason

    def check(self) -> None:
        """Raise if the job must stop; call it between units of work.

        Raises:
            JobCancelled: an operator requested cancellation (the SDK will fail the lease
                with code ``canceled``).
            LeaseLost: the lease is gone or was released; the SDK will not ack.
        """
        if not self.cancelled.is_set():
            return
        reason = self._cancel_reason
        if reason == CANCEL_REQUESTED:
            raise JobCancelled(f"job {self.job_id}: cancellation requested")
        raise LeaseLost(
            409, reason or LEASE_LOST, f"job {self.job_id}: {self._cancel_detail or reason}"
        )

    def progress(self, done: int, total: int | None = None, message: str | None = None) -> None:
        """Record progress: ``done`` of ``total`` units (``total`` ``None`` if unknown).

        Sent with the next heartbeat; sent at once when the last heartbeat left more than
        ``heartbeat_interval_seconds`` ago. Never blocks on the network.

        Raises:
            ValueError: ``done`` < 0, or ``total`` < 0.
        """
        if done < 0 or (total is not None and total < 0):
            raise ValueError("progress counters must be >= 0")
        with self._lock:
            self._progress = {
                "done": int(done),
                "total": None if total is None else int(total),
                "message": message,
            }
            overdue = time.monotonic() - self._last_send > self.heartbeat_interval_seconds
            if overdue:
                self._heartbeat_now = True
        if overdue:
            self._wake.set()

    def log(self, level: str, message: str) -> None:
        """Buffer one log line for the job (flushed in batches to ``/logs``, and before the
        ack/fail). ``level``: ``debug``, ``info``, ``warning`` (``warn``) or ``error``
        (``critical``). Also written to the worker's Python logger. Never blocks on the
        network; at most 10,000 unsent lines are kept (older ones are dropped and counted).

        Raises:
            ValueError: unknown level.
        """
        norm = _LEVELS.get(level.lower())
        if norm is None:
            raise ValueError(f"unknown log level {level!r}")
        self._logger.log(_PY_LEVELS[norm], "job %s: %s", self.job_id, message)
        line: LogLine = {"ts": _now_rfc3339(), "level": norm, "message": str(message)}
        with self._lock:
            self._logs.append(line)
            if self._first_log_at is None:
                self._first_log_at = time.monotonic()
            if len(self._logs) > LOG_BUFFER_MAX_LINES:
                excess = len(self._logs) - LOG_BUFFER_MAX_LINES
                del self._logs[:excess]
                self._dropped_logs += excess
            full = len(self._logs) >= LOG_BATCH_LINES
        if full:
            self._wake.set()

    def add_artifact(
        self, name: str, uri: str, sha256: str, size_bytes: int, media_type: str
    ) -> Artifact:
        """Attach an artifact reference to the ack.

        Args:
            name: artifact name, e.g. ``"advisories-0.ndjson"``.
            uri: where it lives (``file://``, ``s3://``, ``https://``...).
            sha256: 64 hex digits (lower-cased here).
            size_bytes: size in bytes (>= 0).
            media_type: e.g. ``"application/x-ndjson"``.

        Returns:
            The artifact dict that will be sent.

        Raises:
            ValueError: empty name/uri/media_type, bad sha256 or negative size.
        """
        digest = sha256.lower()
        if not name or not uri or not media_type:
            raise ValueError("artifact name, uri and media_type are required")
        if not _SHA256.match(digest):
            raise ValueError("artifact sha256 must be 64 hex digits")
        if isinstance(size_bytes, bool) or not isinstance(size_bytes, int) or size_bytes < 0:
            raise ValueError("artifact size_bytes must be an int >= 0")
        artifact: Artifact = {
            "name": name,
            "uri": uri,
            "sha256": digest,
            "size_bytes": size_bytes,
            "media_type": media_type,
        }
        with self._lock:
            self._artifacts.append(artifact)
        return artifact

    def write_artifact(self, name: str, path: str | Path, media_type: str) -> Artifact:
        """Attach an existing local file as an artifact: hashes it (sha256), measures its
        size in bytes and builds an absolute ``file://`` URI.

        Returns:
            The artifact dict that will be sent.

        Raises:
            OSError: the file cannot be read.
            ValueError: as ``add_artifact``.
        """
        file = Path(path).resolve()
        digest = hashlib.sha256()
        size = 0
        with file.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
        return self.add_artifact(name, file.as_uri(), digest.hexdigest(), size, media_type)

    @property
    def artifacts(self) -> list[Artifact]:
        """A copy of the artifacts attached so far."""
        with self._lock:
            return list(self._artifacts)

    # -- for the worker -------------------------------------------------------------------

    def _signal(self, reason: str, detail: str = "") -> None:
        """Set ``cancelled``. A lost/released lease overrides a cancel request (the SDK can
        then no longer fail the lease); the first lost reason is kept."""
        with self._lock:
            current = self._cancel_reason
            if current is None or (current == CANCEL_REQUESTED and reason in _LOST_REASONS):
                self._cancel_reason = reason
                self._cancel_detail = detail
        self.cancelled.set()
        self._wake.set()

    @property
    def _lost(self) -> bool:
        return self._cancel_reason in _LOST_REASONS

    def _progress_snapshot(self) -> Progress | None:
        with self._lock:
            self._heartbeat_now = False
            return None if self._progress is None else Progress(**self._progress)

    def _mark_sent(self) -> None:
        with self._lock:
            self._last_send = time.monotonic()

    def _heartbeat_requested(self) -> bool:
        with self._lock:
            return self._heartbeat_now

    def _log_due_at(self, flush_seconds: float) -> float | None:
        """Monotonic time at which the buffered logs should be sent, or ``None``."""
        with self._lock:
            if not self._logs:
                return None
            if len(self._logs) >= LOG_BATCH_LINES:
                return 0.0
            assert self._first_log_at is not None
            return self._first_log_at + flush_seconds

    def _take_logs(self) -> list[LogLine]:
        with self._lock:
            lines, self._logs = self._logs, []
            self._first_log_at = None
            dropped, self._dropped_logs = self._dropped_logs, 0
        if dropped:
            lines.insert(
                0,
                {
                    "ts": _now_rfc3339(),
                    "level": "warning",
                    "message": f"{dropped} log lines were dropped (buffer full)",
                },
            )
        return lines

    def _requeue_logs(self, lines: list[LogLine]) -> None:
        """Put unsent lines back in front of the buffer (after a failed flush)."""
        with self._lock:
            self._logs[:0] = lines
            if self._first_log_at is None:
                self._first_log_at = time.monotonic()
            if len(self._logs) > LOG_BUFFER_MAX_LINES:
                excess = len(self._logs) - LOG_BUFFER_MAX_LINES
                del self._logs[:excess]
                self._dropped_logs += excess
