"""Admission write services: validation, events in the same transaction, bucket retuning,
pause keys, concurrent edits."""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection

from ledger.models import ActorType
from ledger.services import Actor
from quotas.bucket import MICRO
from quotas.exceptions import AdmissionInvalid, AdmissionNotFound, ReasonRequired, TicketRequired
from quotas.models import AdmissionEvent, CircuitBreaker, Pause, Quota, TenantShare
from quotas.services import (
    BreakerConfig,
    Limits,
    breaker_configure,
    pause_add,
    pause_remove,
    quota_delete,
    quota_set,
    share_set_weight,
    throttle_clear,
    throttle_set,
)

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
ALICE = Actor(ActorType.OPERATOR, "alice")
WHY = {"actor": ALICE, "reason": "upstream asked us to slow down", "ticket": "OPS-1", "now": T0}


def snapshot():
    return (list(Quota.objects.order_by("pk").values()), list(Pause.objects.values()),
            list(TenantShare.objects.values()), list(CircuitBreaker.objects.values()),
            AdmissionEvent.objects.count())


def test_quota_set_creates_a_full_bucket_and_records_who_and_why():
    quota = quota_set(tenant="acme", job_type="ingest", limits=Limits(3, 2.0, 5, 100), **WHY)
    assert (quota.max_active, quota.rate_per_second, quota.burst, quota.max_queued) == (3, 2.0, 5, 100)
    assert quota.refilled_at is None  # never used: full
    assert (quota.reason, quota.ticket, quota.updated_by) == (WHY["reason"], "OPS-1", "alice")
    event = AdmissionEvent.objects.get()
    assert (event.tenant, event.type, event.job_type, event.source_id) == ("acme", "quota.changed", "ingest", 0)
    assert (event.actor_type, event.actor_label, event.ticket) == ("operator", "alice", "OPS-1")
    assert event.data == {"before": None, "after": {"max_active": 3, "rate_per_second": 2.0,
                                                    "burst": 5, "max_queued": 100}}


def test_quota_update_records_before_and_after_and_a_repeat_records_nothing():
    quota_set(tenant="acme", limits=Limits(max_active=3), **WHY)
    quota_set(tenant="acme", limits=Limits(max_active=7), **WHY)
    quota_set(tenant="acme", limits=Limits(max_active=7), **WHY)  # a retried request
    assert Quota.objects.get().max_active == 7
    events = list(AdmissionEvent.objects.order_by("id"))
    assert len(events) == 2
    assert events[1].data["before"]["max_active"] == 3 and events[1].data["after"]["max_active"] == 7


def test_changed_bucket_keeps_earned_tokens_clamped_to_the_new_burst():
    quota = quota_set(tenant="acme", limits=Limits(rate_per_second=1.0, burst=10), **WHY)
    Quota.objects.filter(pk=quota.pk).update(tokens_micro=2 * MICRO, refilled_at=T0)
    later = T0 + timedelta(seconds=5)
    # 2 tokens + 5 s at 1/s = 7, clamped to the new burst of 3
    quota = quota_set(tenant="acme", limits=Limits(rate_per_second=4.0, burst=3),
                      **{**WHY, "now": later})
    assert (quota.tokens_micro, quota.refilled_at) == (3 * MICRO, later)
    # a higher burst keeps what was earned, refilled under the old rate and burst first
    Quota.objects.filter(pk=quota.pk).update(tokens_micro=0, refilled_at=later)
    quota = quota_set(tenant="acme", limits=Limits(rate_per_second=1.0, burst=50),
                      **{**WHY, "now": later + timedelta(milliseconds=500)})
    assert quota.tokens_micro == 2 * MICRO  # 0.5 s at 4/s
    Quota.objects.filter(pk=quota.pk).update(tokens_micro=0, refilled_at=later)
    quota = quota_set(tenant="acme", limits=Limits(rate_per_second=1.0, burst=60),
                      **{**WHY, "now": later + timedelta(seconds=99)})
    assert quota.tokens_micro == 50 * MICRO  # never more than the old burst was worth


def test_other_limits_leave_the_bucket_alone():
    quota = quota_set(tenant="acme", limits=Limits(rate_per_second=1.0, burst=10), **WHY)
    Quota.objects.filter(pk=quota.pk).update(tokens_micro=2 * MICRO, refilled_at=T0)
    quota = quota_set(tenant="acme", limits=Limits(5, 1.0, 10, None),
                      **{**WHY, "now": T0 + timedelta(hours=1)})
    assert (quota.tokens_micro, quota.refilled_at) == (2 * MICRO, T0)


