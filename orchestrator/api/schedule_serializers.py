"""Input and output serializers of the schedule API. Inputs reject unknown fields and coerce
nothing (``Strict*`` fields); cron and zone semantics are checked by the service
(``orchestrator.schedules``), which answers 400 ``invalid_cron`` / ``invalid_timezone``."""
from __future__ import annotations

import re
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ledger.models import CatchUp, Schedule

from ..cron import CRON_MAX_CHARS
from ..schedules import PREVIEW_MAX
from .serializers import (
    NAME_RE,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    StrictRegexField,
    StrictSerializer,
    validate_payload_size,
)


class StrictChoiceField(serializers.ChoiceField):
    """Only JSON strings among the choices (DRF's ChoiceField compares ``str(value)``)."""

    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid_choice", input=data)
        return super().to_internal_value(data)


# RFC 3339 date-time (section 5.6), upper-case "T" and "Z": full date, time with seconds, an
# optional fraction (at most 6 digits) and a UTC offset ("Z" or +hh:mm / -hh:mm); never a bare
# date or a local time without an offset.
RFC3339_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|[+-]\d{2}:\d{2})",
                        re.ASCII)


class AwareDateTimeField(serializers.DateTimeField):
    """Only an RFC 3339 date-time string with a UTC offset (``2026-03-28T00:00:00Z``,
    ``2026-03-28T01:00:00+01:00``). DRF's DateTimeField would also read a bare date
    (``2026-03-28``) or a naive time in the server's zone: an instant must say its offset."""

    default_error_messages = {
        "rfc3339": "Expected an RFC 3339 date-time with a UTC offset, e.g. "
                   "2026-03-28T00:00:00Z.",
    }

    def to_internal_value(self, value: Any) -> Any:
        if not isinstance(value, str) or not RFC3339_RE.fullmatch(value):
            self.fail("rfc3339")
        return super().to_internal_value(value)


class ScheduleIn(StrictSerializer):
    """Body of ``POST /schedules`` (and, every field optional, of ``PATCH /schedules/{id}``).

    ``cron``: five fields (minute hour day-of-month month day-of-week) or a macro such as
    ``@daily``, read in ``timezone`` (IANA name, default UTC). ``catch_up``: what happens to
    fire times missed during downtime (skip / one / all, default one). ``max_attempts``
    defaults to ORCH_MAX_ATTEMPTS_DEFAULT; ``payload`` <= ORCH_PAYLOAD_MAX_BYTES.
    """

    name = StrictRegexField(NAME_RE)
    cron = StrictCharField(min_length=1, max_length=CRON_MAX_CHARS)
    timezone = StrictCharField(required=False, default="UTC", min_length=1, max_length=64,
                               trim_whitespace=False)  # "Europe/Berlin " is not a zone
    job_type = StrictRegexField(NAME_RE)
    project = StrictRegexField(NAME_RE)
    source = StrictRegexField(NAME_RE, required=False, allow_null=True, default=None)
    payload = serializers.DictField(required=False, default=dict)
    priority = StrictIntegerField(required=False, default=0, min_value=-1000, max_value=1000)
    max_attempts = StrictIntegerField(required=False, allow_null=True, default=None,
                                      min_value=1, max_value=100)
    catch_up = StrictChoiceField(choices=CatchUp.choices, required=False, default=CatchUp.ONE)
    enabled = StrictBooleanField(required=False, default=True)

    def validate_payload(self, value: Any) -> Any:
        return validate_payload_size(value)


class ScheduleListQuery(StrictSerializer):
    """Query of ``GET /schedules``."""

    enabled = serializers.ChoiceField(choices=["true", "false"], required=False)
    cursor = serializers.CharField(required=False)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=500)


class PreviewQuery(StrictSerializer):
    """Query of ``GET /schedules/{id}/preview``: ``count`` 1..100 (default 10), fire times
    strictly after ``after`` (RFC 3339 with an offset; default: now)."""

    count = serializers.IntegerField(required=False, default=10, min_value=1,
                                     max_value=PREVIEW_MAX)
    after = AwareDateTimeField(required=False, default=None)


class PreviewIn(StrictSerializer):
    """Body of ``POST /schedules/preview``: an unsaved expression and zone; ``count`` and
    ``after`` as in ``PreviewQuery``."""

    cron = StrictCharField(min_length=1, max_length=CRON_MAX_CHARS)
    timezone = StrictCharField(required=False, default="UTC", min_length=1, max_length=64,
                               trim_whitespace=False)  # "Europe/Berlin " is not a zone
    count = StrictIntegerField(required=False, default=10, min_value=1, max_value=PREVIEW_MAX)
    after = AwareDateTimeField(required=False, default=None)


# --- Outputs -------------------------------------------------------------------------------

class ScheduleOut(serializers.ModelSerializer):
    """A schedule as stored. ``next_fire_at``: the first fire time not yet enqueued (null when
    disabled); ``last_fired_at``: the last fire time that has its job."""

    schedule_id = serializers.IntegerField(source="pk")
    source = serializers.SerializerMethodField()

    class Meta:
        model = Schedule
        fields = ["schedule_id", "tenant", "name", "cron", "timezone", "job_type", "project",
                  "source", "payload", "priority", "max_attempts", "catch_up", "enabled",
                  "next_fire_at", "last_fired_at", "created_at", "updated_at"]

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_source(self, schedule: Schedule) -> str | None:
        return schedule.source.name if schedule.source_id else None


class FireTimeOut(serializers.Serializer):
    """One fire time: the UTC instant and the schedule's local wall-clock time (with offset)."""

    at = serializers.DateTimeField()
    local = serializers.CharField(help_text="ISO 8601 with the zone's UTC offset, "
                                            "e.g. 2026-03-29T03:00:00+02:00")


class PreviewOut(serializers.Serializer):
    """Answer of the preview calls: the next fire times strictly after ``after``."""

    cron = serializers.CharField()
    timezone = serializers.CharField()
    after = serializers.DateTimeField()
    fire_times = FireTimeOut(many=True)
