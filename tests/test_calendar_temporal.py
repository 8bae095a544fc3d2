"""Excluded days and DST rules as Temporal really schedules them: the spec `temporal_spec` compiles is
created on the dev server, and its next action times (less the fires runs skip, `next_runs`) must be the
fire times computed here (`fire_times`, what previews and lists show) and the ones each rule promises."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter
from temporalio.client import Client, Schedule, ScheduleActionStartWorkflow, ScheduleState

from core.schedules import CronSchedule, IntervalSchedule, fire_times, next_runs, temporal_spec
from core.schedules import Schedule as Timed
from tests.test_cron_temporal import fixed_cases

TIMED: TypeAdapter[Any] = TypeAdapter(Timed)


async def temporal_runs(
    client: Client, schedule: CronSchedule | IntervalSchedule, start: datetime
) -> list[datetime]:
    """What Chronos runs of a schedule made at `start` with start_at a second later: Temporal's next
    action times (it lists ten) less the fires the run skips."""
    handle = await client.create_schedule(
        f"calendar-test-{uuid.uuid4()}",
        Schedule(
            action=ScheduleActionStartWorkflow("Nothing", id="x", task_queue="calendar-test"),
            spec=temporal_spec(schedule, start),
            state=ScheduleState(paused=True),
        ),
    )
    try:
        return next_runs(schedule, (await handle.describe()).info.next_action_times, limit=10)
    finally:
        await handle.delete()


def _schedule(start: datetime, **fields: Any) -> Any:
    return TIMED.validate_python({**fields, "start_at": (start + timedelta(seconds=1)).isoformat()})


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


# (zone, fixed-time cron, start, the day's walls, {rule: the day's runs}); a rule not listed runs as `first`.
# North behind UTC (New York), south behind UTC (Santiago, whose clocks change at midnight), north east of
# UTC (Berlin), south east of UTC (Sydney) and Lord Howe's 30-minute shift.
REPEATS = [
    ("America/New_York", "30 1 * * *", "2027-11-06T12:00Z",
     {"first": ["2027-11-07T01:30-04:00"], "second": ["2027-11-07T01:30-05:00"],
      "both": ["2027-11-07T01:30-04:00", "2027-11-07T01:30-05:00"]}),
    ("America/Santiago", "30 23 * * *", "2027-04-03T12:00Z",
     {"first": ["2027-04-03T23:30-03:00"], "second": ["2027-04-03T23:30-04:00"],
      "both": ["2027-04-03T23:30-03:00", "2027-04-03T23:30-04:00"]}),
    # East of UTC Temporal fires only the second occurrence (docs/cron.md): every rule gets that one.
    ("Europe/Berlin", "30 2 * * *", "2027-10-30T12:00Z",
     {"first": ["2027-10-31T02:30+01:00"], "second": ["2027-10-31T02:30+01:00"],
      "both": ["2027-10-31T02:30+01:00"]}),
    ("Australia/Sydney", "30 2 * * *", "2027-04-03T00:00Z",
     {"first": ["2027-04-04T02:30+10:00"], "second": ["2027-04-04T02:30+10:00"],
      "both": ["2027-04-04T02:30+10:00"]}),
    ("Australia/Lord_Howe", "45 1 * * *", "2027-04-03T00:00Z",
     {"first": ["2027-04-04T01:45+10:30"], "second": ["2027-04-04T01:45+10:30"],
      "both": ["2027-04-04T01:45+10:30"]}),
    # ... unless the hour before fires too: then it fires only the first, which every rule gets.
    ("Europe/Berlin", "30 1,2 * * *", "2027-10-30T12:00Z",
     {rule: ["2027-10-31T01:30+02:00", "2027-10-31T02:30+02:00"] for rule in ("first", "second", "both")}),
]  # fmt: skip
GAPS = [
    ("America/New_York", "30 2 * * *", "2027-03-13T12:00Z", "2027-03-14T03:00-04:00"),
    ("America/Santiago", "30 0 * * *", "2027-09-04T12:00Z", "2027-09-05T01:00-03:00"),
    ("Europe/Berlin", "30 2 * * *", "2027-03-27T12:00Z", "2027-03-28T03:00+02:00"),
    ("Australia/Sydney", "30 2 * * *", "2027-10-02T00:00Z", "2027-10-03T03:00+11:00"),
    # Temporal moves 02:15 by the 30-minute shift to 02:45; Chronos runs it at 02:30 or not at all.
    ("Australia/Lord_Howe", "15 2 * * *", "2027-10-02T00:00Z", "2027-10-03T02:30+11:00"),
]


def _on_day(runs: list[datetime], day: str, zone: str) -> list[datetime]:
    return [r for r in runs if r.astimezone(ZoneInfo(zone)).date().isoformat() == day]


@pytest.mark.parametrize("repeat", ["first", "second", "both"])
@pytest.mark.parametrize(("zone", "cron", "start", "expected"), REPEATS)
async def test_repeated_times_run_as_the_rule_says_in_temporal_and_here(
    temporal_client: Client, zone: str, cron: str, start: str, expected: dict[str, list[str]], repeat: str
) -> None:
    begin = _at(start)
    schedule = _schedule(begin, type="cron", cron=cron, timezone=zone, dst={"repeat": repeat})
    runs = await temporal_runs(temporal_client, schedule, begin)
    assert runs == fire_times(schedule, begin, len(runs)) and len(runs) >= 5
    day = expected[repeat][0][:10]
    assert _on_day(runs, day, zone) == [_at(e) for e in expected[repeat]]


@pytest.mark.parametrize("gap", ["shift", "skip"])
@pytest.mark.parametrize(("zone", "cron", "start", "shifted"), GAPS)
async def test_gap_times_shift_or_skip_in_temporal_and_here(
    temporal_client: Client, zone: str, cron: str, start: str, shifted: str, gap: str
) -> None:
    begin = _at(start)
    schedule = _schedule(begin, type="cron", cron=cron, timezone=zone, dst={"gap": gap})
    runs = await temporal_runs(temporal_client, schedule, begin)
    assert runs == fire_times(schedule, begin, len(runs)) and len(runs) >= 5
    assert _on_day(runs, shifted[:10], zone) == ([_at(shifted)] if gap == "shift" else [])


async def test_the_default_rule_is_the_cron_convention(temporal_client: Client) -> None:
    """No `dst` and `{}` are one rule: shift gap times, the first occurrence where Temporal fires it."""
    begin = _at("2027-11-06T12:00Z")
    plain = _schedule(begin, type="cron", cron="30 1 * * *", timezone="America/New_York")
    explicit = _schedule(begin, type="cron", cron="30 1 * * *", timezone="America/New_York", dst={})
    assert temporal_spec(plain, begin) == temporal_spec(explicit, begin)
    runs = await temporal_runs(temporal_client, plain, begin)
    assert runs == fire_times(explicit, begin, len(runs))
    assert runs[0] == _at("2027-11-07T01:30-04:00")


async def test_holidays_and_dates_are_whole_local_days_in_temporal(temporal_client: Client) -> None:
    """Weekdays at 09:00 in New York over Christmas 2027: the 24th (observed Christmas and a given date),
    and the 31st (observed New Year's Day 2028) do not run, in Temporal as here."""
    begin = _at("2027-12-20T00:00Z")
    schedule = _schedule(
        begin,
        type="cron",
        cron="0 9 * * MON-FRI",
        timezone="America/New_York",
        exclude={"holidays": "US", "dates": ["2027-12-28"]},
    )
    runs = await temporal_runs(temporal_client, schedule, begin)
    days = [r.astimezone(ZoneInfo(schedule.timezone)).day for r in runs]
    assert days == [20, 21, 22, 23, 27, 29, 30, 3, 4, 5]
    assert runs == fire_times(schedule, begin, 10)


async def test_a_dense_schedule_skips_the_whole_local_day(temporal_client: Client) -> None:
    """Every 15 minutes in Bavaria: none from 00:00 to 23:59:59 local on Epiphany, in Temporal as here."""
    begin = _at("2027-01-05T22:00+01:00")
    schedule = _schedule(begin, type="cron", cron="*/15 * * * *", timezone="Europe/Berlin",
                         exclude={"holidays": "DE-BY"})  # fmt: skip
    runs = await temporal_runs(temporal_client, schedule, begin)
    assert runs == fire_times(schedule, begin, 10)
    assert runs[6:] == [_at(f"2027-01-{t}+01:00") for t in ("05T23:45", "07T00:00", "07T00:15", "07T00:30")]


async def test_interval_exclusions_count_days_in_its_zone(temporal_client: Client) -> None:
    begin = _at("2027-12-24T12:00Z")
    schedule = _schedule(
        begin, type="interval", every_seconds=6 * 3600, timezone="Europe/Berlin", exclude={"holidays": "DE"}
    )
    runs = await temporal_runs(temporal_client, schedule, begin)
    assert runs == fire_times(schedule, begin, 10)
    # 23:00 UTC on the 24th is 00:00 on Christmas Day in Berlin: none until 00:00 UTC on the 27th.
    assert runs[:3] == [_at("2027-12-24T18:00Z"), _at("2027-12-27T00:00Z"), _at("2027-12-27T06:00Z")]


@settings(max_examples=30, deadline=None)
@given(
    case=fixed_cases(),
    gap=st.sampled_from(["shift", "skip"]),
    repeat=st.sampled_from(["first", "second", "both"]),
)
async def test_every_rule_lists_what_temporal_fires(
    temporal_client: Client, case: tuple[str, str, datetime], gap: str, repeat: str
) -> None:
    """Fixed times around the 2027 transitions of New York, Berlin and Santiago, under any rule: the
    fire times computed here are the ones Temporal fires, less those the run skips."""
    cron, zone, begin = case
    schedule = _schedule(begin, type="cron", cron=cron, timezone=zone, dst={"gap": gap, "repeat": repeat})
    runs = await temporal_runs(temporal_client, schedule, begin)
    assert runs == fire_times(schedule, begin, len(runs)), (cron, zone, begin)
