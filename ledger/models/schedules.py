"""Schedule: a recurring job definition (cron expression in an IANA time zone)."""
from __future__ import annotations

from django.db import models
from django.db.models import Q

from .core import NAME_MAX, TENANT_MAX, Source


class CatchUp(models.TextChoices):
    """What a schedule does with fire times missed while nothing was firing (downtime)."""

    SKIP = "skip", "Skip missed fire times"
    ONE = "one", "Fire once for all missed fire times"
    ALL = "all", "Fire every missed fire time"


class Schedule(models.Model):
    """Enqueues a job of ``job_type`` at each fire time of ``cron`` in ``timezone``.

    ``next_fire_at`` is the watermark: the first fire time not yet enqueued (UTC). Each fire
    enqueues with the idempotency key ``schedule:<id>:<fire time, UTC ISO>``, so two beats firing
    the same time create one job.
    """

    tenant = models.CharField(max_length=TENANT_MAX)
    name = models.CharField(max_length=NAME_MAX)
    cron = models.CharField(max_length=200)
    timezone = models.CharField(max_length=64, default="UTC")
    job_type = models.CharField(max_length=NAME_MAX)
    project = models.CharField(max_length=NAME_MAX)
    source = models.ForeignKey(Source, null=True, blank=True, on_delete=models.PROTECT)
    payload = models.JSONField(default=dict)
    priority = models.SmallIntegerField(default=0)
    max_attempts = models.PositiveIntegerField(default=5)
    catch_up = models.CharField(max_length=8, choices=CatchUp.choices, default=CatchUp.ONE)
    enabled = models.BooleanField(default=True)
    next_fire_at = models.DateTimeField(null=True, blank=True)
    last_fired_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField()
    updated_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["tenant", "name"], name="schedule_tenant_name_uniq"),
        ]
        indexes = [
            # the beat: WHERE enabled AND next_fire_at <= now
            models.Index(fields=["next_fire_at"], name="schedule_due_idx",
                         condition=Q(enabled=True)),
        ]

    def __str__(self) -> str:
        return f"{self.tenant}/{self.name} ({self.cron} {self.timezone})"
