"""One place that maps errors to HTTP: ``{"error": {"code", "message", "details"}}``.

Codes are stable and documented in docs/errors.md. Domain exceptions never reach a 500.
"""
from __future__ import annotations

from typing import Any

from django.http import HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from ledger.exceptions import (
    DependencyCycle,
    IdempotencyConflict,
    NotFound,
    UnknownParent,
    UpstreamFailed,
)
from ledger.states import IllegalTransition
from quotas.exceptions import AdmissionInvalid, AdmissionNotFound, ReasonRequired, TicketRequired

from ..exceptions import (
    InvalidCron,
    InvalidTimezone,
    LeaseLost,
    QueueFull,
    QueueLimitExceeded,
    ScheduleNameTaken,
)


class ApiError(exceptions.APIException):
    """An API error with an explicit status, machine-readable code and details."""

    def __init__(self, status_code: int, code: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message, code)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details or {}


def body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    """The error document."""
    return {"error": {"code": code, "message": message, "details": details or {}}}


_DOMAIN = {
    LeaseLost: status.HTTP_409_CONFLICT,
    QueueFull: status.HTTP_429_TOO_MANY_REQUESTS,
    QueueLimitExceeded: status.HTTP_422_UNPROCESSABLE_ENTITY,
    IdempotencyConflict: status.HTTP_409_CONFLICT,
    NotFound: status.HTTP_404_NOT_FOUND,
    UnknownParent: status.HTTP_422_UNPROCESSABLE_ENTITY,
    DependencyCycle: status.HTTP_422_UNPROCESSABLE_ENTITY,
    UpstreamFailed: status.HTTP_409_CONFLICT,
    InvalidCron: status.HTTP_400_BAD_REQUEST,
    InvalidTimezone: status.HTTP_400_BAD_REQUEST,
    ScheduleNameTaken: status.HTTP_409_CONFLICT,
    ReasonRequired: status.HTTP_400_BAD_REQUEST,
    TicketRequired: status.HTTP_400_BAD_REQUEST,
    AdmissionInvalid: status.HTTP_400_BAD_REQUEST,
    AdmissionNotFound: status.HTTP_404_NOT_FOUND,
}

_DRF_CODES = {
    exceptions.ParseError: "malformed_json",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.Throttled: "rate_limited",
    exceptions.NotFound: "not_found",
}


_SPECIFIC_CODES = ("unknown_field", "invalid_characters", "too_deep", "reason_required",
                   "ticket_required")


def _codes(detail: Any) -> set[str]:
    """Every ErrorDetail code anywhere in a (nested) DRF validation detail."""
    found: set[str] = set()
    stack = [detail]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif getattr(item, "code", None):
            found.add(item.code)
    return found


def _validation_details(detail: Any) -> tuple[str, dict[str, Any]]:
    """Pick the top code (a specific one such as ``unknown_field`` wins over
    ``validation_error``) and render details as ``{"fields": ...}`` or ``{"errors": [...]}``."""
    codes = _codes(detail)
    code = next((c for c in _SPECIFIC_CODES if c in codes), "validation_error")
    if isinstance(detail, dict):
        return code, {"fields": detail}
    return code, {"errors": detail if isinstance(detail, list) else [detail]}


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """DRF ``EXCEPTION_HANDLER``: domain errors and DRF errors -> the error document."""
    for kind, http_status in _DOMAIN.items():
        if isinstance(exc, kind):
            response = Response(body(exc.code, exc.message, exc.details), status=http_status)
            if http_status == 429 and "retry_after_seconds" in exc.details:
                response["Retry-After"] = str(exc.details["retry_after_seconds"])
            return response
    if isinstance(exc, IllegalTransition):
        return Response(body("illegal_transition", str(exc), {"from": exc.old, "to": exc.new}),
                        status=status.HTTP_409_CONFLICT)
    if isinstance(exc, ApiError):
        response = Response(body(exc.code, exc.message, exc.details), status=exc.status_code)
        if exc.status_code == 429 and "retry_after_seconds" in exc.details:
            response["Retry-After"] = str(exc.details["retry_after_seconds"])
        return response
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        code, details = _validation_details(exc.detail)
        response.data = body(code, "the request is not valid", details)
        return response
    code = _DRF_CODES.get(type(exc))
    if code is None:
        detail = getattr(exc, "detail", None)
        code = getattr(detail, "code", None) or "error"
    message = str(getattr(exc, "detail", exc))
    response.data = body(code, message)
    return response


def json_404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """``handler404`` for URLs no route matches."""
    return JsonResponse(body("not_found", "no such endpoint"), status=404)


def json_500(request: HttpRequest) -> JsonResponse:
    """``handler500``: never leak a traceback; the log has it."""
    return JsonResponse(body("internal_error", "internal error; see server logs"), status=500)


def json_400(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    """``handler400`` (e.g. a request body over ORCH_REQUEST_MAX_BYTES caught by Django)."""
    return JsonResponse(body("bad_request", str(exception) if exception else "bad request"),
                        status=400)
