"""Recurring schedules: the DST rule, catch-up after downtime, idempotent fires under
concurrent passes, admission, the API (input, auth, tenancy) and the beat wiring."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.conf import settings
from django.db import connection

import orchestrator.tasks  # noqa: F401  (registers the beat tasks on the app)
from ledger.models import Job, JobEvent, Schedule
from orchestrator.celery import app
from orchestrator.cron import CronSpec, catch_up_plan
from orchestrator.exceptions import InvalidCron, InvalidTimezone, ScheduleNameTaken
from orchestrator.schedules import (
    schedule_create,
    schedule_key,
    schedule_update,
    schedules_fire_due,
    skip_grace,
)
from quotas.models import Quota


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


# --- The DST rule (pure: no database) ----------------------------------------------------

# 2026 transitions: Berlin 29 Mar 02:00 -> 03:00, 25 Oct 03:00 -> 02:00;
# New York 8 Mar 02:00 -> 03:00, 1 Nov 02:00 -> 01:00.
TRANSITIONS = {
    ("Europe/Berlin", "spring"): utc(2026, 3, 29, 1),
    ("Europe/Berlin", "autumn"): utc(2026, 10, 25, 1),
    ("America/New_York", "spring"): utc(2026, 3, 8, 7),
    ("America/New_York", "autumn"): utc(2026, 11, 1, 6),
}

DAILY_CASES = [
    # zone, cron, transition day, its one fire (UTC), its local wall clock
    ("Europe/Berlin", "30 2 * * *", date(2026, 3, 29), utc(2026, 3, 29, 1, 0),
     "2026-03-29T03:00:00+02:00"),   # 02:30 does not exist: first instant after the gap
    ("Europe/Berlin", "30 2 * * *", date(2026, 10, 25), utc(2026, 10, 25, 0, 30),
     "2026-10-25T02:30:00+02:00"),   # 02:30 occurs twice: the first (summer time) one
    ("America/New_York", "30 2 * * *", date(2026, 3, 8), utc(2026, 3, 8, 7, 0),
     "2026-03-08T03:00:00-04:00"),
    ("America/New_York", "30 1 * * *", date(2026, 11, 1), utc(2026, 11, 1, 5, 30),
     "2026-11-01T01:30:00-04:00"),
    ("America/New_York", "30 2 * * *", date(2026, 11, 1), utc(2026, 11, 1, 7, 30),
     "2026-11-01T02:30:00-05:00"),   # after the repeated hour: an ordinary day
]


@pytest.mark.parametrize(("zone", "cron", "day", "fire", "local"), DAILY_CASES)
def test_daily_schedule_fires_once_every_day_across_a_transition(zone, cron, day, fire, local):
    spec = CronSpec.parse(cron, zone)
    start = datetime.combine(day - timedelta(days=3), datetime.min.time(), ZoneInfo(zone))
    fires = spec.preview(after=start, count=7)
    local_days = [f.astimezone(ZoneInfo(zone)).date() for f in fires]
    assert local_days == [day + timedelta(days=n) for n in range(-3, 4)]  # none skipped or doubled
    [on_day] = [f for f in fires if f.astimezone(ZoneInfo(zone)).date() == day]
    assert on_day == fire
    assert on_day.astimezone(ZoneInfo(zone)).isoformat() == local


@pytest.mark.parametrize(("zone", "season"), sorted(TRANSITIONS))
@pytest.mark.parametrize(("cron", "step"), [("0 * * * *", timedelta(hours=1)),
                                            ("*/30 * * * *", timedelta(minutes=30))])
def test_interval_schedules_keep_their_spacing_in_elapsed_time(zone, season, cron, step):
    transition = TRANSITIONS[(zone, season)]
    start = transition - timedelta(hours=6)
    fires = CronSpec.parse(cron, zone).preview(after=start - timedelta(seconds=1),
                                               count=int(timedelta(hours=12) / step) + 1)
    assert fires == [start + n * step for n in range(len(fires))]


def test_hourly_schedule_shows_the_repeated_autumn_hour_twice_on_the_wall_clock():
    berlin = ZoneInfo("Europe/Berlin")
    fires = CronSpec.parse("0 * * * *", "Europe/Berlin").preview(
        after=utc(2026, 10, 24, 23, 30), count=4)
    assert [f.astimezone(berlin).isoformat() for f in fires] == [
        "2026-10-25T02:00:00+02:00", "2026-10-25T02:00:00+01:00",
        "2026-10-25T03:00:00+01:00", "2026-10-25T04:00:00+01:00"]


def test_a_gap_time_moved_onto_another_fire_time_is_one_fire():
    fires = CronSpec.parse("0 2,3 * * *", "Europe/Berlin").preview(
        after=utc(2026, 3, 28, 12), count=3)
    assert fires == [utc(2026, 3, 29, 1), utc(2026, 3, 30, 0), utc(2026, 3, 30, 1)]


@pytest.mark.parametrize(("zone", "season"), sorted(TRANSITIONS))
@pytest.mark.parametrize("cron", ["30 2 * * *", "30 1 * * *", "*/30 * * * *", "15 1-3 * * *",
                                  "0 4 * * 0"])
def test_latest_fire_time_matches_a_forward_walk_around_transitions(zone, season, cron):
    spec = CronSpec.parse(cron, zone)
    transition = TRANSITIONS[(zone, season)]
    for minutes in range(-300, 300, 13):
        until = transition + timedelta(minutes=minutes, seconds=7)
        after = until - timedelta(days=2)
        walked = None
        for fire in spec.fire_times(after=after):
            if fire > until:
                break
            walked = fire
        assert spec.latest_between(after=after, until=until) == walked


@pytest.mark.parametrize("cron", ["", "   ", "* * * *", "61 * * * *", "* 24 * * *",
                                  "* * * * * *", "@reboot", "@nope", "0 0 30 2 *", "*/0 * * * *",
                                  "1-0 * * * *", "0 0 * * MON#6", "x" * 201, "0 0 ? * *"])
def test_bad_cron_expressions_are_refused(cron):
    with pytest.raises(InvalidCron) as caught:
        CronSpec.parse(cron, "UTC")
    assert caught.value.code == "invalid_cron" and caught.value.details["reason"]


@pytest.mark.parametrize("zone", ["", "Mars/Olympus", "europe/berlin", "localtime",
                                  "../../etc/passwd", "/usr/share/zoneinfo/UTC", "Europe/"])
def test_unknown_time_zones_are_refused(zone):
    with pytest.raises(InvalidTimezone):
        CronSpec.parse("0 * * * *", zone)


@pytest.mark.parametrize(("cron", "first"), [("@daily", utc(2026, 6, 2)),
                                             ("0 9 * * MON-FRI", utc(2026, 6, 1, 9)),
                                             ("0 0 L * *", utc(2026, 6, 30)),
                                             ("  5   4 * *  * ", utc(2026, 6, 1, 4, 5))])
def test_macros_and_extended_syntax_are_accepted(cron, first):
    spec = CronSpec.parse(cron, "UTC")
    assert spec.next_after(utc(2026, 6, 1)) == first
    assert "  " not in spec.cron


# The end of datetime's range: a fire time after 9999-12-31 does not exist. Previews list the
# ones that do; the fire pass finds no next fire time (it used to raise OverflowError).
END_OF_TIME = datetime.max.replace(tzinfo=UTC)


@pytest.mark.parametrize(("cron", "zone", "after", "expected"), [
    ("0 0 * * *", "UTC", utc(9999, 12, 30), [utc(9999, 12, 31)]),
    ("0 0 1 1 *", "UTC", utc(9990, 1, 1), [utc(year, 1, 1) for year in range(9991, 10000)]),
    ("0 0 29 2 *", "UTC", utc(9996, 3, 1), []),          # next 29 February: year 10000
    ("* * * * *", "UTC", utc(9999, 12, 31, 23, 58), [utc(9999, 12, 31, 23, 59)]),
    # 20:00 EST on 31 December 9999 is 01:00 UTC in year 10000: the UTC side overflows
    ("0 20 * * *", "America/New_York", utc(9999, 12, 30), [utc(9999, 12, 30, 1),
                                                           utc(9999, 12, 31, 1)]),
    # after is already past the zone's last local time (+05:30)
    ("0 0 * * *", "Asia/Kolkata", utc(9999, 12, 31, 20), []),
    ("0 0 * * *", "UTC", END_OF_TIME, []),
])
def test_fire_times_end_at_the_end_of_year_9999(cron, zone, after, expected):
    spec = CronSpec.parse(cron, zone)
    assert spec.preview(after=after, count=100) == expected
    assert spec.next_after(after) == (expected[0] if expected else None)


def test_fire_times_from_the_start_of_time_do_not_overflow():
    # 0001-01-01T00:00Z is still year 0 in New York (local mean time, -04:56:02).
    fires = CronSpec.parse("0 0 * * *", "America/New_York").preview(after=utc(1, 1, 1),
                                                                   count=3)
    assert len(fires) == 3 and all(f > utc(1, 1, 1) for f in fires)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/New_York"])
@pytest.mark.parametrize("policy", ["skip", "one", "all"])
def test_catch_up_plan_at_the_end_of_time_has_no_next_watermark(zone, policy):
    spec = CronSpec.parse("* * * * *", zone)
    last = spec.latest_between(after=utc(9999, 12, 31), until=END_OF_TIME)
    plan = catch_up_plan(spec=spec, policy=policy, watermark=last, now=END_OF_TIME,
                         max_fires=1000, skip_grace=timedelta(days=1))
    assert plan.fire_times == [last] and plan.next_watermark is None
    assert last == (utc(9999, 12, 31, 18, 29) if zone == "Asia/Kolkata"
                    else utc(9999, 12, 31, 23, 59))


def test_catch_up_plan_skip_fires_only_a_time_within_the_grace():
    spec = CronSpec.parse("0 * * * *", "UTC")
    grace = timedelta(seconds=60)
    late = catch_up_plan(spec=spec, policy="skip", watermark=utc(2026, 6, 1, 1),
                         now=utc(2026, 6, 1, 5, 0, 59), max_fires=1000, skip_grace=grace)
    assert late.fire_times == [utc(2026, 6, 1, 5)]
    assert late.skipped == (utc(2026, 6, 1, 1), utc(2026, 6, 1, 4))
    assert late.next_watermark == utc(2026, 6, 1, 6)
    too_late = catch_up_plan(spec=spec, policy="skip", watermark=utc(2026, 6, 1, 1),
                             now=utc(2026, 6, 1, 5, 1, 1), max_fires=1000, skip_grace=grace)
    assert too_late.fire_times == []
    assert too_late.skipped == (utc(2026, 6, 1, 1), utc(2026, 6, 1, 5))


def test_skip_grace_is_at_least_a_minute_and_two_ticks(settings):
    settings.ORCH_SCHEDULES_TICK_SECONDS = 1
    assert skip_grace() == timedelta(seconds=60)
    settings.ORCH_SCHEDULES_TICK_SECONDS = 45
    assert skip_grace() == timedelta(seconds=90)


def test_catch_up_one_after_a_year_of_downtime_is_quick():
    spec = CronSpec.parse("* * * * *", "Europe/Berlin")
    plan = catch_up_plan(spec=spec, policy="one", watermark=utc(2025, 6, 1),
                         now=utc(2026, 6, 1, 12, 0, 30), max_fires=1000,
                         skip_grace=timedelta(seconds=60))
    assert plan.fire_times == [utc(2026, 6, 1, 12)]
    assert plan.next_watermark == utc(2026, 6, 1, 12, 1)


# --- The fire pass (database) ------------------------------------------------------------

T0 = utc(2026, 6, 1, 0, 0, 30)   # created at: the first fire time is 01:00


def make_schedule(name: str = "hourly", cron: str = "0 * * * *", tenant: str = "acme",
                  **kwargs) -> Schedule:
    kwargs.setdefault("job_type", "test.noop")
    kwargs.setdefault("project", "p")
    kwargs.setdefault("max_attempts", 3)
    return schedule_create(tenant=tenant, name=name, cron=cron, now=T0, **kwargs)


def keys(tenant: str = "acme") -> list[str]:
    return list(Job.objects.filter(tenant=tenant).order_by("id")
                .values_list("idempotency_key", flat=True))


def hours(schedule: Schedule, *hs: int) -> list[str]:
    return [schedule_key(schedule.pk, utc(2026, 6, 1, h)) for h in hs]


@pytest.mark.django_db
def test_created_schedule_waits_for_its_first_fire_time():
    schedule = make_schedule()
    assert schedule.next_fire_at == utc(2026, 6, 1, 1)
    assert schedules_fire_due(now=utc(2026, 6, 1, 0, 59, 59)).schedules == 0
    assert Job.objects.count() == 0


@pytest.mark.django_db
def test_an_on_time_fire_creates_one_job_with_the_schedule_definition():
    schedule = make_schedule(payload={"feed": "nvd"}, priority=7, source="nvd",
                             catch_up="skip")
    result = schedules_fire_due(now=utc(2026, 6, 1, 1, 0, 0, 400_000))
    assert result.as_dict() == {"schedules": 1, "created": 1, "replayed": 0, "refused": 0,
                                "parked": 0}
    job = Job.objects.get()
    assert job.idempotency_key == f"schedule:{schedule.pk}:2026-06-01T01:00:00Z"
    assert (job.payload, job.priority, job.source.name, job.max_attempts, job.status) == (
        {"feed": "nvd"}, 7, "nvd", 3, "ready")
    assert JobEvent.objects.get(job=job).actor_label == f"schedule:{schedule.pk}"
    schedule.refresh_from_db()
    assert schedule.next_fire_at == utc(2026, 6, 1, 2)
    assert schedule.last_fired_at == utc(2026, 6, 1, 1)
    assert schedule.updated_at == T0  # the definition did not change
    assert schedules_fire_due(now=utc(2026, 6, 1, 1, 0, 1)).schedules == 0
    assert Job.objects.count() == 1


DOWNTIME_OVER = utc(2026, 6, 1, 5, 0, 20)   # missed 01:00 .. 05:00


@pytest.mark.django_db
def test_catch_up_all_fires_every_missed_time():
    schedule = make_schedule(catch_up="all")
    assert schedules_fire_due(now=DOWNTIME_OVER).created == 5
    assert keys() == hours(schedule, 1, 2, 3, 4, 5)
    schedule.refresh_from_db()
    assert (schedule.next_fire_at, schedule.last_fired_at) == (utc(2026, 6, 1, 6),
                                                               utc(2026, 6, 1, 5))


@pytest.mark.django_db
def test_catch_up_all_is_bounded_per_pass_and_the_next_pass_continues():
    schedule = make_schedule(catch_up="all")
    assert schedules_fire_due(now=DOWNTIME_OVER, max_fires=3).created == 3
    schedule.refresh_from_db()
    assert schedule.next_fire_at == utc(2026, 6, 1, 4)
    assert schedules_fire_due(now=DOWNTIME_OVER, max_fires=3).created == 2
    assert schedules_fire_due(now=DOWNTIME_OVER, max_fires=3).schedules == 0
    assert keys() == hours(schedule, 1, 2, 3, 4, 5)


@pytest.mark.django_db
@pytest.mark.parametrize("now", [DOWNTIME_OVER, utc(2026, 6, 1, 5, 59)])
def test_catch_up_one_fires_once_for_the_latest_missed_time(now):
    schedule = make_schedule(catch_up="one")
    assert schedules_fire_due(now=now).created == 1
    assert keys() == hours(schedule, 5)
    schedule.refresh_from_db()
    assert schedule.next_fire_at == utc(2026, 6, 1, 6)


@pytest.mark.django_db
def test_catch_up_skip_fires_only_a_time_that_is_due_now():
    on_time = make_schedule("on-time", catch_up="skip")
    late = make_schedule("late", catch_up="skip")
    Schedule.objects.filter(pk=late.pk).update(next_fire_at=utc(2026, 5, 31, 23))
    schedules_fire_due(now=DOWNTIME_OVER)   # 05:00 is 20 s ago: within the grace
    assert sorted(keys()) == sorted(hours(on_time, 5) + hours(late, 5))
    Job.objects.all().delete()
    schedules_fire_due(now=utc(2026, 6, 1, 6, 30))   # 06:00 is 30 min ago: downtime
    assert keys() == []
    assert set(Schedule.objects.values_list("next_fire_at", flat=True)) == {utc(2026, 6, 1, 7)}


@pytest.mark.django_db
def test_catch_up_across_the_berlin_spring_transition_fires_each_day_once():
    schedule = make_schedule("nightly", cron="30 2 * * *", timezone="Europe/Berlin",
                             catch_up="all")
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=utc(2026, 3, 27, 1, 30))
    assert schedules_fire_due(now=utc(2026, 3, 31, 12)).created == 5
    assert keys() == [schedule_key(schedule.pk, at) for at in (
        utc(2026, 3, 27, 1, 30), utc(2026, 3, 28, 1, 30), utc(2026, 3, 29, 1, 0),
        utc(2026, 3, 30, 0, 30), utc(2026, 3, 31, 0, 30))]


@pytest.mark.django_db
def test_a_rewound_watermark_replays_fires_instead_of_doubling_them():
    schedule = make_schedule(catch_up="all")
    schedules_fire_due(now=DOWNTIME_OVER)
    Schedule.objects.filter(pk=schedule.pk).update(next_fire_at=utc(2026, 6, 1, 1))
    result = schedules_fire_due(now=DOWNTIME_OVER)
    assert (result.created, result.replayed) == (0, 5)
    assert keys() == hours(schedule, 1, 2, 3, 4, 5)


@pytest.mark.django_db
def test_a_fire_made_before_an_edit_is_not_made_again():
    schedule = make_schedule(catch_up="all")
    schedules_fire_due(now=utc(2026, 6, 1, 1, 0, 5))
    Schedule.objects.filter(pk=schedule.pk).update(payload={"edited": True},
                                                   next_fire_at=utc(2026, 6, 1, 1))
    result = schedules_fire_due(now=utc(2026, 6, 1, 1, 0, 6))
    assert (result.created, result.replayed) == (0, 1)
    assert Job.objects.get().payload == {}


@pytest.mark.django_db
def test_a_full_queue_keeps_the_fire_time_and_the_next_tick_retries():
    schedule = make_schedule(catch_up="all")
    Quota.objects.create(tenant="acme", max_queued=1, updated_at=T0)
    waiting = Job.objects.create(tenant="acme", project="p", job_type="other", payload={},
                                 request_digest="x", status="ready", max_attempts=1,
                                 created_at=T0, updated_at=T0)
    result = schedules_fire_due(now=utc(2026, 6, 1, 2, 0, 5))
    assert (result.created, result.refused) == (0, 1)
    schedule.refresh_from_db()
    assert schedule.next_fire_at == utc(2026, 6, 1, 1) and schedule.last_fired_at is None
    waiting.delete()
    assert schedules_fire_due(now=utc(2026, 6, 1, 2, 0, 6)).created == 1
    assert schedules_fire_due(now=utc(2026, 6, 1, 2, 0, 7)).refused == 1   # queue full again
    schedule.refresh_from_db()
    assert schedule.next_fire_at == utc(2026, 6, 1, 2)
    assert keys() == hours(schedule, 1)


@pytest.mark.django_db
def test_disabled_schedules_do_not_fire_and_reenabling_does_not_catch_up():
    schedule = make_schedule(catch_up="all")
    schedule_update(tenant="acme", schedule_id=schedule.pk, changes={"enabled": False},
                    now=T0)
    assert Schedule.objects.get().next_fire_at is None
    assert schedules_fire_due(now=DOWNTIME_OVER).schedules == 0
    schedule_update(tenant="acme", schedule_id=schedule.pk, changes={"enabled": True},
                    now=DOWNTIME_OVER)
    assert Schedule.objects.get().next_fire_at == utc(2026, 6, 1, 6)


@pytest.mark.django_db
def test_a_stored_definition_that_no_longer_parses_is_parked_not_fatal():
    broken = make_schedule("broken")
    healthy = make_schedule("healthy")
    Schedule.objects.filter(pk=broken.pk).update(timezone="Gone/Zone")
    result = schedules_fire_due(now=utc(2026, 6, 1, 1, 0, 5))
    assert (result.parked, result.created) == (1, 1)
    assert keys() == hours(healthy, 1)
    assert Schedule.objects.get(pk=broken.pk).next_fire_at is None
    schedule_update(tenant="acme", schedule_id=broken.pk, changes={"timezone": "UTC"},
                    now=utc(2026, 6, 1, 1, 30))
    assert Schedule.objects.get(pk=broken.pk).next_fire_at == utc(2026, 6, 1, 2)


@pytest.mark.django_db
@pytest.mark.parametrize("policy", ["skip", "one", "all"])
def test_the_last_fire_before_year_10000_fires_and_the_pass_survives(policy):
    leap = schedule_create(tenant="acme", name="leap", cron="0 0 29 2 *", job_type="t",
                           project="p", max_attempts=1, catch_up=policy, now=utc(9996, 2, 28))
    daily = schedule_create(tenant="acme", name="daily", cron="0 0 * * *", job_type="t",
                            project="p", max_attempts=1, catch_up=policy,
                            now=utc(9999, 12, 30, 12))
    assert (leap.next_fire_at, daily.next_fire_at) == (utc(9996, 2, 29), utc(9999, 12, 31))
    result = schedules_fire_due(now=utc(9999, 12, 31, 0, 0, 5))
    assert (result.schedules, result.created) == (2, 2 if policy != "skip" else 1)
    # Neither has a fire time left: the watermark is null, nothing is due on the next pass.
    assert set(Schedule.objects.values_list("next_fire_at", flat=True)) == {None}
    assert schedules_fire_due(now=END_OF_TIME).schedules == 0
    assert schedule_create(tenant="acme", name="never", cron="0 0 29 2 *", job_type="t",
                           project="p", max_attempts=1,
                           now=utc(9996, 3, 1)).next_fire_at is None


@pytest.mark.django_db
def test_service_refuses_bad_definitions_and_duplicate_names():
    make_schedule()
    with pytest.raises(ScheduleNameTaken):
        make_schedule()
    with pytest.raises(InvalidCron):
        make_schedule("other", cron="0 25 * * *")
    with pytest.raises(InvalidTimezone):
        make_schedule("other", timezone="Europe/Atlantis")
    assert Schedule.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_fire_passes_never_make_two_jobs_for_one_fire_time():
    schedules = [make_schedule(f"s{n}", catch_up="all") for n in range(8)]
    now = utc(2026, 6, 2, 0, 0, 10)   # 24 missed fire times each
    expected = {schedule_key(s.pk, utc(2026, 6, 1, 1) + timedelta(hours=h))
                for s in schedules for h in range(24)}
    barrier = threading.Barrier(4)

    def fire(index: int, rounds: int = 6) -> list[dict[str, int]]:
        try:
            results = []
            for _ in range(rounds):
                barrier.wait(timeout=30)
                results.append(schedules_fire_due(now=now, max_fires=7).as_dict())
                barrier.wait(timeout=30)
                # Rewind every watermark (as a restored backup would): the next round
                # refires the same times from four passes at once.
                if index == 0:
                    Schedule.objects.update(next_fire_at=utc(2026, 6, 1, 1))
                barrier.wait(timeout=30)
            return results
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="fire") as pool:
        results = [r for rs in pool.map(fire, range(4)) for r in rs]
    assert set(keys()) == expected and len(keys()) == len(expected)
    assert sum(r["created"] for r in results) == len(expected)
    assert sum(r["replayed"] for r in results) > 0


# --- The API -------------------------------------------------------------------------------

BODY = {"name": "nvd-nightly", "cron": "30 2 * * *", "timezone": "Europe/Berlin",
        "job_type": "advisory.ingest", "project": "p", "payload": {"feed": "nvd"}}


@pytest.fixture
def created(operator):
    response = operator.post("/api/v1/schedules", BODY, format="json")
    assert response.status_code == 201, response.content
    return response.json()


@pytest.mark.django_db
def test_create_show_list_change_and_delete_a_schedule(operator, created):
    assert created["cron"] == "30 2 * * *" and created["catch_up"] == "one"
    assert created["max_attempts"] == settings.ORCH_MAX_ATTEMPTS_DEFAULT
    assert created["enabled"] is True and created["next_fire_at"] is not None
    url = f"/api/v1/schedules/{created['schedule_id']}"
    assert operator.get(url).json() == created
    assert [s["name"] for s in operator.get("/api/v1/schedules").json()["results"]] == [
        "nvd-nightly"]
    changed = operator.patch(url, {"cron": "0 */6 * * *", "catch_up": "all"}, format="json")
    assert changed.status_code == 200
    assert changed.json()["cron"] == "0 */6 * * *" and changed.json()["catch_up"] == "all"
    next_local = datetime.fromisoformat(changed.json()["next_fire_at"]).astimezone(
        ZoneInfo("Europe/Berlin"))
    assert (next_local.hour % 6, next_local.minute) == (0, 0)
    now = datetime.now(UTC)  # the next 6-hourly fire after now, not the old daily one
    assert now - timedelta(minutes=1) < next_local.astimezone(UTC) <= now + timedelta(hours=6)
    disabled = operator.patch(url, {"enabled": False}, format="json").json()
    assert disabled["next_fire_at"] is None
    assert operator.get("/api/v1/schedules?enabled=true").json()["results"] == []
    assert operator.delete(url).status_code == 204
    assert operator.get(url).status_code == 404
    assert Schedule.objects.count() == 0


@pytest.mark.django_db
def test_preview_of_a_saved_schedule_shows_the_dst_rule(operator, created):
    response = operator.get(f"/api/v1/schedules/{created['schedule_id']}/preview"
                            "?count=3&after=2026-03-28T00:00:00Z")
    assert response.status_code == 200
    assert response.json() == {
        "cron": "30 2 * * *", "timezone": "Europe/Berlin", "after": "2026-03-28T00:00:00Z",
        "fire_times": [
            {"at": "2026-03-28T01:30:00Z", "local": "2026-03-28T02:30:00+01:00"},
            {"at": "2026-03-29T01:00:00Z", "local": "2026-03-29T03:00:00+02:00"},
            {"at": "2026-03-30T00:30:00Z", "local": "2026-03-30T02:30:00+02:00"},
        ]}
    assert len(operator.get(f"/api/v1/schedules/{created['schedule_id']}/preview")
               .json()["fire_times"]) == 10


@pytest.mark.django_db
def test_preview_of_an_unsaved_expression(api):
    reader = api(scopes=("orch:read",))
    response = reader.post("/api/v1/schedules/preview",
                           {"cron": "30  1 * * *", "timezone": "America/New_York", "count": 2,
                            "after": "2026-10-31T12:00:00Z"}, format="json")
    assert response.status_code == 200
    assert response.json()["cron"] == "30 1 * * *"
    assert [t["local"] for t in response.json()["fire_times"]] == [
        "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]


@pytest.mark.django_db
def test_preview_after_accepts_an_offset_and_echoes_the_instant(operator, created):
    response = operator.get(f"/api/v1/schedules/{created['schedule_id']}/preview"
                            "?count=1&after=2026-03-28T05:30:00%2B05:30")
    assert response.status_code == 200, response.content
    assert response.json()["after"] == "2026-03-28T00:00:00Z"
    assert response.json()["fire_times"][0]["at"] == "2026-03-28T01:30:00Z"


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "expected"), [
    ({"cron": "0 0 * * *", "count": 100, "after": "9999-12-30T00:00:00Z"},
     ["9999-12-31T00:00:00Z"]),
    ({"cron": "0 0 1 1 *", "count": 100, "after": "9990-01-01T00:00:00Z"},
     [f"{year}-01-01T00:00:00Z" for year in range(9991, 10000)]),
    ({"cron": "0 0 29 2 *", "count": 5, "after": "9996-03-01T00:00:00Z"}, []),
    ({"cron": "0 0 * * *", "timezone": "Asia/Kolkata", "after": "9999-12-31T23:59:59Z"}, []),
])
def test_preview_near_year_9999_lists_the_fire_times_that_exist(api, body, expected):
    response = api(scopes=("orch:read",)).post("/api/v1/schedules/preview", body, format="json")
    assert response.status_code == 200, response.content
    assert [t["at"] for t in response.json()["fire_times"]] == expected


@pytest.mark.django_db
def test_saved_preview_near_year_9999_lists_the_fire_times_that_exist(operator, created):
    response = operator.get(f"/api/v1/schedules/{created['schedule_id']}/preview"
                            "?after=9999-12-30T00:00:00Z&count=5")
    assert response.status_code == 200, response.content
    assert response.json()["fire_times"] == [
        {"at": "9999-12-30T01:30:00Z", "local": "9999-12-30T02:30:00+01:00"},
        {"at": "9999-12-31T01:30:00Z", "local": "9999-12-31T02:30:00+01:00"}]


@pytest.mark.django_db
def test_duplicate_names_are_a_conflict(operator, created):
    response = operator.post("/api/v1/schedules", BODY, format="json")
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "name_taken"
    other = operator.post("/api/v1/schedules", {**BODY, "name": "other"}, format="json")
    taken = operator.patch(f"/api/v1/schedules/{other.json()['schedule_id']}",
                           {"name": "nvd-nightly"}, format="json")
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "name_taken"


BAD_CREATE = [
    ({**BODY, "cron": "61 * * * *"}, "invalid_cron"),
    ({**BODY, "cron": "* * * * * *"}, "invalid_cron"),
    ({**BODY, "cron": "@reboot"}, "invalid_cron"),
    ({**BODY, "cron": 5}, "validation_error"),
    ({**BODY, "cron": "x" * 201}, "validation_error"),
    ({**BODY, "timezone": "Europe/Atlantis"}, "invalid_timezone"),
    ({**BODY, "timezone": "europe/berlin"}, "invalid_timezone"),
    ({**BODY, "timezone": "Europe/Berlin "}, "invalid_timezone"),
    ({**BODY, "timezone": " Europe/Berlin"}, "invalid_timezone"),
    ({**BODY, "timezone": "Europe/Berlin\n"}, "invalid_timezone"),
    ({**BODY, "timezone": None}, "validation_error"),
    ({**BODY, "catch_up": "sometimes"}, "validation_error"),
    ({**BODY, "catch_up": 1}, "validation_error"),
    ({**BODY, "enabled": "yes"}, "validation_error"),
    ({**BODY, "priority": "5"}, "validation_error"),
    ({**BODY, "max_attempts": 0}, "validation_error"),
    ({**BODY, "name": "bad name!"}, "validation_error"),
    ({**BODY, "payload": [1]}, "validation_error"),
    ({**BODY, "next_fire_at": "2026-01-01T00:00:00Z"}, "unknown_field"),
    ({**BODY, "cron": "0 0 * * *\u0000"}, "invalid_characters"),
    ({k: v for k, v in BODY.items() if k != "cron"}, "validation_error"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "code"), BAD_CREATE)
def test_bad_schedule_bodies_are_refused_with_a_code(operator, body, code):
    response = operator.post("/api/v1/schedules", body, format="json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["code"] == code
    assert Schedule.objects.count() == 0


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "code"), [({"cron": "bad"}, "invalid_cron"),
                                            ({"timezone": "Nowhere"}, "invalid_timezone"),
                                            ({"timezone": "Asia/Kolkata "}, "invalid_timezone"),
                                            ({"tenant": "other"}, "unknown_field"),
                                            ({"enabled": 1}, "validation_error")])
def test_bad_patches_change_nothing(operator, created, body, code):
    url = f"/api/v1/schedules/{created['schedule_id']}"
    response = operator.patch(url, body, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == code
    assert operator.get(url).json() == created


@pytest.mark.django_db
@pytest.mark.parametrize(("query", "code"), [("count=0", "validation_error"),
                                             ("count=101", "validation_error"),
                                             ("count=abc", "validation_error"),
                                             ("after=tomorrow", "validation_error"),
                                             ("after=2026-03-28", "validation_error"),
                                             ("after=2026-03-28T00:00:00", "validation_error"),
                                             ("after=2026-03-28T00:00", "validation_error"),
                                             ("after=2026-03-28 00:00:00Z", "validation_error"),
                                             ("after=2026-03-28T00:00:00Z%0A",
                                              "validation_error"),
                                             ("limit=5", "unknown_field")])
def test_bad_preview_queries_are_refused(operator, created, query, code):
    response = operator.get(f"/api/v1/schedules/{created['schedule_id']}/preview?{query}")
    assert response.status_code == 400 and response.json()["error"]["code"] == code


@pytest.mark.django_db
@pytest.mark.parametrize(("body", "code"), [({"cron": "* * *"}, "invalid_cron"),
                                            ({"cron": "* * * * *", "timezone": "X"},
                                             "invalid_timezone"),
                                            ({"cron": "* * * * *", "count": 101},
                                             "validation_error"),
                                            ({"cron": "* * * * *", "count": "5"},
                                             "validation_error"),
                                            ({"cron": "* * * * *", "timezone": "Asia/Kolkata "},
                                             "invalid_timezone"),
                                            ({"cron": "* * * * *", "after": "2026-03-28"},
                                             "validation_error"),
                                            ({"cron": "* * * * *",
                                              "after": "2026-03-28T00:00:00"},
                                             "validation_error"),
                                            ({"cron": "* * * * *", "after": 1774656000},
                                             "validation_error"),
                                            ({"cron": "* * * * *", "name": "x"},
                                             "unknown_field")])
def test_bad_unsaved_previews_are_refused(operator, body, code):
    response = operator.post("/api/v1/schedules/preview", body, format="json")
    assert response.status_code == 400 and response.json()["error"]["code"] == code


@pytest.mark.django_db
def test_list_rejects_unknown_query_parameters_and_bad_cursors(operator):
    assert operator.get("/api/v1/schedules?colour=red").json()["error"]["code"] == "unknown_field"
    assert operator.get("/api/v1/schedules?cursor=zzz").json()["error"]["code"] == "invalid_cursor"
    response = operator.get("/api/v1/schedules?cursor=!!")
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_cursor"


@pytest.mark.django_db
def test_schedule_list_pages_with_the_cursors_it_issues(operator):
    for n in range(3):
        assert operator.post("/api/v1/schedules", {**BODY, "name": f"s{n}"},
                             format="json").status_code == 201
    first = operator.get("/api/v1/schedules?page_size=2").json()
    second = operator.get(first["next"]).json()
    assert [s["name"] for s in first["results"] + second["results"]] == ["s0", "s1", "s2"]
    assert [s["name"] for s in operator.get(second["previous"]).json()["results"]] == [
        "s0", "s1"]


@pytest.mark.django_db
def test_unsupported_methods_are_405(operator, created):
    response = operator.put(f"/api/v1/schedules/{created['schedule_id']}", BODY, format="json")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.django_db
def test_schedule_calls_need_a_token_and_the_right_scope(api, created):
    sid = created["schedule_id"]
    calls = [("get", "/api/v1/schedules", None), ("post", "/api/v1/schedules", BODY),
             ("get", f"/api/v1/schedules/{sid}", None),
             ("patch", f"/api/v1/schedules/{sid}", {"priority": 1}),
             ("delete", f"/api/v1/schedules/{sid}", None),
             ("get", f"/api/v1/schedules/{sid}/preview", None),
             ("post", "/api/v1/schedules/preview", {"cron": "* * * * *"})]
    anonymous, runner = api(), api(scopes=("orch:runner",))
    anonymous.credentials()
    for method, url, body in calls:
        response = getattr(anonymous, method)(url, body, format="json")
        assert response.status_code == 401, (method, url)
        assert response.json()["error"]["code"] == "not_authenticated"
        response = getattr(runner, method)(url, body, format="json")
        assert response.status_code == 403, (method, url)
        assert response.json()["error"]["code"] == "insufficient_scope"
    reader = api(scopes=("orch:read",))
    assert reader.get(f"/api/v1/schedules/{sid}").status_code == 200
    for method, url, body in calls[1:5:2] + [("delete", f"/api/v1/schedules/{sid}", None)]:
        assert getattr(reader, method)(url, body, format="json").status_code == 403


@pytest.mark.django_db
def test_another_tenants_schedule_is_not_found(api, created):
    sid = created["schedule_id"]
    other = api(tenant="globex")
    for method, url, body in [("get", f"/api/v1/schedules/{sid}", None),
                              ("patch", f"/api/v1/schedules/{sid}", {"priority": 1}),
                              ("delete", f"/api/v1/schedules/{sid}", None),
                              ("get", f"/api/v1/schedules/{sid}/preview", None)]:
        response = getattr(other, method)(url, body, format="json")
        assert response.status_code == 404 and response.json()["error"]["code"] == "not_found"
    assert other.get("/api/v1/schedules").json()["results"] == []
    assert Schedule.objects.get().priority == 0


# --- Beat wiring and admin -------------------------------------------------------------------

@pytest.mark.django_db
def test_the_beat_runs_the_fire_task_every_tick():
    entry = settings.CELERY_BEAT_SCHEDULE["orch.schedules.fire"]
    assert entry["task"] == "orch.schedules.fire"
    assert entry["schedule"] == timedelta(seconds=settings.ORCH_SCHEDULES_TICK_SECONDS)
    assert app.tasks["orch.schedules.fire"].apply(throw=True).get() == {
        "schedules": 0, "created": 0, "replayed": 0, "refused": 0, "parked": 0}


@pytest.mark.django_db
def test_admin_lists_schedules_read_only(admin_client, created):
    assert admin_client.get("/admin/ledger/schedule/").status_code == 200
    assert admin_client.get(f"/admin/ledger/schedule/{created['schedule_id']}/change/") \
        .status_code == 200
    assert admin_client.get("/admin/ledger/schedule/add/").status_code == 403
