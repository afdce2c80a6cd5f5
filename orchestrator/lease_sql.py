"""The ack as a single PostgreSQL statement (the bridge's hot path; the claim's statements are in
``orchestrator.claim_sql``).

It is one statement with data-modifying CTEs, run in autocommit: one round trip and one
commit per call, instead of five ORM statements and a transaction. They write exactly what the
portable ORM path in ``orchestrator.leasing`` writes (job row, lease row, event row, artifacts,
the children's counts and their job.unblocked events);
the behaviour tests run on both (PostgreSQL in CI, SQLite with ORCH_TEST_SQLITE=true).

Versioned names: change the SQL, bump the suffix, and say why in the commit.
"""
from __future__ import annotations

from ledger.states import JobStatus, require

# Every status write below names its transition in the table; this fails at import otherwise.
assert require(JobStatus.LEASED, JobStatus.SUCCEEDED) == "job.succeeded"  # orch_ack_v3
assert require(JobStatus.BLOCKED, JobStatus.READY) == "job.unblocked"
assert require(JobStatus.BLOCKED, JobStatus.SCHEDULED) == "job.unblocked"

# orch_ack_v3: one statement acks one or many leases (the batch ack; a single ack is a batch of
# one) and counts down the acked jobs' blocked children. v2 had no children.
#
# `seen` finds each named lease's job in this statement's snapshot (index: the
# current_lease_id FK index, one probe per ack): current lease, still 'leased', unexpired. It
# keeps the row's version (xmin) and TID. `done` is the compare-and-set: it rewrites a job only
# while its row is still that version. Any change committed since the snapshot (a reaper
# expiring it, a heartbeat, a cancel request) makes a new version, and PostgreSQL re-checks the
# WHERE against it after the row lock (EvalPlanQual), so the ack then matches nothing, and the
# lease service decides those acks again on the locked ORM path (success, repeat or
# lease_lost). The guard exists for the children: a transaction that linked a new child to a
# leased job, or revived one, rewrites the job's row in the same commit
# (ledger.dependencies.fence), so an ack whose snapshot predates that commit, and would read the
# job's children without the new one, cannot take effect. (Fetching by TID also keeps the
# UPDATE off job_reap_idx, which the planner otherwise scans for every leased job.)
#
# Children (`edge`): each child loses as many counts as it has parents among the acked jobs
# (a data-modifying CTE does not see another's updates, so one UPDATE applies the whole
# difference; children are blocked and parents leased, so no row is updated twice). `locked`
# takes the children's row locks in id order (the lock order of ledger.dependencies); a child
# canceled or decremented by another transaction meanwhile is re-read after its lock, so the
# decrement applies to the latest count and two parents acked at once both land. A child at 0
# becomes ready (scheduled while its not_before is ahead) with a job.unblocked event. The
# result has one row per ack (lease_id, id) and one per (tenant, job_type) made ready, so the
# caller can wake claimers. JSON null results become SQL NULL, as the ORM stores them.
ORCH_ACK_V3 = """
WITH clock AS (
    SELECT COALESCE(%(now)s::timestamptz, statement_timestamp()) AS now
), wanted AS (
    SELECT * FROM jsonb_to_recordset(%(acks)s::jsonb)
        AS a(lease_id uuid, result jsonb, artifacts jsonb)
), seen AS MATERIALIZED (
    SELECT job.id, job.version, job.tid, wanted.*
    FROM wanted CROSS JOIN clock CROSS JOIN LATERAL (
        SELECT j.id, j.xmin AS version, j.ctid AS tid FROM ledger_job AS j
        WHERE j.current_lease_id = wanted.lease_id AND j.tenant = %(tenant)s
          AND j.status = 'leased' AND j.lease_expires_at > clock.now
        LIMIT 1  -- at most one job names a lease; keeps this a per-ack index lookup
    ) AS job
), done AS (
    UPDATE ledger_job AS j
    SET status = 'succeeded', result = NULLIF(seen.result, 'null'::jsonb),
        finished_at = clock.now, updated_at = clock.now, lease_expires_at = NULL
    FROM seen, clock
    WHERE j.ctid = ANY(ARRAY(SELECT tid FROM seen))  -- the rows `seen` found, by TID
      AND j.id = seen.id AND j.xmin = seen.version
    RETURNING j.id, j.tenant, j.runner_id, j.fencing_token, j.current_lease_id AS lease_id,
              seen.artifacts, clock.now AS at
), ended AS (
    UPDATE ledger_lease AS l
    SET status = 'acked', ended_at = done.at,
        outcome = jsonb_build_object('job_id', done.id, 'job_status', 'succeeded',
                                     'next_attempt_at', NULL)
    FROM done
    WHERE l.id = done.lease_id
), new_event AS (
    INSERT INTO ledger_jobevent (job_id, tenant, type, from_status, to_status, lease_id,
                                 actor_type, actor_label, reason, data, occurred_at)
    SELECT id, tenant, 'job.succeeded', 'leased', 'succeeded', lease_id, 'runner', runner_id, '',
           jsonb_build_object('fencing_token', fencing_token,
                              'artifacts', jsonb_array_length(artifacts)), at
    FROM done
), new_artifacts AS (
    INSERT INTO ledger_artifact (job_id, lease_id, tenant, name, uri, sha256, size_bytes,
                                 media_type, created_at)
    SELECT done.id, done.lease_id, done.tenant, a.name, a.uri, a.sha256, a.size_bytes,
           a.media_type, done.at
    FROM done CROSS JOIN LATERAL jsonb_to_recordset(done.artifacts)
         AS a(name text, uri text, sha256 text, size_bytes bigint, media_type text)
), edge AS (
    SELECT d.child_id, count(*) AS n, array_agg(d.parent_id ORDER BY d.parent_id) AS parents
    FROM ledger_jobdependency AS d JOIN done ON d.parent_id = done.id
    GROUP BY d.child_id
), locked AS (
    SELECT c.id FROM ledger_job AS c JOIN edge ON c.id = edge.child_id
    WHERE c.status = 'blocked'
    ORDER BY c.id
    FOR UPDATE OF c
), unblocked AS (
    UPDATE ledger_job AS c
    SET pending_parents = c.pending_parents - edge.n,
        status = CASE WHEN c.pending_parents > edge.n THEN 'blocked'
                      WHEN c.not_before > clock.now THEN 'scheduled'
                      ELSE 'ready' END,
        updated_at = clock.now
    FROM locked, edge, clock
    WHERE c.id = locked.id AND edge.child_id = locked.id AND c.status = 'blocked'
    RETURNING c.id, c.tenant, c.job_type, c.status, edge.parents, clock.now AS at
), unblocked_event AS (
    INSERT INTO ledger_jobevent (job_id, tenant, type, from_status, to_status, lease_id,
                                 actor_type, actor_label, reason, data, occurred_at)
    SELECT id, tenant, 'job.unblocked', 'blocked', status, NULL, 'system', 'dependencies', '',
           jsonb_build_object('parent_job_ids', to_jsonb(parents)), at
    FROM unblocked WHERE status <> 'blocked'
)
SELECT lease_id, id, NULL::text AS tenant, NULL::text AS job_type FROM done
UNION ALL
SELECT DISTINCT NULL::uuid, NULL::bigint, tenant, job_type FROM unblocked WHERE status = 'ready'
"""
