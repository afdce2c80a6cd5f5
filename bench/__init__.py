"""Benchmark of the Task Runner bridge: ``python -m bench.run [--quick]`` (see docs/performance.md).

Modules:

* ``run``: the single entry point; sets up the ``orchestrator_bench`` database, starts and
  stops every server, runs the phases, prints the table and writes ``bench/results/*.json``.
* ``loadgen``: the load generator (processes x threads, raw keep-alive HTTP/1.1 sockets); the
  same harness drives the HTTP floor, the bridge and the raw SQL baseline.
* ``servers``: start/readiness/stop of gunicorn, uvicorn, workers and py-spy (process groups).
* ``procr``: the Procrastinate 3.10 peer (its own schema in the same database).
* ``cpu``: per-phase CPU accounting from /proc (load generator, server, PostgreSQL).
* ``profiling``: round trips per request, the py-spy breakdown of a worker under load, the
  claim statement's plan.
* ``report``: Markdown tables of a results file (for docs/performance.md).
"""
