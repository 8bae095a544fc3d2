"""The `next_runs` that a create answers with are computed locally (core/schedules.py `fire_times`), while
`GET /jobs/{id}` reads them back from the schedule's describe(): both must list the same times. Each case
is made into its Temporal schedule exactly as a job's (core/job_schedules.py) on the real dev server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import Client

from core.config import Settings
from core.job_schedules import create_schedule, described_next_runs, jittered, upcoming_local
from core.models import Job, JobCreate, new_id
from core.payloads import schedule_id
from core.schedules import fire_times
from tests.api_client import ENCRYPTION_KEYS

NEW_YORK = "America/New_York"
SOON = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
ON_THE_HOUR = SOON.replace(minute=0, second=0)
CASES: dict[str, dict[str, Any]] = {
    "posix every 7 minutes": {"type": "cron", "cron": "*/7 * * * *"},
    "posix weekdays, New York": {"type": "cron", "cron": "30 9 * * 1-5", "timezone": "America/New_York"},
    "spring weekdays, Berlin": {"type": "cron", "cron": "0 15 10 * * MON-FRI", "timezone": "Europe/Berlin"},
    "spring day 0 is Sunday": {"type": "cron", "cron": "0 0 8 * * 0", "dialect": "spring"},
    "quartz first Monday": {"type": "cron", "cron": "0 0 12 ? * 2#1", "dialect": "quartz"},
    "quartz last day, 7 fields": {"type": "cron", "cron": "0 0 6 L * ? *", "timezone": "Asia/Tokyo"},
    "quartz nearest weekday": {"type": "cron", "cron": "0 0 9 15W * ?", "timezone": "Asia/Kolkata"},
    # Every Sunday of March at 02:30 in Berlin: one of them falls into the spring-forward gap.
    "fixed time in a DST gap": {"type": "cron", "cron": "0 30 2 * 3 SUN", "timezone": "Europe/Berlin"},
    # Sundays of November at 01:30 in New York: one is a repeated wall time, run once.
    "fixed time in a repeated hour": {"type": "cron", "cron": "0 30 1 * 11 0", "timezone": NEW_YORK},
    "half-hour DST zone": {"type": "cron", "cron": "0 0 */5 * * *", "timezone": "Australia/Lord_Howe"},
    "cron inside a window": {
        "type": "cron",
        "cron": "0 0 * * * *",
        "start_at": SOON.isoformat(),
        "end_at": (SOON + timedelta(hours=3, minutes=30)).isoformat(),
    },
    "interval every hour, offset": {"type": "interval", "every_seconds": 3600, "offset_seconds": 120},
    "interval every 90 s from start_at": {
        "type": "interval",
        "every_seconds": 90,
        "start_at": (SOON + timedelta(seconds=17)).isoformat(),
    },
    # start_at on a fire instant: Temporal fires at start_at itself.
    "interval from start_at on a fire": {
        "type": "interval",
        "every_seconds": 90,
        "start_at": datetime.fromtimestamp(SOON.timestamp() // 90 * 90, UTC).isoformat(),
    },
    "cron from start_at to end_at, both on a fire": {
        "type": "cron",
        "cron": "0 * * * *",
        "start_at": ON_THE_HOUR.isoformat(),
        "end_at": (ON_THE_HOUR + timedelta(hours=2)).isoformat(),
    },
    "once": {"type": "once", "run_at": (SOON + timedelta(milliseconds=250)).isoformat()},
}


def job_of(schedule: dict[str, Any], paused: bool = False) -> Job:
    body = JobCreate.model_validate(
        {
            "name": "next runs",
            "schedule": schedule,
            "action": {"type": "http", "url": "https://example.org/hook"},
            "paused": paused,
        }
    )
    return Job.model_validate(body, update={"id": new_id(), "owner_id": "next-runs-test"})


@pytest.mark.parametrize("paused", [False, True], ids=["live", "paused"])
@pytest.mark.parametrize("case", list(CASES))
async def test_local_next_runs_agree_with_describe(temporal_client: Client, case: str, paused: bool) -> None:
    job = job_of(CASES[case], paused)
    assert not jittered(job)
    settings = Settings(encryption_keys=ENCRYPTION_KEYS)
    before = datetime.now(UTC)
    await create_schedule(temporal_client, settings, job)
    try:
        after = datetime.now(UTC)
        described = await described_next_runs(temporal_client, job)
        local = upcoming_local(job, before)
        # Temporal counts from when it made the schedule, somewhere in [before, after]: a fire in between
        # may be on the local list only.
        if local and described and local[0] < described[0] and local[0] <= after:
            local = upcoming_local(job, local[0])
        assert described, "every case has coming fires"
        assert local == described[: len(local)]
        assert len(local) == min(5, len(described))
    finally:
        await temporal_client.get_schedule_handle(schedule_id(job.id)).delete()


def test_a_jittered_schedule_is_read_back_from_temporal() -> None:
    assert jittered(job_of({"type": "interval", "every_seconds": 60, "jitter_seconds": 5}))
    assert not jittered(job_of({"type": "immediate"}))


@pytest.mark.parametrize("case", list(CASES))
def test_kept_fires_are_the_fires_computed_anew(case: str) -> None:
    """A list shown again reuses a job's fires until the first of them passes: at every instant the
    answer is what `fire_times` computes then, before, at and after that first fire."""
    job = job_of(CASES[case])
    start = datetime.now(UTC)
    first = upcoming_local(job, start)[0]
    tick = timedelta(microseconds=1)
    for now in (start, start + tick, first - tick, first, first + tick, first + timedelta(days=1), start):
        assert upcoming_local(job, now) == fire_times(job.timed, now, 5), now
        assert upcoming_local(job, now, 2) == fire_times(job.timed, now, 2), now


def test_a_changed_schedule_is_not_answered_with_the_old_ones_fires() -> None:
    job = job_of({"type": "cron", "cron": "0 0 3 * * *"})
    now = datetime.now(UTC)
    upcoming_local(job, now)
    changed = job_of({"type": "cron", "cron": "0 0 4 * * *"})
    changed.id = job.id
    assert upcoming_local(changed, now) == fire_times(changed.timed, now, 5)
