"""Lease-service errors. Each name says what the caller must do; HTTP mapping lives in
``orchestrator/api/errors.py``."""
from __future__ import annotations

from ledger.exceptions import LedgerError


class LeaseLost(LedgerError):
    """The lease is no longer current (expired, reaped, re-claimed, released or ended).

    The runner must stop working on the job and must not ack it; nothing was changed.
    """

    code = "lease_lost"


class QueueFull(LedgerError):
    """A quota's ``max_queued`` would be exceeded: nothing was enqueued; retry after
    ``details.retry_after_seconds`` (HTTP 429 with ``Retry-After``)."""

    code = "queue_full"


class InvalidCron(LedgerError):
    """A schedule's cron expression does not parse or never fires (``details.reason``): fix
    the expression (HTTP 400)."""

    code = "invalid_cron"


class InvalidTimezone(LedgerError):
    """Not an IANA time zone name (e.g. ``Europe/Berlin``): fix the name (HTTP 400)."""

    code = "invalid_timezone"


class ScheduleNameTaken(LedgerError):
    """The tenant already has a schedule with this name: pick another (HTTP 409)."""

    code = "name_taken"


class QueueLimitExceeded(LedgerError):
    """More new jobs in one request than a quota's ``max_queued`` could ever hold: split the
    request or raise the limit (HTTP 422, no ``Retry-After``: waiting will not help)."""

    code = "exceeds_max_queued"
