"""Benchmark of the Task Runner bridge, in one command:

    .venv/bin/python -m bench.run            # full run, ~7.5 minutes
    .venv/bin/python -m bench.run --quick    # smoke run, ~1 minute

One run at a time (a lock), one dedicated database (``orchestrator_bench``, dropped, created and
migrated here; the ledger tables are emptied and VACUUMed before each phase):

  A  HTTP floor          gunicorn (production settings), 8 clients on GET /bench/floor
  B  bridge max_jobs=1   8 clients looping claim -> ack over seeded no-op jobs
  C  bridge max_jobs=10  8 clients looping claim(10) -> 10 acks; C2 the same with one batch
                         ack (POST /api/v1/acks) per claim
  S  the same A+B with gunicorn sync workers (the worker-class comparison)
  W  what-if (last): B again on a fresh server, then without the indexes another index
     covers (dropped in the bench database only)
  D  raw SQL             8 psycopg clients, SKIP LOCKED claim + ack, on a table of their own
  E  Procrastinate 3.10  its own worker, 2 processes x concurrency 8, no-op jobs, own schema
  F  A+B under uvicorn   2 ASGI workers, Django's psycopg pool, CONN_MAX_AGE=0
  P  profile             py-spy of a gunicorn worker under load B, round trips per request

Prints a table and writes ``bench/results/<UTC timestamp>.json``. Every server and worker it
starts is ended at the end of its phase and again on the way out (error, Ctrl-C, SIGTERM).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import servers
from .cpu import CpuWindow, machine_busy_pct
from .loadgen import LoadSpec, run_load
from .servers import HOST, Managed

BASE = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
DB_NAME = "orchestrator_bench"
PROCRASTINATE_SCHEMA = "procrastinate_bench"
TENANT = "bench"
JOB_TYPE = "bench.noop"
# Bench-only secrets: this database and these servers exist only for the run.
BENCH_ENV = {
    "ORCH_MODE": "production",
    "DJANGO_SETTINGS_MODULE": "orchestrator.settings",
    "DJANGO_SECRET_KEY": "bench-only-django-secret-key-not-for-production-0123456789",
    "ORCH_JWT_SECRET": "bench-only-jwt-secret-not-for-production-0123456789abcdef",
    "ORCH_BENCH_ENDPOINTS": "true",
    "DJANGO_DEBUG": "false",
    "ORCH_LOG_LEVEL": "WARNING",
    "PYTHONUNBUFFERED": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
}


@dataclass
class Plan:
    """Bounds of every phase (count and time)."""

    floor_s: float
    bridge_jobs: int
    bridge_s: float
    bridge10_jobs: int
    bridge10_s: float
    sync_floor_s: float
    sync_jobs: int
    sync_s: float
    raw_rows: int
    raw_s: float
    raw10_rows: int
    raw10_s: float
    procr_jobs: int
    procr_s: float
    asgi_floor_s: float
    asgi_jobs: int
    asgi_s: float
    profile_s: int
    rt_iterations: int
    whatif_s: float = 30


FULL = Plan(floor_s=15, bridge_jobs=20_000, bridge_s=60, bridge10_jobs=20_000, bridge10_s=45,
            sync_floor_s=10, sync_jobs=10_000, sync_s=30, raw_rows=60_000, raw_s=15,
            raw10_rows=200_000, raw10_s=10, procr_jobs=20_000, procr_s=120, asgi_floor_s=15,
            asgi_jobs=20_000, asgi_s=45, profile_s=12, rt_iterations=300)
QUICK = Plan(floor_s=3, bridge_jobs=2_000, bridge_s=10, bridge10_jobs=3_000, bridge10_s=8,
             sync_floor_s=2, sync_jobs=1_000, sync_s=5, raw_rows=15_000, raw_s=3,
             raw10_rows=40_000, raw10_s=2, procr_jobs=2_000, procr_s=30, asgi_floor_s=3,
             asgi_jobs=1_000, asgi_s=5, profile_s=4, rt_iterations=50, whatif_s=5)


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --- database ---------------------------------------------------------------------------------

class BenchDB:
    def __init__(self, base_url: str):
        self.base_url = base_url.rstrip("/")
        self.url = f"{self.base_url}/{DB_NAME}"
        self.psycopg_dsn = self.url.replace("postgres://", "postgresql://", 1)

    def recreate(self) -> None:
        import psycopg

        with psycopg.connect(f"{self.base_url.replace('postgres://', 'postgresql://', 1)}/postgres",
                             autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{DB_NAME}" WITH (FORCE)')
            c.execute(f'CREATE DATABASE "{DB_NAME}"')

    def execute(self, *statements: str) -> None:
        import psycopg

        with psycopg.connect(self.psycopg_dsn, autocommit=True) as c:
            for s in statements:
                c.execute(s)

    def lock_runs(self) -> Any:
        """Take the run lock (a session advisory lock in the ``postgres`` database, released
        when this process ends); None when another run holds it."""
        import psycopg

        conn = psycopg.connect(f"{self.base_url.replace('postgres://', 'postgresql://', 1)}/postgres",
                               autocommit=True)
        if conn.execute("SELECT pg_try_advisory_lock(hashtext('stellaops-orchestrator-bench'))"
                        ).fetchone()[0]:
            self._lock_conn = conn
            return conn
        conn.close()
        return None

    def rows(self, sql: str) -> list[tuple[Any, ...]]:
        import psycopg

        with psycopg.connect(self.psycopg_dsn, autocommit=True) as c:
            return c.execute(sql).fetchall()

    def scalar(self, sql: str) -> Any:
        import psycopg

        with psycopg.connect(self.psycopg_dsn, autocommit=True) as c:
            return c.execute(sql).fetchone()[0]


# Non-unique, non-partial indexes of the hot ledger tables whose columns are a prefix of
# another index's (same order and direction): every write maintains them for nothing.
REDUNDANT_INDEXES = """
SELECT a.indexrelid::regclass::text, b.indexrelid::regclass::text
FROM pg_index a JOIN pg_index b ON a.indrelid = b.indrelid AND a.indexrelid <> b.indexrelid
WHERE a.indrelid::regclass::text IN ('ledger_job', 'ledger_lease', 'ledger_jobevent')
  AND a.indpred IS NULL AND b.indpred IS NULL AND a.indexprs IS NULL AND b.indexprs IS NULL
  AND NOT a.indisunique AND NOT a.indisprimary AND a.indnatts <= b.indnatts
  AND (b.indkey::int2[])[0:a.indnatts - 1] = (a.indkey::int2[])[0:a.indnatts - 1]
  AND (b.indoption::int2[])[0:a.indnatts - 1] = (a.indoption::int2[])[0:a.indnatts - 1]
  AND (a.indnatts < b.indnatts OR b.indisunique OR a.indexrelid > b.indexrelid)
