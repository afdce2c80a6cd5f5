"""Benchmark of the claim under admission control (issue: admission in the claim path):

    .venv/bin/python -m bench.admission            # full run, about 6 minutes
    .venv/bin/python -m bench.admission --quick    # smoke run, about 1.5 minutes

50 tenants, one job type, every tenant under a concurrency cap (max_active) and half of them
also under a token bucket; a shared runner pool claims for all 50 tenants at once. Measured at
two backlogs, 10,000 and 1,000,000 ready jobs, each time for:

  adm    the admission claim (``orchestrator.claiming.lease_claim`` with ``tenants=`` all 50)
  plain  the claim without admission (``lease_claim_plain``, the previous issue's single
         statement, one random tenant per claim): the baseline for the cost of admission

Load: WORKERS processes, each looping claim(max_jobs=10) -> one batch ack -> as many new ready
jobs inserted for the same tenants (one statement), so the backlog stays at its size during the
phase. Only the claim call is timed (p50/p99). Same database and run lock as ``bench.run``
(``orchestrator_bench``, dropped, created, migrated). Writes ``bench/results/<stamp>-admission.json``.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

from .run import BASE, RESULTS, BenchDB, log, stack_env

TENANTS = [f"t{i:02d}" for i in range(50)]
JOB_TYPE = "bench.noop"
WORKERS = 4
MAX_JOBS = 10


def _setup_django(db_url: str) -> None:
    os.environ.update(stack_env(BenchDB(db_url.rsplit("/", 1)[0])))
    if str(BASE) not in sys.path:
        sys.path.insert(0, str(BASE))
    import django

    django.setup()


def seed(db: BenchDB, total: int) -> None:
    """``total`` ready jobs spread evenly over the tenants, their lanes, caps and buckets."""
    per = total // len(TENANTS)
    db.execute(
        "TRUNCATE ledger_job, ledger_lease, ledger_jobevent, ledger_artifact, ledger_joblogline, "
        "ledger_claim, ledger_lane, quotas_quota, quotas_tenantshare CASCADE",
        "INSERT INTO ledger_lane (tenant, job_type, source_id) "
        f"SELECT t, '{JOB_TYPE}', 0 FROM unnest(ARRAY{TENANTS!r}::text[]) AS t",
        # every tenant capped at 20 leased jobs; even tenants also 200 leases/s, burst 50
        "INSERT INTO quotas_quota (tenant, job_type, source_id, max_active, rate_per_second, burst,"
        " tokens_micro, reason, ticket, updated_by, updated_at) "
        "SELECT t, '', 0, 20, CASE WHEN n % 2 = 0 THEN 200 END, CASE WHEN n % 2 = 0 THEN 50 END,"
        f" 0, 'bench', 'bench', 'bench', now() FROM unnest(ARRAY{TENANTS!r}::text[])"
        " WITH ORDINALITY AS v(t, n)",
        "INSERT INTO ledger_job (tenant, project, job_type, payload, request_digest, priority,"
        " status, attempt, max_attempts, fencing_token, cancel_requested, pending_parents,"
        " created_at, updated_at) "
        f"SELECT t, 'bench', '{JOB_TYPE}', '{{}}'::jsonb, 'x', (g % 3)::smallint, 'ready', 0, 3, 0,"
        f" false, 0, now(), now() FROM unnest(ARRAY{TENANTS!r}::text[]) AS t,"
        f" generate_series(1, {per}) AS g",
        "VACUUM ANALYZE ledger_job", "VACUUM ANALYZE ledger_lane", "CHECKPOINT")


def _refill_sql() -> str:
    return ("INSERT INTO ledger_job (tenant, project, job_type, payload, request_digest, priority,"
            " status, attempt, max_attempts, fencing_token, cancel_requested, pending_parents,"
            " created_at, updated_at) "
            f"SELECT t, 'bench', '{JOB_TYPE}', '{{}}'::jsonb, 'x', 0, 'ready', 0, 3, 0, false, 0,"
            " now(), now() FROM unnest(%s::text[]) AS t")


def worker(db_url: str, variant: str, seconds: float, seed_: int) -> dict[str, Any]:
    """One load process: returns claim latencies (s), claims and jobs."""
    _setup_django(db_url)
    from django.db import connection

    from orchestrator.claiming import lease_claim, lease_claim_plain
    from orchestrator.leasing import AckIn, lease_ack_many

    rng = random.Random(seed_)
    latencies: list[float] = []
    jobs = empty = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        started = time.perf_counter()
        if variant == "adm":
            grants = lease_claim(tenant=TENANTS[0], tenants=TENANTS, runner_id=f"w{seed_}",
                                 job_types=[JOB_TYPE], max_jobs=MAX_JOBS)
        else:
            grants = lease_claim_plain(tenant=rng.choice(TENANTS), runner_id=f"w{seed_}",
                                       job_types=[JOB_TYPE], max_jobs=MAX_JOBS)
        latencies.append(time.perf_counter() - started)
        if not grants:
            empty += 1
            continue
        jobs += len(grants)
        by_tenant: dict[str, list[Any]] = {}
        for g in grants:
            by_tenant.setdefault(g.job.tenant, []).append(AckIn(lease_id=g.lease.id))
        for tenant, acks in by_tenant.items():
            lease_ack_many(tenant=tenant, acks=acks)
        with connection.cursor() as cursor:  # keep the backlog at its size
            cursor.execute(_refill_sql(), [[g.job.tenant for g in grants]])
    connection.close()
    return {"latencies": latencies, "jobs": jobs, "empty": empty}


def phase(db: BenchDB, variant: str, seconds: float) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    started = time.monotonic()
    with ctx.Pool(WORKERS) as pool:
        parts = pool.starmap(worker, [(db.url, variant, seconds, i) for i in range(WORKERS)])
    wall = time.monotonic() - started
    lat = sorted(x for p in parts for x in p["latencies"])
    jobs = sum(p["jobs"] for p in parts)

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3

    return {"claims": len(lat), "empty_claims": sum(p["empty"] for p in parts), "jobs": jobs,
            "seconds": seconds, "wall_s": wall, "claims_per_s": len(lat) / seconds,
            "jobs_per_s": jobs / seconds, "claim_p50_ms": pct(0.50), "claim_p99_ms": pct(0.99),
            "claim_mean_ms": statistics.fmean(lat) * 1e3}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.admission",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run (shorter phases)")
    ap.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432")
    args = ap.parse_args(argv)
    seconds = 8.0 if args.quick else 30.0
    sizes = [10_000, 1_000_000]
    db = BenchDB(args.pg)
    lock = db.lock_runs()
    if lock is None:
        print("another benchmark run holds the lock; try again later", file=sys.stderr)
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    log("database orchestrator_bench: drop, create, migrate")
    db.recreate()
    subprocess.run([sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
                   cwd=BASE, env=stack_env(db), check=True)
    report: dict[str, Any] = {"started_utc": stamp, "mode": "quick" if args.quick else "full",
                              "tenants": len(TENANTS), "workers": WORKERS, "max_jobs": MAX_JOBS,
                              "phase_seconds": seconds, "sizes": {}}
    for size in sizes:
        out: dict[str, Any] = {}
        for variant in ("adm", "plain"):
            log(f"seeding {size:,} ready jobs over {len(TENANTS)} tenants")
            t = time.monotonic()
            seed(db, size)
            log(f"  seeded in {time.monotonic() - t:.0f} s; {variant} for {seconds:.0f} s")
            out[variant] = phase(db, variant, seconds)
            r = out[variant]
            log(f"  {variant}: {r['claims_per_s']:.0f} claims/s, {r['jobs_per_s']:.0f} jobs/s, "
                f"claim p50 {r['claim_p50_ms']:.2f} ms p99 {r['claim_p99_ms']:.2f} ms")
        report["sizes"][str(size)] = out
    s10k, s1m = report["sizes"]["10000"], report["sizes"]["1000000"]
    report["ratios"] = {
        "adm_p99_1m_over_10k": s1m["adm"]["claim_p99_ms"] / s10k["adm"]["claim_p99_ms"],
        "adm_p50_1m_over_10k": s1m["adm"]["claim_p50_ms"] / s10k["adm"]["claim_p50_ms"],
        "plain_p99_1m_over_10k": s1m["plain"]["claim_p99_ms"] / s10k["plain"]["claim_p99_ms"],
        "adm_over_plain_p50_10k": s10k["adm"]["claim_p50_ms"] / s10k["plain"]["claim_p50_ms"],
        "adm_over_plain_p50_1m": s1m["adm"]["claim_p50_ms"] / s1m["plain"]["claim_p50_ms"],
        "adm_over_plain_jobs_per_s_10k": s10k["adm"]["jobs_per_s"] / s10k["plain"]["jobs_per_s"],
        "adm_over_plain_jobs_per_s_1m": s1m["adm"]["jobs_per_s"] / s1m["plain"]["jobs_per_s"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{stamp}-admission.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print()
    print(f"{'backlog':>10} {'claim':>6} {'claims/s':>9} {'jobs/s':>8} {'p50 ms':>8} {'p99 ms':>8}")
    for size, out in report["sizes"].items():
        for variant, r in out.items():
            print(f"{int(size):>10,} {variant:>6} {r['claims_per_s']:>9.0f} {r['jobs_per_s']:>8.0f} "
                  f"{r['claim_p50_ms']:>8.2f} {r['claim_p99_ms']:>8.2f}")
    print()
    for k, v in report["ratios"].items():
        print(f"  {k}: {v:.2f}")
    log(f"results: {path.relative_to(BASE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
