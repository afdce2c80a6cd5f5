"""Errors raised by the SDK, and the exceptions a handler raises to steer ack/fail.

Two families live here:

* ``StellaOpsError`` and below: something went wrong talking to the orchestrator.
  ``ApiError`` carries the server's ``{"error": {"code", "message", "details"}}`` body.
* ``NonRetryableError`` and ``RetryLater``: raised *by a job handler* to choose how the
  SDK fails the job. They are not errors of the SDK itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "StellaOpsError",
    "TransportError",
    "ProtocolError",
    "ApiError",
    "ValidationError",
    "AuthError",
    "NotFound",
    "Conflict",
    "LeaseLost",
    "RateLimited",
    "ServerError",
    "JobCancelled",
    "NonRetryableError",
    "RetryLater",
]


class StellaOpsError(Exception):
    """Base class of every error the SDK raises about the orchestrator."""


class TransportError(StellaOpsError):
    """No HTTP answer arrived (connection refused, reset, DNS, timeout).

    The request may or may not have reached the server: only repeat it if the call is
    idempotent (claims with the same ``claim_id``, ack, fail, release, heartbeat).
    """


class ProtocolError(StellaOpsError):
    """The server answered 2xx with a body that does not follow the bridge contract."""


class ApiError(StellaOpsError):
    """The server answered with an error status.

    Attributes:
        status: HTTP status code, e.g. 400.
        code: machine-readable ``error.code`` from the body (``"http_<status>"`` when the
            body is not the contract's error shape).
        message: human-readable ``error.message``.
        details: ``error.details`` object (empty dict when absent).
        retry_after_seconds: parsed ``Retry-After`` header in seconds, or ``None``.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        *,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: dict[str, Any] = dict(details or {})
        self.retry_after_seconds = retry_after_seconds


class ValidationError(ApiError):
    """400 or 422: the request body was refused. Repeating it unchanged will not help."""


class AuthError(ApiError):
    """401 (token missing, expired or invalid) or 403 (scope or tenant not allowed)."""


class NotFound(ApiError):
    """404: the job, lease or route does not exist (for this tenant)."""


class Conflict(ApiError):
    """409 other than ``lease_lost`` (e.g. an idempotency key reused with another body)."""


class LeaseLost(Conflict):
    """409 ``lease_lost``: the lease expired, was re-claimed, released or canceled.

    The worker must stop working on the job and must never ack it. ``JobContext.check()``
    also raises it (with ``status`` 409) once the SDK has learnt the lease is gone.
    """

    def __init__(
        self,
        status: int = 409,
        code: str = "lease_lost",
        message: str = "lease lost",
        details: Mapping[str, Any] | None = None,
        *,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(status, code, message, details, retry_after_seconds=retry_after_seconds)


class RateLimited(ApiError):
    """429: slow down; ``retry_after_seconds`` holds the server's ``Retry-After``."""


class ServerError(ApiError):
    """5xx: the server failed; retrying an idempotent call later is safe."""


class JobCancelled(StellaOpsError):
    """Raised by ``JobContext.check()`` after an operator requested cancellation.

    Let it propagate out of the handler: the SDK then fails the lease with
    ``retryable=False`` and code ``canceled``, which the server records as ``canceled``.
    """


class NonRetryableError(Exception):
    """Raise from a handler to fail the job without retry (it is dead-lettered).

    Args:
        code: short machine-readable reason, e.g. ``"malformed_document"``.
        message: human-readable explanation stored in the job's ``last_error``.
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class RetryLater(Exception):
    """Raise from a handler to fail the attempt as retryable after a given delay.

    Args:
        message: human-readable reason, stored in the job's ``last_error``.
        retry_after_seconds: minimum delay before the next attempt, in seconds (>= 0);
            ``None`` lets the server apply its own backoff curve.
        code: error code sent to the server, ``"retry_later"`` by default.
    """

    def __init__(
        self, message: str, retry_after_seconds: int | None = None, *, code: str = "retry_later"
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_seconds = retry_after_seconds
        self.code = code
