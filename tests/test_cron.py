"""core/cron.py without a server: seeds, every error message, DST helpers, and croniter as a second engine."""

# ruff: noqa: RUF001 -- the ranges in error messages use an en dash, as API.md does

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, time, timedelta
from itertools import product

import pytest
from croniter import CroniterBadDateError, croniter
from hypothesis import given, settings
from hypothesis import strategies as st
from temporalio.client import ScheduleCalendarSpec, ScheduleRange

from core import cron
from core.cron import CronError, dst_gap_calendars, is_repeated_fire, parse_cron

START = datetime(2027, 1, 1, 0, 0, 0)  # a Friday


def _values(ranges: Sequence[ScheduleRange]) -> set[int]:
    return {v for r in ranges for v in range(r.start, max(r.end, r.start) + 1, r.step or 1)}


def fire_times(calendars: list[ScheduleCalendarSpec], start: datetime, count: int) -> list[datetime]:
    """Local fire times after `start`, read off the calendars the way Temporal matches them (fields ANDed,
    calendars ORed, day_of_week 0 = Sunday, no year range = every year)."""
    compiled = [
        (
            _values(c.year) or None,
            _values(c.month),
            _values(c.day_of_month),
            _values(c.day_of_week),
            sorted(_values(c.hour)),
            sorted(_values(c.minute)),
            sorted(_values(c.second)),
        )
        for c in calendars
    ]
    found: list[datetime] = []
    day = start.date()
    while len(found) < count and day.year <= 2100:
        today: set[datetime] = set()
        for years, months, days, weekdays, hours, minutes, seconds in compiled:
            if (years is None or day.year in years) and _on(day, months, days, weekdays):
                later = (
                    t
                    for hms in product(hours, minutes, seconds)
                    if (t := datetime.combine(day, time(*hms))) > start
                )
                for t, _ in zip(later, range(count), strict=False):
                    today.add(t)
        found += sorted(today)[: count - len(found)]
        day += timedelta(days=1)
    return found


def _on(day: date, months: set[int], days: set[int], weekdays: set[int]) -> bool:
    return day.month in months and day.day in days and day.isoweekday() % 7 in weekdays


def _t(text: str) -> datetime:
    return datetime.fromisoformat(text)


