"""Ledger models: Source, Run, Job, Claim, Lease (one row per attempt), JobEvent, Artifact, JobLogLine.

Tenants are identifiers issued by the Authority and carried in tokens, so every row stores its
``tenant`` as a string and every query filters by it. Indexes and constraints are named; each
carries a comment naming the query it serves.
"""
from __future__ import annotations

import uuid

from django.db import models
from django.db.models import Q
from django.db.models.functions import Coalesce

from ..states import JobStatus

TENANT_MAX = 64
NAME_MAX = 100


class Source(models.Model):
    """An upstream feed a job ingests from (an advisory mirror, a VEX publisher...)."""

    tenant = models.CharField(max_length=TENANT_MAX)
    name = models.CharField(max_length=NAME_MAX)
    kind = models.CharField(max_length=NAME_MAX, blank=True, default="")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="source_tenant_name_uniq"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant}/{self.name}"


class Run(models.Model):
    """A group of jobs submitted together (one ingestion pass over a feed, a backfill...)."""

    tenant = models.CharField(max_length=TENANT_MAX)
    project = models.CharField(max_length=NAME_MAX)
    name = models.CharField(max_length=200)
    source = models.ForeignKey(Source, null=True, blank=True, on_delete=models.PROTECT)
    correlation_id = models.CharField(max_length=128, null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [
            # run list of a tenant, newest first
            models.Index(fields=["tenant", "-id"], name="run_tenant_recent_idx"),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} {self.name}"


class Job(models.Model):
    """One unit of work. ``status`` moves only through ``ledger.states.TRANSITIONS``.

    ``fencing_token`` is the lease epoch: it grows by one at every claim and never goes back, so
    a lease handed out earlier can always be told from the current one.
    ``attempt`` counts attempts consumed (a release gives its attempt back).
    """

    tenant = models.CharField(max_length=TENANT_MAX)
    project = models.CharField(max_length=NAME_MAX)
    job_type = models.CharField(max_length=NAME_MAX)
    source = models.ForeignKey(Source, null=True, blank=True, on_delete=models.PROTECT)
    # db_index=False: job_run_status_idx (run, status) serves lookups by run.
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.PROTECT, related_name="jobs",
                            db_index=False)
    payload = models.JSONField(default=dict)
    request_digest = models.CharField(max_length=64, help_text="sha256 of the canonical enqueue body")
    priority = models.SmallIntegerField(default=0)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)
    correlation_id = models.CharField(max_length=128, null=True, blank=True)
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.READY)
    attempt = models.PositiveIntegerField(default=0)
    max_attempts = models.PositiveIntegerField()
    fencing_token = models.BigIntegerField(default=0)
    current_lease = models.ForeignKey(
        "Lease", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    runner_id = models.CharField(max_length=200, null=True, blank=True)
    not_before = models.DateTimeField(null=True, blank=True)
    cancel_requested = models.BooleanField(default=False)
    # Parents (JobDependency) not yet succeeded; a ``blocked`` job becomes ready at 0. A counter
    # rather than a re-count, so two parents succeeding at once cannot both miss the last one:
    # each decrement takes the child's row lock and sees the other's.
    pending_parents = models.PositiveIntegerField(default=0)
    result = models.JSONField(null=True, blank=True)
    last_error = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            # The claim, one index range per lane (tenant, job_type, source): WHERE status='ready'
            # AND tenant=? AND job_type=? AND COALESCE(source_id, 0)=? ORDER BY priority DESC, id.
            # Per lane, so a paused, capped or broken source never sits in front of another
            # source's jobs (no head-of-line blocking). Partial: finished jobs leave it at once.
            models.Index(
                "tenant", "job_type", Coalesce("source", 0), models.F("priority").desc(), "id",
                name="job_lane_idx", condition=Q(status="ready"),
            ),
            # max_queued at enqueue counts waiting jobs of a scope (ready ones via job_lane_idx).
            models.Index(
                "tenant", "job_type", Coalesce("source", 0), name="job_waiting_idx",
                condition=Q(status__in=["blocked", "scheduled"]),
            ),
            # The reaper: WHERE status='leased' AND lease_expires_at <= now.
            models.Index(fields=["lease_expires_at"], name="job_reap_idx", condition=Q(status="leased")),
            # The scheduler tick: WHERE status='scheduled' AND not_before <= now.
            models.Index(fields=["not_before"], name="job_due_idx", condition=Q(status="scheduled")),
            # GET /jobs?status=... newest first, per tenant.
            models.Index(fields=["tenant", "status", "-id"], name="job_tenant_status_idx"),
            # GET /jobs?correlation_id=...
            models.Index(fields=["tenant", "correlation_id"], name="job_tenant_corr_idx",
                         condition=Q(correlation_id__isnull=False)),
            # GET /jobs?run=...
            models.Index(fields=["run", "status"], name="job_run_status_idx"),
        ]
        constraints = [
            # Idempotent enqueue: one job per (tenant, idempotency_key).
            models.UniqueConstraint(
                fields=["tenant", "idempotency_key"], name="job_tenant_idem_uniq",
                condition=Q(idempotency_key__isnull=False),
            ),
            models.CheckConstraint(
                condition=Q(status__in=JobStatus.values), name="job_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(priority__gte=-1000, priority__lte=1000), name="job_priority_range"
            ),
            models.CheckConstraint(
                condition=Q(max_attempts__gte=1) & Q(attempt__lte=models.F("max_attempts")),
                name="job_attempts_bounded",
            ),
            # A leased job always names its lease and its expiry; nothing else has an expiry.
            models.CheckConstraint(
                condition=(
                    Q(status="leased", current_lease__isnull=False, lease_expires_at__isnull=False)
                    | (~Q(status="leased") & Q(lease_expires_at__isnull=True))
                ),
                name="job_lease_consistent",
            ),
        ]

    def __str__(self) -> str:
        return f"job {self.pk} {self.job_type} [{self.status}]"


