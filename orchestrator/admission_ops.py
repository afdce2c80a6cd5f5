"""Admission writes as the API and the admin call them: source names resolved to ids, then one
``quotas.services`` call, in one transaction at the database clock.

Sources: ``quotas`` stores plain source ids; operators speak names. A write that puts a limit
or a pause in place (quota, throttle, pause, breaker) creates a source the tenant has not used
yet, exactly as enqueue does, so a feed can be limited or paused before its first job. A write
that removes something (quota delete, resume) never creates one: an unknown name is 404.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.db import transaction

from ledger.clock import db_now
from ledger.exceptions import NotFound
from ledger.models import Source
from ledger.services import source_resolve
from quotas.models import ANY_JOB_TYPE, ANY_SOURCE

T = TypeVar("T")


def source_id_for(*, tenant: str, name: str | None, create: bool) -> int:
    """The id of the tenant's source ``name`` (0 for None: every source).

    Raises:
        NotFound: ``create`` is False and the tenant has no such source.
    """
    if name is None:
        return ANY_SOURCE
    if create:
        source = source_resolve(tenant=tenant, name=name)
        assert source is not None
        return source.pk
    pk = Source.objects.filter(tenant=tenant, name=name).values_list("pk", flat=True).first()
    if pk is None:
        raise NotFound(f"source {name!r} not found", source=name)
    return pk


def in_scope(service: Callable[..., T], *, tenant: str, job_type: str | None = None,
             source: str | None, create: bool, with_job_type: bool = True,
             **kwargs: Any) -> T:
    """Call ``service(tenant=, [job_type=], source_id=, now=db_now(), **kwargs)`` with the
    scope resolved (``job_type`` None = every type, ``source`` a name or None = every source),
    in one transaction: a refused change leaves no new source behind.

    Raises:
        NotFound: unknown ``source`` when not ``create``; whatever ``service`` raises.
    """
    with transaction.atomic():
        source_id = source_id_for(tenant=tenant, name=source, create=create)
        if with_job_type:
            kwargs["job_type"] = job_type or ANY_JOB_TYPE
        return service(tenant=tenant, source_id=source_id, now=db_now(), **kwargs)