SEEDS = {
    "0 */2 * * * *": [
        "2027-01-01 00:02",
        "2027-01-01 00:04",
        "2027-01-01 00:06",
        "2027-01-01 00:08",
        "2027-01-01 00:10",
    ],
    "0 0 12 * * ?": [
        "2027-01-01 12:00",
        "2027-01-02 12:00",
        "2027-01-03 12:00",
        "2027-01-04 12:00",
        "2027-01-05 12:00",
    ],
    "31 10-15 1 * * MON-FRI": [
        "2027-01-01 01:10:31",
        "2027-01-01 01:11:31",
        "2027-01-01 01:12:31",
        "2027-01-01 01:13:31",
        "2027-01-01 01:14:31",
    ],
    "0 15 10 ? * FRI#3": [
        "2027-01-15 10:15",
        "2027-02-19 10:15",
        "2027-03-19 10:15",
        "2027-04-16 10:15",
        "2027-05-21 10:15",
    ],
    "0 0 12 L * ?": [
        "2027-01-31 12:00",
        "2027-02-28 12:00",
        "2027-03-31 12:00",
        "2027-04-30 12:00",
        "2027-05-31 12:00",
    ],
    # Jan 15 2027 Fri; May 15 Sat -> Fri 14; Aug 15 Sun -> Mon 16
    "0 0 12 15W * ?": [
        "2027-01-15 12:00",
        "2027-02-15 12:00",
        "2027-03-15 12:00",
        "2027-04-15 12:00",
        "2027-05-14 12:00",
    ],
    "0 0 12 ? * 2#1 2027": [
        "2027-01-04 12:00",
        "2027-02-01 12:00",
        "2027-03-01 12:00",
        "2027-04-05 12:00",
        "2027-05-03 12:00",
    ],
    "0 9 * * 1": [
        "2027-01-04 09:00",
        "2027-01-11 09:00",
        "2027-01-18 09:00",
        "2027-01-25 09:00",
        "2027-02-01 09:00",
    ],
    "0 9 13 * 5": [
        "2027-01-01 09:00",
        "2027-01-08 09:00",
        "2027-01-13 09:00",
        "2027-01-15 09:00",
        "2027-01-22 09:00",
    ],
    "@daily": [
        "2027-01-02 00:00",
        "2027-01-03 00:00",
        "2027-01-04 00:00",
        "2027-01-05 00:00",
        "2027-01-06 00:00",
    ],
    # more corners: leap February, LW, 5L, L-n, month edges of W, Friday the 13th (Spring ANDs)
    "0 0 0 L 2 ? *": [
        "2027-02-28 00:00",
        "2028-02-29 00:00",
        "2029-02-28 00:00",
        "2030-02-28 00:00",
        "2031-02-28 00:00",
    ],
    "0 0 0 LW * ?": [
        "2027-01-29 00:00",
        "2027-02-26 00:00",
        "2027-03-31 00:00",
        "2027-04-30 00:00",
        "2027-05-31 00:00",
    ],
    "0 0 18 ? * 5L": [
        "2027-01-29 18:00",
        "2027-02-26 18:00",
        "2027-03-26 18:00",
        "2027-04-30 18:00",
        "2027-05-28 18:00",
    ],
    "0 0 0 ? * 6L 2028": [
        "2028-01-28 00:00",
        "2028-02-25 00:00",
        "2028-03-31 00:00",
        "2028-04-28 00:00",
        "2028-05-26 00:00",
    ],
    "0 0 L-2 * *": [
        "2027-01-29 00:00",
        "2027-02-26 00:00",
        "2027-03-29 00:00",
        "2027-04-28 00:00",
        "2027-05-29 00:00",
    ],
    # 1W: May 1 2027 is a Saturday -> Monday 3rd; 31W: Oct 31 2027 is a Sunday -> Friday 29th
    "0 0 1W 5 *": [
        "2027-05-03 00:00",
        "2028-05-01 00:00",
        "2029-05-01 00:00",
        "2030-05-01 00:00",
        "2031-05-01 00:00",
    ],
    "0 0 31W 10 *": [
        "2027-10-29 00:00",
        "2028-10-31 00:00",
        "2029-10-31 00:00",
        "2030-10-31 00:00",
        "2031-10-31 00:00",
    ],
    "0 0 0 13 * FRI": [
        "2027-08-13 00:00",
        "2028-10-13 00:00",
        "2029-04-13 00:00",
        "2029-07-13 00:00",
        "2030-09-13 00:00",
    ],
    "0 0 * * SAT-SUN": [
        "2027-01-02 00:00",
        "2027-01-03 00:00",
        "2027-01-09 00:00",
        "2027-01-10 00:00",
        "2027-01-16 00:00",
    ],
    "0 0 0 ? * 7 2027": [
        "2027-01-02 00:00",
        "2027-01-09 00:00",
        "2027-01-16 00:00",
        "2027-01-23 00:00",
        "2027-01-30 00:00",
    ],
    "@hourly": [
        "2027-01-01 01:00",
        "2027-01-01 02:00",
        "2027-01-01 03:00",
        "2027-01-01 04:00",
        "2027-01-01 05:00",
    ],
}


@pytest.mark.parametrize(("expr", "expected"), SEEDS.items())
def test_seed_fires_as_expected(expr: str, expected: list[str]) -> None:
    assert fire_times(parse_cron(expr).calendars(), START, 5) == [_t(e) for e in expected]


@pytest.mark.parametrize(
    ("expr", "dialect", "fixed", "description"),
    [
        ("0 */2 * * * *", "spring", False, "every 2 minutes"),
        ("0 15 10 ? * FRI#3", "spring", True, "at 10:15:00 on the third Friday of every month"),
        (
            "31 10-15 1 * * MON-FRI",
            "spring",
            False,
            "at second 31 of minutes 10 through 15 of hour 1 on Monday through Friday",
        ),
        ("0 0 12 L * ?", "spring", True, "at 12:00:00 on the last day of every month"),
        ("0 0 12 15W * ?", "spring", True, "at 12:00:00 on the weekday nearest day 15 of every month"),
        ("0 0 12 ? * 2#1 2027", "quartz", True, "at 12:00:00 on the first Monday of every month in 2027"),
        ("0 9 13 * 5", "posix", True, "at 09:00 on day 13 of every month and on Friday"),
        ("0 0 0 13 * FRI", "spring", True, "at 00:00:00 on day 13 of every month if it is Friday"),
        ("30 2 * * *", "posix", True, "at 02:30 every day"),
        ("0 9,17 * * MON-FRI", "posix", True, "at 09:00 and 17:00 on Monday through Friday"),
        (
            "*/15 9-17 * JAN,JUL *",
            "posix",
            False,
            "every 15 minutes of hours 9 through 17 in January and July",
        ),
        ("@weekly", "posix", True, "at 00:00 on Sunday"),
    ],
)
def test_dialect_fixed_time_and_description(expr: str, dialect: str, fixed: bool, description: str) -> None:
    parsed = parse_cron(expr)
    assert (parsed.dialect, parsed.fixed_time, parsed.describe()) == (dialect, fixed, description)


