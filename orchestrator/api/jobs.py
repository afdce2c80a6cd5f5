"""Job and run views: enqueue, list, detail, cancel, events; create and show runs."""
from __future__ import annotations

import re
from base64 import b64encode
from urllib.parse import urlencode

from django.conf import settings
from django.db.models import Count
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers as drf
from rest_framework import status
from rest_framework.exceptions import NotFound as NotFoundError
from rest_framework.pagination import Cursor, CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ledger.exceptions import NotFound
from ledger.models import Run
from ledger.selectors import job_events_list, job_get, job_list
from ledger.services import job_cancel, job_enqueue, run_create
from ledger.states import JobStatus

from ..admission import admit_enqueue
from . import serializers as s
from .auth import operator_actor
from .errors import ApiError
from .leases import ENQUEUE_ERRORS, ERRORS

READ, OPERATE = "orch:read", "orch:operate"



_CURSOR_INT_RE = re.compile(r"[1-9][0-9]{0,18}", re.ASCII)  # a positive integer, canonical


class JobCursorPagination(CursorPagination):
    """Cursor pagination, newest first: stable under concurrent inserts.

    Also the paginator of every other cursor-paginated list (schedules, admission events), all
    ordered by ``id``. A ``cursor`` this API did not issue is 400 ``invalid_cursor``: DRF's
    decoder ignores characters outside base64 and unknown keys (``?cursor=!!`` was the first
    page) and passes any position to the query, so a cursor is accepted only if it decodes to
    an offset, direction and id position and re-encodes to exactly the same text.
    """

    ordering = "-id"
    page_size = 50
    page_size_query_param = "page_size"
    max_page_size = 500

    def decode_cursor(self, request: Request) -> Cursor | None:
        encoded = request.query_params.get(self.cursor_query_param)
        if encoded is None:
            return None
        try:
            cursor = super().decode_cursor(request)
        except NotFoundError:
            cursor = None
        if cursor is None or not self._issued(encoded, cursor):
            raise ApiError(400, "invalid_cursor", "the cursor is not one this API issued")
        return cursor

    def _issued(self, encoded: str, cursor: Cursor) -> bool:
        """True if ``cursor`` is well-formed and ``encode_cursor`` would spell it ``encoded``."""
        if cursor.offset > self.offset_cutoff:
            return False
        if cursor.position is not None and not (
                _CURSOR_INT_RE.fullmatch(cursor.position) and int(cursor.position) <= s.MAX_INT):
            return False
        tokens: dict[str, str] = {}
        if cursor.offset != 0:
            tokens["o"] = str(cursor.offset)
        if cursor.reverse:
            tokens["r"] = "1"
        if cursor.position is not None:
            tokens["p"] = cursor.position
        if not tokens:  # DRF never issues a cursor for the first page
            return False
        return b64encode(urlencode(tokens).encode("ascii")).decode("ascii") == encoded


class JobListQuery(s.StrictSerializer):
    status = drf.ChoiceField(choices=JobStatus.choices, required=False)
    job_type = drf.CharField(required=False, max_length=100)
    source = drf.CharField(required=False, max_length=100)
    run = drf.IntegerField(required=False, min_value=1, max_value=s.MAX_INT)
    correlation_id = drf.CharField(required=False, max_length=128)
    created_after = drf.DateTimeField(required=False)
    cursor = drf.CharField(required=False)
    page_size = drf.IntegerField(required=False, min_value=1, max_value=500)


