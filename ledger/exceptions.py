"""Domain errors of the ledger. Each name says what the caller must do; HTTP mapping lives in
``orchestrator/api/errors.py``."""
from __future__ import annotations

from typing import Any

from .states import IllegalTransition

__all__ = ["IllegalTransition", "IdempotencyConflict", "NotFound", "LedgerError"]


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