class Lane(models.Model):
    """A (tenant, job_type, source) that has had jobs: the unit the claim walks, one range of
    ``job_lane_idx`` each (``source_id`` 0 for jobs without a source). Registered by the
    enqueue (every enqueue, idempotently); never deleted."""

    tenant = models.CharField(max_length=TENANT_MAX)
    job_type = models.CharField(max_length=NAME_MAX)
    source_id = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "job_type", "source_id"], name="lane_uniq"),
        ]

    def __str__(self) -> str:
        return f"lane {self.tenant}/{self.job_type}/{self.source_id}"


class JobDependency(models.Model):
    """An edge of a run's DAG: ``child`` may start only after ``parent`` succeeded."""

    parent = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="child_edges",
                               db_index=False)
    child = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="parent_edges")
    tenant = models.CharField(max_length=TENANT_MAX)

    class Meta:
        constraints = [
            # one edge per pair; also the index for "children of a parent"
            models.UniqueConstraint(fields=["parent", "child"], name="jobdep_parent_child_uniq"),
            models.CheckConstraint(condition=~Q(parent=models.F("child")), name="jobdep_no_self"),
        ]


class Claim(models.Model):
    """A claim request that granted leases, kept so a retried ``claim_id`` gets the same leases."""

    tenant = models.CharField(max_length=TENANT_MAX)
    runner_id = models.CharField(max_length=200)
    claim_id = models.CharField(max_length=100)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["tenant", "runner_id", "claim_id"], name="claim_runner_claim_uniq"
            ),
        ]


class LeaseStatus(models.TextChoices):
    """How an attempt ended; ``active`` while the runner holds it."""

    ACTIVE = "active"
    ACKED = "acked"
    FAILED = "failed"
    RELEASED = "released"
    EXPIRED = "expired"


