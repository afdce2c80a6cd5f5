"""The claim and the ack as single PostgreSQL statements (the bridge's hot path).

Each is one statement with data-modifying CTEs, run in autocommit: one round trip and one
commit per call, instead of five ORM statements and a transaction. They write exactly what the
portable ORM path in ``orchestrator.leasing`` writes (job row, lease row, event row, artifacts);
the behaviour tests run on both (PostgreSQL in CI, SQLite with ORCH_TEST_SQLITE=true).

Versioned names: change the SQL, bump the suffix, and say why in the commit.
"""
from __future__ import annotations

from ledger.states import JobStatus, require

# Every status write below names its transition in the table; this fails at import otherwise.
assert require(JobStatus.READY, JobStatus.LEASED) == "job.leased"
assert require(JobStatus.LEASED, JobStatus.SUCCEEDED) == "job.succeeded"  # orch_ack_v2

# orch_claim_v2. Served by job_claim_idx (tenant, job_type, priority DESC, id)
# WHERE status = 'ready', one index range per job type: v1's `job_type = ANY(array)` could not
# use the index order, so PostgreSQL read and sorted every ready row of the tenant (9.5 ms at
# 10,000 ready jobs, vs 0.09 ms here; EXPLAIN ANALYZE in docs/performance.md). Each job type's
# range yields its first `limit` unlocked rows (SKIP LOCKED: concurrent claimers take the next
# rows instead of queueing behind each other); the best `limit` of those are leased. With k job
# types up to k x limit rows are locked for the few milliseconds of the statement. The lease id is generated here so the job row and the lease row
# are written by the same statement; Django's FKs are DEFERRABLE INITIALLY DEFERRED, so the
# job -> lease reference is checked at commit, when both rows exist.
ORCH_CLAIM_V2 = """
WITH clock AS (
    SELECT COALESCE(%(now)s::timestamptz, statement_timestamp()) AS now
), picked AS (
    SELECT candidate.id
    FROM unnest(%(job_types)s::text[]) AS wanted(job_type)
    CROSS JOIN LATERAL (
        SELECT id, priority FROM ledger_job
        WHERE status = 'ready' AND tenant = %(tenant)s AND job_type = wanted.job_type
        ORDER BY priority DESC, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS candidate
    ORDER BY candidate.priority DESC, candidate.id
    LIMIT %(limit)s
), leased AS (
    UPDATE ledger_job AS j
    SET status = 'leased', attempt = j.attempt + 1, fencing_token = j.fencing_token + 1,
        current_lease_id = gen_random_uuid(),
        lease_expires_at = clock.now + make_interval(secs => %(seconds)s),
        runner_id = %(runner)s, updated_at = clock.now
    FROM picked, clock
    WHERE j.id = picked.id
    RETURNING j.id, j.tenant, j.project, j.job_type, j.source_id, j.run_id, j.payload,
              j.idempotency_key, j.correlation_id, j.priority, j.attempt, j.max_attempts,
              j.fencing_token, j.current_lease_id, j.lease_expires_at, j.created_at,
              clock.now AS leased_at
), new_lease AS (
    INSERT INTO ledger_lease (id, job_id, tenant, fencing_token, attempt, runner_id, claim_id,
                              status, lease_seconds, leased_at, expires_at)
    SELECT current_lease_id, id, tenant, fencing_token, attempt, %(runner)s, %(claim_pk)s,
           'active', %(seconds)s, leased_at, lease_expires_at
    FROM leased
), new_event AS (
    INSERT INTO ledger_jobevent (job_id, tenant, type, from_status, to_status, lease_id,
                                 actor_type, actor_label, reason, data, occurred_at)
    SELECT id, tenant, 'job.leased', 'ready', 'leased', current_lease_id, 'runner', %(runner)s,
           '', jsonb_build_object('fencing_token', fencing_token, 'attempt', attempt), leased_at
    FROM leased
)
SELECT id, tenant, project, job_type, source_id, run_id, payload, idempotency_key,
       correlation_id, priority, attempt, max_attempts, fencing_token, current_lease_id,
       lease_expires_at, created_at, leased_at
FROM leased
ORDER BY priority DESC, id
"""

# orch_ack_v2: one statement acks one or many leases (the batch ack; a single ack is a batch of
# one). The UPDATE is the compare-and-set: it matches only jobs whose current lease is the
# named one, still 'leased' and unexpired (index: the current_lease_id FK index). A racing
# reaper holds the row lock; PostgreSQL re-checks the WHERE after the lock is released, so the
# ack then matches nothing and the caller reports lease_lost for that lease. JSON null results
# become SQL NULL, as the ORM stores them.
ORCH_ACK_V2 = """
WITH clock AS (
    SELECT COALESCE(%(now)s::timestamptz, statement_timestamp()) AS now
), wanted AS (
    SELECT * FROM jsonb_to_recordset(%(acks)s::jsonb)
        AS a(lease_id uuid, result jsonb, artifacts jsonb)
), done AS (
    UPDATE ledger_job AS j
    SET status = 'succeeded', result = NULLIF(wanted.result, 'null'::jsonb),
        finished_at = clock.now, updated_at = clock.now, lease_expires_at = NULL
    FROM wanted, clock
    WHERE j.current_lease_id = wanted.lease_id AND j.tenant = %(tenant)s
      AND j.status = 'leased' AND j.lease_expires_at > clock.now
    RETURNING j.id, j.tenant, j.runner_id, j.fencing_token, j.current_lease_id AS lease_id,
              wanted.artifacts, clock.now AS at
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
)
SELECT lease_id, id FROM done
"""
