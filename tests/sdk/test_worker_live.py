"""The worker SDK against the real orchestrator: HTTP to pytest-django's ``live_server``
(a threaded WSGI server in this process) on the PostgreSQL test database.

Nothing of the orchestrator is faked. Outcomes are read back from the database (jobs,
leases, artifacts, log lines). Where a test needs a network fault (an answer lost after the
server handled the request, heartbeats that never get through) the client is given ``Wire``:
the real HTTP transport to the live server, recording what it sends and dropping chosen
exchanges. The scheduler tick and the reaper, which Celery beat runs in production, are
called directly when a test needs them.

Timings: heartbeats every 1 s (``ORCH_HEARTBEAT_INTERVAL_SECONDS``), leases as short as 3 s
(``ORCH_LEASE_MIN_SECONDS``). Tests wait on conditions (database rows, worker events), never
for a fixed time.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from django.db import connections
from stellaops_worker import (
    AuthError,
    Client,
    Conflict,
    JobCancelled,
    JobContext,
    LeaseLost,
    NonRetryableError,
    NotFound,
    RetryLater,
    ValidationError,
    Worker,
    WorkerEvent,
)

from demo import concelier, excititor
from demo.plan import TRANSIENT_PATH, demo_jobs
from ledger.models import Artifact, Job, JobLogLine, Lease, LeaseStatus
from ledger.states import TERMINAL, JobStatus
from orchestrator.reaper import leases_reap_expired
from orchestrator.scheduling import jobs_promote_due

pytestmark = pytest.mark.django_db(transaction=True)

T = TypeVar("T")
JOB_TYPE = "sdk.echo"
RUNNER_SCOPES = ("orch:runner",)
OPERATOR_SCOPES = ("orch:operate", "orch:read")


# -- harness ----------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], T], what: str, timeout: float = 15.0) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.05)


class Wire(httpx.HTTPTransport):
    """The real HTTP transport, recording ``(path, body)`` of every request (path relative
    to ``/api/v1``) and able to lose exchanges:

    * ``lose_answer(suffix, when)``: the next request whose path ends with ``suffix`` (and
      whose JSON answer satisfies ``when``) reaches the server, which handles it, but the
      client gets ``ReadError`` instead of the answer;
    * ``unreachable(suffix)``: requests whose path ends with ``suffix`` never leave
      (``ConnectError``).
    """

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self.sent: list[tuple[str, Any]] = []
        self._lose: list[tuple[str, Callable[[Any], bool]]] = []
        self._unreachable: set[str] = set()
        self.lost: list[tuple[str, Any]] = []  # (path, body) of the exchanges that lost it

    def lose_answer(self, suffix: str, when: Callable[[Any], bool] = lambda body: True) -> None:
        with self._lock:
            self._lose.append((suffix, when))

    def unreachable(self, suffix: str) -> None:
        with self._lock:
            self._unreachable.add(suffix)

    def paths(self, suffix: str) -> list[str]:
        with self._lock:
            return [p for p, _ in self.sent if p.endswith(suffix)]

    def bodies(self, suffix: str) -> list[Any]:
        with self._lock:
            return [b for p, b in self.sent if p.endswith(suffix)]

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path.removeprefix("/api/v1")
        body = json.loads(request.content) if request.content else None
        with self._lock:
            self.sent.append((path, body))
            blocked = any(path.endswith(s) for s in self._unreachable)
            armed = [rule for rule in self._lose if path.endswith(rule[0])]
        if blocked:
            raise httpx.ConnectError("unreachable (test fault)", request=request)
        response = super().handle_request(request)
        if not armed:
            return response
        response.read()
        answer = json.loads(response.content) if response.status_code < 300 else None
        with self._lock:
            for rule in armed:
                if rule in self._lose and answer is not None and rule[1](answer):
                    self._lose.remove(rule)
                    self.lost.append((path, body))
                    response.close()
                    raise httpx.ReadError("answer lost (test fault)", request=request)
        return response


@dataclass
class Orch:
    """The live orchestrator: its URL, tokens, and SDK clients on it (closed at teardown)."""

    url: str
    runner_token: str
    operator_token: str
    clients: list[Client] = field(default_factory=list)

    def client(self, token: str | None = None, *, base_url: str | None = None, **kw: Any) -> Client:
        client = Client(base_url or self.url, token or self.runner_token, **kw)
        self.clients.append(client)
        return client

    @property
    def operator(self) -> Client:
        return self.client(self.operator_token)

    def enqueue(self, payload: dict[str, Any] | None = None, **opts: Any) -> int:
        opts.setdefault("max_attempts", 3)
        return self.operator.enqueue(JOB_TYPE, "proj", payload or {}, **opts).job_id


@pytest.fixture
def orch(live_server: Any, make_token: Callable[..., str], settings: Any) -> Iterator[Orch]:
    # The live server runs in this process: these settings apply to it too.
    settings.ORCH_HEARTBEAT_INTERVAL_SECONDS = 1
    settings.ORCH_LEASE_MIN_SECONDS = 3
    live = Orch(
        url=live_server.url,
        runner_token=make_token(scopes=RUNNER_SCOPES, subject="sdk-runner"),
        operator_token=make_token(scopes=OPERATOR_SCOPES, subject="sdk-operator"),
    )
    yield live
    for client in live.clients:
        client.close()


def make_worker(orch: Orch, handler: Callable[[JobContext], Any], **kw: Any) -> Worker:
    kw.setdefault("wait_seconds", 1)
    kw.setdefault("install_signal_handlers", False)
    kw.setdefault("shutdown_grace_seconds", 5)
    kw.setdefault("log_flush_seconds", 0.2)
    job_types = kw.pop("job_types", [JOB_TYPE])
    return Worker(orch.url, kw.pop("token", orch.runner_token), job_types, handler, **kw)


@contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    """Run ``worker`` on a thread; stop it (gracefully unless the body failed) on exit and
    re-raise what ``run()`` raised."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test thread
            errors.append(exc)

    thread = threading.Thread(target=target, name=f"run-{worker.runner_id}", daemon=True)
    thread.start()
    ok = False
    try:
        yield worker
        ok = True
    finally:
        worker.stop(graceful=ok)
        thread.join(30)
        assert not thread.is_alive(), "the worker did not stop"
    if errors:
        raise errors[0]


