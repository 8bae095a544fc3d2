"""Backfills, misfire rules and missed fires, through the REST API with a real worker and Temporal server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

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
