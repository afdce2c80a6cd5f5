"""Job states and the one table of allowed transitions.

Every write that changes ``Job.status`` (the ORM compare-and-set in ``ledger.services`` and the
set-based SQL of ``orchestrator.leasing``) names its transition here; ``require`` raises
``IllegalTransition`` for anything not in ``TRANSITIONS``. See docs/state-machine.md.
"""
from __future__ import annotations

from django.db import models


class JobStatus(models.TextChoices):
    """The life of a job. ``succeeded``, ``dead_lettered`` and ``canceled`` are terminal."""

    BLOCKED = "blocked", "Blocked (waits on parents)"
    SCHEDULED = "scheduled", "Scheduled (waits for not_before / backoff)"
    READY = "ready", "Ready"
    LEASED = "leased", "Leased"
    SUCCEEDED = "succeeded", "Succeeded"
    DEAD_LETTERED = "dead_lettered", "Dead-lettered"
    CANCELED = "canceled", "Canceled"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.DEAD_LETTERED, JobStatus.CANCELED})

# (from, to) -> the JobEvent type written with it. Nothing else is a legal status change.
TRANSITIONS: dict[tuple[str, str], str] = {
    (JobStatus.BLOCKED, JobStatus.READY): "job.unblocked",
    (JobStatus.BLOCKED, JobStatus.SCHEDULED): "job.unblocked",
    (JobStatus.BLOCKED, JobStatus.CANCELED): "job.canceled",
    # A replay took a parent out of ``succeeded`` before the child started: it waits again
    # (``ledger.replay``; ``data.replay_of``, ``data.parent_job_ids``). See docs/dependencies.md.
    (JobStatus.READY, JobStatus.BLOCKED): "job.reblocked",
    (JobStatus.SCHEDULED, JobStatus.BLOCKED): "job.reblocked",
    (JobStatus.SCHEDULED, JobStatus.READY): "job.ready",
    (JobStatus.SCHEDULED, JobStatus.CANCELED): "job.canceled",
    (JobStatus.READY, JobStatus.LEASED): "job.leased",
    (JobStatus.READY, JobStatus.CANCELED): "job.canceled",
    (JobStatus.LEASED, JobStatus.SUCCEEDED): "job.succeeded",
    (JobStatus.LEASED, JobStatus.SCHEDULED): "job.retry_scheduled",
    (JobStatus.LEASED, JobStatus.READY): "job.released",
    (JobStatus.LEASED, JobStatus.DEAD_LETTERED): "job.dead_lettered",
    (JobStatus.LEASED, JobStatus.CANCELED): "job.canceled",
    # Replay (``ledger.services.job_replay``), the only way out of a terminal state: the replayed
    # job, and the descendants it revives (canceled upstream_failed) or re-runs (succeeded, when
    # asked). ``data.replay_of`` names the replayed job. See docs/dependencies.md.
    (JobStatus.SUCCEEDED, JobStatus.READY): "job.replayed",
    (JobStatus.SUCCEEDED, JobStatus.BLOCKED): "job.replayed",
    (JobStatus.DEAD_LETTERED, JobStatus.READY): "job.replayed",
    (JobStatus.DEAD_LETTERED, JobStatus.BLOCKED): "job.replayed",
    (JobStatus.CANCELED, JobStatus.READY): "job.replayed",
    (JobStatus.CANCELED, JobStatus.BLOCKED): "job.replayed",
}


class IllegalTransition(Exception):
    """A status change outside ``TRANSITIONS``, or a compare-and-set that found another status.

    The caller must re-read the job: someone else changed it first.
    """

    def __init__(self, old: str, new: str, detail: str = "") -> None:
        super().__init__(f"illegal transition {old} -> {new}{': ' + detail if detail else ''}")
        self.old = old
        self.new = new


def require(old: str, new: str) -> str:
    """Return the event type of ``old -> new``; raise ``IllegalTransition`` if not allowed."""
    try:
        return TRANSITIONS[(old, new)]
    except KeyError:
        raise IllegalTransition(old, new) from None


def is_terminal(status: str) -> bool:
    """True for ``succeeded``, ``dead_lettered`` and ``canceled``."""
    return status in TERMINAL
