"""Fixed-delay interval jobs end to end: the API, a real worker and Temporal dev server, the mirror and an
HTTP target whose answers take longer than the delay. Gaps are measured on the mirror's started_at and
finished_at (each at least the delay; no upper bounds). The workflow's logic on a skipped clock is in
test_fixed_delay_fast.py."""

from __future__ import annotations

import itertools
import socket
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col, select
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer

from api.main import create_app
from core.codec import keyring
from core.config import Settings
from core.db import Sessions
from core.models import Run
from core.payloads import FixedDelayInput, HttpAction, RunInput
from core.temporal import SEARCH_ATTRIBUTES, TemporalGateway, temporal_binary
from tests.api_client import (
    ENCRYPTION_KEYS,
    ApiClient,
    AuthedClient,
    app_settings,
    expect,
    serve,
    session_converter,
)
from tests.conftest import sqlite_only
from tests.histories import keep
from tests.http_target import Answer, HttpTarget
from tests.mirror_rows import add_job
from tests.waiting import eventually
from worker import WORKFLOWS, build_worker
from workflows.fixed_delay import FixedDelayWorkflow

FAST_RETRY = {"max_attempts": 1, "backoff": "fixed", "initial_interval_seconds": 1}


def route() -> str:
    return f"/{uuid.uuid4().hex[:10]}"


def delayed_job(url: str, every: int, **schedule: Any) -> dict[str, Any]:
    return {
        "name": "fixed delay",
        "schedule": {"type": "interval", "every_seconds": every, "mode": "fixed_delay", **schedule},
        "action": {"type": "http", "method": "POST", "url": url},
        "retry_policy": FAST_RETRY,
    }


async def scheduled_runs(user: AuthedClient, job_id: str) -> list[dict[str, Any]]:
    """The job's scheduled runs, oldest first."""
    page = expect(await user.get(f"/jobs/{job_id}/runs", params={"limit": 100}), 200)
    return sorted((r for r in page["items"] if r["trigger"] == "schedule"), key=lambda r: r["started_at"])


async def finished(user: AuthedClient, job_id: str, n: int) -> list[dict[str, Any]]:
    """The first `n` finished scheduled runs, once there are that many."""

    async def done() -> list[dict[str, Any]] | None:
        runs = [r for r in await scheduled_runs(user, job_id) if r["finished_at"]]
        return runs[:n] if len(runs) >= n else None

    runs: list[dict[str, Any]] = await eventually(done, f"{n} finished runs of job {job_id}", within=60)
    return runs


def gaps(runs: list[dict[str, Any]]) -> list[float]:
    """Seconds from each run's end to the next run's start."""
    at = datetime.fromisoformat
    return [(at(b["started_at"]) - at(a["finished_at"])).total_seconds() for a, b in itertools.pairwise(runs)]


async def loop_status(client: Client, job_id: str) -> WorkflowExecutionStatus | None:
    return (await client.get_workflow_handle(f"job-{job_id}").describe()).status


@sqlite_only
async def test_runs_longer_than_the_delay_start_the_delay_after_each_end(
    api: ApiClient, target: HttpTarget, temporal_client: Client
) -> None:
    alice = await api.authed_user()
    path = route()
    target.script(path, [Answer(delay=3)])  # each run takes 3 s, longer than the 2 s delay
    job = expect(await alice.post("/jobs", json=delayed_job(target.url(path), every=2)), 201)
    assert job["schedule"]["mode"] == "fixed_delay"
    assert job["temporal"]["workflow_id"] == f"job-{job['id']}" and job["temporal"]["schedule_id"] is None
    assert job["next_run_note"] and len(job["next_runs"]) <= 1
    runs = await finished(alice, job["id"], 3)
    assert all(gap >= 2 for gap in gaps(runs)), gaps(runs)
    assert all(r["status"] == "succeeded" and r["id"].startswith(f"job-{job['id']}-schedule-") for r in runs)
    assert await loop_status(temporal_client, job["id"]) == WorkflowExecutionStatus.RUNNING
    schedules = [s.id async for s in await temporal_client.list_schedules()]
    assert f"job-{job['id']}" not in schedules, "a fixed-delay job has no Temporal Schedule"
    expect(await alice.post(f"/jobs/{job['id']}/cancel"), 200)


