"""Per-user quotas and rate limits through the HTTP app, on apps with small limits (the general suite's are
lifted in tests/api_client.py), including two app instances sharing one database."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from temporalio.client import Client, WorkflowExecutionStatus

from api.main import create_app
from core.db import make_sessions
from core.errors import RateLimited
from core.limits import PRUNE_AFTER, WINDOW, Limits
from core.models import Limit, RateEvent, User, utcnow
from core.temporal import TemporalGateway
from tests.api_client import ApiClient, AuthedClient, app_settings, expect, serve
from tests.waiting import eventually

# Two app instances verify each other's tokens only with one shared key, as API replicas do.
JWT_SECRET = "limits-test-secret-limits-test-secret"


def cron_job() -> dict[str, Any]:
    return {
        "name": "yearly",
        "schedule": {"type": "cron", "cron": "0 0 1 1 *"},
        "action": {"type": "http", "method": "POST", "url": "http://example.org/x"},
    }


@asynccontextmanager
async def limited(
    engine: AsyncEngine, data_dir: Path, client: Client, queue: str, **limits: int
) -> AsyncIterator[ApiClient]:
    """An app with these limits on the session's database; no worker polls its task queue."""
    settings = app_settings(engine, data_dir, task_queue=queue, jwt_secret=JWT_SECRET, **limits)
    async with serve(create_app(settings, TemporalGateway.of(client))) as api:
        yield api


@pytest.fixture
def make(db_engine: AsyncEngine, tmp_path: Path, temporal_client: Client) -> Any:
    def app(**limits: int) -> Any:
        return limited(db_engine, tmp_path, temporal_client, f"limits-{uuid.uuid4().hex[:8]}", **limits)

    return app


def over_limit(response: httpx.Response, status: int, detail: str, limit: str, value: int) -> None:
    problem = expect(response, status)
    assert response.headers["content-type"] == "application/problem+json"
    assert (problem["detail"], problem["limit"], problem["limit_value"]) == (detail, limit, value)


def retry_after(response: httpx.Response) -> int:
    seconds = int(response.headers["Retry-After"])
    assert 1 <= seconds <= 60
    return seconds


async def new_job(user: AuthedClient) -> dict[str, Any]:
    job: dict[str, Any] = expect(await user.post("/jobs", json=cron_job()), 201)
    return job


async def test_job_writes_over_the_limit_get_429_with_retry_after(make: Any) -> None:
    async with make(job_writes_per_minute=3) as api:
        alice = await api.authed_user()
        job = await new_job(alice)
        expect(await alice.patch(f"/jobs/{job['id']}", json={"name": "renamed"}), 200)
        expect(await alice.post(f"/jobs/{job['id']}/pause"), 200)
        for refused in (
            await alice.post(f"/jobs/{job['id']}/resume"),
            await alice.post("/jobs", json=cron_job()),
            await alice.delete(f"/jobs/{job['id']}"),
        ):
            detail = "at most 3 job writes per minute (CHRONOS_JOB_WRITES_PER_MINUTE)"
            over_limit(refused, 429, detail, "job_writes_per_minute", 3)
            retry_after(refused)
        expect(await alice.get(f"/jobs/{job['id']}"), 200)  # reads are not limited
        bob = await api.authed_user()
        await new_job(bob)  # limits are per user


async def test_runs_started_through_the_api_are_limited(make: Any) -> None:
    async with make(runs_per_minute=2) as api:
        alice = await api.authed_user()
        job = await new_job(alice)
        for _ in range(2):
            expect(await alice.post(f"/jobs/{job['id']}/trigger"), 202)
        detail = "at most 2 runs started through the API per minute (CHRONOS_RUNS_PER_MINUTE)"
        refused = await alice.post(f"/jobs/{job['id']}/trigger")
        over_limit(refused, 429, detail, "runs_per_minute", 2)
        retry_after(refused)
        immediate = {**cron_job(), "schedule": {"type": "immediate"}}
        over_limit(await alice.post("/jobs", json=immediate), 429, detail, "runs_per_minute", 2)
        page = expect(await alice.get("/jobs"), 200)
        assert page["total"] == 1  # the refused immediate job left nothing behind
        await new_job(alice)  # a timed job starts no run


async def test_the_job_quota_counts_live_jobs(make: Any, temporal_client: Client) -> None:
    async with make(max_jobs_per_user=2) as api:
        alice = await api.authed_user()
        first, second = await new_job(alice), await new_job(alice)
        refused = await alice.post("/jobs", json=cron_job())
        detail = "at most 2 live jobs per user (CHRONOS_MAX_JOBS_PER_USER)"
        over_limit(refused, 403, detail, "max_jobs", 2)
        assert expect(await alice.get("/jobs"), 200)["total"] == 2

        async def two_schedules() -> bool:
            listed = await temporal_client.list_schedules(f'ChronosOwnerId = "{alice.id}"')
            return len([s async for s in listed]) == 2

        # The refused job's schedule was removed again (Temporal's list lags behind: wait for it).
        await eventually(two_schedules, "the user's two schedules")
        expect(await alice.post(f"/jobs/{first['id']}/cancel"), 200)
        third = await new_job(alice)
        expect(await alice.delete(f"/jobs/{second['id']}"), 204)
        await new_job(alice)
        over_limit(await alice.post("/jobs", json=cron_job()), 403, detail, "max_jobs", 2)
        assert third["id"]


