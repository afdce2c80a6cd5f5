"""StellaOps Orchestrator worker SDK (bridge contract v1).

Quick start::

    from stellaops_worker import Worker, JobContext

    def handle(ctx: JobContext) -> dict:
        ctx.progress(0, 1)
        return {"ok": True}

    Worker("http://localhost:8000", token, ["demo.echo"], handle).run()

See ``Worker`` (claim loop, heartbeats, shutdown), ``JobContext`` (what a handler gets),
``Client`` (the HTTP calls) and ``stellaops_worker.errors``.
"""

from ._version import __version__
from .backoff import Backoff, full_jitter_delay
from .client import (
    Client,
    Enqueued,
    TokenSource,
    error_from_response,
    is_retryable,
    token_from_file,
)
from .context import CANCEL_REQUESTED, LEASE_LOST, RELEASED, JobContext
from .errors import (
    ApiError,
    AuthError,
    Conflict,
    JobCancelled,
    LeaseLost,
    NonRetryableError,
    NotFound,
    ProtocolError,
    RateLimited,
    RetryLater,
    ServerError,
    StellaOpsError,
    TransportError,
    ValidationError,
)
from .types import (
    Artifact,
    FailResult,
    HeartbeatResult,
    JSONObject,
    Lease,
    LogLine,
    Progress,
    RunnerConfig,
)
from .worker import EVENT_KINDS, EventHook, Handler, Worker, WorkerEvent

__all__ = [
    "__version__",
    "Worker",
    "WorkerEvent",
    "EVENT_KINDS",
    "EventHook",
    "Handler",
    "JobContext",
    "CANCEL_REQUESTED",
    "LEASE_LOST",
    "RELEASED",
    "Client",
    "Enqueued",
    "TokenSource",
    "token_from_file",
    "error_from_response",
    "is_retryable",
    "Backoff",
    "full_jitter_delay",
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
    "Artifact",
    "FailResult",
    "HeartbeatResult",
    "JSONObject",
    "Lease",
    "LogLine",
    "Progress",
    "RunnerConfig",
]
