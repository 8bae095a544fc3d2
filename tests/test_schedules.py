"""Schedules compile to Temporal specs whose fire times, as Temporal reports them, are what users mean."""

# ruff: noqa: RUF001 -- the ranges in error messages use an en dash, as API.md does

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from pydantic import TypeAdapter, ValidationError
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleState,
)

from activities.mirror import skip_reason
from core.payloads import FixedCron, RunStarted, Trigger
from core.schedules import CronSchedule, IntervalSchedule, OnceSchedule, next_runs, temporal_spec
from core.schedules import Schedule as UserSchedule

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
    stepped = FixedCron(cron="*/30 * * * *", timezone="America/New_York")
    assert skip_reason(_fire(second, stepped)) is None  # wildcard hours run by elapsed time