def test_compiles_to_calendars_as_designed() -> None:
    third_friday = parse_cron("0 15 10 ? * FRI#3").calendars()
    assert len(third_friday) == 1
    assert (third_friday[0].day_of_month, third_friday[0].day_of_week) == (
        (ScheduleRange(15, 21),),
        (ScheduleRange(5),),
    )
    posix_or = parse_cron("0 9 13 * 5").calendars()
    assert [(c.day_of_month, c.day_of_week) for c in posix_or] == [
        ((ScheduleRange(13),), (ScheduleRange(0, 6),)),
        ((ScheduleRange(1, 31),), (ScheduleRange(5),)),
    ]
    assert parse_cron("*/5 * * * *").calendars()[0].minute == (ScheduleRange(0, 55, 5),)
    assert len(parse_cron("0 0 12 15W * ?").calendars()) == 3


def test_names_are_case_insensitive_and_sunday_is_0_or_7() -> None:
    assert fire_times(parse_cron("0 0 * jan,Feb sun").calendars(), START, 5) == fire_times(
        parse_cron("0 0 * 1,2 7").calendars(), START, 5
    )
    assert fire_times(parse_cron("0 0 0 ? * SUN").calendars(), START, 3) == fire_times(
        parse_cron("0 0 0 ? * 1 *").calendars(), START, 3
    )


@pytest.mark.parametrize(
    ("expr", "field", "reason"),
    [
        ("", "expression", "is empty"),
        ("   ", "expression", "is empty"),
        ("* * * *", "expression", "has 4 fields"),
        ("0 0 0 0 * * * *", "expression", "has 8 fields"),
        ("@every 5m", "expression", "unknown macro"),
        ("0 25 * * *", "hour", "25 is out of range 0–23"),
        ("60 * * * *", "minute", "60 is out of range 0–59"),
        ("60 * * * * *", "second", "60 is out of range 0–59"),
        ("0 0 32 * *", "day_of_month", "32 is out of range 1–31"),
        ("0 0 * * 13", "day_of_week", "13 is out of range 0–7"),
        ("0 0 * 13 *", "month", "13 is out of range 1–12"),
        ("0 0 12 ? * 0 2027", "day_of_week", "0 is out of range 1–7"),
        ("0 0 12 ? * 2 2101", "year", "2101 is out of range 2000–2100"),
        ("0 0 * * FRX", "day_of_week", "unknown name 'FRX'"),
        ("0 0 * JUX *", "month", "unknown name 'JUX'"),
        ("0 x * * *", "hour", "'X' is not a number"),
        ("*/0 * * * *", "minute", "step 0 is out of range 1–60"),
        ("*/x * * * *", "minute", "step 'X' is not a number"),
        ("0 0 */32 * *", "day_of_month", "step 32 is out of range 1–31"),
        ("0 0 20-10 * *", "day_of_month", "range 20-10 is reversed"),
        ("0 0 0 * * * 2030-2028", "year", "range 2030-2028 is reversed"),
        ("0 0 ? * *", "day_of_month", "'?' needs 6 or 7 fields"),
        ("0 0 * * ?", "day_of_week", "'?' needs 6 or 7 fields"),
        ("? 0 0 * * *", "second", "'?' is only allowed in day_of_month and day_of_week"),
        ("0 0 0 * ? *", "month", "'?' is only allowed"),
        ("0 0 0 ?,1 * *", "day_of_month", "'?' must stand alone"),
        ("0 0 1,,2 * *", "day_of_month", "empty list item"),
        ("0 L * * *", "hour", "L, W and # belong in day_of_month or day_of_week"),
        ("0 0 * 15W *", "month", "L, W and # belong"),
        ("0 0 1-5W * *", "day_of_month", "W takes one day"),
        ("0 0 3#2 * *", "day_of_month", "# belongs in day_of_week"),
        ("0 0 L-31 * *", "day_of_month", "offset 31 is out of range 0–30"),
        ("0 0 * * 1W", "day_of_week", "W belongs in day_of_month"),
        ("0 0 * * L", "day_of_week", "L alone is ambiguous"),
        ("0 0 * * 5#6", "day_of_week", "occurrence 6 is out of range 1–5"),
        ("0 0 * * 5#0", "day_of_week", "occurrence 0 is out of range 1–5"),
        ("0 0 * * 1#X", "day_of_week", "is not a value, range or step"),
        ("0 0 1-2-3 * *", "day_of_month", "is not a value, range or step"),
        ("0 0 30 2 *", "expression", "never fires"),
        ("0 0 0 29 2 ? 2027", "expression", "never fires"),
        # Unicode digits, spaces and case folds, which Python's own str methods would have read
        ("0 \u0663 * * *", "expression", "'\u0663' (U+0663): cron takes ASCII characters only"),
        ("*/\u00b2 * * * *", "expression", "(U+00B2): cron takes ASCII"),
        ("0\u00a03 * * *", "expression", "(U+00A0): cron takes ASCII"),
        ("0 3 * * \u017fun", "expression", "(U+017F): cron takes ASCII"),
    ],
)
def test_error_names_field_and_reason(expr: str, field: str, reason: str) -> None:
    with pytest.raises(CronError) as caught:
        parse_cron(expr)
    assert caught.value.field == field
    assert reason.lower() in caught.value.reason.lower()
    assert str(caught.value) == f"{field}: {caught.value.reason}"
    assert isinstance(caught.value, ValueError)


