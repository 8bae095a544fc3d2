"""Every cron dialect Chronos accepts, compiled to Temporal calendar specs (never Temporal's cron parser).

Temporal reads a 6-field cron string as year-last, knows no `?`, `L`, `W` or `#`, and ANDs day-of-month
with day-of-week. So this module parses the dialects itself and compiles each expression into
`ScheduleCalendarSpec`s, whose fields Temporal ANDs and which it ORs (docs/cron.md has the rules).
It does no I/O at import: workflow code imports it through `imports_passed_through()`.
"""

from __future__ import annotations

import calendar
import math
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property, lru_cache
from itertools import pairwise, product
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo

from temporalio.client import ScheduleCalendarSpec, ScheduleRange

Dialect = Literal["posix", "spring", "quartz"]
Gap = Literal["shift", "skip"]
Repeat = Literal["first", "second", "both"]


@dataclass(frozen=True)
class DstRule:
    """What a fixed-time expression does on DST days: a time in a spring-forward gap runs at the first
    instant after it (`shift`) or not at all (`skip`); a time a fall-back repeats runs at its `first`
    occurrence, its `second`, or `both`. The default is the cron convention (docs/cron.md)."""

    gap: Gap = "shift"
    repeat: Repeat = "first"


CRON_CONVENTION = DstRule()


class CronError(ValueError):
    """An invalid expression: `field` names the part that is wrong ("hour", "expression"), `reason` why."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


# ---------------------------------------------------------------------------------------------------------
# Field kinds

_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")


@dataclass(frozen=True)
class _Kind:
    """What one field accepts: its bounds, its names and whether a reversed range wraps around."""

    name: str
    low: int
    high: int
    names: dict[str, int] = field(default_factory=dict)
    cyclic: bool = True

    @property
    def size(self) -> int:
        return self.high - self.low + 1


_SECOND = _Kind("second", 0, 59)
_MINUTE = _Kind("minute", 0, 59)
_HOUR = _Kind("hour", 0, 23)
_DOM = _Kind("day_of_month", 1, 31, cyclic=False)
_MONTH = _Kind("month", 1, 12, {n: i + 1 for i, n in enumerate(_MONTH_NAMES)})
# The years Temporal accepts and schedules: cron years, and the dates a schedule may name (core/schedules.py).
FIRST_YEAR, LAST_YEAR = 2000, 2100
_YEAR = _Kind("year", FIRST_YEAR, LAST_YEAR, cyclic=False)
# POSIX and Spring count 0 and 7 = Sunday; Quartz (7 fields, or 6 with its dialect) 1 = Sunday .. 7 = SAT.
_DOW_SUNDAY0 = _Kind("day_of_week", 0, 7, {n: i for i, n in enumerate(_DAY_NAMES)})
_DOW_SUNDAY1 = _Kind("day_of_week", 1, 7, {n: i + 1 for i, n in enumerate(_DAY_NAMES)})

# Leap-year-dependent days (`L` in February) list their years over the same span.
_YEARS = frozenset(range(_YEAR.low, _YEAR.high + 1))
_LEAP_YEARS = frozenset(y for y in _YEARS if calendar.isleap(y))
_ALL_MONTHS = frozenset(range(1, 13))
_ALL_DAYS = frozenset(range(1, 32))
_ALL_WEEKDAYS = frozenset(range(7))  # Temporal's numbering: 0 = Sunday
_WORKDAYS = frozenset(range(1, 6))
_MONDAY, _FRIDAY = 1, 5
# (months, years or None for all, length): the month groups that `L`, `W` and `5L` depend on.
_MONTH_LENGTHS: tuple[tuple[frozenset[int], frozenset[int] | None, int], ...] = (
    (frozenset({1, 3, 5, 7, 8, 10, 12}), None, 31),
    (frozenset({4, 6, 9, 11}), None, 30),
    (frozenset({2}), _LEAP_YEARS, 29),
    (frozenset({2}), _YEARS - _LEAP_YEARS, 28),
)

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

# ---------------------------------------------------------------------------------------------------------
# Parsed items: one per comma-separated part of a field


@dataclass(frozen=True)
class _Span:
    """`*`, `v`, `a-b`, `*/s`, `a/s`, `a-b/s`: plain values (for day of week already in 0 = Sunday)."""

    values: frozenset[int]
    low: int
    high: int
    step: int
    star: bool

    @property
    def single(self) -> bool:
        return not self.star and self.low == self.high and self.step == 1


@dataclass(frozen=True)
class _LastDay:
    """`L` or `L-n`: the last day of the month, or n days before it."""

    offset: int


@dataclass(frozen=True)
class _NearestWeekday:
    """`15W` (day 15) or `LW` (day None: the last day): the Mon-Fri closest to it inside the month."""

    day: int | None


@dataclass(frozen=True)
class _NthWeekday:
    """`5#3`: the third Friday."""

    weekday: int
    nth: int


@dataclass(frozen=True)
class _LastWeekday:
    """`5L`: the last Friday."""

    weekday: int


_DayItem = _Span | _LastDay | _NearestWeekday | _NthWeekday | _LastWeekday
_Item = TypeVar("_Item", _Span, _DayItem)

_NUMBER = r"\d+|[A-Z]+"
_SPAN_RE = re.compile(rf"(?:(?P<star>\*)|(?P<a>{_NUMBER})(?:-(?P<b>{_NUMBER}))?)(?:/(?P<step>[^/]*))?")
_LAST_DAY_RE = re.compile(r"L(?:-(?P<offset>\d+))?")
_NEAREST_RE = re.compile(r"(?P<day>\d+|L)W")
_NTH_RE = re.compile(rf"(?P<day>{_NUMBER})#(?P<nth>\d+)")
_LAST_WEEKDAY_RE = re.compile(rf"(?P<day>\d+|{'|'.join(_DAY_NAMES)})L")
_SPECIAL_RE = re.compile(r"[LW#]")


def _between(low: int, high: int) -> str:
    return f"{low}\N{EN DASH}{high}"


def _value(kind: _Kind, text: str) -> int:
    if text.isdigit():
        number = int(text)
    elif text in kind.names:
        number = kind.names[text]
    elif text.isalpha() and kind.names:
        raise CronError(kind.name, f"unknown name {text!r}; use {'/'.join(kind.names)}")
    else:
        raise CronError(kind.name, f"{text!r} is not a number")
    if not kind.low <= number <= kind.high:
        raise CronError(kind.name, f"{number} is out of range {_between(kind.low, kind.high)}")
    return number


def _weekday(kind: _Kind, number: int) -> int:
    """A day-of-week value in Temporal's numbering (0 = Sunday)."""
    return number - 1 if kind.low == 1 else number % 7


