"""Where the time of a bridge request goes.

* ``round_trips``: one-off, in the bench process (Django set up with the production settings of
  the stack): real WSGI requests through ``orchestrator.wsgi.application`` (so the
  request_started/finished signals and the connection health check run as under gunicorn), with
  the libpq protocol trace on Django's connection; every ``ReadyForQuery`` the server sends is
  one round trip the request waited for. Also single-client service times (no contention).
* ``pyspy``: py-spy recordings (``--gil --nonblocking``: only the thread holding the GIL, the
  worker not paused) of one gunicorn worker under the bridge load: collapsed stacks split into
  layers by the deepest frame of a known layer (psycopg, JWT, ORM compiler, DRF, Django,
  gunicorn, app code), then a flame graph. GIL-holding samples are the worker's Python CPU;
  C code that releases the GIL (socket and libpq I/O) is not in them.
"""
from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any
from wsgiref.util import setup_testing_defaults

from .servers import Managed

# --- round trips per request (one-off, in process) ----------------------------------------------

def _wsgi_call(app: Any, method: str, path: str, token: str | None,
               body: bytes | None = None) -> tuple[int, bytes]:
    env: dict[str, Any] = {}
    setup_testing_defaults(env)
    env.update({"REQUEST_METHOD": method, "PATH_INFO": path, "SERVER_NAME": "127.0.0.1",
                "HTTP_HOST": "127.0.0.1", "wsgi.input": io.BytesIO(body or b""),
                "CONTENT_LENGTH": str(len(body or b""))})
    if body is not None:
        env["CONTENT_TYPE"] = "application/json"
    if token:
        env["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    status: list[str] = []

    def start_response(s: str, headers: Any, exc_info: Any = None) -> None:
        status.append(s)

    result = app(env, start_response)
    try:
        data = b"".join(result)
    finally:
        if hasattr(result, "close"):
            result.close()
    return int(status[0].split()[0]), data


def _traced(connection: Any, trace_path: Path, fn: Any) -> tuple[Any, list[str]]:
    """Run ``fn`` with the libpq trace on; returns its result and the statements it waited on."""
    from psycopg import pq

    pgconn = connection.connection.pgconn
    with open(trace_path, "w") as f:
        pgconn.trace(f.fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            result = fn()
        finally:
            pgconn.untrace()
    # One message per "F\t" / "B\t" line; a statement with newlines continues on the next lines.
    messages: list[str] = []
    for line in trace_path.read_text(errors="replace").splitlines():
        if line.startswith(("F\t", "B\t")) or not messages:
            messages.append(line)
        else:
            messages[-1] += " " + line
    statements, pending = [], ""
    for msg in messages:
        parts = msg.split("\t", 3)
        if len(parts) < 3:
            continue
        direction, kind = parts[0], parts[2]
        if direction == "F" and kind in ("Query", "Parse"):
            text = " ".join((parts[3] if len(parts) > 3 else "").split())
            if kind == "Parse":  # "<name>" "<query>" ...
                text = text.split('"', 3)[-1]
            pending = text.strip().strip('"').strip()[:160]
        elif direction == "B" and kind == "ReadyForQuery":
            statements.append(pending)
            pending = ""
    return result, statements


def round_trips(token: str, seed: Any, results_dir: Path, iterations: int = 200) -> dict[str, Any]:
    """Round trips and single-client service time of floor, claim and ack requests.

    ``seed(n)`` enqueues n ready no-op jobs. Runs in the bench process, whose Django settings are
    the stack's (production mode, CONN_MAX_AGE=600, health checks on)."""
    from django.db import connection

    from orchestrator.wsgi import application as app

    trace = results_dir / "libpq-trace.tmp"
    seed(iterations + 20)
    claim1 = json.dumps({"runner_id": "rt", "job_types": ["bench.noop"], "max_jobs": 1,
                         "wait_seconds": 0}).encode()
    claim10 = json.dumps({"runner_id": "rt", "job_types": ["bench.noop"], "max_jobs": 10,
                          "wait_seconds": 0}).encode()

    def ack(lease_id: str) -> tuple[int, bytes]:
        return _wsgi_call(app, "POST", f"/api/v1/leases/{lease_id}/ack", token, b"{}")

    # warm the connection and the code paths
    _wsgi_call(app, "GET", "/bench/floor", None)
    st, body = _wsgi_call(app, "POST", "/api/v1/claims", token, claim1)
    assert st == 200, body
    for lease in json.loads(body)["leases"]:
        ack(lease["lease_id"])
    out: dict[str, Any] = {}
    (st, _), q = _traced(connection, trace, lambda: _wsgi_call(app, "GET", "/bench/floor", None))
    out["floor"] = {"round_trips": len(q), "statements": q}
    (st, body), q = _traced(connection, trace,
                            lambda: _wsgi_call(app, "POST", "/api/v1/claims", token, claim1))
    out["claim_max_jobs_1"] = {"round_trips": len(q), "statements": q}
    lease_id = json.loads(body)["leases"][0]["lease_id"]
    (st, body), q = _traced(connection, trace, lambda: ack(lease_id))
    assert st == 200, body
    out["ack"] = {"round_trips": len(q), "statements": q}
    (st, body), q = _traced(connection, trace,
                            lambda: _wsgi_call(app, "POST", "/api/v1/claims", token, claim10))
    out["claim_max_jobs_10"] = {"round_trips": len(q), "statements": q}
    for lease in json.loads(body)["leases"]:
        ack(lease["lease_id"])
    trace.unlink(missing_ok=True)

    # Single-client service times, in process (no HTTP server, no contention): the median of
    # each of 3 blocks, the lowest kept (a block disturbed by something else loses).
    clock = time.perf_counter
    best: dict[str, float] = {}
    n = 0
    for _block in range(3):
        t_floor, t_claim, t_ack = [], [], []
        for _ in range(max(1, iterations // 3)):
            t = clock()
            _wsgi_call(app, "GET", "/bench/floor", None)
            t_floor.append(clock() - t)
            t = clock()
            st, body = _wsgi_call(app, "POST", "/api/v1/claims", token, claim1)
            t_claim.append(clock() - t)
            leases = json.loads(body)["leases"]
            if not leases:
                break
            t = clock()
            ack(leases[0]["lease_id"])
            t_ack.append(clock() - t)
        n += len(t_ack)
        for name, values in (("floor", t_floor), ("claim", t_claim), ("ack", t_ack)):
            if values:
                best[name] = min(best.get(name, float("inf")), statistics.median(values) * 1e3)
    out["service_time_ms_single_client"] = {**best, "n": n}
    # the same with the Python profiler off but the DB time measured by the trace-free way:
    # time a bare round trip on this connection for scale
    with connection.cursor() as cur:
        rt = []
        for _ in range(200):
            t = clock()
            cur.execute("SELECT 1")
            cur.fetchone()
            rt.append(clock() - t)
    out["service_time_ms_single_client"]["bare_round_trip"] = statistics.median(rt) * 1e3
    return out


def explain_claim(tenant: str, job_types: list[str], limit: int = 1) -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS) of the claim's index-walking statements (``orch_lanes_v1``,
    the lane probe, and ``orch_heads_v1``, the heads of one lane) on the bench database as it
    stands; both only read."""
    from django.db import connection

    from orchestrator import claim_sql

    statements = {
        "ORCH_LANES_V1": (claim_sql.ORCH_LANES_V1.format(
            tenant_filter="l.tenant = ANY(%(tenants)s) AND"),
            {"tenants": [tenant], "types": job_types}),
        "ORCH_HEADS_V1": (claim_sql.ORCH_HEADS_V1,
                          {"tenants": [tenant] * len(job_types), "types": job_types,
                           "sources": [0] * len(job_types), "limit": limit}),
    }
    out: dict[str, Any] = {}
    try:
        with connection.cursor() as cur:
            cur.execute("SELECT count(*) FROM ledger_job WHERE status = 'ready'")
            out["ready_jobs"] = cur.fetchone()[0]
            for name, (sql, params) in statements.items():
                cur.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
                plan = [r[0] for r in cur.fetchall()]
                text = "\n".join(plan)
                out[name] = {
                    "execution_ms": next((float(line.split(":")[1].split()[0]) for line in plan
                                          if line.startswith("Execution Time")), None),
                    "seq_scan_on_ledger_job": "Seq Scan on ledger_job" in text,
                    "plan": plan}
    except Exception as exc:  # noqa: BLE001 - the server's SQL may have changed
        return {"error": repr(exc)}
    finally:
        connection.close()
    return out


# --- py-spy under load ----------------------------------------------------------------------------

CATEGORIES = [
    # (category, substring of the frame's file) in order of precedence for one frame
    ("psycopg: driver (+ waiting on PostgreSQL in wall mode)",
     ("psycopg/", "psycopg_pool/", "psycopg_binary/")),
    ("auth: JWT verify", ("/jwt/", "orchestrator/tokens.py")),
    ("ORM: SQL compile", ("django/db/models/sql/", "django/db/models/expressions.py",
                          "django/db/models/lookups.py", "django/db/models/fields/",
                          "django/db/backends/")),
    ("ORM: queryset/model/transaction", ("django/db/",)),
    ("DRF: parse/validate/render/dispatch", ("rest_framework/",)),
    ("Django: handler/middleware/urls/signals", ("django/",)),
    ("gunicorn: HTTP parse/write, gthread event loop", ("gunicorn/",)),
    ("app: orchestrator/ledger code", ("orchestrator/", "ledger/", "quotas/")),
]
RATE = 400  # samples per second
# Helpers every layer uses: a sample whose deepest frames are here goes to the layer above.
TRANSPARENT = ("django/utils/", "django/dispatch/", "django/conf/")


def _frame_file(frame: str) -> str:
    lpar = frame.rfind("(")
    return frame[lpar + 1:] if lpar >= 0 else frame


def _samples(raw: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if n.isdigit():
            out.append((stack.split(";"), int(n)))
    return out


def _in_request(frames: list[str]) -> bool:
    return any(k in f for f in frames for k in ("get_response", "handle_request"))


def categorize(raw: Path, cpu: bool = True) -> dict[str, Any]:
    """Split py-spy collapsed stacks into layers (the deepest frame of a known layer wins).

    ``cpu``: GIL-holding samples, all of them CPU (gunicorn's own event loop included);
    otherwise wall-clock samples with idle threads, of which only in-request ones count."""
    counts: Counter[str] = Counter()
    total = outside = 0
    for frames, n in _samples(raw):
        if not _in_request(frames):
            outside += n
            if not cpu:
                continue
        total += n
        cat = "other (stdlib, GC)"
        for frame in reversed(frames):
            file = _frame_file(frame)
            if any(k in file for k in TRANSPARENT):
                continue
            hit = next((c for c, keys in CATEGORIES if any(k in file for k in keys)), None)
            if hit:
                cat = hit
                break
        counts[cat] += n
    return {
        "samples": total,
        "samples_outside_a_request": outside,
        "share_pct": {k: round(100.0 * v / total, 1)
                      for k, v in sorted(counts.items(), key=lambda kv: -kv[1])} if total else {},
    }


def top_functions(raw: Path, n: int = 15) -> list[tuple[str, float]]:
    """Leaf functions by share of samples (self time)."""
    leaf: Counter[str] = Counter()
    total = 0
    for frames, c in _samples(raw):
        total += c
        leaf[frames[-1]] += c
    return [(f, round(100.0 * c / total, 1)) for f, c in leaf.most_common(n)] if total else []


def by_app_frame(raw: Path, n: int = 20) -> list[tuple[str, float]]:
    """Samples by their deepest orchestrator/ledger frame: which line of the server's own code
    the time was spent under (library time included)."""
    where: Counter[str] = Counter()
    total = 0
    for frames, c in _samples(raw):
        total += c
        key = "(under no orchestrator/ledger frame: gunicorn, Django, DRF, middleware)"
        for frame in reversed(frames):
            if any(k in _frame_file(frame) for k in ("orchestrator/", "ledger/")):
                key = frame
                break
        where[key] += c
    return [(f, round(100.0 * c / total, 1)) for f, c in where.most_common(n)] if total else []


def pyspy_start(pid: int, seconds: int, out: Path, fmt: str, mode: str, log: Path,
                env: dict[str, str]) -> Managed:
    """``mode`` "gil": only the thread holding the GIL (= Python CPU of the process);
    "idle": every thread, waiting ones too (= wall time)."""
    exe = str(Path(sys.executable).with_name("py-spy"))
    argv = [exe, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", str(RATE),
            "--format", fmt, "--output", str(out), "--nonblocking", "--" + mode]
    return Managed(f"py-spy {pid}", argv, env, log)


def pyspy_available() -> bool:
    exe = Path(sys.executable).with_name("py-spy")
    if not exe.exists():
        return False
    try:
        return subprocess.run([str(exe), "--version"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False