async def test_next_runs_say_when_the_next_run_starts(api: ApiClient, target: HttpTarget) -> None:
    alice = await api.authed_user()
    path = route()
    target.script(path, [Answer(delay=4)])
    job = expect(await alice.post("/jobs", json=delayed_job(target.url(path), every=60)), 201)
    await target.wait_for(path)

    async def running() -> dict[str, Any] | None:
        answer: dict[str, Any] = expect(await alice.get(f"/jobs/{job['id']}"), 200)
        return answer if answer["state"] == "running" else None

    during = await eventually(running, "the first run to be running")
    assert during["next_runs"] == [] and "after the running run ends" in during["next_run_note"]
    listed = expect(await alice.get("/jobs"), 200)["items"]
    assert [j["next_run_note"] for j in listed if j["id"] == job["id"]] == [during["next_run_note"]]
    [run] = await finished(alice, job["id"], 1)
    after = expect(await alice.get(f"/jobs/{job['id']}"), 200)
    due = datetime.fromisoformat(run["finished_at"]) + timedelta(seconds=60)
    assert [datetime.fromisoformat(t) for t in after["next_runs"]] == [due]
    expect(await alice.delete(f"/jobs/{job['id']}"), 204)


@sqlite_only
async def test_pause_holds_the_next_run_and_resume_starts_it(
    api: ApiClient, target: HttpTarget, temporal_client: Client
) -> None:
    alice = await api.authed_user()
    path = route()
    job = expect(await alice.post("/jobs", json=delayed_job(target.url(path), every=1)), 201)
    await finished(alice, job["id"], 1)
    paused = expect(await alice.post(f"/jobs/{job['id']}/pause", json={"note": "hold"}), 200)
    assert paused["paused"] is True
    loop = temporal_client.get_workflow_handle(f"job-{job['id']}")

    async def held() -> datetime | None:  # the run in flight (if any) has ended and the next is due
        due = await loop.query(FixedDelayWorkflow.next_run_at)
        return due if due is not None else None

    due = await eventually(held, "the loop to wait for its next run")
    before = len(await scheduled_runs(alice, job["id"]))
    await eventually(
        lambda: datetime.now(UTC) > due + timedelta(seconds=1), "the due time to pass while paused"
    )
    assert len(await scheduled_runs(alice, job["id"])) == before, "no run starts while paused"
    expect(await alice.post(f"/jobs/{job['id']}/resume"), 200)
    await finished(alice, job["id"], before + 1)
    expect(await alice.post(f"/jobs/{job['id']}/cancel"), 200)


@sqlite_only
async def test_patch_takes_effect_from_the_next_run(api: ApiClient, target: HttpTarget) -> None:
    alice = await api.authed_user()
    first, second = route(), route()
    job = expect(await alice.post("/jobs", json=delayed_job(target.url(first), every=1)), 201)
    await finished(alice, job["id"], 1)
    patch = {
        "schedule": {"type": "interval", "every_seconds": 3, "mode": "fixed_delay"},
        "action": {"type": "http", "method": "POST", "url": target.url(second)},
    }
    changed = expect(await alice.patch(f"/jobs/{job['id']}", json=patch), 200)
    assert changed["schedule"]["every_seconds"] == 3
    await target.wait_for(second, 2)
    new = {r.headers["Idempotency-Key"] for r in target.requests[second]}  # the runs of the new action
    # The first new run has finished: its loop waited for its end before starting the second.
    runs = [r for r in await scheduled_runs(alice, job["id"]) if r["finished_at"]]
    ids = [r["id"] for r in runs]
    first_new = min(ids.index(run_id) for run_id in new if run_id in ids)
    assert first_new >= 1 and all(gap >= 3 for gap in gaps(runs[first_new - 1 :])), gaps(runs)
    expect(await alice.post(f"/jobs/{job['id']}/cancel"), 200)


