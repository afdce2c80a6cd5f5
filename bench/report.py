"""Markdown tables of a results file, for docs/performance.md:

    .venv/bin/python -m bench.report bench/results/<stamp>.json
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROWS = [
    ("A_floor", "A", "HTTP floor, `GET /bench/floor`"),
    ("B_bridge_1", "B", "bridge, max_jobs=1 (claim + ack)"),
    ("C_bridge_10", "C", "bridge, max_jobs=10 (claim + 10 acks)"),
    ("C2_bridge_10_batch", "C2", "bridge, max_jobs=10, one batch ack per claim"),
    ("S_floor", "S", "HTTP floor, other worker class"),
    ("S_bridge_1", "S", "bridge, max_jobs=1, other worker class"),
    ("D_raw_sql_1", "D", "raw SQL, claim 1 + ack 1"),
    ("D_raw_sql_10", "D", "raw SQL, claim 10 + 1 ack statement"),
    ("E_procrastinate", "E", "Procrastinate 3.10, no-op jobs"),
    ("F_asgi_floor", "F", "HTTP floor under ASGI"),
    ("F_asgi_bridge_1", "F", "bridge, max_jobs=1, under ASGI"),
    ("W_base_1", "W", "what-if baseline: B again, fresh server"),
    ("W_lean_indexes_1", "W", "what-if: the same without the 4 redundant indexes"),
]


def _lat(ph: dict[str, Any]) -> str:
    lat = ph.get("latency", {})
    if "request" in lat:
        return f"{lat['request']['p50_ms']:.1f} / {lat['request']['p99_ms']:.1f}"
    if "claim" in lat:
        return (f"claim {lat['claim']['p50_ms']:.1f} / {lat['claim']['p99_ms']:.1f}; "
                f"ack {lat['ack']['p50_ms']:.1f} / {lat['ack']['p99_ms']:.1f}")
    return ""


def phases_table(r: dict[str, Any]) -> str:
    out = ["| phase | what | server | rate | p50 / p99 ms | CPU ms per op: server / PostgreSQL / load gen | others (cores) |",
           "|---|---|---|---|---|---|---|"]
    for key, letter, what in ROWS:
        ph = r["phases"].get(key)
        if not ph:
            continue
        if "error" in ph:
            out.append(f"| {letter} | {what} | FAILED: {ph['error'][:60]} | | | | |")
            continue
        cpu = ph.get("cpu", {})
        per = cpu.get("per_op_ms", {})
        others = ((cpu.get("other_s", 0) + cpu.get("exited_or_unattributed_s", 0))
                  / cpu["wall_s"]) if cpu.get("wall_s") else 0
        cpu_txt = f"{per.get('server', 0):.2f} / {per.get('postgres', 0):.2f} / {per.get('loadgen', 0):.2f}"
        if key == "E_procrastinate":
            rate = f"**{ph['jobs_per_s']:,.0f} jobs/s** ({ph['succeeded']:,} jobs)"
            out.append(f"| {letter} | {what} | {ph['workers']} | {rate} | | {cpu_txt} | {others:.2f} |")
            continue
        unit = "req/s" if "request" in ph.get("latency", {}) else "jobs/s"
        done = f" ({ph['ops']:,} in {ph['elapsed_s']:.0f} s)"
        server = ph.get("server") or ph.get("layout", "")
        out.append(f"| {letter} | {what} | {server} | **{ph['ops_per_s']:,.0f} {unit}**{done} | "
                   f"{_lat(ph)} | {cpu_txt} | {others:.2f} |")
    return "\n".join(out)


def drift_table(r: dict[str, Any]) -> str:
    out = ["| phase | first seconds | ops/s then | ops/s in as many last seconds |", "|---|---|---|---|"]
    for key, letter, what in ROWS:
        d = (r["phases"].get(key) or {}).get("first_vs_last_seconds")
        if d:
            out.append(f"| {letter}: {what} | {d['first_s']} | {d['first_ops_per_s']:,.0f} | "
                       f"{d['last_ops_per_s']:,.0f} |")
    return "\n".join(out)


def ratios_table(r: dict[str, Any]) -> str:
    out = ["| ratio | value | target |", "|---|---|---|"]
    for k, v in r.get("ratios", {}).items():
        out.append(f"| {k} | {v['value']:.2f} | {v.get('target', '')} |")
    return "\n".join(out)


def breakdown(r: dict[str, Any]) -> str:
    b = r.get("per_job_breakdown") or {}
    if not b:
        return ""
    out = ["| per max_jobs=1 job | ms |", "|---|---|"]
    for k, v in b["cpu_ms_per_job"].items():
        if v is not None:
            out.append(f"| CPU: {k} | {v:.2f} |")
    for k, v in (b.get("server_cpu_ms_per_job_by_layer") or {}).items():
        out.append(f"| server CPU, {k} | {v:.2f} |")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    r = json.loads(Path(argv[0]).read_text())
    print(phases_table(r))
    print()
    print(ratios_table(r))
    print()
    print(drift_table(r))
    print()
    print(breakdown(r))
    prof = r.get("profile") or {}
    if prof.get("by_app_frame"):
        print()
        print("| under this server line | share of the worker's Python CPU |")
        print("|---|---|")
        for frame, pct in prof["by_app_frame"][:12]:
            print(f"| `{frame}` | {pct:.1f} % |")
    rt = r.get("round_trips") or {}
    if rt:
        print()
        print("| request | PostgreSQL round trips | statements |")
        print("|---|---|---|")
        for k, v in rt.items():
            if "round_trips" in v:
                stm = "; ".join(s[:50] for s in v["statements"])
                print(f"| {k} | {v['round_trips']} | {stm} |")
        s = rt.get("service_time_ms_single_client")
        if s:
            print()
            print(f"single client, in process: floor {s['floor']:.2f} ms, claim {s['claim']:.2f} ms, "
                  f"ack {s['ack']:.2f} ms, bare round trip {s['bare_round_trip']:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
