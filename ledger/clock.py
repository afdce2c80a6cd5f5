"""The database clock: every lease expiry and backoff is measured against it, never a client's.

On PostgreSQL ``statement_timestamp()`` is read once per service call, so several web replicas
with skewed clocks still agree on when a lease expires. SQLite is embedded: its clock is this
host's, which ``timezone.now()`` reads without a round trip.
"""
from __future__ import annotations

from datetime import datetime

from django.db import connection
from django.utils import timezone


def db_now() -> datetime:
    """Return the database's current time as an aware UTC datetime."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT statement_timestamp()")
            return cursor.fetchone()[0]
    return timezone.now()


def require_aware(now: datetime) -> datetime:
    """Return ``now``; raise ``ValueError`` if it is naive (tests pass ``now=`` explicitly)."""
    if timezone.is_naive(now):
        raise ValueError("now must be an aware datetime")
    return now
