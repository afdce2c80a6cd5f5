"""Dependency counters under concurrency, on PostgreSQL: parents acked at once from several
threads (each its own connection), acks racing an enqueue or a replay that adds a child to the
acked job, failures racing acks, and identical submissions racing each other."""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from django.db import connection, transaction

from ledger.exceptions import IdempotencyConflict
from ledger.models import Job, JobDependency, JobEvent, Run
from ledger.replay import job_replay
from ledger.services import Actor, job_enqueue
from ledger.submission import JobSpec, run_submit
from orchestrator.leasing import AckIn, lease_ack, lease_ack_many, lease_claim, lease_fail

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]
T = "acme"
SYSTEM = Actor.system("test")


def claim(max_jobs=100):
    return {g.job.pk: g for g in lease_claim(tenant=T, runner_id="r", job_types=["test.noop"],
                                             max_jobs=max_jobs)}


def submit(*specs: tuple[str, tuple[Any, ...]]) -> dict[str, int]:
    result = run_submit(tenant=T, project="p", name="run", actor=SYSTEM, jobs=[
        JobSpec(key=key, job_type="test.noop", max_attempts=3, depends_on=parents)
        for key, parents in specs])
    return {key: job.pk for key, job in result.jobs}


def in_threads(*calls: Callable[[], Any]) -> list[Any]:
    """Run each call in its own thread and connection, released together by a barrier."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], Any]) -> Any:
        try:
            barrier.wait(timeout=10)
            return call()
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return [f.result(timeout=60) for f in [pool.submit(run, c) for c in calls]]


def wait_until_an_ack_waits_for_a_lock(timeout: float = 10.0) -> None:
    """Poll pg_stat_activity until an orch_ack_v3 statement waits for a lock (its text is
    truncated there, so match its opening CTEs)."""
    wait_until_a_statement_waits_for_a_lock("%seen AS MATERIALIZED%", timeout)


def wait_until_a_statement_waits_for_a_lock(pattern: str, timeout: float = 10.0) -> None:
    """Poll pg_stat_activity until a statement whose text matches ``pattern`` (LIKE) waits
    for a lock."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock' AND query LIKE %s", [pattern])
            if cursor.fetchone()[0]:
                return
            time.sleep(0.01)
    raise AssertionError(f"no statement like {pattern!r} ended up waiting for a lock")


def test_two_parents_acked_at_once_release_their_join_exactly_once():
    for _ in range(50):
        ids = submit(("a", ()), ("b", ("a",)), ("c", ("a",)), ("d", ("b", "c")))
        lease_ack(tenant=T, lease_id=claim()[ids["a"]].lease.pk)
        grants = claim()
        assert set(grants) == {ids["b"], ids["c"]}
        in_threads(*[lambda g=g: lease_ack(tenant=T, lease_id=g.lease.pk)
                     for g in grants.values()])
        d = Job.objects.get(pk=ids["d"])
        assert (d.status, d.pending_parents) == ("ready", 0)
        assert JobEvent.objects.filter(job_id=d.pk, type="job.unblocked").count() == 1
        last = claim()
        assert set(last) == {d.pk}  # leased once; the next round starts clean
        lease_ack(tenant=T, lease_id=last[d.pk].lease.pk)


def test_overlapping_parents_acked_in_shuffled_batches_neither_deadlock_nor_lose_counts():
    rng = random.Random(3)
    for _ in range(10):
        parents = [(f"p{i}", ()) for i in range(8)]
        children = [(f"c{i}", tuple(f"p{j}" for j in range(8))) for i in range(8)]
        ids = submit(*parents, *children)
        grants = list(claim().values())
        assert len(grants) == 8
        rng.shuffle(grants)
        batches = [grants[i:i + 2] for i in range(0, 8, 2)]
        results = in_threads(*[
            lambda b=b: lease_ack_many(tenant=T, acks=[AckIn(lease_id=g.lease.pk) for g in b])
            for b in batches])
        assert {r.status for batch in results for r in batch} == {"succeeded"}
        kids = Job.objects.filter(pk__in=[ids[k] for k, _ in children])
        assert {(k.status, k.pending_parents) for k in kids} == {("ready", 0)}
        assert JobEvent.objects.filter(job__in=kids, type="job.unblocked").count() == 8
        for grant in claim().values():
            lease_ack(tenant=T, lease_id=grant.lease.pk)


