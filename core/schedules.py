"""Schedule models as users submit them, and their one compilation into a Temporal ScheduleSpec.

Cron expressions are parsed and compiled by core/cron.py; this module adds the time zone, the window
(start_at, end_at), jitter, the DST instants after spring-forward gaps, and the filter that keeps
`next_runs` truthful about the repeated fall-back fires that runs skip.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError
from temporalio.client import ScheduleCalendarSpec, ScheduleIntervalSpec, ScheduleRange, ScheduleSpec

from core.config import Settings
from core.cron import (
    FIRST_YEAR,
    LAST_YEAR,
    CronError,
    CronExpression,
    Dialect,
    dst_gap_calendars,
    is_repeated_fire,
    numbering_warnings,
    parse_cron,
)
from core.errors import Invalid

# How far ahead the extra after-gap instants are written; reconcile renews them (DESIGN.md).
DST_HORIZON = timedelta(days=2 * 366)
# A one-time run_at may lie this far in the past (clock skew, a slow client) and still runs at once.
RUN_AT_GRACE = timedelta(seconds=60)
_LIMIT = "CHRONOS_MIN_FIRE_SPACING_SECONDS"  # the setting behind the spacing refusals
# The last instant datetime can hold: interval fire times stop before it.
_LAST_INSTANT = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()


class _Window(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    start_at: AwareDatetime | None = None
    end_at: AwareDatetime | None = None
    jitter_seconds: int = Field(default=0, ge=0, le=24 * 3600)

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
    run_at: AwareDatetime

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

    @field_validator("timezone")
    @classmethod
    def _valid_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise PydanticCustomError("timezone", "unknown IANA time zone '{zone}'", {"zone": value}) from exc
        return value

    @property
    def expression(self) -> CronExpression:
        return parse_cron(self.cron, self.dialect)


class IntervalMode(StrEnum):
    """How an interval counts: from each start (a Temporal Schedule) or from each run's end (a workflow of
    its own, FixedDelayWorkflow, since a schedule cannot wait for a run to end)."""

    FIXED_RATE = "fixed_rate"
    FIXED_DELAY = "fixed_delay"


class IntervalSchedule(_Window):
    type: Literal["interval"] = "interval"
    every_seconds: int = Field(ge=1, le=366 * 24 * 3600)
    offset_seconds: int = Field(default=0, ge=0)
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
        return self

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
    )
    if isinstance(schedule, IntervalSchedule):
        spec.intervals = [
            ScheduleIntervalSpec(
                every=timedelta(seconds=schedule.every_seconds),
                offset=timedelta(seconds=schedule.offset_seconds),
            )
        ]
        return spec
    expr = schedule.expression
    spec.calendars = expr.calendars() + dst_gap_calendars(expr, schedule.timezone, now, now + DST_HORIZON)
    spec.time_zone_name = schedule.timezone
    return spec


def next_runs(
    schedule: OnceSchedule | CronSchedule | IntervalSchedule, times: Iterable[datetime], limit: int = 5
) -> list[datetime]:
    """Temporal's coming fire times, less the repeated fall-back fires that runs skip (API.md)."""
    if isinstance(schedule, CronSchedule):
        expr = schedule.expression
        times = [t for t in times if not is_repeated_fire(expr, schedule.timezone, t)]
    return [t.astimezone(UTC) for t in times][:limit]


def fire_times(
    schedule: OnceSchedule | CronSchedule | IntervalSchedule, after: datetime, count: int
) -> list[datetime]:
    """The next `count` fire times after `after` (UTC) computed here, by the rules the compiled spec gives
    Temporal: for a preview (nothing saved yet) and for lists (no describe() per listed job)."""
    if isinstance(schedule, OnceSchedule):
        at = schedule.fire_at
        return [at] if at > after else []
    start = max(after, schedule.start_at or after)
    if isinstance(schedule, CronSchedule):
        fires = schedule.expression.fire_times(schedule.timezone, start, count)
        return [f for f in fires if not schedule.end_at or f <= schedule.end_at]
    # Temporal's interval rule: epoch-aligned multiples of every_seconds plus offset, inside the window.
    every, offset = schedule.every_seconds, schedule.offset_seconds
    n = int((start.timestamp() - offset) // every) + 1
    fires = []
    while len(fires) < count and (stamp := n * every + offset) <= _LAST_INSTANT:
        fire = datetime.fromtimestamp(stamp, UTC)
        if schedule.end_at and fire > schedule.end_at:
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
    dialect, which Spring (the default) and Quartz read as different days. Computed, never stored."""
    if isinstance(schedule, CronSchedule) and schedule.dialect is None:
        return list(numbering_warnings(schedule.cron))
    return []


def _at(name: str) -> tuple[str, ...]:
    return ("body", "schedule", name)
