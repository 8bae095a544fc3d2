"""Excluded days and DST rules without a server: the skip calendars, the local fire times, the names of
skipped days and the reason a run gives when its rule skips it."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from activities.mirror import skip_reason
from core.cron import DstRule, dst_gap_calendars, is_repeated_fire, parse_cron
from core.exclusions import excluded_days, holidays_of, region_error, skip_calendars
from core.payloads import FixedCron, RunStarted, Trigger
from core.schedules import (
    Schedule,
    calendar_notes,
    fire_times,
    renewal_due,
    schedule_warnings,
    skipped_days,
    temporal_spec,
)

SCHEDULE: TypeAdapter[Any] = TypeAdapter(Schedule)


def _z(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def test_regions_are_countries_or_subdivisions() -> None:
    assert region_error("US") is None and region_error("DE-BY") is None and region_error("AU-NSW") is None
    assert "unknown country 'XX'" in (region_error("XX") or "")
    assert "unknown subdivision 'ZZ' of DE" in (region_error("DE-ZZ") or "")
    assert holidays_of("DE-BY", 2027)[date(2027, 1, 6)] == "Epiphany"  # Bavaria's, not all Germany's
    assert date(2027, 1, 6) not in holidays_of("DE", 2027)
    assert holidays_of("DE", 2027)[date(2027, 12, 26)] == "Second Day of Christmas"  # names in English


def test_excluded_days_name_holidays_and_dates() -> None:
    days = excluded_days([date(2027, 12, 24), date(2027, 12, 25), date(2031, 1, 1)], "US", range(2027, 2028))
    assert days[date(2027, 12, 24)] == "Christmas Day (observed); excluded date"
    assert days[date(2027, 12, 25)] == "Christmas Day; excluded date"
    assert date(2031, 1, 1) not in days and days[date(2027, 7, 5)] == "Independence Day (observed)"


def test_skip_calendars_cover_whole_days_one_per_month() -> None:
    [december, january] = skip_calendars([date(2027, 12, 24), date(2027, 12, 31), date(2028, 1, 3)], "x")
    assert [(r.start, r.end) for r in (*december.hour, *december.minute, *december.second)] == [
        (0, 23),
        (0, 59),
        (0, 59),
    ]
    assert [r.start for r in december.day_of_month] == [24, 31]
    assert (december.month[0].start, december.year[0].start) == (12, 2027)
    assert (january.month[0].start, january.year[0].start, january.day_of_month[0].start) == (1, 2028, 3)


def test_the_spec_lists_holidays_for_three_years_and_dates_from_this_year_on() -> None:
    schedule = SCHEDULE.validate_python(
        {
            "type": "cron",
            "cron": "0 9 * * *",
            "timezone": "Europe/Berlin",
            "exclude": {"holidays": "de-by", "dates": ["2026-05-01", "2027-08-02", "2040-01-02"]},
        }
    )
    assert schedule.exclude.holidays == "DE-BY"  # stored as the holidays package spells it
    spec = temporal_spec(schedule, _z("2027-06-01T00:00Z"))
    given = [c for c in spec.skip if c.comment == "excluded dates"]
    assert [(c.year[0].start, c.month[0].start) for c in given] == [(2027, 8), (2040, 1)]
    holidays = [c for c in spec.skip if c.comment != "excluded dates"]
    assert {c.comment for c in holidays} == {"holidays DE-BY 2027-2029"}
    assert {c.year[0].start for c in holidays} == {2027, 2028, 2029}
    assert spec.time_zone_name == "Europe/Berlin"


def test_fire_times_pass_over_excluded_days_at_once() -> None:
    """Every second, with a week excluded: the next fire is the first second after the week, found without
    walking through its 604,800 seconds."""
    week = [f"2027-03-0{d}" for d in range(1, 8)]
    schedule = SCHEDULE.validate_python({"type": "cron", "cron": "* * * * * ?", "exclude": {"dates": week}})
    assert fire_times(schedule, _z("2027-02-28T23:59:58Z"), 3) == [
        _z("2027-02-28T23:59:59Z"),
        _z("2027-03-08T00:00:00Z"),
        _z("2027-03-08T00:00:01Z"),
    ]
    assert skipped_days(schedule, _z("2027-02-28T23:59:58Z"), _z("2027-03-08T00:00:01Z")) == [
        f"{day} excluded date" for day in week
    ]


def test_skipped_names_only_days_that_would_have_fired() -> None:
    """Weekdays only: Christmas 2027 (a Saturday) is no skipped run, the observed day (Friday) is."""
    schedule = SCHEDULE.validate_python(
        {"type": "cron", "cron": "0 9 * * 1-5", "timezone": "America/New_York", "exclude": {"holidays": "US"}}
    )
    assert skipped_days(schedule, _z("2027-12-20T00:00Z"), _z("2028-01-10T00:00Z")) == [
        "2027-12-24 Christmas Day (observed)",
        "2027-12-31 New Year's Day (observed)",
    ]
    assert skipped_days(schedule, _z("2027-12-20T00:00Z"), None) == []
    plain = SCHEDULE.validate_python({"type": "cron", "cron": "0 9 * * 1-5"})
    assert skipped_days(plain, _z("2027-12-20T00:00Z"), _z("2028-01-10T00:00Z")) == []


def test_notes_say_what_is_excluded_and_the_rule() -> None:
    schedule = SCHEDULE.validate_python(
        {
            "type": "cron",
            "cron": "30 2 * * *",
            "timezone": "Europe/Berlin",
            "exclude": {"holidays": "DE", "dates": ["2027-12-24", "2027-12-31"]},
            "dst": {"gap": "skip", "repeat": "second"},
        }
    )
    assert calendar_notes(schedule) == (
        ", except on DE public holidays and 2 dates (Europe/Berlin days); times in a DST gap do not run, "
        "repeated times run once, at their second occurrence"
    )
    interval = SCHEDULE.validate_python(
        {"type": "interval", "every_seconds": 60, "exclude": {"dates": ["2027-01-01"]}}
    )
    assert calendar_notes(interval) == ", except on 1 date (UTC days)"


def test_a_rule_is_optional_and_stored_only_when_given() -> None:
    plain = SCHEDULE.validate_python({"type": "cron", "cron": "@daily"})
    assert plain.dst_rule == DstRule() == DstRule("shift", "first")
    assert "dst" not in plain.model_dump() and "exclude" not in plain.model_dump()
    ruled = SCHEDULE.validate_python({"type": "cron", "cron": "@daily", "dst": {"repeat": "both"}})
    assert ruled.model_dump()["dst"] == {"gap": "shift", "repeat": "both"}
    with pytest.raises(ValidationError):
        SCHEDULE.validate_python({"type": "interval", "every_seconds": 60, "dst": {}})


def test_gap_skip_adds_no_after_gap_instant() -> None:
    expr = parse_cron("30 2 * * *")
    start, end = _z("2027-03-01T00:00Z"), _z("2027-04-01T00:00Z")
    assert len(dst_gap_calendars(expr, "Europe/Berlin", start, end)) == 1
    assert dst_gap_calendars(expr, "Europe/Berlin", start, end, DstRule(gap="skip")) == []


@pytest.mark.parametrize(
    ("expr", "tz", "fire_at", "rule", "skipped"),
    [
        # New York fires 01:30 twice on 2027-11-07 (05:30 and 06:30 UTC): each rule keeps its own.
        ("30 1 * * *", "America/New_York", "2027-11-07T05:30Z", DstRule(repeat="first"), False),
        ("30 1 * * *", "America/New_York", "2027-11-07T06:30Z", DstRule(repeat="first"), True),
        ("30 1 * * *", "America/New_York", "2027-11-07T05:30Z", DstRule(repeat="second"), True),
        ("30 1 * * *", "America/New_York", "2027-11-07T06:30Z", DstRule(repeat="second"), False),
        ("30 1 * * *", "America/New_York", "2027-11-07T05:30Z", DstRule(repeat="both"), False),
        ("30 1 * * *", "America/New_York", "2027-11-07T06:30Z", DstRule(repeat="both"), False),
        # The after-gap instant Chronos adds is kept only when gap times shift.
        ("30 2 * * *", "America/New_York", "2027-03-14T07:00Z", DstRule(gap="shift"), False),
        ("30 2 * * *", "America/New_York", "2027-03-14T07:00Z", DstRule(gap="skip"), True),
        # Temporal moves Lord Howe's 02:15 to 02:45 (15:45 UTC): never run.
        ("15 2 * * *", "Australia/Lord_Howe", "2027-10-02T15:45Z", DstRule(), True),
        ("15 2 * * *", "Australia/Lord_Howe", "2027-10-02T15:45Z", DstRule(gap="skip"), True),
    ],
)
def test_the_run_skips_what_its_rule_does_not_keep(
    expr: str, tz: str, fire_at: str, rule: DstRule, skipped: bool
) -> None:
    assert is_repeated_fire(parse_cron(expr), tz, _z(fire_at), rule) is skipped


def _fire(at: str, rule: FixedCron) -> RunStarted:
    moment = _z(at)
    return RunStarted(
        run_id="r",
        temporal_run_id="t",
        job_id="j",
        owner_id="o",
        trigger=Trigger.SCHEDULE,
        scheduled_at=moment,
        started_at=moment,
        fixed_cron=rule,
    )


def test_skip_reasons_say_which_rule() -> None:
    new_york = "America/New_York"
    second = FixedCron(cron="30 1 * * *", timezone=new_york, repeat="second")
    assert skip_reason(_fire("2027-11-07T05:30Z", second)) == (
        "skipped: 01:30:00 on 2027-11-07 runs at its second occurrence (daylight-saving fall-back, "
        "dst repeat: second)"
    )
    assert skip_reason(_fire("2027-11-07T06:30Z", second)) is None
    gap = FixedCron(cron="30 2 * * *", timezone=new_york, gap="skip")
    assert skip_reason(_fire("2027-03-14T07:00Z", gap)) == (
        "skipped: 03:00:00 on 2027-03-14 is no fire time of the schedule (daylight-saving gap, dst gap: skip)"
    )
    # A payload from before the rule existed reads as the cron convention.
    old = FixedCron.model_validate({"cron": "30 1 * * *", "timezone": new_york})
    assert (old.gap, old.repeat) == ("shift", "first")
    assert skip_reason(_fire("2027-11-07T06:30Z", old)) == (
        "skipped: 01:30:00 already ran on 2027-11-07 (daylight-saving fall-back)"
    )


def test_warnings_name_occurrences_temporal_cannot_fire() -> None:
    berlin = SCHEDULE.validate_python(
        {"type": "cron", "cron": "30 2 * * *", "timezone": "Europe/Berlin", "dst": {"repeat": "first"}}
    )
    [first, *_] = schedule_warnings(berlin)
    assert "happens twice in Europe/Berlin and Temporal does not fire its first occurrence" in first
    second = SCHEDULE.validate_python(
        {"type": "cron", "cron": "30 2 * * *", "timezone": "Europe/Berlin", "dst": {"repeat": "second"}}
    )
    assert schedule_warnings(second) == []
    new_york = SCHEDULE.validate_python(
        {"type": "cron", "cron": "30 1 * * *", "timezone": "America/New_York", "dst": {"repeat": "both"}}
    )
    assert schedule_warnings(new_york) == []


def test_excluded_days_hold_at_the_ends_of_time() -> None:
    """Kiritimati (UTC+14): New Year's Day 2000 began at 10:00 UTC on 1999-12-31, and an interval's fires
    run on to the end of year 9999, where that zone has no date: neither end raises or goes astray."""
    cron = SCHEDULE.validate_python(
        {"type": "cron", "cron": "0 * * * *", "timezone": "Pacific/Kiritimati", "exclude": {"holidays": "US"}}
    )
    assert fire_times(cron, _z("1999-06-01T00:00Z"), 1) == [_z("2000-01-01T10:00Z")]
    assert skipped_days(cron, _z("1990-01-01T00:00Z"), _z("2000-01-02T00:00Z")) == [
        "2000-01-01 New Year's Day"
    ]
    interval = SCHEDULE.validate_python(
        {
            "type": "interval",
            "every_seconds": 3600,
            "timezone": "Pacific/Kiritimati",
            "exclude": {"holidays": "US"},
        }
    )
    fires = fire_times(interval, _z("9999-12-31T20:00Z"), 5)
    assert fires == [_z(f"9999-12-31T{h}:00Z") for h in (21, 22, 23)]
    assert skipped_days(interval, _z("9999-12-31T20:00Z"), fires[-1]) == []


@pytest.mark.parametrize(
    "schedule",
    [
        {"type": "cron", "cron": "0 0 3 * * *"},
        {"type": "cron", "cron": "0 30 2 * * *", "timezone": "Europe/Berlin", "dst": {"gap": "skip"}},
        {"type": "cron", "cron": "0 */20 1-3 * * *", "timezone": "America/New_York"},
        {
            "type": "cron",
            "cron": "0 0 9 * * MON-FRI",
            "timezone": "Europe/Berlin",
            "exclude": {"holidays": "DE"},
        },
        {"type": "cron", "cron": "0 0 3 1 1 *", "end_at": "2031-06-01T00:00:00Z"},
        {"type": "interval", "every_seconds": 5400, "exclude": {"dates": ["2027-03-29", "2027-03-30"]}},
        {"type": "once", "run_at": "2027-03-28T01:30:00Z"},
    ],
)
def test_fire_times_until_stops_where_the_filter_would(schedule: dict[str, Any]) -> None:
    """`until` ends the search (reconciliation's pass asks each job for a few minutes of fires) and gives
    exactly the fires a filter of the whole count would keep: across DST changes, excluded days, end_at."""
    parsed = SCHEDULE.validate_python(schedule)
    after = _z("2027-03-20T00:00Z")
    for until in (
        "2027-03-20T00:00Z",
        "2027-03-28T01:30Z",
        "2027-03-31T12:00Z",
        "2027-11-07T07:00Z",
        "2040-01-01T00:00Z",
    ):
        bound = _z(until)
        for count in (1, 7, 400):
            want = [f for f in fire_times(parsed, after, count) if f <= bound]
            assert fire_times(parsed, after, count, bound) == want, (until, count)


def test_renewal_reads_a_listed_spec_as_temporal_sends_it() -> None:
    """Reconciliation reads the specs of Temporal's listing without the SDK's conversion (protobuf): the
    dated parts read from it are those of the SDK's spec, so a fresh spec is not renewed, a stale one is."""
    berlin = SCHEDULE.validate_python(
        {"type": "cron", "cron": "30 2 * * *", "timezone": "Europe/Berlin", "exclude": {"holidays": "DE-BY"}}
    )
    now = _z("2027-06-01T00:00Z")
    fresh, stale = temporal_spec(berlin, now), temporal_spec(berlin, _z("2025-12-01T00:00Z"))
    assert not renewal_due(berlin, fresh._to_proto(), now) and not renewal_due(berlin, fresh, now)
    assert renewal_due(berlin, stale._to_proto(), now) and renewal_due(berlin, stale, now)
