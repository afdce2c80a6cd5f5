"""The ack as a single PostgreSQL statement (the bridge's hot path; the claim's statements are in
``orchestrator.claim_sql``).

It is one statement with data-modifying CTEs, run in autocommit: one round trip and one
commit per call, instead of five ORM statements and a transaction. They write exactly what the
portable ORM path in ``orchestrator.leasing`` writes (job row, lease row, event row, artifacts);
the behaviour tests run on both (PostgreSQL in CI, SQLite with ORCH_TEST_SQLITE=true).

Versioned names: change the SQL, bump the suffix, and say why in the commit.
"""
from __future__ import annotations

from ledger.states import JobStatus, require

# Every status write below names its transition in the table; this fails at import otherwise.
assert require(JobStatus.LEASED, JobStatus.SUCCEEDED) == "job.succeeded"  # orch_ack_v2

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
