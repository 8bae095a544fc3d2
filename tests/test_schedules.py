"""Schedules compile to Temporal specs whose fire times, as Temporal reports them, are what users mean."""

# ruff: noqa: RUF001 -- the ranges in error messages use an en dash, as API.md does

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import TypeAdapter, ValidationError
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleState,
)

from activities.mirror import skip_reason
from core.job_schedules import overdue
from core.models import Job
from core.payloads import FixedCron, HttpAction, RunStarted, Trigger
from core.schedules import (
    CronSchedule,
    IntervalSchedule,
    OnceSchedule,
    next_runs,
    schedule_warnings,
    temporal_spec,
)
from core.schedules import Schedule as UserSchedule
from core.schedules import fire_times as local_fire_times

SCHEDULE = TypeAdapter(UserSchedule)


def z(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


async def fire_times(client: Client, schedule: OnceSchedule | CronSchedule | IntervalSchedule, now: datetime):
    sid = f"test-sched-{uuid.uuid4().hex[:8]}"
    handle = await client.create_schedule(
        sid,
        Schedule(
            action=ScheduleActionStartWorkflow("Nothing", id=sid, task_queue="nowhere"),
            spec=temporal_spec(schedule, now),
            state=ScheduleState(paused=True),
        ),
    )
    try:
        return next_runs(schedule, (await handle.describe()).info.next_action_times)
    finally:
        await handle.delete()


async def test_six_fields_are_seconds_first(temporal_client):
    schedule = CronSchedule(cron="0 */2 * * * *", start_at=z("2030-01-01T00:00:30Z"))
    assert await fire_times(temporal_client, schedule, schedule.start_at) == [  # type: ignore[arg-type]
        z("2030-01-01T00:02:00Z"),
        z("2030-01-01T00:04:00Z"),
        z("2030-01-01T00:06:00Z"),
        z("2030-01-01T00:08:00Z"),
        z("2030-01-01T00:10:00Z"),
    ]


async def test_spring_forward_runs_once_right_after_the_gap(temporal_client):
    start = z("2027-03-12T05:00:00Z")
    schedule = CronSchedule(cron="30 2 * * *", timezone="America/New_York", start_at=start)
    assert await fire_times(temporal_client, schedule, start) == [
        z("2027-03-12T07:30:00Z"),
        z("2027-03-13T07:30:00Z"),
        z("2027-03-14T07:00:00Z"),  # 03:00 EDT, the first instant after the gap
        z("2027-03-15T06:30:00Z"),
        z("2027-03-16T06:30:00Z"),
    ]


async def test_fall_back_runs_a_repeated_time_once(temporal_client):
    start = z("2027-11-06T04:00:00Z")
    schedule = CronSchedule(cron="30 1 * * *", timezone="America/New_York", start_at=start)
    assert await fire_times(temporal_client, schedule, start) == [
        z("2027-11-06T05:30:00Z"),
        z("2027-11-07T05:30:00Z"),  # 01:30 EDT; the repeat at 01:30 EST is skipped
        z("2027-11-08T06:30:00Z"),
        z("2027-11-09T06:30:00Z"),
        z("2027-11-10T06:30:00Z"),
    ]


async def test_interval_and_once(temporal_client):
    start = z("2030-01-01T00:00:00Z")
    every = IntervalSchedule(every_seconds=90, start_at=start)
    assert (await fire_times(temporal_client, every, start))[:2] == [
        z("2030-01-01T00:00:00Z"),
        z("2030-01-01T00:01:30Z"),
    ]
    once = OnceSchedule(run_at=z("2030-05-06T07:08:09+02:00"))
    assert await fire_times(temporal_client, once, start) == [z("2030-05-06T05:08:09Z")]
    # A sub-second run_at fires at the next whole second, never before it.
    late = OnceSchedule(run_at=z("2030-05-06T07:08:09.250+02:00"))
    assert await fire_times(temporal_client, late, start) == [z("2030-05-06T05:08:10Z")]


@pytest.mark.parametrize(
    "schedule",
    [IntervalSchedule(every_seconds=90, start_at=z("2030-01-01T00:00:00Z")), CronSchedule(cron="0 * * * *")],
    ids=["interval", "cron"],
)
def test_a_fire_at_start_at_itself_is_listed_locally(schedule: CronSchedule | IntervalSchedule) -> None:
    """Temporal fires at start_at itself (test_interval_and_once); the local list, searched after `now`,
    must count it too, and not a whole second before a sub-second start_at."""
    on_fire, before = z("2030-01-01T00:00:00Z"), z("2029-12-31T00:00:00Z")
    assert local_fire_times(schedule.model_copy(update={"start_at": on_fire}), before, 1) == [on_fire]
    just_after = schedule.model_copy(update={"start_at": on_fire + timedelta(milliseconds=1)})
    assert local_fire_times(just_after, before, 1) > [on_fire]
    # end_at bounds them inclusively too: over two hours, 3 hourly fires or 81 every 90 s.
    window = schedule.model_copy(update={"start_at": on_fire, "end_at": on_fire + timedelta(hours=2)})
    assert len(local_fire_times(window, before, 100)) == (3 if isinstance(schedule, CronSchedule) else 81)


@pytest.mark.parametrize(
    ("run_at", "fires"),
    [
        ("2030-05-06T07:08:09+02:00", "2030-05-06T05:08:09Z"),
        ("2030-05-06T07:08:09.000001+02:00", "2030-05-06T05:08:10Z"),
        ("2030-05-06T07:08:09.999999+02:00", "2030-05-06T05:08:10Z"),
        ("2030-12-31T23:59:59.5Z", "2031-01-01T00:00:00Z"),
    ],
)
def test_a_one_time_job_never_fires_before_its_run_at(run_at: str, fires: str) -> None:
    once = OnceSchedule(run_at=z(run_at))
    assert once.fire_at == z(fires) >= once.run_at
    (calendar,) = temporal_spec(once, z("2030-01-01T00:00:00Z")).calendars
    fields = (
        calendar.year,
        calendar.month,
        calendar.day_of_month,
        calendar.hour,
        calendar.minute,
        calendar.second,
    )
    at = z(fires)
    assert [r[0].start for r in fields] == [at.year, at.month, at.day, at.hour, at.minute, at.second]
    assert local_fire_times(once, z("2030-01-01T00:00:00Z"), 3) == [at]
    assert local_fire_times(once, at, 3) == []


def test_a_just_passed_sub_second_run_at_is_backfilled_over_its_fire_time() -> None:
    now = datetime.now(UTC)
    passed = _once_job(now - timedelta(seconds=5, microseconds=300_000))
    (backfill,) = overdue(passed)
    fire_at = passed.timed.fire_at  # type: ignore[union-attr]
    assert fire_at.microsecond == 0 and backfill.start_at < fire_at < backfill.end_at
    assert backfill.end_at - backfill.start_at == timedelta(seconds=2)
    assert overdue(_once_job(now + timedelta(hours=1, microseconds=300_000))) == []


def _once_job(run_at: datetime) -> Job:
    action = HttpAction(url="http://example.org/x")
    return Job(name="once", owner_id="u", schedule=OnceSchedule(run_at=run_at), action=action)


@pytest.mark.parametrize(
    ("body", "where", "says"),
    [
        ({"cron": "0 0 12 * * *", "dialect": "posix"}, "dialect", "POSIX cron has 5 fields"),
        ({"cron": "0 12 * * *", "dialect": "quartz"}, "dialect", "Quartz cron has 6 or 7 fields"),
        ({"cron": "0 0 12 * * ? 2030", "dialect": "spring"}, "dialect", "Spring cron has 6 fields"),
        ({"cron": "0 0 12 ? * 0", "dialect": "quartz"}, "cron", "0 is out of range 1–7"),
        ({"cron": "0 0 12 ? * 2", "dialect": "cronie"}, "dialect", "'posix', 'spring' or 'quartz'"),
    ],
)
def test_a_dialect_must_fit_the_expression(body: dict[str, str], where: str, says: str) -> None:
    with pytest.raises(ValidationError) as info:
        SCHEDULE.validate_python({"type": "cron", **body})
    error = info.value.errors()[0]
    assert tuple(error["loc"]) == ("cron", where)
    assert says in error["msg"], error


def test_the_dialect_is_kept_only_when_given() -> None:
    given = CronSchedule(cron="0 15 10 ? * 6#3", dialect="quartz")
    assert SCHEDULE.dump_python(given, mode="json")["dialect"] == "quartz"
    assert "dialect" not in SCHEDULE.dump_python(CronSchedule(cron="@daily"), mode="json")
    assert SCHEDULE.validate_python({"type": "cron", "cron": "@daily"}) == CronSchedule(cron="@daily")
    assert (
        schedule_warnings(given) == []
        and schedule_warnings(OnceSchedule(run_at=z("2030-01-01T00:00:00Z"))) == []
    )
    assert schedule_warnings(CronSchedule(cron="0 15 10 ? * 6#3"))[0].startswith("day-of-week 6#3 reads as")


@pytest.mark.parametrize("zone", ["localtime", "posixrules", "posix/Europe/Berlin", "right/UTC", "Europe"])
def test_a_time_zone_is_one_of_the_iana_database(zone: str) -> None:
    """ZoneInfo opens more than zone names: `localtime` is whatever zone the machine reading it is set to
    (the API's, the worker's and Temporal's may differ), and the `right/` zones count leap seconds."""
    with pytest.raises(ValidationError) as info:
        SCHEDULE.validate_python({"type": "cron", "cron": "0 9 * * *", "timezone": zone})
    assert info.value.errors()[0]["msg"] == f"unknown IANA time zone '{zone}'"
    for name in ("UTC", "Europe/Berlin", "US/Eastern", "Etc/GMT+5"):
        SCHEDULE.validate_python({"type": "cron", "cron": "0 9 * * *", "timezone": name})


@pytest.mark.parametrize(
    ("body", "where", "says"),
    [
        ({"type": "cron", "cron": "0 25 * * *"}, ("cron", "cron"), "hour: 25 is out of range 0–23"),
        ({"type": "cron", "cron": "* * *"}, ("cron", "cron"), "expression"),
        ({"type": "cron", "cron": "0 9 * * *", "timezone": "Mars/Base"}, ("cron", "timezone"), "Mars/Base"),
        (
            {"type": "interval", "every_seconds": 0},
            ("interval", "every_seconds"),
            "greater than or equal to 1",
        ),
        ({"type": "interval", "every_seconds": 10, "offset_seconds": 10}, ("interval",), "offset_seconds"),
        ({"type": "once", "run_at": "2030-01-01T00:00:00"}, ("once", "run_at"), "timezone"),
        (
            {
                "type": "cron",
                "cron": "@daily",
                "start_at": "2030-01-02T00:00:00Z",
                "end_at": "2030-01-01T00:00:00Z",
            },
            ("cron",),
            "end_at must be after start_at",
        ),
        ({"type": "weekly"}, (), "type"),
    ],
)
def test_invalid_schedules_say_where_and_why(body, where, says):
    with pytest.raises(ValidationError) as info:
        SCHEDULE.validate_python(body)
    error = info.value.errors()[0]
    assert tuple(error["loc"]) == where
    assert says in error["msg"]


def test_next_runs_are_utc():
    schedule = CronSchedule(cron="@daily", timezone="Europe/Berlin")
    assert next_runs(schedule, [datetime(2030, 1, 1, 23, tzinfo=UTC)]) == [z("2030-01-01T23:00:00Z")]


def _fire(at: datetime, rule: FixedCron | None, trigger: Trigger = Trigger.SCHEDULE) -> RunStarted:
    return RunStarted(
        run_id="r",
        temporal_run_id="t",
        job_id="j",
        owner_id="o",
        trigger=trigger,
        scheduled_at=at,
        started_at=at,
        fixed_cron=rule,
    )


def test_a_run_at_a_repeated_fall_back_time_is_skipped() -> None:
    """`30 1 * * *` in New York: 01:30 happens twice on 2026-11-01; the second fire ends as a skip."""
    rule = FixedCron(cron="30 1 * * *", timezone="America/New_York")
    first, second = datetime(2026, 11, 1, 5, 30, tzinfo=UTC), datetime(2026, 11, 1, 6, 30, tzinfo=UTC)
    assert skip_reason(_fire(first, rule)) is None
    reason = skip_reason(_fire(second, rule))
    assert reason == "skipped: 01:30:00 already ran on 2026-11-01 (daylight-saving fall-back)"
    assert skip_reason(_fire(second, rule, trigger=Trigger.MANUAL)) is None
    assert skip_reason(_fire(second, None)) is None
    # 2026-11-01 is a Sunday: day 1 in Quartz's numbering, whose rule the run must read in its dialect.
    quartz = FixedCron(cron="0 30 1 ? * 1", timezone="America/New_York", dialect="quartz")
    assert skip_reason(_fire(first, quartz)) is None
    assert skip_reason(_fire(second, quartz)) == reason
    spring = FixedCron(cron="0 30 1 ? * 1", timezone="America/New_York")  # Mondays: no such fire
    assert skip_reason(_fire(first, spring)) is not None
    stepped = FixedCron(cron="*/30 * * * *", timezone="America/New_York")
    assert skip_reason(_fire(second, stepped)) is None  # wildcard hours run by elapsed time
