"""PostgreSQL statements of the admission claim (``orchestrator.claiming``).

Versioned names: change the SQL, bump the suffix, and say why in the commit.
"""
from __future__ import annotations

from ledger.states import JobStatus, require

assert require(JobStatus.READY, JobStatus.LEASED) == "job.leased"


def _not_paused(lane: str) -> str:
    """SQL: no pause key covers the lane aliased ``lane`` (tenant, job type or source)."""
    return f"""NOT EXISTS (
      SELECT 1 FROM quotas_pause AS p
      WHERE p.tenant = {lane}.tenant AND p.job_type IN ('', {lane}.job_type)
        AND p.source_id IN (0, {lane}.source_id))"""

# orch_lanes_v1: the lanes a claim may serve, with their tenant's place in the dispatch order.
# A lane is a candidate when it has a ready job (one probe of job_lane_idx), no pause key covers
# it and its source's breaker is closed or half-open with no probe out. Read without locks, to
# choose which tenants to lock: orch_gate_v1 re-checks pauses and breakers under the lock.
ORCH_LANES_V1 = """
SELECT l.tenant, l.job_type, l.source_id, s.served_seq, COALESCE(s.weight, 1),
       COALESCE(s.turn_taken, 0), b.state = 'half_open' AS probe
FROM ledger_lane AS l
LEFT JOIN quotas_tenantshare AS s ON s.tenant = l.tenant
LEFT JOIN quotas_circuitbreaker AS b ON b.source_id = l.source_id AND l.source_id <> 0
WHERE {tenant_filter} l.job_type = ANY(%(types)s)
  AND (b.state IS NULL OR b.state = 'closed' OR (b.state = 'half_open' AND b.probe_job_id IS NULL))
  AND """ + _not_paused("l") + """
  AND EXISTS (
      SELECT 1 FROM ledger_job AS j
      WHERE j.status = 'ready' AND j.tenant = l.tenant AND j.job_type = l.job_type
        AND COALESCE(j.source_id, 0) = l.source_id)
"""

# orch_lock_tenants_v1: the dispatch locks, least recently served first; rows other claimers
# hold are skipped (they are serving those tenants right now).
ORCH_LOCK_TENANTS_V1 = """
SELECT tenant, weight, turn_taken FROM quotas_tenantshare
WHERE tenant = ANY(%(tenants)s)
ORDER BY served_seq, tenant
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED
"""

# orch_gate_v1: under the dispatch locks, the lanes (of the locked tenants) that no pause key
# covers and whose source's breaker is closed, or half-open with no probe out (`probe`). A pause
# or breaker change takes the tenant's dispatch lock before it commits, so a claim holding the
# lock reads the state in force until it commits.
ORCH_GATE_V1 = """
SELECT lane.tenant, lane.job_type, lane.source_id, COALESCE(b.state = 'half_open', false)
FROM unnest(%(tenants)s::text[], %(types)s::text[], %(sources)s::bigint[])
     AS lane(tenant, job_type, source_id)
LEFT JOIN quotas_circuitbreaker AS b ON b.source_id = lane.source_id AND lane.source_id <> 0
WHERE (b.state IS NULL OR b.state = 'closed' OR (b.state = 'half_open' AND b.probe_job_id IS NULL))
  AND """ + _not_paused("lane") + "\n"

# orch_heads_v1: the first `limit` ready jobs of each lane, one index range of job_lane_idx per
# lane. No row locks: only a holder of the tenant's dispatch lock leases the tenant's jobs, and
# the lease UPDATE re-checks status = 'ready' against any other writer (cancel).
ORCH_HEADS_V1 = """
SELECT lane.tenant, lane.job_type, lane.source_id, c.id, c.priority
FROM unnest(%(tenants)s::text[], %(types)s::text[], %(sources)s::bigint[])
     AS lane(tenant, job_type, source_id)
CROSS JOIN LATERAL (
    SELECT id, priority FROM ledger_job
    WHERE status = 'ready' AND tenant = lane.tenant AND job_type = lane.job_type
      AND COALESCE(source_id, 0) = lane.source_id
    ORDER BY priority DESC, id
    LIMIT %(limit)s
) AS c
"""

