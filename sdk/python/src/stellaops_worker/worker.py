"""``Worker``: the claim loop, per-lease heartbeats, ack/fail, graceful shutdown."""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import socket
import threading
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Final

from .backoff import Backoff
from .client import Client, TokenSource, dumps_compact
from .context import CANCEL_REQUESTED, LEASE_LOST, RELEASED, JobContext
from .errors import (
    ApiError,
    JobCancelled,
    LeaseLost,
    NonRetryableError,
    NotFound,
    RateLimited,
    RetryLater,
    ServerError,
    TransportError,
)
from .types import JSONObject, Lease, RunnerConfig

__all__ = ["Worker", "WorkerEvent", "Handler", "EventHook", "EVENT_KINDS"]

Handler = Callable[[JobContext], JSONObject | None]
"""A job handler: takes the ``JobContext``, returns a JSON object (or ``None``) to ack."""

#: Kinds of ``WorkerEvent``.
EVENT_KINDS: Final = (
    "claimed",  # a lease was received and its handler started
    "acked",  # the job was acked (succeeded)
    "failed",  # the attempt was failed (detail: code, retryable, job_status)
    "canceled",  # a cancel request was honoured (fail with code "canceled")
    "lost",  # the lease was lost; the SDK did not ack
    "released",  # the worker gave the lease back (shutdown)
    "cancel_requested",  # a heartbeat answered cancel_requested: true
    "unreachable",  # the orchestrator stopped answering (once per outage)
    "error",  # the SDK could not report an outcome, or a fatal error stopped the worker
)

_RETRYABLE = (TransportError, ServerError, RateLimited)
# How long the final log flush and a shutdown release keep retrying, in seconds: short,
# because the lease expires on the server anyway if we cannot reach it.
_FINAL_FLUSH_RETRY_SECONDS = 10.0
_RELEASE_RETRY_SECONDS = 5.0
# Log "server unreachable" at most this often while a claim keeps failing, in seconds.
_UNREACHABLE_LOG_EVERY_SECONDS = 30.0
# What the server accepts as ``error.code`` and ``retry_after_seconds`` (else 400, and the
# outcome would be lost): other characters become "_", delays are whole seconds <= 1 day.
_CODE_CHAR = re.compile(r"[^A-Za-z0-9_.:-]")
_CODE_MAX_CHARS = 100
_RETRY_AFTER_MAX_SECONDS = 86_400
# Statuses of an ack the server refused because of the result itself (400 invalid, 413
# too large): the job is failed with code "invalid_result" instead (repeating cannot help).
_RESULT_REFUSED = (400, 413, 422)


# Floor of the server's backoff curve, in seconds. ``ORCH_RETRY_BASE_SECONDS=0`` is a valid
# server setting (runner-config then says base 0); the worker still pauses a little between
# failed or empty calls so that it never spins.
_MIN_BACKOFF_SECONDS = 0.1


def _backoff_curve(config: RunnerConfig) -> tuple[float, float]:
    """``(base, max)`` seconds of runner-config's backoff, floored at 0.1 s, max >= base."""
    backoff = config["backoff"]
    base = max(_MIN_BACKOFF_SECONDS, float(backoff.get("base_seconds") or 0))
    return base, max(base, float(backoff.get("max_seconds") or 0))


def _error_code(code: str) -> str:
    return _CODE_CHAR.sub("_", code)[:_CODE_MAX_CHARS] or "error"


def _retry_after(seconds: float | None) -> int | None:
    if seconds is None:
        return None
    return max(0, min(_RETRY_AFTER_MAX_SECONDS, math.ceil(seconds)))


@dataclass(frozen=True)
class WorkerEvent:
    """Passed to ``on_event``.

    Attributes:
        kind: one of ``EVENT_KINDS``.
        job_id: the job concerned, or ``None`` for worker-level events.
        lease_id: the lease concerned, or ``None``.
        detail: extra fields, e.g. ``{"code": "ValueError", "retryable": True,
            "job_status": "scheduled"}`` for ``failed``.
    """

    kind: str
    job_id: int | None = None
    lease_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


