"""Signals the ledger sends after commit; upper layers (wake-ups, streams) subscribe.

``jobs_ready``: sent after a transaction that made jobs claimable commits.
    kwargs: ``tenant`` (str or None for several tenants), ``job_types`` (frozenset[str]).
"""
from django.dispatch import Signal

jobs_ready = Signal()
