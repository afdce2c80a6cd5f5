"""Admin for ledger models: read-only (no add, change or delete); overrides come as actions
with a reason and ticket in the operator-actions issue."""
from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from ledger.models import Artifact, Job, JobEvent, Lease, Run, Schedule, Source


class ReadOnlyAdmin(admin.ModelAdmin):
    """Every field read-only; no add or delete. The ledger changes only through services."""

    show_full_result_count = False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


@admin.register(Job)
class JobAdmin(ReadOnlyAdmin):
    list_display = ("id", "tenant", "job_type", "status", "attempt", "max_attempts", "priority",
                    "source", "updated_at")
    list_filter = ("status", "job_type", "tenant")
    search_fields = ("=id", "idempotency_key", "correlation_id")
    list_select_related = ("source",)


@admin.register(Lease)
class LeaseAdmin(ReadOnlyAdmin):
    list_display = ("id", "job_id", "fencing_token", "attempt", "runner_id", "status", "leased_at",
                    "expires_at")
    list_filter = ("status",)
    search_fields = ("=id", "runner_id")


@admin.register(JobEvent)
class JobEventAdmin(ReadOnlyAdmin):
    list_display = ("id", "job_id", "type", "from_status", "to_status", "actor_type",
                    "actor_label", "occurred_at")
    list_filter = ("type", "actor_type")


@admin.register(Artifact)
class ArtifactAdmin(ReadOnlyAdmin):
    list_display = ("id", "job_id", "name", "size_bytes", "sha256", "media_type")


@admin.register(Run)
class RunAdmin(ReadOnlyAdmin):
    list_display = ("id", "tenant", "project", "name", "created_at")


@admin.register(Source)
class SourceAdmin(ReadOnlyAdmin):
    list_display = ("id", "tenant", "name", "kind")


@admin.register(Schedule)
class ScheduleAdmin(ReadOnlyAdmin):
    """Recurring schedules, read-only: they change through the API (``/api/v1/schedules``),
    whose service validates the cron expression and zone and restarts the watermark."""

    list_display = ("id", "tenant", "name", "cron", "timezone", "job_type", "catch_up",
                    "enabled", "next_fire_at", "last_fired_at")
    list_filter = ("enabled", "catch_up", "tenant")
    search_fields = ("=id", "name", "job_type")


from . import admission  # noqa: E402,F401  (registers the admission admin classes)