"""


def stack_env(db: BenchDB, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ORCH_", "DJANGO_"))}
    env.update(BENCH_ENV)
    env["ORCH_DATABASE_URL"] = db.url
    env["PYTHONPATH"] = str(BASE)
    env.update(extra)
    return env


def ledger_tables() -> list[str]:
    from django.apps import apps

    return [m._meta.db_table for m in apps.get_app_config("ledger").get_models()]


def reset_ledger(db: BenchDB) -> None:
    """Empty the ledger tables and VACUUM them (between phases)."""
    tables = ledger_tables()
    db.execute(f"TRUNCATE {', '.join(tables)} CASCADE",
               *[f"VACUUM ANALYZE {t}" for t in tables])


def seed_jobs(n: int) -> None:
    """``n`` ready no-op jobs by bulk INSERT (not measured)."""
    from django.utils import timezone

    from ledger.models import Job, Lane

    now = timezone.now()
    Lane.objects.get_or_create(tenant=TENANT, job_type=JOB_TYPE, source_id=0)  # as enqueue does
    Job.objects.bulk_create(
        [Job(tenant=TENANT, project="bench", job_type=JOB_TYPE, payload={"n": i},
             request_digest="0" * 64, max_attempts=3, status="ready", created_at=now,
             updated_at=now) for i in range(n)],
        batch_size=5000,
    )


def fresh_jobs(db: BenchDB, n: int) -> None:
    reset_ledger(db)
    seed_jobs(n)
    db.execute("VACUUM ANALYZE ledger_job", "CHECKPOINT")


def mint_token() -> str:
    from orchestrator.tokens import token_issue

    return token_issue(tenant=TENANT, scopes=["orch:runner", "orch:operate", "orch:read"],
                       subject="bench")


# --- phases -------------------------------------------------------------------------------------

def measured(spec: LoadSpec, server_pids: Any, spread: Any = None) -> dict[str, Any]:
    """Run a load with a CPU window around it; ``server_pids()`` -> the pids to count as server.

    (pg_stat_database is no help here: a busy backend flushes its counters only now and then,
    so a phase's counts land partly in the next phase.)"""
    win = CpuWindow(DB_NAME)
    loadgen: list[int] = []

    def on_start(pids: list[int]) -> None:
        loadgen.extend(pids)
        win.start()

    cpu: dict[str, Any] = {}

    def on_end() -> None:
        cpu.update(win.stop(set(server_pids()), set(loadgen)))

    out = run_load(spec, on_start, on_end, spread)
    ops = max(out["ops"], 1)
    cpu["per_op_ms"] = {k[:-2]: 1e3 * v / ops for k, v in cpu.items()
                        if k.endswith("_s") and k not in ("wall_s",)}
    out["cpu"] = cpu
    return out


class HttpStack:
    """A started server (gunicorn or uvicorn) with its workers."""

    def __init__(self, kind: str, db: BenchDB, logdir: Path, *, worker_class: str = "gthread",
                 workers: int = 2, threads: int = 4, pool: bool = False,
                 env_extra: dict[str, str] | None = None, log_name: str = ""):
        self.kind, self.port, self.worker_class = kind, servers.free_port(), worker_class
        if kind == "gunicorn":
            argv = servers.gunicorn_argv(self.port, worker_class, workers, threads)
            self.desc = f"gunicorn {workers} x {worker_class}" + (
                f" ({threads} threads)" if worker_class == "gthread" else "")
            env = stack_env(db, **(env_extra or {}))
        else:
            argv, impl = servers.uvicorn_argv(self.port, workers)
            self.desc = f"uvicorn {workers} workers ({impl['loop']}, {impl['http']})"
            env = stack_env(db, ORCH_DB_POOL="true" if pool else "false")
            if pool:
                self.desc += ", psycopg pool, CONN_MAX_AGE=0"
        name = log_name or f"{kind}-{worker_class if kind == 'gunicorn' else 'asgi'}"
        self.server = Managed(self.desc, argv, env, logdir / f"{name}.log", cwd=BASE)
        self.argv = argv
        self.ready_s = servers.wait_http_ready(self.server, self.port)
        self.workers = servers.wait_workers(self.server, workers)
        log(f"{self.desc} ready on :{self.port} in {self.ready_s:.2f} s, workers {self.workers}")

    def pids(self) -> list[int]:
        return servers.tree_of(self.server.pid)

    @property
    def spread(self) -> Any:
        """Keep-alive connections per worker, to spread them evenly before a phase (sync
        workers close every connection after one request: nothing to spread)."""
        if self.worker_class == "sync":
            return None
        return lambda: servers.connections_per_worker(self.workers, self.port)

    def stop(self) -> None:
        self.server.stop()


def http_phase(stack: HttpStack, scenario: str, token: str | None, duration: float,
               max_ops: int, max_jobs: int = 1, batch_ack: bool = False) -> dict[str, Any]:
    params = {"host": HOST, "port": stack.port, "token": token, "job_type": JOB_TYPE,
              "max_jobs": max_jobs, "batch_ack": batch_ack}
    out = measured(LoadSpec(scenario, params, duration, max_ops), stack.pids, stack.spread)
    out["server"] = stack.desc
    spread = out.get("connections_per_worker") or {}
    if spread and not spread.get("even"):
        log(f"  connections not spread evenly over the workers: {spread}")
    by_pid = out["cpu"].get("server_cpu_s_by_pid", {})
    out["worker_cpu_s"] = [by_pid.get(str(w), 0.0) for w in stack.workers]
    if out["errors"]:
        log(f"  errors: {out['errors']} {out['first_errors'][:2]}")
    return out


def floor_phase(stack: HttpStack, duration: float) -> dict[str, Any]:
    out = http_phase(stack, "floor", None, duration, max_ops=10_000_000)
    log(f"  floor: {out['ops_per_s']:.0f} req/s, p50 {out['latency']['request']['p50_ms']:.2f} ms,"
        f" p99 {out['latency']['request']['p99_ms']:.2f} ms; CPU s per worker {out['worker_cpu_s']}")
    return out


def bridge_phase(db: BenchDB, stack: HttpStack, token: str, jobs: int, duration: float,
                 max_jobs: int, batch_ack: bool = False) -> dict[str, Any]:
    fresh_jobs(db, jobs)
    out = http_phase(stack, "bridge", token, duration, max_ops=jobs, max_jobs=max_jobs,
                     batch_ack=batch_ack)
    out["acks"] = "one POST /api/v1/acks per claim" if batch_ack else "one POST per lease"
    out["seeded_jobs"] = jobs
    out["left_ready"] = db.scalar("SELECT count(*) FROM ledger_job WHERE status = 'ready'")
    out["left_leased"] = db.scalar("SELECT count(*) FROM ledger_job WHERE status = 'leased'")
    lat = out["latency"]
    d = out.get("first_vs_last_seconds") or {}
    trend = (f"; first/last {d['first_s']} s: {d['first_ops_per_s']:.0f}/{d['last_ops_per_s']:.0f} jobs/s"
             if d else "")
    log(f"  bridge max_jobs={max_jobs}{' batch ack' if batch_ack else ''}: {out['ops_per_s']:.0f} jobs/s "
        f"({out['ops']} jobs in {out['elapsed_s']:.1f} s), claim p50/p99 "
        f"{lat['claim']['p50_ms']:.2f}/{lat['claim']['p99_ms']:.2f} ms, ack p50/p99 "
        f"{lat['ack']['p50_ms']:.2f}/{lat['ack']['p99_ms']:.2f} ms; CPU s per worker "
        f"{out['worker_cpu_s']}{trend}")
    return out


RAW_DDL = [
    "DROP TABLE IF EXISTS bench_raw_job",
    """CREATE TABLE bench_raw_job (
         id bigserial PRIMARY KEY,
         priority smallint NOT NULL DEFAULT 0,
         status text NOT NULL,
         payload jsonb NOT NULL DEFAULT '{}',
         attempts integer NOT NULL DEFAULT 0,
         runner_id text,
         updated_at timestamptz NOT NULL DEFAULT now())""",
    "CREATE INDEX bench_raw_job_claim_idx ON bench_raw_job (priority DESC, id) "
    "WHERE status = 'ready'",
]


def raw_phase(db: BenchDB, rows: int, duration: float, max_jobs: int,
              ack_batch: bool) -> dict[str, Any]:
    db.execute(*RAW_DDL,
               "INSERT INTO bench_raw_job (status, payload) "
               f"SELECT 'ready', jsonb_build_object('n', g) FROM generate_series(1, {rows}) g",
               "VACUUM ANALYZE bench_raw_job", "CHECKPOINT")
    params = {"dsn": db.psycopg_dsn, "max_jobs": max_jobs, "ack_batch": ack_batch}
    out = measured(LoadSpec("rawsql", params, duration, rows), lambda: [])
    out["seeded_rows"] = rows
    db.execute("DROP TABLE bench_raw_job")
    log(f"  raw SQL max_jobs={max_jobs}{' (one ack statement per claim)' if ack_batch else ''}: "
        f"{out['ops_per_s']:.0f} claim+ack/s, claim p50 {out['latency']['claim']['p50_ms']:.2f} ms")
    return out


def procrastinate_phase(db: BenchDB, jobs: int, duration: float, logdir: Path) -> dict[str, Any]:
    import psycopg

    env = stack_env(db, BENCH_PROCRASTINATE_DSN=db.psycopg_dsn,
                    BENCH_PROCRASTINATE_SCHEMA=PROCRASTINATE_SCHEMA)
    os.environ["BENCH_PROCRASTINATE_DSN"] = db.psycopg_dsn
    os.environ["BENCH_PROCRASTINATE_SCHEMA"] = PROCRASTINATE_SCHEMA
    db.execute(f"DROP SCHEMA IF EXISTS {PROCRASTINATE_SCHEMA} CASCADE",
               f"CREATE SCHEMA {PROCRASTINATE_SCHEMA}")
    from procrastinate import __version__ as pv

    from .procr import app, noop

    with app.open():
        app.schema_manager.apply_schema()
        t = time.perf_counter()
        for start in range(0, jobs, 1000):
            noop.batch_defer(*[{"i": i} for i in range(start, min(jobs, start + 1000))])
        defer_s = time.perf_counter() - t
    q = f"{PROCRASTINATE_SCHEMA}.procrastinate_jobs"
    db.execute(f"VACUUM ANALYZE {q}", "CHECKPOINT")
    argv = [sys.executable, "-m", "procrastinate", "--app=bench.procr.app", "worker",
            "--queues", "bench", "--concurrency", "8"]
    win = CpuWindow(DB_NAME)
    win.start()
    t0 = time.monotonic()
    workers = [Managed(f"procrastinate worker {i}", argv, env, logdir / f"procrastinate-{i}.log",
                       cwd=BASE) for i in range(2)]
    done = 0
    try:
        with psycopg.connect(db.psycopg_dsn, autocommit=True) as c:
            while time.monotonic() - t0 < duration:
                done = c.execute(f"SELECT count(*) FROM {q} WHERE status = 'succeeded'").fetchone()[0]
                if done >= jobs:
                    break
                if not any(w.alive() for w in workers):
                    done = c.execute(
                        f"SELECT count(*) FROM {q} WHERE status = 'succeeded'").fetchone()[0]
                    break
                time.sleep(0.2)
            wall = time.monotonic() - t0
            first, last = c.execute(
                f"SELECT min(at) FILTER (WHERE type = 'started'), "
                f"max(at) FILTER (WHERE type = 'succeeded') "
                f"FROM {PROCRASTINATE_SCHEMA}.procrastinate_events").fetchone()
        pids = set()
        for w in workers:
            pids.update(servers.tree_of(w.pid))
        cpu = win.stop(pids, set())
    finally:
        for w in workers:
            w.stop()
    busy = (last - first).total_seconds() if first and last else wall
    out = {
        "version": pv, "jobs": jobs, "succeeded": done, "workers": "2 processes x concurrency 8",
        "task": "async def noop() -> None", "elapsed_s": busy,
        "jobs_per_s": done / busy if busy else 0.0,
        "wall_incl_worker_start_s": wall, "jobs_per_s_incl_worker_start": done / wall,
        "batch_defer_jobs_per_s": jobs / defer_s, "cpu": cpu,
    }
    cpu["per_op_ms"] = {k[:-2]: 1e3 * v / max(done, 1) for k, v in cpu.items()
                        if k.endswith("_s") and k != "wall_s"}
    log(f"  procrastinate: {out['jobs_per_s']:.0f} jobs/s ({done}/{jobs} in {busy:.1f} s, first "
        f"start to last success; {out['jobs_per_s_incl_worker_start']:.0f}/s incl. worker start); "
        f"batch_defer {out['batch_defer_jobs_per_s']:.0f} jobs/s")
    db.execute(f"DROP SCHEMA {PROCRASTINATE_SCHEMA} CASCADE")
    return out


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def profile_phase(db: BenchDB, stack: HttpStack, token: str, plan: Plan,
                  stamp: str, logdir: Path) -> dict[str, Any]:
    """Load B again; meanwhile py-spy samples one worker: collapsed stacks, then a flame graph
    (one py-spy at a time, non-blocking, so the worker runs as it would)."""
    import threading

    from .profiling import (
        RATE,
        by_app_frame,
        categorize,
        pyspy_available,
        pyspy_start,
        top_functions,
    )

    if not pyspy_available():
        return {"skipped": "py-spy not installed (.venv/bin/pip install py-spy)"}
    fresh_jobs(db, plan.bridge_jobs)
    svg = RESULTS / f"{stamp}-profile.svg"
    raw = logdir / "pyspy-cpu.txt"
    env = stack_env(db)
    secs = plan.profile_s
    worker = stack.workers[0]
    info: dict[str, Any] = {}

    def sample() -> None:
        try:
            time.sleep(1.0)
            c0 = _proc_cpu(worker)
            spy = pyspy_start(worker, secs, raw, "raw", "gil", logdir / "pyspy-cpu.log", env)
            spy.proc.wait(secs + 30)
            info["worker_cpu_s"] = _proc_cpu(worker) - c0
            spy.stop()
            spy = pyspy_start(worker, secs, svg, "flamegraph", "gil", logdir / "pyspy-svg.log", env)
            spy.proc.wait(secs + 30)
            spy.stop()
        except Exception as exc:  # noqa: BLE001
            info["error"] = repr(exc)

    sampler = threading.Thread(target=sample, daemon=True)
    params = {"host": HOST, "port": stack.port, "token": token, "job_type": JOB_TYPE,
              "max_jobs": 1}
    load = run_load(LoadSpec("bridge", params, 2 * secs + 4, plan.bridge_jobs),
                    lambda pids: sampler.start(), spread=stack.spread)
    sampler.join(2 * secs + 70)
    from .profiling import explain_claim

    info["claim_explain"] = explain_claim(TENANT, [JOB_TYPE])
    out: dict[str, Any] = {"load_jobs_per_s_while_sampled": load["ops_per_s"],
                           "sampled_worker_pid": worker, "seconds": secs, "rate_hz": RATE,
                           "mode": "py-spy record --gil --nonblocking", **info}
    if raw.exists() and raw.stat().st_size:
        out["cpu"] = categorize(raw)
        out["top_leaf_functions"] = top_functions(raw)
        out["by_app_frame"] = by_app_frame(raw)
        if info.get("worker_cpu_s"):
            gil_s = out["cpu"]["samples"] / RATE
            out["gil_held_s"] = gil_s
            out["gil_share_of_worker_cpu_pct"] = 100.0 * gil_s / info["worker_cpu_s"]
    else:
        out["error"] = "no py-spy output: " + (logdir / "pyspy-cpu.log").read_text(errors="replace")[-500:]
    if svg.exists():
        out["flamegraph"] = str(svg.relative_to(BASE))
    return out


# --- report -------------------------------------------------------------------------------------

def ratios(r: dict[str, Any]) -> dict[str, Any]:
    p = r["phases"]
    out: dict[str, Any] = {}

    def get(*keys: str) -> float | None:
        cur: Any = p
        for k in keys:
            if not isinstance(cur, dict) or k not in cur:
                return None
            cur = cur[k]
        return cur

    floor, b1, b10 = get("A_floor", "ops_per_s"), get("B_bridge_1", "ops_per_s"), get(
        "C_bridge_10", "ops_per_s")
    procr, raw1 = get("E_procrastinate", "jobs_per_s"), get("D_raw_sql_1", "ops_per_s")
    raw10 = get("D_raw_sql_10", "ops_per_s")
    if floor and b1:
        out["bridge1_vs_half_floor"] = {"value": b1 / (floor / 2), "target": ">= 0.50"}
    if b10 and procr:
        out["bridge10_vs_procrastinate"] = {"value": b10 / procr, "target": ">= 2.0"}
    if b1 and raw1:
        out["bridge1_vs_raw_sql_1"] = {"value": b1 / raw1}
    if b10 and raw10:
        out["bridge10_vs_raw_sql_10"] = {"value": b10 / raw10}
    if b1 and procr:
        out["bridge1_vs_procrastinate"] = {"value": b1 / procr}
    b10b = get("C2_bridge_10_batch", "ops_per_s")
    if b10b and procr:
        out["bridge10_batch_ack_vs_procrastinate"] = {"value": b10b / procr, "target": ">= 2.0"}
    if b10b and raw10:
        out["bridge10_batch_ack_vs_raw_sql_10"] = {"value": b10b / raw10}
    wb, wl = get("W_base_1", "ops_per_s"), get("W_lean_indexes_1", "ops_per_s")
    if wb and wl:
        out["W_lean_indexes_vs_W_base"] = {"value": wl / wb}
    af, ab = get("F_asgi_floor", "ops_per_s"), get("F_asgi_bridge_1", "ops_per_s")
    if af and ab:
        out["asgi_bridge1_vs_half_asgi_floor"] = {"value": ab / (af / 2)}
    if ab and b1:
        out["asgi_bridge1_vs_wsgi_bridge1"] = {"value": ab / b1}
    sf, sb = get("S_floor", "ops_per_s"), get("S_bridge_1", "ops_per_s")
    if sf and sb:
        out["S_bridge1_vs_half_S_floor"] = {"value": sb / (sf / 2)}
    if sb and b1:
        out["S_bridge1_vs_B_bridge1 (other worker class)"] = {"value": sb / b1}
    if sf and floor:
        out["S_floor_vs_A_floor (other worker class)"] = {"value": sf / floor}
    return out


def table(r: dict[str, Any]) -> str:
    rows = [("phase", "server / setup", "rate", "p50 / p99 (ms)", "CPU ms/op srv|pg|gen",
             "others")]

    def cpu(ph: dict[str, Any]) -> str:
        c = ph.get("cpu", {}).get("per_op_ms", {})
        return f"{c.get('server', 0):.2f}|{c.get('postgres', 0):.2f}|{c.get('loadgen', 0):.2f}"

    def others(ph: dict[str, Any]) -> str:
        """Cores used by anything else on the machine during the phase (interference)."""
        c = ph.get("cpu", {})
        if not c.get("wall_s"):
            return ""
        return f"{(c.get('other_s', 0) + c.get('exited_or_unattributed_s', 0)) / c['wall_s']:.2f} cores"

    names = {"A_floor": "A floor", "B_bridge_1": "B bridge max_jobs=1",
             "C_bridge_10": "C bridge max_jobs=10", "S_floor": "S floor (other worker class)",
             "S_bridge_1": "S bridge max_jobs=1", "D_raw_sql_1": "D raw SQL 1 row",
             "D_raw_sql_10": "D raw SQL 10 rows", "E_procrastinate": "E Procrastinate",
             "F_asgi_floor": "F floor (uvicorn+pool)", "F_asgi_bridge_1": "F bridge max_jobs=1 (uvicorn)",
             "C2_bridge_10_batch": "C2 bridge max_jobs=10, batch ack",
             "W_base_1": "W bridge max_jobs=1 (again)", "W_lean_indexes_1": "W ... without redundant indexes"}
    for key, label in names.items():
        ph = r["phases"].get(key)
        if not ph or "error" in ph:
            if ph:
                rows.append((label, "FAILED", ph["error"][:40], "", "", ""))
            continue
        if key == "E_procrastinate":
            rows.append((label, ph["workers"], f"{ph['jobs_per_s']:.0f} jobs/s", "", cpu(ph),
                         others(ph)))
            continue
        lat = ph["latency"]
        if "request" in lat:
            lt = f"{lat['request']['p50_ms']:.2f} / {lat['request']['p99_ms']:.2f}"
            rate = f"{ph['ops_per_s']:.0f} req/s"
        else:
            lt = (f"claim {lat['claim']['p50_ms']:.2f}/{lat['claim']['p99_ms']:.2f}, "
                  f"ack {lat['ack']['p50_ms']:.2f}/{lat['ack']['p99_ms']:.2f}")
            rate = f"{ph['ops_per_s']:.0f} jobs/s"
        rows.append((label, ph.get("server", ph.get("layout", "")), rate, lt, cpu(ph), others(ph)))
    widths = [max(len(str(row[i])) for row in rows) for i in range(6)]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines.append("")
    for k, v in r["ratios"].items():
        tgt = f"  (target {v['target']})" if "target" in v else ""
        lines.append(f"{k:38s} {v['value']:.2f}{tgt}")
    return "\n".join(lines)


def per_job_breakdown(r: dict[str, Any]) -> dict[str, Any]:
    """Where a max_jobs=1 job's time goes: CPU per job by process group (phase B), the split of
    the server's Python CPU by layer (py-spy, GIL samples, phase P), round trips per request."""
    b, prof, rt = r["phases"].get("B_bridge_1"), r.get("profile"), r.get("round_trips")
    if not b or "cpu" not in b:
        return {}
    per = b["cpu"]["per_op_ms"]
    out: dict[str, Any] = {
        "jobs_per_s": b["ops_per_s"],
        "cpu_ms_per_job": {"server (gunicorn workers)": per.get("server"),
                           "postgres": per.get("postgres"), "load generator": per.get("loadgen"),
                           "kernel irq/softirq": per.get("irq_softirq")},
    }
    if prof and "cpu" in prof:
        shares = prof["cpu"]["share_pct"]
        server = per.get("server") or 0.0
        out["server_cpu_ms_per_job_by_layer"] = {k: round(server * v / 100.0, 2)
                                                 for k, v in shares.items()}
        out["server_cpu_share_by_app_frame_pct"] = prof.get("by_app_frame", [])[:10]
        out["gil_share_of_worker_cpu_pct"] = prof.get("gil_share_of_worker_cpu_pct")
    if rt:
        out["round_trips"] = {k: v["round_trips"] for k, v in rt.items() if "round_trips" in v}
        out["single_client_service_ms"] = rt.get("service_time_ms_single_client")
    return out


def breakdown_text(b: dict[str, Any]) -> str:
    lines = [f"Where a max_jobs=1 job goes ({b['jobs_per_s']:.0f} jobs/s):"]
    lines.append("  CPU ms per job: " + ", ".join(
        f"{k} {v:.2f}" for k, v in b["cpu_ms_per_job"].items() if v is not None))
    if "server_cpu_ms_per_job_by_layer" in b:
        lines.append("  server CPU ms per job by layer (py-spy GIL samples, spread over the worker's "
                     "whole CPU):")
        for k, v in b["server_cpu_ms_per_job_by_layer"].items():
            lines.append(f"    {v:6.2f}  {k}")
        lines.append("  server CPU share under the server's own code lines:")
        for frame, pct in b["server_cpu_share_by_app_frame_pct"]:
            lines.append(f"    {pct:5.1f} %  {frame}")
    if "round_trips" in b:
        lines.append("  PostgreSQL round trips per request: " + ", ".join(
            f"{k} {v}" for k, v in b["round_trips"].items()))
        s = b.get("single_client_service_ms") or {}
        if s:
            lines.append(f"  single-client service time (in process, no HTTP): floor "
                         f"{s['floor']:.2f} ms, claim {s['claim']:.2f} ms, ack {s['ack']:.2f} ms, "
                         f"bare round trip {s['bare_round_trip']:.3f} ms")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpus": os.cpu_count(), "python": platform.python_version(),
                            "platform": platform.platform()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
        info["mem_gib"] = round(int(mem) / 1024 / 1024, 1)
    except OSError:
        pass
    versions = {}
    for mod in ("django", "rest_framework", "psycopg", "gunicorn", "uvicorn", "procrastinate"):
        try:
            m = __import__(mod)
            versions[mod] = getattr(m, "__version__", None) or getattr(m, "VERSION", None)
        except Exception:  # noqa: BLE001
            versions[mod] = None
    info["versions"] = {k: str(v) for k, v in versions.items()}
    try:  # read-only git queries: which code was measured
        git = ["git", "-C", str(BASE)]
        info["git_head"] = subprocess.run([*git, "log", "-1", "--format=%h %s"],
                                          capture_output=True, text=True, timeout=10).stdout.strip()
        info["git_modified"] = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10).stdout.split("\n")[:20]
    except OSError:
        pass
    return info


