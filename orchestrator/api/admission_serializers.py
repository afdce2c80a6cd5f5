"""Input and output serializers of the admission operator API (docs/admission-operations.md).

Inputs refuse unknown fields and coercion (``"5"`` is not a number). A missing or blank
``reason``/``ticket`` is ``reason_required``/``ticket_required``. Bounds come from
``quotas.services`` so the API and the services agree.
"""
from __future__ import annotations

import math
from typing import Any

from rest_framework import serializers

from quotas.audit import KEY_MAX, REASON_MAX, TICKET_MAX
from quotas.models import BreakerState
from quotas.services import (
    COOLDOWN_SECONDS_MAX,
    LIMIT_MAX,
    MIN_SAMPLES_MAX,
    RATE_MAX,
    RATE_MIN,
    WEIGHT_MAX,
    WINDOW_SECONDS_MAX,
)

from .serializers import (
    NAME_RE,
    StrictCharField,
    StrictIntegerField,
    StrictRegexField,
    StrictSerializer,
)


class StrictFloatField(serializers.FloatField):
    """Only JSON numbers (not strings or booleans), finite (``1e400`` parses as infinity)."""

    def to_internal_value(self, data: Any) -> float:
        if isinstance(data, bool) or not isinstance(data, int | float):
            self.fail("invalid")
        if isinstance(data, float) and not math.isfinite(data):
            self.fail("invalid")
        if isinstance(data, int) and abs(data) > 2**63:
            self.fail("invalid")
        return super().to_internal_value(data)


class WhyField(StrictCharField):
    """A required, non-blank text (``reason``/``ticket``); missing, null or blank fails with
    ``missing_code`` so the error names what to add."""

    def __init__(self, *, missing_code: str, **kwargs: Any) -> None:
        self.missing_code = missing_code
        super().__init__(**kwargs)

    def fail(self, key: str, **kwargs: Any) -> Any:
        if key in ("required", "null", "blank"):
            raise serializers.ValidationError(f"a non-blank {self.field_name} is required",
                                              code=self.missing_code)
        return super().fail(key, **kwargs)


def _reason() -> WhyField:
    return WhyField(missing_code="reason_required", max_length=REASON_MAX,
                    help_text="why (kept in the admission event); required, non-blank")


def _ticket() -> WhyField:
    return WhyField(missing_code="ticket_required", max_length=TICKET_MAX,
                    help_text="change ticket, e.g. OPS-123; required, non-blank")


def _optional_ticket() -> StrictCharField:
    return StrictCharField(required=False, default="", allow_blank=True, max_length=TICKET_MAX)


def _name(help_text: str) -> StrictRegexField:
    return StrictRegexField(NAME_RE, required=False, allow_null=True, default=None,
                            help_text=help_text)


def _limit(low: int = 0, help_text: str = "") -> StrictIntegerField:
    return StrictIntegerField(required=False, allow_null=True, default=None, min_value=low,
                              max_value=LIMIT_MAX, help_text=help_text)


def _rate(required: bool = False) -> StrictFloatField:
    extra: dict[str, Any] = {"required": True} if required else {"required": False, "default": None}
    return StrictFloatField(allow_null=True, min_value=RATE_MIN, max_value=RATE_MAX,
                            help_text="tokens per second; null = no rate limit", **extra)


class ScopeIn(StrictSerializer):
    """A scope of the token's tenant: ``job_type`` and ``source`` (a name); null or omitted
    means every job type / every source."""

    job_type = _name("a job type; null = every job type")
    source = _name("a source name; null = every source")


def _check_bucket(attrs: dict[str, Any]) -> None:
    if (attrs.get("rate_per_second") is None) != (attrs.get("burst") is None):
        raise serializers.ValidationError(
            {"burst": ["rate_per_second and burst go together (both or neither)"]})


class QuotaPutIn(ScopeIn):
    """Body of ``PUT /quotas``: the scope's limits (replaced whole: omitted = no limit)."""

    max_active = _limit(help_text="leased jobs at once (0..1e9); null = no cap")
    rate_per_second = _rate()
    burst = _limit(low=1, help_text="bucket size in tokens (1..1e9), with rate_per_second")
    max_queued = _limit(help_text="waiting jobs (blocked/scheduled/ready); beyond: 429")
    reason = _reason()
    ticket = _ticket()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        _check_bucket(attrs)
        if all(attrs.get(f) is None for f in ("max_active", "rate_per_second", "max_queued")):
            raise serializers.ValidationError(
                {"max_active": ["set at least one limit (DELETE /quotas lifts them all)"]})
        return attrs


class QuotaDeleteQuery(ScopeIn):
    """Query of ``DELETE /quotas``: the scope, ``reason`` and ``ticket``."""

    reason = _reason()
    ticket = _ticket()


class ThrottleIn(ScopeIn):
    """Body of ``PUT /throttles``: the scope quota's token bucket; both null clears it."""

    rate_per_second = _rate(required=True)
    burst = StrictIntegerField(allow_null=True, min_value=1, max_value=LIMIT_MAX,
                               help_text="bucket size in tokens; null with a null rate")
    reason = _reason()
    ticket = _ticket()

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        _check_bucket(attrs)
        return attrs


class PauseIn(ScopeIn):
    """Body of ``POST /pauses`` and ``POST /pauses/resume``: the scope and the holder's key."""

    key = StrictRegexField(NAME_RE, max_length=KEY_MAX,
                           help_text="the holder: operator, deploy-42, breaker...")
    reason = _reason()
    ticket = _optional_ticket()


