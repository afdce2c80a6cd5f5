"""Admission operator API: quotas, throttles, pause keys, tenant share, breakers, the event log.

The tenant is always the token's. Reads need ``orch:read``; pause/resume ``orch:operate``;
quota, throttle, share and breaker changes ``orch:quota`` plus a ``reason`` and a ``ticket``.
Views validate, call one service (through ``admission_ops.in_scope`` where a source name is
resolved), and render. Contract: docs/admission-operations.md.
"""
from __future__ import annotations

import re
from typing import Any

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ledger.clock import db_now
from ledger.exceptions import NotFound
from quotas.models import ANY_JOB_TYPE, CircuitBreaker, Quota
from quotas.services import (
    BreakerConfig,
    Limits,
    breaker_configure,
    pause_add,
    pause_remove,
    quota_delete,
    quota_set,
    share_set_weight,
    throttle_set,
)

from .. import admission_state as state
from ..admission_ops import in_scope
from . import admission_serializers as a
from . import serializers as s
from .auth import operator_actor
from .jobs import JobCursorPagination

READ, OPERATE, QUOTA = "orch:read", "orch:operate", "orch:quota"
ERRORS = {code: OpenApiResponse(s.ErrorOut) for code in (400, 401, 403, 404)}
READ_ERRORS = {code: OpenApiResponse(s.ErrorOut) for code in (400, 401, 403)}