# ---------------------------------------------------------------------------------------------------------
# DST helpers (against the real server in test_cron_temporal.py)

NEW_YORK_2027 = (datetime(2027, 1, 1, tzinfo=UTC), datetime(2028, 1, 1, tzinfo=UTC))


def test_gap_calendar_is_the_first_instant_after_the_gap() -> None:
    (extra,) = dst_gap_calendars(parse_cron("30 2 * * *"), "America/New_York", *NEW_YORK_2027)
    fields = (extra.year, extra.month, extra.day_of_month, extra.hour, extra.minute, extra.second)
    assert fields == tuple((ScheduleRange(v),) for v in (2027, 3, 14, 3, 0, 0))


@pytest.mark.parametrize(
    ("expr", "tz", "count"),
    [
        ("30 2 * * 1-5", "America/New_York", 0),  # 2027-03-14 is a Sunday
        ("30 3 * * *", "America/New_York", 0),  # not in the gap
        ("*/30 2 * * *", "America/New_York", 0),  # not a fixed time: runs by elapsed time
        ("0 15,45 2 * * ?", "Australia/Lord_Howe", 1),  # two times in one gap: one run after it
        ("0 30 2 * * ?", "Europe/Berlin", 1),
        ("0 30 2 * * ?", "UTC", 0),
    ],
)
def test_gap_calendars_only_where_a_fixed_time_falls_in_a_gap(expr: str, tz: str, count: int) -> None:
    assert len(dst_gap_calendars(parse_cron(expr), tz, *NEW_YORK_2027)) == count


@pytest.mark.parametrize(
    ("expr", "tz", "fire_at", "repeated"),
    [
        ("30 1 * * *", "America/New_York", "2027-11-07T01:30-04:00", False),  # the first 01:30 runs
        ("30 1 * * *", "America/New_York", "2027-11-07T01:30-05:00", True),  # Temporal fires it twice
        ("*/30 * * * *", "America/New_York", "2027-11-07T01:30-05:00", False),  # elapsed time
        ("0 30 2 * * ?", "Europe/Berlin", "2027-10-31T02:30+01:00", False),  # Temporal's only 02:30
        ("0 30 1,2 * * ?", "Europe/Berlin", "2027-10-31T02:30+01:00", True),  # ... unless 01:30 fires too
        ("0 15 2 * * ?", "Australia/Lord_Howe", "2027-10-03T02:45+11:00", True),  # moved out of the gap
        ("0 15 2 * * ?", "Australia/Lord_Howe", "2027-10-03T02:30+11:00", False),  # the gap calendar
        ("0 45 1 * * ?", "Australia/Lord_Howe", "2027-04-04T01:45+10:30", False),
    ],
)
def test_repeated_fires(expr: str, tz: str, fire_at: str, repeated: bool) -> None:
    assert is_repeated_fire(parse_cron(expr), tz, datetime.fromisoformat(fire_at)) is repeated