class Lease(models.Model):
    """One attempt: a job handed to a runner, until ack, fail, release or expiry."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    # db_index=False: lease_job_epoch_uniq (job, fencing_token) serves lookups by job.
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="leases", db_index=False)
    tenant = models.CharField(max_length=TENANT_MAX)
    # The job's source, copied at claim time: the circuit breaker counts a source's recent
    # outcomes over lease_source_ended_idx without joining jobs.
    source_id = models.BigIntegerField(null=True, blank=True)
    fencing_token = models.BigIntegerField()
    attempt = models.PositiveIntegerField()
    runner_id = models.CharField(max_length=200)
    claim = models.ForeignKey(Claim, null=True, blank=True, on_delete=models.SET_NULL,
                              related_name="leases")
    status = models.CharField(max_length=16, choices=LeaseStatus.choices, default=LeaseStatus.ACTIVE)
    lease_seconds = models.PositiveIntegerField()
    leased_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    ended_at = models.DateTimeField(null=True, blank=True)
    progress = models.JSONField(null=True, blank=True)
    outcome = models.JSONField(null=True, blank=True, help_text="what the ending call answered")

    class Meta:
        constraints = [
            # One lease per epoch of a job; also the index for a job's leases.
            models.UniqueConstraint(fields=["job", "fencing_token"], name="lease_job_epoch_uniq"),
        ]
        indexes = [
            # circuit breaker: a source's attempts that ended within the sliding window
            models.Index(fields=["source_id", "ended_at"], name="lease_source_ended_idx",
                         condition=Q(source_id__isnull=False, ended_at__isnull=False)),
        ]


class ActorType(models.TextChoices):
    RUNNER = "runner"
    OPERATOR = "operator"
    SYSTEM = "system"


class JobEvent(models.Model):
    """Append-only history of a job: one row per status change or notable fact."""

    # db_index=False: jobevent_job_idx (job, id) serves lookups by job.
    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events", db_index=False)
    tenant = models.CharField(max_length=TENANT_MAX)
    type = models.CharField(max_length=64)
    from_status = models.CharField(max_length=16, blank=True, default="")
    to_status = models.CharField(max_length=16, blank=True, default="")
    lease = models.ForeignKey(Lease, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    actor_type = models.CharField(max_length=16, choices=ActorType.choices)
    actor_label = models.CharField(max_length=200, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    data = models.JSONField(default=dict)
    occurred_at = models.DateTimeField()

    class Meta:
        indexes = [
            # a job's history in order
            models.Index(fields=["job", "id"], name="jobevent_job_idx"),
            # event feed per tenant (streams resume by id)
            models.Index(fields=["tenant", "id"], name="jobevent_tenant_idx"),
        ]


class Artifact(models.Model):
    """An output a successful attempt reported: where it is and its sha256 and size."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="artifacts")
    lease = models.ForeignKey(Lease, on_delete=models.CASCADE, related_name="artifacts")
    tenant = models.CharField(max_length=TENANT_MAX)
    name = models.CharField(max_length=200)
    uri = models.CharField(max_length=2000)
    sha256 = models.CharField(max_length=64)
    size_bytes = models.BigIntegerField()
    media_type = models.CharField(max_length=200)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "name"], name="artifact_job_name_uniq"),
            models.CheckConstraint(condition=Q(size_bytes__gte=0), name="artifact_size_nonneg"),
        ]


class JobLogLine(models.Model):
    """A log line a runner sent for an attempt (bounded per job by ORCH_LOG_LINES_MAX_PER_JOB)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="log_lines")
    lease = models.ForeignKey(Lease, on_delete=models.CASCADE, related_name="log_lines")
    tenant = models.CharField(max_length=TENANT_MAX)
    ts = models.DateTimeField()
    level = models.CharField(max_length=10)
    message = models.TextField()
    received_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["job", "id"], name="joblog_job_idx")]