# --- main ---------------------------------------------------------------------------------------

class _Busy(Exception):
    """Another benchmark run holds the run lock."""


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run, about one minute")
    ap.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432",
                    help="PostgreSQL server URL without database (loopback only)")
    ap.add_argument("--only", default="", help="phase letters to run (of ABCSWDEFP)")
    ap.add_argument("--no-profile", action="store_true", help="skip phase P")
    ap.add_argument("--worker-class", default="gthread", choices=("gthread", "sync"),
                    help="worker class of the main gunicorn phases (the other one is phase S)")
    ap.add_argument("--threads", type=int, default=4, help="threads per gthread worker")
    ap.add_argument("--quiet-wait", type=float, default=None,
                    help="seconds to wait at most for the machine to be idle before starting "
                         "(default 180 for a full run, 0 for --quick)")
    args = ap.parse_args(argv)
    plan = QUICK if args.quick else FULL
    only = set(args.only.upper().replace(",", "")) or set("ABCSWDEFP")
    if args.no_profile:
        only.discard("P")
    if args.quick and not args.only:
        only -= {"P", "W"}
    host = args.pg.split("@")[-1].split("/")[0].rsplit(":", 1)[0]
    servers.require_loopback("127.0.0.1" if host == "localhost" else host)

    signal.signal(signal.SIGTERM, _sigterm)
    # Interruptible even when started in the background (where SIGINT is inherited ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    RESULTS.mkdir(parents=True, exist_ok=True)
    logdir = RESULTS / "logs" / stamp
    db = BenchDB(args.pg)
    os.environ.update(stack_env(db))
    os.chdir(BASE)
    if str(BASE) not in sys.path:
        sys.path.insert(0, str(BASE))
    report: dict[str, Any] = {"started_utc": stamp, "mode": "quick" if args.quick else "full",
                              "plan": plan.__dict__, "machine": machine(), "phases": {},
                              "database": DB_NAME}
    phases = report["phases"]
    t_start = time.monotonic()
    primary = args.worker_class
    other = "sync" if primary == "gthread" else "gthread"

    def attempt(key: str, fn: Any) -> Any:
        try:
            phases[key] = fn()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - one phase failing must not hide the others
            log(f"  phase {key} FAILED: {exc!r}")
            phases[key] = {"error": repr(exc), "traceback": traceback.format_exc(limit=6)}
        return phases[key]

    def block(name: str, fn: Any) -> None:
        """A group of phases sharing a server: its failure is recorded, the run goes on."""
        try:
            fn()
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001
            log(f"  {name} FAILED: {exc!r}")
            report.setdefault("errors", []).append(
                {"block": name, "error": repr(exc), "traceback": traceback.format_exc(limit=6)})
        finally:
            servers.stop_all()

    def round_trip_block() -> None:
        from django.db import connection

        from .profiling import round_trips

        log("P  round trips per request (libpq trace, in process)")
        reset_ledger(db)
        try:
            report["round_trips"] = round_trips(token, seed_jobs, RESULTS, plan.rt_iterations)
        finally:
            connection.close()

    def main_block() -> None:
        stack = HttpStack("gunicorn", db, logdir, worker_class=primary, threads=args.threads)
        report["gunicorn_argv"] = " ".join(stack.argv[1:])
        if "A" in only:
            log("A  HTTP floor")
            reset_ledger(db)
            attempt("A_floor", lambda: floor_phase(stack, plan.floor_s))
        if "B" in only:
            log("B  bridge max_jobs=1")
            attempt("B_bridge_1", lambda: bridge_phase(db, stack, token, plan.bridge_jobs,
                                                       plan.bridge_s, 1))
        if "C" in only:
            log("C  bridge max_jobs=10")
            attempt("C_bridge_10", lambda: bridge_phase(db, stack, token, plan.bridge10_jobs,
                                                        plan.bridge10_s, 10))
        if "C" in only:
            log("C2 bridge max_jobs=10, the leases of a claim acked in one request")
            attempt("C2_bridge_10_batch", lambda: bridge_phase(
                db, stack, token, plan.bridge10_jobs, plan.bridge10_s, 10, batch_ack=True))
        if "P" in only:
            log("P  py-spy of a gunicorn worker under the max_jobs=1 load")
            report["profile"] = attempt("P_profile", lambda: profile_phase(
                db, stack, token, plan, stamp, logdir))
        stack.stop()

    def other_class_block() -> None:
        stack = HttpStack("gunicorn", db, logdir, worker_class=other, threads=args.threads)
        report["gunicorn_other_argv"] = " ".join(stack.argv[1:])
        log(f"S  floor and bridge max_jobs=1 with {other} workers")
        reset_ledger(db)
        attempt("S_floor", lambda: floor_phase(stack, plan.sync_floor_s))
        attempt("S_bridge_1", lambda: bridge_phase(db, stack, token, plan.sync_jobs,
                                                   plan.sync_s, 1))
        stack.stop()

    def whatif_block() -> None:
        """B twice on a fresh server, one right after the other: as migrated, then without the
        indexes another index covers (dropped in the bench database only: last phase)."""
        stack = HttpStack("gunicorn", db, logdir, worker_class=primary, threads=args.threads,
                          log_name="whatif")
        log("W  what-if: B as migrated, then without the redundant indexes")
        attempt("W_base_1", lambda: bridge_phase(db, stack, token, plan.bridge_jobs,
                                                 plan.whatif_s, 1))
        redundant = sorted({row[0] for row in db.rows(REDUNDANT_INDEXES)})
        report["whatif_dropped_indexes"] = redundant
        if redundant:
            log(f"W  dropping {', '.join(redundant)}")
            db.execute(*[f'DROP INDEX "{name}"' for name in redundant])
            attempt("W_lean_indexes_1", lambda: bridge_phase(db, stack, token, plan.bridge_jobs,
                                                             plan.whatif_s, 1))
        stack.stop()

    def raw_block() -> None:
        log("D  raw SQL baseline")
        reset_ledger(db)
        attempt("D_raw_sql_1", lambda: raw_phase(db, plan.raw_rows, plan.raw_s, 1, False))
        attempt("D_raw_sql_10", lambda: raw_phase(db, plan.raw10_rows, plan.raw10_s, 10, True))

    def procrastinate_block() -> None:
        log("E  Procrastinate")
        attempt("E_procrastinate", lambda: procrastinate_phase(db, plan.procr_jobs, plan.procr_s,
                                                               logdir))

    def asgi_block() -> None:
        stack = HttpStack("uvicorn", db, logdir, workers=2, pool=True)
        report["uvicorn_argv"] = " ".join(stack.argv[1:])
        log("F  uvicorn (ASGI) with the psycopg pool")
        reset_ledger(db)
        attempt("F_asgi_floor", lambda: floor_phase(stack, plan.asgi_floor_s))
        attempt("F_asgi_bridge_1", lambda: bridge_phase(db, stack, token, plan.asgi_jobs,
                                                        plan.asgi_s, 1))
        stack.stop()

    interrupted = False
    try:
        # One run at a time: a second run would drop the database under the first one.
        lock = db.lock_runs()
        if lock is None:
            log("another bench run holds the lock (it uses the same database): not starting")
            report["errors"] = [{"block": "start", "error": "another bench run is in progress"}]
            raise _Busy
        # Other work on the 2 cores skews every figure: wait (bounded) for a quiet machine.
        quiet_wait = args.quiet_wait if args.quiet_wait is not None else (0 if args.quick else 180)
        waited = 0.0
        busy = machine_busy_pct(2.0)
        while busy > 15.0 and waited < quiet_wait:
            log(f"machine {busy:.0f} % busy before the start: waiting for it to be idle")
            time.sleep(8.0)
            waited += 10.0
            busy = machine_busy_pct(2.0)
        report["machine_busy_pct_before_start"] = busy
        if busy > 15.0:
            log(f"WARNING: machine {busy:.0f} % busy at the start: figures will be low and noisy")
        log(f"database {DB_NAME}: drop, create, migrate")
        db.recreate()
        subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
                       cwd=BASE, env=stack_env(db), check=True)
        import django

        django.setup()
        token = mint_token()
        if "P" in only:
            block("round trips", round_trip_block)
        if only & set("ABCP"):
            block(f"gunicorn {primary}", main_block)
        if "S" in only:
            block(f"gunicorn {other}", other_class_block)
        if "D" in only:
            block("raw SQL", raw_block)
        if "E" in only:
            block("procrastinate", procrastinate_block)
        if "F" in only:
            block("uvicorn", asgi_block)
        if "W" in only:
            block("what-if", whatif_block)
    except _Busy:
        print("another `python -m bench.run` is running; try again when it has finished",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: stopping every process started")
    finally:
        servers.stop_all()
        try:
            from django.db import connections

            connections.close_all()
        except Exception:  # noqa: BLE001
            pass
    report["total_s"] = time.monotonic() - t_start
    head_after = machine().get("git_head")
    if head_after != report["machine"].get("git_head"):
        report["code_changed_during_run"] = head_after
        log(f"WARNING: the code changed during the run (now at {head_after}): phases measured "
            "different versions")
    report["per_job_breakdown"] = per_job_breakdown(report)
    report["interrupted"] = interrupted
    report["ratios"] = ratios(report)
    out = RESULTS / f"{stamp}.json"
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print()
    print(table(report))
    print()
    if report["per_job_breakdown"]:
        print(breakdown_text(report["per_job_breakdown"]))
        print()
    log(f"results: {out.relative_to(BASE)} (server logs: {logdir.relative_to(BASE)}); "
        f"total {report['total_s']:.0f} s")
    failed = report.get("errors") or any("error" in p for p in phases.values())
    return 130 if interrupted else (1 if failed else 0)


if __name__ == "__main__":
    sys.exit(main())
