"""Backfills, misfire rules and missed fires, through the REST API with a real worker and Temporal server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from core.db import Sessions
from core.misfire import TEMPORAL_MIN_CATCHUP, Misfire, MisfirePolicy, judge
from core.models import Job
from core.schedules import fire_times
from tests.api_client import AuthedClient, expect
from tests.http_target import HttpTarget
from tests.waiting import eventually


def http_job(url: str, schedule: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": f"misfire {uuid.uuid4().hex[:6]}",
        "schedule": schedule,
        "action": {"type": "http", "method": "POST", "url": url},
        "retry_policy": {"max_attempts": 1},
        **extra,
    }


async def create(user: AuthedClient, body: dict[str, Any]) -> dict[str, Any]:
    job: dict[str, Any] = expect(await user.post("/jobs", json=body), 201)
    return job


async def runs_of(user: AuthedClient, job_id: str) -> list[dict[str, Any]]:
    page = expect(await user.get(f"/jobs/{job_id}/runs", params={"limit": 100}), 200)
    items: list[dict[str, Any]] = page["items"]
    return items


async def settled_runs(user: AuthedClient, job_id: str, n: int) -> list[dict[str, Any]]:
    """The job's runs once `n` of them have ended (run or not)."""

    async def done() -> list[dict[str, Any]] | None:
        runs = await runs_of(user, job_id)
        return runs if len([r for r in runs if r["finished_at"]]) >= n else None

    return await eventually(done, f"{n} settled runs of job {job_id}")


def minute(at: datetime) -> datetime:
    return at.replace(second=0, microsecond=0)


def stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def test_backfill_runs_each_fire_of_the_range_once(api, target: HttpTarget):
    alice = await api.authed_user()
    path = f"/{uuid.uuid4().hex[:10]}"
    job = await create(
        alice, http_job(target.url(path), {"type": "interval", "every_seconds": 60}, paused=True)
    )
    start = minute(datetime.now(UTC)) - timedelta(minutes=10)
    end = start + timedelta(minutes=4)
    body = {"start": stamp(start), "end": stamp(end), "overlap_policy": "allow_all"}
    answer = expect(await alice.post(f"/jobs/{job['id']}/backfill", json=body), 202)
    assert answer == {"count": 5}  # start and end are fires, both included
    runs = await settled_runs(alice, job["id"], 5)
    assert len(runs) == 5
    assert {r["trigger"] for r in runs} == {"backfill"}
    assert {r["status"] for r in runs} == {"succeeded"}
    fired = sorted(datetime.fromisoformat(r["scheduled_at"]) for r in runs)
    assert fired == [start + timedelta(minutes=i) for i in range(5)]
    audit = expect(await alice.get(f"/jobs/{job['id']}/audit"), 200)
    assert [e["changes"]["count"] for e in audit["items"] if e["action"] == "job.backfill"] == [5]


async def test_backfill_refuses_what_it_cannot_run(api, target: HttpTarget):
    alice = await api.authed_user()
    every_second = await create(
        alice, http_job(target.url("/x"), {"type": "interval", "every_seconds": 1}, paused=True)
    )
    now = datetime.now(UTC)
    url = f"/jobs/{every_second['id']}/backfill"

    async def refused(start: datetime, end: datetime, status: int = 422) -> dict[str, Any]:
        problem: dict[str, Any] = expect(
            await alice.post(url, json={"start": stamp(start), "end": stamp(end)}), status
        )
        return problem

    over = await refused(now - timedelta(hours=2), now - timedelta(hours=1))
    assert "CHRONOS_MAX_BACKFILL_FIRES" in over["detail"] and over["errors"][0]["loc"][-1] == "end"
    backwards = await refused(now - timedelta(minutes=1), now - timedelta(minutes=2))
    assert backwards["errors"][0]["loc"][-1] == "end"
    future = await refused(now - timedelta(minutes=1), now + timedelta(minutes=1))
    assert "future" in future["detail"]
    immediate = await create(alice, http_job(target.url("/x"), {"type": "immediate"}))
    url = f"/jobs/{immediate['id']}/backfill"
    await refused(now - timedelta(minutes=2), now - timedelta(minutes=1), 409)
    expect(await alice.post(f"/jobs/{every_second['id']}/cancel"), 200)
    url = f"/jobs/{every_second['id']}/backfill"
    await refused(now - timedelta(minutes=2), now - timedelta(minutes=1), 409)
    assert await runs_of(alice, every_second["id"]) == []


