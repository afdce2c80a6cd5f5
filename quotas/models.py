"""Admission state: quotas (caps, token buckets, queue limits), tenant shares (fair
dispatch), pause keys, circuit breakers and the admission event log.

Scopes: every row names a ``tenant``; ``job_type = ""`` means every job type of the tenant and
``source_id = 0`` every source (jobs without a source are in source 0's lanes). ``quotas``
stores source ids as plain integers: ledger and quotas never import each other.
"""
from __future__ import annotations

from django.db import models
from django.db.models import Q

TENANT_MAX = 64
NAME_MAX = 100
ANY_JOB_TYPE = ""
ANY_SOURCE = 0


class Quota(models.Model):
    """Limits on one scope. Every applicable quota must admit a job before it is leased.

    * ``max_active``: leased jobs of the scope at any instant (counted in the claim's
      transaction, under the tenant's dispatch lock).
    * ``rate_per_second`` / ``burst``: a token bucket; each lease takes one token. The bucket
      state is ``tokens_micro`` (millionths of a token) as of ``refilled_at``.
    * ``max_queued``: waiting jobs (blocked, scheduled, ready) of the scope; an enqueue beyond
      it is refused with 429.
    A null limit means "no limit".
    """

    tenant = models.CharField(max_length=TENANT_MAX)
    job_type = models.CharField(max_length=NAME_MAX, blank=True, default=ANY_JOB_TYPE)
    source_id = models.BigIntegerField(default=ANY_SOURCE)
    max_active = models.PositiveIntegerField(null=True, blank=True)
    rate_per_second = models.FloatField(null=True, blank=True)
    burst = models.PositiveIntegerField(null=True, blank=True)
    max_queued = models.PositiveIntegerField(null=True, blank=True)
    tokens_micro = models.BigIntegerField(default=0)
    refilled_at = models.DateTimeField(null=True, blank=True)
    reason = models.TextField(blank=True, default="")
    ticket = models.CharField(max_length=200, blank=True, default="")
    updated_by = models.CharField(max_length=200, blank=True, default="")
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "job_type", "source_id"],
                                    name="quota_scope_uniq"),
            models.CheckConstraint(condition=Q(rate_per_second__isnull=True)
                                   | Q(rate_per_second__gt=0, burst__gte=1),
                                   name="quota_bucket_valid"),
        ]

    def __str__(self) -> str:
        return f"quota {self.tenant}/{self.job_type or '*'}/{self.source_id or '*'}"


class TenantShare(models.Model):
    """A tenant's place in weighted round-robin dispatch (see docs/admission.md).

    ``served_seq`` orders tenants, least recently served first; ``weight`` is how many jobs the
    tenant may take per turn; ``turn_taken`` how many it took of its current turn. The row is also the tenant's dispatch lock: a claim serving the
    tenant holds it ``FOR UPDATE`` for its transaction.
    """

    tenant = models.CharField(max_length=TENANT_MAX, unique=True)
    weight = models.PositiveIntegerField(default=1)
    served_seq = models.BigIntegerField(default=0)
    # Jobs taken in the tenant's current turn (0 <= turn_taken < weight): a turn spans claims,
    # so a weight counts even when runners claim one job at a time (the deficit of DRR).
    turn_taken = models.PositiveIntegerField(default=0)
    # No index on served_seq: every claim rewrites it, and an unindexed column keeps those
    # updates HOT (no index writes, no bloat); the claim sorts the few candidate rows itself.

    def __str__(self) -> str:
        return f"share {self.tenant} w={self.weight}"


class Pause(models.Model):
    """One holder's pause of a scope. A scope runs only when no pause key covers it."""

    tenant = models.CharField(max_length=TENANT_MAX)
    job_type = models.CharField(max_length=NAME_MAX, blank=True, default=ANY_JOB_TYPE)
    source_id = models.BigIntegerField(default=ANY_SOURCE)
    key = models.CharField(max_length=100, help_text="the holder: operator, deploy, breaker...")
    reason = models.TextField()
    ticket = models.CharField(max_length=200, blank=True, default="")
    actor = models.CharField(max_length=200, blank=True, default="")
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "job_type", "source_id", "key"],
                                    name="pause_scope_key_uniq"),
        ]

    def __str__(self) -> str:
        return f"pause {self.tenant}/{self.job_type or '*'}/{self.source_id or '*'} [{self.key}]"


class BreakerState(models.TextChoices):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker(models.Model):
    """Per-source breaker: closed -> open when the failure ratio over ``window_seconds`` passes
    ``failure_ratio`` (with at least ``min_samples`` outcomes); half-open after
    ``cooldown_seconds`` lets one probe job through; the probe's success closes it."""

    tenant = models.CharField(max_length=TENANT_MAX)
    source_id = models.BigIntegerField(unique=True)
    state = models.CharField(max_length=16, choices=BreakerState.choices,
                             default=BreakerState.CLOSED)
    failure_ratio = models.FloatField(default=0.5)
    window_seconds = models.PositiveIntegerField(default=300)
    min_samples = models.PositiveIntegerField(default=10)
    cooldown_seconds = models.PositiveIntegerField(default=60)
    opened_at = models.DateTimeField(null=True, blank=True)
    probe_job_id = models.BigIntegerField(null=True, blank=True)
    changed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.CheckConstraint(condition=Q(failure_ratio__gt=0, failure_ratio__lte=1),
                                   name="breaker_ratio_range"),
        ]

    def __str__(self) -> str:
        return f"breaker source {self.source_id} [{self.state}]"


class AdmissionEvent(models.Model):
    """Append-only log of admission changes (quota.changed, source.paused, breaker.opened...),
    JobEvent-style: who, why, the ticket, and the data of the change."""

    tenant = models.CharField(max_length=TENANT_MAX)
    type = models.CharField(max_length=64)
    job_type = models.CharField(max_length=NAME_MAX, blank=True, default=ANY_JOB_TYPE)
    source_id = models.BigIntegerField(default=ANY_SOURCE)
    actor_type = models.CharField(max_length=16)
    actor_label = models.CharField(max_length=200, blank=True, default="")
    reason = models.TextField(blank=True, default="")
    ticket = models.CharField(max_length=200, blank=True, default="")
    data = models.JSONField(default=dict)
    occurred_at = models.DateTimeField()

    class Meta:
        indexes = [models.Index(fields=["tenant", "id"], name="admevent_tenant_idx")]
