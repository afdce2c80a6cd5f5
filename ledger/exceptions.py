"""Domain errors of the ledger. Each name says what the caller must do; HTTP mapping lives in
``orchestrator/api/errors.py``."""
from __future__ import annotations

from typing import Any

from .states import IllegalTransition

__all__ = ["IllegalTransition", "IdempotencyConflict", "NotFound", "LedgerError", "UnknownParent",
           "DependencyCycle", "UpstreamFailed"]


class LedgerError(Exception):
    """Base of ledger domain errors: ``code`` is the machine-readable error code."""

    code = "ledger_error"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class IdempotencyConflict(LedgerError):
    """The idempotency key is already used by a job with a different body: pick a new key."""

    code = "idempotency_conflict"


class NotFound(LedgerError):
    """No such object for this tenant (another tenant's object is indistinguishable from none)."""

    code = "not_found"


class UnknownParent(LedgerError):
    """``depends_on`` names jobs this tenant does not have (``details.job_ids``) or keys the
    submission does not define (``details.keys``): fix the references; nothing was written."""

    code = "unknown_parent"


class DependencyCycle(LedgerError):
    """The submitted dependencies contain a cycle (``details.cycle``, keys in edge order,
    first == last): no job of the run could ever start; nothing was written."""

    code = "dependency_cycle"


class UpstreamFailed(LedgerError):
    """A parent already ended ``dead_lettered`` or ``canceled`` (``details.parents``:
    ``[{job_id, status}]``), so the new job could never start: replay the parent first
    (``POST /jobs/{id}/replay``) or drop the dependency; nothing was written."""

    code = "upstream_failed"