def _valid(serializer_class: type[a.StrictSerializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _quota_json(quota: Quota | None, source: str | None) -> dict[str, Any] | None:
    if quota is None:
        return None
    names = {quota.source_id: source} if source else {}
    return dict(a.QuotaOut(state.quota_live(quota, now=db_now(), names=names)).data)


def _breaker_json(breaker: CircuitBreaker, source: str | None) -> dict[str, Any]:
    return dict(a.BreakerOut({
        "source": source, "state": breaker.state, "opened_at": breaker.opened_at,
        "changed_at": breaker.changed_at, "probe_job_id": breaker.probe_job_id,
        "failure_ratio": breaker.failure_ratio, "window_seconds": breaker.window_seconds,
        "min_samples": breaker.min_samples, "cooldown_seconds": breaker.cooldown_seconds,
    }).data)


_SCOPE_QUERY = [OpenApiParameter(name, str, required=False, description=text) for name, text in (
    ("job_type", "the scope's job type; omitted = every job type"),
    ("source", "the scope's source name; omitted = every source"))]


class QuotaCollectionApi(APIView):
    """``GET`` the tenant's quotas with live state (orch:read); ``PUT`` creates or replaces a
    scope's limits and ``DELETE`` removes them (orch:quota, reason and ticket)."""

    required_scope = {"GET": READ, "PUT": QUOTA, "DELETE": QUOTA}

    @extend_schema(responses={200: a.QuotaListOut, **READ_ERRORS}, operation_id="quotas_list")
    def get(self, request: Request) -> Response:
        quotas = state.quota_states(tenant=request.user.tenant)
        return Response({"quotas": a.QuotaOut(quotas, many=True).data})

    @extend_schema(request=a.QuotaPutIn, responses={200: a.QuotaOut, **ERRORS},
                   operation_id="quotas_set")
    def put(self, request: Request) -> Response:
        v = _valid(a.QuotaPutIn, request.data)
        limits = Limits(v.pop("max_active"), v.pop("rate_per_second"), v.pop("burst"),
                        v.pop("max_queued"))
        quota = in_scope(quota_set, tenant=request.user.tenant, create=True, limits=limits,
                         actor=operator_actor(request), **v)
        return Response(_quota_json(quota, v["source"]))

    @extend_schema(parameters=[*_SCOPE_QUERY,
                               OpenApiParameter("reason", str, required=True),
                               OpenApiParameter("ticket", str, required=True)],
                   responses={204: None, **ERRORS}, operation_id="quotas_delete")
    def delete(self, request: Request) -> Response:
        v = _valid(a.QuotaDeleteQuery, request.query_params.dict())
        in_scope(quota_delete, tenant=request.user.tenant, create=False, actor=operator_actor(request),
                 **v)
        return Response(status=status.HTTP_204_NO_CONTENT)


class ThrottleApi(APIView):
    """``PUT`` a scope's throttle: its quota's token bucket (both null clears it)."""

    required_scope = QUOTA

    @extend_schema(request=a.ThrottleIn, responses={200: a.ThrottleOut, **ERRORS},
                   operation_id="throttles_set")
    def put(self, request: Request) -> Response:
        v = _valid(a.ThrottleIn, request.data)
        # Clearing never creates a source: an unknown name has no throttle to clear (404).
        create = v["rate_per_second"] is not None
        quota = in_scope(throttle_set, tenant=request.user.tenant, create=create,
                         actor=operator_actor(request), **v)
        return Response({"quota": _quota_json(quota, v["source"])})


class PauseCollectionApi(APIView):
    """``GET`` the paused scopes and their holders (orch:read); ``POST`` adds (or updates) a
    holder's pause key (orch:operate): 201 new key, 200 updated."""

    required_scope = {"GET": READ, "POST": OPERATE}

    @extend_schema(responses={200: a.PauseListOut, **READ_ERRORS}, operation_id="pauses_list")
    def get(self, request: Request) -> Response:
        scopes = state.pause_scopes(tenant=request.user.tenant)
        return Response({"scopes": a.PauseScopeOut(scopes, many=True).data})

    @extend_schema(request=a.PauseIn, responses={201: a.PauseScopeOut, 200: a.PauseScopeOut,
                                                 **ERRORS}, operation_id="pauses_add")
    def post(self, request: Request) -> Response:
        v = _valid(a.PauseIn, request.data)
        pause, created = in_scope(pause_add, tenant=request.user.tenant, create=True,
                                  actor=operator_actor(request), **v)
        scope = state.pause_scope(tenant=request.user.tenant, job_type=pause.job_type,
                                  source_id=pause.source_id, source=v["source"])
        return Response(a.PauseScopeOut(scope).data,
                        status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)


class PauseResumeApi(APIView):
    """``POST`` removes one holder's pause key (orch:operate). The answer shows the keys still
    holding the scope; it runs again when none is left."""

    required_scope = OPERATE

    @extend_schema(request=a.PauseIn, responses={200: a.PauseScopeOut, **ERRORS},
                   operation_id="pauses_resume")
    def post(self, request: Request) -> Response:
        v = _valid(a.PauseIn, request.data)
        source_id = in_scope(_resume, tenant=request.user.tenant, create=False,
                             actor=operator_actor(request), **v)
        scope = state.pause_scope(tenant=request.user.tenant,
                                  job_type=v["job_type"] or ANY_JOB_TYPE, source_id=source_id,
                                  source=v["source"])
        return Response(a.PauseScopeOut(scope).data)


def _resume(*, source_id: int, **kwargs: Any) -> int:
    pause_remove(source_id=source_id, **kwargs)
    return source_id


class TenantShareApi(APIView):
    """``GET`` the tenant's fair-dispatch weight (orch:read); ``PUT`` sets it (orch:quota,
    reason and ticket)."""

    required_scope = {"GET": READ, "PUT": QUOTA}

    @extend_schema(responses={200: a.ShareOut, **READ_ERRORS}, operation_id="tenant_share_get")
    def get(self, request: Request) -> Response:
        return Response({"weight": state.share_weight(tenant=request.user.tenant)})

    @extend_schema(request=a.ShareIn, responses={200: a.ShareOut, **ERRORS},
                   operation_id="tenant_share_set")
    def put(self, request: Request) -> Response:
        v = _valid(a.ShareIn, request.data)
        share = share_set_weight(tenant=request.user.tenant, actor=operator_actor(request), now=db_now(),
                                 **v)
        return Response({"weight": share.weight})


class BreakerCollectionApi(APIView):
    """``GET`` the tenant's source breakers: state and parameters (orch:read)."""

    required_scope = READ

    @extend_schema(responses={200: a.BreakerListOut, **READ_ERRORS}, operation_id="breakers_list")
    def get(self, request: Request) -> Response:
        breakers = state.breaker_list(tenant=request.user.tenant)
        return Response({"breakers": [_breaker_json(b, name) for b, name in breakers]})


_NAME = re.compile(s.NAME_RE)


class SourceBreakerApi(APIView):
    """``PUT`` a source's breaker parameters (orch:quota, reason and ticket); the breaker is
    created closed if the source has none."""

    required_scope = QUOTA

    @extend_schema(request=a.BreakerIn, responses={200: a.BreakerOut, **ERRORS},
                   operation_id="breakers_configure")
    def put(self, request: Request, name: str) -> Response:
        if not _NAME.match(name):
            raise NotFound(f"source {name!r} not found", source=name)
        v = _valid(a.BreakerIn, request.data)
        reason, ticket = v.pop("reason"), v.pop("ticket")
        breaker = in_scope(breaker_configure, tenant=request.user.tenant, source=name,
                           create=True, with_job_type=False, config=BreakerConfig(**v),
                           actor=operator_actor(request), reason=reason, ticket=ticket)
        return Response(_breaker_json(breaker, name))


class AdmissionStateApi(APIView):
    """``GET`` the tenant's whole admission state: quotas (live), paused scopes, breakers,
    share weight (orch:read)."""

    required_scope = READ

    @extend_schema(responses={200: a.AdmissionOut, **READ_ERRORS}, operation_id="admission_get")
    def get(self, request: Request) -> Response:
        tenant = request.user.tenant
        return Response({
            "quotas": a.QuotaOut(state.quota_states(tenant=tenant), many=True).data,
            "paused_scopes": a.PauseScopeOut(state.pause_scopes(tenant=tenant), many=True).data,
            "breakers": [_breaker_json(b, n) for b, n in state.breaker_list(tenant=tenant)],
            "share": {"weight": state.share_weight(tenant=tenant)},
        })


class AdmissionEventsApi(APIView):
    """``GET`` the tenant's admission events, newest first, cursor-paginated (orch:read)."""

    required_scope = READ

    @extend_schema(parameters=[OpenApiParameter(n, str, required=False)
                               for n in ("type", "cursor", "page_size")],
                   responses={200: a.AdmissionEventOut(many=True), **READ_ERRORS},
                   operation_id="admission_events_list")
    def get(self, request: Request) -> Response:
        v = _valid(a.EventListQuery, request.query_params.dict())
        paginator = JobCursorPagination()
        page = paginator.paginate_queryset(
            state.admission_events(tenant=request.user.tenant, type=v.get("type")), request,
            view=self)
        assert page is not None
        names = state.source_names(tenant=request.user.tenant, ids=(e.source_id for e in page))
        rows = [{"id": e.pk, "type": e.type, "job_type": e.job_type or None,
                 "source": names.get(e.source_id), "actor_type": e.actor_type,
                 "actor_label": e.actor_label, "reason": e.reason, "ticket": e.ticket,
                 "data": e.data, "occurred_at": e.occurred_at} for e in page]
        return paginator.get_paginated_response(a.AdmissionEventOut(rows, many=True).data)
