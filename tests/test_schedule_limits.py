"""Schedules a user cannot abuse: dates Temporal and Python both handle, no run_at that never runs, a
floor on fire spacing, and lists that no stored schedule can break (through the REST API)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.main import create_app
from core.db import Sessions
from core.models import Job
from core.schedules import RUN_AT_GRACE, Schedule
from core.temporal import TemporalGateway
from tests.api_client import ApiClient, AuthedClient, app_settings, expect, serve
from tests.conftest import sqlite_only
from tests.http_target import HttpTarget
from tests.waiting import eventually

URL = "http://example.org/hook"


def job(schedule: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "limits", "schedule": schedule, "action": {"type": "http", "url": URL}, **extra}


def refused(problem: dict[str, Any], field: str, words: str) -> None:
    error = problem["errors"][0]
    assert error["loc"][:3] == ["body", "schedule", field], problem
    assert words.lower() in error["msg"].lower(), problem


async def create_and_preview_refuse(
    user: AuthedClient, schedule: dict[str, Any], field: str, words: str
) -> None:
    refused(expect(await user.post("/jobs", json=job(schedule)), 422), field, words)
    refused(expect(await user.post("/schedules/preview", json={"schedule": schedule}), 422), field, words)


@sqlite_only
@pytest.mark.parametrize("year", ["0001", "1999", "2101", "9999"])
@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        ({"type": "once", "run_at": "{year}-12-31T23:59:00Z"}, "run_at"),
        ({"type": "interval", "every_seconds": 60, "start_at": "{year}-12-31T23:59:00Z"}, "start_at"),
        ({"type": "cron", "cron": "@daily", "end_at": "{year}-01-01T00:00:00Z"}, "end_at"),
    ],
)
async def test_dates_outside_the_cron_years_are_refused(
    api: ApiClient, year: str, schedule: dict[str, Any], field: str
) -> None:
    alice = await api.authed_user()
    dated = {
        key: value.format(year=year) if isinstance(value, str) else value for key, value in schedule.items()
    }
    await create_and_preview_refuse(alice, dated, field, "years 2000 to 2100")
    assert expect(await alice.get("/jobs"), 200)["total"] == 0


async def test_a_run_at_in_the_past_is_refused_beyond_the_grace(api: ApiClient) -> None:
    alice = await api.authed_user()
    await create_and_preview_refuse(
        alice, {"type": "once", "run_at": "2020-01-01T10:00:00Z"}, "run_at", "past"
    )
    soon = {"type": "once", "run_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
    made = expect(await alice.post("/jobs", json=job(soon, paused=True)), 201)
    past = {"schedule": {"type": "once", "run_at": "2020-01-01T10:00:00Z"}}
    refused(expect(await alice.patch(f"/jobs/{made['id']}", json=past), 422), "run_at", "past")
    late = datetime.now(UTC) - RUN_AT_GRACE / 2
    preview = {"schedule": {"type": "once", "run_at": late.isoformat()}}
    assert expect(await alice.post("/schedules/preview", json=preview), 200)["next_runs"] == []


async def test_a_run_at_that_has_just_passed_runs_at_once(api: ApiClient, target: HttpTarget) -> None:
    """Inside the grace a one-time job still runs, on creation and after a PATCH, with run_at as its
    nominal time (Temporal fires no calendar time from before the schedule existed: it is backfilled)."""
    alice = await api.authed_user()
    late = (datetime.now(UTC) - timedelta(seconds=5)).replace(microsecond=0)
    action = {"type": "http", "url": target.url("/late")}
    created = {"type": "once", "run_at": late.isoformat()}
    made = expect(await alice.post("/jobs", json={**job(created), "action": action}), 201)
    await target.wait_for("/late")
    run = (await eventually(lambda: runs_of(alice, made["id"]), "the late job's run"))[0]
    assert datetime.fromisoformat(run["scheduled_at"]) == late

    later = {"type": "once", "run_at": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
    moved = expect(await alice.post("/jobs", json={**job(later), "action": action}), 201)
    back = {"type": "once", "run_at": (datetime.now(UTC) - timedelta(seconds=5)).isoformat()}
    expect(await alice.patch(f"/jobs/{moved['id']}", json={"schedule": back}), 200)
    await target.wait_for("/late", count=2)
    assert len(await eventually(lambda: runs_of(alice, moved["id"]), "the moved job's run")) == 1


async def runs_of(user: AuthedClient, job_id: str) -> list[dict[str, Any]]:
    return list(expect(await user.get(f"/jobs/{job_id}/runs"), 200)["items"])


@sqlite_only
async def test_a_cron_that_never_fires_is_refused(api: ApiClient) -> None:
    alice = await api.authed_user()
    await create_and_preview_refuse(alice, {"type": "cron", "cron": "0 0 30 2 *"}, "cron", "never fires")


@pytest.fixture
async def spaced(
    db_engine: AsyncEngine, temporal_client: Client, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ApiClient]:
    """The API with CHRONOS_MIN_FIRE_SPACING_SECONDS=60 (no worker: nothing here runs)."""
    settings = app_settings(db_engine, tmp_path_factory.mktemp("spaced"), min_fire_spacing_seconds=60)
    async with serve(create_app(settings, TemporalGateway.of(temporal_client))) as client:
        yield client


@sqlite_only
@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        ({"type": "interval", "every_seconds": 59}, "every_seconds"),
        ({"type": "cron", "cron": "*/30 * * * * ?"}, "cron"),
        ({"type": "cron", "cron": "0,59 * * * * ?"}, "cron"),  # 59 s then 1 s apart
    ],
)
async def test_fires_closer_than_the_setting_are_refused(
    spaced: ApiClient, schedule: dict[str, Any], field: str
) -> None:
    alice = await spaced.authed_user()
    await create_and_preview_refuse(alice, schedule, field, "CHRONOS_MIN_FIRE_SPACING_SECONDS")


@sqlite_only
async def test_fires_the_setting_allows_are_accepted(spaced: ApiClient) -> None:
    alice = await spaced.authed_user()
    for schedule in ({"type": "interval", "every_seconds": 60}, {"type": "cron", "cron": "0 * * * * ?"}):
        expect(await alice.post("/schedules/preview", json={"schedule": schedule}), 200)


async def test_no_stored_schedule_breaks_the_list(api: ApiClient, sessions: Sessions) -> None:
    """Jobs made before the date rules (or written by hand) still list, with fewer or no next runs."""
    alice = await api.authed_user()
    last, first = "9999-12-31T23:59:00Z", "0001-01-01T00:00:00Z"
    dense = {"type": "cron", "cron": "* * * * * ?"}
    stored: list[dict[str, Any]] = [
        {"type": "interval", "every_seconds": 60, "start_at": last},
        {**dense, "timezone": "Etc/GMT+12", "start_at": last},
        {**dense, "timezone": "Pacific/Kiritimati", "end_at": first},
        {"type": "once", "run_at": first},
    ]
    made = [expect(await alice.post("/jobs", json=job(dense, paused=True)), 201) for _ in [*stored, "dense"]]
    async with sessions() as session:
        for created, schedule in zip(made, stored, strict=False):
            row = await session.get(Job, created["id"])
            assert row is not None
            row.schedule = TypeAdapter(Schedule).validate_python(schedule)
            session.add(row)
        await session.commit()
    page = expect(await alice.get("/jobs", params={"limit": 100}), 200)
    listed = {item["id"]: item["next_runs"] for item in page["items"]}
    assert [listed[created["id"]] for created in made[: len(stored)]] == [[]] * len(stored)
    runs = [datetime.fromisoformat(t) for t in listed[made[-1]["id"]]]
    assert len(runs) == 5 and all(b - a == timedelta(seconds=1) for a, b in pairwise(runs))