# The lease writes shared by orch_lease_ids_v2 and orch_claim_plain_v3.
_LEASE_CTES = """
leased AS (
    UPDATE ledger_job AS j
    SET status = 'leased', attempt = j.attempt + 1, fencing_token = j.fencing_token + 1,
        current_lease_id = gen_random_uuid(),
        lease_expires_at = clock.now + make_interval(secs => %(seconds)s),
        runner_id = %(runner)s, updated_at = clock.now
    FROM clock
    WHERE j.id IN (SELECT id FROM picked) AND j.status = 'ready'
    RETURNING j.id, j.tenant, j.project, j.job_type, j.source_id, j.run_id, j.payload,
              j.idempotency_key, j.correlation_id, j.priority, j.attempt, j.max_attempts,
              j.fencing_token, j.current_lease_id, j.lease_expires_at, j.created_at,
              clock.now AS leased_at
), new_lease AS (
    INSERT INTO ledger_lease (id, job_id, tenant, source_id, fencing_token, attempt, runner_id,
                              claim_id, status, lease_seconds, leased_at, expires_at)
    SELECT current_lease_id, id, tenant, source_id, fencing_token, attempt, %(runner)s,
           %(claim_pk)s, 'active', %(seconds)s, leased_at, lease_expires_at
    FROM leased
), new_event AS (
    INSERT INTO ledger_jobevent (job_id, tenant, type, from_status, to_status, lease_id,
                                 actor_type, actor_label, reason, data, occurred_at)
    SELECT id, tenant, 'job.leased', 'ready', 'leased', current_lease_id, 'runner', %(runner)s,
           '', jsonb_build_object('fencing_token', fencing_token, 'attempt', attempt), leased_at
    FROM leased
)"""

_LEASE_SELECT = """
SELECT id, tenant, project, job_type, source_id, run_id, payload, idempotency_key,
       correlation_id, priority, attempt, max_attempts, fencing_token, current_lease_id,
       lease_expires_at, created_at, leased_at
FROM leased
"""

_CLOCK = """
clock AS (SELECT COALESCE(%(now)s::timestamptz, statement_timestamp()) AS now)
"""

# orch_lease_ids_v2: lease the chosen jobs (those still ready: the UPDATE re-checks), write their
# lease and event rows, and store the admission it was decided under, in one statement: the
# charged buckets, and the served tenants' turns (those that completed one move to the back of
# the dispatch order, in the order they completed it). `now` is the clock the admission used (read under the dispatch locks). The charge is
# for every chosen job: a job canceled between the decision and this statement (the only way
# one is not leased) costs its token anyway, which can only under-grant. The lease id is
# generated here so the job row and the lease row are written by the same statement; Django's
# FKs are DEFERRABLE INITIALLY DEFERRED, so the job -> lease reference is checked at commit.
ORCH_LEASE_IDS_V2 = ("WITH" + _CLOCK + ", picked AS (SELECT unnest(%(ids)s::bigint[]) AS id),"
                     + _LEASE_CTES + """, charged AS (
    UPDATE quotas_quota AS q
    SET tokens_micro = v.tokens_micro, refilled_at = v.refilled_at
    FROM unnest(%(quota_ids)s::bigint[], %(tokens)s::bigint[], %(refilled)s::timestamptz[])
         AS v(id, tokens_micro, refilled_at)
    WHERE q.id = v.id
), served AS (
    UPDATE quotas_tenantshare AS s
    SET served_seq = CASE WHEN v.to_back THEN top.seq + v.ord ELSE s.served_seq END,
        turn_taken = v.turn_taken
    FROM (SELECT COALESCE(MAX(served_seq), 0) AS seq FROM quotas_tenantshare) AS top,
         unnest(%(served)s::text[], %(to_back)s::boolean[], %(turn_taken)s::integer[])
         WITH ORDINALITY AS v(tenant, to_back, turn_taken, ord)
    WHERE s.tenant = v.tenant
)""" + _LEASE_SELECT)