class JobCollectionApi(APIView):
    """``POST`` enqueues a job (orch:operate); ``GET`` lists the tenant's jobs (orch:read)."""

    required_scope = {"POST": OPERATE, "GET": READ}

    @extend_schema(request=s.EnqueueIn, responses={201: s.JobOut, 200: s.JobOut, **ENQUEUE_ERRORS},
                   operation_id="jobs_enqueue")
    def post(self, request: Request) -> Response:
        data = s.EnqueueIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = dict(data.validated_data)
        v["max_attempts"] = v["max_attempts"] or settings.ORCH_MAX_ATTEMPTS_DEFAULT
        result = job_enqueue(tenant=request.user.tenant, actor=operator_actor(request), admit=admit_enqueue,
                             **v)
        job = job_get(tenant=request.user.tenant, job_id=result.job.pk)
        response = Response(s.JobOut(job).data,
                            status=status.HTTP_200_OK if result.replayed else status.HTTP_201_CREATED)
        if result.replayed:
            response["Idempotent-Replayed"] = "true"
        return response

    @extend_schema(
        parameters=[OpenApiParameter(name, str, required=False) for name in
                    ("status", "job_type", "source", "run", "correlation_id", "created_after",
                     "cursor", "page_size")],
        responses={200: s.JobOut(many=True), 400: OpenApiResponse(s.ErrorOut)},
        operation_id="jobs_list")
    def get(self, request: Request) -> Response:
        query = JobListQuery(data=request.query_params.dict())
        query.is_valid(raise_exception=True)
        filters = {k: v for k, v in query.validated_data.items() if k not in ("cursor", "page_size")}
        paginator = JobCursorPagination()
        page = paginator.paginate_queryset(
            job_list(tenant=request.user.tenant, **filters).prefetch_related("artifacts",
                                                                             "parent_edges"),
            request, view=self)
        return paginator.get_paginated_response(s.JobOut(page, many=True).data)


class JobDetailApi(APIView):
    """One job with its current lease, result, artifacts and last error."""

    required_scope = READ

    @extend_schema(responses={200: s.JobOut, **ERRORS}, operation_id="jobs_get")
    def get(self, request: Request, job_id: int) -> Response:
        return Response(s.JobOut(job_get(tenant=request.user.tenant, job_id=job_id)).data)


class JobCancelApi(APIView):
    """Cancel a job (a leased job is asked to stop through its heartbeat)."""

    required_scope = OPERATE

    @extend_schema(request=s.CancelIn, responses={200: s.JobOut, **ERRORS},
                   operation_id="jobs_cancel")
    def post(self, request: Request, job_id: int) -> Response:
        data = s.CancelIn(data=request.data)
        data.is_valid(raise_exception=True)
        job_cancel(tenant=request.user.tenant, job_id=job_id, actor=operator_actor(request),
                   reason=data.validated_data["reason"])
        return Response(s.JobOut(job_get(tenant=request.user.tenant, job_id=job_id)).data)


class JobEventOut(drf.Serializer):
    id = drf.IntegerField()
    type = drf.CharField()
    from_status = drf.CharField()
    to_status = drf.CharField()
    lease_id = drf.UUIDField(allow_null=True)
    actor_type = drf.CharField()
    actor_label = drf.CharField()
    reason = drf.CharField()
    data = drf.DictField()
    occurred_at = drf.DateTimeField()


class JobEventsApi(APIView):
    """A job's event history, oldest first."""

    required_scope = READ

    @extend_schema(responses={200: JobEventOut(many=True), **ERRORS}, operation_id="jobs_events")
    def get(self, request: Request, job_id: int) -> Response:
        job_get(tenant=request.user.tenant, job_id=job_id)  # 404 for other tenants
        events = job_events_list(tenant=request.user.tenant, job_id=job_id)[:1000]
        return Response(JobEventOut(events, many=True).data)


class RunDetailOut(s.RunOut):
    counts = drf.DictField(child=drf.IntegerField())


class RunCollectionApi(APIView):
    """Create a run: a named group that jobs join with ``run_id`` at enqueue."""

    required_scope = OPERATE

    @extend_schema(request=s.RunIn, responses={201: s.RunOut, **ERRORS}, operation_id="runs_create")
    def post(self, request: Request) -> Response:
        data = s.RunIn(data=request.data)
        data.is_valid(raise_exception=True)
        run = run_create(tenant=request.user.tenant, **data.validated_data)
        return Response(s.RunOut(run).data, status=status.HTTP_201_CREATED)


class RunDetailApi(APIView):
    """A run with its job counts by status."""

    required_scope = READ

    @extend_schema(responses={200: RunDetailOut, **ERRORS}, operation_id="runs_get")
    def get(self, request: Request, run_id: int) -> Response:
        run = Run.objects.filter(pk=run_id, tenant=request.user.tenant).first()
        if run is None:
            raise NotFound(f"run {run_id} not found", run_id=run_id)
        counts = dict(run.jobs.values_list("status").annotate(n=Count("id")).values_list("status", "n"))
        data = s.RunOut(run).data
        data["counts"] = {state: counts.get(state, 0) for state in JobStatus.values}
        return Response(data)
