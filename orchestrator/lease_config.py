"""Lease defaults, defined once on the server and handed to runners in every lease and at
``GET /api/v1/runner-config``. SDKs never hard-code them."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings

from .retry import BackoffPolicy


@dataclass(frozen=True)
class LeaseConfig:
    """Lease length bounds, heartbeat interval, long-poll and batch limits, backoff curve."""

    lease: timedelta
    min_lease: timedelta
    max_lease: timedelta
    heartbeat_interval: timedelta
    max_wait: timedelta
    max_jobs: int
    poll_min: timedelta
    poll_max: timedelta
    backoff: BackoffPolicy

    @classmethod
    def from_settings(cls) -> LeaseConfig:
        return cls(
            lease=timedelta(seconds=settings.ORCH_LEASE_SECONDS),
            min_lease=timedelta(seconds=settings.ORCH_LEASE_MIN_SECONDS),
            max_lease=timedelta(seconds=settings.ORCH_LEASE_MAX_SECONDS),
            heartbeat_interval=timedelta(seconds=settings.ORCH_HEARTBEAT_INTERVAL_SECONDS),
            max_wait=timedelta(seconds=settings.ORCH_CLAIM_MAX_WAIT_SECONDS),
            max_jobs=settings.ORCH_CLAIM_MAX_JOBS,
            poll_min=timedelta(milliseconds=settings.ORCH_CLAIM_POLL_MIN_MS),
            poll_max=timedelta(milliseconds=settings.ORCH_CLAIM_POLL_MAX_MS),
            backoff=BackoffPolicy.from_settings(),
        )

    def clamp_lease(self, requested: timedelta | None) -> timedelta:
        """The lease length to grant: ``requested`` (or the default) within [min, max].

        Raises:
            ValueError: ``requested`` is outside [min_lease, max_lease].
        """
        if requested is None:
            return self.lease
        if not self.min_lease <= requested <= self.max_lease:
            raise ValueError(
                f"lease length must be between {int(self.min_lease.total_seconds())} and "
                f"{int(self.max_lease.total_seconds())} seconds"
            )
        return requested

    def heartbeat_for(self, lease: timedelta) -> int:
        """Heartbeat interval in whole seconds for a lease of length ``lease``: the configured
        interval, but never more than a third of the lease, so two heartbeats can be lost."""
        third = max(1, int(lease.total_seconds() // 3))
        return max(1, min(int(self.heartbeat_interval.total_seconds()), third))

    def as_json(self) -> dict[str, Any]:
        """The ``GET /api/v1/runner-config`` document (integer seconds)."""
        return {
            "lease_seconds": int(self.lease.total_seconds()),
            "min_lease_seconds": int(self.min_lease.total_seconds()),
            "max_lease_seconds": int(self.max_lease.total_seconds()),
            "heartbeat_interval_seconds": self.heartbeat_for(self.lease),
            "max_wait_seconds": int(self.max_wait.total_seconds()),
            "max_jobs": self.max_jobs,
            "backoff": {
                "base_seconds": int(self.backoff.base.total_seconds()),
                "max_seconds": int(self.backoff.cap.total_seconds()),
                "jitter": "full",
            },
        }
