"""Dependency chains: depends_on, whole-run submission, DAG order through the real claim,
upstream failure (fail, reaper, operator cancel) and replay. Runs on PostgreSQL and SQLite."""
from __future__ import annotations

import random
from datetime import timedelta

import pytest
from django.db import connection

from ledger.clock import db_now
from ledger.exceptions import UnknownParent, UpstreamFailed
from ledger.models import Artifact, Job, JobDependency, JobEvent, Run
from ledger.replay import job_replay
from ledger.services import Actor, job_cancel
from ledger.states import IllegalTransition
from orchestrator.exceptions import LeaseLost
from orchestrator.leasing import (
    AckIn,
    ArtifactIn,
    lease_ack,
    lease_ack_many,
    lease_claim,
    lease_fail,
)
from orchestrator.reaper import leases_reap_expired

pytestmark = pytest.mark.django_db
T = "acme"
OP = Actor.system("test-operator")


def claim(max_jobs=100, runner="r", **kw):
    return lease_claim(tenant=T, runner_id=runner, job_types=["test.noop"], max_jobs=max_jobs,
                       **kw)


def run_until_idle():
    """Claim and ack every claimable job, round by round; return the job ids of each round."""
    rounds = []
    while grants := claim():
        rounds.append(sorted(g.job.pk for g in grants))
        for grant in grants:
            lease_ack(tenant=T, lease_id=grant.lease.pk)
    return rounds


def status(*jobs):
    found = dict(Job.objects.filter(pk__in=[j.pk for j in jobs]).values_list("pk", "status"))
    return [found[j.pk] for j in jobs]


def counts():
    return (Job.objects.count(), JobDependency.objects.count(), JobEvent.objects.count(),
            Run.objects.count())


def submit(operator, jobs, **body):
    body.setdefault("project", "p")
    body.setdefault("name", "nightly")
    return operator.post("/api/v1/runs/submit", {**body, "jobs": jobs}, format="json")


def job(key, *parents, **kw):
    return {"key": key, "job_type": "test.noop", "depends_on": list(parents), **kw}


def by_key(response):
    return {j["key"]: j["job_id"] for j in response.json()["jobs"]}


def fail_hard(grant):
    return lease_fail(tenant=T, lease_id=grant.lease.pk, retryable=False,
                      error={"code": "bad_input", "message": "no"})


def upstream_event(job_id):
    return JobEvent.objects.filter(job_id=job_id, type="job.canceled").get()


def assert_dependency_counts_exact():
    """Every blocked job counts exactly its parents that have not succeeded; every ready or
    scheduled job has only succeeded parents."""
    statuses = dict(Job.objects.values_list("pk", "status"))
    waiting: dict[int, int] = {}
    for parent, child in JobDependency.objects.values_list("parent_id", "child_id"):
        waiting[child] = waiting.get(child, 0) + (statuses[parent] != "succeeded")
    for pk, state, pending in Job.objects.values_list("pk", "status", "pending_parents"):
        if state == "blocked":
            assert pending == waiting.get(pk, 0), (pk, pending, waiting.get(pk, 0))
        elif state in ("ready", "scheduled"):
            assert (pending, waiting.get(pk, 0)) == (0, 0), pk


# --- depends_on at enqueue -------------------------------------------------------------------

def test_a_chain_runs_in_order_and_a_child_is_never_leased_before_its_parent_succeeded(enqueue):
    a = enqueue()
    b = enqueue(depends_on=[a.pk])
    c = enqueue(depends_on=[b.pk])
    assert status(a, b, c) == ["ready", "blocked", "blocked"]
    assert [Job.objects.get(pk=j.pk).pending_parents for j in (b, c)] == [1, 1]
    assert run_until_idle() == [[a.pk], [b.pk], [c.pk]]
    assert status(a, b, c) == ["succeeded"] * 3
    event = JobEvent.objects.get(job_id=c.pk, type="job.unblocked")
    assert (event.from_status, event.to_status, event.data) == (
        "blocked", "ready", {"parent_job_ids": [b.pk]})