def test_an_ack_whose_statement_predates_a_new_child_still_counts_it_down(enqueue):
    """The interleaving orch_ack_v3 is fenced against, forced: an enqueue holds the parent's
    row while the ack statement (snapshot taken) waits for it, then commits the new edge."""
    parent = enqueue()
    grant = claim()[parent.pk]
    created, commit = threading.Event(), threading.Event()
    child_ids: list[int] = []

    def enqueue_child() -> None:
        try:
            with transaction.atomic():
                child_ids.append(enqueue(depends_on=[parent.pk]).pk)
                created.set()
                assert commit.wait(timeout=10)
        finally:
            connection.close()

    def ack() -> Any:
        try:
            return lease_ack(tenant=T, lease_id=grant.lease.pk)
        finally:
            connection.close()

    writer = threading.Thread(target=enqueue_child)
    writer.start()
    assert created.wait(timeout=10)
    with ThreadPoolExecutor(max_workers=1) as pool:
        acked = pool.submit(ack)
        wait_until_an_ack_waits_for_a_lock()
        commit.set()
        writer.join(timeout=10)
        assert acked.result(timeout=10).job_status == "succeeded"
    child = Job.objects.get(pk=child_ids[0])
    assert (child.status, child.pending_parents) == ("ready", 0)
    assert JobEvent.objects.filter(job_id=child.pk, type="job.unblocked").count() == 1


def test_an_ack_racing_a_replay_that_revives_its_child_still_counts_it_down():
    """x and y are parents of d; x fails (d canceled upstream), y is leased. A replay of x
    revives d (counting y) while the ack of y waits on y's row with an older snapshot."""
    ids = submit(("x", ()), ("y", ()), ("d", ("x", "y")))
    grants = claim()
    lease_fail(tenant=T, lease_id=grants[ids["x"]].lease.pk, retryable=False,
               error={"code": "bad", "message": ""})
    assert Job.objects.get(pk=ids["d"]).status == "canceled"
    replayed, commit = threading.Event(), threading.Event()

    def replay() -> None:
        try:
            with transaction.atomic():
                job_replay(tenant=T, job_id=ids["x"], actor=SYSTEM, reason="retry")
                replayed.set()
                assert commit.wait(timeout=10)
        finally:
            connection.close()

    def ack() -> Any:
        try:
            return lease_ack(tenant=T, lease_id=grants[ids["y"]].lease.pk)
        finally:
            connection.close()

    writer = threading.Thread(target=replay)
    writer.start()
    assert replayed.wait(timeout=10)
    with ThreadPoolExecutor(max_workers=1) as pool:
        acked = pool.submit(ack)
        wait_until_an_ack_waits_for_a_lock()
        commit.set()
        writer.join(timeout=10)
        assert acked.result(timeout=10).job_status == "succeeded"
    d = Job.objects.get(pk=ids["d"])
    assert (d.status, d.pending_parents) == ("blocked", 1)  # waits on x only
    lease_ack(tenant=T, lease_id=claim()[ids["x"]].lease.pk)
    assert Job.objects.get(pk=ids["d"]).status == "ready"


def test_enqueues_of_children_racing_acks_of_their_parent_never_strand_a_child(enqueue):
    for _ in range(30):
        parent = enqueue()
        grant = claim()[parent.pk]
        child, _ = in_threads(lambda: enqueue(depends_on=[parent.pk]),  # noqa: B023
                              lambda: lease_ack(tenant=T, lease_id=grant.lease.pk))  # noqa: B023
        row = Job.objects.get(pk=child.pk)
        assert (row.status, row.pending_parents) == ("ready", 0)
        lease_ack(tenant=T, lease_id=claim()[child.pk].lease.pk)


def test_a_failure_racing_a_sibling_ack_always_cancels_the_join():
    for _ in range(30):
        ids = submit(("a", ()), ("b", ()), ("d", ("a", "b")), ("e", ("d",)))
        grants = claim()
        in_threads(
            lambda: lease_fail(tenant=T, lease_id=grants[ids["a"]].lease.pk,  # noqa: B023
                               retryable=False, error={"code": "bad", "message": ""}),
            lambda: lease_ack(tenant=T, lease_id=grants[ids["b"]].lease.pk))  # noqa: B023
        rows = {j.pk: j for j in Job.objects.filter(pk__in=[ids["d"], ids["e"]])}
        assert {j.status for j in rows.values()} == {"canceled"}
        assert not JobEvent.objects.filter(job_id__in=rows, type="job.unblocked").exists()
        assert {j.last_error["upstream_job_id"] for j in rows.values()} == {ids["a"]}


def test_identical_submissions_racing_create_one_run():
    def post() -> Any:
        return run_submit(tenant=T, project="p", name="run", actor=SYSTEM,
                          idempotency_key="same", jobs=[
                              JobSpec(key="a", job_type="test.noop", max_attempts=3),
                              JobSpec(key="b", job_type="test.noop", max_attempts=3,
                                      depends_on=("a",))])

    results = in_threads(*[post] * 10)
    assert sorted(r.replayed for r in results) == [False] + [True] * 9
    assert {r.run.pk for r in results} == {Run.objects.get().pk}
    assert Job.objects.count() == 2