@contextmanager
def scheduler_ticking(period: float = 0.1) -> Iterator[None]:
    """What Celery beat does in production: ``jobs_promote_due()`` every ``period`` s."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def tick() -> None:
        try:
            while not stop.is_set():
                jobs_promote_due()
                stop.wait(period)
        except BaseException as exc:  # noqa: BLE001 - re-raised on the test thread
            errors.append(exc)
        finally:
            connections.close_all()

    thread = threading.Thread(target=tick, name="scheduler-tick", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(10)
    if errors:
        raise errors[0]


def job(job_id: int) -> Job:
    return Job.objects.get(pk=job_id)


def leases(job_id: int) -> list[Lease]:
    return list(Lease.objects.filter(job_id=job_id).order_by("attempt"))


def kinds(events: list[WorkerEvent], job_id: int | None = None) -> list[str]:
    return [e.kind for e in list(events) if job_id is None or e.job_id == job_id]


# -- outcomes of a handler --------------------------------------------------------------------


def test_returned_dict_is_acked_with_artifacts_logs_and_progress(
    orch: Orch, tmp_path: Path
) -> None:
    job_id = orch.enqueue({"n": 3})
    out = tmp_path / "out.txt"
    out.write_bytes(b"hello\n")
    progress_stored = threading.Event()
    events: list[WorkerEvent] = []

    def handler(ctx: JobContext) -> dict[str, Any]:
        n = ctx.payload["n"]
        for i in range(n):
            ctx.progress(i + 1, n, "step")
            ctx.log("info", f"step {i}")
        # Hold the lease until a heartbeat has carried the progress to the server.
        if not progress_stored.wait(10):
            raise RuntimeError("progress never reached the server")
        ctx.write_artifact("out.txt", out, "text/plain")
        return {"steps": n}

    worker = make_worker(orch, handler, on_event=events.append)
    with running(worker):
        wait_for(
            lambda: any(
                lease.progress == {"done": 3, "total": 3, "message": "step"}
                for lease in leases(job_id)
            ),
            "the progress on the lease",
        )
        progress_stored.set()
        wait_for(lambda: job(job_id).status == JobStatus.SUCCEEDED, "the ack")

    done = job(job_id)
    assert (done.result, done.attempt) == ({"steps": 3}, 1)
    [lease] = leases(job_id)
    assert lease.status == LeaseStatus.ACKED and lease.heartbeat_at is not None
    [artifact] = Artifact.objects.filter(job_id=job_id)
    assert (artifact.name, artifact.uri, artifact.size_bytes, artifact.media_type) == (
        "out.txt",
        out.resolve().as_uri(),
        6,
        "text/plain",
    )
    assert artifact.sha256 == "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    assert artifact.lease_id == lease.id
    lines = JobLogLine.objects.filter(job_id=job_id).order_by("id")
    assert [(line.level, line.message) for line in lines] == [
        ("info", "step 0"),
        ("info", "step 1"),
        ("info", "step 2"),
    ]
    assert kinds(events, job_id) == ["claimed", "acked"]
    assert worker.stats["acked"] == 1
    # The operator API shows the same thing.
    shown = orch.operator.get_job(job_id)
    assert shown["status"] == "succeeded" and shown["artifacts"][0]["name"] == "out.txt"


def test_exceptions_choose_retryable_dead_letter_or_delay(orch: Orch) -> None:
    plain = orch.enqueue({"kind": "plain"})
    final = orch.enqueue({"kind": "final"})
    later = orch.enqueue({"kind": "later"})

    def handler(ctx: JobContext) -> None:
        kind = ctx.payload["kind"]
        if kind == "plain":
            raise KeyError("missing")
        if kind == "final":
            raise NonRetryableError("malformed_document", "not JSON")
        raise RetryLater("upstream busy", 9)

    worker = make_worker(orch, handler, concurrency=3)
    with running(worker):
        wait_for(lambda: worker.stats.get("failed", 0) == 3, "three failed attempts")

    # A plain exception: retryable, code = class name, the traceback sent as a log line.
    retried = job(plain)
    assert retried.status == JobStatus.SCHEDULED and retried.attempt == 1
    assert retried.last_error["code"] == "KeyError"
    assert JobLogLine.objects.filter(job_id=plain, level="error", message__contains="KeyError")
    # NonRetryableError: dead-lettered at once, with its code and message.
    dead = job(final)
    assert dead.status == JobStatus.DEAD_LETTERED and dead.attempt == 1
    assert dead.last_error == {"code": "malformed_document", "message": "not JSON"}
    # RetryLater(9): scheduled 9 s after the fail.
    delayed = job(later)
    [lease] = leases(later)
    assert delayed.status == JobStatus.SCHEDULED
    assert delayed.last_error["code"] == "retry_later"
    assert delayed.not_before == lease.ended_at + timedelta(seconds=9)
    assert abs((delayed.not_before - datetime.now(UTC)).total_seconds() - 9) < 5
    assert {lease.status for j in (plain, final, later) for lease in leases(j)} == {
        LeaseStatus.FAILED
    }


def test_cancel_request_reaches_the_handler_through_the_heartbeat(orch: Orch) -> None:
    job_id = orch.enqueue()
    started = threading.Event()
    seen: list[BaseException] = []
    events: list[WorkerEvent] = []

    def handler(ctx: JobContext) -> dict[str, Any]:
        ctx.progress(1, 10)
        started.set()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                ctx.check()
            except JobCancelled as exc:
                seen.append(exc)
                raise
            ctx.cancelled.wait(0.05)
        return {"finished": True}

    worker = make_worker(orch, handler, on_event=events.append)
    with running(worker):
        assert started.wait(10)
        answer = httpx.post(
            f"{orch.url}/api/v1/jobs/{job_id}/cancel",
            json={"reason": "operator says stop"},
            headers={"Authorization": f"Bearer {orch.operator_token}"},
        )
        assert answer.status_code == 200 and answer.json()["cancel_requested"] is True
        wait_for(lambda: job(job_id).status == JobStatus.CANCELED, "the job to end canceled")

    assert len(seen) == 1
    assert kinds(events, job_id) == ["claimed", "cancel_requested", "canceled"]
    [lease] = leases(job_id)
    assert lease.status == LeaseStatus.FAILED
    assert lease.outcome["job_status"] == "canceled"
    assert job(job_id).result is None


def test_lease_expired_by_the_reaper_is_never_acked(orch: Orch) -> None:
    job_id = orch.enqueue()
    wire = Wire()
    started = threading.Event()
    outcome: list[Any] = []
    events: list[WorkerEvent] = []

    def handler(ctx: JobContext) -> dict[str, Any]:
        started.set()
        ctx.cancelled.wait(15)
        try:
            ctx.check()
        except LeaseLost as exc:
            outcome.append(exc)
        return {"done": True}  # the SDK must drop this

    client = orch.client(transport=wire)
    worker = make_worker(orch, handler, client=client, on_event=events.append)
    with running(worker):
        assert started.wait(10)
        far_future = datetime.now(UTC) + timedelta(days=1)
        assert leases_reap_expired(now=far_future).expired == 1
        wait_for(lambda: worker.stats.get("lost", 0) == 1, "the worker to notice the loss")

    assert len(outcome) == 1 and outcome[0].code == "lease_lost"
    assert kinds(events) == ["claimed", "lost"]
    assert wire.paths("/ack") == [] and wire.paths("/fail") == []  # nothing was sent
    [lease] = leases(job_id)
    assert lease.status == LeaseStatus.EXPIRED
    assert job(job_id).status == JobStatus.SCHEDULED and job(job_id).result is None


def test_lease_that_expires_while_heartbeats_cannot_get_through_is_never_acked(
    orch: Orch,
) -> None:
    job_id = orch.enqueue()
    wire = Wire()
    wire.unreachable("/heartbeat")
    reasons: list[str | None] = []

    def handler(ctx: JobContext) -> dict[str, Any]:
        ctx.cancelled.wait(15)
        reasons.append(ctx.cancel_reason)
        return {"late": True}

    client = orch.client(transport=wire)
    worker = make_worker(orch, handler, client=client, lease_seconds=3)
    with running(worker):
        wait_for(lambda: worker.stats.get("lost", 0) == 1, "the local expiry", timeout=10)

    assert reasons == ["lease_lost"]
    assert wire.paths("/heartbeat") and wire.paths("/ack") == []
    # On the server the lease ran out too; the reaper ends it.
    wait_for(lambda: leases_reap_expired().expired == 1, "the reaper to expire the lease")
    [lease] = leases(job_id)
    assert lease.status == LeaseStatus.EXPIRED
    assert job(job_id).status == JobStatus.SCHEDULED


# -- text and results the server would refuse ------------------------------------------------


def test_outcome_text_the_server_would_refuse_is_cleaned_not_lost(orch: Orch) -> None:
    """The server refuses (400) NUL, lone surrogates, error messages over 4,000 characters,
    codes outside ``[A-Za-z0-9_.:-]{1,100}`` and fractional ``retry_after_seconds``; the SDK
    must send something it accepts rather than lose the outcome."""
    long = orch.enqueue({"kind": "long"})
    odd = orch.enqueue({"kind": "odd"})
    soon = orch.enqueue({"kind": "soon"})

    def handler(ctx: JobContext) -> None:
        kind = ctx.payload["kind"]
        ctx.log("info", f"{kind}: file \udcff name\x00")  # e.g. a surrogate-escaped file name
        if kind == "long":
            raise ValueError("x" * 9000)
        if kind == "odd":
            raise NonRetryableError("bad code!", "NUL \x00 and \udcff in the message")
        raise RetryLater("soon", 1.5)  # type: ignore[arg-type]

    events: list[WorkerEvent] = []
    worker = make_worker(orch, handler, concurrency=3, on_event=events.append)
    with running(worker):
        wait_for(lambda: worker.stats.get("failed", 0) == 3, "three failed attempts")

    assert not [e for e in events if e.kind in ("error", "lost")]
    retried = job(long)
    assert retried.status == JobStatus.SCHEDULED and retried.last_error["code"] == "ValueError"
    assert retried.last_error["message"].startswith("xxx")
    assert len(retried.last_error["message"]) <= 4000
    dead = job(odd)
    assert dead.status == JobStatus.DEAD_LETTERED
    assert dead.last_error == {
        "code": "bad_code_",
        "message": "NUL \ufffd and \ufffd in the message",
    }
    delayed = job(soon)
    [lease] = leases(soon)
    assert delayed.status == JobStatus.SCHEDULED
    assert delayed.not_before == lease.ended_at + timedelta(seconds=2)  # rounded up
    for job_id, kind in ((long, "long"), (odd, "odd"), (soon, "soon")):
        assert JobLogLine.objects.filter(
            job_id=job_id, message=f"{kind}: file \ufffd name\ufffd"
        ).exists()


def test_a_long_progress_message_does_not_stop_the_heartbeats(orch: Orch) -> None:
    job_id = orch.enqueue()
    stored = threading.Event()

    def handler(ctx: JobContext) -> dict[str, Any]:
        ctx.progress(1, 2, "p" * 3000)  # the server takes 2,000 characters
        if not stored.wait(10):
            raise RuntimeError("progress never reached the server")
        return {"ok": True}

    worker = make_worker(orch, handler)
    with running(worker):
        [lease] = wait_for(
            lambda: [lease for lease in leases(job_id) if lease.progress], "a stored progress"
        )
        stored.set()
        wait_for(lambda: job(job_id).status == JobStatus.SUCCEEDED, "the ack")
    message = lease.progress["message"]
    assert message.startswith("ppp") and len(message) <= 2000


def test_a_result_the_server_refuses_dead_letters_the_job(orch: Orch, settings: Any) -> None:
    settings.ORCH_PAYLOAD_MAX_BYTES = 1024
    job_id = orch.enqueue()
    events: list[WorkerEvent] = []
    worker = make_worker(orch, lambda ctx: {"blob": "x" * 2000}, on_event=events.append)
    with running(worker):
        wait_for(lambda: job(job_id).status in TERMINAL, "the job to end")

    dead = job(job_id)
    assert dead.status == JobStatus.DEAD_LETTERED and dead.result is None
    assert dead.last_error["code"] == "invalid_result"
    assert "payload_too_large" in dead.last_error["message"]
    assert kinds(events, job_id) == ["claimed", "failed"]


def test_lease_runs_out_while_every_heartbeat_is_refused(orch: Orch) -> None:
    """The runner token is revoked mid-job: heartbeats get 401, not a network error. The
    lease must still be given up when it runs out, not worked on past its expiry."""
    job_id = orch.enqueue()
    token = [orch.runner_token]
    started = threading.Event()
    reasons: list[str | None] = []

    def handler(ctx: JobContext) -> dict[str, Any]:
        started.set()
        ctx.cancelled.wait(15)
        reasons.append(ctx.cancel_reason)
        return {"late": True}

    client = orch.client(lambda: token[0])
    worker = make_worker(orch, handler, client=client, lease_seconds=3)
    # Once the slot is free the next claim gets 401 too, which stops the worker.
    with pytest.raises(AuthError), running(worker):
        assert started.wait(10)
        token[0] = "revoked"
        wait_for(lambda: reasons, "the handler to be told", timeout=10)

    assert reasons == ["lease_lost"]
    assert worker.stats.get("acked", 0) == 0 and worker.stats["lost"] == 1
    assert job(job_id).status == JobStatus.LEASED  # until the reaper sees it
    wait_for(lambda: leases_reap_expired().expired == 1, "the reaper to expire the lease")


# -- claims -----------------------------------------------------------------------------------


def test_repeating_a_claim_id_returns_the_same_leases(orch: Orch) -> None:
    first, second = orch.enqueue(), orch.enqueue()
    client = orch.client()
    claim = {"runner_id": "r1", "job_types": [JOB_TYPE], "max_jobs": 1, "claim_id": "c-1"}
    [lease] = client.claim(**claim)
    [again] = client.claim(**claim)  # as after a lost answer
    assert (again["lease_id"], again["job_id"], again["fencing_token"]) == (
        lease["lease_id"],
        first,
        lease["fencing_token"],
    )
    assert job(second).status == JobStatus.READY  # the repeat leased nothing new
    [other] = client.claim(**{**claim, "claim_id": "c-2"})
    assert other["job_id"] == second
    assert Lease.objects.count() == 2


def test_worker_retries_a_claim_whose_answer_was_lost_with_the_same_claim_id(
    orch: Orch,
) -> None:
    job_id = orch.enqueue()
    wire = Wire()
    wire.lose_answer("/claims", when=lambda answer: bool(answer["leases"]))
    client = orch.client(transport=wire)
    worker = make_worker(orch, lambda ctx: {"ok": True}, client=client)
    with running(worker):
        wait_for(lambda: job(job_id).status == JobStatus.SUCCEEDED, "the ack")

    [(path, lost_claim)] = wire.lost
    claim_ids = [body["claim_id"] for body in wire.bodies("/claims")]
    at = claim_ids.index(lost_claim["claim_id"])
    assert claim_ids[at + 1] == lost_claim["claim_id"]  # the retry repeats it
    assert len(leases(job_id)) == 1 and job(job_id).attempt == 1  # no lease was stranded
    assert worker.stats["unreachable"] == 1


# -- shutdown ---------------------------------------------------------------------------------


def test_graceful_stop_releases_leases_still_running_after_the_grace_period(
    orch: Orch,
) -> None:
    job_id = orch.enqueue()
    started = threading.Event()
    reasons: list[str | None] = []

    def handler(ctx: JobContext) -> None:
        started.set()
        ctx.cancelled.wait(15)
        reasons.append(ctx.cancel_reason)

    worker = make_worker(orch, handler, shutdown_grace_seconds=0.2)
    runner = threading.Thread(target=worker.run)
    runner.start()
    assert started.wait(10)
    assert job(job_id).status == JobStatus.LEASED and job(job_id).attempt == 1
    begun = time.monotonic()
    worker.stop()
    runner.join(10)
    assert not runner.is_alive() and time.monotonic() - begun < 5
    released = job(job_id)
    assert (released.status, released.attempt) == (JobStatus.READY, 0)
    [lease] = leases(job_id)
    assert lease.status == LeaseStatus.RELEASED
    wait_for(lambda: reasons, "the handler to see the release")
    assert reasons == ["released"]
    assert worker.stats["released"] == 1


def test_sigterm_stops_gracefully_and_a_second_signal_releases_at_once(orch: Orch) -> None:
    """In-process: ``run()`` on the main thread installs the worker's handlers; a helper
    thread sends SIGTERM twice. A harmless handler is installed first so that a signal
    arriving after the worker restored it cannot kill the test process."""
    job_id = orch.enqueue()
    started = threading.Event()
    problems: list[str] = []

    def handler(ctx: JobContext) -> None:
        started.set()
        ctx.cancelled.wait(20)

    worker = make_worker(orch, handler, install_signal_handlers=True, shutdown_grace_seconds=30)

    def send_signals() -> None:
        if not started.wait(10):
            problems.append("the handler never started")
            worker.stop(graceful=False)
            return
        os.kill(os.getpid(), signal.SIGTERM)  # graceful: would wait 30 s for the handler
        deadline = time.monotonic() + 5
        while not worker.stopping and time.monotonic() < deadline:
            time.sleep(0.01)
        if not worker.stopping:
            problems.append("the first SIGTERM did not stop the worker")
        os.kill(os.getpid(), signal.SIGTERM)  # second signal: release now

    def ignore(signum: int, frame: Any) -> None:
        problems.append("a SIGTERM reached the fallback handler")

    original = signal.signal(signal.SIGTERM, ignore)
    try:
        sender = threading.Thread(target=send_signals)
        sender.start()
        begun = time.monotonic()
        worker.run()  # the main thread, so the worker installs its handlers
        sender.join(10)
        assert signal.getsignal(signal.SIGTERM) is ignore  # restored
    finally:
        signal.signal(signal.SIGTERM, original)
    assert problems == []
    assert time.monotonic() - begun < 10  # not the 30 s grace period
    released = job(job_id)
    assert (released.status, released.attempt) == (JobStatus.READY, 0)
    assert [lease.status for lease in leases(job_id)] == [LeaseStatus.RELEASED]


def test_bad_token_or_missing_scope_stops_the_worker_with_auth_error(
    orch: Orch, make_token: Callable[..., str]
) -> None:
    worker = make_worker(orch, lambda ctx: None, token="not-a-jwt")
    with pytest.raises(AuthError) as info:
        worker.run_until(lambda: False, timeout=10)
    assert info.value.status == 401
    assert worker.stats["error"] == 1

    no_runner_scope = make_worker(orch, lambda ctx: None, token=orch.operator_token)
    with pytest.raises(AuthError) as info:
        no_runner_scope.run_until(lambda: False, timeout=10)
    assert info.value.status == 403


# -- the Client's error mapping and retries, on the server's real answers ---------------------


def test_server_errors_map_to_the_sdk_exceptions(
    orch: Orch, make_token: Callable[..., str]
) -> None:
    orch.enqueue()
    client = orch.client()
    [lease] = client.claim(runner_id="r1", job_types=[JOB_TYPE])
    assert client.ack(lease["lease_id"], result={"n": 1}) == {
        "job_id": lease["job_id"],
        "status": "succeeded",
    }
    # A repeated ack answers 200 with the recorded outcome.
    assert client.ack(lease["lease_id"])["status"] == "succeeded"
    # 409 lease_lost: a heartbeat (or a fail) on the acked lease.
    with pytest.raises(LeaseLost) as lost:
        client.heartbeat(lease["lease_id"], progress={"done": 1, "total": 2, "message": None})
    assert (lost.value.status, lost.value.code) == (409, "lease_lost")
    assert lost.value.details["lease_status"] == "acked"
    with pytest.raises(LeaseLost):
        client.fail(lease["lease_id"], code="late", message="too late")
    # 404: an unknown lease, an unknown job.
    with pytest.raises(NotFound) as missing:
        client.heartbeat(str(uuid.uuid4()))
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    with pytest.raises(NotFound):
        orch.operator.get_job(lease["job_id"] + 1000)
    # 401: a token the server cannot verify.
    with pytest.raises(AuthError) as unauthenticated:
        orch.client("not-a-jwt").runner_config()
    assert unauthenticated.value.status == 401
    # 403: a runner token on an operator call.
    with pytest.raises(AuthError) as forbidden:
        client.get_job(lease["job_id"])
    assert (forbidden.value.status, forbidden.value.code) == (403, "insufficient_scope")
    # 400: a lease length below the server's minimum, an empty job type list.
    with pytest.raises(ValidationError) as invalid:
        client.claim(runner_id="r1", job_types=[JOB_TYPE], lease_seconds=1)
    assert (invalid.value.status, invalid.value.code) == (400, "validation_error")
    with pytest.raises(ValidationError):
        client.claim(runner_id="r1", job_types=[])
    # 409 other than lease_lost: an idempotency key reused with another body.
    orch.enqueue({"a": 1}, idempotency_key="k-1")
    with pytest.raises(Conflict) as conflict:
        orch.enqueue({"a": 2}, idempotency_key="k-1")
    assert conflict.value.status == 409 and not isinstance(conflict.value, LeaseLost)


def test_client_calls_on_the_live_server(orch: Orch) -> None:
    # The base URL may already name the API root; an enqueue replay is reported.
    operator = orch.client(orch.operator_token, base_url=f"{orch.url}/api/v1/")
    first = operator.enqueue(JOB_TYPE, "proj", {"x": 1}, idempotency_key="k", max_attempts=2)
    again = operator.enqueue(JOB_TYPE, "proj", {"x": 1}, idempotency_key="k", max_attempts=2)
    assert (first.replayed, again.replayed, again.job_id) == (False, True, first.job_id)
    config = orch.client().runner_config()
    assert config["heartbeat_interval_seconds"] == 1 and config["max_jobs"] >= 1

    wire = Wire()
    client = orch.client(transport=wire, retry_seconds=10)
    client.configure_backoff(0.01, 0.05)
    [lease] = client.claim(runner_id="r1", job_types=[JOB_TYPE], max_jobs=5)
    assert (lease["job_id"], lease["payload"], lease["heartbeat_interval_seconds"]) == (
        first.job_id,
        {"x": 1},
        1,
    )
    # Logs go in batches of 500; a message over 8 KiB is cut.
    lines = [
        {"ts": "2026-01-01T00:00:00Z", "level": "info", "message": f"l{i}"} for i in range(1200)
    ]
    lines[0]["message"] = "é" * 10_000  # 20,000 bytes of UTF-8
    assert client.logs(lease["lease_id"], lines) == 1200  # type: ignore[arg-type]
    assert len(wire.paths("/logs")) == 3
    stored = JobLogLine.objects.filter(job_id=first.job_id).order_by("id")
    assert stored.count() == 1200
    assert len(stored[0].message.encode()) <= 8192 and stored[1].message == "l1"
    # An ack whose answer is lost is sent again and answered 200 (recorded once).
    wire.lose_answer("/ack")
    artifact = {
        "name": "a",
        "uri": "file:///tmp/a",
        "sha256": "0" * 64,
        "size_bytes": 1,
        "media_type": "text/plain",
    }
    answer = client.ack(lease["lease_id"], result={"n": 1}, artifacts=[artifact])  # type: ignore[list-item]
    assert answer == {"job_id": first.job_id, "status": "succeeded"}
    assert [path for path, _ in wire.lost] == wire.paths("/ack")[:1]
    assert len(wire.paths("/ack")) == 2
    assert Artifact.objects.filter(job_id=first.job_id).count() == 1
    assert job(first.job_id).result == {"n": 1}
    # LeaseLost is not retried.
    with pytest.raises(LeaseLost):
        client.release(lease["lease_id"])
    assert len(wire.paths("/release")) == 1


def test_fail_message_is_cut_to_8_kib(orch: Orch) -> None:
    job_id = orch.enqueue()
    client = orch.client()
    [lease] = client.claim(runner_id="r1", job_types=[JOB_TYPE])
    answer = client.fail(lease["lease_id"], code="ValueError", message="x" * 9000)
    assert answer["job_status"] == "scheduled" and answer["next_attempt_at"]
    error = job(job_id).last_error
    assert error["code"] == "ValueError" and len(error["message"].encode()) <= 8192
    # A repeated fail answers the recorded outcome.
    assert client.fail(lease["lease_id"], code="ValueError", message="x")["job_status"] == (
        "scheduled"
    )


# -- the demo, end to end ---------------------------------------------------------------------


def test_demo_plan_runs_to_completion_on_the_live_server(
    orch: Orch, settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ORCH_ARTIFACT_DIR", str(tmp_path))
    # The transient failure is retried at once (runner-config then announces a backoff base
    # of 0, which the SDK must floor rather than refuse).
    settings.ORCH_RETRY_BASE_SECONDS = 0
    operator = orch.operator
    ids = {}
    for body in demo_jobs(run_tag="live"):
        done = operator.enqueue(
            body["job_type"],
            body["project"],
            body["payload"],
            source=body["source"],
            idempotency_key=body["idempotency_key"],
        )
        ids[done.job_id] = body
    assert len(ids) == 24
    events: list[WorkerEvent] = []
    workers = [
        make_worker(orch, handle, job_types=[job_type], concurrency=2, on_event=events.append)
        for job_type, handle in (
            (concelier.JOB_TYPE, concelier.handle),
            (excititor.JOB_TYPE, excititor.handle),
        )
    ]
    with ExitStack() as stack:
        stack.enter_context(scheduler_ticking())
        for worker in workers:
            stack.enter_context(running(worker))

        def all_ended() -> bool:
            assert not any(w.stopping for w in workers), "a worker stopped early"
            return not Job.objects.exclude(status__in=TERMINAL).exists()

        wait_for(all_ended, "every demo job to end", timeout=45)

    jobs = {j.pk: j for j in Job.objects.filter(pk__in=ids)}
    succeeded = [j for j in jobs.values() if j.status == JobStatus.SUCCEEDED]
    dead = [j for j in jobs.values() if j.status == JobStatus.DEAD_LETTERED]
    assert (len(succeeded), len(dead)) == (23, 1)
    [malformed] = dead
    assert malformed.last_error["code"] == "malformed_document"
    assert "TRUNCATED" in malformed.payload["path"] and malformed.attempt == 1
    [transient] = [j for j in jobs.values() if j.payload["path"] == TRANSIENT_PATH]
    assert (transient.status, transient.attempt) == (JobStatus.SUCCEEDED, 2)
    assert [lease.status for lease in leases(transient.pk)] == [
        LeaseStatus.FAILED,
        LeaseStatus.ACKED,
    ]
    assert transient.last_error["code"] == "simulated_transient_failure"
    # Every success came with its NDJSON artifact, written where the test pointed it.
    for done in succeeded:
        [artifact] = Artifact.objects.filter(job_id=done.pk)
        assert artifact.uri.startswith(tmp_path.resolve().as_uri())
        assert artifact.media_type == "application/x-ndjson"
        assert done.result["records"] >= 1
    # The torn CVE line is a malformed record, not a failed job.
    assert sum(j.result["malformed"] for j in succeeded) == 1
    assert not [e for e in events if e.kind in ("lost", "error", "released")]


def test_client_ack_many_acks_a_claimed_batch(orch: Orch) -> None:
    for i in range(3):
        orch.enqueue({"i": i})
    client = orch.client()
    leases = client.claim(runner_id="r", job_types=[JOB_TYPE], max_jobs=3, wait_seconds=0,
                          lease_seconds=None, claim_id=None)
    assert len(leases) == 3
    results = client.ack_many([{"lease_id": lease["lease_id"], "result": {"ok": True}}
                               for lease in leases])
    assert [r["status"] for r in results] == ["succeeded"] * 3
    assert all(job(lease["job_id"]).status == "succeeded" for lease in leases)
