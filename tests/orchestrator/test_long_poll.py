"""Long-poll claims: woken by an enqueue, no transaction held while waiting, no tight loop."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from orchestrator import wakeups
from orchestrator.leasing import lease_claim_wait
from tests.waiting import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_a_waiting_claim_is_woken_by_an_enqueue(enqueue, settings):
    # Re-checks every 60 s: only the wake-up can make the claim return within the test.
    settings.ORCH_CLAIM_POLL_MIN_MS = settings.ORCH_CLAIM_POLL_MAX_MS = 60_000
    result = {}

    def wait():
        try:
            started = time.monotonic()
            result["grants"] = lease_claim_wait(wait=timedelta(seconds=20), tenant="acme",
                                                runner_id="r", job_types=["test.noop"], max_jobs=1)
            result["waited"] = time.monotonic() - started
        finally:
            connection.close()

    waiter = threading.Thread(target=wait)
    waiter.start()
    wait_until(lambda: wakeups.waiting() == 1)
    job = enqueue()
    waiter.join(timeout=20)
    assert not waiter.is_alive()
    assert [g.job.pk for g in result["grants"]] == [job.pk]
    assert result["waited"] < 10, "woken by the enqueue, not by the end of the wait"


@pytest.mark.postgres
def test_a_waiting_claim_holds_no_transaction_and_does_not_busy_poll(settings):
    pid = {}
    seen_states = []

    def watch(stop: threading.Event):
        try:
            with connections["default"].cursor() as cursor:
                while not stop.is_set():
                    cursor.execute(
                        "SELECT state, EXTRACT(EPOCH FROM clock_timestamp() - xact_start) "
                        "FROM pg_stat_activity WHERE pid = %s", [pid["pid"]])
                    row = cursor.fetchone()
                    if row:
                        seen_states.append((row[0], float(row[1] or 0)))
                    stop.wait(0.02)
        finally:
            connections["default"].close()

    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid["pid"] = cursor.fetchone()[0]
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(stop,))
    watcher.start()
    try:
        with CaptureQueriesContext(connection) as queries:
            grants = lease_claim_wait(wait=timedelta(seconds=2), tenant="acme", runner_id="r",
                                      job_types=["test.noop"], max_jobs=1)
    finally:
        stop.set()
        watcher.join()
    assert grants == []
    claims = [q for q in queries.captured_queries if "FROM ledger_lane" in q["sql"]]
    # poll 50 ms doubling to ORCH_CLAIM_POLL_MAX_MS (200 ms in tests): about 12 attempts in 2 s
    assert 3 <= len(claims) <= 2 * 1000 // settings.ORCH_CLAIM_POLL_MAX_MS + 6
    # Each attempt is a transaction of a few milliseconds; the 2 s wait itself holds none.
    assert len(seen_states) > 20
    assert max(age for _, age in seen_states) < 0.25
    assert sum(state == "idle" for state, _ in seen_states) > len(seen_states) * 0.8