async def test_a_refused_fixed_delay_job_leaves_no_workflow_running(
    make: Any, temporal_client: Client
) -> None:
    async with make(max_jobs_per_user=1) as api:
        alice = await api.authed_user()
        await new_job(alice)
        body = {**cron_job(), "schedule": {"type": "interval", "every_seconds": 60, "mode": "fixed_delay"}}
        refused = await alice.post("/jobs", json=body)
        over_limit(refused, 403, "at most 1 live jobs per user (CHRONOS_MAX_JOBS_PER_USER)", "max_jobs", 1)
        query = f'ChronosOwnerId = "{alice.id}" AND WorkflowType = "FixedDelayWorkflow"'

        async def terminated() -> bool:
            found = [w.status async for w in temporal_client.list_workflows(query)]
            return found == [WorkflowExecutionStatus.TERMINATED]

        # Started before the quota check, then ended with its run, if it had begun one.
        await eventually(terminated, "the refused job's workflow to be terminated")


async def test_an_admin_override_lifts_a_users_limit(make: Any) -> None:
    async with make(job_writes_per_minute=2, max_jobs_per_user=1) as api:
        admin = await api.authed_admin()
        alice = await api.authed_user()
        job = await new_job(alice)
        expect(await alice.post(f"/jobs/{job['id']}/pause"), 200)
        expect(await alice.post(f"/jobs/{job['id']}/resume"), 429)
        quotas = {"job_writes_per_minute": 5, "max_jobs": 2}
        account = expect(await admin.patch(f"/admin/users/{alice.id}", json={"quotas": quotas}), 200)
        assert account["limits"]["job_writes_per_minute"] == 5
        expect(await alice.post(f"/jobs/{job['id']}/resume"), 200)
        await new_job(alice)  # the second job, under the raised quota
        refused = await alice.post("/jobs", json=cron_job())
        over_limit(
            refused, 403, "at most 2 live jobs per user (this account's quota max_jobs)", "max_jobs", 2
        )
        bob = await api.authed_user()  # the others keep the defaults
        bob_job = await new_job(bob)
        expect(await bob.post(f"/jobs/{bob_job['id']}/pause"), 200)
        expect(await bob.post(f"/jobs/{bob_job['id']}/resume"), 429)


async def test_two_app_instances_share_the_limits(
    db_engine: AsyncEngine, tmp_path_factory: pytest.TempPathFactory, temporal_client: Client
) -> None:
    """Two API replicas on one database: each counts the other's writes."""
    queue = f"limits-{uuid.uuid4().hex[:8]}"
    async with AsyncExitStack() as stack:
        one, two = [
            await stack.enter_async_context(
                limited(
                    db_engine,
                    tmp_path_factory.mktemp("replica"),
                    temporal_client,
                    queue,
                    job_writes_per_minute=4,
                )
            )
            for _ in range(2)
        ]
        alice = await one.authed_user()
        on_two = two.with_token(alice.tokens["access_token"])
        job = await new_job(alice)
        expect(await on_two.patch(f"/jobs/{job['id']}", json={"name": "b"}), 200)
        expect(await alice.patch(f"/jobs/{job['id']}", json={"name": "c"}), 200)
        expect(await on_two.patch(f"/jobs/{job['id']}", json={"name": "d"}), 200)
        for client in (alice, on_two):
            refused = await client.patch(f"/jobs/{job['id']}", json={"name": "e"})
            assert expect(refused, 429)["limit_value"] == 4
        # A token logged out on one replica is refused by the other at once.
        expect(await on_two.post("/auth/logout"), 204)
        expect(await alice.get("/auth/me"), 401)


async def test_concurrent_writes_never_pass_the_limit(make: Any) -> None:
    async with make(job_writes_per_minute=4) as api:
        alice = await api.authed_user()
        job = await new_job(alice)
        answers = await asyncio.gather(
            *(alice.patch(f"/jobs/{job['id']}", json={"name": f"n{i}"}) for i in range(10))
        )
        assert Counter(a.status_code for a in answers) == {200: 3, 429: 7}


async def test_concurrent_creates_never_pass_the_job_quota(make: Any) -> None:
    async with make(max_jobs_per_user=3) as api:
        alice = await api.authed_user()
        answers = await asyncio.gather(*(alice.post("/jobs", json=cron_job()) for _ in range(8)))
        assert Counter(a.status_code for a in answers) == {201: 3, 403: 5}
        assert expect(await alice.get("/jobs"), 200)["total"] == 3


async def test_events_past_the_window_neither_count_nor_stay(db_engine: AsyncEngine, tmp_path: Path) -> None:
    """A check counts only the last minute's events, and deletes the user's older ones once `PRUNE_AFTER`
    of them have gathered (not on every check)."""
    sessions = make_sessions(db_engine)
    limits = Limits(app_settings(db_engine, tmp_path, job_writes_per_minute=2), sessions)
    async with sessions() as session:
        user = User(email=f"{uuid.uuid4().hex[:8]}@example.org", password_hash="-")
        session.add(user)
        await session.commit()
    old = utcnow() - WINDOW - timedelta(seconds=1)

    async def events() -> int:
        async with sessions() as session:
            mine = select(func.count()).where(col(RateEvent.user_id) == user.id)
            return (await session.exec(mine)).one()

    async def stale(count: int) -> None:
        async with sessions() as session:
            session.add_all(RateEvent(user_id=user.id, kind=Limit.JOB_WRITES, at=old) for _ in range(count))
            await session.commit()

    await stale(PRUNE_AFTER - 1)
    await limits.spend(user.id, Limit.JOB_WRITES)
    assert await events() == PRUNE_AFTER  # the old ones did not count, and stay until enough gather
    await stale(1)
    await limits.spend(user.id, Limit.JOB_WRITES)
    assert await events() == 2  # the last minute's two
    with pytest.raises(RateLimited):
        await limits.spend(user.id, Limit.JOB_WRITES, Limit.RUNS)
    assert await events() == 2  # a refused check counts nothing, of either limit
