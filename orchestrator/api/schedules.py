"""Schedule views: create, list, show, change, delete, and preview fire times.

Views validate, call one service (``orchestrator.schedules``) and render; the tenant is the
token's. Errors map to HTTP in ``api/errors.py``.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from django.conf import settings
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ledger.clock import db_now

from ..schedules import (
    FireTime,
    schedule_create,
    schedule_delete,
    schedule_get,
    schedule_list,
    schedule_preview,
    schedule_update,
)
from . import schedule_serializers as s
from .jobs import OPERATE, READ, JobCursorPagination
from .leases import ERRORS
from .serializers import ErrorOut


class ScheduleCursorPagination(JobCursorPagination):
    """Oldest schedule first, cursor-paginated."""

    ordering = "id"


def _preview_json(*, cron: str, timezone: str, after: datetime,
                  times: list[FireTime]) -> dict[str, Any]:
    return {"cron": cron, "timezone": timezone, "after": after,
            "fire_times": [{"at": t.at, "local": t.local.isoformat()} for t in times]}


class ScheduleCollectionApi(APIView):
    """``POST`` creates a schedule (orch:operate); ``GET`` lists the tenant's (orch:read)."""

    required_scope = {"POST": OPERATE, "GET": READ}

    @extend_schema(request=s.ScheduleIn, responses={201: s.ScheduleOut, **ERRORS},
                   operation_id="schedules_create")
    def post(self, request: Request) -> Response:
        data = s.ScheduleIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = dict(data.validated_data)
        v["max_attempts"] = v["max_attempts"] or settings.ORCH_MAX_ATTEMPTS_DEFAULT
        schedule = schedule_create(tenant=request.user.tenant, **v)
        return Response(s.ScheduleOut(schedule).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        parameters=[OpenApiParameter("enabled", str, enum=["true", "false"], required=False),
                    OpenApiParameter("cursor", str, required=False),
                    OpenApiParameter("page_size", int, required=False)],
        responses={200: s.ScheduleOut(many=True), 400: OpenApiResponse(ErrorOut)},
        operation_id="schedules_list")
    def get(self, request: Request) -> Response:
        query = s.ScheduleListQuery(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        enabled = query.validated_data.get("enabled")
        paginator = ScheduleCursorPagination()
        page = paginator.paginate_queryset(
            schedule_list(tenant=request.user.tenant,
                          enabled=None if enabled is None else enabled == "true"),
            request, view=self)
        return paginator.get_paginated_response(s.ScheduleOut(page, many=True).data)


class ScheduleDetailApi(APIView):
    """One schedule: show (orch:read), change or delete (orch:operate)."""

    required_scope = {"GET": READ, "PATCH": OPERATE, "DELETE": OPERATE}

    @extend_schema(responses={200: s.ScheduleOut, **ERRORS}, operation_id="schedules_get")
    def get(self, request: Request, schedule_id: int) -> Response:
        return Response(s.ScheduleOut(
            schedule_get(tenant=request.user.tenant, schedule_id=schedule_id)).data)

    @extend_schema(request=s.ScheduleIn(partial=True), responses={200: s.ScheduleOut, **ERRORS},
                   operation_id="schedules_update")
    def patch(self, request: Request, schedule_id: int) -> Response:
        data = s.ScheduleIn(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        changes = dict(data.validated_data)
        if "max_attempts" in changes and changes["max_attempts"] is None:
            changes["max_attempts"] = settings.ORCH_MAX_ATTEMPTS_DEFAULT
        schedule = schedule_update(tenant=request.user.tenant, schedule_id=schedule_id,
                                   changes=changes)
        return Response(s.ScheduleOut(schedule).data)

    @extend_schema(responses={204: None, **ERRORS}, operation_id="schedules_delete")
    def delete(self, request: Request, schedule_id: int) -> Response:
        schedule_delete(tenant=request.user.tenant, schedule_id=schedule_id)
        return Response(status=status.HTTP_204_NO_CONTENT)


class SchedulePreviewApi(APIView):
    """The next ``count`` fire times of a saved schedule (UTC and local wall clock)."""

    required_scope = READ

    @extend_schema(
        parameters=[OpenApiParameter("count", int, required=False,
                                     description="1..100, default 10"),
                    OpenApiParameter("after", str, required=False,
                                     description="RFC 3339 date-time with a UTC offset "
                                                 "(2026-03-28T00:00:00Z); default now")],
        responses={200: s.PreviewOut, **ERRORS}, operation_id="schedules_preview")
    def get(self, request: Request, schedule_id: int) -> Response:
        query = s.PreviewQuery(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        schedule = schedule_get(tenant=request.user.tenant, schedule_id=schedule_id)
        after = query.validated_data["after"] or db_now()
        times = schedule_preview(cron=schedule.cron, timezone=schedule.timezone, after=after,
                                 count=query.validated_data["count"])
        return Response(s.PreviewOut(_preview_json(
            cron=schedule.cron, timezone=schedule.timezone, after=after, times=times)).data)


class SchedulePreviewUnsavedApi(APIView):
    """The next ``count`` fire times of an expression and zone, before saving a schedule."""

    required_scope = READ

    @extend_schema(request=s.PreviewIn, responses={200: s.PreviewOut, **ERRORS},
                   operation_id="schedules_preview_unsaved")
    def post(self, request: Request) -> Response:
        data = s.PreviewIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        after = v["after"] or db_now()
        times = schedule_preview(cron=v["cron"], timezone=v["timezone"], after=after,
                                 count=v["count"])
        return Response(s.PreviewOut(_preview_json(
            cron=" ".join(v["cron"].split()), timezone=v["timezone"], after=after,
            times=times)).data)