# ---------------------------------------------------------------------------------------------------------
# Property: the compiled calendars fire when croniter says the expression fires.
# One structure renders as our string and as croniter's (croniter spells the last Friday L5, and counts
# 0 = Sunday in every dialect), so Quartz's 1 = Sunday numbering is checked too.

_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


@st.composite
def _span(draw: st.DrawFn, low: int, high: int, *, wrap: bool = False) -> str:
    """One list item: a value, a range (reversed ones wrap when `wrap`), or a step."""
    a = draw(st.integers(low, high))
    b = draw(st.integers(low, high).filter(lambda b: b != a))
    shape = draw(st.sampled_from(["value", "range", "star-step", "start-step", "range-step"]))
    step = draw(st.integers(1, max(1, (high - low) // 2)))
    lo, hi = sorted((a, b))
    if shape == "value":
        return str(a)
    if shape == "range":
        return f"{a}-{b}" if wrap else f"{lo}-{hi}"
    if shape == "star-step":
        return f"*/{step}"
    return f"{a}/{step}" if shape == "start-step" else f"{lo}-{hi}/{step}"


def _field(low: int, high: int, *, wrap: bool = False) -> st.SearchStrategy[str]:
    items = st.lists(_span(low, high, wrap=wrap), min_size=1, max_size=3).map(",".join)
    return st.one_of(st.just("*"), items)


@st.composite
def expressions(draw: st.DrawFn) -> tuple[str, str, int]:
    """(our expression, croniter's expression, field count)."""
    count = draw(st.sampled_from([5, 6, 7]))
    second = draw(_field(0, 59, wrap=True))
    minute = draw(_field(0, 59, wrap=True))
    hour = draw(_field(0, 23, wrap=True))
    month = draw(
        st.one_of(_field(1, 12), st.lists(st.sampled_from(_MONTHS), min_size=1, max_size=3).map(",".join))
    )
    special_dom = st.sampled_from(["L", *(f"{d}W" for d in (1, 15, 28, 30, 31))])
    dom = draw(st.one_of(_field(1, 31), special_dom))
    sunday = 1 if count == 7 else draw(st.sampled_from([0, 7]))
    weekday = st.integers(0, 6)
    ours = theirs = draw(st.one_of(st.just("*"), st.sampled_from(["MON-FRI", "SAT,SUN", "FRI"])))
    kind = draw(st.sampled_from(["plain", "numbers", "nth", "last"]))
    if kind == "numbers":
        days = draw(st.lists(weekday, min_size=1, max_size=3, unique=True))
        ours = ",".join(str(d + 1 if count == 7 else (7 if d == 0 and sunday == 7 else d)) for d in days)
        theirs = ",".join(map(str, days))
    elif kind in ("nth", "last"):
        d, nth = draw(weekday), draw(st.integers(1, 5))
        number = d + 1 if count == 7 else d
        ours, theirs = (f"{number}#{nth}", f"{d}#{nth}") if kind == "nth" else (f"{number}L", f"L{d}")
    if dom in ("L",) or dom.endswith("W") or kind in ("nth", "last"):
        # croniter keeps W, L5 and # as an AND with the other day field, so test them alone
        if draw(st.booleans()):
            ours = theirs = "*" if count == 5 else "?"
        else:
            dom = "*" if count == 5 else "?"
    year = ""
    if count == 7:
        year = " " + draw(st.sampled_from(["*", "2027", "2027-2029", "2028,2030"]))
    head = "" if count == 5 else f"{second} "
    return (
        f"{head}{minute} {hour} {dom} {month} {ours}{year}",
        f"{head}{minute} {hour} {dom} {month} {theirs}{year}",
        count,
    )


def croniter_finds(expr: str, start: datetime, count: int) -> list[datetime]:
    """croniter's next five fire times (fewer when it finds none later, as for a past year)."""
    times = croniter(expr, start, ret_type=datetime, day_or=count == 5, second_at_beginning=count > 5)
    found: list[datetime] = []
    for _ in range(5):
        try:
            found.append(times.get_next())
        except CroniterBadDateError:
            break
    return found


@settings(max_examples=300, deadline=None)
@given(
    expressions(),
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2029, 12, 31)).map(
        lambda t: t.replace(microsecond=0)
    ),
)
def test_calendars_agree_with_croniter(case: tuple[str, str, int], start: datetime) -> None:
    ours, theirs, count = case
    want = croniter_finds(theirs, start, count)
    try:
        parsed = parse_cron(ours)
    except CronError:  # only for an expression that never fires (a fifth Monday in a year without one)
        assert not want
        return
    assert fire_times(parsed.calendars(), start, 5)[: len(want)] == want, ours
    local = [t.replace(tzinfo=None) for t in parsed.fire_times("UTC", start.replace(tzinfo=UTC), 5)]
    assert local[: len(want)] == want, ours


# Fire-time cost: the search looks up each next time field by field, so it takes about one step per fire
# whatever the density (an every-second expression once walked all 86,400 seconds of a day).


@pytest.mark.parametrize(
    "expr", ["* * * * * ?", "*/5 * * * * ?", "0 * * * * ?", "0 0 * * * ?", "0 0 12 * * ?"]
)
@pytest.mark.parametrize("tz", ["UTC", "America/New_York", "Australia/Lord_Howe"])
def test_fire_times_cost_one_step_per_fire(monkeypatch: pytest.MonkeyPatch, expr: str, tz: str) -> None:
    steps = 0
    clock_from = cron._clock_from

    def counted(parsed: object, start: int) -> Iterator[int]:
        nonlocal steps
        for second in clock_from(parsed, start):  # type: ignore[arg-type]
            steps += 1
            yield second

    monkeypatch.setattr(cron, "_clock_from", counted)
    fires = parse_cron(expr).fire_times(tz, datetime(2027, 3, 13, 23, 59, 30, tzinfo=UTC), 100)
    assert len(fires) == 100 and fires == sorted(set(fires))
    days = (fires[-1] - fires[0]).days + 3
    assert steps <= 100 + 2 * days, steps


@pytest.mark.parametrize("after", [datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, tzinfo=UTC)])
@pytest.mark.parametrize("tz", ["Pacific/Kiritimati", "Etc/GMT+12"])
def test_fire_times_take_any_instant(after: datetime, tz: str) -> None:
    fires = parse_cron("* * * * * ?").fire_times(tz, after, 3)
    assert fires == (
        [] if after.year == 9999 else [datetime(2000, 1, 1, 0, 0, s, tzinfo=UTC) for s in (1, 2, 3)]
    )


