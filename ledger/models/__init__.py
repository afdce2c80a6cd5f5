"""Ledger models. ``core``: Source, Run, Job, JobDependency, Lane, Claim, Lease, JobEvent, Artifact,
JobLogLine; ``schedules``: Schedule."""
from .core import (  # noqa: F401
    NAME_MAX,
    TENANT_MAX,
    ActorType,
    Artifact,
    Claim,
    Job,
    JobDependency,
    JobEvent,
    JobLogLine,
    Lane,
    Lease,
    LeaseStatus,
    Run,
    Source,
)
from .schedules import CatchUp, Schedule  # noqa: F401
