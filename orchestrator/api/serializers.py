"""Input and output serializers of the bridge (v1). Inputs reject unknown fields."""
from __future__ import annotations

from typing import Any

from django.conf import settings
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from ledger.canonical import canonical_json
from ledger.models import Job, Lease
from ledger.states import JobStatus

from ..leasing import Grant
from ..tokens import RUNNER_TENANTS_MAX, TENANT_RE

NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,99}$"


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not declare (400 ``unknown_field``), so typos never pass silently."""

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields))
            if unknown:
                raise serializers.ValidationError(
                    {name: [serializers.ErrorDetail("unknown field", code="unknown_field")]
                     for name in unknown})
        return super().to_internal_value(data)


MAX_INT = 2**63 - 1
# Hard ceiling of any lease length (the configured ORCH_LEASE_MAX_SECONDS is checked by the
# service); keeps timedelta arithmetic far from overflow.
MAX_LEASE_SECONDS = 7 * 86_400


class StrictIntegerField(serializers.IntegerField):
    """Only JSON integers (DRF's IntegerField would also take "5", 5.0 or true), bounded to
    64 bits so nothing overflows a database column or a timedelta."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("max_value", MAX_INT)
        kwargs.setdefault("min_value", -MAX_INT)
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """Only JSON strings (DRF's CharField would turn 123 into "123")."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictRegexField(serializers.RegexField):
    """``StrictCharField`` with a pattern."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictBooleanField(serializers.BooleanField):
    """Only JSON ``true``/``false``: DRF's BooleanField would also take "yes", 1 or "on"."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


def validate_payload_size(value: Any) -> Any:
    """Return ``value``; raise a 413 ``payload_too_large`` if its canonical JSON exceeds
    ORCH_PAYLOAD_MAX_BYTES."""
    limit = settings.ORCH_PAYLOAD_MAX_BYTES
    size = len(canonical_json(value).encode("utf-8"))
    if size > limit:
        from .errors import ApiError

        raise ApiError(413, "payload_too_large", f"payload is {size} bytes; the limit is {limit}",
                       {"size_bytes": size, "limit_bytes": limit})
    return value


class EnqueueIn(StrictSerializer):
    """Body of ``POST /jobs``: the job to create (payload <= ORCH_PAYLOAD_MAX_BYTES)."""

    job_type = StrictRegexField(NAME_RE)
    project = StrictRegexField(NAME_RE)
    source = StrictRegexField(NAME_RE, required=False, allow_null=True, default=None)
    payload = serializers.DictField(required=False, default=dict)
    priority = StrictIntegerField(required=False, default=0, min_value=-1000, max_value=1000)
    idempotency_key = StrictCharField(required=False, allow_null=True, default=None,
                                            min_length=1, max_length=200)
    run_id = StrictIntegerField(required=False, allow_null=True, default=None, min_value=1)
    not_before = serializers.DateTimeField(required=False, allow_null=True, default=None)
    max_attempts = StrictIntegerField(required=False, allow_null=True, default=None,
                                            min_value=1, max_value=100)
    correlation_id = StrictCharField(required=False, allow_null=True, default=None,
                                           min_length=1, max_length=128)
    depends_on = serializers.ListField(
        child=StrictIntegerField(min_value=1), required=False, default=list, max_length=1000,
        help_text="ids of this tenant's jobs that must succeed first (docs/dependencies.md)")

    def validate_payload(self, value: Any) -> Any:
        return validate_payload_size(value)


class RunIn(StrictSerializer):
    """Body of ``POST /runs``."""

    project = StrictRegexField(NAME_RE)
    name = StrictCharField(min_length=1, max_length=200)
    source = StrictRegexField(NAME_RE, required=False, allow_null=True, default=None)
    correlation_id = StrictCharField(required=False, allow_null=True, default=None,
                                           min_length=1, max_length=128)


class CancelIn(StrictSerializer):
    """Body of ``POST /jobs/{id}/cancel``: why (kept in the job's events)."""

    reason = StrictCharField(min_length=1, max_length=2000)


class ClaimIn(StrictSerializer):
    """Body of ``POST /claims``: ``max_jobs`` 1..100, ``wait_seconds`` 0..30 (long poll)."""

    runner_id = StrictRegexField(NAME_RE)
    job_types = serializers.ListField(child=StrictRegexField(NAME_RE), min_length=1,
                                      max_length=50)
    max_jobs = StrictIntegerField(required=False, default=1, min_value=1, max_value=100)
    wait_seconds = StrictIntegerField(required=False, default=0, min_value=0, max_value=30)
    lease_seconds = StrictIntegerField(required=False, allow_null=True, default=None,
                                       min_value=1, max_value=MAX_LEASE_SECONDS)
    claim_id = StrictCharField(required=False, allow_null=True, default=None,
                                     min_length=1, max_length=100)
    tenants = serializers.ListField(child=StrictRegexField(TENANT_RE), required=False,
                                    allow_empty=False, max_length=RUNNER_TENANTS_MAX,
                                    help_text="a shared runner pool's subset of its tenants; "
                                              "default: all of them")


class ProgressIn(StrictSerializer):
    """Progress counters sent with a heartbeat (``done`` of ``total`` units, a message)."""

    done = StrictIntegerField(min_value=0)
    total = StrictIntegerField(required=False, allow_null=True, default=None, min_value=0)
    message = StrictCharField(required=False, allow_null=True, default=None,
                                    max_length=2000, allow_blank=True)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("total") is not None and attrs["done"] > attrs["total"]:
            raise serializers.ValidationError({"done": ["must not exceed total"]})
        return attrs


class HeartbeatIn(StrictSerializer):
    """Body of ``POST /leases/{id}/heartbeat``; ``extend_seconds`` within the lease bounds."""

    progress = ProgressIn(required=False, allow_null=True, default=None)
    extend_seconds = StrictIntegerField(required=False, allow_null=True, default=None,
                                        min_value=1, max_value=MAX_LEASE_SECONDS)


class ArtifactSerializer(StrictSerializer):
    """An artifact: where it is, its sha256 (64 lowercase hex) and size in bytes."""

    name = StrictRegexField(r"^(?!\.{1,2}$)[A-Za-z0-9._-]{1,200}$",
                            help_text="a file name: letters, digits, '.', '_', '-'")
    uri = StrictRegexField(r"^[a-z][a-z0-9+.-]*://\S{1,1990}$",
                           help_text="an absolute URI with an authority part, e.g. file:///..., s3://...")
    sha256 = StrictRegexField(r"^[0-9a-f]{64}$")
    size_bytes = StrictIntegerField(min_value=0)
    media_type = StrictCharField(min_length=1, max_length=200)


class AckIn(StrictSerializer):
    """Body of ``POST /leases/{id}/ack``: result (<= ORCH_PAYLOAD_MAX_BYTES) and artifacts."""

    result = serializers.DictField(required=False, allow_null=True, default=None)
    artifacts = ArtifactSerializer(many=True, required=False, default=list)

    def validate_result(self, value: Any) -> Any:
        return validate_payload_size(value)

    def validate_artifacts(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if len(value) > 100:
            raise serializers.ValidationError("at most 100 artifacts per ack")
        names = [a["name"] for a in value]
        if len(names) != len(set(names)):
            raise serializers.ValidationError("artifact names must be unique within a job")
        return value


class BatchAckItemIn(AckIn):
    """One ack of a batch: an ack body plus the lease it is for."""

    lease_id = serializers.UUIDField()


class BatchAckIn(StrictSerializer):
    """Body of ``POST /acks``: 1..100 acks of distinct leases."""

    acks = BatchAckItemIn(many=True, allow_empty=False, max_length=100)

    def validate_acks(self, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        ids = [a["lease_id"] for a in value]
        if len(ids) != len(set(ids)):
            raise serializers.ValidationError("each lease may appear once in a batch")
        return value


class ErrorIn(StrictSerializer):
    """The error a runner reports: a short machine code and a message."""

    code = StrictRegexField(r"^[A-Za-z0-9_.:-]{1,100}$")
    message = StrictCharField(max_length=4000, allow_blank=True)


class FailIn(StrictSerializer):
    """Body of ``POST /leases/{id}/fail``; ``retry_after_seconds`` 0..86400 overrides backoff."""

    error = ErrorIn()
    retryable = StrictBooleanField()
    retry_after_seconds = StrictIntegerField(required=False, allow_null=True, default=None,
                                                   min_value=0, max_value=86400)


class ReleaseIn(StrictSerializer):
    """Body of ``POST /leases/{id}/release``."""

    reason = StrictCharField(required=False, allow_null=True, default="", max_length=2000,
                                   allow_blank=True)


class LogLineSerializer(StrictSerializer):
    """One runner log line (message <= 8 KiB)."""

    ts = serializers.DateTimeField()
    level = serializers.ChoiceField(choices=["debug", "info", "warning", "error"])
    message = StrictCharField(max_length=8192, allow_blank=True, trim_whitespace=False)


class LogsIn(StrictSerializer):
    """Body of ``POST /leases/{id}/logs``: 1..500 lines."""

    lines = LogLineSerializer(many=True, allow_empty=False, max_length=500)


# --- Outputs -----------------------------------------------------------------------------------

class RetryHintOut(serializers.Serializer):
    """How long the next retry may wait at most, and how many attempts remain."""

    backoff_seconds = serializers.IntegerField()
    attempts_left = serializers.IntegerField()


class LeaseOut(serializers.Serializer):
    """The lease object handed to runners (bridge v1)."""

    lease_id = serializers.UUIDField()
    job_id = serializers.IntegerField()
    fencing_token = serializers.IntegerField()
    job_type = serializers.CharField()
    tenant = serializers.CharField()
    project = serializers.CharField()
    source = serializers.CharField(allow_null=True)
    payload = serializers.DictField()
    idempotency_key = serializers.CharField(allow_null=True)
    correlation_id = serializers.CharField(allow_null=True)
    attempt = serializers.IntegerField()
    max_attempts = serializers.IntegerField()
    lease_seconds = serializers.IntegerField()
    lease_expires_at = serializers.DateTimeField()
    heartbeat_interval_seconds = serializers.IntegerField()
    retry_hint = RetryHintOut()


def lease_json(grant: Grant, source_names: dict[int, str]) -> dict[str, Any]:
    """Render a grant as ``LeaseOut`` (by hand: this is the claim's hot path)."""
    job, lease = grant.job, grant.lease
    return {
        "lease_id": str(lease.id),
        "job_id": job.pk,
        "fencing_token": lease.fencing_token,
        "job_type": job.job_type,
        "tenant": job.tenant,
        "project": job.project,
        "source": source_names.get(job.source_id) if job.source_id else None,
        "payload": job.payload,
        "idempotency_key": job.idempotency_key,
        "correlation_id": job.correlation_id,
        "attempt": lease.attempt,
        "max_attempts": job.max_attempts,
        "lease_seconds": lease.lease_seconds,
        "lease_expires_at": lease.expires_at.isoformat().replace("+00:00", "Z"),
        "heartbeat_interval_seconds": grant.heartbeat_interval_seconds,
        "retry_hint": {"backoff_seconds": grant.backoff_seconds,
                       "attempts_left": job.max_attempts - lease.attempt},
    }


class ClaimOut(serializers.Serializer):
    """Answer of ``POST /claims``."""

    leases = LeaseOut(many=True)


class HeartbeatOut(serializers.Serializer):
    """Answer of a heartbeat: new expiry, granted length, whether to stop."""

    lease_expires_at = serializers.DateTimeField()
    lease_seconds = serializers.IntegerField()
    cancel_requested = serializers.BooleanField()


class OutcomeOut(serializers.Serializer):
    """Answer of fail and release: the job's new status and, for a retry, when."""

    job_id = serializers.IntegerField()
    job_status = serializers.ChoiceField(choices=JobStatus.choices)
    next_attempt_at = serializers.DateTimeField(allow_null=True)


class AckOut(serializers.Serializer):
    """Answer of an ack."""

    job_id = serializers.IntegerField()
    status = serializers.CharField(help_text='always "succeeded"')


class BatchAckResultOut(serializers.Serializer):
    """How one ack of a batch ended."""

    lease_id = serializers.UUIDField()
    status = serializers.ChoiceField(choices=["succeeded", "lease_lost", "not_found"])
    job_id = serializers.IntegerField(allow_null=True)
    replayed = serializers.BooleanField()


class BatchAckOut(serializers.Serializer):
    """Answer of ``POST /acks``: one result per ack, in the order sent."""

    results = BatchAckResultOut(many=True)


class LogsOut(serializers.Serializer):
    """Answer of a logs call: how many lines were stored."""

    accepted = serializers.IntegerField()


class CurrentLeaseOut(serializers.ModelSerializer):
    """The live lease shown on a leased job."""

    lease_id = serializers.UUIDField(source="id")
    lease_expires_at = serializers.DateTimeField(source="expires_at")

    class Meta:
        model = Lease
        fields = ["lease_id", "fencing_token", "attempt", "runner_id", "lease_expires_at",
                  "progress"]


class ArtifactOut(serializers.Serializer):
    """An artifact as stored."""

    name = serializers.CharField()
    uri = serializers.CharField()
    sha256 = serializers.CharField()
    size_bytes = serializers.IntegerField()
    media_type = serializers.CharField()


class JobOut(serializers.ModelSerializer):
    """A job as ``GET /jobs/{id}`` shows it."""

    job_id = serializers.IntegerField(source="pk")
    source = serializers.SerializerMethodField()
    run_id = serializers.IntegerField(allow_null=True)
    lease = serializers.SerializerMethodField()
    artifacts = ArtifactOut(many=True)
    depends_on = serializers.SerializerMethodField(
        help_text="ids of the parent jobs (docs/dependencies.md)")

    class Meta:
        model = Job
        fields = ["job_id", "tenant", "project", "job_type", "source", "run_id", "status",
                  "priority", "attempt", "max_attempts", "fencing_token", "idempotency_key",
                  "correlation_id", "payload", "not_before", "cancel_requested", "lease",
                  "result", "artifacts", "last_error", "depends_on", "pending_parents",
                  "created_at", "updated_at", "finished_at"]

    @extend_schema_field(serializers.ListField(child=serializers.IntegerField()))
    def get_depends_on(self, job: Job) -> list[int]:
        # parent_edges is prefetched by the selectors (one query per page, not per job)
        return sorted(edge.parent_id for edge in job.parent_edges.all())

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_source(self, job: Job) -> str | None:
        return job.source.name if job.source_id else None

    @extend_schema_field(CurrentLeaseOut(allow_null=True))
    def get_lease(self, job: Job) -> dict[str, Any] | None:
        if job.status != JobStatus.LEASED or job.current_lease is None:
            return None
        return CurrentLeaseOut(job.current_lease).data


class RunOut(serializers.Serializer):
    """A run."""

    run_id = serializers.IntegerField(source="pk")
    project = serializers.CharField()
    name = serializers.CharField()
    correlation_id = serializers.CharField(allow_null=True)
    created_at = serializers.DateTimeField()


class RunnerConfigOut(serializers.Serializer):
    """The lease defaults (``GET /runner-config``)."""

    lease_seconds = serializers.IntegerField()
    min_lease_seconds = serializers.IntegerField()
    max_lease_seconds = serializers.IntegerField()
    heartbeat_interval_seconds = serializers.IntegerField()
    max_wait_seconds = serializers.IntegerField()
    max_jobs = serializers.IntegerField()
    backoff = serializers.DictField()


class ErrorOut(serializers.Serializer):
    """``{"error": {"code", "message", "details"}}``"""

    error = serializers.DictField()
