"""Task Runner bridge views: claim, heartbeat, ack, fail, release, logs, runner-config.

Views validate, call one service, and render. Errors map to HTTP in ``api/errors.py``.
"""
from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ledger.models import Source
from ledger.selectors import lease_tenants

from ..lease_config import LeaseConfig
from ..leasing import (
    AckIn,
    ArtifactIn,
    LogLineIn,
    lease_ack,
    lease_ack_many,
    lease_claim_wait,
    lease_fail,
    lease_heartbeat,
    lease_logs_append,
    lease_release,
)
from . import serializers as s
from .errors import ApiError

RUNNER = "orch:runner"
ERRORS = {code: OpenApiResponse(s.ErrorOut) for code in (400, 401, 403, 404, 409, 413)}
ENQUEUE_ERRORS = {**ERRORS, 422: OpenApiResponse(s.ErrorOut), 429: OpenApiResponse(s.ErrorOut)}


def _bounds_error(exc: ValueError) -> ApiError:
    return ApiError(400, "validation_error", str(exc), {"errors": [str(exc)]})


def _seconds(value: int | None) -> timedelta | None:
    return None if value is None else timedelta(seconds=value)


def _lease_tenant(request: Request, lease_id: UUID) -> str:
    """The tenant a lease call acts in: the caller's, or for a shared runner pool the lease's
    own tenant when it is one of the pool's (anything else then answers 404 as usual)."""
    principal = request.user
    if len(principal.runner_tenants) == 1:
        return principal.tenant
    return lease_tenants([lease_id], principal.runner_tenants).get(lease_id, principal.tenant)


def _claim_tenants(request: Request, wanted: list[str] | None) -> list[str]:
    allowed = request.user.runner_tenants
    if wanted is None:
        return sorted(allowed)
    outside = sorted(set(wanted) - allowed)
    if outside:
        raise ApiError(403, "tenant_not_allowed", "this token may not claim for these tenants",
                       {"tenants": outside})
    return sorted(set(wanted))


class LeaseClaimApi(APIView):
    """Claim up to ``max_jobs`` leases, long-polling up to ``wait_seconds``."""

    required_scope = RUNNER

    @extend_schema(request=s.ClaimIn, responses={200: s.ClaimOut, **ERRORS},
                   operation_id="leases_claim")
    def post(self, request: Request) -> Response:
        data = s.ClaimIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        try:
            grants = lease_claim_wait(
                wait=timedelta(seconds=v["wait_seconds"]), tenant=request.user.tenant,
                runner_id=v["runner_id"], job_types=v["job_types"], max_jobs=v["max_jobs"],
                lease_for=_seconds(v["lease_seconds"]), claim_id=v["claim_id"],
                tenants=_claim_tenants(request, v.get("tenants")),
            )
        except ValueError as exc:
            raise _bounds_error(exc) from None
        source_ids = {g.job.source_id for g in grants if g.job.source_id}
        names = dict(Source.objects.filter(pk__in=source_ids).values_list("pk", "name")) if source_ids else {}
        return Response({"leases": [s.lease_json(g, names) for g in grants]})


class LeaseHeartbeatApi(APIView):
    """Extend a lease and report progress; answers whether cancellation was requested."""

    required_scope = RUNNER

    @extend_schema(request=s.HeartbeatIn, responses={200: s.HeartbeatOut, **ERRORS},
                   operation_id="leases_heartbeat")
    def post(self, request: Request, lease_id: UUID) -> Response:
        data = s.HeartbeatIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        try:
            state = lease_heartbeat(tenant=_lease_tenant(request, lease_id), lease_id=lease_id,
                                    extend=_seconds(v["extend_seconds"]), progress=v["progress"])
        except ValueError as exc:
            raise _bounds_error(exc) from None
        return Response(s.HeartbeatOut(state).data)


class LeaseAckApi(APIView):
    """Complete the job of a live lease; a repeated ack of the same lease answers 200 again."""

    required_scope = RUNNER

    @extend_schema(request=s.AckIn, responses={200: s.AckOut, **ERRORS}, operation_id="leases_ack")
    def post(self, request: Request, lease_id: UUID) -> Response:
        data = s.AckIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        outcome = lease_ack(tenant=_lease_tenant(request, lease_id), lease_id=lease_id, result=v["result"],
                            artifacts=[ArtifactIn(**a) for a in v["artifacts"]])
        return Response({"job_id": outcome.job_id, "status": outcome.job_status})


