"""The Procrastinate 3.10 peer: no-op jobs through its own worker, on its own schema.

``app`` is what ``procrastinate --app=bench.procr.app worker`` loads; it reads its DSN and
schema from BENCH_PROCRASTINATE_DSN / BENCH_PROCRASTINATE_SCHEMA (set by ``bench.run``), and
puts every connection's ``search_path`` on that schema so its tables, types and functions never
touch the orchestrator's.
"""
from __future__ import annotations

import os

from procrastinate import App, PsycopgConnector

SCHEMA = os.environ.get("BENCH_PROCRASTINATE_SCHEMA", "procrastinate_bench")
DSN = os.environ.get("BENCH_PROCRASTINATE_DSN", "postgresql://postgres@127.0.0.1:5432/orchestrator_bench")
QUEUE = "bench"


def _connector() -> PsycopgConnector:
    return PsycopgConnector(conninfo=DSN, kwargs={"options": f"-c search_path={SCHEMA}"},
                            min_size=1, max_size=10)


app = App(connector=_connector())


@app.task(name="bench.noop", queue=QUEUE)
async def noop(i: int = 0) -> None:
    """A no-op job."""
    return None
