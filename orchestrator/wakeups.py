"""Wake-ups for long-polling claims inside one server process.

A claim that found nothing waits on a condition variable instead of querying again at once.
Enqueue, release, retry promotion and the reaper signal ``ledger.signals.jobs_ready`` after
commit; this module turns that into a ``notify_all``. A wake-up from another process (another
replica) is not seen here, so waiters also re-check on a capped exponential schedule
(ORCH_CLAIM_POLL_MIN_MS doubling up to ORCH_CLAIM_POLL_MAX_MS): a lost or foreign wake-up delays a
claim by at most the cap, and never loses a job, because PostgreSQL stays the truth.
Cross-process wake-ups (LISTEN/NOTIFY, Redis, NATS) plug in here later.
"""
from __future__ import annotations

import threading
import time

_condition = threading.Condition()
_generation = 0
_waiters = 0
_closing = False


def notify(**_: object) -> None:
    """Wake every waiting claim in this process (a ``jobs_ready`` receiver)."""
    global _generation
    with _condition:
        _generation += 1
        _condition.notify_all()


def close() -> None:
    """Process shutdown: every waiting claim returns now (empty) and none waits again, so a
    server stops in milliseconds instead of after the longest long poll."""
    global _closing
    with _condition:
        _closing = True
        _condition.notify_all()


def closing() -> bool:
    """True once ``close()`` was called."""
    return _closing


def generation() -> int:
    """The current wake-up counter; pass it to ``wait`` to not miss a wake-up in between."""
    return _generation


def wait(seen: int, timeout: float) -> bool:
    """Block up to ``timeout`` seconds unless a wake-up newer than ``seen`` happened.

    Returns True if woken by a wake-up, False on timeout.
    """
    global _waiters
    deadline = time.monotonic() + timeout
    with _condition:
        _waiters += 1
        try:
            while _generation == seen and not _closing:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                _condition.wait(remaining)
            return True
        finally:
            _waiters -= 1


def waiting() -> int:
    """How many claims in this process are waiting right now (a gauge for metrics and tests)."""
    return _waiters
