"""Run both demo workers (Concelier and Excititor) in one process.

``python -m demo.run_workers --base-url http://localhost:8000 --token-file token.txt
[--concurrency N]``: one ``Worker`` per job type, each with ``N`` handler threads. SIGTERM or
Ctrl-C stops both gracefully (running jobs may finish for 30 s, then their leases are
released); a second signal releases at once.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import concelier, excititor
from ._common import run_workers_cli


def main(argv: Sequence[str] | None = None) -> int:
    return run_workers_cli(
        [(concelier.JOB_TYPE, concelier.handle), (excititor.JOB_TYPE, excititor.handle)],
        argv,
        "Run the Concelier and Excititor demo workers",
    )


if __name__ == "__main__":
    raise SystemExit(main())
