"""Dependency-chain views: submit a whole run (jobs + edges) at once; replay a finished job.

Policy and limits: docs/dependencies.md. Views validate, call one service, and render.
"""
from __future__ import annotations

from django.conf import settings
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from ledger.replay import job_replay
from ledger.selectors import job_get
from ledger.submission import JobSpec, run_submit

from ..admission import admit_enqueue
from . import dag_serializers as d
from . import serializers as s
from .auth import operator_actor
from .leases import ENQUEUE_ERRORS, ERRORS

OPERATE = "orch:operate"



class RunSubmitApi(APIView):
    """Create a run with its jobs and their dependencies in one transaction, or nothing."""

    required_scope = OPERATE

    @extend_schema(request=d.RunSubmitIn,
                   responses={201: d.RunSubmitOut, 200: d.RunSubmitOut, **ENQUEUE_ERRORS},
                   operation_id="runs_submit")
    def post(self, request: Request) -> Response:
        data = d.RunSubmitIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        specs = [
            JobSpec(key=j["key"], job_type=j["job_type"], payload=j["payload"],
                    priority=j["priority"], source=j["source"], not_before=j["not_before"],
                    max_attempts=j["max_attempts"] or settings.ORCH_MAX_ATTEMPTS_DEFAULT,
                    depends_on=tuple(j["depends_on"]))
            for j in v["jobs"]
        ]
        result = run_submit(
            tenant=request.user.tenant, project=v["project"], name=v["name"], jobs=specs,
            actor=operator_actor(request), source=v["source"], correlation_id=v["correlation_id"],
            idempotency_key=v["idempotency_key"], admit=admit_enqueue)
        body = {"run": s.RunOut(result.run).data,
                "jobs": [{"key": key, "job_id": job.pk, "status": job.status}
                         for key, job in result.jobs]}
        response = Response(body, status=status.HTTP_200_OK if result.replayed
                            else status.HTTP_201_CREATED)
        if result.replayed:
            response["Idempotent-Replayed"] = "true"
        return response


class JobReplayApi(APIView):
    """Replay a finished job; revive its descendants canceled upstream (re-run succeeded ones
    only when asked) and put the children that have not started back to blocked."""

    required_scope = OPERATE

    @extend_schema(request=d.ReplayIn, responses={200: d.ReplayOut, **ERRORS},
                   operation_id="jobs_replay")
    def post(self, request: Request, job_id: int) -> Response:
        data = d.ReplayIn(data=request.data)
        data.is_valid(raise_exception=True)
        v = data.validated_data
        result = job_replay(tenant=request.user.tenant, job_id=job_id, actor=operator_actor(request),
                            reason=v["reason"],
                            rerun_succeeded_descendants=v["rerun_succeeded_descendants"])
        job = job_get(tenant=request.user.tenant, job_id=job_id)
        return Response({"job": s.JobOut(job).data, "revived_job_ids": result.revived_job_ids,
                         "rerun_job_ids": result.rerun_job_ids,
                         "reblocked_job_ids": result.reblocked_job_ids})
