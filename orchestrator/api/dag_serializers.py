"""Input and output serializers of dependency chains: whole-run submission and replay.

Inputs reject unknown fields and coerce nothing (``Strict*`` fields). Sizes are bounded here
(``ledger.submission.MAX_JOBS`` / ``MAX_EDGES``); graph semantics (unknown parents, cycles)
are the service's, answered 422 ``unknown_parent`` / ``dependency_cycle``.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Any

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ledger.submission import MAX_EDGES, MAX_JOBS

from .serializers import (
    MAX_INT,
    NAME_RE,
    JobOut,
    RunOut,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    StrictRegexField,
    StrictSerializer,
    validate_payload_size,
)

KEY_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_KEY = re.compile(KEY_RE)


@extend_schema_field({"oneOf": [{"type": "string", "pattern": KEY_RE},
                                {"type": "integer", "minimum": 1, "format": "int64"}]})
class ParentRefField(serializers.Field):
    """A parent: the ``key`` of a job of the same request (a JSON string) or the id of an
    existing job of the tenant (a JSON integer). Nothing is coerced."""

    default_error_messages = {
        "invalid": "a job key (string) or a job id (integer >= 1)",
    }

    def to_internal_value(self, data: Any) -> str | int:
        if isinstance(data, bool):
            self.fail("invalid")
        if isinstance(data, int) and 1 <= data <= MAX_INT:
            return data
        if isinstance(data, str) and _KEY.match(data):
            return data
        self.fail("invalid")
        raise AssertionError("unreachable")  # fail() raises

    def to_representation(self, value: Any) -> Any:
        return value


class RunJobIn(StrictSerializer):
    """One job of ``POST /runs/submit``: ``key`` names it within the request."""

    key = StrictRegexField(KEY_RE, help_text="unique within the request")
    job_type = StrictRegexField(NAME_RE)
    payload = serializers.DictField(required=False, default=dict)
    priority = StrictIntegerField(required=False, default=0, min_value=-1000, max_value=1000)
    max_attempts = StrictIntegerField(required=False, allow_null=True, default=None,
                                      min_value=1, max_value=100)
    source = StrictRegexField(NAME_RE, required=False, allow_null=True, default=None)
    not_before = serializers.DateTimeField(required=False, allow_null=True, default=None)
    depends_on = serializers.ListField(child=ParentRefField(), required=False, default=list,
                                       max_length=1000)

    def validate_payload(self, value: Any) -> Any:
        return validate_payload_size(value)


class RunSubmitIn(StrictSerializer):
    """Body of ``POST /runs/submit``: a run and 1..1000 jobs with at most 10,000 dependencies."""

    project = StrictRegexField(NAME_RE)
    name = StrictCharField(min_length=1, max_length=200)
    source = StrictRegexField(NAME_RE, required=False, allow_null=True, default=None)
    correlation_id = StrictCharField(required=False, allow_null=True, default=None,
                                     min_length=1, max_length=128)
    idempotency_key = StrictCharField(required=False, allow_null=True, default=None,
                                      min_length=1, max_length=150)
    jobs = RunJobIn(many=True, allow_empty=False, max_length=MAX_JOBS)

    def validate_jobs(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        repeated = sorted(k for k, n in Counter(job["key"] for job in value).items() if n > 1)
        if repeated:
            raise serializers.ValidationError(f"job keys must be unique; repeated: {repeated}")
        edges = sum(len(job["depends_on"]) for job in value)
        if edges > MAX_EDGES:
            raise serializers.ValidationError(
                f"at most {MAX_EDGES} dependencies per run ({edges} given)")
        return value


class RunJobOut(serializers.Serializer):
    """A submitted job: its key in the request, its id and status."""

    key = serializers.CharField()
    job_id = serializers.IntegerField()
    status = serializers.CharField()


class RunSubmitOut(serializers.Serializer):
    """Answer of ``POST /runs/submit``: the run and its jobs in the order submitted."""

    run = RunOut()
    jobs = RunJobOut(many=True)


class ReplayIn(StrictSerializer):
    """Body of ``POST /jobs/{id}/replay``."""

    reason = StrictCharField(min_length=1, max_length=2000)
    rerun_succeeded_descendants = StrictBooleanField(required=False, default=False)


class ReplayOut(serializers.Serializer):
    """Answer of a replay: the job as it now stands and the descendants changed with it."""

    job = JobOut()
    revived_job_ids = serializers.ListField(child=serializers.IntegerField())
    rerun_job_ids = serializers.ListField(child=serializers.IntegerField())
    reblocked_job_ids = serializers.ListField(
        child=serializers.IntegerField(),
        help_text="children that had not started (ready, scheduled), back to blocked")