def test_a_submission_racing_a_single_job_for_a_generated_key_is_a_conflict_not_a_500():
    """POST /jobs holds ``run:coll:1`` uncommitted while the submission (its check done) waits
    at the unique index; after the commit the submission's insert fails, and it answers
    idempotency_conflict naming the holder, with nothing of its own written."""
    inserted, commit = threading.Event(), threading.Event()
    holder: list[int] = []

    def hold_the_key() -> None:
        try:
            with transaction.atomic():
                holder.append(job_enqueue(
                    tenant=T, job_type="test.noop", project="p", payload={}, max_attempts=3,
                    actor=SYSTEM, idempotency_key="run:coll:1").job.pk)
                inserted.set()
                assert commit.wait(timeout=10)
        finally:
            connection.close()

    def submit_run() -> Any:
        try:
            return run_submit(tenant=T, project="p", name="n", actor=SYSTEM,
                              idempotency_key="coll", jobs=[
                                  JobSpec(key="a", job_type="test.noop", max_attempts=3),
                                  JobSpec(key="b", job_type="test.noop", max_attempts=3)])
        except IdempotencyConflict as exc:
            return exc
        finally:
            connection.close()

    writer = threading.Thread(target=hold_the_key)
    writer.start()
    assert inserted.wait(timeout=10)
    with ThreadPoolExecutor(max_workers=1) as pool:
        outcome = pool.submit(submit_run)
        wait_until_a_statement_waits_for_a_lock("%INSERT INTO%")
        commit.set()
        writer.join(timeout=10)
        error = outcome.result(timeout=10)
    assert isinstance(error, IdempotencyConflict), error
    assert (error.details["job_id"], error.details["run_id"]) == (holder[0], None)
    assert (Run.objects.count(), list(Job.objects.values_list("pk", flat=True))) == (0, holder)


def assert_join_count(job_id: int, status: str, pending: int) -> None:
    """The job's status and counter, and the counter equal to its parents not succeeded."""
    job = Job.objects.get(pk=job_id)
    parents = JobDependency.objects.filter(child_id=job_id).values_list("parent_id", flat=True)
    waiting = Job.objects.filter(pk__in=list(parents)).exclude(status="succeeded").count()
    assert (job.status, job.pending_parents) == (status, pending)
    assert waiting == (pending if status == "blocked" else 0)


def test_replays_racing_acks_and_each_other_keep_a_join_count_exact():
    """Diamond a -> b, c -> d. (1) b succeeded, c leased: a replay of b races the ack of c; d
    ends blocked waiting on b alone, whichever commits first (ready then reblocked, or
    recounted then counted down). (2) b and c succeeded, d ready: replays of b and of c race;
    d ends blocked on both, reblocked once. (3) b and c acked at once release d once."""
    for _ in range(20):
        ids = submit(("a", ()), ("b", ("a",)), ("c", ("a",)), ("d", ("b", "c")))
        lease_ack(tenant=T, lease_id=claim()[ids["a"]].lease.pk)
        grants = claim()
        lease_ack(tenant=T, lease_id=grants[ids["b"]].lease.pk)
        in_threads(lambda: job_replay(tenant=T, job_id=ids["b"], actor=SYSTEM,  # noqa: B023
                                      reason="again"),
                   lambda: lease_ack(tenant=T, lease_id=grants[ids["c"]].lease.pk))  # noqa: B023
        assert_join_count(ids["d"], "blocked", 1)
        lease_ack(tenant=T, lease_id=claim()[ids["b"]].lease.pk)
        assert_join_count(ids["d"], "ready", 0)

        reblocked = JobEvent.objects.filter(job_id=ids["d"], type="job.reblocked").count()
        in_threads(*[lambda k=k: job_replay(tenant=T, job_id=ids[k], actor=SYSTEM,  # noqa: B023
                                            reason="again") for k in ("b", "c")])
        assert_join_count(ids["d"], "blocked", 2)
        assert JobEvent.objects.filter(job_id=ids["d"], type="job.reblocked").count() == (
            reblocked + 1)

        grants = claim()
        assert set(grants) == {ids["b"], ids["c"]}  # d is not claimable
        unblocked = JobEvent.objects.filter(job_id=ids["d"], type="job.unblocked").count()
        in_threads(*[lambda g=g: lease_ack(tenant=T, lease_id=g.lease.pk)
                     for g in grants.values()])
        assert_join_count(ids["d"], "ready", 0)
        assert JobEvent.objects.filter(job_id=ids["d"], type="job.unblocked").count() == (
            unblocked + 1)
        lease_ack(tenant=T, lease_id=claim()[ids["d"]].lease.pk)