def test_a_failing_or_retried_parent_keeps_its_child_blocked(enqueue):
    a = enqueue(max_attempts=3)
    b = enqueue(depends_on=[a.pk])
    grant = claim()[0]
    lease_fail(tenant=T, lease_id=grant.lease.pk, retryable=True, retry_after=timedelta(0),
               error={"code": "flaky", "message": "again"})
    assert status(a, b) == ["scheduled", "blocked"] and claim() == []


def test_a_parent_that_already_succeeded_does_not_count(enqueue):
    a = enqueue()
    run_until_idle()
    b = enqueue(depends_on=[a.pk])
    assert status(b) == ["ready"] and Job.objects.get(pk=b.pk).pending_parents == 0


def test_a_child_with_a_future_start_is_scheduled_when_unblocked(enqueue):
    a = enqueue()
    later = db_now() + timedelta(hours=1)
    b = enqueue(depends_on=[a.pk], not_before=later)
    assert status(b) == ["blocked"]
    run_until_idle()
    assert status(b) == ["scheduled"]
    assert JobEvent.objects.get(job_id=b.pk, type="job.unblocked").to_status == "scheduled"


def test_enqueue_api_takes_depends_on_and_shows_parents(operator):
    a = operator.post("/api/v1/jobs", {"job_type": "test.noop", "project": "p"}, format="json")
    b = operator.post("/api/v1/jobs", {"job_type": "test.noop", "project": "p",
                                       "depends_on": [a.json()["job_id"]]}, format="json")
    assert b.status_code == 201, b.json()
    assert (b.json()["status"], b.json()["depends_on"], b.json()["pending_parents"]) == (
        "blocked", [a.json()["job_id"]], 1)


