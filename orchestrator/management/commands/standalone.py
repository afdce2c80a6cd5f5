"""``manage.py standalone``: the whole orchestrator in one command, on SQLite, no servers.

Migrates, seeds the ``demo`` tenant (tokens, an admin user), starts the ASGI server (uvicorn)
and the embedded beat (reaper + scheduler), starts the demo workers, enqueues a run over the
real advisory and VEX data in ``demo/data``, waits for it, prints a summary, then keeps serving
until Ctrl-C (``--exit-after-summary`` exits instead, for scripts; exit code 1 if the run did
not finish).
"""
from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count, Sum

from ledger.models import Artifact, Job, JobEvent
from ledger.states import TERMINAL
from orchestrator import wakeups
from orchestrator.embedded_beat import EmbeddedBeat
from orchestrator.tokens import token_issue

TENANT = "demo"


class Command(BaseCommand):
    help = "Run the orchestrator, its background tasks and the demo workers over the demo data."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--workers", type=int, default=2, help="demo worker processes")
        parser.add_argument("--worker-concurrency", type=int, default=2)
        parser.add_argument("--timeout-seconds", type=int, default=600,
                            help="give up waiting for the run after this long")
        parser.add_argument("--exit-after-summary", action="store_true",
                            help="stop everything after the summary (for scripts)")
        parser.add_argument("--no-demo", action="store_true",
                            help="serve only: no demo workers and no demo run")

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.STANDALONE:
            raise CommandError("standalone runs only with ORCH_MODE=standalone")
        base_url = f"http://{options['host']}:{options['port']}"
        call_command("migrate", interactive=False, verbosity=0)
        tokens = self._seed()
        server, server_thread = self._start_server(options["host"], options["port"])
        beat = EmbeddedBeat()
        beat.start()
        workers: list[subprocess.Popen[bytes]] = []
        finished = True
        try:
            self._wait_ready(base_url)
            self.stdout.write(f"orchestrator up at {base_url} (SQLite: {settings.DATABASES['default']['NAME']})")
            if not options["no_demo"]:
                workers = self._start_workers(base_url, tokens["runner"], options)
                run_id = self._enqueue_demo_run(base_url, tokens["operator"])
                finished = self._wait_for_run(run_id, options["timeout_seconds"])
                self._summary(run_id, base_url, tokens, finished)
            if not options["exit_after_summary"]:
                self.stdout.write("Serving; Ctrl-C to stop.")
                stop = threading.Event()
                for signum in (signal.SIGINT, signal.SIGTERM):
                    signal.signal(signum, lambda *_: stop.set())
                # Wake up now and then: a signal handler only runs between bytecodes.
                while not stop.wait(0.5):
                    pass
                self.stdout.write("Stopping...")
        finally:
            # End open long polls at once, so the workers' claims return; then the workers,
            # which release their leases through the server on the way out; then the server.
            wakeups.close()
            self._stop_workers(workers)
            beat.stop()
            server.should_exit = True
            server_thread.join(timeout=10)
        if not finished:
            raise CommandError("the demo run did not finish in time")

    def _seed(self) -> dict[str, Path]:
        token_dir = settings.VAR_DIR / "tokens"
        token_dir.mkdir(parents=True, exist_ok=True)
        paths = {}
        for name, scopes in (("runner", ["orch:runner"]),
                             ("operator", ["orch:operate", "orch:read"])):
            path = token_dir / f"{name}.jwt"
            path.write_text(token_issue(tenant=TENANT, scopes=scopes, subject=f"demo-{name}",
                                        ttl=timedelta(days=30)), encoding="utf-8")
            path.chmod(0o600)
            paths[name] = path
        password_file = settings.VAR_DIR / "admin-password.txt"
        user_model = get_user_model()
        if not user_model.objects.filter(username="admin").exists():
            password = secrets.token_urlsafe(12)
            user_model.objects.create_superuser("admin", "admin@localhost", password)
            password_file.write_text(password, encoding="utf-8")
            password_file.chmod(0o600)
        paths["admin_password"] = password_file
        return paths

    def _start_server(self, host: str, port: int) -> tuple[uvicorn.Server, threading.Thread]:
        # A short graceful shutdown: long polls still open after it are cut, and their
        # runners simply claim again elsewhere.
        config = uvicorn.Config("orchestrator.asgi:application", host=host, port=port,
                                log_level="warning", lifespan="off", timeout_graceful_shutdown=2)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
        thread.start()
        return server, thread

    def _wait_ready(self, base_url: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                if httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise CommandError(f"the server did not answer at {base_url}/healthz")
            time.sleep(0.1)

    def _start_workers(self, base_url: str, token: Path, options: dict[str, Any]) -> list[subprocess.Popen[bytes]]:
        env = {**os.environ, "ORCH_ARTIFACT_DIR": str(settings.VAR_DIR / "artifacts")}
        command = [sys.executable, "-m", "demo.run_workers", "--base-url", base_url,
                   "--token-file", str(token), "--concurrency", str(options["worker_concurrency"])]
        return [subprocess.Popen(command, cwd=settings.BASE_DIR, env=env)
                for _ in range(options["workers"])]

    def _stop_workers(self, workers: list[subprocess.Popen[bytes]]) -> None:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
        for worker in workers:
            try:
                worker.wait(timeout=40)
            except subprocess.TimeoutExpired:
                worker.kill()

    def _enqueue_demo_run(self, base_url: str, token: Path) -> int:
        from demo.plan import demo_jobs

        tag = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        headers = {"Authorization": f"Bearer {token.read_text().strip()}"}
        with httpx.Client(base_url=f"{base_url}/api/v1", headers=headers, timeout=30) as client:
            run = client.post("/runs", json={"project": "demo", "name": f"demo ingestion {tag}"})
            run.raise_for_status()
            run_id = run.json()["run_id"]
            jobs = demo_jobs(run_tag=tag)
            for body in jobs:
                client.post("/jobs", json={**body, "run_id": run_id}).raise_for_status()
        self.stdout.write(f"enqueued run {run_id}: {len(jobs)} jobs over demo/data")
        return run_id

    def _wait_for_run(self, run_id: int, timeout: int) -> bool:
        deadline = time.monotonic() + timeout
        while Job.objects.filter(run_id=run_id).exclude(status__in=TERMINAL).exists():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def _summary(self, run_id: int, base_url: str, tokens: dict[str, Path], finished: bool) -> None:
        jobs = Job.objects.filter(run_id=run_id)
        counts = dict(jobs.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
        retried = jobs.filter(events__type__in=["job.retry_scheduled", "lease.expired"]).distinct().count()
        records = malformed = 0
        for result in jobs.filter(status="succeeded").values_list("result", flat=True):
            records += int((result or {}).get("records", 0))
            malformed += int((result or {}).get("malformed", 0))
        artifacts = Artifact.objects.filter(job__run_id=run_id).aggregate(n=Count("id"), size=Sum("size_bytes"))
        dead = jobs.filter(status="dead_lettered").values_list("pk", "last_error")
        w = self.stdout.write
        w("")
        w(f"=== demo run {run_id} {'finished' if finished else 'DID NOT FINISH'} ===")
        w(f"jobs: {sum(counts.values())} | succeeded {counts.get('succeeded', 0)} | "
          f"retried {retried} | dead-lettered {counts.get('dead_lettered', 0)} | "
          f"canceled {counts.get('canceled', 0)} | unfinished {sum(v for k, v in counts.items() if k not in TERMINAL)}")
        w(f"records ingested: {records} (malformed records skipped: {malformed})")
        w(f"artifacts: {artifacts['n']} NDJSON files, {artifacts['size'] or 0} bytes, under {settings.VAR_DIR / 'artifacts'}")
        for pk, error in dead:
            w(f"dead letter: job {pk}: {(error or {}).get('code')}: {(error or {}).get('message', '')[:120]}")
        w(f"events recorded: {JobEvent.objects.filter(job__run_id=run_id).count()}")
        w(f"portal:  {base_url}/            admin: {base_url}/admin/ (user admin, password in {tokens['admin_password']})")
        w(f"API:     {base_url}/api/v1/jobs  docs: {base_url}/api/docs/  schema: {base_url}/api/schema/")
        w(f"tokens:  {tokens['operator']} (orch:operate, orch:read), {tokens['runner']} (orch:runner)")
        w(f"try:     curl -H \"Authorization: Bearer $(cat {tokens['operator']})\" {base_url}/api/v1/runs/{run_id}")