class LeaseBatchAckApi(APIView):
    """Ack up to 100 leases in one request and one statement; each succeeds or fails alone."""

    required_scope = RUNNER

    @extend_schema(request=s.BatchAckIn, responses={200: s.BatchAckOut, **ERRORS},
                   operation_id="leases_ack_batch")
    def post(self, request: Request) -> Response:
        data = s.BatchAckIn(data=request.data)
        data.is_valid(raise_exception=True)
        acks = [AckIn(lease_id=a["lease_id"], result=a["result"],
                      artifacts=tuple(ArtifactIn(**x) for x in a["artifacts"]))
                for a in data.validated_data["acks"]]
        principal = request.user
        if len(principal.runner_tenants) == 1:
            results = lease_ack_many(tenant=principal.tenant, acks=acks)
        else:  # a shared runner pool: one batch per tenant, answered in the request's order
            owners = lease_tenants([a.lease_id for a in acks], principal.runner_tenants)
            groups: dict[str, list[AckIn]] = {}
            for a in acks:
                groups.setdefault(owners.get(a.lease_id, principal.tenant), []).append(a)
            done = {r.lease_id: r for tenant, group in groups.items()
                    for r in lease_ack_many(tenant=tenant, acks=group)}
            results = [done[a.lease_id] for a in acks]
        return Response({"results": [
            {"lease_id": str(r.lease_id), "status": r.status, "job_id": r.job_id,
             "replayed": r.replayed} for r in results]})


class LeaseFailApi(APIView):
    """Report a failed attempt: retry with backoff, or dead-letter."""

    required_scope = RUNNER

    @extend_schema(request=s.FailIn, responses={200: s.OutcomeOut, **ERRORS},
                   operation_id="leases_fail")
    def post(self, request: Request, lease_id: UUID) -> Response:
        data = s.FailIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        outcome = lease_fail(tenant=_lease_tenant(request, lease_id), lease_id=lease_id, error=dict(v["error"]),
                             retryable=v["retryable"],
                             retry_after=_seconds(v["retry_after_seconds"]))
        return Response(outcome.as_json())


class LeaseReleaseApi(APIView):
    """Give a lease back without consuming an attempt."""

    required_scope = RUNNER

    @extend_schema(request=s.ReleaseIn, responses={200: s.OutcomeOut, **ERRORS},
                   operation_id="leases_release")
    def post(self, request: Request, lease_id: UUID) -> Response:
        data = s.ReleaseIn(data=request.data)
        data.is_valid(raise_exception=True)
        outcome = lease_release(tenant=_lease_tenant(request, lease_id), lease_id=lease_id,
                                reason=data.validated_data["reason"] or "")
        return Response(outcome.as_json())


class LeaseLogsApi(APIView):
    """Append log lines of a live lease (bounded per job)."""

    required_scope = RUNNER

    @extend_schema(request=s.LogsIn, responses={202: s.LogsOut, **ERRORS},
                   operation_id="leases_logs")
    def post(self, request: Request, lease_id: UUID) -> Response:
        data = s.LogsIn(data=request.data)
        data.is_valid(raise_exception=True)
        accepted = lease_logs_append(
            tenant=_lease_tenant(request, lease_id), lease_id=lease_id,
            lines=[LogLineIn(**line) for line in data.validated_data["lines"]],
            max_per_job=settings.ORCH_LOG_LINES_MAX_PER_JOB,
        )
        return Response({"accepted": accepted}, status=status.HTTP_202_ACCEPTED)


class RunnerConfigApi(APIView):
    """The server's lease defaults: lease length, heartbeat interval, backoff curve, limits."""

    required_scope = RUNNER

    @extend_schema(responses={200: s.RunnerConfigOut, 401: OpenApiResponse(s.ErrorOut),
                              403: OpenApiResponse(s.ErrorOut)}, operation_id="runner_config")
    def get(self, request: Request) -> Response:
        return Response(LeaseConfig.from_settings().as_json())