@pytest.mark.parametrize("limits", [
    Limits(rate_per_second=2.0),                      # lone rate
    Limits(burst=5),                                  # lone burst
    Limits(rate_per_second=0.0, burst=5),
    Limits(rate_per_second=-1.0, burst=5),
    Limits(rate_per_second=math.nan, burst=5),
    Limits(rate_per_second=math.inf, burst=5),
    Limits(rate_per_second=1e300, burst=5),
    Limits(rate_per_second=2.0, burst=0),
    Limits(rate_per_second=True, burst=5),            # type: ignore[arg-type]
    Limits(max_active=-1),
    Limits(max_active=2**40),
    Limits(max_queued="5"),                           # type: ignore[arg-type]
    Limits(max_active=1.5),                           # type: ignore[arg-type]
    Limits(),                                         # no limit at all
])
def test_bad_limits_are_refused_and_change_nothing(limits):
    quota_set(tenant="acme", limits=Limits(max_active=1), **WHY)
    before = snapshot()
    with pytest.raises(AdmissionInvalid) as caught:
        quota_set(tenant="acme", limits=limits, **WHY)
    assert caught.value.code == "validation_error" and caught.value.details["fields"]
    assert snapshot() == before


@pytest.mark.parametrize(("reason", "ticket", "error"), [
    ("", "OPS-1", ReasonRequired), ("   ", "OPS-1", ReasonRequired),
    ("why", "", TicketRequired), ("why", " \t", TicketRequired),
])
def test_quota_changes_need_reason_and_ticket(reason, ticket, error):
    with pytest.raises(error):
        quota_set(tenant="acme", limits=Limits(max_active=1), actor=ALICE, reason=reason,
                  ticket=ticket, now=T0)
    with pytest.raises(error):
        share_set_weight(tenant="acme", weight=2, actor=ALICE, reason=reason, ticket=ticket, now=T0)
    assert snapshot() == ([], [], [], [], 0)


def test_quota_delete_records_the_limits_and_a_missing_quota_is_not_found():
    quota_set(tenant="acme", source_id=7, limits=Limits(max_queued=10), **WHY)
    assert quota_delete(tenant="acme", source_id=7, **WHY)["max_queued"] == 10
    assert not Quota.objects.exists()
    event = AdmissionEvent.objects.latest("id")
    assert (event.type, event.source_id, event.data["after"]) == ("quota.deleted", 7, None)
    with pytest.raises(AdmissionNotFound):
        quota_delete(tenant="acme", source_id=7, **WHY)
    assert AdmissionEvent.objects.count() == 2


def test_throttle_is_the_bucket_of_the_scope_quota():
    quota = throttle_set(tenant="acme", job_type="scan", rate_per_second=0.5, burst=2, **WHY)
    assert quota is not None and (quota.max_active, quota.rate_per_second, quota.burst) == (None, 0.5, 2)
    quota_set(tenant="acme", job_type="scan", limits=Limits(4, 0.5, 2, None), **WHY)
    quota = throttle_set(tenant="acme", job_type="scan", rate_per_second=3.0, burst=6, **WHY)
    assert quota is not None and (quota.max_active, quota.rate_per_second, quota.burst) == (4, 3.0, 6)
    quota = throttle_clear(tenant="acme", job_type="scan", **WHY)
    assert quota is not None and (quota.max_active, quota.rate_per_second, quota.burst) == (4, None, None)
    types = list(AdmissionEvent.objects.order_by("id").values_list("type", flat=True))
    assert types == ["throttle.changed", "quota.changed", "throttle.changed", "throttle.changed"]


def test_clearing_the_last_limit_deletes_the_quota_and_clearing_nothing_records_nothing():
    throttle_set(tenant="acme", rate_per_second=1.0, burst=1, **WHY)
    assert throttle_clear(tenant="acme", **WHY) is None
    assert not Quota.objects.exists()
    assert AdmissionEvent.objects.latest("id").data["after"] is None
    assert throttle_clear(tenant="acme", **WHY) is None
    assert AdmissionEvent.objects.count() == 2
    with pytest.raises(AdmissionInvalid):
        throttle_set(tenant="acme", rate_per_second=1.0, burst=None, **WHY)


def test_a_scope_runs_again_only_when_every_key_is_removed():
    pause, created = pause_add(tenant="acme", source_id=3, key="operator", **WHY)
    assert created and pause.actor == "alice"
    pause_add(tenant="acme", source_id=3, key="deploy", actor=ALICE, reason="deploy 42", now=T0)
    assert pause_remove(tenant="acme", source_id=3, key="operator", **WHY) == ["deploy"]
    assert list(Pause.objects.values_list("key", flat=True)) == ["deploy"]
    assert pause_remove(tenant="acme", source_id=3, key="deploy", **WHY) == []
    events = list(AdmissionEvent.objects.order_by("id").values_list("type", "data"))
    assert [t for t, _ in events] == ["source.paused", "source.paused", "source.resumed",
                                      "source.resumed"]
    assert events[2][1]["keys"] == ["deploy"] and events[3][1]["keys"] == []