class ShareIn(StrictSerializer):
    """Body of ``PUT /tenant-share``: jobs per turn in fair dispatch."""

    weight = StrictIntegerField(min_value=1, max_value=WEIGHT_MAX)
    reason = _reason()
    ticket = _ticket()


class BreakerIn(StrictSerializer):
    """Body of ``PUT /sources/{name}/breaker``: omitted parameters keep their value (the
    default for a new breaker)."""

    failure_ratio = StrictFloatField(required=False, min_value=0.000001, max_value=1.0,
                                     help_text="open above this failure share (0..1]")
    window_seconds = StrictIntegerField(required=False, min_value=1, max_value=WINDOW_SECONDS_MAX)
    min_samples = StrictIntegerField(required=False, min_value=1, max_value=MIN_SAMPLES_MAX)
    cooldown_seconds = StrictIntegerField(required=False, min_value=1,
                                          max_value=COOLDOWN_SECONDS_MAX)
    reason = _reason()
    ticket = _ticket()


class EventListQuery(StrictSerializer):
    """Query of ``GET /admission/events``."""

    type = StrictRegexField(r"^[a-z_]{1,32}\.[a-z_]{1,31}$", required=False)
    cursor = StrictCharField(required=False)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=500)  # a query string


# --- Outputs -----------------------------------------------------------------------------------

class QuotaStateOut(serializers.Serializer):
    """Live numbers at ``as_of`` (database clock). Counts stop at 100000."""

    as_of = serializers.DateTimeField()
    active = serializers.IntegerField(help_text="leased jobs of the scope")
    queued = serializers.IntegerField(help_text="waiting jobs (blocked, scheduled, ready)")
    tokens = serializers.FloatField(source="bucket.tokens", allow_null=True, default=None)
    whole_tokens = serializers.IntegerField(source="bucket.whole_tokens", allow_null=True,
                                            default=None, help_text="leases grantable now")
    next_token_at = serializers.DateTimeField(source="bucket.next_token_at", allow_null=True,
                                              default=None, help_text="null when full")


class QuotaOut(serializers.Serializer):
    """A quota (``job_type``/``source`` null = every) with its live state."""

    job_type = serializers.SerializerMethodField()
    source = serializers.CharField(allow_null=True)
    max_active = serializers.IntegerField(source="quota.max_active", allow_null=True)
    rate_per_second = serializers.FloatField(source="quota.rate_per_second", allow_null=True)
    burst = serializers.IntegerField(source="quota.burst", allow_null=True)
    max_queued = serializers.IntegerField(source="quota.max_queued", allow_null=True)
    reason = serializers.CharField(source="quota.reason")
    ticket = serializers.CharField(source="quota.ticket")
    updated_by = serializers.CharField(source="quota.updated_by")
    updated_at = serializers.DateTimeField(source="quota.updated_at")
    state = QuotaStateOut(source="*")

    def get_job_type(self, live: Any) -> str | None:
        return live.quota.job_type or None


class QuotaListOut(serializers.Serializer):
    quotas = QuotaOut(many=True)


class ThrottleOut(serializers.Serializer):
    """The scope's quota after the change (null: the scope has no quota left)."""

    quota = QuotaOut(allow_null=True)


class PauseHolderOut(serializers.Serializer):
    key = serializers.CharField()
    reason = serializers.CharField()
    ticket = serializers.CharField()
    actor = serializers.CharField()
    created_at = serializers.DateTimeField()


class PauseScopeOut(serializers.Serializer):
    """A scope and its pause holders; it runs only when ``holders`` is empty."""

    job_type = serializers.CharField(allow_null=True)
    source = serializers.CharField(allow_null=True)
    paused = serializers.BooleanField()
    holders = PauseHolderOut(many=True, source="pauses")


class PauseListOut(serializers.Serializer):
    scopes = PauseScopeOut(many=True)


class ShareOut(serializers.Serializer):
    weight = serializers.IntegerField(help_text="jobs per turn in fair dispatch (1..1000)")


class BreakerOut(serializers.Serializer):
    """A source's breaker: state (owned by the breaker evaluation) and its parameters."""

    source = serializers.CharField(allow_null=True)
    state = serializers.ChoiceField(choices=BreakerState.choices)
    opened_at = serializers.DateTimeField(allow_null=True)
    changed_at = serializers.DateTimeField()
    probe_job_id = serializers.IntegerField(allow_null=True)
    failure_ratio = serializers.FloatField()
    window_seconds = serializers.IntegerField()
    min_samples = serializers.IntegerField()
    cooldown_seconds = serializers.IntegerField()


class BreakerListOut(serializers.Serializer):
    breakers = BreakerOut(many=True)


class AdmissionEventOut(serializers.Serializer):
    """One admission change: who, why, the ticket, ``data {before, after, ...}``."""

    id = serializers.IntegerField()
    type = serializers.CharField()
    job_type = serializers.CharField(allow_null=True)
    source = serializers.CharField(allow_null=True)
    actor_type = serializers.CharField()
    actor_label = serializers.CharField()
    reason = serializers.CharField()
    ticket = serializers.CharField()
    data = serializers.DictField()
    occurred_at = serializers.DateTimeField()


class AdmissionOut(serializers.Serializer):
    """The tenant's whole admission state."""

    quotas = QuotaOut(many=True)
    paused_scopes = PauseScopeOut(many=True)
    breakers = BreakerOut(many=True)
    share = ShareOut()
