"""Domain errors of the admission control surface. Each ``code`` is stable (docs/errors.md);
the HTTP mapping lives in ``orchestrator/api/errors.py``. A raised error changed nothing."""
from __future__ import annotations

from typing import Any


class AdmissionError(Exception):
    """Base of admission domain errors: ``code`` is the machine-readable error code,
    ``details`` a JSON-able dict."""

    code = "admission_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class ReasonRequired(AdmissionError):
    """The change needs a non-blank ``reason`` (kept in the admission event): give one."""

    code = "reason_required"


class TicketRequired(AdmissionError):
    """Quota, throttle, share and breaker changes need a non-blank ``ticket``: give one."""

    code = "ticket_required"


class AdmissionInvalid(AdmissionError):
    """A value is out of range or inconsistent, e.g. a rate without a burst: fix it.

    ``code`` is the API's ``validation_error`` and ``details`` its shape
    (``{"fields": {name: [message]}}``), so a value refused here or by an API serializer reads
    the same.
    """

    code = "validation_error"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}", fields={field: [message]})


class AdmissionNotFound(AdmissionError):
    """No such quota or pause key for this tenant: nothing to remove."""

    code = "not_found"