def _span(kind: _Kind, text: str) -> _Span:
    named = any(name in text for name in kind.names)  # JUL holds an L
    if _SPECIAL_RE.search(text) and not named and kind not in (_DOM, _DOW_SUNDAY0, _DOW_SUNDAY1):
        raise CronError(kind.name, f"{text!r}: L, W and # belong in day_of_month or day_of_week")
    match = _SPAN_RE.fullmatch(text)
    if match is None:
        raise CronError(kind.name, f"{text!r} is not a value, range or step")
    star, a, b, step_text = match["star"], match["a"], match["b"], match["step"]
    step = _step(kind, step_text)
    is_dow = kind in (_DOW_SUNDAY0, _DOW_SUNDAY1)
    top = 6 if kind is _DOW_SUNDAY0 else kind.high  # where `*` and Quartz's `5/15` end
    if star:
        low, high = kind.low, top
    else:
        low = _value(kind, a)
        high = _value(kind, b) if b is not None else top if step_text is not None else low
    if is_dow:
        # A range may end on Sunday as 7 (`5-7`); otherwise weekdays count 0 = Sunday from here on.
        sunday_end = kind is _DOW_SUNDAY0 and b is not None and high == 7
        low, high = _weekday(kind, low), high if sunday_end else _weekday(kind, high)
    if low <= high:
        sequence = list(range(low, high + 1))
    elif kind.cyclic:
        first, last = (0, 6) if is_dow else (kind.low, kind.high)
        sequence = [*range(low, last + 1), *range(first, high + 1)]
    else:
        raise CronError(kind.name, f"range {a}-{b} is reversed")
    values = frozenset(v % 7 if is_dow else v for v in sequence[::step])
    return _Span(values, low, high, step, star is not None)


def _step(kind: _Kind, text: str | None) -> int:
    if text is None:
        return 1
    if not text.isdigit():
        raise CronError(kind.name, f"step {text!r} is not a number")
    step = int(text)
    size = 7 if kind in (_DOW_SUNDAY0, _DOW_SUNDAY1) else kind.size
    if not 1 <= step <= size:
        raise CronError(kind.name, f"step {step} is out of range {_between(1, size)}")
    return step


def _day_of_month_item(text: str) -> _DayItem:
    if match := _LAST_DAY_RE.fullmatch(text):
        offset = int(match["offset"] or 0)
        if offset > 30:
            raise CronError(_DOM.name, f"{text}: offset {offset} is out of range {_between(0, 30)}")
        return _LastDay(offset)
    if match := _NEAREST_RE.fullmatch(text):
        return _NearestWeekday(None if match["day"] == "L" else _value(_DOM, match["day"]))
    if "W" in text:
        raise CronError(_DOM.name, f"{text!r}: W takes one day, e.g. 15W or LW")
    if "#" in text:
        raise CronError(_DOM.name, f"{text!r}: # belongs in day_of_week, e.g. FRI#3")
    return _span(_DOM, text)


def _day_of_week_item(kind: _Kind, text: str) -> _DayItem:
    if match := _NTH_RE.fullmatch(text):
        nth = int(match["nth"])
        if not 1 <= nth <= 5:
            raise CronError(kind.name, f"{text}: occurrence {nth} is out of range {_between(1, 5)}")
        return _NthWeekday(_weekday(kind, _value(kind, match["day"])), nth)
    if match := _LAST_WEEKDAY_RE.fullmatch(text):
        return _LastWeekday(_weekday(kind, _value(kind, match["day"])))
    if text == "L":
        raise CronError(kind.name, "L alone is ambiguous here; write the last weekday, e.g. 5L or FRIL")
    if "W" in text and not any(name in text for name in kind.names):
        raise CronError(kind.name, f"{text!r}: W belongs in day_of_month, e.g. 15W")
    return _span(kind, text)


def _items(kind: _Kind, text: str, parse: Callable[[str], _Item]) -> tuple[_Item, ...]:
    parts = text.split(",")
    if "" in parts:
        raise CronError(kind.name, f"{text!r} has an empty list item")
    if "?" in parts and len(parts) > 1:
        raise CronError(kind.name, "'?' must stand alone")
    return tuple(parse(part) for part in parts)


def _plain(kind: _Kind, text: str) -> tuple[_Span, ...]:
    if "?" in text:
        raise CronError(kind.name, "'?' is only allowed in day_of_month and day_of_week")
    return _items(kind, text, lambda part: _span(kind, part))


def _values(items: Iterable[_Span]) -> frozenset[int]:
    return frozenset().union(*(item.values for item in items))


# ---------------------------------------------------------------------------------------------------------
# Day patterns: what Temporal can AND in one calendar, for the day part of an expression


