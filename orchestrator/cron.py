"""Cron arithmetic for schedules: parse a cron expression in an IANA time zone, list its fire
times, and plan what a fire pass enqueues after downtime. Pure: no database, no clock.

Evaluation is cronsim's (https://github.com/cuu508/cronsim, the evaluator of Healthchecks),
which follows Debian's cron, DST handling included (cron(8), "Local time changes of less than
three hours ... are handled specially"). The rule, stated once (docs/schedules.md):

* **Wall-clock expressions** (neither the minute nor the hour field starts with ``*``, e.g.
  ``30 2 * * *``, ``0 9,17 * * MON-FRI``) are evaluated on the local wall clock. A local time
  that does not exist (spring forward) fires once, at the first instant after the gap
  (02:30 in Berlin on 2026-03-29 fires at 03:00 CEST); if that instant is also one of the
  expression's own times, both are one fire. A local time that occurs twice (autumn) fires
  once, at its first occurrence (the summer-time one).
* **Interval expressions** (the minute or the hour field starts with ``*``, e.g.
  ``*/30 * * * *``, ``0 * * * *``) follow elapsed time: every existing local time that matches
  fires, so the repeated autumn hour fires in both occurrences and the skipped spring hour has
  no times; the spacing between two fires stays the expression's step (``0 * * * *`` is
  exactly 60 minutes apart straight through both transitions).

Fire times are aware UTC datetimes on whole minutes; they are strictly increasing.
"""
from __future__ import annotations

import zoneinfo
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache

from cronsim import CronSim, CronSimError

from .exceptions import InvalidCron, InvalidTimezone

# Debian cron's macros (crontab(5)); @reboot has no fire time and is refused.
MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
CRON_MAX_CHARS = 200
# Names in the zone database that are not zones a schedule should name: the host's own
# zone (differs per machine) and the "Factory" placeholder zone.
_NOT_ZONES = frozenset({"localtime", "posixrules", "Factory"})
_SECOND = timedelta(seconds=1)
# The last whole second ``datetime`` can represent; no fire time exists after it.
_LAST_SECOND = datetime.max.replace(microsecond=0, tzinfo=UTC)


class CatchUpPolicy:
    """The values of ``ledger.models.CatchUp`` (kept as strings: this module is pure)."""

    SKIP = "skip"
    ONE = "one"
    ALL = "all"


@lru_cache(maxsize=1)
def timezone_names() -> frozenset[str]:
    """Every IANA zone name this host knows (system zone database, else the tzdata package)."""
    return frozenset(zoneinfo.available_timezones()) - _NOT_ZONES


def zone_get(name: str) -> zoneinfo.ZoneInfo:
    """Return the zone called ``name`` (exact IANA spelling, e.g. ``Europe/Berlin``).

    Raises:
        InvalidTimezone: not a zone name (``details.timezone`` echoes it).
    """
    if not isinstance(name, str) or name not in timezone_names():
        raise InvalidTimezone(f"{name!r} is not an IANA time zone name (e.g. 'Europe/Berlin')",
                              timezone=name)
    return zoneinfo.ZoneInfo(name)


