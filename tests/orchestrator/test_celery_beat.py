"""The wiring is real: a Celery worker with beat, on Redis, reaps an expired lease."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta

import pytest
import redis
from django.db import connection

from ledger.clock import db_now
from ledger.models import Job, JobEvent
from orchestrator.leasing import lease_claim

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.postgres]
BROKER = "redis://127.0.0.1:6379/15"


def test_celery_beat_drives_the_reaper(enqueue, tmp_path):
    job = enqueue(max_attempts=1)
    lease_claim(tenant="acme", runner_id="gone", job_types=["test.noop"], max_jobs=1,
                now=db_now() - timedelta(minutes=10))  # a lease that expired long ago
    redis.Redis.from_url(BROKER).flushdb()
    s = connection.settings_dict
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "tests.settings",
           "ORCH_DATABASE_URL": f"postgres://{s['USER']}@{s['HOST']}:{s['PORT']}/{s['NAME']}",
           "ORCH_CELERY_BROKER_URL": BROKER, "ORCH_REAPER_PERIOD_SECONDS": "1"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "orchestrator", "worker", "--beat",
         "--schedule", str(tmp_path / "beat-schedule"), "--pool", "solo", "--loglevel", "INFO"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while Job.objects.get(pk=job.pk).status == "leased":
            assert worker.poll() is None, worker.stdout.read()
            assert time.monotonic() < deadline, "the reaper did not run within 60 s"
            time.sleep(0.2)
    finally:
        worker.terminate()
        try:
            output, _ = worker.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            output, _ = worker.communicate()
    assert Job.objects.get(pk=job.pk).status == "dead_lettered"
    event = JobEvent.objects.get(job=job, type="lease.expired")
    assert event.actor_label == "reaper"
    assert "orch.leases.reap_expired" in output
