"""The load generator: P processes x T threads, one client per thread, one harness for every
scenario, so the HTTP floor and the bridge are driven by exactly the same code.

HTTP clients are raw keep-alive HTTP/1.1 sockets (prebuilt request bytes, the response read with
the C-level ``BufferedReader.readline``), a few microseconds of Python per request instead of
http.client's header parsing through ``email``: the generator shares the 2 cores with the server
and PostgreSQL, so every microsecond it spends is taken from what it measures. Its own CPU time
is measured (``getrusage``) and reported with each phase.

Scenarios (a thread runs one until its deadline, its count bound, or the queue is drained):

* ``floor``: ``GET /bench/floor`` in a loop.
* ``bridge``: ``POST /api/v1/claims`` (max_jobs=m), then ``POST /api/v1/leases/<id>/ack`` for
  every lease granted (or, with ``batch_ack``, one ``POST /api/v1/acks`` for all of them);
  stops when a claim returns no lease (queue drained).
* ``rawsql``: the same claim -> ack loop as plain SQL over psycopg (SKIP LOCKED), no HTTP.

Only loopback addresses are accepted as targets.
"""
from __future__ import annotations

import ipaddress
import json
import multiprocessing as mp
import os
import queue
import resource
import signal
import socket
import threading
import time
import traceback
from array import array
from dataclasses import dataclass, field
from typing import Any

MAX_ERRORS_PER_THREAD = 50


def require_loopback(host: str) -> None:
    """Refuse any target outside 127.0.0.0/8 and ::1: the benchmark never leaves the machine."""
    if not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"benchmark targets must be loopback addresses, not {host}")


class EmptyResponse(ConnectionError):
    """The server closed the connection before sending a status line."""