EventHook = Callable[[WorkerEvent], None]


def _default_runner_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    """Claims leases of ``job_types`` and runs ``handler`` on each, ``concurrency`` at once.

    Args:
        base_url: orchestrator origin or API root (see ``Client``).
        token: bearer JWT or a callable returning it (see ``token_from_file``).
        job_types: job types to claim (non-empty).
        handler: ``handler(ctx) -> dict | None``. Return -> ack with ``{"result": ...,
            "artifacts": ctx.artifacts}``. Raise ``NonRetryableError`` -> fail
            ``retryable=False``; ``RetryLater`` -> fail retryable with
            ``retry_after_seconds``; any other exception -> fail retryable with code
            ``exc.code`` (if a str) else the class name. After a cancel request the lease
            is failed with code ``canceled`` whatever the handler did; after a lost lease
            nothing is sent.
        runner_id: stable worker name; default ``<host>-<pid>-<random>``.
        concurrency: handlers running at once (threads), >= 1.
        max_jobs: cap of leases per claim (1..100); a claim asks for
            ``min(free slots, max_jobs, runner-config.max_jobs)``.
        wait_seconds: long-poll length of a claim in seconds (0..30; capped by
            ``runner-config.max_wait_seconds``).
        lease_seconds: lease length to ask for (seconds) and to extend by on each heartbeat;
            ``None`` uses the server's default.
        logger: Python logger; default ``logging.getLogger("stellaops_worker")``.
        install_signal_handlers: in ``run()`` on the main thread, SIGTERM/SIGINT stop the
            worker gracefully and a second signal stops it at once.
        shutdown_grace_seconds: how long a graceful stop lets running handlers finish
            before releasing their leases, in seconds.
        on_event: called with a ``WorkerEvent`` on claimed/acked/failed/canceled/lost/
            released/cancel_requested/error, from worker threads; exceptions are logged.
        client: a ready ``Client`` (e.g. with its own transport); ``base_url`` and
            ``token`` are then ignored and the client is not closed by the worker.
        log_flush_seconds: a buffered job log line is sent within this many seconds.

    Heartbeats run on one thread per lease, every ``heartbeat_interval_seconds`` of that
    lease (handed out by the server, never defaulted here). Retries while the server is
    unreachable use the server's backoff curve from ``GET /runner-config`` (see
    ``stellaops_worker.backoff``).

    A ``Worker`` runs once: ``run()`` or ``run_until()``, then it is spent.

    Raises:
        ValueError: an argument out of range.
    """

    def __init__(
        self,
        base_url: str,
        token: TokenSource,
        job_types: Sequence[str],
        handler: Handler,
        *,
        runner_id: str | None = None,
        concurrency: int = 1,
        max_jobs: int | None = None,
        wait_seconds: int = 20,
        lease_seconds: int | None = None,
        logger: logging.Logger | None = None,
        install_signal_handlers: bool = True,
        shutdown_grace_seconds: float = 30.0,
        on_event: EventHook | None = None,
        client: Client | None = None,
        log_flush_seconds: float = 2.0,
    ) -> None:
        if isinstance(job_types, str) or not job_types:
            raise ValueError("job_types must be a non-empty list of strings")
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if max_jobs is not None and not 1 <= max_jobs <= 100:
            raise ValueError("max_jobs must be in 1..100")
        if not 0 <= wait_seconds <= 30:
            raise ValueError("wait_seconds must be in 0..30")
        if lease_seconds is not None and lease_seconds <= 0:
            raise ValueError("lease_seconds must be > 0")
        if shutdown_grace_seconds < 0 or log_flush_seconds <= 0:
            raise ValueError("shutdown_grace_seconds must be >= 0, log_flush_seconds > 0")
        self.job_types = list(job_types)
        self.handler = handler
        self.runner_id = runner_id or _default_runner_id()
        self.concurrency = concurrency
        self.max_jobs = max_jobs
        self.wait_seconds = wait_seconds
        self.lease_seconds = lease_seconds
        self.log = logger or logging.getLogger("stellaops_worker")
        self.install_signal_handlers = install_signal_handlers
        self.shutdown_grace_seconds = float(shutdown_grace_seconds)
        self.log_flush_seconds = float(log_flush_seconds)
        self.on_event = on_event
        self._owns_client = client is None
        self.client = client if client is not None else Client(base_url, token)
        self.runner_config: RunnerConfig | None = None

        self._stop = threading.Event()
        self._immediate = threading.Event()
        self._stop_at: float | None = None
        # RLock: stop() may run in a signal handler on a thread that already holds it.
        self._cond = threading.Condition(threading.RLock())
        self._inflight: dict[str, _LeaseRun] = {}
        self._stats: Counter[str] = Counter()
        self._stats_lock = threading.Lock()
        self._fatal: BaseException | None = None
        self._started = False
        self._finished = threading.Event()
        self._last_unreachable_log: float | None = None

    # -- public control -------------------------------------------------------------------

    @property
    def stats(self) -> dict[str, int]:
        """Counts of events so far, by kind (``claimed``, ``acked``, ``failed``, ...)."""
        with self._stats_lock:
            return dict(self._stats)

    @property
    def in_flight(self) -> int:
        """Number of leases whose handler is running."""
        with self._cond:
            return len(self._inflight)

    @property
    def stopping(self) -> bool:
        """True once ``stop()`` was called (or a signal / fatal error stopped the worker)."""
        return self._stop.is_set()

    def stop(self, graceful: bool = True) -> None:
        """Ask the worker to stop; returns at once (``run()`` returns when it is done).

        Graceful: stop claiming, let running handlers finish for up to
        ``shutdown_grace_seconds``, then release the leases still running (the server makes
        their jobs ready again without using an attempt). Not graceful (or a second call
        / signal): release the running leases at once. Safe from any thread and from a
        signal handler.
        """
        if not self._stop.is_set():
            self._stop_at = time.monotonic()
            self._stop.set()
        if not graceful:
            self._immediate.set()
        with self._cond:
            self._cond.notify_all()

    def wait_stopped(self, timeout: float | None = None) -> bool:
        """Block until ``run()`` has returned; ``True`` if it did within ``timeout`` seconds."""
        return self._finished.wait(timeout)

    def run(self) -> None:
        """Run until ``stop()``, a signal or a fatal error; blocks the calling thread.

        Raises:
            AuthError, ValidationError, NotFound, ProtocolError: a fatal error of the claim
                loop (wrong token, scope, job type or server), re-raised after shutdown.
            RuntimeError: the worker already ran.
        """
        self._run(predicate=None, timeout=None, signals=self.install_signal_handlers)

    def run_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Run until ``predicate()`` is true or ``timeout`` seconds pass, then stop gracefully.

        Meant for tests and scripts: ``w.run_until(lambda: w.stats.get("acked", 0) >= 3, 30)``.
        Installs no signal handlers. ``predicate`` is polled every 50 ms on this thread.

        Returns:
            Whether ``predicate()`` was true when the worker stopped.

        Raises:
            As ``run()``.
        """
        return self._run(predicate=predicate, timeout=timeout, signals=False)

    # -- supervisor -----------------------------------------------------------------------

    def _run(
        self, *, predicate: Callable[[], bool] | None, timeout: float | None, signals: bool
    ) -> bool:
        with self._cond:
            if self._started:
                raise RuntimeError("a Worker runs once; create a new one")
            self._started = True
        previous = self._install_signals() if signals else None
        satisfied = False
        claimer = threading.Thread(
            target=self._claim_loop, name=f"stellaops-claim-{self.runner_id}", daemon=True
        )
        self.log.info(
            "worker %s starting: job_types=%s concurrency=%d",
            self.runner_id,
            self.job_types,
            self.concurrency,
        )
        try:
            claimer.start()
            deadline = None if timeout is None else time.monotonic() + timeout
            while not self._stop.is_set():
                if predicate is not None and predicate():
                    satisfied = True
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                self._stop.wait(0.05 if predicate is not None else 0.5)
        except KeyboardInterrupt:
            self.stop(graceful=False)
            raise
        finally:
            self.stop(graceful=not self._immediate.is_set())
            try:
                self._shutdown(claimer)
            finally:
                if previous is not None:
                    for signum, old in previous.items():
                        signal.signal(signum, old)
                # Leave the pool open if a claim is still in flight (closing it under a
                # live request turns into a confusing error on the claim thread).
                if self._owns_client and not claimer.is_alive():
                    self.client.close()
                self._finished.set()
                self.log.info("worker %s stopped: %s", self.runner_id, self.stats)
        if self._fatal is not None:
            raise self._fatal
        if predicate is not None and not satisfied:
            satisfied = bool(predicate())
        return satisfied

    def _install_signals(self) -> dict[int, Any] | None:
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_signal(signum: int, frame: FrameType | None) -> None:
            # Only set flags here: the supervisor loop does the work (and the logging).
            self.stop(graceful=not self._stop.is_set())

        previous: dict[int, Any] = {}
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, on_signal)
        return previous

    def _shutdown(self, claimer: threading.Thread) -> None:
        stop_at = self._stop_at if self._stop_at is not None else time.monotonic()
        grace_end = stop_at + self.shutdown_grace_seconds
        with self._cond:
            if self._inflight:
                self.log.info(
                    "stopping: waiting up to %.0fs for %d running job(s)",
                    max(0.0, grace_end - time.monotonic()),
                    len(self._inflight),
                )
            while self._inflight and not self._immediate.is_set():
                remaining = grace_end - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(min(remaining, 0.2))
            runs = list(self._inflight.values())
        if runs:
            why = "immediate stop" if self._immediate.is_set() else "shutdown grace period over"
            self.log.warning("releasing %d running lease(s): %s", len(runs), why)
            for run in runs:
                run.release(f"worker {self.runner_id} shutting down ({why})")
        # Runs that were already sending their ack/fail were not released: let that call
        # finish (bounded) so the process does not exit in the middle of it.
        finish_end = time.monotonic() + self.client.timeout
        with self._cond:
            while self._inflight and time.monotonic() < finish_end:
                self._cond.wait(0.2)
        # A long-poll claim may still be in flight; the claim thread releases whatever it
        # returns. Waiting for it (bounded) keeps those leases from waiting out their expiry.
        join_for = 1.0 if self._immediate.is_set() else self.client.timeout + self.wait_seconds
        claimer.join(join_for)
        if claimer.is_alive():
            self.log.warning(
                "a claim request is still in flight; leases it returns expire on the server"
            )

    # -- claim loop -----------------------------------------------------------------------

    def _claim_loop(self) -> None:
        try:
            config = self._load_runner_config()
            if config is None:
                return
            backoff = Backoff(*_backoff_curve(config))
            self.client.configure_backoff(backoff.base_seconds, backoff.max_seconds)
            server_max_jobs = max(1, config["max_jobs"])
            wait = min(self.wait_seconds, max(0, config["max_wait_seconds"]))
            # An empty answer that came back before the long-poll ran out (wait 0, or a
            # server that does not hold requests) is followed by a backoff pause on the
            # server's curve, so an idle worker never spins on the claim endpoint.
            idle = Backoff(backoff.base_seconds, backoff.max_seconds)
            while not self._stop.is_set():
                free = self._wait_for_free_slot()
                if free == 0:
                    break
                count = min(free, self.max_jobs or free, server_max_jobs)
                started = time.monotonic()
                leases = self._claim(count, wait, backoff)
                if leases:
                    idle.reset()
                    self._dispatch(leases)
                elif wait == 0 or time.monotonic() - started < wait / 2:
                    self._stop.wait(idle.next_delay())
        except BaseException as exc:  # noqa: BLE001 - any escape is fatal for the worker
            self._fatal = exc
            self.log.error("worker %s stopping on a fatal error: %s", self.runner_id, exc)
            self._emit("error", detail={"fatal": True, "error": repr(exc)})
            self.stop(graceful=True)

    def _load_runner_config(self) -> RunnerConfig | None:
        backoff = Backoff.bootstrap()
        first_failure: float | None = None
        while not self._stop.is_set():
            try:
                config = self.client.runner_config()
            except NotFound:
                # An older server without /runner-config: leases still carry their own
                # lease length and heartbeat interval; only the retry curve falls back.
                self.log.warning("GET /runner-config not found; using the bootstrap backoff")
                return {
                    "lease_seconds": 0,
                    "max_lease_seconds": 0,
                    "heartbeat_interval_seconds": 0,
                    "max_wait_seconds": 30,
                    "max_jobs": 100,
                    "backoff": {
                        "base_seconds": backoff.base_seconds,
                        "max_seconds": backoff.max_seconds,
                        "jitter": "full",
                    },
                }
            except _RETRYABLE as exc:
                first_failure = self._note_unreachable(first_failure, exc, backoff)
                continue
            self.runner_config = config
            return config
        return None

    def _note_unreachable(
        self, first_failure: float | None, exc: Exception, backoff: Backoff
    ) -> float:
        """Log (rate-limited) and sleep one backoff delay; returns the outage start."""
        now = time.monotonic()
        delay = backoff.next_delay()
        if isinstance(exc, ApiError) and exc.retry_after_seconds is not None:
            delay = max(delay, exc.retry_after_seconds)
        last = self._last_unreachable_log
        if first_failure is None or last is None or now - last >= _UNREACHABLE_LOG_EVERY_SECONDS:
            self._last_unreachable_log = now
            self.log.warning(
                "orchestrator unreachable (%s); retry %d in %.1fs", exc, backoff.attempt, delay
            )
        if first_failure is None:
            first_failure = now
            self._emit("unreachable", detail={"error": str(exc)})
        self._stop.wait(delay)
        return first_failure

    def _wait_for_free_slot(self) -> int:
        with self._cond:
            while not self._stop.is_set():
                free = self.concurrency - len(self._inflight)
                if free > 0:
                    return free
                self._cond.wait(0.5)
        return 0

    def _claim(self, count: int, wait: int, backoff: Backoff) -> list[Lease]:
        # One claim_id per logical claim: a retry after a lost answer repeats it, and the
        # server answers with the leases it already made instead of leasing more jobs.
        claim_id = str(uuid.uuid4())
        first_failure: float | None = None
        recovery_tried = False
        while True:
            stopping = self._stop.is_set()
            if stopping and first_failure is None:
                return []  # nothing outstanding under this claim_id: do not claim more
            try:
                leases = self.client.claim(
                    runner_id=self.runner_id,
                    job_types=self.job_types,
                    max_jobs=count,
                    wait_seconds=0 if stopping else wait,
                    lease_seconds=self.lease_seconds,
                    claim_id=claim_id,
                )
            except _RETRYABLE as exc:
                if stopping:
                    if recovery_tried or self._immediate.is_set():
                        self.log.warning(
                            "giving up claim %s while stopping; any leases it made expire "
                            "on the server",
                            claim_id,
                        )
                        return []
                    recovery_tried = True
                    continue
                first_failure = self._note_unreachable(first_failure, exc, backoff)
                continue
            if first_failure is not None:
                self.log.info(
                    "orchestrator reachable again after %.1fs", time.monotonic() - first_failure
                )
            backoff.reset()
            return leases

    def _dispatch(self, leases: list[Lease]) -> None:
        runs = [_LeaseRun(self, lease) for lease in leases]
        with self._cond:
            stopping = self._stop.is_set()
            if not stopping:
                for run in runs:
                    self._inflight[run.ctx.lease_id] = run
        for run in runs:
            self._emit("claimed", run.ctx, detail={"attempt": run.ctx.attempt})
            if stopping:
                run.release(f"worker {self.runner_id} shutting down (claimed while stopping)")
            else:
                run.start()

    # -- shared helpers -------------------------------------------------------------------

    def _forget(self, run: _LeaseRun) -> None:
        with self._cond:
            self._inflight.pop(run.ctx.lease_id, None)
            self._cond.notify_all()

    def _emit(
        self, kind: str, ctx: JobContext | None = None, *, detail: dict[str, Any] | None = None
    ) -> None:
        with self._stats_lock:
            self._stats[kind] += 1
        if self.on_event is None:
            return
        event = WorkerEvent(
            kind=kind,
            job_id=None if ctx is None else ctx.job_id,
            lease_id=None if ctx is None else ctx.lease_id,
            detail=detail or {},
        )
        try:
            self.on_event(event)
        except Exception:
            self.log.exception("on_event hook raised on %s", event)


class _LeaseRun:
    """One lease: its handler thread, its heartbeat/log thread, and its outcome."""

    def __init__(self, worker: Worker, lease: Lease) -> None:
        self.worker = worker
        self.client = worker.client
        self.ctx = JobContext(lease, runner_id=worker.runner_id, logger=worker.log)
        self._claimed_at = time.monotonic()
        self._state = "new"  # new -> running -> finishing | released -> done
        self._state_lock = threading.Lock()
        self._agent_stop = threading.Event()
        name = f"job-{self.ctx.job_id}"
        self._agent = threading.Thread(target=self._agent_loop, name=f"{name}-hb", daemon=True)
        # Daemon: a handler that ignores cancellation must not keep the process alive
        # after run() returned (its lease has been released by then).
        self._handler = threading.Thread(target=self._handle, name=name, daemon=True)

    def start(self) -> None:
        with self._state_lock:
            if self._state != "new":
                return
            self._state = "running"
        self._agent.start()
        self._handler.start()

    # -- handler thread -------------------------------------------------------------------

    def _handle(self) -> None:
        result: Any = None
        error: BaseException | None = None
        try:
            result = self.worker.handler(self.ctx)
        except BaseException as exc:  # noqa: BLE001 - every outcome is reported
            error = exc
        try:
            self._finish(result, error)
        except Exception:
            self.worker.log.exception("job %s: could not report its outcome", self.ctx.job_id)
            self.worker._emit("error", self.ctx, detail={"stage": "finish"})
        finally:
            self.worker._forget(self)

    def _finish(self, result: Any, error: BaseException | None) -> None:
        ctx, w = self.ctx, self.worker
        with self._state_lock:
            if self._state != "running":
                return  # released during shutdown: the release path reported it
            self._state = "finishing"
        self._stop_agent(join=True)
        if ctx._lost:
            self._lost(f"handler ended after the lease was {ctx.cancel_reason}")
            return
        outcome = self._decide(result, error)
        if (
            outcome[0] == "fail"
            and error is not None
            and not isinstance(error, NonRetryableError | RetryLater | JobCancelled)
        ):
            tb = "".join(traceback.format_exception(error)).rstrip()
            ctx.log("error", f"handler raised {type(error).__name__}: {error}\n{tb}")
        if not self._flush_logs(_FINAL_FLUSH_RETRY_SECONDS):
            return
        try:
            if outcome[0] == "ack":
                try:
                    answer = self.client.ack(
                        ctx.lease_id, result=outcome[1], artifacts=ctx.artifacts
                    )
                except ApiError as exc:
                    if isinstance(exc, LeaseLost) or exc.status not in _RESULT_REFUSED:
                        raise
                    w.log.error("job %s: result refused by the server: %s", ctx.job_id, exc)
                    outcome = ("fail", "invalid_result", f"ack refused: {exc}", False, None)
                else:
                    w._emit("acked", ctx, detail={"status": answer.get("status")})
                    return
            _, code, message, retryable, retry_after = outcome
            failed = self.client.fail(
                ctx.lease_id,
                code=code,
                message=message,
                retryable=retryable,
                retry_after_seconds=retry_after,
            )
            kind = "canceled" if code == "canceled" and not retryable else "failed"
            w._emit(
                kind,
                ctx,
                detail={
                    "code": code,
                    "retryable": retryable,
                    "job_status": failed.get("job_status"),
                    "next_attempt_at": failed.get("next_attempt_at"),
                },
            )
        except LeaseLost as exc:
            self._lost(str(exc))
        except ApiError as exc:
            w.log.error("job %s: outcome refused by the server: %s", ctx.job_id, exc)
            w._emit("error", ctx, detail={"stage": outcome[0], "error": str(exc)})
        except TransportError as exc:
            w.log.error("job %s: outcome not delivered, lease will expire: %s", ctx.job_id, exc)
            w._emit("error", ctx, detail={"stage": outcome[0], "error": str(exc)})

    def _decide(self, result: Any, error: BaseException | None) -> tuple[Any, ...]:
        """``("ack", result)`` or ``("fail", code, message, retryable, retry_after)``."""
        ctx = self.ctx
        if ctx.cancel_reason == CANCEL_REQUESTED or isinstance(error, JobCancelled):
            return ("fail", "canceled", "canceled at operator request", False, None)
        if error is None:
            if result is not None and not isinstance(result, dict):
                return (
                    "fail",
                    "invalid_result",
                    f"handler returned {type(result).__name__}, not a dict",
                    False,
                    None,
                )
            try:
                dumps_compact(result)
            except (TypeError, ValueError) as exc:
                return ("fail", "invalid_result", f"result is not JSON: {exc}", False, None)
            return ("ack", result)
        if isinstance(error, NonRetryableError):
            return ("fail", _error_code(error.code), error.message, False, None)
        if isinstance(error, RetryLater):
            delay = _retry_after(error.retry_after_seconds)
            return ("fail", _error_code(error.code), error.message, True, delay)
        code = getattr(error, "code", None)
        if not isinstance(code, str) or not code:
            code = type(error).__name__
        return ("fail", _error_code(code), str(error) or repr(error), True, None)

    def _lost(self, why: str) -> None:
        self.worker.log.warning("job %s: lease lost, not acking (%s)", self.ctx.job_id, why)
        self.worker._emit("lost", self.ctx, detail={"reason": why})

    # -- release (shutdown) ---------------------------------------------------------------

    def release(self, reason: str) -> None:
        """Give the lease back (shutdown); no-op if the handler already finished."""
        ctx, w = self.ctx, self.worker
        with self._state_lock:
            if self._state not in ("new", "running"):
                return
            was_running = self._state == "running"
            self._state = "released"
        ctx._signal(RELEASED, reason)
        self._stop_agent(join=False)
        try:
            if was_running:
                self._flush_logs(1.0)
            self.client.release(ctx.lease_id, reason=reason, retry_seconds=_RELEASE_RETRY_SECONDS)
            w._emit("released", ctx, detail={"reason": reason})
        except LeaseLost as exc:
            self._lost(str(exc))
        except (ApiError, TransportError) as exc:
            w.log.error("job %s: release failed, lease will expire: %s", ctx.job_id, exc)
            w._emit("error", ctx, detail={"stage": "release", "error": str(exc)})
        finally:
            w._forget(self)

    # -- heartbeat / log thread -----------------------------------------------------------

    def _stop_agent(self, *, join: bool) -> None:
        self._agent_stop.set()
        self.ctx._wake.set()
        if join and self._agent.is_alive() and threading.current_thread() is not self._agent:
            self._agent.join(self.client.timeout + 1)

    def _flush_logs(self, retry_seconds: float) -> bool:
        """Send buffered lines; False if the lease turned out lost (then stop)."""
        lines = self.ctx._take_logs()
        if not lines:
            return True
        deadline = time.monotonic() + retry_seconds
        backoff = self.client.new_backoff()
        while True:
            try:
                self.client.logs(self.ctx.lease_id, lines)
                return True
            except LeaseLost as exc:
                self.ctx._signal(LEASE_LOST, str(exc))
                if self._state == "finishing":
                    self._lost(str(exc))
                return False
            except _RETRYABLE as exc:
                delay = backoff.next_delay()
                if time.monotonic() + delay > deadline:
                    self.worker.log.warning(
                        "job %s: %d log lines not sent: %s", self.ctx.job_id, len(lines), exc
                    )
                    if retry_seconds == 0:
                        self.ctx._requeue_logs(lines)
                    return True
                time.sleep(delay)
            except ApiError as exc:
                # e.g. 400 on a malformed line: drop the batch rather than loop on it.
                self.worker.log.warning("job %s: log batch refused: %s", self.ctx.job_id, exc)
                return True

    def _agent_loop(self) -> None:
        ctx, w = self.ctx, self.worker
        interval = float(ctx.heartbeat_interval_seconds)
        # Local view of the expiry (monotonic clock, no server clock involved): refreshed
        # by every successful heartbeat from the lease_seconds it answers.
        expires = self._claimed_at + ctx.lease_seconds
        next_beat = self._claimed_at + interval
        backoff = self.client.new_backoff()
        try:
            while not self._agent_stop.is_set():
                now = time.monotonic()
                log_due = ctx._log_due_at(w.log_flush_seconds)
                due = min(next_beat, log_due if log_due is not None else math.inf)
                if due > now and not ctx._heartbeat_requested():
                    ctx._wake.wait(due - now)
                    ctx._wake.clear()
                    continue
                if self._agent_stop.is_set():
                    break
                if log_due is not None and log_due <= now:
                    if not self._flush_logs(0):
                        return
                if now < next_beat and not ctx._heartbeat_requested():
                    continue
                try:
                    progress = ctx._progress_snapshot()
                    answer = self.client.heartbeat(
                        ctx.lease_id, progress=progress, extend_seconds=w.lease_seconds
                    )
                except (LeaseLost, NotFound) as exc:
                    ctx._signal(LEASE_LOST, str(exc))
                    return
                except _RETRYABLE as exc:
                    now = time.monotonic()
                    if now >= expires:
                        ctx._signal(LEASE_LOST, "lease expired before a heartbeat got through")
                        return
                    delay = min(backoff.next_delay(), interval, max(0.0, expires - now))
                    w.log.warning(
                        "job %s: heartbeat failed (%s); retry in %.1fs", ctx.job_id, exc, delay
                    )
                    next_beat = now + delay
                    continue
                except ApiError as exc:
                    # e.g. 401 after the token was revoked: the lease is not being extended,
                    # so it must be given up when it runs out, as after network errors.
                    now = time.monotonic()
                    if now >= expires:
                        ctx._signal(LEASE_LOST, f"lease expired; heartbeats refused: {exc}")
                        return
                    w.log.error("job %s: heartbeat refused: %s", ctx.job_id, exc)
                    next_beat = min(now + interval, expires)
                    continue
                now = time.monotonic()
                ctx._mark_sent()
                backoff.reset()
                expires = now + answer["lease_seconds"]
                next_beat = now + interval
                if answer["cancel_requested"] and ctx.cancel_reason is None:
                    ctx._signal(CANCEL_REQUESTED, "cancellation requested")
                    w._emit("cancel_requested", ctx)
        except Exception:
            w.log.exception("job %s: heartbeat thread crashed", ctx.job_id)