async def test_cancel_ends_the_workflow_and_the_run_in_flight(
    api: ApiClient, target: HttpTarget, temporal_client: Client
) -> None:
    alice = await api.authed_user()
    path = route()
    target.script(path, [500])
    body = delayed_job(target.url(path), every=1)
    # The run waits ten minutes in backoff after its first attempt fails: cancelled there, it ends at once.
    body["retry_policy"] = {
        "max_attempts": 3,
        "backoff": "fixed",
        "initial_interval_seconds": 600,
        "max_interval_seconds": 600,
    }
    job = expect(await alice.post("/jobs", json=body), 201)
    await target.wait_for(path)
    cancelled = expect(await alice.post(f"/jobs/{job['id']}/cancel"), 200)
    assert cancelled["state"] == "cancelled" and cancelled["next_runs"] == []

    async def ended() -> bool:
        return await loop_status(temporal_client, job["id"]) == WorkflowExecutionStatus.CANCELED

    await eventually(ended, "the fixed-delay workflow to end cancelled")
    [run] = await scheduled_runs(alice, job["id"])
    assert run["status"] == "cancelled"


async def test_delete_stops_the_workflow(api: ApiClient, target: HttpTarget, temporal_client: Client) -> None:
    alice = await api.authed_user()
    job = expect(await alice.post("/jobs", json=delayed_job(target.url(route()), every=1)), 201)
    await finished(alice, job["id"], 1)
    expect(await alice.delete(f"/jobs/{job['id']}"), 204)

    async def ended() -> bool:
        return await loop_status(temporal_client, job["id"]) == WorkflowExecutionStatus.COMPLETED

    await eventually(ended, "the fixed-delay workflow to end")


async def test_switching_modes_swaps_the_schedule_and_the_workflow(
    api: ApiClient, target: HttpTarget, temporal_client: Client
) -> None:
    alice = await api.authed_user()
    body = delayed_job(target.url(route()), every=3600)
    body["schedule"]["mode"] = "fixed_rate"
    job = expect(await alice.post("/jobs", json=body), 201)
    assert job["temporal"]["schedule_id"] == f"job-{job['id']}"
    to_delay = {"schedule": {"type": "interval", "every_seconds": 3600, "mode": "fixed_delay"}}
    expect(await alice.patch(f"/jobs/{job['id']}", json=to_delay), 200)
    assert f"job-{job['id']}" not in [s.id async for s in await temporal_client.list_schedules()]
    assert await loop_status(temporal_client, job["id"]) == WorkflowExecutionStatus.RUNNING
    expect(
        await alice.patch(f"/jobs/{job['id']}", json={"schedule": {"type": "cron", "cron": "0 0 1 1 *"}}), 200
    )
    await temporal_client.get_schedule_handle(f"job-{job['id']}").describe()  # exists again
    expect(await alice.delete(f"/jobs/{job['id']}"), 204)


async def test_offset_and_exclude_are_refused_for_fixed_delay(api: ApiClient) -> None:
    alice = await api.authed_user()
    body = delayed_job("http://example.org/x", every=60, offset_seconds=5)
    problem = expect(await alice.post("/jobs", json=body), 422)
    assert any(e["loc"][-1] == "offset_seconds" for e in problem["errors"]), problem
    body = delayed_job("http://example.org/x", every=60, exclude={"holidays": "US"})
    problem = expect(await alice.post("/jobs", json=body), 422)
    assert any(e["loc"][-1] == "exclude" for e in problem["errors"]), problem
    preview = expect(
        await alice.post("/schedules/preview", json={"schedule": delayed_job("", 60)["schedule"]}), 200
    )
    assert len(preview["next_runs"]) == 1 and "after each run ends" in preview["description"]


@pytest.fixture
async def own_app(
    db_engine: AsyncEngine, temporal_client: Client, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ApiClient]:
    """The API on a task queue of its own, with no worker: the test starts and stops workers itself."""
    settings = app_settings(
        db_engine, tmp_path_factory.mktemp("delay"), task_queue=f"delay-{uuid.uuid4().hex[:8]}"
    )
    async with serve(create_app(settings, TemporalGateway.of(temporal_client))) as client:
        yield client