class HttpConn:
    """One keep-alive HTTP/1.1 connection; reconnects when the server closes it."""

    def __init__(self, host: str, port: int, token: str | None = None, timeout: float = 30.0):
        require_loopback(host)
        self.host, self.port, self.timeout = host, port, timeout
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self._prefix = f"Host: {host}:{port}\r\n{auth}".encode()
        self.sock: socket.socket | None = None
        self.rfile: Any = None
        self.connects = 0

    def build(self, method: str, path: str, body: bytes | None = None) -> bytes:
        """Prebuild the bytes of one request."""
        head = f"{method} {path} HTTP/1.1\r\n".encode() + self._prefix
        if body is None:
            return head + b"\r\n"
        return (head + b"Content-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)

    def _connect(self) -> None:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.rfile = sock, sock.makefile("rb", 65536)
        self.connects += 1

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.rfile.close()
                self.sock.close()
            except OSError:
                pass
        self.sock = self.rfile = None

    def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send prebuilt request bytes, return ``(status, body)``.

        A request on a reused connection that the server had already closed (no status line
        at all: nothing was processed) is sent once more on a new connection.
        """
        for attempt in (0, 1):
            fresh = self.sock is None
            if fresh:
                self._connect()
            try:
                self.sock.sendall(raw)
                status, body, close = self._read()
            except (EmptyResponse, BrokenPipeError, ConnectionResetError):
                self.close()
                if fresh or attempt:
                    raise
                continue
            if close:
                self.close()
            return status, body
        raise AssertionError("unreachable")

    def _read(self) -> tuple[int, bytes, bool]:
        rf = self.rfile
        line = rf.readline(65537)
        if not line:
            raise EmptyResponse("connection closed by the server")
        status = int(line.split(None, 2)[1])
        close = line.startswith(b"HTTP/1.0")
        length = None
        chunked = False
        while True:
            h = rf.readline(65537)
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = close or b"close" in value.lower()
        if chunked:
            parts = []
            while True:
                size = int(rf.readline(65537).split(b";")[0], 16)
                if size == 0:
                    while rf.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                parts.append(rf.read(size))
                rf.readline(65537)
            body = b"".join(parts)
        elif length is not None:
            body = rf.read(length)
        else:
            body, close = rf.read(), True
        return status, body, close


# --- per-thread records -------------------------------------------------------------------------

@dataclass
class Record:
    """What one client thread measured (latencies in seconds)."""

    ops: int = 0
    requests: int = 0
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)
    lat: dict[str, array] = field(default_factory=dict)
    start: float = 0.0
    end: float = 0.0
    connects: int = 0
    drained: bool = False
    timeline: array = field(default_factory=lambda: array("I"))  # ops per second of the phase

    def count(self, n: int, now: float) -> None:
        """Add ``n`` operations done at ``now`` (perf_counter) to ops and to the timeline."""
        self.ops += n
        sec = int(now - self.start)
        tl = self.timeline
        if sec >= len(tl):
            tl.extend([0] * (sec + 1 - len(tl)))
        tl[sec] += n

    def latency(self, name: str) -> array:
        if name not in self.lat:
            self.lat[name] = array("d")
        return self.lat[name]

    def error(self, message: str) -> bool:
        """Count an error; True when the thread should give up."""
        self.errors += 1
        if len(self.first_errors) < 3:
            self.first_errors.append(message[:300])
        return self.errors >= MAX_ERRORS_PER_THREAD


# --- scenarios --------------------------------------------------------------------------------
# Each scenario is a pair: setup(params, client_id) -> state (connections opened, warmed up,
# outside the timed window) and run(state, params, deadline, quota, rec).

def _http_setup(p: dict[str, Any], cid: int) -> HttpConn:
    conn = HttpConn(p["host"], p["port"], p.get("token"))
    warm = conn.build("GET", "/bench/floor")
    for _ in range(5):
        status, _ = conn.request(warm)
        if status != 200:
            raise RuntimeError(f"warm-up GET /bench/floor answered {status}")
    if p.get("token"):
        # Exercise the claim and ack code paths once without side effects: a claim of a job
        # type nobody enqueues grants nothing; an ack of an unknown lease is a 404.
        body = json.dumps({"runner_id": f"warmup-{cid}", "job_types": ["bench.warmup"],
                           "max_jobs": 1, "wait_seconds": 0}).encode()
        status, _ = conn.request(conn.build("POST", "/api/v1/claims", body))
        if status != 200:
            raise RuntimeError(f"warm-up claim answered {status}")
        conn.request(conn.build("POST", "/api/v1/leases/00000000-0000-4000-8000-000000000000/ack",
                                b"{}"))
    return conn


def _floor_run(conn: HttpConn, p: dict[str, Any], deadline: float, quota: int,
               rec: Record) -> None:
    req = conn.build("GET", "/bench/floor")
    lat = rec.latency("request")
    clock = time.perf_counter
    while rec.ops < quota:
        t = clock()
        if t >= deadline:
            break
        try:
            status, body = conn.request(req)
        except OSError as exc:
            if rec.error(f"floor: {exc!r}"):
                break
            continue
        t2 = clock()
        rec.requests += 1
        if status == 200:
            lat.append(t2 - t)
            rec.count(1, t2)
        elif rec.error(f"floor: HTTP {status} {body[:200]!r}"):
            break
        rec.end = t2


def _bridge_run(conn: HttpConn, p: dict[str, Any], deadline: float, quota: int,
                rec: Record) -> None:
    claim_body = json.dumps({"runner_id": f"bench-runner-{p['cid']}",
                             "job_types": [p["job_type"]], "max_jobs": p["max_jobs"],
                             "wait_seconds": 0}).encode()
    claim_req = conn.build("POST", "/api/v1/claims", claim_body)
    lat_claim, lat_ack = rec.latency("claim"), rec.latency("ack")
    clock = time.perf_counter
    loads = json.loads
    while rec.ops < quota:
        t = clock()
        if t >= deadline:
            break
        try:
            status, body = conn.request(claim_req)
        except OSError as exc:
            if rec.error(f"claim: {exc!r}"):
                break
            continue
        t2 = clock()
        rec.requests += 1
        if status != 200:
            if rec.error(f"claim: HTTP {status} {body[:200]!r}"):
                break
            continue
        lat_claim.append(t2 - t)
        leases = loads(body)["leases"]
        if not leases:
            rec.drained = True
            rec.end = t2
            break
        if p.get("batch_ack"):
            _batch_ack(conn, leases, rec, lat_ack)
            rec.end = clock()
            if rec.errors >= MAX_ERRORS_PER_THREAD:
                return
            continue
        for lease in leases:
            req = conn.build("POST", f"/api/v1/leases/{lease['lease_id']}/ack", b"{}")
            t = clock()
            try:
                status, body = conn.request(req)
            except OSError as exc:
                if rec.error(f"ack: {exc!r}"):
                    return
                continue
            t2 = clock()
            rec.requests += 1
            if status == 200:
                lat_ack.append(t2 - t)
                rec.count(1, t2)
            elif rec.error(f"ack: HTTP {status} {body[:200]!r}"):
                return
        rec.end = clock()


def _batch_ack(conn: HttpConn, leases: list[dict[str, Any]], rec: Record, lat: array) -> None:
    """``POST /api/v1/acks`` with every lease of a claim; counts the acks that succeeded."""
    body = json.dumps({"acks": [{"lease_id": lease["lease_id"]} for lease in leases]}).encode()
    t = time.perf_counter()
    try:
        status, answer = conn.request(conn.build("POST", "/api/v1/acks", body))
    except OSError as exc:
        rec.error(f"batch ack: {exc!r}")
        return
    t2 = time.perf_counter()
    rec.requests += 1
    if status != 200:
        rec.error(f"batch ack: HTTP {status} {answer[:200]!r}")
        return
    lat.append(t2 - t)
    results = json.loads(answer)["results"]
    ok = sum(1 for r in results if r.get("status") == "succeeded")
    rec.count(ok, t2)
    if ok != len(leases):
        rec.error(f"batch ack: {len(leases) - ok} of {len(leases)} not succeeded: {results[:2]}")


RAW_CLAIM = """
UPDATE bench_raw_job SET status = 'leased', attempts = attempts + 1, runner_id = %(runner)s,
       updated_at = now()
 WHERE id IN (SELECT id FROM bench_raw_job WHERE status = 'ready'
               ORDER BY priority DESC, id LIMIT %(n)s FOR UPDATE SKIP LOCKED)
RETURNING id
"""
RAW_ACK = "UPDATE bench_raw_job SET status = 'succeeded', updated_at = now() WHERE id = %s"
RAW_ACK_MANY = ("UPDATE bench_raw_job SET status = 'succeeded', updated_at = now() "
                "WHERE id = ANY(%s)")


def _rawsql_setup(p: dict[str, Any], cid: int) -> Any:
    import psycopg

    conn = psycopg.connect(p["dsn"], autocommit=True)
    conn.execute("SELECT 1")
    return conn


def _rawsql_run(conn: Any, p: dict[str, Any], deadline: float, quota: int, rec: Record) -> None:
    """Claim (one statement, autocommit) then ack; ``ack_batch`` acks all claimed rows at once."""
    n, batch = p["max_jobs"], p.get("ack_batch", False)
    args = {"runner": f"raw-{p['cid']}", "n": n}
    lat_claim, lat_ack = rec.latency("claim"), rec.latency("ack")
    clock = time.perf_counter
    if True:  # the connection stays open until the parent has read the CPU counters
        with conn.cursor() as cur:
            while rec.ops < quota:
                t = clock()
                if t >= deadline:
                    break
                cur.execute(RAW_CLAIM, args)
                ids = [r[0] for r in cur.fetchall()]
                t2 = clock()
                rec.requests += 1
                lat_claim.append(t2 - t)
                if not ids:
                    rec.drained = True
                    rec.end = t2
                    break
                if batch:
                    t = clock()
                    cur.execute(RAW_ACK_MANY, (ids,))
                    t2 = clock()
                    rec.requests += 1
                    lat_ack.append(t2 - t)
                    rec.count(len(ids), t2)
                else:
                    for job_id in ids:
                        t = clock()
                        cur.execute(RAW_ACK, (job_id,))
                        t2 = clock()
                        rec.requests += 1
                        lat_ack.append(t2 - t)
                        rec.count(1, t2)
                rec.end = clock()


SCENARIOS = {
    "floor": (_http_setup, _floor_run),
    "bridge": (_http_setup, _bridge_run),
    "rawsql": (_rawsql_setup, _rawsql_run),
}


# --- the harness ------------------------------------------------------------------------------

@dataclass
class LoadSpec:
    """One load phase: ``processes * threads`` clients, bounded by ``duration`` seconds and by
    ``max_ops`` operations in all (split evenly between clients)."""

    scenario: str
    params: dict[str, Any]
    duration: float
    max_ops: int
    processes: int = 2
    threads: int = 4

    @property
    def clients(self) -> int:
        return self.processes * self.threads


def _close(state: Any) -> None:
    try:
        state.close()
    except Exception:  # noqa: BLE001
        pass


def _wait_for_go(go: Any, ctl: tuple[Any, Any], state: Any, rec: Record) -> None:
    """Wait for the start; meanwhile reconnect whenever the parent asks (``ctl[0]`` goes up),
    which it does until the keep-alive connections are spread evenly over the server's workers
    (a connection stays with the worker that accepted it)."""
    gen_value, done = ctl
    gen = 0
    deadline = time.monotonic() + 300
    while not go.wait(0.02) and time.monotonic() < deadline:
        if gen_value.value != gen:
            gen = gen_value.value
            if isinstance(state, HttpConn):
                state.close()
                try:
                    state.request(state.build("GET", "/bench/floor"))
                except OSError as exc:
                    rec.error(f"reconnect: {exc!r}")
            with done.get_lock():
                done.value += 1


def _client_thread(spec: LoadSpec, cid: int, barrier: threading.Barrier, go: Any,
                   t0: Any, out: list[Record | None], states: list[Any], slot: int,
                   ctl: tuple[Any, Any]) -> None:
    setup, run = SCENARIOS[spec.scenario]
    params = dict(spec.params, cid=cid)
    rec = Record()
    state = None
    try:
        state = setup(params, cid)
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        rec.error(f"setup: {exc!r}")
        rec.errors = MAX_ERRORS_PER_THREAD
    try:
        barrier.wait(timeout=120)
    except threading.BrokenBarrierError:
        out[slot] = rec
        return
    _wait_for_go(go, ctl, state, rec)
    start = t0.value
    rec.start = rec.end = start
    quota = -(-spec.max_ops // spec.clients)
    if state is not None and rec.errors < MAX_ERRORS_PER_THREAD:
        try:
            run(state, params, start + spec.duration, quota, rec)
        except Exception:  # noqa: BLE001
            rec.error("run: " + traceback.format_exc(limit=3))
    if isinstance(state, HttpConn):
        rec.connects = state.connects
    states[slot] = state  # closed by the process after the parent's CPU snapshot
    out[slot] = rec


def _process_main(spec: LoadSpec, index: int, ready: Any, go: Any, t0: Any, results: Any,
                  release: Any, ctl: tuple[Any, Any]) -> None:
    # Ctrl-C is the parent's to handle: it ends these processes itself (terminate + join).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    out: list[Record | None] = [None] * spec.threads
    states: list[Any] = [None] * spec.threads
    barrier = threading.Barrier(spec.threads + 1)
    threads = [
        threading.Thread(target=_client_thread,
                         args=(spec, index * spec.threads + i, barrier, go, t0, out, states, i,
                               ctl),
                         daemon=True)
        for i in range(spec.threads)
    ]
    for th in threads:
        th.start()
    barrier.wait(timeout=120)
    ready.put(index)
    go.wait(timeout=300)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    for th in threads:
        th.join(spec.duration + 120)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    results.put((index, os.getpid(), cpu, [r for r in out if r is not None]))
    # Connections (and so PostgreSQL backends) stay open until the parent has read the CPU
    # counters of the phase: a backend that exited would take its CPU time with it.
    release.wait(timeout=60)
    for state in states:
        if state is not None:
            _close(state)


def _even_out(spread: Any, ctl: tuple[Any, Any], clients: int) -> dict[str, Any]:
    gen_value, done = ctl
    counts = spread()
    tries = 0
    while counts and max(counts) - min(counts) > clients % len(counts) and tries < 30:
        tries += 1
        gen_value.value = tries
        deadline = time.monotonic() + 20
        while done.value < clients * tries and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)
        counts = spread()
    return {"counts": counts, "reconnect_rounds": tries,
            "even": bool(counts) and max(counts) - min(counts) <= clients % len(counts)}


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    k = min(len(values) - 1, max(0, round(q * (len(values) - 1))))
    return values[k]


def summarize_latency(samples: list[float]) -> dict[str, float]:
    """p50/p90/p99/max in milliseconds."""
    s = sorted(samples)
    return {"n": len(s), "p50_ms": _pct(s, 0.50) * 1e3, "p90_ms": _pct(s, 0.90) * 1e3,
            "p99_ms": _pct(s, 0.99) * 1e3, "max_ms": (s[-1] * 1e3) if s else float("nan")}


def run_load(spec: LoadSpec, on_start: Any = None, on_end: Any = None,
             spread: Any = None) -> dict[str, Any]:
    """Run one phase and return its figures. ``on_start(pids)`` is called at the start line,
    ``on_end()`` when every client has finished but before any closes its connection (CPU
    snapshots); the generator's processes are always ended on return.

    ``spread()`` -> connections per server worker: before the start the clients reconnect
    (up to 30 times) until the keep-alive connections are spread evenly over the workers."""
    ctx = mp.get_context("spawn")
    ready, results = ctx.Queue(), ctx.Queue()
    go, release = ctx.Event(), ctx.Event()
    ctl = (ctx.Value("i", 0), ctx.Value("i", 0))
    spread_info: dict[str, Any] = {}
    t0 = ctx.Value("d", 0.0, lock=False)
    procs = [ctx.Process(target=_process_main, args=(spec, i, ready, go, t0, results, release, ctl),
                         daemon=True, name=f"bench-load-{i}")
             for i in range(spec.processes)]
    try:
        for p in procs:
            p.start()
        for _ in procs:
            ready.get(timeout=180)
        if spread is not None:
            spread_info = _even_out(spread, ctl, spec.clients)
        if on_start is not None:
            on_start([p.pid for p in procs])
        t0.value = time.perf_counter() + 0.02
        go.set()
        got = []
        limit = time.monotonic() + spec.duration + 150
        while len(got) < len(procs):
            try:
                got.append(results.get(timeout=max(1.0, limit - time.monotonic())))
            except queue.Empty:
                raise RuntimeError("load generator did not report within "
                                   f"{spec.duration + 150:.0f} s") from None
        if on_end is not None:
            on_end()
        release.set()
        for p in procs:
            p.join(10)
    finally:
        release.set()
        for p in procs:
            if p.is_alive():
                p.terminate()
                p.join(5)
    start = t0.value
    records = [r for _, _, _, recs in got for r in recs]
    end = max((r.end for r in records), default=start)
    elapsed = max(end - start, 1e-9)
    ops = sum(r.ops for r in records)
    requests = sum(r.requests for r in records)
    lat: dict[str, list[float]] = {}
    for r in records:
        for name, values in r.lat.items():
            lat.setdefault(name, []).extend(values)
    loadgen_cpu = sum(cpu for _, _, cpu, _ in got)
    timeline = [0] * max((len(r.timeline) for r in records), default=0)
    for r in records:
        for i, n in enumerate(r.timeline):
            timeline[i] += n
    # Whole seconds only (the last, partial second is left out of the first/last comparison).
    full = timeline[:int(elapsed)]
    k = max(1, min(10, len(full) // 4))
    drift = ({"first_s": k, "first_ops_per_s": sum(full[:k]) / k,
              "last_ops_per_s": sum(full[-k:]) / k} if len(full) >= 2 * k else {})
    return {
        "scenario": spec.scenario,
        "clients": spec.clients,
        "layout": f"{spec.processes} processes x {spec.threads} threads",
        "duration_bound_s": spec.duration,
        "ops_bound": spec.max_ops,
        "ops": ops,
        "requests": requests,
        "elapsed_s": elapsed,
        "ops_per_s": ops / elapsed,
        "requests_per_s": requests / elapsed,
        "latency": {name: summarize_latency(v) for name, v in lat.items()},
        "errors": sum(r.errors for r in records),
        "first_errors": [e for r in records for e in r.first_errors][:5],
        "drained": any(r.drained for r in records),
        "connections_opened": sum(r.connects for r in records),
        "connections_per_worker": spread_info,
        "ops_per_second_timeline": timeline,
        "first_vs_last_seconds": drift,
        "loadgen_cpu_s": loadgen_cpu,
        "loadgen_cpu_us_per_request": loadgen_cpu / requests * 1e6 if requests else None,
    }
