"""Helpers shared by the demo workers: paths, timestamps, NDJSON artifacts, the CLI."""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import re
import signal
import threading
import zlib
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stellaops_worker import JobContext, NonRetryableError, Worker, token_from_file

REPO_ROOT = Path(__file__).resolve().parents[1]
NDJSON = "application/x-ndjson"


class MalformedRecord(ValueError):
    """One record cannot be normalized; it is counted and logged, the job goes on."""


class SimulatedTransientError(RuntimeError):
    """Raised on purpose for the first k attempts of a demo job (retry path)."""

    code = "simulated_transient_failure"


def maybe_fail_transiently(ctx: JobContext) -> None:
    """Honour ``payload.simulate_transient_failures = k``: attempts 1..k raise a retryable
    error, attempt k+1 runs normally."""
    k = ctx.payload.get("simulate_transient_failures") or 0
    if not isinstance(k, int) or isinstance(k, bool) or k < 0:
        raise NonRetryableError(
            "invalid_payload", "simulate_transient_failures must be an int >= 0"
        )
    if ctx.attempt <= k:
        ctx.log("warning", f"simulating a transient failure (simulated failures: {ctx.attempt} of {k})")
        raise SimulatedTransientError(f"simulated transient failure (attempt {ctx.attempt}/{k})")


def resolve_data_path(path: object, *, root: Path = REPO_ROOT) -> Path:
    """Resolve a repo-relative payload path; refuse absolute paths and escapes from the repo.

    Raises:
        NonRetryableError: ``invalid_payload`` (bad path) or ``document_not_found``.
    """
    if not isinstance(path, str) or not path or Path(path).is_absolute():
        raise NonRetryableError("invalid_payload", f"path must be repo-relative, got {path!r}")
    resolved = (root / path).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise NonRetryableError("invalid_payload", f"path escapes the repository: {path!r}")
    if not resolved.is_file():
        raise NonRetryableError("document_not_found", f"no such file: {path}")
    return resolved


def read_text(path: Path) -> str:
    """File content as text, gunzipping ``*.gz``.

    Raises:
        NonRetryableError: ``malformed_document`` for a corrupt gzip or non-UTF-8 bytes.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rt", encoding="utf-8") as fh:
                return fh.read()
        return path.read_text(encoding="utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise NonRetryableError("document_not_found", str(exc)) from exc
        raise NonRetryableError("malformed_document", f"{path.name}: {exc}") from exc


def load_json_document(path: Path) -> Any:
    """Parse a whole JSON document (``.json`` or ``.json.gz``).

    Raises:
        NonRetryableError: ``malformed_document`` when it is not parseable JSON.
    """
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise NonRetryableError(
            "malformed_document", f"{path.name} is not valid JSON: {exc}"
        ) from exc


_ZERO_DATE = re.compile(r"^0001-01-01")


def normalize_timestamp(value: object, field: str) -> str | None:
    """RFC 3339 UTC (``...Z``) from an ISO timestamp; naive times are taken as UTC (NVD and
    some CVE records omit the zone). ``None``, ``""`` and the OSV zero date
    ``0001-01-01T00:00:00Z`` (Go vulndb) give ``None``.

    Raises:
        MalformedRecord: not a string, or not an ISO 8601 timestamp.
    """
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise MalformedRecord(f"{field} is not a string")
    if _ZERO_DATE.match(value):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise MalformedRecord(f"{field} is not an ISO timestamp: {value!r}") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat().replace("+00:00", "Z")


def artifact_dir(job_id: int) -> Path:
    """``$ORCH_ARTIFACT_DIR/<job_id>`` (default ``<repo>/var/artifacts/<job_id>``), created."""
    base = Path(os.environ.get("ORCH_ARTIFACT_DIR") or REPO_ROOT / "var" / "artifacts")
    out = base / str(job_id)
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_ndjson(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write one compact JSON object per line, atomically (a retry overwrites cleanly)."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(json.dumps(row, separators=(",", ":"), ensure_ascii=False, sort_keys=True))
            fh.write("\n")
    tmp.replace(path)


def report_malformed(
    ctx: JobContext, malformed: Sequence[tuple[int, str]], limit: int = 50
) -> None:
    """Log the first ``limit`` malformed records (and how many more) as warnings."""
    for index, reason in malformed[:limit]:
        ctx.log("warning", f"malformed record #{index}: {reason}")
    if len(malformed) > limit:
        ctx.log("warning", f"... and {len(malformed) - limit} more malformed records")


# -- CLI ------------------------------------------------------------------------------------


def add_connection_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--base-url",
        default=os.environ.get("ORCH_BASE_URL"),
        help="orchestrator URL, e.g. http://localhost:8000 (env ORCH_BASE_URL)",
    )
    parser.add_argument(
        "--token-file",
        default=os.environ.get("ORCH_TOKEN_FILE"),
        help="file holding the runner JWT, re-read when it changes (env ORCH_TOKEN_FILE)",
    )


def token_source(args: argparse.Namespace, parser: argparse.ArgumentParser) -> Callable[[], str]:
    if not args.base_url or not args.token_file:
        parser.error("--base-url and --token-file are required (or ORCH_BASE_URL/ORCH_TOKEN_FILE)")
    source = token_from_file(args.token_file)
    try:
        source()
    except (OSError, ValueError) as exc:
        parser.error(f"cannot read the token file: {exc}")
    return source


def worker_parser(description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description)
    add_connection_args(parser)
    parser.add_argument("--concurrency", type=int, default=2, help="jobs run at once (threads)")
    parser.add_argument("--runner-id", default=None, help="worker name (default host-pid-rand)")
    parser.add_argument("--wait-seconds", type=int, default=20, help="claim long-poll, 0..30")
    parser.add_argument("--max-jobs", type=int, default=None, help="leases per claim, 1..100")
    parser.add_argument("--log-level", default="INFO")
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(threadName)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)


def run_workers_cli(
    specs: Sequence[tuple[str, Callable[[JobContext], dict[str, Any] | None]]],
    argv: Sequence[str] | None,
    description: str,
) -> int:
    """Run one ``Worker`` per ``(job_type, handler)`` until SIGTERM/SIGINT.

    With one worker it runs on the main thread and installs its own signal handlers. With
    several, each runs on a thread and this function forwards signals: the first stops
    them gracefully, the second releases their leases at once.
    """
    parser = worker_parser(description)
    args = parser.parse_args(argv)
    token = token_source(args, parser)
    setup_logging(args.log_level)
    workers = [
        Worker(
            args.base_url,
            token,
            [job_type],
            handler,
            runner_id=None if args.runner_id is None else f"{args.runner_id}-{job_type}",
            concurrency=args.concurrency,
            max_jobs=args.max_jobs,
            wait_seconds=args.wait_seconds,
            install_signal_handlers=len(specs) == 1,
        )
        for job_type, handler in specs
    ]
    if len(workers) == 1:
        workers[0].run()
        return 0
    stopping = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        graceful = not stopping.is_set()
        stopping.set()
        for worker in workers:
            worker.stop(graceful=graceful)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    errors: list[BaseException] = []

    def run(worker: Worker) -> None:
        try:
            worker.run()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            for other in workers:
                other.stop()

    threads = [
        threading.Thread(target=run, args=(w,), name=f"worker-{i}") for i, w in enumerate(workers)
    ]
    for thread in threads:
        thread.start()
    for worker in workers:
        while not worker.wait_stopped(0.5):
            pass
    for thread in threads:
        thread.join()
    if errors:
        logging.getLogger("demo").error("worker failed: %s", errors[0])
        return 1
    return 0