# orch_claim_plain_v3: the claim WITHOUT admission (no quotas, pauses, breakers or fairness),
# kept as the benchmark's baseline only: orch_claim_v2 of the previous issue moved onto
# job_lane_idx (one range per lane instead of per job type). Not reachable from the API.
# The first `limit` ready, unlocked jobs over the tenant's lanes of the wanted types, one range of
# job_lane_idx per lane (SKIP LOCKED: concurrent claimers take the next rows), best first.
_PICK_PER_LANE = """, picked AS (
    SELECT candidate.id
    FROM ledger_lane AS lane
    CROSS JOIN LATERAL (
        SELECT id, priority FROM ledger_job
        WHERE status = 'ready' AND tenant = lane.tenant AND job_type = lane.job_type
          AND COALESCE(source_id, 0) = lane.source_id
        ORDER BY priority DESC, id
        LIMIT %(limit)s
        FOR UPDATE SKIP LOCKED
    ) AS candidate
    WHERE lane.tenant = %(tenant)s AND lane.job_type = ANY(%(types)s){lane_filter}
    ORDER BY candidate.priority DESC, candidate.id
    LIMIT %(limit)s
),"""

ORCH_CLAIM_PLAIN_V3 = ("WITH" + _CLOCK + _PICK_PER_LANE.format(lane_filter="") + _LEASE_CTES
                       + _LEASE_SELECT)

# orch_budgets_v1: under the dispatch locks, the locked tenants' quotas with the leased jobs now
# in each capped scope, and the clock. statement_timestamp() is this statement's start, after
# the locks; the counts' snapshot is taken then too, so a lease they no longer see ended (its
# ack committed) before this instant. The one-row `clock` keeps the clock when there are no
# quotas.
ORCH_BUDGETS_V1 = """
SELECT clock.now, q.id, q.tenant, q.job_type, q.source_id, q.max_active, q.rate_per_second,
       q.burst, q.tokens_micro, q.refilled_at,
       CASE WHEN q.max_active IS NULL THEN 0 ELSE (
           SELECT COUNT(*) FROM ledger_job AS j
           WHERE j.status = 'leased' AND j.tenant = q.tenant
             AND (q.job_type = '' OR j.job_type = q.job_type)
             AND (q.source_id = 0 OR COALESCE(j.source_id, 0) = q.source_id)) END
FROM (SELECT statement_timestamp() AS now) AS clock
LEFT JOIN quotas_quota AS q ON q.tenant = ANY(%(tenants)s)
ORDER BY q.id
"""

# orch_fast_guard_v1 / orch_claim_fast_v1: the claim of one tenant that has no quota and no
# breaker other than closed (most tenants): nothing to count, so no exclusive dispatch lock.
# The claimer holds the tenant's dispatch row FOR SHARE (many such claimers at once; a pause, a
# quota change, a breaker opening or an admission claim takes it FOR UPDATE and waits for them),
# checks the guard in a new statement (a snapshot taken after the lock), then claims like the
# previous issue's statement, per lane (SKIP LOCKED), skipping paused lanes.
ORCH_FAST_GUARD_V1 = """
SELECT NOT EXISTS (SELECT 1 FROM quotas_quota WHERE tenant = %(tenant)s)
   AND NOT EXISTS (SELECT 1 FROM quotas_circuitbreaker
                   WHERE tenant = %(tenant)s AND state <> 'closed')
"""

ORCH_CLAIM_FAST_V1 = ("WITH" + _CLOCK
                      + _PICK_PER_LANE.format(lane_filter="\n      AND " + _not_paused("lane"))
                      + _LEASE_CTES + _LEASE_SELECT)