@pytest.mark.parametrize("depends_on,code", [
    (["1"], "validation_error"), ([True], "validation_error"), ([0], "validation_error"),
    ([1.0], "validation_error"), ("1", "validation_error"), ([1] * 1001, "validation_error"),
])
def test_enqueue_api_refuses_malformed_depends_on(operator, depends_on, code):
    before = counts()
    response = operator.post("/api/v1/jobs", {"job_type": "test.noop", "project": "p",
                                              "depends_on": depends_on}, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == code
    assert counts() == before


def test_unknown_or_foreign_parents_are_refused_naming_them_and_nothing_is_written(
        operator, enqueue):
    foreign = enqueue(tenant="other")
    mine = enqueue()
    before = counts()
    response = operator.post("/api/v1/jobs", {
        "job_type": "test.noop", "project": "p",
        "depends_on": [mine.pk, foreign.pk, 999_999]}, format="json")
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "unknown_parent"
    assert error["details"]["job_ids"] == sorted([foreign.pk, 999_999])
    assert counts() == before


@pytest.mark.parametrize("end", ["dead_lettered", "canceled"])
def test_a_parent_that_already_failed_is_refused_with_upstream_failed(operator, enqueue, end):
    parent = enqueue()
    if end == "dead_lettered":
        fail_hard(claim()[0])
    else:
        job_cancel(tenant=T, job_id=parent.pk, actor=OP, reason="no")
    before = counts()
    response = operator.post("/api/v1/jobs", {"job_type": "test.noop", "project": "p",
                                              "depends_on": [parent.pk]}, format="json")
    assert response.status_code == 409
    assert response.json()["error"] == {
        "code": "upstream_failed", "message": response.json()["error"]["message"],
        "details": {"parents": [{"job_id": parent.pk, "status": end}]}}
    assert counts() == before


def test_depends_on_is_part_of_the_idempotency_digest(operator, enqueue):
    a, b = enqueue(), enqueue()
    body = {"job_type": "test.noop", "project": "p", "idempotency_key": "k",
            "depends_on": [b.pk, a.pk]}
    first = operator.post("/api/v1/jobs", body, format="json")
    same = operator.post("/api/v1/jobs", {**body, "depends_on": [a.pk, b.pk, a.pk]},
                         format="json")
    other = operator.post("/api/v1/jobs", {**body, "depends_on": [a.pk]}, format="json")
    assert (first.status_code, same.status_code, other.status_code) == (201, 200, 409)
    assert same.json()["job_id"] == first.json()["job_id"]
    assert other.json()["error"]["code"] == "idempotency_conflict"


def test_the_service_raises_domain_errors(enqueue):
    with pytest.raises(UnknownParent):
        enqueue(depends_on=[123_456])
    parent = enqueue()
    job_cancel(tenant=T, job_id=parent.pk, actor=OP, reason="x")
    with pytest.raises(UpstreamFailed):
        enqueue(depends_on=[parent.pk])


# --- whole-run submission --------------------------------------------------------------------

def test_a_submitted_diamond_runs_parents_first_and_its_join_once(operator):
    response = submit(operator, [job("d", "b", "c"), job("c", "a"), job("b", "a"), job("a")],
                      correlation_id="corr-1")
    assert response.status_code == 201, response.json()
    ids = by_key(response)
    assert [j["key"] for j in response.json()["jobs"]] == ["d", "c", "b", "a"]  # request order
    assert ids["a"] < ids["b"] and ids["a"] < ids["c"] and max(ids["b"], ids["c"]) < ids["d"]
    jobs = {j.pk: j for j in Job.objects.all()}
    assert {jobs[i].status for i in (ids["b"], ids["c"], ids["d"])} == {"blocked"}
    assert jobs[ids["d"]].pending_parents == 2
    assert {j.correlation_id for j in jobs.values()} == {"corr-1"}
    assert {j.run_id for j in jobs.values()} == {response.json()["run"]["run_id"]}
    rounds = run_until_idle()
    assert rounds == [[ids["a"]], sorted([ids["b"], ids["c"]]), [ids["d"]]]
    assert JobEvent.objects.filter(job_id=ids["d"], type="job.unblocked").count() == 1


def test_a_batch_ack_of_two_parents_counts_their_child_down_by_two(operator):
    ids = by_key(submit(operator, [job("a"), job("b"), job("c", "a", "b")]))
    grants = claim()
    assert sorted(g.job.pk for g in grants) == sorted([ids["a"], ids["b"]])
    results = lease_ack_many(tenant=T, acks=[AckIn(lease_id=g.lease.pk) for g in grants])
    assert {r.status for r in results} == {"succeeded"}
    child = Job.objects.get(pk=ids["c"])
    assert (child.status, child.pending_parents) == ("ready", 0)
    event = JobEvent.objects.get(job_id=child.pk, type="job.unblocked")
    # the parents acked by the statement that released it: both on PostgreSQL (one statement),
    # the last one on SQLite (each ack of a batch is its own transaction there)
    expected = [ids["a"], ids["b"]] if connection.vendor == "postgresql" else [ids["b"]]
    assert event.data == {"parent_job_ids": expected}


def test_a_submission_may_depend_on_existing_jobs(operator, enqueue):
    done, running = enqueue(), enqueue()
    lease_ack(tenant=T, lease_id=claim(max_jobs=1)[0].lease.pk)  # `done` succeeds
    response = submit(operator, [job("x", done.pk), job("y", running.pk, "x")])
    ids = by_key(response)
    assert [Job.objects.get(pk=ids[k]).pending_parents for k in ("x", "y")] == [0, 2]
    assert response.json()["jobs"][0]["status"] == "ready"


def test_a_cycle_is_refused_naming_it_and_nothing_is_written(operator, enqueue):
    enqueue()
    before = counts()
    response = submit(operator, [job("a"), job("b", "a", "d"), job("c", "b"), job("d", "c"),
                                 job("e", "d")])
    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "dependency_cycle"
    cycle = error["details"]["cycle"]
    assert cycle[0] == cycle[-1] and set(cycle) == {"b", "c", "d"}
    assert counts() == before


def test_a_self_dependency_is_a_cycle(operator):
    response = submit(operator, [job("a", "a")])
    assert response.status_code == 422
    assert response.json()["error"]["details"]["cycle"] == ["a", "a"]


def test_unknown_keys_and_ids_are_refused_together_and_nothing_is_written(operator, enqueue):
    foreign = enqueue(tenant="other")
    before = counts()
    response = submit(operator, [job("a", "ghost"), job("b", foreign.pk, "a")])
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "unknown_parent"
    assert response.json()["error"]["details"] == {"keys": ["ghost"], "job_ids": [foreign.pk]}
    assert counts() == before


def test_a_failed_existing_parent_refuses_the_whole_submission(operator, enqueue):
    parent = enqueue()
    job_cancel(tenant=T, job_id=parent.pk, actor=OP, reason="no")
    before = counts()
    response = submit(operator, [job("a"), job("b", parent.pk)])
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "upstream_failed"
    assert counts() == before


@pytest.mark.parametrize("jobs,fragment", [
    ([], "jobs"),
    ([job("a"), job("a")], "jobs"),
    ([job("a/b")], "jobs"),
    ([job("a", 1.5)], "jobs"),
    ([job("a", False)], "jobs"),
    ([job(f"j{i}") for i in range(1001)], "jobs"),
    ([job(f"j{i}", *[f"k{n}" for n in range(1000)]) for i in range(11)], "jobs"),
])
def test_malformed_or_oversized_submissions_are_400_and_write_nothing(operator, jobs, fragment):
    before = counts()
    response = submit(operator, jobs)
    assert response.status_code == 400, response.json()
    assert response.json()["error"]["code"] == "validation_error"
    assert fragment in response.json()["error"]["details"]["fields"]
    assert counts() == before


def test_submission_refuses_unknown_fields(operator):
    response = submit(operator, [{**job("a"), "run_id": 3}])
    assert response.json()["error"]["code"] == "unknown_field"


def test_an_idempotent_submission_replays_and_a_changed_body_conflicts(operator):
    jobs = [job("a"), job("b", "a")]
    first = submit(operator, jobs, idempotency_key="nightly-1")
    again = submit(operator, jobs, idempotency_key="nightly-1")
    other = submit(operator, [job("a"), job("b")], idempotency_key="nightly-1")
    assert (first.status_code, again.status_code, other.status_code) == (201, 200, 409)
    assert again["Idempotent-Replayed"] == "true"
    assert again.json() == {**first.json(), "jobs": again.json()["jobs"]}
    assert by_key(again) == by_key(first)
    assert other.json()["error"]["code"] == "idempotency_conflict"
    assert other.json()["error"]["details"]["run_id"] == first.json()["run"]["run_id"]
    assert Run.objects.count() == 1 and Job.objects.count() == 2
    assert Job.objects.get(pk=by_key(first)["b"]).idempotency_key == "run:nightly-1:1"


@pytest.mark.parametrize("position", [0, 1])
def test_a_submission_whose_generated_job_key_is_taken_by_a_single_job_is_409(operator,
                                                                               position):
    """``run:<key>:<i>`` shares the namespace of POST /jobs keys: a job holding the key of any
    position (not only the first) refuses the submission, and nothing is written."""
    holder = operator.post("/api/v1/jobs", {"job_type": "test.noop", "project": "p",
                                            "idempotency_key": f"run:coll:{position}"},
                           format="json")
    assert holder.status_code == 201
    before = counts()
    response = submit(operator, [job("a"), job("b")], idempotency_key="coll")
    assert response.status_code == 409, response.json()
    error = response.json()["error"]
    assert error["code"] == "idempotency_conflict"
    assert error["details"]["job_id"] == holder.json()["job_id"]
    assert error["details"]["run_id"] is None
    assert counts() == before


@pytest.mark.parametrize("damage", ["taken", "missing"])
def test_a_repeated_submission_whose_later_positions_are_not_its_own_is_409(operator, damage):
    """Position 0 matches an earlier identical submission but position 1 does not belong to
    that run (held by someone else, or gone): refused rather than answered with a foreign job
    or a 500."""
    jobs = [job("a"), job("b", "a")]
    first = submit(operator, jobs, idempotency_key="coll")
    b = by_key(first)["b"]
    Job.objects.filter(pk=b).update(idempotency_key="moved-away")  # the run lost position 1
    holder = None
    if damage == "taken":
        holder = operator.post("/api/v1/jobs", {"job_type": "test.noop", "project": "p",
                                                "idempotency_key": "run:coll:1"}, format="json")
        assert holder.status_code == 201
    before = counts()
    response = submit(operator, jobs, idempotency_key="coll")
    assert response.status_code == 409, response.json()
    error = response.json()["error"]
    assert error["code"] == "idempotency_conflict"
    assert error["details"]["run_id"] == first.json()["run"]["run_id"]
    if holder is not None:
        assert error["details"]["job_id"] == holder.json()["job_id"]
    assert counts() == before


def test_a_submission_over_a_queue_limit_writes_nothing(operator):
    from quotas.models import Quota

    Quota.objects.create(tenant=T, max_queued=3, updated_at=db_now())
    assert submit(operator, [job("x")]).status_code == 201
    before = counts()
    response = submit(operator, [job("a"), job("b", "a"), job("c", "a")])
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "queue_full"
    assert counts() == before
    # more jobs than the limit could ever hold: 422, no Retry-After
    response = submit(operator, [job("p"), job("q"), job("r"), job("s")])
    assert response.status_code == 422 and "Retry-After" not in response
    assert response.json()["error"]["code"] == "exceeds_max_queued"
    assert counts() == before


# --- upstream failure ------------------------------------------------------------------------

def chain(operator, n=3):
    keys = [f"j{i}" for i in range(n)]
    ids = by_key(submit(operator, [job(k, *keys[i - 1:i]) for i, k in enumerate(keys)]))
    return [ids[k] for k in keys]


def diamond(operator):
    ids = by_key(submit(operator, [job("a"), job("b", "a"), job("c", "a"), job("d", "b", "c"),
                                   job("e", "d")]))
    return ids


def assert_upstream_canceled(job_ids, upstream):
    for job_id in job_ids:
        row = Job.objects.get(pk=job_id)
        assert row.status == "canceled", job_id
        assert row.last_error["code"] == "upstream_failed"
        assert row.last_error["upstream_job_id"] == upstream
        event = upstream_event(job_id)
        assert (event.reason, event.data, event.from_status) == (
            "upstream_failed", {"upstream_job_id": upstream}, "blocked")


def test_a_non_retryable_failure_cancels_the_whole_chain_below(operator):
    a, b, c = chain(operator)
    assert fail_hard(claim()[0]).job_status == "dead_lettered"
    assert_upstream_canceled([b, c], a)
    assert claim() == []


def test_a_failure_in_a_diamond_cancels_the_join_and_below_but_not_the_sibling(operator):
    ids = diamond(operator)
    lease_ack(tenant=T, lease_id=claim()[0].lease.pk)  # a
    grants = {g.job.pk: g for g in claim()}
    fail_hard(grants[ids["b"]])
    assert_upstream_canceled([ids["d"], ids["e"]], ids["b"])
    assert status(Job(pk=ids["c"])) == ["leased"]
    lease_ack(tenant=T, lease_id=grants[ids["c"]].lease.pk)  # the sibling still completes
    assert status(Job(pk=ids["c"]), Job(pk=ids["d"])) == ["succeeded", "canceled"]


def test_the_reaper_dead_lettering_a_parent_cancels_its_descendants(operator):
    ids = diamond(operator)
    Job.objects.filter(pk=ids["a"]).update(max_attempts=1)
    t0 = db_now()
    claim(lease_for=timedelta(seconds=30), now=t0)
    result = leases_reap_expired(now=t0 + timedelta(seconds=31))
    assert result.by_status == {"dead_lettered": 1} and result.upstream_canceled == 4
    assert_upstream_canceled([ids[k] for k in "bcde"], ids["a"])


def test_operator_cancel_of_a_blocked_job_cancels_below_it_only(operator):
    a, b, c = chain(operator)
    response = operator.post(f"/api/v1/jobs/{b}/cancel", {"reason": "not needed"}, format="json")
    assert response.json()["status"] == "canceled"
    assert_upstream_canceled([c], b)
    assert status(Job(pk=a)) == ["ready"]


def test_a_leased_job_canceled_through_its_runner_cancels_below_it(operator):
    a, b, c = chain(operator)
    grant = claim()[0]
    job_cancel(tenant=T, job_id=a, actor=OP, reason="stop")
    assert status(Job(pk=b)) == ["blocked"]  # only requested so far
    fail_hard(grant)
    assert_upstream_canceled([b, c], a)


# --- replay ----------------------------------------------------------------------------------

def test_replaying_a_dead_lettered_parent_revives_the_chain_below(operator):
    a, b, c = chain(operator)
    grant = claim()[0]
    fail_hard(grant)
    response = operator.post(f"/api/v1/jobs/{a}/replay", {"reason": "fixed upstream"},
                             format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert (body["job"]["status"], body["job"]["attempt"], body["job"]["last_error"],
            body["job"]["finished_at"]) == ("ready", 0, None, None)
    assert body["job"]["fencing_token"] == 1  # never reset
    assert (body["revived_job_ids"], body["rerun_job_ids"]) == ([b, c], [])
    for job_id in (b, c):
        row = Job.objects.get(pk=job_id)
        assert (row.status, row.pending_parents, row.last_error, row.finished_at) == (
            "blocked", 1, None, None)
    with pytest.raises(LeaseLost):  # the old lease stays dead
        lease_ack(tenant=T, lease_id=grant.lease.pk)
    rounds = run_until_idle()
    assert rounds == [[a], [b], [c]]
    assert claim() == [] and Job.objects.get(pk=a).fencing_token == 2
    event = JobEvent.objects.filter(job_id=a, type="job.replayed").get()
    assert (event.from_status, event.to_status, event.reason, event.actor_label) == (
        "dead_lettered", "ready", "fixed upstream", "tester")
    assert event.data["replay_of"] == a and event.data["previous"]["status"] == "dead_lettered"


def test_replaying_a_succeeded_parent_does_not_rerun_succeeded_children(operator):
    a, b, c = chain(operator)
    run_until_idle()
    result = job_replay(tenant=T, job_id=a, actor=OP, reason="re-ingest")
    assert (result.job.status, result.revived_job_ids, result.rerun_job_ids) == ("ready", [], [])
    assert run_until_idle() == [[a]]
    assert status(Job(pk=b), Job(pk=c)) == ["succeeded", "succeeded"]
    assert Job.objects.get(pk=b).attempt == 1


def test_replaying_with_rerun_resets_succeeded_descendants_and_runs_them_in_order(operator):
    a, b, c = chain(operator)
    run_until_idle()
    result = job_replay(tenant=T, job_id=a, actor=OP, reason="re-ingest",
                        rerun_succeeded_descendants=True)
    assert result.rerun_job_ids == [b, c]
    assert [Job.objects.get(pk=j).pending_parents for j in (b, c)] == [1, 1]
    assert run_until_idle() == [[a], [b], [c]]


def test_replay_drops_the_result_and_artifacts_but_keeps_them_in_the_event(operator, enqueue):
    a = enqueue()
    artifact = ArtifactIn(name="out.ndjson", uri="file:///tmp/out.ndjson", sha256="0" * 64,
                          size_bytes=3, media_type="application/x-ndjson")
    lease_ack(tenant=T, lease_id=claim()[0].lease.pk, result={"n": 1}, artifacts=[artifact])
    job_replay(tenant=T, job_id=a.pk, actor=OP, reason="again")
    row = Job.objects.get(pk=a.pk)
    assert (row.result, Artifact.objects.filter(job_id=a.pk).count()) == (None, 0)
    previous = JobEvent.objects.get(job_id=a.pk, type="job.replayed").data["previous"]
    assert previous["result"] == {"n": 1}
    assert [x["name"] for x in previous["artifacts"]] == ["out.ndjson"]
    # the re-run may report the same artifact name again
    lease_ack(tenant=T, lease_id=claim()[0].lease.pk, result={"n": 2}, artifacts=[artifact])
    assert Artifact.objects.filter(job_id=a.pk).count() == 1


def test_replay_of_one_parent_leaves_a_child_another_failed_parent_still_holds(operator):
    ids = by_key(submit(operator, [job("x"), job("z"), job("d", "x", "z")]))
    for grant in claim():
        fail_hard(grant)
    d = Job.objects.get(pk=ids["d"])
    assert d.status == "canceled"
    first = d.last_error["upstream_job_id"]
    second = ids["z"] if first == ids["x"] else ids["x"]
    assert job_replay(tenant=T, job_id=first, actor=OP, reason="r").revived_job_ids == []
    assert status(d) == ["canceled"]
    assert job_replay(tenant=T, job_id=second, actor=OP, reason="r").revived_job_ids == [d.pk]
    d.refresh_from_db()
    assert (d.status, d.pending_parents) == ("blocked", 2)
    assert run_until_idle() == [sorted([ids["x"], ids["z"]]), [d.pk]]


def test_replay_recounts_a_blocked_child_of_a_replayed_parent(operator, enqueue):
    a, other = enqueue(), enqueue()
    lease_ack(tenant=T, lease_id=claim(max_jobs=1)[0].lease.pk)  # a succeeds
    child = enqueue(depends_on=[a.pk, other.pk])
    assert Job.objects.get(pk=child.pk).pending_parents == 1
    job_replay(tenant=T, job_id=a.pk, actor=OP, reason="again")
    assert Job.objects.get(pk=child.pk).pending_parents == 2
    assert run_until_idle() == [sorted([a.pk, other.pk]), [child.pk]]


def test_replay_refuses_unfinished_jobs_and_jobs_whose_parent_failed(operator, enqueue):
    a, b, _ = chain(operator)
    response = operator.post(f"/api/v1/jobs/{a}/replay", {"reason": "x"}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "illegal_transition"
    fail_hard(claim()[0])
    before = counts()
    response = operator.post(f"/api/v1/jobs/{b}/replay", {"reason": "x"}, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["details"] == {"parents": [{"job_id": a,
                                                                "status": "dead_lettered"}]}
    assert counts() == before
    with pytest.raises(IllegalTransition):
        job_replay(tenant=T, job_id=enqueue().pk, actor=OP, reason="x")


def test_replay_reblocks_the_children_of_the_replayed_job_that_have_not_started(
        operator, enqueue):
    """a and x succeeded, so b (a), y (a, x) are ready and s (a, later) scheduled: replaying a
    puts them back to blocked (+1 each), a blocked child z (a, w) gets +1, a leased child keeps
    running and a succeeded one is re-run only when asked. Nothing below a runs before a."""
    a, x = enqueue(), enqueue()
    w = enqueue(priority=-1)
    for grant in claim(max_jobs=2):
        lease_ack(tenant=T, lease_id=grant.lease.pk)
    assert status(a, x, w) == ["succeeded", "succeeded", "ready"]
    c = enqueue(depends_on=[a.pk], priority=10)
    lease_ack(tenant=T, lease_id=claim(max_jobs=1)[0].lease.pk)  # c succeeds
    later = db_now() + timedelta(hours=1)
    b = enqueue(depends_on=[a.pk])
    y = enqueue(depends_on=[a.pk, x.pk])
    s = enqueue(depends_on=[a.pk], not_before=later)
    leased = enqueue(depends_on=[a.pk], priority=10)
    lease = claim(max_jobs=1)[0].lease
    z = enqueue(depends_on=[a.pk, w.pk])
    assert status(b, y, s, leased, z, c) == [
        "ready", "ready", "scheduled", "leased", "blocked", "succeeded"]

    response = operator.post(f"/api/v1/jobs/{a.pk}/replay",
                             {"reason": "again", "rerun_succeeded_descendants": True},
                             format="json")
    assert response.status_code == 200, response.json()
    body = response.json()
    assert body["job"]["status"] == "ready"
    assert (body["rerun_job_ids"], body["reblocked_job_ids"]) == ([c.pk], [b.pk, y.pk, s.pk])
    rows = {j.pk: j for j in Job.objects.all()}
    for child in (b, y, s, c):
        assert (rows[child.pk].status, rows[child.pk].pending_parents) == ("blocked", 1)
    assert (rows[z.pk].status, rows[z.pk].pending_parents) == ("blocked", 2)
    assert rows[leased.pk].status == "leased"  # started before the replay: left running
    assert rows[s.pk].not_before == later
    event = JobEvent.objects.get(job_id=s.pk, type="job.reblocked")
    assert (event.from_status, event.to_status, event.reason, event.actor_label) == (
        "scheduled", "blocked", "again", "tester")
    assert event.data == {"replay_of": a.pk, "parent_job_ids": [a.pk], "pending_parents": 1}
    assert JobEvent.objects.get(job_id=b.pk, type="job.reblocked").from_status == "ready"
    assert_dependency_counts_exact()

    lease_ack(tenant=T, lease_id=lease.pk)
    assert run_until_idle() == [sorted([a.pk, w.pk]), sorted([b.pk, c.pk, y.pk, z.pk])]
    assert status(s) == ["scheduled"]  # its not_before is still ahead
    assert_dependency_counts_exact()


def test_replay_without_rerun_still_reblocks_ready_children(enqueue):
    a = enqueue()
    lease_ack(tenant=T, lease_id=claim()[0].lease.pk)
    b = enqueue(depends_on=[a.pk])
    result = job_replay(tenant=T, job_id=a.pk, actor=OP, reason="again")
    assert (result.revived_job_ids, result.rerun_job_ids, result.reblocked_job_ids) == (
        [], [], [b.pk])
    assert run_until_idle() == [[a.pk], [b.pk]]


@pytest.mark.parametrize("body,code,http", [
    ({}, "validation_error", 400),
    ({"reason": ""}, "validation_error", 400),
    ({"reason": "x", "rerun_succeeded_descendants": "yes"}, "validation_error", 400),
    ({"reason": "x", "force": True}, "unknown_field", 400),
])
def test_replay_api_refuses_bad_bodies(operator, enqueue, body, code, http):
    a = enqueue()
    job_cancel(tenant=T, job_id=a.pk, actor=OP, reason="x")
    response = operator.post(f"/api/v1/jobs/{a.pk}/replay", body, format="json")
    assert (response.status_code, response.json()["error"]["code"]) == (http, code)
    assert status(a) == ["canceled"]


def test_replay_api_is_tenant_scoped_and_needs_operate(api, runner, enqueue):
    a = enqueue()
    job_cancel(tenant=T, job_id=a.pk, actor=OP, reason="x")
    other = api(tenant="other").post(f"/api/v1/jobs/{a.pk}/replay", {"reason": "x"},
                                     format="json")
    assert (other.status_code, other.json()["error"]["code"]) == (404, "not_found")
    denied = runner.post(f"/api/v1/jobs/{a.pk}/replay", {"reason": "x"}, format="json")
    assert (denied.status_code, denied.json()["error"]["code"]) == (403, "insufficient_scope")
    assert status(a) == ["canceled"]


def test_random_dags_run_in_dependency_order(operator):
    rng = random.Random(7)
    for _ in range(5):
        n = 30
        specs = [job(f"k{i}", *[f"k{p}" for p in range(i) if rng.random() < 0.15])
                 for i in range(n)]
        rng.shuffle(specs)
        ids = by_key(submit(operator, specs))
        parents = {ids[s["key"]]: {ids[p] for p in s["depends_on"]} for s in specs}
        finished: set[int] = set()
        for batch in run_until_idle():
            for job_id in batch:
                assert parents[job_id] <= finished
            finished |= set(batch)
        assert finished == set(ids.values())