@sqlite_only
async def test_the_delay_survives_a_worker_restart_mid_sleep(
    own_app: ApiClient, sessions: Sessions, target: HttpTarget, temporal_client: Client
) -> None:
    settings: Settings = own_app.settings
    alice = await own_app.authed_user()
    job = expect(await alice.post("/jobs", json=delayed_job(target.url(route()), every=4)), 201)
    loop = temporal_client.get_workflow_handle(f"job-{job['id']}")
    async with (
        build_worker(temporal_client, sessions, settings.task_queue, settings=settings) as worker,
        worker,
    ):
        await finished(alice, job["id"], 1)
        await eventually(lambda: loop.query(FixedDelayWorkflow.next_run_at), "the loop to sleep")
    # The worker is gone mid-sleep; the timer is Temporal's.
    assert (await loop.describe()).status == WorkflowExecutionStatus.RUNNING
    async with (
        build_worker(temporal_client, sessions, settings.task_queue, settings=settings) as worker,
        worker,
    ):
        runs = await finished(alice, job["id"], 2)
        assert gaps(runs)[0] >= 4, gaps(runs)
        expect(await alice.delete(f"/jobs/{job['id']}"), 204)
        await loop.result()
    await keep("fixed_delay_restart", loop, keyring(Settings(encryption_keys=ENCRYPTION_KEYS)))
    replayer = Replayer(workflows=WORKFLOWS, data_converter=temporal_client.data_converter)
    await replayer.replay_workflow(await loop.fetch_history())


@sqlite_only
async def test_the_delay_survives_a_temporal_server_restart(
    sessions: Sessions, target: HttpTarget, tmp_path: Path
) -> None:
    """A dev server of its own, on a database file: stopped while the loop sleeps and started again, it
    fires the timer, and the next run starts the delay after the previous end."""
    job = await add_job(sessions)
    port, queue = free_port(), f"delay-restart-{uuid.uuid4().hex[:8]}"
    settings = Settings(data_dir=tmp_path, allow_private_targets=True)
    run = RunInput(job_id=job.id, owner_id=job.owner_id, action=HttpAction(url=target.url(route())))
    server = ["--db-filename", str(tmp_path / "temporal.db")]

    def start() -> Any:
        return WorkflowEnvironment.start_local(
            dev_server_existing_path=temporal_binary(),
            data_converter=session_converter(),
            search_attributes=SEARCH_ATTRIBUTES,
            port=port,
            dev_server_extra_args=server,
        )

    env = await start()
    try:
        loop = await env.client.start_workflow(
            FixedDelayWorkflow.run,
            FixedDelayInput(run=run, every_seconds=4),
            id=f"job-{job.id}",
            task_queue=queue,
        )
        async with build_worker(env.client, sessions, queue, settings=settings) as worker, worker:
            await mirror_finished(sessions, job.id, 1)
            await eventually(lambda: loop.query(FixedDelayWorkflow.next_run_at), "the loop to sleep")
    finally:
        await env.shutdown()
    env = await start()
    try:
        loop = env.client.get_workflow_handle(f"job-{job.id}")
        assert (await loop.describe()).status == WorkflowExecutionStatus.RUNNING
        async with build_worker(env.client, sessions, queue, settings=settings) as worker, worker:
            first, second = await mirror_finished(sessions, job.id, 2)
            assert second.started_at is not None and first.finished_at is not None
            assert second.started_at - first.finished_at >= timedelta(seconds=4)
            await loop.signal(FixedDelayWorkflow.stop)
            await loop.result()
    finally:
        await env.shutdown()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def mirror_finished(sessions: Sessions, job_id: str, n: int) -> list[Run]:
    """The job's first `n` finished runs in the mirror, once there are that many."""

    async def done() -> list[Run] | None:
        async with sessions() as session:
            found = await session.exec(
                select(Run).where(col(Run.job_id) == job_id, col(Run.finished_at).is_not(None))
            )
            runs = sorted(found, key=lambda r: r.started_at or r.created_at)
        return runs[:n] if len(runs) >= n else None

    runs: list[Run] = await eventually(done, f"{n} finished runs in the mirror", within=60)
    return runs
