"""Deep and wide dependency graphs on PostgreSQL: the descendant walks of fail and replay are
recursive queries, so their statement count does not grow with the depth, and they agree with
the ORM walks SQLite uses."""
from __future__ import annotations

import random
import time

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from ledger import dependencies, replay
from ledger.models import Job, JobDependency, JobEvent
from ledger.replay import job_replay
from ledger.services import Actor
from ledger.submission import MAX_JOBS, JobSpec, run_submit
from orchestrator.leasing import lease_claim, lease_fail

pytestmark = [pytest.mark.postgres, pytest.mark.django_db]
T = "acme"
OP = Actor.system("test-operator")
# A walk is a handful of statements per lock round plus a few per 1000 rows written; one
# statement per level (the bug) would be thousands for these depths.
MAX_STATEMENTS = 60


def deep_chain(depth: int) -> list[int]:
    """A chain j0 -> j1 -> ... of ``depth`` jobs, in submissions of MAX_JOBS (each later one
    continues from the last job id of the one before); returns the ids top to bottom."""
    ids: list[int] = []
    for start in range(0, depth, MAX_JOBS):
        specs = []
        for i in range(start, min(depth, start + MAX_JOBS)):
            parent: tuple[str | int, ...] = ()
            if i > start:
                parent = (f"j{i - 1}",)
            elif ids:
                parent = (ids[-1],)
            specs.append(JobSpec(key=f"j{i}", job_type="test.noop", max_attempts=1,
                                 depends_on=parent))
        result = run_submit(tenant=T, project="p", name="deep", actor=OP, jobs=specs)
        ids += [job.pk for _, job in result.jobs]
    return ids


def test_a_failure_on_top_of_a_2000_deep_chain_cancels_it_all_and_replay_revives_it():
    ids = deep_chain(2000)
    [grant] = lease_claim(tenant=T, runner_id="r", job_types=["test.noop"], max_jobs=10)
    assert grant.job.pk == ids[0]

    started = time.monotonic()
    with CaptureQueriesContext(connection) as fail_queries:
        lease_fail(tenant=T, lease_id=grant.lease.pk, retryable=False,
                   error={"code": "bad_input", "message": "no"})
    fail_seconds = time.monotonic() - started
    rows = Job.objects.filter(pk__in=ids[1:])
    assert rows.count() == 1999
    assert set(rows.values_list("status", flat=True)) == {"canceled"}
    assert {r.last_error["upstream_job_id"] for r in rows.only("last_error")} == {ids[0]}
    assert JobEvent.objects.filter(job_id__in=ids[1:], type="job.canceled",
                                   reason="upstream_failed").count() == 1999
    assert len(fail_queries) < MAX_STATEMENTS, len(fail_queries)
    assert fail_seconds < 10, fail_seconds

    started = time.monotonic()
    with CaptureQueriesContext(connection) as replay_queries:
        result = job_replay(tenant=T, job_id=ids[0], actor=OP, reason="fixed")
    replay_seconds = time.monotonic() - started
    assert result.job.status == "ready" and result.revived_job_ids == ids[1:]
    assert set(rows.values_list("status", "pending_parents")) == {("blocked", 1)}
    assert len(replay_queries) < MAX_STATEMENTS, len(replay_queries)
    assert replay_seconds < 10, replay_seconds


def test_a_7000_wide_fan_out_is_canceled_and_revived_within_seconds():
    """7000 children of one job. The replay wrote them with ``bulk_update`` (a CASE arm per row
    and field: over 20 s of Python under the locks); the writes are now one UPDATE per
    distinct set of values, and reads, locks and writes go 1000 ids at a time."""
    [(_, parent)] = run_submit(tenant=T, project="p", name="wide", actor=OP, jobs=[
        JobSpec(key="p", job_type="test.noop", max_attempts=1)]).jobs
    children = Job.objects.bulk_create([
        Job(tenant=T, project="p", job_type="test.child", payload={}, status="blocked",
            max_attempts=1, pending_parents=1, created_at=parent.created_at,
            updated_at=parent.created_at) for _ in range(7000)])
    JobDependency.objects.bulk_create([
        JobDependency(parent_id=parent.pk, child_id=c.pk, tenant=T) for c in children],
        batch_size=2000)
    [grant] = lease_claim(tenant=T, runner_id="r", job_types=["test.noop"], max_jobs=1)
    started = time.monotonic()
    lease_fail(tenant=T, lease_id=grant.lease.pk, retryable=False,
               error={"code": "bad_input", "message": "no"})
    fail_seconds = time.monotonic() - started
    wide = Job.objects.filter(job_type="test.child")
    assert set(wide.values_list("status", flat=True)) == {"canceled"}
    assert fail_seconds < 10, fail_seconds

    started = time.monotonic()
    result = job_replay(tenant=T, job_id=parent.pk, actor=OP, reason="fixed")
    replay_seconds = time.monotonic() - started
    assert result.revived_job_ids == [c.pk for c in children]
    assert set(wide.values_list("status", "pending_parents", "last_error", "attempt")) == {
        ("blocked", 1, None, 0)}
    assert JobEvent.objects.filter(job__in=wide, type="job.replayed").count() == 7000
    assert replay_seconds < 10, replay_seconds


def test_chunks_are_ascending_distinct_and_bounded():
    assert list(dependencies.chunks([5, 3, 3, 9, 1], size=2)) == [[1, 3], [5, 9]]
    assert list(dependencies.chunks([])) == []


def test_the_recursive_walks_agree_with_the_orm_walks():
    """Random DAGs with random statuses: ``blocked_below`` and the replay reach find the same
    jobs as their level-by-level ORM versions (the SQLite path)."""
    rng = random.Random(11)
    # (not leased: a leased row needs a lease, job_lease_consistent)
    statuses = ["blocked", "scheduled", "ready", "succeeded", "dead_lettered", "canceled"]
    for round_ in range(5):
        n = 60
        specs = [JobSpec(key=f"k{i}", job_type="test.noop", max_attempts=1,
                         depends_on=tuple(f"k{p}" for p in range(i) if rng.random() < 0.08))
                 for i in range(n)]
        ids = [job.pk for _, job in run_submit(tenant=T, project="p", name=f"r{round_}",
                                               actor=OP, jobs=specs).jobs]
        for pk in ids:
            state = rng.choice(statuses)
            error = None
            if state == "canceled":
                error = rng.choice([{"code": "upstream_failed"}, {"code": "operator"}, None,
                                    "upstream_failed", ["upstream_failed"]])
            Job.objects.filter(pk=pk).update(status=state, last_error=error)
        for _ in range(10):
            roots = set(rng.sample(ids, rng.randint(1, 3)))
            jit = jit_setting()
            assert dependencies.blocked_below(roots) == dependencies.blocked_below_orm(roots)
            root = rng.choice(ids)
            for rerun in (False, True):
                assert replay._reach(root, rerun) == replay.reach_orm(root, rerun), (root, rerun)
            assert jit_setting() == jit  # the walks put it back


def jit_setting() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_setting('jit')")
        return cursor.fetchone()[0]