@pytest.mark.parametrize(
    ("expr", "seconds"),
    [("* * * * * ?", 1), ("*/20 * * * * ?", 20), ("0 * * * * ?", 60), ("0,30 59 * * * ?", 30),
     ("59 * * * * ?", 60), ("0 0,23 * * *", 3600), ("0 12 * * *", 86400), ("0 0 0 1 1 ? 2030", 86400)],
)  # fmt: skip
def test_spacing_is_the_closest_pair_of_fire_times(expr: str, seconds: int) -> None:
    assert parse_cron(expr).spacing == seconds


# ---------------------------------------------------------------------------------------------------------
# Dialects: the same day-of-week numbers name other days in Spring (0/7 = Sunday) and Quartz (1 = Sunday).
# The numbered form in a dialect must fire exactly as the named form, which reads alike everywhere.

QUARTZ_DAYS = {1: "SUN", 2: "MON", 3: "TUE", 4: "WED", 5: "THU", 6: "FRI", 7: "SAT"}
SPRING_DAYS = {0: "SUN", 1: "MON", 2: "TUE", 3: "WED", 4: "THU", 5: "FRI", 6: "SAT", 7: "SUN"}


@pytest.mark.parametrize(
    ("expr", "dialect", "named", "first"),
    [
        ("0 15 10 ? * 6#3", "quartz", "0 15 10 ? * FRI#3", "2027-01-15 10:15"),  # third Friday
        ("0 15 10 ? * 6#3", "spring", "0 15 10 ? * SAT#3", "2027-01-16 10:15"),  # third Saturday
        ("0 15 10 ? * 6#3", None, "0 15 10 ? * SAT#3", "2027-01-16 10:15"),  # 6 fields: Spring's
        ("0 15 10 ? * 6#3 *", None, "0 15 10 ? * FRI#3 *", "2027-01-15 10:15"),  # 7 fields: Quartz's
        ("0 0 12 ? * 2-6", "quartz", "0 0 12 ? * MON-FRI", "2027-01-01 12:00"),
        ("0 0 12 ? * 2-6", "spring", "0 0 12 ? * TUE-SAT", "2027-01-01 12:00"),
        ("0 0 12 ? * 6L", "quartz", "0 0 12 ? * FRIL", "2027-01-29 12:00"),  # last Friday
        ("0 0 12 ? * 6L", "spring", "0 0 12 ? * SATL", "2027-01-30 12:00"),  # last Saturday
        ("0 0 12 ? * 1,7", "quartz", "0 0 12 ? * SUN,SAT", "2027-01-02 12:00"),
        ("0 0 12 ? * 1,7", "spring", "0 0 12 ? * MON,SUN", "2027-01-03 12:00"),
        ("0 0 12 ? * 7-2", "quartz", "0 0 12 ? * SAT-MON", "2027-01-02 12:00"),  # wraps: SAT, SUN, MON
        ("0 0 12 ? * 2/2", "quartz", "0 0 12 ? * MON,WED,FRI", "2027-01-01 12:00"),
        ("0 0 12 ? * 1#1 2027", "quartz", "0 0 12 ? * SUN#1 2027", "2027-01-03 12:00"),
        ("0 0 12 ? * MON-FRI", "quartz", "0 0 12 ? * MON-FRI", "2027-01-01 12:00"),  # names never move
        ("0 9 * * 1-5", "posix", "0 9 * * MON-FRI", "2027-01-01 09:00"),
    ],
)
def test_day_of_week_numbers_follow_the_dialect(
    expr: str, dialect: cron.Dialect | None, named: str, first: str
) -> None:
    parsed = parse_cron(expr, dialect)
    want = fire_times(parse_cron(named).calendars(), START, 8)
    assert want[0] == _t(first)
    assert fire_times(parsed.calendars(), START, 8) == want
    local = parsed.fire_times("UTC", START.replace(tzinfo=UTC), 8)
    assert [t.replace(tzinfo=None) for t in local] == want
    assert parsed.dialect == (dialect or {5: "posix", 6: "spring", 7: "quartz"}[len(expr.split())])


