"""Per-phase CPU accounting from /proc: who used the 2 cores during a phase.

A snapshot reads utime+stime of every process and the machine's busy time (/proc/stat); the
difference of two snapshots is split between the server's processes, the load generator's,
PostgreSQL (the bench database's backends and the server's background processes) and everything
else. Processes that exited during
the phase are lost from the split (their time still counts in ``machine_busy_s``).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _pg_role(pid: str, dbname: str) -> str:
    """``postgres`` for this database's backends and the server's own background processes
    (WAL writer, checkpointer, autovacuum...), ``postgres-other`` for backends of other
    databases (someone else's work on the same server)."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "postgres"
    is_backend = "127.0.0.1(" in title or "[local]" in title or "::1(" in title
    if is_backend and f" {dbname} " not in title:
        return "postgres-other"
    return "postgres"


def _proc_times(dbname: str = "") -> dict[int, tuple[str, float]]:
    out: dict[int, tuple[str, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        lpar, rpar = raw.find("("), raw.rfind(")")
        comm = raw[lpar + 1:rpar]
        fields = raw[rpar + 2:].split()
        # fields[0] is field 3 (state): utime is field 14, stime field 15.
        if comm == "postgres" and dbname:
            comm = _pg_role(entry.name, dbname)
        out[int(entry.name)] = (comm, (int(fields[11]) + int(fields[12])) / TICK)
    return out


def _machine() -> tuple[float, float, float, float]:
    """(busy, total, irq+softirq, steal) seconds summed over all CPUs."""
    parts = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    vals = [int(x) for x in parts[:8]]
    idle = vals[3] + vals[4]
    return ((sum(vals) - idle) / TICK, sum(vals) / TICK, (vals[5] + vals[6]) / TICK,
            vals[7] / TICK)


class CpuWindow:
    """``start()`` then ``stop(server_pids, loadgen_pids)`` -> CPU seconds per group; PostgreSQL
    counts only ``dbname``'s backends and the server's background processes."""

    def __init__(self, dbname: str = "") -> None:
        self.dbname = dbname
        self.t0 = 0.0
        self.p0: dict[int, tuple[str, float]] = {}
        self.m0 = (0.0, 0.0, 0.0, 0.0)

    def start(self) -> None:
        self.t0 = time.monotonic()
        self.p0 = _proc_times(self.dbname)
        self.m0 = _machine()

    def stop(self, server_pids: set[int], loadgen_pids: set[int]) -> dict[str, float]:
        p1 = _proc_times(self.dbname)
        m1 = _machine()
        wall = time.monotonic() - self.t0
        groups = {"server": 0.0, "loadgen": 0.0, "postgres": 0.0, "other": 0.0}
        per_server_pid: dict[str, float] = {}
        for pid, (comm, t1) in p1.items():
            t0 = self.p0.get(pid, (comm, 0.0))[1]
            d = t1 - t0
            if d <= 0:
                continue
            if pid in server_pids:
                groups["server"] += d
                per_server_pid[str(pid)] = round(d, 2)
            elif pid in loadgen_pids:
                groups["loadgen"] += d
            elif comm == "postgres":
                groups["postgres"] += d
            else:
                groups["other"] += d
        busy = m1[0] - self.m0[0]
        total = m1[1] - self.m0[1]
        irq = m1[2] - self.m0[2]
        steal = m1[3] - self.m0[3]
        # Time of processes that exited during the window (in neither snapshot).
        unaccounted = max(0.0, busy - irq - steal - sum(groups.values()))
        return {**{f"{k}_s": v for k, v in groups.items()}, "irq_softirq_s": irq,
                "steal_s": steal,
                "exited_or_unattributed_s": unaccounted,
                "server_cpu_s_by_pid": per_server_pid,
                "machine_busy_s": busy, "wall_s": wall,
                "machine_busy_pct": 100.0 * busy / total if total else 0.0}


def machine_busy_pct(seconds: float = 1.0) -> float:
    """Share of the machine's CPU time busy over ``seconds`` (all CPUs)."""
    b0, t0, _, _ = _machine()
    time.sleep(seconds)
    b1, t1, _, _ = _machine()
    return 100.0 * (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0