def test_pausing_again_under_the_same_key_updates_the_reason():
    pause_add(tenant="acme", job_type="scan", key="ops", **WHY)
    pause_add(tenant="acme", job_type="scan", key="ops", **WHY)  # same: nothing recorded
    pause, created = pause_add(tenant="acme", job_type="scan", key="ops", actor=ALICE,
                               reason="still broken", now=T0)
    assert not created and pause.reason == "still broken" and Pause.objects.count() == 1
    events = list(AdmissionEvent.objects.order_by("id"))
    assert [e.type for e in events] == ["job_type.paused", "job_type.paused"]
    assert events[1].data["before"]["reason"] == WHY["reason"]


def test_tenant_pause_and_resume_of_a_missing_key():
    pause_add(tenant="acme", key="ops", actor=ALICE, reason="freeze", now=T0)
    assert AdmissionEvent.objects.get().type == "tenant.paused"
    with pytest.raises(AdmissionNotFound):
        pause_remove(tenant="acme", key="nobody", **WHY)
    with pytest.raises(ReasonRequired):
        pause_remove(tenant="acme", key="ops", actor=ALICE, reason="", now=T0)
    assert Pause.objects.count() == 1 and AdmissionEvent.objects.count() == 1
    with pytest.raises(AdmissionInvalid):
        pause_add(tenant="acme", key="", **WHY)


def test_share_weight_bounds_and_event():
    assert share_set_weight(tenant="acme", weight=5, **WHY).weight == 5
    assert share_set_weight(tenant="acme", weight=1000, **WHY).weight == 1000
    for bad in (0, 1001, -3, 2.5, True):
        with pytest.raises(AdmissionInvalid):
            share_set_weight(tenant="acme", weight=bad, **WHY)
    data = list(AdmissionEvent.objects.order_by("id").values_list("data", flat=True))
    assert data == [{"before": None, "after": {"weight": 5}},
                    {"before": {"weight": 5}, "after": {"weight": 1000}}]


def test_breaker_configure_creates_a_closed_breaker_then_changes_only_what_is_given():
    breaker = breaker_configure(tenant="acme", source_id=9,
                                config=BreakerConfig(failure_ratio=0.25), **WHY)
    assert (breaker.state, breaker.failure_ratio, breaker.window_seconds) == ("closed", 0.25, 300)
    breaker = breaker_configure(tenant="acme", source_id=9,
                                config=BreakerConfig(cooldown_seconds=30), **WHY)
    assert (breaker.failure_ratio, breaker.cooldown_seconds) == (0.25, 30)
    events = list(AdmissionEvent.objects.order_by("id"))
    assert [e.type for e in events] == ["breaker.configured"] * 2
    assert events[1].data["before"]["cooldown_seconds"] == 60
    for bad in (BreakerConfig(failure_ratio=0), BreakerConfig(failure_ratio=1.5),
                BreakerConfig(window_seconds=0), BreakerConfig(min_samples=-1)):
        with pytest.raises(AdmissionInvalid):
            breaker_configure(tenant="acme", source_id=9, config=bad, **WHY)
    with pytest.raises(AdmissionInvalid):
        breaker_configure(tenant="acme", source_id=0, config=BreakerConfig(), **WHY)
    assert AdmissionEvent.objects.count() == 2


def test_naive_now_is_refused():
    with pytest.raises(ValueError):
        quota_set(tenant="acme", limits=Limits(max_active=1), actor=ALICE, reason="r",
                  ticket="t", now=datetime(2026, 1, 1))  # noqa: DTZ001


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_first_writes_of_one_scope_neither_fail_nor_lose_updates():
    def run(i):
        try:
            pause_add(tenant="acme", source_id=5, key=f"holder-{i}", **WHY)
            quota_set(tenant="acme", source_id=5, limits=Limits(max_active=i + 1),
                      **{**WHY, "reason": f"r{i}"})
            share_set_weight(tenant="acme", weight=i + 1, **{**WHY, "reason": f"r{i}"})
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(run, range(8)))
    assert Pause.objects.count() == 8 and Quota.objects.count() == 1
    assert TenantShare.objects.count() == 1
    assert AdmissionEvent.objects.filter(type="source.paused").count() == 8
    # every quota write was serialized: 8 events, each "before" is the previous "after"
    changes = list(AdmissionEvent.objects.filter(type="quota.changed").order_by("id")
                   .values_list("data", flat=True))
    assert len(changes) == 8 and changes[0]["before"] is None
    assert all(b["before"] == a["after"] for a, b in zip(changes, changes[1:], strict=False))
    assert Quota.objects.get().max_active == changes[-1]["after"]["max_active"]