@st.composite
def _numbered_days(draw: st.DrawFn) -> tuple[str, str, str]:
    """One day-of-week field meaning the same days as (Quartz numbers, Spring numbers, croniter numbers);
    croniter counts 0 = Sunday and spells the last Friday L5."""
    kind = draw(st.sampled_from(["list", "nth", "last"]))
    if kind != "list":
        d = draw(st.integers(0, 6))
        if kind == "nth":
            nth = draw(st.integers(1, 5))
            return f"{d + 1}#{nth}", f"{d}#{nth}", f"{d}#{nth}"
        return f"{d + 1}L", f"{d}L", f"L{d}"
    items: list[tuple[str, str, str]] = []
    for _ in range(draw(st.integers(1, 3))):
        a, b = sorted(draw(st.lists(st.integers(0, 6), min_size=2, max_size=2)))
        sunday = draw(st.sampled_from([0, 7])) if a == 0 and a == b else a  # Spring's Sunday is 0 or 7
        items.append(
            (f"{a + 1}", f"{sunday}", f"{a}") if a == b else (f"{a + 1}-{b + 1}", f"{a}-{b}", f"{a}-{b}")
        )
    return tuple(",".join(column) for column in zip(*items, strict=True))  # type: ignore[return-value]


@settings(max_examples=150, deadline=None)
@given(
    _numbered_days(),
    st.sampled_from(["0 0 12", "30 15 10", "0 */20 9-10"]),
    st.sampled_from(["*", "JAN-MAR", "2,5,11"]),
    st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2029, 12, 31)).map(
        lambda t: t.replace(microsecond=0)
    ),
)
def test_numbered_days_agree_with_croniter_in_both_dialects(
    days: tuple[str, str, str], clock: str, month: str, start: datetime
) -> None:
    quartz, spring, theirs = days
    want = croniter_finds(f"{clock} ? {month} {theirs}".replace("?", "*"), start, 6)
    for dialect, ours in (("quartz", quartz), ("spring", spring)):
        parsed = parse_cron(f"{clock} ? {month} {ours}", dialect)
        assert fire_times(parsed.calendars(), start, 5)[: len(want)] == want, (dialect, ours)
        local = parsed.fire_times("UTC", start.replace(tzinfo=UTC), 5)
        assert [t.replace(tzinfo=None) for t in local][: len(want)] == want, (dialect, ours)