@dataclass(frozen=True)
class CronSpec:
    """A validated cron expression in a time zone. Build it with ``CronSpec.parse``."""

    cron: str                      # as stored: the caller's text, whitespace collapsed
    zone: zoneinfo.ZoneInfo
    expression: str = field(repr=False)  # five fields (a macro expanded)

    @classmethod
    def parse(cls, cron: str, timezone: str) -> CronSpec:
        """Validate ``cron`` (five fields: minute hour day-of-month month day-of-week, or a
        macro such as ``@daily``) and ``timezone`` (an IANA name).

        Syntax is Debian cron's plus cronsim's ``L``, ``LW`` and ``DOW#n``. Six-field
        expressions (seconds) are refused: fires are per minute.

        Raises:
            InvalidCron: malformed, or no fire time within 50 years; ``details.reason``.
            InvalidTimezone: unknown zone name.
        """
        zone = zone_get(timezone)
        if not isinstance(cron, str) or not cron.strip():
            raise InvalidCron("the cron expression is empty", cron=cron, reason="empty")
        text = " ".join(cron.split())
        if len(text) > CRON_MAX_CHARS:
            raise InvalidCron(f"the cron expression is longer than {CRON_MAX_CHARS} characters",
                              cron=text, reason="too long")
        expression = MACROS.get(text.lower(), text)
        if expression.startswith("@"):
            raise InvalidCron(f"unknown macro {text!r} (known: {', '.join(sorted(MACROS))})",
                              cron=text, reason="unknown macro")
        if len(expression.split()) != 5:
            raise InvalidCron("a cron expression has five fields: minute hour day-of-month "
                              "month day-of-week", cron=text, reason="wrong number of fields")
        try:
            first = next(CronSim(expression, datetime(2000, 1, 1, tzinfo=zone)))
        except CronSimError as exc:
            raise InvalidCron(f"invalid cron expression {text!r}: {exc}", cron=text,
                              reason=str(exc)) from None
        except StopIteration:
            first = None
        if first is None:
            raise InvalidCron(f"{text!r} has no fire time within 50 years", cron=text,
                              reason="never fires")
        return cls(cron=text, zone=zone, expression=expression)

    def fire_times(self, *, after: datetime) -> Iterator[datetime]:
        """Yield the fire times strictly after ``after`` (aware), ascending, as UTC.

        Ends when there is none within 50 years of the last one, or at the end of the range
        of ``datetime`` (9999-12-31 in the zone and in UTC): a fire time past it does not
        exist, so a year-9999 preview is short and a schedule has no next fire time there.
        The DST rule is the module's.
        """
        if after.tzinfo is None:
            raise ValueError("after must be an aware datetime")
        last = after
        try:
            start = after.astimezone(self.zone)
        except OverflowError:
            if after.year > 1:
                return  # ``after`` is past the last local time the zone can represent
            start = datetime.min.replace(tzinfo=self.zone)  # year 1, west of UTC
        # cronsim evaluates wall-clock expressions on the naive local time, which forgets
        # the fold: started inside a repeated hour it may yield a time before ``after`` (or,
        # for a spring-gap time moved onto a real one, the same instant twice). Filtering on
        # the UTC instant keeps the sequence strictly increasing.
        local_times = CronSim(self.expression, start)
        while True:
            try:
                at = next(local_times).astimezone(UTC)
            except (StopIteration, OverflowError):
                # None within 50 years, or the next one is past 9999-12-31 (cronsim's
                # date arithmetic or the conversion to UTC overflows): no further fire time.
                return
            if at > last:
                last = at
                yield at

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire time strictly after ``after``; None if none within 50 years or
        before the end of year 9999."""
        return next(self.fire_times(after=after), None)

    def preview(self, *, after: datetime, count: int) -> list[datetime]:
        """The first ``count`` fire times strictly after ``after``; fewer if there are no more
        (none within 50 years, or the end of year 9999 comes first)."""
        times = []
        for at in self.fire_times(after=after):
            times.append(at)
            if len(times) >= count:
                break
        return times

    def latest_between(self, *, after: datetime, until: datetime) -> datetime | None:
        """The last fire time ``f`` with ``after < f <= until``; None if there is none.

        Cost is bounded whatever the gap: cronsim's reverse iteration from ``until`` gives a
        hint, and the forward iteration (whose DST semantics are the rule) walks from just
        before the hint. Only if the hint does not lead to a fire time does it walk the whole
        range from ``after``.
        """
        if until <= after:
            return None
        start = after
        hint = self._previous_hint(until)
        if hint is not None and after < hint - _SECOND:
            start = hint - _SECOND
        latest = self._last_until(start, until)
        if latest is None and start != after:
            latest = self._last_until(after, until)
        return latest

    def _last_until(self, after: datetime, until: datetime) -> datetime | None:
        latest = None
        for at in self.fire_times(after=after):
            if at > until:
                break
            latest = at
        return latest

    def _previous_hint(self, until: datetime) -> datetime | None:
        # Reverse iteration starts one second past ``until`` (whole seconds) and ticks back
        # first, so the candidate is <= until. At the end of datetime's range it starts from
        # the last representable second (in UTC, else in the zone): a hint only has to be a
        # fire time <= until. None (no hint) makes the caller walk forward from ``after``.
        start = min(until.replace(microsecond=0), _LAST_SECOND - _SECOND) + _SECOND
        try:
            local_start = start.astimezone(self.zone)
        except OverflowError:
            if start.year == 1:
                return None
            local_start = _LAST_SECOND.replace(tzinfo=self.zone)
        try:
            at = next(CronSim(self.expression, local_start, reverse=True)).astimezone(UTC)
        except (StopIteration, OverflowError):
            return None
        return at if at <= until else None


@dataclass(frozen=True)
class FirePlan:
    """What one fire pass does for a schedule.

    ``fire_times``: to enqueue, ascending. ``next_watermark``: the first fire time not handled
    (None: the schedule has no later fire time). ``skipped``: the first and last fire times
    dropped by the catch-up policy, or None.
    """

    fire_times: list[datetime]
    next_watermark: datetime | None
    skipped: tuple[datetime, datetime] | None = None


def catch_up_plan(*, spec: CronSpec, policy: str, watermark: datetime, now: datetime,
                  max_fires: int, skip_grace: timedelta) -> FirePlan:
    """Plan the fires of a schedule whose watermark (first fire time not yet enqueued) is due.

    Due fire times are those ``f`` with ``watermark <= f <= now``. By policy:

    * ``all``: every due time, oldest first, at most ``max_fires``; the watermark moves to the
      next unhandled time (still due if the cap cut the list: the next pass continues).
    * ``one``: only the latest due time; earlier ones are skipped.
    * ``skip``: the latest due time only if ``now - f <= skip_grace`` (a beat that is merely
      late), else nothing; every other due time is skipped.

    For ``one`` and ``skip`` the watermark moves to the first fire time after ``now``.

    Args:
        watermark, now: aware datetimes. ``max_fires`` >= 1. ``skip_grace``: non-negative.
    """
    earliest = watermark - timedelta(microseconds=1)  # fire times are >= watermark
    if policy == CatchUpPolicy.ALL:
        times: list[datetime] = []
        for at in spec.fire_times(after=earliest):
            if at > now or len(times) >= max_fires:
                return FirePlan(times, at)
            times.append(at)
        return FirePlan(times, None)
    latest = spec.latest_between(after=earliest, until=now)
    upcoming = spec.next_after(now)
    if latest is None:
        return FirePlan([], upcoming)
    fire = [latest]
    if policy == CatchUpPolicy.SKIP and now - latest > skip_grace:
        fire = []
    skipped_last = latest if not fire else spec.latest_between(
        after=earliest, until=latest - timedelta(microseconds=1))
    skipped = (watermark, skipped_last) if skipped_last is not None else None
    return FirePlan(fire, upcoming, skipped)