@dataclass(frozen=True)
class _Days:
    """Days matching all of: month, day of month, weekday (0 = Sunday), and year (None: every year)."""

    months: frozenset[int] = _ALL_MONTHS
    days: frozenset[int] = _ALL_DAYS
    weekdays: frozenset[int] = _ALL_WEEKDAYS
    years: frozenset[int] | None = None

    def __and__(self, other: _Days) -> _Days:
        years = (
            other.years
            if self.years is None
            else self.years
            if other.years is None
            else self.years & other.years
        )
        return _Days(
            self.months & other.months, self.days & other.days, self.weekdays & other.weekdays, years
        )

    @property
    def fires(self) -> bool:
        """Some real date matches: not `30 2 *`, nor a Friday the 13th in years that have none."""
        if self.years is None:  # every weekday meets every date within 28 years
            return any(
                d <= (29 if m == 2 else calendar.monthrange(2001, m)[1])
                for m in self.months
                for d in self.days
            )
        return any(
            d <= calendar.monthrange(y, m)[1] and date(y, m, d).isoweekday() % 7 in self.weekdays
            for y in sorted(self.years)
            for m in self.months
            for d in self.days
        )

    def matches(self, day: date) -> bool:
        return (
            day.month in self.months
            and day.day in self.days
            and day.isoweekday() % 7 in self.weekdays
            and (self.years is None or day.year in self.years)
        )

    @cached_property
    def _sorted(self) -> tuple[list[int], list[int]]:
        return sorted(self.months), sorted(self.days)

    def first_from(self, day: date) -> date | None:
        """The first matching day on or after `day` through LAST_YEAR, trying only the months and days
        the pattern names: a leap day or one year late in the span costs a few steps per year, not 365."""
        months, days = self._sorted
        year, month, first = day.year, day.month, day.day
        while year <= LAST_YEAR:
            if self.years is None or year in self.years:
                for m in months[bisect_left(months, month) :]:
                    length = calendar.monthrange(year, m)[1]
                    for d in days[bisect_left(days, first if m == month else 1) :]:
                        if d > length:
                            break
                        if (found := date(year, m, d)).isoweekday() % 7 in self.weekdays:
                            return found
            year, month, first = year + 1, 1, 1
        return None


def _item_days(item: _DayItem, *, on_day_of_week: bool) -> list[_Days]:
    """The patterns one day item stands for; `L`, `W` and `5L` need one per month length."""
    match item:
        case _Span(values=values):
            return [_Days(weekdays=values) if on_day_of_week else _Days(days=values)]
        case _NthWeekday(weekday=weekday, nth=nth):
            return [
                _Days(days=frozenset(range(7 * nth - 6, min(7 * nth, 31) + 1)), weekdays=frozenset({weekday}))
            ]
        case _LastDay(offset=offset):
            return [
                _Days(months, frozenset({length - offset}), years=years)
                for months, years, length in _MONTH_LENGTHS
                if length - offset >= 1
            ]
        case _LastWeekday(weekday=weekday):
            return [
                _Days(months, frozenset(range(length - 6, length + 1)), frozenset({weekday}), years)
                for months, years, length in _MONTH_LENGTHS
            ]
        case _NearestWeekday(day=day):
            return [
                days
                for months, years, length in _MONTH_LENGTHS
                for days in _nearest_weekday(
                    months, years, length, length if day is None else min(day, length)
                )
            ]
    raise AssertionError(item)


def _nearest_weekday(
    months: frozenset[int], years: frozenset[int] | None, length: int, day: int
) -> list[_Days]:
    """Day `day` on Mon-Fri; if it is a Saturday the Friday before, if a Sunday the Monday after, but
    never outside the month: a Saturday the 1st moves to Monday the 3rd, a Sunday the last to Friday."""

    def on(day_of_month: int, weekdays: frozenset[int]) -> _Days:
        return _Days(months, frozenset({day_of_month}), weekdays, years)

    saturday = on(day - 1, frozenset({_FRIDAY})) if day > 1 else on(3, frozenset({_MONDAY}))
    sunday = on(day + 1, frozenset({_MONDAY})) if day < length else on(day - 2, frozenset({_FRIDAY}))
    return [on(day, _WORKDAYS), saturday, sunday]


def _merge(patterns: list[_Days]) -> list[_Days]:
    """Union patterns that differ in one field only, so `15W` needs 3 calendars, not one per month length."""
    merged = list(dict.fromkeys(patterns))
    changed = True
    while changed:
        changed = False
        for i, j in product(range(len(merged)), repeat=2):
            if i < j and (union := _union(merged[i], merged[j])) is not None:
                merged[i] = union
                del merged[j]
                changed = True
                break
    return merged


def _union(a: _Days, b: _Days) -> _Days | None:
    differing = [f.name for f in fields(_Days) if getattr(a, f.name) != getattr(b, f.name)]
    if len(differing) != 1:
        return None
    name = differing[0]
    if name == "years":
        if a.years is None or b.years is None:
            return None
        years = a.years | b.years
        return replace(a, years=None if years == _YEARS else years)
    return replace(a, **{name: getattr(a, name) | getattr(b, name)})


# ---------------------------------------------------------------------------------------------------------
# Temporal ranges


def _ranges(values: Iterable[int]) -> tuple[ScheduleRange, ...]:
    """Few ranges for a set: from the smallest uncovered value, take the arithmetic run inside the set that
    covers most uncovered values (so `*/5` is one range and the non-leap years are four)."""
    pool = frozenset(values)
    left = set(pool)
    ranges: list[ScheduleRange] = []
    while left:
        first = min(left)
        best, best_count = ScheduleRange(first), 1
        for second in sorted(v for v in pool if v > first):
            step, end = second - first, second
            while end + step in pool:
                end += step
            count = len(left.intersection(range(first, end + 1, step)))
            if count > best_count:
                best, best_count = ScheduleRange(first, end, step), count
        ranges.append(best)
        left.difference_update(range(best.start, best.end + 1, best.step))
    return tuple(ranges)


# ---------------------------------------------------------------------------------------------------------
# The expression