@pytest.mark.parametrize(
    ("expr", "dialect", "reason"),
    [
        ("0 0 12 * * *", "posix", "POSIX cron has 5 fields (minute first); this expression has 6"),
        ("0 12 * * *", "spring", "Spring cron has 6 fields (seconds first, no year); this expression has 5"),
        ("0 0 12 * * ? 2030", "spring", "Spring cron has 6 fields"),
        ("0 12 * * *", "quartz", "Quartz cron has 6 or 7 fields (seconds first, year optional)"),
        ("@daily", "quartz", "Quartz has no macros"),
    ],
)
def test_a_dialect_that_does_not_fit_the_field_count_names_the_dialect(
    expr: str, dialect: cron.Dialect, reason: str
) -> None:
    with pytest.raises(CronError) as caught:
        parse_cron(expr, dialect)
    assert caught.value.field == "dialect" and reason in caught.value.reason


def test_quartz_numbers_start_at_1_also_in_6_fields() -> None:
    with pytest.raises(CronError, match="day_of_week: 0 is out of range 1–7"):
        parse_cron("0 0 12 ? * 0", "quartz")
    assert parse_cron("@daily", "spring").dialect == "spring"  # Spring knows the macros


@pytest.mark.parametrize(
    ("expr", "warned"),
    [
        (
            "0 15 10 ? * 6#3",
            ["day-of-week 6#3 reads as the third Saturday in Spring's numbering (the default for 6 fields) "
             "but as the third Friday in Quartz's; set \"dialect\" to say which"],
        ),
        (
            "0 0 12 ? * 2-6",
            ["day-of-week 2-6 reads as Tuesday through Saturday in Spring's numbering (the default for 6 "
             "fields) but as Monday through Friday in Quartz's; set \"dialect\" to say which"],
        ),
        ("0 0 12 ? * MON,6", ["day-of-week 6 reads as Saturday in Spring's numbering"]),
        ("0 0 12 ? * 6L", ["day-of-week 6L reads as the last Saturday in Spring's numbering"]),
        ("0 0 12 ? * MON-FRI", []),  # names read alike
        ("0 0 12 * * ?", []),
        ("0 0 12 ? * */2", []),  # Sunday, Tuesday, Thursday, Saturday in both
        ("0 0 12 ? * 0,6", []),  # 0 is no Quartz: only Spring reads it
        ("0 9 * * 1-5", []),  # 5 fields: POSIX
        ("0 0 12 ? * 2-6 *", []),  # 7 fields: Quartz
        ("@weekly", []),
    ],
)  # fmt: skip
def test_numbered_days_in_6_fields_warn(expr: str, warned: list[str]) -> None:
    found = cron.numbering_warnings(expr)
    assert len(found) == len(warned)
    assert all(f.startswith(w) for f, w in zip(found, warned, strict=True)), found


@pytest.mark.parametrize(
    ("expr", "dialect", "description"),
    [
        ("0 15 10 ? * 6#3", "quartz", "at 10:15:00 on the third Friday of every month"),
        ("0 15 10 ? * 6#3", "spring", "at 10:15:00 on the third Saturday of every month"),
        ("0 0 12 ? * 2-6", "quartz", "at 12:00:00 on Monday through Friday"),
        ("0 0 12 ? * 2-6", "spring", "at 12:00:00 on Tuesday through Saturday"),
        ("0 0 12 ? * 6L", "quartz", "at 12:00:00 on the last Friday of every month"),
        ("0 0 12 ? * 1,7", "quartz", "at 12:00:00 on Saturday and Sunday"),
        ("0 0 12 ? * 0,7", "spring", "at 12:00:00 on Sunday"),
        ("0 0 * * 5-7", "posix", "at 00:00 on Friday through Sunday"),
        ("0 0 12 ? * 1/2", "spring", "at 12:00:00 on Monday, Wednesday and Friday"),
        ("0 0 12 ? * 1/2", "quartz", "at 12:00:00 on Tuesday, Thursday, Saturday and Sunday"),
        (
            "0 0 12 ? * 5#3,6L",
            "quartz",
            "at 12:00:00 on the third Thursday and the last Friday of every month",
        ),
        ("0 0 12 1 * 2", "quartz", "at 12:00:00 on day 1 of every month if it is Monday"),
    ],
)
def test_descriptions_name_the_days_in_words(expr: str, dialect: cron.Dialect, description: str) -> None:
    assert parse_cron(expr, dialect).describe() == description
