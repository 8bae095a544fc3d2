"""Schedule models as users submit them, and their one compilation into a Temporal ScheduleSpec.

Cron expressions are parsed and compiled by core/cron.py; this module adds the time zone, the window
(start_at, end_at), jitter, the DST instants after spring-forward gaps, and the filter that keeps
`next_runs` truthful about the repeated fall-back fires that runs skip.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import cache
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, available_timezones

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from temporalio.api.schedule.v1 import ScheduleSpec as ScheduleSpecProto
from temporalio.client import ScheduleCalendarSpec, ScheduleIntervalSpec, ScheduleRange, ScheduleSpec

from core.config import Settings
from core.cron import (
    AFTER_GAP,
    CRON_CONVENTION,
    FIRST_YEAR,
    LAST_YEAR,
    CronError,
    CronExpression,
    Dialect,
    DstRule,
    Gap,
    Repeat,
    dst_gap_calendars,
    is_repeated_fire,
    numbering_warnings,
    occurrences_lost,
    parse_cron,
)
from core.errors import Invalid
from core.exclusions import HOLIDAY_YEARS, holidays_of, region_error, skip_calendars

# How far ahead the extra after-gap instants are written; reconcile renews them (DESIGN.md).
DST_HORIZON = timedelta(days=2 * 366)
# A one-time run_at may lie this far in the past (clock skew, a slow client) and still runs at once.
RUN_AT_GRACE = timedelta(seconds=60)
_LIMIT = "CHRONOS_MIN_FIRE_SPACING_SECONDS"  # the setting behind the spacing refusals
# The last instant datetime can hold: interval fire times stop before it.
_LAST_INSTANT = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


@cache
def _iana_zones() -> frozenset[str]:
    return frozenset(available_timezones() - {"localtime"})


def known_zone(name: str) -> bool:
    """A zone of the IANA database. ZoneInfo also opens `localtime` (the zone of whichever machine reads
    it: the API's, the worker's and the Temporal server's may differ), `posixrules`, and the `posix/` and
    `right/` copies of every zone (the latter count leap seconds, which Temporal does not)."""
    return name in _iana_zones()


def _zone(value: str) -> str:
    if not known_zone(value):
        raise PydanticCustomError("timezone", "unknown IANA time zone '{zone}'", {"zone": value})
    return value


class Exclude(BaseModel):
    """Whole local days on which a recurring schedule does not fire (Quartz's HolidayCalendar): given
    dates, and the public holidays of a country or subdivision (`US`, `DE-BY`) of the `holidays` package."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dates: list[date] = Field(default_factory=list, max_length=1000, exclude_if=lambda value: not value)
    holidays: str | None = Field(
        default=None,
        max_length=40,
        exclude_if=lambda value: value is None,
        description="A country (ISO 3166-1 alpha-2, `US`) or `CC-SUBDIV` (`DE-BY`) code of the holidays "
        "package: its public holidays are skipped",
    )

    @field_validator("dates")
    @classmethod
    def _dates_in_span(cls, value: list[date]) -> list[date]:
        for day in value:
            if not FIRST_YEAR <= day.year <= LAST_YEAR:
                span = {"day": day.isoformat(), "first": FIRST_YEAR, "last": LAST_YEAR}
                raise PydanticCustomError("dates", "{day} must lie in the years {first} to {last}", span)
        return sorted(set(value))

    @field_validator("holidays")
    @classmethod
    def _known_region(cls, value: str | None) -> str | None:
        if value is not None and (reason := region_error(value.upper())):
            raise PydanticCustomError("holidays", "{reason}", {"reason": reason})
        return value.upper() if value else None

    def day_name(self, day: date) -> str | None:
        """Why `day` is excluded ("Christmas Day", "excluded date"), or None when it is not (never outside
        FIRST_YEAR..LAST_YEAR, the years anything is scheduled in)."""
        if not FIRST_YEAR <= day.year <= LAST_YEAR:
            return None
        holiday = holidays_of(self.holidays, day.year).get(day) if self.holidays else None
        given = "excluded date" if day in self.dates else None
        return "; ".join(name for name in (holiday, given) if name) or None


class Dst(BaseModel):
    """What a fixed-time cron does on DST days (core.cron.DstRule); the default is the cron convention."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    gap: Gap = Field(
        default="shift",
        description="A time a spring-forward skips: `shift` runs it at the first instant after the gap, "
        "`skip` does not run it that day",
    )
    repeat: Repeat = Field(
        default="first",
        description="A time a fall-back repeats: run its `first` occurrence, its `second`, or `both`",
    )

    @property
    def rule(self) -> DstRule:
        return DstRule(self.gap, self.repeat)


def _has_utc_time(at: datetime) -> datetime:
    """The time as given, if it has a UTC equivalent: year 1 at +14:00 or year 9999 at -14:00 has none,
    and converting it later was a 500."""
    try:
        at.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError("datetime_range", "has no UTC time within the years 1 to 9999") from None
    return at


# Every time a client sends (a schedule's bounds, a run_at, a backfill's range, a preview's start).
Instant = Annotated[AwareDatetime, AfterValidator(_has_utc_time)]


class _Window(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    start_at: Instant | None = None
    end_at: Instant | None = None
    jitter_seconds: int = Field(default=0, ge=0, le=24 * 3600)
    exclude: Exclude | None = Field(default=None, exclude_if=lambda value: value is None)

    @model_validator(mode="after")
    def _window_order(self) -> _Window:
        if self.start_at and self.end_at and self.end_at <= self.start_at:
            raise PydanticCustomError("window", "end_at must be after start_at")
        return self


class ImmediateSchedule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["immediate"] = "immediate"


class OnceSchedule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    type: Literal["once"] = "once"
    run_at: Instant

    @property
    def fire_at(self) -> datetime:
        """When the run fires (UTC): run_at rounded up to the whole second, since Temporal calendars have
        second precision and a one-time job must never run before its run_at. The spec, the listed fire
        times and the backfill of a just-passed run_at all use this."""
        return _whole_second_up(self.run_at).astimezone(UTC)


def _whole_second_up(at: datetime) -> datetime:
    return at if not at.microsecond else at.replace(microsecond=0) + timedelta(seconds=1)


class CronSchedule(_Window):
    type: Literal["cron"] = "cron"
    cron: str = Field(max_length=500)
    timezone: str = "UTC"
    dialect: Dialect | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="How to read `cron`: `posix` (5 fields), `spring` (6 fields, day of week 0 or 7 = "
        "Sunday, 1 = Monday) or `quartz` (6 or 7 fields, day of week 1 = Sunday .. 7 = Saturday). "
        "Absent: the field count decides (5 POSIX, 6 Spring, 7 Quartz).",
    )

    @model_validator(mode="after")
    def _valid_cron(self) -> CronSchedule:
        """The expression read in its dialect; a dialect that does not fit the field count names `dialect`."""
        try:
            parse_cron(self.cron, self.dialect)
        except CronError as exc:
            where = "dialect" if exc.field == "dialect" else "cron"
            reason = exc.reason if where == "dialect" else str(exc)  # names the cron field: "hour: ..."
            error = PydanticCustomError(where, "{reason}", {"reason": reason})
            details = InitErrorDetails(type=error, loc=(where,), input=getattr(self, where))
            raise ValidationError.from_exception_data(type(self).__name__, [details]) from exc
        return self

    dst: Dst | None = Field(default=None, exclude_if=lambda value: value is None)

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        return _zone(value)

    @property
    def expression(self) -> CronExpression:
        return parse_cron(self.cron, self.dialect)

    @property
    def zone(self) -> str:
        """The zone the expression and the excluded days are read in."""
        return self.timezone

    @property
    def dst_rule(self) -> DstRule:
        return self.dst.rule if self.dst else CRON_CONVENTION


class IntervalMode(StrEnum):
    """How an interval counts: from each start (a Temporal Schedule) or from each run's end (a workflow of
    its own, FixedDelayWorkflow, since a schedule cannot wait for a run to end)."""

    FIXED_RATE = "fixed_rate"
    FIXED_DELAY = "fixed_delay"


class IntervalSchedule(_Window):
    type: Literal["interval"] = "interval"
    every_seconds: int = Field(ge=1, le=366 * 24 * 3600)
    offset_seconds: int = Field(default=0, ge=0)
    timezone: str | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="The zone whose local days `exclude` names (fires stay epoch-aligned); absent: UTC",
    )

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str | None) -> str | None:
        return None if value is None else _zone(value)

    mode: IntervalMode = Field(
        default=IntervalMode.FIXED_RATE,
        description="`fixed_rate`: a run every `every_seconds` on the clock (epoch-aligned, plus "
        "`offset_seconds`), whatever the runs take; `fixed_delay`: the next run starts `every_seconds` "
        "after the previous run ends, so runs never overlap",
    )

    @model_validator(mode="after")
    def _offset_below_period(self) -> IntervalSchedule:
        if self.offset_seconds >= self.every_seconds:
            raise PydanticCustomError("offset", "offset_seconds must be below every_seconds")
        if self.offset_seconds and self.fixed_delay:
            error = PydanticCustomError("offset", "offset_seconds applies to mode fixed_rate only")
            details = InitErrorDetails(type=error, loc=("offset_seconds",), input=self.offset_seconds)
            raise ValidationError.from_exception_data(type(self).__name__, [details])
        if self.exclude is not None and self.fixed_delay:
            # Excluded days are skip calendars of a Temporal Schedule, which a fixed-delay job does not have.
            error = PydanticCustomError("exclude", "exclude applies to mode fixed_rate only")
            details = InitErrorDetails(type=error, loc=("exclude",), input=self.exclude)
            raise ValidationError.from_exception_data(type(self).__name__, [details])
        return self

    @property
    def zone(self) -> str:
        """The zone whose local days `exclude` names."""
        return self.timezone or "UTC"

    @property
    def fixed_delay(self) -> bool:
        return self.mode == IntervalMode.FIXED_DELAY


Schedule = Annotated[
    ImmediateSchedule | OnceSchedule | CronSchedule | IntervalSchedule, Field(discriminator="type")
]


def temporal_spec(schedule: OnceSchedule | CronSchedule | IntervalSchedule, now: datetime) -> ScheduleSpec:
    """The Temporal ScheduleSpec for a one-time or recurring schedule (immediate jobs have none)."""
    if isinstance(schedule, OnceSchedule):
        at = schedule.fire_at
        one = ScheduleCalendarSpec(
            second=[ScheduleRange(at.second)],
            minute=[ScheduleRange(at.minute)],
            hour=[ScheduleRange(at.hour)],
            day_of_month=[ScheduleRange(at.day)],
            month=[ScheduleRange(at.month)],
            year=[ScheduleRange(at.year)],
        )
        return ScheduleSpec(calendars=[one], time_zone_name="UTC")
    spec = ScheduleSpec(
        start_at=schedule.start_at,
        end_at=schedule.end_at,
        jitter=timedelta(seconds=schedule.jitter_seconds) if schedule.jitter_seconds else None,
        skip=_skip_calendars(schedule, now),
        time_zone_name=schedule.zone,
    )
    if isinstance(schedule, IntervalSchedule):
        spec.intervals = [
            ScheduleIntervalSpec(
                every=timedelta(seconds=schedule.every_seconds),
                offset=timedelta(seconds=schedule.offset_seconds),
            )
        ]
        return spec
    expr, zone = schedule.expression, schedule.timezone
    spec.calendars = expr.calendars() + dst_gap_calendars(
        expr, zone, now, now + DST_HORIZON, schedule.dst_rule
    )
    return spec


def _skip_calendars(schedule: CronSchedule | IntervalSchedule, now: datetime) -> list[ScheduleCalendarSpec]:
    """The excluded days as skip calendars: the given dates from this year on, and the holidays of this
    year and the next HOLIDAY_YEARS (the reconcile pass renews them when the years move on)."""
    exclude = schedule.exclude
    if exclude is None:
        return []
    this_year = now.astimezone(ZoneInfo(schedule.zone)).year
    calendars = skip_calendars([d for d in exclude.dates if d.year >= this_year], "excluded dates")
    if exclude.holidays:
        years = range(this_year, min(this_year + HOLIDAY_YEARS, LAST_YEAR) + 1)
        days = [day for year in years for day in holidays_of(exclude.holidays, year)]
        calendars += skip_calendars(days, holiday_comment(exclude.holidays, years))
    return calendars


def holiday_comment(region: str, years: range) -> str:
    """Names the holidays a spec lists and their years: reconcile compares it with a fresh spec's."""
    return f"holidays {region} {years.start}-{years.stop - 1}"


def renewal_due(schedule: Schedule, listed: ScheduleSpec | ScheduleSpecProto, now: datetime) -> bool:
    """Is the part of a schedule's spec that lists dates ahead (holidays for HOLIDAY_YEARS, after-gap
    instants for DST_HORIZON) not what a spec built now would list? The reconcile pass renews such a
    spec in place, so a year's holidays and a coming gap are always in it (a few times a year a job).
    `listed` may be the spec as Temporal's listing sends it: the pass reads that without the SDK's
    conversion, which was most of its CPU with thousands of schedules (docs/bench.md)."""
    if not isinstance(schedule, CronSchedule | IntervalSchedule):
        return False
    return _dated_marks(listed) != _dated_marks(temporal_spec(schedule, now))


def _dated_marks(spec: ScheduleSpec | ScheduleSpecProto) -> tuple[list[str], list[tuple[int, ...]]]:
    skip, calendars = (
        (spec.skip, spec.calendars)
        if isinstance(spec, ScheduleSpec)
        else (spec.exclude_structured_calendar, spec.structured_calendar)
    )
    holidays = sorted(c.comment for c in skip if c.comment and c.comment.startswith("holidays "))
    gaps = sorted(
        tuple(getattr(c, name)[0].start for name in ("year", "month", "day_of_month", "hour", "minute"))
        for c in calendars
        if c.comment and c.comment.endswith(AFTER_GAP) and c.year
    )
    return holidays, gaps


def next_runs(
    schedule: OnceSchedule | CronSchedule | IntervalSchedule, times: Iterable[datetime], limit: int = 5
) -> list[datetime]:
    """Temporal's coming fire times, less the DST fires that runs skip (API.md, `is_repeated_fire`)."""
    if isinstance(schedule, CronSchedule):
        expr, rule = schedule.expression, schedule.dst_rule
        times = [t for t in times if not is_repeated_fire(expr, schedule.timezone, t, rule)]
    return [t.astimezone(UTC) for t in times][:limit]


def fire_times(
    schedule: OnceSchedule | CronSchedule | IntervalSchedule,
    after: datetime,
    count: int,
    until: datetime | None = None,
) -> list[datetime]:
    """The next `count` fire times after `after` (UTC) computed here, by the rules the compiled spec gives
    Temporal: for a preview (nothing saved yet) and for lists (no describe() per listed job). A fire on
    an excluded day moves the search to the next local day, so a dense schedule skips a day at once.
    With `until`, none later than it, and the search ends there: reconciliation asks every job each
    minute for the fires since its last pass, and 1,000 fires of a daily cron took 5 ms to compute."""
    if isinstance(schedule, OnceSchedule):
        at = schedule.fire_at
        return [at] if at > after and (until is None or at <= until) else []
    exclude, zone = schedule.exclude, ZoneInfo(schedule.zone)
    fires: list[datetime] = []
    while len(fires) < count:
        batch = _fires_ignoring_exclude(schedule, after, count - len(fires), until)
        for fire in batch:
            day = _local_date(fire, zone) if exclude else None
            if exclude and day and exclude.day_name(day):
                after = _day_start(day + timedelta(days=1), zone) - timedelta(seconds=1)
                break
            fires.append(fire)
        else:
            break  # every fire of the batch counted: done, or no more fires
    return fires


def _local_date(at: datetime, zone: ZoneInfo) -> date | None:
    """The local day of an instant; None at the very end of year 9999 (an interval's fires run on that
    far) east of UTC, where there is no date, and no day is excluded."""
    try:
        return at.astimezone(zone).date()
    except OverflowError:
        return None


_AFTER_LAST_YEAR = datetime(LAST_YEAR + 1, 1, 2, tzinfo=UTC)


def _day_start(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(), zone).astimezone(UTC)


def _fires_ignoring_exclude(
    schedule: CronSchedule | IntervalSchedule, after: datetime, count: int, until: datetime | None = None
) -> list[datetime]:
    # Fires come strictly after `after`, but Temporal fires at start_at itself: search from just before it.
    start_at = schedule.start_at
    start = after if start_at is None or start_at <= after else start_at - timedelta(microseconds=1)
    if isinstance(schedule, CronSchedule):
        fires = schedule.expression.fire_times(schedule.timezone, start, count, schedule.dst_rule, until)
        return [f for f in fires if not schedule.end_at or f <= schedule.end_at]
    # Temporal's interval rule: epoch-aligned multiples of every_seconds plus offset, inside the window.
    every, offset = schedule.every_seconds, schedule.offset_seconds
    n = (math.floor(start.timestamp()) - offset) // every + 1  # fire times are whole seconds
    fires = []
    while len(fires) < count and (stamp := n * every + offset) <= _LAST_INSTANT:
        fire = datetime.fromtimestamp(stamp, UTC)
        if (schedule.end_at and fire > schedule.end_at) or (until and fire > until):
            break
        fires.append(fire)
        n += 1
    return fires


def is_fixed_delay(schedule: Schedule | None) -> bool:
    """Whether a schedule runs as a FixedDelayWorkflow rather than a Temporal Schedule."""
    return isinstance(schedule, IntervalSchedule) and schedule.fixed_delay


def fixed_delay_due(schedule: IntervalSchedule, last_end: datetime | None, now: datetime) -> datetime | None:
    """When a fixed-delay schedule's next run starts: `every_seconds` after the last end, at once if that
    has passed (after an outage, or for the first run), not before start_at; None past end_at."""
    due = now if last_end is None else max(now, last_end + timedelta(seconds=schedule.every_seconds))
    if schedule.start_at is not None:
        due = max(due, schedule.start_at)
    return None if schedule.end_at is not None and due > schedule.end_at else due.astimezone(UTC)


def check_submitted(schedule: Schedule | None, settings: Settings, now: datetime | None = None) -> None:
    """Rules for a schedule as a user submits it (create, update, preview), beyond its model's: dates
    inside FIRST_YEAR..LAST_YEAR, a run_at not in the past, fires no closer than the configured spacing.
    Not model validators: stored schedules are read through the same model, and a job whose run_at has
    passed, or made before a limit was raised, must still list. Raises Invalid naming the field."""
    if schedule is None or isinstance(schedule, ImmediateSchedule):
        return
    now = now or datetime.now(UTC)
    dates: dict[str, datetime | None] = (
        {"run_at": _whole_second_up(schedule.run_at)}
        if isinstance(schedule, OnceSchedule)
        else {"start_at": schedule.start_at, "end_at": schedule.end_at}
    )
    for name, value in dates.items():
        if value is not None and not (
            FIRST_YEAR <= value.year <= LAST_YEAR and FIRST_YEAR <= value.astimezone(UTC).year <= LAST_YEAR
        ):
            raise Invalid(f"{name} must lie in the years {FIRST_YEAR} to {LAST_YEAR}", _at(name))
    if isinstance(schedule, OnceSchedule):
        if schedule.run_at < now - RUN_AT_GRACE:
            raise Invalid(
                f"run_at {schedule.run_at.isoformat()} is in the past; it would never run", _at("run_at")
            )
        return
    least = settings.min_fire_spacing_seconds
    if isinstance(schedule, IntervalSchedule) and schedule.every_seconds < least:
        raise Invalid(f"every_seconds must be at least {least} ({_LIMIT})", _at("every_seconds"))
    if isinstance(schedule, CronSchedule) and (spacing := schedule.expression.spacing) < least:
        raise Invalid(f"fires {spacing} s apart; at least {least} s is allowed ({_LIMIT})", _at("cron"))


def schedule_warnings(schedule: Schedule | None) -> list[str]:
    """What a schedule may mean other than the user thinks: day-of-week numbers in 6 fields without a
    dialect, which Spring (the default) and Quartz read as different days; a `dst` rule on times that
    run by elapsed time, which it does not change. Computed, never stored."""
    if not isinstance(schedule, CronSchedule):
        return []
    warnings = list(numbering_warnings(schedule.cron)) if schedule.dialect is None else []
    if schedule.dst and not schedule.expression.fixed_time:
        warnings.append(
            "dst applies to fixed times (single hours, minutes and seconds, or lists of them); this "
            "expression runs by elapsed time: a time in a gap does not happen, a repeated one happens twice"
        )
    if schedule.dst:
        now, zone = datetime.now(UTC), schedule.timezone
        lost = occurrences_lost(schedule.expression, zone, now, now + DST_HORIZON, schedule.dst_rule)
        warnings.extend(
            f"{wall:%Y-%m-%d %H:%M:%S} happens twice in {zone} and Temporal does not fire its {occurrence} "
            f"occurrence (docs/cron.md): repeat {schedule.dst.repeat!r} runs the one it fires"
            for wall, occurrence in lost[:4]
        )
    return warnings


_GAP_WORDS = {"shift": "times in a DST gap run right after it", "skip": "times in a DST gap do not run"}
_REPEAT_WORDS = {
    "first": "repeated times run once, at their first occurrence",
    "second": "repeated times run once, at their second occurrence",
    "both": "repeated times run at both occurrences",
}


def calendar_notes(schedule: CronSchedule | IntervalSchedule) -> str:
    """The preview's words for `exclude` and a `dst` rule: ", except on US holidays and 2 dates; ..."."""
    notes = ""
    if exclude := schedule.exclude:
        parts = [f"{exclude.holidays} public holidays"] if exclude.holidays else []
        if exclude.dates:
            parts.append(f"{len(exclude.dates)} date{'s' if len(exclude.dates) > 1 else ''}")
        notes += f", except on {' and '.join(parts)} ({schedule.zone} days)" if parts else ""
    if isinstance(schedule, CronSchedule) and schedule.dst:
        notes += f"; {_GAP_WORDS[schedule.dst.gap]}, {_REPEAT_WORDS[schedule.dst.repeat]}"
    return notes


# The most excluded days an answer names.
SKIPPED_SHOWN = 20


def skipped_days(schedule: Schedule | None, after: datetime, until: datetime | None) -> list[str]:
    """The excluded local days from `after` through `until` on which the schedule would have fired,
    named ("2027-12-25 Christmas Day"): the preview and job answers say which fires the exclusion ate."""
    if not isinstance(schedule, CronSchedule | IntervalSchedule) or not schedule.exclude or not until:
        return []
    exclude, zone = schedule.exclude, ZoneInfo(schedule.zone)
    first = max(min(after, _AFTER_LAST_YEAR).astimezone(zone).date(), date(FIRST_YEAR, 1, 1))
    last = min(min(until, _AFTER_LAST_YEAR).astimezone(zone).date(), date(LAST_YEAR, 12, 31))
    candidates = {d for d in exclude.dates if first <= d <= last}
    for year in range(first.year, last.year + 1) if exclude.holidays else ():
        candidates.update(d for d in holidays_of(exclude.holidays or "", year) if first <= d <= last)
    named: list[str] = []
    for day in sorted(candidates):
        start, end = _day_start(day, zone), _day_start(day + timedelta(days=1), zone)
        fire = _fires_ignoring_exclude(schedule, max(after, start - timedelta(seconds=1)), 1, end)
        if fire and fire[0] < end:
            named.append(f"{day.isoformat()} {exclude.day_name(day)}")
        if len(named) == SKIPPED_SHOWN:
            break
    return named


def _at(name: str) -> tuple[str, ...]:
    return ("body", "schedule", name)
