"""Child-process body for the no-double-lease test: claim and ack until no job is left.

Runs in a fresh interpreter (multiprocessing spawn) against the test database named in the
environment, with several threads, each with its own database connection.
"""
from __future__ import annotations

import os
import random
import threading


def run(db_url: str, threads: int, seed: int) -> list[tuple[int, str, int]]:
    """Return ``[(job_id, lease_id, fencing_token)]`` of every ack this process made."""
    os.environ["ORCH_DATABASE_URL"] = db_url
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
    import django

    django.setup()
    from django.db import connection

    from orchestrator.leasing import lease_ack, lease_claim

    acked: list[tuple[int, str, int]] = []
    lock = threading.Lock()

    def loop(index: int) -> None:
        rng = random.Random(seed * 100 + index)
        try:
            while True:
                grants = lease_claim(tenant="acme", runner_id=f"p{seed}-t{index}",
                                     job_types=["test.noop"], max_jobs=rng.randint(1, 5))
                if not grants:
                    return
                for grant in grants:
                    lease_ack(tenant="acme", lease_id=grant.lease.pk)
                    with lock:
                        acked.append((grant.job.pk, str(grant.lease.pk), grant.lease.fencing_token))
        finally:
            connection.close()

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return acked