async def paused_and_resumed(
    alice: AuthedClient, sessions: Sessions, job_id: str, fires: int
) -> list[datetime]:
    """Pause the job, let `fires` of its fires pass, resume it: the fires of the pause, as the service saw
    the pause (from its row: paused_at, and fires_checked_at, the moment resume looked)."""
    expect(await alice.post(f"/jobs/{job_id}/pause"), 200)
    async with sessions() as session:
        paused_at = (await session.get(Job, job_id)).paused_at  # type: ignore[union-attr]
    assert paused_at is not None
    await eventually(
        lambda: datetime.now(UTC) > paused_at + timedelta(seconds=fires + 0.5), f"{fires} fires to pass"
    )
    expect(await alice.post(f"/jobs/{job_id}/resume"), 200)
    async with sessions() as session:
        job = await session.get(Job, job_id)
        assert job is not None and job.paused_at is None and job.fires_checked_at is not None
        looked = job.fires_checked_at
        pause = [f for f in fire_times(job.timed, paused_at, 100) if f <= looked]
    assert len(pause) >= fires
    return pause


async def fires_of_pause(
    alice: AuthedClient, job_id: str, pause: list[datetime]
) -> dict[datetime, dict[str, Any]]:
    """The run row of each fire of the pause, once each has ended; a fire with two rows fails."""

    async def settled() -> dict[datetime, dict[str, Any]] | None:
        runs = [r for r in await runs_of(alice, job_id) if r["scheduled_at"]]
        times = [datetime.fromisoformat(r["scheduled_at"]) for r in runs]
        assert len(times) == len(set(times)), f"a fire has two runs: {sorted(times)}"
        rows = {t: r for t, r in zip(times, runs, strict=True) if t in pause and r["finished_at"]}
        return rows if len(rows) == len(pause) else None

    return await eventually(settled, f"a settled run row for each of the {len(pause)} fires of the pause")


@pytest.mark.parametrize("policy", ["run_all", "run_latest", "skip"])
async def test_resume_applies_the_misfire_policy_to_the_fires_of_the_pause(
    api, sessions: Sessions, target: HttpTarget, policy: str
):
    alice = await api.authed_user()
    misfire = {"window_seconds": 3600, "policy": policy}
    body = http_job(
        target.url(f"/{uuid.uuid4().hex[:10]}"), {"type": "interval", "every_seconds": 1}, misfire=misfire
    )
    job = await create(alice, body)
    assert job["misfire"] == misfire
    pause = await paused_and_resumed(alice, sessions, job["id"], 4)
    rows = await fires_of_pause(alice, job["id"], pause)
    ran = {at for at, row in rows.items() if row["status"] == "succeeded"}
    missed = {at: row for at, row in rows.items() if row["status"] == "missed"}
    assert ran | set(missed) == set(pause)
    expected = {"run_all": set(pause), "run_latest": {pause[-1]}, "skip": set()}[policy]
    assert ran == expected
    assert all(rows[at]["trigger"] == "schedule" for at in ran)
    for row in missed.values():
        assert row["error"].startswith("missed: the job was paused") and row["attempts"] == 0
    expect(await alice.post(f"/jobs/{job['id']}/cancel"), 200)


T0 = datetime(2027, 1, 1, tzinfo=UTC)
FIRES = [T0 + timedelta(minutes=i) for i in range(5)]
NOW = FIRES[-1] + timedelta(seconds=30)


@pytest.mark.parametrize(
    ("misfire", "made_up"),
    [
        (None, []),
        (Misfire(window_seconds=3600, policy=MisfirePolicy.SKIP), []),
        (Misfire(window_seconds=3600, policy=MisfirePolicy.RUN_ALL), FIRES),
        (Misfire(window_seconds=150, policy=MisfirePolicy.RUN_ALL), FIRES[2:]),
        (Misfire(window_seconds=3600, policy=MisfirePolicy.RUN_LATEST), FIRES[-1:]),
        (Misfire(window_seconds=10, policy=MisfirePolicy.RUN_LATEST), []),
    ],
)
def test_misfire_rule_makes_up_the_fires_of_its_window(misfire: Misfire | None, made_up: list[datetime]):
    verdict = judge(misfire, FIRES, NOW, "the job was paused")
    assert verdict.backfill == made_up
    assert sorted(verdict.missed) == [f for f in FIRES if f not in made_up]
    assert all(reason.startswith("missed: the job was paused") for reason in verdict.missed.values())


def test_misfire_rule_maps_to_the_catchup_window():
    assert Misfire(window_seconds=600, policy=MisfirePolicy.RUN_ALL).catchup_window() == timedelta(minutes=10)
    assert (
        Misfire(window_seconds=600, policy=MisfirePolicy.RUN_LATEST).catchup_window() == TEMPORAL_MIN_CATCHUP
    )