@dataclass(frozen=True)
class _Parsed:
    seconds: tuple[_Span, ...]
    minutes: tuple[_Span, ...]
    hours: tuple[_Span, ...]
    days_of_month: tuple[_DayItem, ...]  # empty: `*` or `?`
    months: tuple[_Span, ...]
    days_of_week: tuple[_DayItem, ...]  # empty: `*` or `?`
    years: tuple[_Span, ...]  # empty: every year
    days: tuple[_Days, ...]  # the compiled day part, ORed

    @cached_property
    def clock(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Hours, minutes and seconds, each sorted: the time of day is searched field by field."""
        return tuple(sorted(_values(items)) for items in (self.hours, self.minutes, self.seconds))  # type: ignore[return-value]

    def day_matches(self, day: date) -> bool:
        return any(pattern.matches(day) for pattern in self.days)

    def next_day(self, day: date) -> date | None:
        """The first matching day on or after `day` (None after LAST_YEAR)."""
        found = [d for pattern in self.days if (d := pattern.first_from(day)) is not None]
        return min(found, default=None)

    def fires_at(self, wall: datetime) -> bool:
        hours, minutes, seconds = self.clock
        return (
            self.day_matches(wall.date())
            and wall.hour in hours
            and wall.minute in minutes
            and wall.second in seconds
        )

    def wall_times(self, first: date, last: date) -> Iterator[datetime]:
        """Every local fire time on the days first..last (only used for fixed times: a handful a day)."""
        day = first
        while day <= last:
            if self.day_matches(day):
                for second in _clock_from(self, 0):
                    yield datetime.combine(day, time()) + timedelta(seconds=second)
            day += timedelta(days=1)


def _clock_from(parsed: _Parsed, start: int) -> Iterator[int]:
    """The fire times of a day at or after `start`, as seconds since midnight, in order: the next hour,
    minute and second are looked up, so `* * * * * ?` costs one step per fire, not per second scanned."""
    if start >= _DAY:
        return
    hour, rest = divmod(max(start, 0), 3600)
    minute, second = divmod(rest, 60)
    hours, minutes, seconds = parsed.clock
    for h in hours[bisect_left(hours, hour) :]:
        for m in minutes if h > hour else minutes[bisect_left(minutes, minute) :]:
            later = h > hour or m > minute
            for s in seconds if later else seconds[bisect_left(seconds, second) :]:
                yield h * 3600 + m * 60 + s


def _closest(values: tuple[int, ...], period: int) -> int:
    """The smallest distance between neighbours of a sorted cycle of `period` units."""
    return min([b - a for a, b in pairwise(values)] + [period - values[-1] + values[0]])


@dataclass(frozen=True)
class CronExpression:
    """A parsed, valid cron expression in one of the three dialects (macros count as POSIX)."""

    source: str
    dialect: Dialect
    _parsed: _Parsed = field(repr=False, compare=False)

    def calendars(self) -> list[ScheduleCalendarSpec]:
        """The compiled calendars; Temporal ORs them and ANDs the fields within each."""
        p = self._parsed
        times = {
            "second": _ranges(_values(p.seconds)),
            "minute": _ranges(_values(p.minutes)),
            "hour": _ranges(_values(p.hours)),
        }
        return [
            ScheduleCalendarSpec(
                **times,
                day_of_month=_ranges(days.days),
                month=_ranges(days.months),
                year=() if days.years is None else _ranges(days.years),
                day_of_week=_ranges(days.weekdays),
                comment=self.source,
            )
            for days in p.days
        ]

    @cached_property
    def fixed_time(self) -> bool:
        """Seconds, minutes and hours are single values or lists of them: the DST convention applies."""
        p = self._parsed
        return all(item.single for item in (*p.seconds, *p.minutes, *p.hours))

    @property
    def spacing(self) -> int:
        """The shortest wall-clock distance between two fire times in seconds, counting a day's last time
        and the next day's first as neighbours (`0 0,23 * * *` gives an hour; a DST change can bring two
        fires closer once)."""
        hours, minutes, seconds = self._parsed.clock
        return _closest(seconds, 60 * _closest(minutes, 60 * _closest(hours, 24)))

    def names(self, wall: datetime) -> bool:
        """Does the expression name this local wall time (naive)? Not so for a fire Temporal moved."""
        return self._parsed.fires_at(wall)

    def describe(self) -> str:
        """Plain English, e.g. "at 10:15:00 on the third Friday of every month"."""
        return _describe(self)

    def fire_times(
        self,
        tz: str,
        after: datetime,
        count: int,
        dst: DstRule = CRON_CONVENTION,
        until: datetime | None = None,
    ) -> list[datetime]:
        """The next `count` fire instants (UTC) after `after` under the DST rule (the cron convention by
        default), computed here so a schedule can be previewed without creating it in Temporal. None
        before FIRST_YEAR or after LAST_YEAR, the span Temporal schedules, so any instant is a valid
        `after`. With `until`, none later than it: the search stops there instead of at `count`.

        Fixed times follow `dst`, as Temporal fires them with the extras and filter below: a gap time at
        the first instant after the gap (or not), a repeated time at the occurrences the rule keeps of
        those Temporal fires; wildcard or stepped hours run by elapsed time (no gap times, both repeats).
        Matching days are found by jumps and each day's times by field (`_clock_from`), so the cost
        follows `count`, not how dense the expression is."""
        if after >= _LATEST:
            return []
        after = max(after, _EARLIEST)
        parsed, fixed = self._parsed, self.fixed_time
        later = math.floor(after.timestamp()) + 1  # fire times are whole seconds
        fires: list[datetime] = []
        day: date | None = after.astimezone(ZoneInfo(tz)).date() - timedelta(days=1)
        while len(fires) < count and day is not None and (day := parsed.next_day(day)) is not None:
            fires.extend(_day_fires(parsed, dst if fixed else None, tz, day, later, count - len(fires)))
            if until is not None and fires and fires[-1] > until:
                break  # a later day's fires are later still
            day += timedelta(days=1)
        return [f for f in fires[:count] if until is None or f <= until]


_DAY = 24 * 3600
_EPOCH = date(1970, 1, 1)
# fire_times clamps `after` to this span, so no arithmetic on it leaves what datetime can hold.
_EARLIEST = datetime(FIRST_YEAR, 1, 1, tzinfo=UTC)
_LATEST = datetime(LAST_YEAR + 1, 1, 2, tzinfo=UTC)


@dataclass(frozen=True)
class _Stretch:
    """Part of a local day under one UTC offset: walls `low` to `high` (seconds since midnight)."""

    low: int
    high: int
    offset: int


@dataclass(frozen=True)
class _Gap:
    """Walls `low` to `high` that a spring-forward skips; fixed times in it run at `at` (the transition)."""

    low: int
    high: int
    at: int


@lru_cache(maxsize=8192)
def _local_day(tz: str, day: date) -> tuple[_Stretch | _Gap, ...]:
    """How a local day's walls map to UTC, in UTC order: stretches of one offset and the gaps between
    them. Cached per zone and day: listing many jobs asks for the same few days of the same zones."""
    zone = ZoneInfo(tz)
    midnight = (day - _EPOCH).days * _DAY  # the day's first wall, read as if it were UTC
    start, end = midnight - _DAY, midnight + 2 * _DAY  # wider than any offset
    offset = datetime.fromtimestamp(start, zone).utcoffset()
    assert offset is not None
    cuts = [(start, int(offset.total_seconds()))] + [
        (int(at.timestamp()), int(after.total_seconds()))
        for at, _, after in _transitions(
            zone, datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC)
        )
    ]
    pieces: list[_Stretch | _Gap] = []
    for (begin, before), (cut, after) in pairwise([*cuts, (end, cuts[-1][1])]):
        low, high = max(begin + before - midnight, 0), min(cut + before - midnight, _DAY)
        if low < high:
            pieces.append(_Stretch(low, high, before))
        low, high = max(cut + before - midnight, 0), min(cut + after - midnight, _DAY)
        if low < high:
            pieces.append(_Gap(low, high, cut))
    return tuple(pieces)


def _day_fires(
    parsed: _Parsed, dst: DstRule | None, tz: str, day: date, later: int, count: int
) -> list[datetime]:
    """The first `count` fire instants of a matching local day at or after `later` (a UTC timestamp),
    in order. A fixed time (`dst` given) follows its rule: in a gap it runs at the gap's end or not at
    all, and of a repeated one the occurrences `_keeps` keeps run."""
    midnight = (day - _EPOCH).days * _DAY
    pieces = _local_day(tz, day)
    stretches = [piece for piece in pieces if isinstance(piece, _Stretch)]
    found: list[int] = []
    covered = 0  # walls an earlier stretch has had (before a fall-back)
    for piece in pieces:
        if len(found) >= count:
            break
        if isinstance(piece, _Gap):
            shifted = dst is not None and dst.gap == "shift"
            if shifted and piece.at >= later and next(_clock_from(parsed, piece.low), _DAY) < piece.high:
                found.append(piece.at)
            continue
        following = stretches[stretches.index(piece) + 1 :]
        repeated_from = min((s.low for s in following), default=_DAY)  # walls a later stretch has again
        low = max(piece.low, later + piece.offset - midnight)
        for second in _clock_from(parsed, low):
            if second >= piece.high or len(found) >= count:
                break
            repeated = second < covered or second >= repeated_from
            wall = datetime.combine(day, time()) + timedelta(seconds=second)
            if dst is not None and repeated and not _keeps(parsed, tz, dst, wall, second >= repeated_from):
                continue
            at = midnight + second - piece.offset
            if not found or found[-1] != at:  # the gap's end may itself be a fire time
                found.append(at)
        covered = max(covered, piece.high)
    return [datetime.fromtimestamp(at, UTC) for at in found]


# Without a dialect the field count decides; a dialect names the counts it takes (Quartz's year is optional).
_BY_COUNT: dict[int, Dialect] = {5: "posix", 6: "spring", 7: "quartz"}
_LAYOUTS: dict[Dialect, tuple[tuple[int, ...], str]] = {
    "posix": ((5,), "POSIX cron has 5 fields (minute first)"),
    "spring": ((6,), "Spring cron has 6 fields (seconds first, no year)"),
    "quartz": ((6, 7), "Quartz cron has 6 or 7 fields (seconds first, year optional)"),
}


@lru_cache(maxsize=4096)
def parse_cron(expr: str, dialect: Dialect | None = None) -> CronExpression:
    """Parse an expression in `dialect`, or in the one its field count implies, or raise CronError naming
    the field ("dialect" when the dialect does not fit the field count). The dialect decides how day-of-week
    numbers read: Quartz counts 1 = Sunday, the others 0 or 7 = Sunday. Cached: an expression is parsed on
    every validation, schedule build and skip check."""
    source = expr.strip()
    if not source:
        raise CronError("expression", "is empty")
    # Cron is ASCII in every engine. Python's digits, spaces and upper case are Unicode ones: an Arabic-Indic
    # three read as 3, a no-break space split fields and a long s made SUN, where other engines refuse.
    if not source.isascii():
        strange = next(c for c in source if not c.isascii())
        raise CronError("expression", f"{strange!r} (U+{ord(strange):04X}): cron takes ASCII characters only")
    text = source
    macro = text.startswith("@")
    if macro:
        if text.lower() not in _MACROS:
            raise CronError("expression", f"unknown macro {text!r}; use one of {', '.join(_MACROS)}")
        if dialect == "quartz":
            raise CronError("dialect", "Quartz has no macros like @daily; write its 6 or 7 fields")
        text = _MACROS[text.lower()]  # POSIX, and Spring knows the same macros
    parts = text.upper().split()
    if len(parts) not in _BY_COUNT:
        raise CronError(
            "expression",
            f"has {len(parts)} fields; expected 5 (POSIX), 6 (seconds first) or 7 (Quartz with year)",
        )
    if dialect is None:
        dialect = _BY_COUNT[len(parts)]
    elif not macro and len(parts) not in _LAYOUTS[dialect][0]:
        raise CronError("dialect", f"{_LAYOUTS[dialect][1]}; this expression has {len(parts)}")
    if len(parts) == 5:
        parts.insert(0, "0")
    second, minute, hour, dom, month, dow = parts[:6]
    dow_kind = _DOW_SUNDAY1 if dialect == "quartz" else _DOW_SUNDAY0
    for name, value in (("day_of_month", dom), ("day_of_week", dow)):
        if dialect == "posix" and "?" in value:
            raise CronError(name, "'?' needs 6 or 7 fields; POSIX cron uses *")
    days_of_month = () if dom in ("*", "?") else _items(_DOM, dom, _day_of_month_item)
    days_of_week = (
        () if dow in ("*", "?") else _items(dow_kind, dow, lambda t: _day_of_week_item(dow_kind, t))
    )
    months = _plain(_MONTH, month)
    years = _plain(_YEAR, parts[6]) if len(parts) == 7 and parts[6] != "*" else ()
    days = _compile_days(
        days_of_month, days_of_week, dialect, _values(months), _values(years) if years else None
    )
    if not days:
        raise CronError("expression", "never fires: no date matches the day, month and year fields together")
    parsed = _Parsed(
        seconds=_plain(_SECOND, second),
        minutes=_plain(_MINUTE, minute),
        hours=_plain(_HOUR, hour),
        days_of_month=days_of_month,
        months=months,
        days_of_week=days_of_week,
        years=years,
        days=days,
    )
    return CronExpression(source, dialect, parsed)


def _compile_days(
    days_of_month: tuple[_DayItem, ...],
    days_of_week: tuple[_DayItem, ...],
    dialect: Dialect,
    months: frozenset[int],
    years: frozenset[int] | None,
) -> tuple[_Days, ...]:
    """POSIX ORs a restricted day of month with a restricted day of week; Spring (and so 6 and 7 fields
    here) ANDs them. Then the month and year fields narrow every pattern."""
    by_month = [p for item in days_of_month for p in _item_days(item, on_day_of_week=False)]
    by_week = [p for item in days_of_week for p in _item_days(item, on_day_of_week=True)]
    if not by_month or not by_week:
        patterns = by_month or by_week or [_Days()]
    elif dialect == "posix":
        patterns = by_month + by_week
    else:
        patterns = [a & b for a in by_month for b in by_week]
    narrow = _Days(months=months, years=years)
    return tuple(_merge([p & narrow for p in patterns if (p & narrow).fires]))


# ---------------------------------------------------------------------------------------------------------
# Daylight-saving time: the cron convention on top of what Temporal does (docs/cron.md)


def _transitions(
    zone: ZoneInfo, start: datetime, end: datetime
) -> Iterator[tuple[datetime, timedelta, timedelta]]:
    """(instant in UTC, offset before, offset after) of each offset change in [start, end): step six hours,
    then bisect to the second. zoneinfo has no public list of transitions."""

    def offset(at: int) -> timedelta:
        value = datetime.fromtimestamp(at, zone).utcoffset()
        assert value is not None
        return value

    t, stop = math.floor(start.timestamp()), math.ceil(end.timestamp())  # transitions fall on whole seconds
    while t < stop:
        upto = min(t + 6 * 3600, stop)
        if offset(t) != offset(upto):
            low, high = t, upto
            while high - low > 1:
                middle = (low + high) // 2
                low, high = (middle, high) if offset(middle) == offset(low) else (low, middle)
            if start.timestamp() <= high < end.timestamp():
                yield datetime.fromtimestamp(high, UTC), offset(low), offset(high)
        t = upto


@lru_cache(maxsize=1024)
def _day_transitions(tz: str, first: date, last: date) -> tuple[tuple[datetime, timedelta, timedelta], ...]:
    """The zone's transitions from the first day through the last (UTC days): scanning two years costs
    milliseconds, and every schedule of a zone made on one day asks for the same span."""
    start = datetime.combine(first, time(), UTC)
    return tuple(_transitions(ZoneInfo(tz), start, datetime.combine(last, time(), UTC) + timedelta(days=1)))


def _local(naive: datetime, zone: ZoneInfo, fold: int) -> datetime:
    return naive.replace(tzinfo=zone, fold=fold)


def _exists(naive: datetime, zone: ZoneInfo) -> bool:
    return _local(naive, zone, 0).astimezone(UTC).astimezone(zone).replace(tzinfo=None) == naive


# The comment that marks an after-gap calendar (and that reconcile looks for in a listed spec).
AFTER_GAP = "once after the DST gap"


def dst_gap_calendars(
    expr: CronExpression, tz: str, start: datetime, end: datetime, dst: DstRule = CRON_CONVENTION
) -> list[ScheduleCalendarSpec]:
    """One calendar per spring-forward gap in [start, end) that swallows a fire time of a fixed-time
    expression, at the first local instant after the gap: Temporal skips times in a gap, cron runs them
    once right after it (a 02:30 daily job in New York runs at 03:00 on the day clocks go forward).
    None under `gap: skip`."""
    if not expr.fixed_time or dst.gap == "skip":
        return []
    parsed = expr._parsed
    extras: list[ScheduleCalendarSpec] = []
    days = (start.astimezone(UTC).date(), end.astimezone(UTC).date())
    for instant, before, after in _day_transitions(tz, *days):
        if not start <= instant < end or after <= before:
            continue
        gap_start, gap_end = (instant + before).replace(tzinfo=None), (instant + after).replace(tzinfo=None)
        if any(gap_start <= t < gap_end for t in parsed.wall_times(gap_start.date(), gap_end.date())):
            extras.append(
                ScheduleCalendarSpec(
                    second=(ScheduleRange(gap_end.second),),
                    minute=(ScheduleRange(gap_end.minute),),
                    hour=(ScheduleRange(gap_end.hour),),
                    day_of_month=(ScheduleRange(gap_end.day),),
                    month=(ScheduleRange(gap_end.month),),
                    year=(ScheduleRange(gap_end.year),),
                    comment=f"{expr.source}: {AFTER_GAP}",
                )
            )
    return extras


def is_repeated_fire(
    expr: CronExpression, tz: str, fire_at: datetime, dst: DstRule = CRON_CONVENTION
) -> bool:
    """True for a Temporal fire of a fixed-time expression that Chronos skips (in `next_runs` and in the
    run itself), so that fires follow the DST rule: a time Temporal moved rather than skipped (out of
    Lord Howe's 30-minute gap, or an hour late after a fire in a repeated hour east of UTC), the instant
    after a gap under `gap: skip`, and the occurrences of a repeated time that `_keeps` drops."""
    if not expr.fixed_time:
        return False
    zone, parsed = ZoneInfo(tz), expr._parsed
    local = fire_at.astimezone(zone)
    wall = local.replace(tzinfo=None, fold=0)
    if not parsed.fires_at(wall):  # kept only as the instant after a gap, when gap times shift
        return dst.gap == "skip" or _exists(wall - timedelta(seconds=1), zone)
    first, second = (_local(wall, zone, fold).astimezone(UTC) for fold in (0, 1))
    return first != second and not _keeps(parsed, tz, dst, wall, local.fold == 0)


def _keeps(parsed: _Parsed, tz: str, dst: DstRule, wall: datetime, first_occurrence: bool) -> bool:
    """Does Chronos run this occurrence of a repeated fixed wall time? Each rule keeps its occurrence
    where Temporal fires it and else the one Temporal fires (it fires both behind UTC, one east of it:
    the second, or the first when the hour before fires too); `both` keeps whatever fires."""
    fires_first, fires_second = _temporal_occurrences(parsed, ZoneInfo(tz), wall)
    if first_occurrence:
        return fires_first and (dst.repeat != "second" or not fires_second)
    return fires_second and (dst.repeat != "first" or not fires_first)


def occurrences_lost(
    expr: CronExpression, tz: str, start: datetime, end: datetime, dst: DstRule
) -> list[tuple[datetime, str]]:
    """The repeated fixed times in [start, end) whose occurrence the rule asks for (`both`: either)
    Temporal does not fire, with the occurrence: (local wall time, "first" or "second")."""
    if not expr.fixed_time:
        return []
    zone, parsed = ZoneInfo(tz), expr._parsed
    lost: list[tuple[datetime, str]] = []
    days = (start.astimezone(UTC).date(), end.astimezone(UTC).date())
    for instant, before, after in _day_transitions(tz, *days):
        if not start <= instant < end or after >= before:
            continue
        repeat_start, repeat_end = (
            (instant + after).replace(tzinfo=None),
            (instant + before).replace(tzinfo=None),
        )
        for wall in parsed.wall_times(repeat_start.date(), repeat_end.date()):
            if not repeat_start <= wall < repeat_end:
                continue
            fires = dict(zip(("first", "second"), _temporal_occurrences(parsed, zone, wall), strict=True))
            wanted = ("first", "second") if dst.repeat == "both" else (dst.repeat,)
            lost.extend((wall, occurrence) for occurrence in wanted if not fires[occurrence])
    return lost


def _temporal_occurrences(parsed: _Parsed, zone: ZoneInfo, wall: datetime) -> tuple[bool, bool]:
    """Which occurrences of a repeated wall time Temporal fires, measured on the server: both when Go's
    `time.Date` resolves the wall to the first (behind UTC); otherwise the first when the hour before
    fires too (`_temporal_fires`), else the second."""
    first = _local(wall, zone, 0).astimezone(UTC)
    if _temporal_date(wall, zone) == first:
        return True, True
    replayed = _temporal_fires(parsed, zone, wall, first)
    return replayed, not replayed


def _temporal_date(wall: datetime, zone: ZoneInfo) -> datetime:
    """The instant Temporal (Go's `time.Date`) gives a wall time: the offset in force at the wall time
    read as UTC, unless the instant it yields has another offset. So a repeated time resolves to its
    first occurrence behind UTC and to its second ahead of it."""
    guess = wall.replace(tzinfo=UTC)
    offset = guess.astimezone(zone).utcoffset()
    assert offset is not None
    actual = (guess - offset).astimezone(zone).utcoffset()
    assert actual is not None
    return guess - actual


def _temporal_fires(parsed: _Parsed, zone: ZoneInfo, wall: datetime, first: datetime) -> bool:
    """Does Temporal fire the first occurrence of a repeated wall time? Mirrors its scheduler's
    calendar.go: either `time.Date` resolves to it, or the search runs through the hour before, finds
    the next hour two hours later, and replays that hour an hour on."""
    if _temporal_date(wall, zone) == first:
        return True
    hour_before = wall.replace(minute=0, second=0) - timedelta(hours=1)
    replayed = _temporal_date(hour_before + timedelta(hours=1), zone) - _temporal_date(hour_before, zone)
    return (
        parsed.fires_at(wall - timedelta(hours=1))
        and replayed > timedelta(hours=1)
        and _temporal_date(wall - timedelta(hours=1), zone) + timedelta(hours=1) == first
    )


# ---------------------------------------------------------------------------------------------------------
# Plain English

_MONTH_WORDS = ("January", "February", "March", "April", "May", "June", "July", "August", "September",
                "October", "November", "December")  # fmt: skip
_DAY_WORDS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
_ORDINALS = ("first", "second", "third", "fourth", "fifth")


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def _runs(values: Iterable[int], word: Callable[[int], str]) -> str:
    """Runs of three or more values read as ranges: "Monday through Friday", "1, 15 and 20 through 25"."""
    runs: list[list[int]] = []
    for v in sorted(values):
        if runs and runs[-1][-1] == v - 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    parts: list[str] = []
    for run in runs:
        parts.extend([f"{word(run[0])} through {word(run[-1])}"] if len(run) >= 3 else map(word, run))
    return _join(parts)


def _field_phrase(unit: str, items: tuple[_Span, ...]) -> str:
    if all(item.single for item in items):
        values = _values(items)
        return f"{unit}{'s' if len(values) > 1 else ''} {_runs(values, str)}"
    phrases = []
    for item in items:
        if item.star:
            phrases.append(f"every {unit}" if item.step == 1 else f"every {item.step} {unit}s")
        elif item.step > 1:
            phrases.append(f"every {item.step} {unit}s from {item.low} through {item.high}")
        else:
            phrases.append(f"{unit}s {_runs(item.values, str)}" if not item.single else f"{unit} {item.low}")
    return _join(phrases)


def _describe_time(expr: CronExpression) -> str:
    p = expr._parsed
    if expr.fixed_time and math.prod(map(len, p.clock)) <= 4:
        times = [time(h, m, s) for h, m, s in product(*p.clock)]  # sorted, as the fields are
        shape = "%H:%M" if expr.dialect == "posix" else "%H:%M:%S"
        return "at " + _join([t.strftime(shape) for t in times])
    phrases = [_field_phrase(unit, items) for unit, items in (("second", p.seconds), ("minute", p.minutes))]
    phrases.append(_field_phrase("hour", p.hours))
    if _values(p.seconds) == {0}:
        phrases[0] = ""
    if _values(p.minutes) == {0} and phrases[2].startswith("every"):
        phrases[1] = ""
    phrases = [phrase for phrase in phrases if phrase]
    while len(phrases) > 1 and phrases[-1] == "every hour" and phrases[-2].startswith("every"):
        phrases.pop()
    if phrases[-1] == "every minute" and len(phrases) > 1 and phrases[-2].startswith("every"):
        phrases.pop()
    text = " of ".join(phrases)
    return text if text.startswith("every") else f"at {text}"


def _day_phrase(item: _DayItem) -> str:
    match item:
        case _LastDay(offset=0):
            return "the last day"
        case _LastDay(offset=offset):
            return f"the last day minus {offset}"
        case _NearestWeekday(day=None):
            return "the last weekday"
        case _NearestWeekday(day=day):
            return f"the weekday nearest day {day}"
        case _NthWeekday(weekday=weekday, nth=nth):
            return f"the {_ORDINALS[nth - 1]} {_DAY_WORDS[weekday]}"
        case _LastWeekday(weekday=weekday):
            return f"the last {_DAY_WORDS[weekday]}"
        case _Span(star=True, step=step):
            return "every day" if step == 1 else f"every {step} days"
        case _Span(values=values):
            return f"day{'s' if len(values) > 1 else ''} {_runs(values, str)}"
    raise AssertionError(item)


def _weekday_phrase(items: Iterable[_DayItem]) -> str:
    """Days of week in words, Monday first, so `5-7` reads "Friday through Sunday" and `0,7` "Sunday"."""
    spans = [item for item in items if isinstance(item, _Span)]
    monday_first = [(d - 1) % 7 for d in _values(spans)]
    phrases = [_runs(monday_first, lambda d: _DAY_WORDS[(d + 1) % 7])] if spans else []
    return _join(phrases + [_day_phrase(item) for item in items if not isinstance(item, _Span)])


def _describe_days(expr: CronExpression) -> str:
    p = expr._parsed
    months = _values(p.months)
    month_scope = "every month" if months == _ALL_MONTHS else _runs(months, lambda m: _MONTH_WORDS[m - 1])
    in_months = "" if months == _ALL_MONTHS else f" in {month_scope}"
    by_month = _join([_day_phrase(item) for item in p.days_of_month]) if p.days_of_month else ""
    by_week = _weekday_phrase(p.days_of_week) if p.days_of_week else ""
    monthly_week = any(not isinstance(item, _Span) for item in p.days_of_week)
    if by_month and by_week:
        link = " and on " if expr.dialect == "posix" else " if it is "
        text = f"on {by_month} of {month_scope}{link}{by_week}"
    elif by_month or monthly_week:
        text = f"on {by_month or by_week} of {month_scope}"
    elif by_week:
        text = f"on {by_week}{in_months}"
    else:
        text = ("every day" if expr.fixed_time else "") + in_months
    if p.years:
        text += f" in {_runs(_values(p.years), str)}"
    return text.strip()


def _describe(expr: CronExpression) -> str:
    return " ".join(part for part in (_describe_time(expr), _describe_days(expr)) if part)


@lru_cache(maxsize=1024)
def numbering_warnings(expr: str) -> tuple[str, ...]:
    """For an expression parsed without a dialect: each day-of-week item that Spring's numbering (which 6
    fields get by default) and Quartz's read as other days, with both readings. None when the expression
    is not 6 fields, names its days, or is no Quartz at all (a day 0)."""
    spring = parse_cron(expr)
    if spring.dialect != "spring" or not spring._parsed.days_of_week:
        return ()
    try:
        quartz = parse_cron(expr, "quartz")
    except CronError:
        return ()
    texts = expr.split()[5].split(",")
    return tuple(
        f"day-of-week {text} reads as {ours} in Spring's numbering (the default for 6 fields) but as "
        f'{theirs} in Quartz\'s; set "dialect" to say which'
        for text, s, q in zip(texts, spring._parsed.days_of_week, quartz._parsed.days_of_week, strict=True)
        if (ours := _weekday_phrase((s,))) != (theirs := _weekday_phrase((q,)))
    )
