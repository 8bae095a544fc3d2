"""Jobs and runs through the REST API, with a real worker, Temporal server, database and HTTP target."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Awaitable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg
import pytest
from sqlalchemy import text, update
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import col
from temporalio.client import Client, ScheduleActionStartWorkflow
from temporalio.service import RPCError, RPCStatusCode

import core.jobs
from api.main import create_app
from core.config import Settings
from core.db import Sessions
from core.models import Run
from core.payloads import FixedCron, RunInput
from core.temporal import TemporalGateway
from tests.api_client import ApiClient, AuthedClient, app_settings, expect, serve, session_converter
from tests.conftest import POSTGRES, throwaway_database
from tests.http_target import HttpTarget
from tests.waiting import eventually
from workflows.run_job import JobRunWorkflow

FAST_RETRY = {
    "max_attempts": 3,
    "backoff": "fixed",
    "initial_interval_seconds": 0.1,
    "max_interval_seconds": 0.1,
}


def path() -> str:
    return f"/{uuid.uuid4().hex[:10]}"


def http_job(url: str, schedule: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": "test job",
        "schedule": schedule,
        "action": {"type": "http", "method": "POST", "url": url, "body": {"hello": "world"}},
        "retry_policy": FAST_RETRY,
        **extra,
    }


async def create(user: AuthedClient, body: dict[str, Any]) -> dict[str, Any]:
    job: dict[str, Any] = expect(await user.post("/jobs", json=body), 201)
    return job


async def runs_of(user: AuthedClient, job_id: str, **params: Any) -> list[dict[str, Any]]:
    page = expect(await user.get(f"/jobs/{job_id}/runs", params=params), 200)
    items: list[dict[str, Any]] = page["items"]
    return items


async def finished_runs(user: AuthedClient, job_id: str, n: int) -> list[dict[str, Any]]:
    async def done() -> list[dict[str, Any]] | None:
        runs = [r for r in await runs_of(user, job_id) if r["finished_at"]]
        return runs if len(runs) >= n else None

    return await eventually(done, f"{n} finished runs of job {job_id}")


async def held(client: Client, run_id: str) -> bool:
    """Whether the run is paused with no attempt pending on Temporal: none can start until it resumes."""
    handle = client.get_workflow_handle(run_id)
    pending = (await handle.describe()).raw_description.pending_activities
    return not pending and await handle.query(JobRunWorkflow.paused)


async def attempts_counted(user: AuthedClient, run_id: str, n: int) -> bool:
    run = expect(await user.get(f"/runs/{run_id}"), 200)
    return bool(run["attempts"] == n and len(run["attempt_history"]) == n)


def calls(target: HttpTarget, route: str) -> int:
    return len(target.requests[route])


async def test_immediate_job_runs_once_and_is_recorded(api: ApiClient, target: HttpTarget) -> None:
    alice = await api.authed_user()
    route = path()
    job = await create(alice, http_job(target.url(route), {"type": "immediate"}))
    assert job["state"] == "running" and job["next_runs"] == []
    assert "ChronosJobId" in job["temporal"]["ui_url"]
    [run] = await finished_runs(alice, job["id"], 1)
    assert (run["status"], run["trigger"], run["attempts"]) == ("succeeded", "immediate", 1)
    received = target.requests[route][0]
    assert received.headers["Idempotency-Key"] == run["id"]
    assert received.body == b'{"hello":"world"}' or b'"hello"' in received.body
    detail = expect(await alice.get(f"/runs/{run['id']}"), 200)
    assert detail["temporal"]["workflow_id"] == run["id"]
    assert detail["temporal"]["ui_url"].endswith("/history")
    job = expect(await alice.get(f"/jobs/{job['id']}"), 200)
    assert job["state"] == "completed"
    assert job["last_run"]["id"] == run["id"]


async def test_cron_job_with_seconds_fires_and_lists_next_runs(api: ApiClient, target: HttpTarget) -> None:
    alice = await api.authed_user()
    route = path()
    job = await create(alice, http_job(target.url(route), {"type": "cron", "cron": "*/1 * * * * *"}))
    assert job["state"] == "scheduled"
    upcoming = [datetime.fromisoformat(t) for t in job["next_runs"]]
    assert len(upcoming) == 5 and upcoming == sorted(upcoming)
    assert all(b - a == timedelta(seconds=1) for a, b in itertools.pairwise(upcoming))
    assert job["temporal"]["schedule_id"] == f"job-{job['id']}"
    runs = await finished_runs(alice, job["id"], 2)
    assert {r["trigger"] for r in runs} == {"schedule"}
    assert all(r["status"] == "succeeded" for r in runs)
    expect(await alice.delete(f"/jobs/{job['id']}"), 204)


async def test_five_field_cron_compiles_to_calendars(api: ApiClient, temporal_client: Client) -> None:
    alice = await api.authed_user()
    body = http_job(
        "http://example.org/x", {"type": "cron", "cron": "0 9 13 * 5", "timezone": "Europe/Berlin"}
    )
    job = await create(alice, body)
    described = await temporal_client.get_schedule_handle(job["temporal"]["schedule_id"]).describe()
    spec = described.schedule.spec
    assert spec.cron_expressions == [] and len(spec.calendars) == 2  # POSIX OR: day 13, or Friday
    action = described.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    [spec_input] = await temporal_client.data_converter.decode(action.args, [RunInput])
    assert spec_input.fixed_cron == FixedCron(cron="0 9 13 * 5", timezone="Europe/Berlin")
    assert (spec_input.job_id, spec_input.trigger) == (job["id"], "schedule")
    for at in job["next_runs"]:
        local = datetime.fromisoformat(at).astimezone(ZoneInfo("Europe/Berlin"))
        assert (local.hour, local.minute) == (9, 0) and (local.day == 13 or local.weekday() == 4)


async def test_interval_job_fires(api: ApiClient, target: HttpTarget) -> None:
    alice = await api.authed_user()
    route = path()
    job = await create(alice, http_job(target.url(route), {"type": "interval", "every_seconds": 1}))
    await finished_runs(alice, job["id"], 2)
    assert "/schedules/" in job["temporal"]["ui_url"]
    cancelled = expect(await alice.post(f"/jobs/{job['id']}/cancel"), 200)
    # Its schedule is deleted: the link leads to the job's runs instead.
    assert (
        cancelled["temporal"]["schedule_id"] is None
        and "/workflows?query=" in cancelled["temporal"]["ui_url"]
    )


async def test_once_job_fires_once_and_keeps_its_record(api: ApiClient, target: HttpTarget) -> None:
    alice = await api.authed_user()
    route = path()
    run_at = (datetime.now(UTC) + timedelta(seconds=2)).replace(microsecond=0)
    job = await create(alice, http_job(target.url(route), {"type": "once", "run_at": run_at.isoformat()}))
    assert [datetime.fromisoformat(t) for t in job["next_runs"]] == [run_at]
    [run] = await finished_runs(alice, job["id"], 1)
    assert run["status"] == "succeeded"
    assert datetime.fromisoformat(run["scheduled_at"]) == run_at
    job = await eventually(lambda: _state(alice, job["id"], "completed"), "the one-time job to be completed")
    assert job["next_runs"] == []


async def _state(user: AuthedClient, job_id: str, state: str) -> dict[str, Any] | None:
    job: dict[str, Any] = expect(await user.get(f"/jobs/{job_id}"), 200)
    return job if job["state"] == state else None


async def test_pause_stops_firing_and_resume_restarts(
    api: ApiClient, target: HttpTarget, temporal_client: Client
) -> None:
    alice = await api.authed_user()
    route = path()
    job = await create(alice, http_job(target.url(route), {"type": "cron", "cron": "* * * * * *"}))
    await eventually(lambda: calls(target, route) >= 1, "a first call")
    paused = expect(await alice.post(f"/jobs/{job['id']}/pause", json={"note": "maintenance"}), 200)
    assert paused["paused"] is True and paused["state"] == "paused"
    assert len(paused["next_runs"]) == 5  # still read back while paused
    schedule = temporal_client.get_schedule_handle(f"job-{job['id']}")
    described = await schedule.describe()
    assert described.schedule.state.paused and described.schedule.state.note == "maintenance"
    # The fire due next when the pause landed: the paused schedule must let it pass untaken.
    due = described.info.next_action_times[0]
    await finished_runs(alice, job["id"], 1)  # a run that started before the pause may still finish
    before = calls(target, route)
    await eventually(lambda: datetime.now(UTC) > due, "the due fire time to pass while paused")
    again = expect(await alice.post(f"/jobs/{job['id']}/pause"), 200)  # no body: the note stays
    assert again["pause_note"] == "maintenance"
    assert (await schedule.describe()).schedule.state.note == "maintenance"
    resumed = expect(await alice.post(f"/jobs/{job['id']}/resume"), 200)
    assert resumed["paused"] is False
    assert calls(target, route) <= before + 1
    await eventually(lambda: calls(target, route) > before + 1, "calls after resume")
    taken = [action.scheduled_at for action in (await schedule.describe()).info.recent_actions]
    assert due not in taken and max(taken) > due  # skipped while paused, firing again after the resume
    expect(await alice.delete(f"/jobs/{job['id']}"), 204)


async def test_delete_stops_firing_and_hides_the_job(
    api: ApiClient, target: HttpTarget, temporal_client: Client
) -> None:
    alice = await api.authed_user()
    route = path()
    job = await create(alice, http_job(target.url(route), {"type": "cron", "cron": "* * * * * *"}))
    await eventually(lambda: calls(target, route) >= 1, "a first call")
    # A run writes its row once its call is answered (docs/architecture.md): wait for it.
    [run, *_] = await eventually(lambda: runs_of(alice, job["id"]), "the first run's row")
    expect(await alice.delete(f"/jobs/{job['id']}"), 204)
    expect(await alice.get(f"/jobs/{job['id']}"), 404)
    schedules = [s.id async for s in await temporal_client.list_schedules()]
    assert f"job-{job['id']}" not in schedules
    admin = await api.authed_admin()
    assert await runs_of(admin, job["id"]), "an admin still reads a deleted job's runs"
    expect(await admin.get(f"/runs/{run['id']}"), 200)
    expect(await alice.get(f"/jobs/{job['id']}/runs"), 404)
    expect(await alice.get(f"/runs/{run['id']}"), 404)  # nor one of them, or its log
    expect(await alice.get(f"/runs/{run['id']}/logs"), 404)


async def test_trigger_runs_now_even_while_paused(api: ApiClient, target: HttpTarget) -> None:
    alice = await api.authed_user()
    route = path()
    job = await create(alice, http_job(target.url(route), {"type": "cron", "cron": "0 0 1 1 *"}, paused=True))
    assert job["state"] == "paused"
    run = expect(await alice.post(f"/jobs/{job['id']}/trigger"), 202)
    assert run["trigger"] == "manual" and run["status"] in ("scheduled", "running", "succeeded")
    assert run["id"].startswith(f"job-{job['id']}-manual-")
    [done] = await finished_runs(alice, job["id"], 1)
    assert done["id"] == run["id"] and done["status"] == "succeeded"


async def test_a_pause_sent_with_a_run_now_does_not_wait_for_that_run(
    api: ApiClient, target: HttpTarget
) -> None:
    """A pause signals the job's runs in flight. When it held the job's row lock meanwhile, a run that had
    just started, its first attempt writing its record into that row, held the signal up: 5 s, then a
    503."""
    alice = await api.authed_user()
    job = await create(alice, http_job(target.url(path()), {"type": "cron", "cron": "0 0 1 1 *"}))
    for _ in range(10):
        run, pause = await asyncio.gather(
            alice.post(f"/jobs/{job['id']}/trigger"),
            alice.post(f"/jobs/{job['id']}/pause", json={"note": "n"}),
        )
        expect(run, 202)
        expect(pause, 200)
        expect(await alice.post(f"/jobs/{job['id']}/resume"), 200)


async def test_a_run_now_sent_with_a_cancel_is_cancelled_with_the_job(
    api: ApiClient, target: HttpTarget
) -> None:
    """A trigger committed its run and let the job's change lock go before it started the run's workflow: a
    cancel sent at the same time listed the runs in flight without it, and the run went on, waiting out
    its backoff, after the job was cancelled. Each run here fails its first attempt and would wait 10 min
    for the next: it ends only if the cancel reached it."""
    alice = await api.authed_user()
    route = path()
    target.script(route, [500] * 40)
    slow = {
        "max_attempts": 3,
        "backoff": "fixed",
        "initial_interval_seconds": 600,
        "max_interval_seconds": 600,
    }
    for _ in range(8):
        body = http_job(target.url(route), {"type": "cron", "cron": "0 0 1 1 *"}, retry_policy=slow)
        job = await create(alice, body)
        run, cancel = await asyncio.gather(
            alice.post(f"/jobs/{job['id']}/trigger"), alice.post(f"/jobs/{job['id']}/cancel")
        )
        expect(cancel, 200)
        if run.status_code == 409:  # the cancel came first
            continue
        expect(run, 202)
        [ended] = await finished_runs(alice, job["id"], 1)
        assert ended["status"] == "cancelled", ended


async def test_a_resume_judges_the_jobs_state_after_its_temporal_calls(
    api: ApiClient, target: HttpTarget, sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resume read the job's last run before it unpaused the schedule and signalled the runs: a run that
    ended meanwhile left the job `running` until its next run ended. Here the run ends during those calls."""
    alice = await api.authed_user()
    job = await create(alice, http_job(target.url(path()), {"type": "cron", "cron": "0 0 1 1 *"}))
    run = expect(await alice.post(f"/jobs/{job['id']}/trigger"), 202)
    await finished_runs(alice, job["id"], 1)

    async def set_status(status: str) -> None:
        async with sessions() as session:
            await session.exec(update(Run).where(col(Run.id) == run["id"]).values(status=status))
            await session.commit()

    await set_status("running")  # in flight when the resume reads it
    expect(await alice.post(f"/jobs/{job['id']}/pause"), 200)
    unpause = core.jobs.set_paused

    async def run_ends_meanwhile(client: Client, paused_job: Any, *args: Any) -> None:
        await unpause(client, paused_job, *args)
        await set_status("succeeded")

    monkeypatch.setattr(core.jobs, "set_paused", run_ends_meanwhile)
    assert expect(await alice.post(f"/jobs/{job['id']}/resume"), 200)["state"] == "scheduled"


async def test_a_manual_run_of_a_one_time_job_leaves_it_waiting_for_its_fire(
    api: ApiClient, target: HttpTarget
) -> None:
    """A one-time job ended with any run: run by hand before its run_at, it said `completed` (or `failed`)
    while its fire was still listed, and then fired all the same. It waits for the fire now, also after a
    pause and resume."""
    alice = await api.authed_user()
    route = path()
    target.script(route, [200, 400])
    once = {"type": "once", "run_at": "2030-01-01T00:00:00Z"}
    job = await create(alice, http_job(target.url(route), once))
    expect(await alice.post(f"/jobs/{job['id']}/trigger"), 202)
    await finished_runs(alice, job["id"], 1)
    waiting = expect(await alice.get(f"/jobs/{job['id']}"), 200)
    assert (waiting["state"], waiting["next_runs"]) == ("scheduled", ["2030-01-01T00:00:00Z"])
    expect(await alice.post(f"/jobs/{job['id']}/trigger"), 202)
    runs = await finished_runs(alice, job["id"], 2)
    assert sorted(run["status"] for run in runs) == ["failed", "succeeded"]
    assert expect(await alice.get(f"/jobs/{job['id']}"), 200)["state"] == "scheduled"
    expect(await alice.post(f"/jobs/{job['id']}/pause"), 200)
    assert expect(await alice.post(f"/jobs/{job['id']}/resume"), 200)["state"] == "scheduled"


async def test_patch_reschedules_in_place(api: ApiClient, temporal_client: Client) -> None:
    alice = await api.authed_user()
    job = await create(alice, http_job("http://example.org/x", {"type": "cron", "cron": "0 0 12 * * ?"}))
    changed = expect(
        await alice.patch(
            f"/jobs/{job['id']}",
            json={"name": "renamed", "schedule": {"type": "cron", "cron": "0 30 6 * * MON-FRI"}},
        ),
        200,
    )
    assert changed["name"] == "renamed" and changed["schedule"]["cron"] == "0 30 6 * * MON-FRI"
    for at in changed["next_runs"]:
        moment = datetime.fromisoformat(at)
        assert (moment.hour, moment.minute, moment.second) == (6, 30, 0) and moment.weekday() < 5
    described = await temporal_client.get_schedule_handle(f"job-{job['id']}").describe()
    assert [c.comment for c in described.schedule.spec.calendars] == ["0 30 6 * * MON-FRI"]
    assert described.info.last_updated_at is not None  # the same schedule, updated


async def test_a_job_whose_schedule_temporal_cannot_describe_is_answered_with_its_change_made(
    api: ApiClient, temporal_client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = await api.authed_user()
    job = await create(alice, http_job("http://example.org/x", {"type": "cron", "cron": "0 0 12 * * ?"}))

    async def dropped(*_: object) -> list[datetime]:
        raise RPCError("operation was canceled", RPCStatusCode.CANCELLED, b"")

    monkeypatch.setattr(core.jobs, "described_next_runs", dropped)
    read = expect(await alice.get(f"/jobs/{job['id']}"), 200)
    assert read["next_runs"] == job["next_runs"]  # the local computation, as the create's answer had it
    assert "Temporal did not answer" in read["next_run_note"]
    # A 503 would say nothing was changed; the pause was made, and the answer says so.
    paused = expect(await alice.post(f"/jobs/{job['id']}/pause"), 200)
    assert (paused["paused"], paused["version"]) == (True, 2)
    assert "Temporal did not answer" in paused["next_run_note"]
    assert (await temporal_client.get_schedule_handle(f"job-{job['id']}").describe()).schedule.state.paused


async def test_users_see_only_their_own_jobs(api: ApiClient, target: HttpTarget) -> None:
    alice, bob = await api.authed_user(), await api.authed_user()
    job = await create(alice, http_job(target.url(path()), {"type": "immediate"}))
    [run] = await finished_runs(alice, job["id"], 1)
    for method, url in [
        ("GET", f"/jobs/{job['id']}"),
        ("PATCH", f"/jobs/{job['id']}"),
        ("DELETE", f"/jobs/{job['id']}"),
        ("POST", f"/jobs/{job['id']}/pause"),
        ("POST", f"/jobs/{job['id']}/trigger"),
        ("GET", f"/jobs/{job['id']}/runs"),
        ("GET", f"/runs/{run['id']}"),
        ("POST", f"/runs/{run['id']}/cancel"),
    ]:
        answer = await bob.request(method, url, json={} if method == "PATCH" else None)
        assert answer.status_code == 404, (method, url, answer.text)
    assert expect(await bob.get("/jobs"), 200)["total"] == 0
    mine = expect(await alice.get("/jobs"), 200)
    assert [j["id"] for j in mine["items"]] == [job["id"]]
    admin = await api.authed_admin()
    assert expect(await admin.get(f"/jobs/{job['id']}"), 200)["owner_id"] == alice.id


async def test_list_paginates_and_filters(api: ApiClient) -> None:
    alice = await api.authed_user()
    ids = []
    for i in range(5):
        body = http_job("http://example.org/x", {"type": "cron", "cron": "@daily"}, paused=i % 2 == 0)
        body["name"] = f"report {i}"
        ids.append((await create(alice, body))["id"])
    page = expect(await alice.get("/jobs", params={"limit": 2, "page": 2}), 200)
    assert (page["total"], page["page"], page["limit"]) == (5, 2, 2)
    assert [j["id"] for j in page["items"]] == list(reversed(ids))[2:4]
    paused = expect(await alice.get("/jobs", params={"state": "paused"}), 200)
    assert paused["total"] == 3
    named = expect(await alice.get("/jobs", params={"q": "REPORT 3"}), 200)
    assert [j["id"] for j in named["items"]] == [ids[3]]
    listed = expect(await alice.get("/jobs", params={"limit": 100}), 200)["items"]
    for item in listed:  # lists compute next runs locally; a job's own answer reads its schedule
        assert item["next_runs"] == expect(await alice.get(f"/jobs/{item['id']}"), 200)["next_runs"]
    bad = expect(await alice.get("/jobs", params={"state": "sleeping"}), 422)
    assert bad["errors"][0]["loc"] == ["query", "state"]


async def test_secret_headers_are_masked(api: ApiClient) -> None:
    alice = await api.authed_user()
    body = http_job("http://example.org/x", {"type": "cron", "cron": "@hourly"})
    body["action"]["headers"] = {
        "Authorization": "Bearer s3cr3t-t0ken-value-123",
        "Content-Type": "text/plain",
    }
    job = await create(alice, body)
    headers = job["action"]["headers"]
    assert headers["Content-Type"] == "text/plain"
    assert "s3cr3t" not in headers["Authorization"] and headers["Authorization"].endswith("-123")


@pytest.mark.parametrize(
    ("schedule", "loc", "words"),
    [
        (
            {"type": "cron", "cron": "0 25 * * *"},
            ["body", "schedule", "cron"],
            "hour: 25 is out of range",
        ),
        (
            {"type": "cron", "cron": "@daily", "timezone": "Mars/Base"},
            ["body", "schedule", "timezone"],
            "Mars",
        ),
        ({"type": "once", "run_at": "2030-01-01T10:00:00"}, ["body", "schedule", "run_at"], "timezone"),
        ({"type": "interval", "every_seconds": 0}, ["body", "schedule", "every_seconds"], "greater"),
        ({"type": "weekly"}, ["body", "schedule"], "type"),
    ],
)
async def test_invalid_schedules_name_the_field(
    api: ApiClient, schedule: dict[str, Any], loc: list[str], words: str
) -> None:
    alice = await api.authed_user()
    problem = expect(await alice.post("/jobs", json=http_job("http://example.org/x", schedule)), 422)
    assert problem["status"] == 422 and problem["title"]
    assert problem["errors"][0]["loc"][: len(loc)] == loc, problem
    assert words.lower() in problem["errors"][0]["msg"].lower(), problem
    assert expect(await alice.get("/jobs"), 200)["total"] == 0


async def test_bad_requests_are_problems(api: ApiClient) -> None:
    alice = await api.authed_user()
    bad_url = http_job("not a url", {"type": "immediate"})
    problem = expect(await alice.post("/jobs", json=bad_url), 422)
    assert problem["errors"][0]["loc"] == ["body", "action", "http", "url"] or problem["errors"][0]["loc"][
        :3
    ] == [
        "body",
        "action",
        "url",
    ]
    malformed = await alice.post("/jobs", content=b"{not json", headers={"Content-Type": "application/json"})
    assert malformed.status_code == 400 and malformed.headers["content-type"] == "application/problem+json"
    huge = http_job("http://example.org/x", {"type": "immediate"})
    huge["action"]["body"] = {"blob": "x" * 2_000_000}
    assert (await alice.post("/jobs", json=huge)).status_code == 413
    missing = await alice.get("/jobs/nope")
    assert missing.status_code == 404 and missing.json()["detail"] == "job nope not found"
    anonymous = await api.get("/jobs")
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"] == "Bearer"
    reader = await api.authed_user(scope="jobs:read")
    assert (
        await reader.post("/jobs", json=http_job("http://example.org/x", {"type": "immediate"}))
    ).status_code == 403
    assert expect(await alice.get("/jobs"), 200)["total"] == 0


async def test_idempotency_key_returns_the_first_job(api: ApiClient) -> None:
    alice = await api.authed_user()
    body = http_job("http://example.org/x", {"type": "cron", "cron": "@daily"})
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = expect(await alice.post("/jobs", json=body, headers=key), 201)
    again = expect(await alice.post("/jobs", json=body, headers=key), 201)
    assert again["id"] == first["id"]
    other = expect(await alice.post("/jobs", json={**body, "name": "other"}, headers=key), 409)
    assert "Idempotency-Key" in other["detail"]
    assert expect(await alice.get("/jobs"), 200)["total"] == 1


async def test_retries_sent_at_once_with_one_idempotency_key_make_one_job(
    api: ApiClient, temporal_client: Client
) -> None:
    """A client that retries before its first request has answered: each request found the key unused, and
    all but the first to commit met it at the insert, a 500 each, their schedules left behind. Now each
    answers the one job, and only its schedule remains."""
    alice = await api.authed_user()
    body = http_job("http://example.org/x", {"type": "cron", "cron": "@daily"})
    key = {"Idempotency-Key": uuid.uuid4().hex}
    answers = await asyncio.gather(*(alice.post("/jobs", json=body, headers=key) for _ in range(6)))
    assert {expect(answer, 201)["id"] for answer in answers} == {answers[0].json()["id"]}
    assert expect(await alice.get("/jobs"), 200)["total"] == 1

    async def schedules() -> list[str] | None:
        query = f'ChronosOwnerId = "{alice.user["id"]}"'
        found = [s.id async for s in await temporal_client.list_schedules(query=query)]
        return found if len(found) == 1 else None

    assert await eventually(schedules, "one schedule left") == [f"job-{answers[0].json()['id']}"]


async def test_changes_sent_at_once_to_one_job_each_see_the_last(
    api: ApiClient, target: HttpTarget, temporal_client: Client
) -> None:
    """Every change to a job sent at once (two dashboard tabs, a script beside a person): each read the
    job, then acted on Temporal, then committed. A pause after a delete found the schedule gone, a 500;
    a resume that committed after a cancel left the job `scheduled` with no schedule. Now each waits for
    the one before it and sees the job as it left it: a 404 after a delete, a 409 after a cancel, and the
    job and its schedule agree at the end. A backfill, which commits its range before it reaches
    Temporal, answers as much when a delete or cancel took the schedule meanwhile."""
    alice = await api.authed_user()
    changes = [
        ("post", "/pause", {"note": "n"}),
        ("post", "/resume", None),
        ("post", "/trigger", None),
        ("post", "/cancel", None),
        ("delete", "", None),
        ("patch", "", {"description": "changed"}),
        ("post", "/backfill", {"start": "2025-12-31T00:00:00Z", "end": "2026-01-02T00:00:00Z"}),
    ]
    body = http_job(target.url(path()), {"type": "cron", "cron": "0 0 1 1 *"})
    jobs = [expect(await alice.post("/jobs", json=body), 201)["id"] for _ in range(4)]

    async def send(job_id: str, method: str, tail: str, payload: Any) -> httpx.Response:
        extra = {} if payload is None else {"json": payload}
        return await getattr(alice, method)(f"/jobs/{job_id}{tail}", **extra)

    answers = await asyncio.gather(*(send(job_id, *change) for job_id in jobs for change in changes * 2))
    assert {answer.status_code for answer in answers} <= {200, 202, 204, 404, 409}, [
        (answer.request.method, answer.request.url.path, answer.text)
        for answer in answers
        if answer.status_code >= 500
    ]
    for job_id in jobs:
        try:
            paused: bool | None = (
                await temporal_client.get_schedule_handle(f"job-{job_id}").describe()
            ).schedule.state.paused
        except RPCError as exc:
            assert exc.status == RPCStatusCode.NOT_FOUND
            paused = None
        found = await alice.get(f"/jobs/{job_id}")
        if found.status_code == 404 or found.json()["state"] == "cancelled":
            assert paused is None, f"job {job_id} is gone or cancelled, but its schedule is not"
            continue
        job = expect(found, 200)
        assert paused == job["paused"], (job, paused)
        assert job["state"] in (("paused",) if paused else ("scheduled", "running")), job


async def test_preview_describes_without_saving(api: ApiClient) -> None:
    alice = await api.authed_user()
    body = {
        "schedule": {"type": "cron", "cron": "0 15 10 ? * FRI#3", "timezone": "Europe/Berlin"},
        "count": 3,
        "after": "2026-11-24T00:00:00Z",
    }
    preview = expect(await alice.post("/schedules/preview", json=body), 200)
    assert preview["dialect"] == "spring"
    assert preview["description"] == "at 10:15:00 on the third Friday of every month, Europe/Berlin"
    assert preview["next_runs"] == ["2026-12-18T09:15:00Z", "2027-01-15T09:15:00Z", "2027-02-19T09:15:00Z"]
    assert expect(await alice.get("/jobs"), 200)["total"] == 0


async def test_preview_names_the_dialect_and_warns_of_numbered_days(api: ApiClient) -> None:
    alice = await api.authed_user()
    cron = {"type": "cron", "cron": "0 15 10 ? * 6#3"}
    after = "2027-01-01T00:00:00Z"
    quartz = {"schedule": {**cron, "dialect": "quartz"}, "count": 2, "after": after}
    preview = expect(await alice.post("/schedules/preview", json=quartz), 200)
    assert (preview["dialect"], preview["warnings"]) == ("quartz", [])
    assert preview["description"] == "at 10:15:00 on the third Friday of every month, UTC"
    assert preview["next_runs"] == ["2027-01-15T10:15:00Z", "2027-02-19T10:15:00Z"]
    unsaid = expect(await alice.post("/schedules/preview", json={"schedule": cron, "after": after}), 200)
    assert unsaid["dialect"] == "spring" and unsaid["next_runs"][0] == "2027-01-16T10:15:00Z"
    assert unsaid["description"] == "at 10:15:00 on the third Saturday of every month, UTC"
    assert unsaid["warnings"] == [
        "day-of-week 6#3 reads as the third Saturday in Spring's numbering (the default for 6 fields) but "
        'as the third Friday in Quartz\'s; set "dialect" to say which'
    ]
    named = {"schedule": {"type": "cron", "cron": "0 15 10 ? * FRI#3"}}
    assert expect(await alice.post("/schedules/preview", json=named), 200)["warnings"] == []
    mismatch = {"schedule": {"type": "cron", "cron": "0 0 12 * * ?", "dialect": "posix"}}
    problem = expect(await alice.post("/schedules/preview", json=mismatch), 422)
    assert problem["errors"][0]["loc"] == ["body", "schedule", "dialect"], problem
    assert "POSIX cron has 5 fields (minute first); this expression has 6" in problem["detail"]


async def test_a_job_keeps_its_dialect_and_answers_warnings(api: ApiClient, temporal_client: Client) -> None:
    alice = await api.authed_user()
    quartz = {"type": "cron", "cron": "0 15 10 ? * 6#3", "dialect": "quartz"}
    job = await create(alice, http_job("http://example.org/x", quartz))
    assert job["schedule"]["dialect"] == "quartz" and job["warnings"] == []
    assert all(datetime.fromisoformat(t).weekday() == 4 for t in job["next_runs"])  # Fridays, from Temporal
    described = await temporal_client.get_schedule_handle(job["temporal"]["schedule_id"]).describe()
    action = described.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    [spec_input] = await temporal_client.data_converter.decode(action.args, [RunInput])
    assert spec_input.fixed_cron == FixedCron(cron="0 15 10 ? * 6#3", timezone="UTC", dialect="quartz")

    unsaid = await create(alice, http_job("http://example.org/x", {"type": "cron", "cron": "0 0 12 ? * 2-6"}))
    assert "dialect" not in unsaid["schedule"]
    assert [w.split(" reads")[0] for w in unsaid["warnings"]] == ["day-of-week 2-6"]
    assert {datetime.fromisoformat(t).weekday() for t in unsaid["next_runs"]} <= {1, 2, 3, 4, 5}  # TUE-SAT
    listed = {j["id"]: j["warnings"] for j in expect(await alice.get("/jobs"), 200)["items"]}
    assert listed == {job["id"]: [], unsaid["id"]: unsaid["warnings"]}
    said = {"schedule": {**quartz, "cron": "0 0 12 ? * 2-6"}}
    patched = expect(await alice.patch(f"/jobs/{unsaid['id']}", json=said), 200)
    assert patched["warnings"] == [] and patched["schedule"]["dialect"] == "quartz"
    assert {datetime.fromisoformat(t).weekday() for t in patched["next_runs"]} <= {0, 1, 2, 3, 4}  # MON-FRI


async def test_a_sub_second_run_at_fires_at_or_after_it(api: ApiClient, temporal_client: Client) -> None:
    alice = await api.authed_user()
    run_at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=250_000)
    job = await create(
        alice, http_job("http://example.org/x", {"type": "once", "run_at": run_at.isoformat()})
    )
    fires_at = run_at.replace(microsecond=0) + timedelta(seconds=1)
    assert [datetime.fromisoformat(t) for t in job["next_runs"]] == [fires_at]
    described = await temporal_client.get_schedule_handle(job["temporal"]["schedule_id"]).describe()
    assert described.info.next_action_times[0] >= run_at
    assert described.info.next_action_times == [fires_at]
    preview = {"schedule": {"type": "once", "run_at": run_at.isoformat()}}
    assert expect(await alice.post("/schedules/preview", json=preview), 200)["next_runs"] == [
        fires_at.isoformat().replace("+00:00", "Z")
    ]


async def test_temporal_down_is_503_and_creates_nothing(
    db_engine: AsyncEngine, tmp_path_factory: pytest.TempPathFactory
) -> None:
    settings = app_settings(db_engine, tmp_path_factory.mktemp("down"))
    down = TemporalGateway("127.0.0.1:1", "default", session_converter(), timeout=2)
    async with serve(create_app(settings, down)) as api:
        alice = await api.authed_user()
        answer = await alice.post(
            "/jobs", json=http_job("http://example.org/x", {"type": "cron", "cron": "@daily"})
        )
        problem = expect(answer, 503)
        assert "unreachable" in problem["detail"]
        # A run-now job is written before its run starts: the refused start takes back all its rows.
        now = http_job("http://example.org/x", {"type": "immediate"}, labels={"team": "ops", "tier": "1"})
        expect(await alice.post("/jobs", json=now, headers={"Idempotency-Key": "k1"}), 503)
        assert expect(await alice.get("/jobs"), 200)["total"] == 0
        left = await rows_of(db_engine, alice.id)
        assert not any(left.values()), left
        # The key went with the job: the same request is a new attempt, not a replay of a job that is gone.
        expect(await alice.post("/jobs", json=now, headers={"Idempotency-Key": "k1"}), 503)
        ready = await api.request("GET", "http://chronos.test/ready")
        assert ready.status_code == 503 and "Temporal" in ready.json()["detail"]


async def rows_of(engine: AsyncEngine, user_id: str) -> dict[str, int]:
    """How many rows of each table a user's jobs left; labels have no owner column: those of no job."""
    counts = {}
    async with engine.connect() as conn:
        for table, owner in (("job", "owner_id"), ("run", "owner_id"), ("auditentry", "actor_id")):
            query = text(f"SELECT count(*) FROM {table} WHERE {owner} = :user")
            counts[table] = (await conn.execute(query, {"user": user_id})).scalar_one()
        query = text("SELECT count(*) FROM idempotencykey WHERE owner_id = :user")
        counts["idempotencykey"] = (await conn.execute(query, {"user": user_id})).scalar_one()
        orphans = text("SELECT count(*) FROM joblabel WHERE job_id NOT IN (SELECT id FROM job)")
        assert (await conn.execute(orphans)).scalar_one() == 0
    return counts


async def test_ready_once_a_worker_polls(api: ApiClient) -> None:
    health = expect(await api.request("GET", "http://chronos.test/health"), 200)
    assert health == {"status": "ok"}
    ready = await eventually(lambda: _ready(api), "the API to see the worker polling its task queue")
    assert ready == {"status": "ready"}


async def _ready(api: ApiClient) -> dict[str, Any] | None:
    answer = await api.request("GET", "http://chronos.test/ready")
    return answer.json() if answer.status_code == 200 else None


async def test_overlap_window_and_jitter_reach_the_schedule(api: ApiClient, temporal_client: Client) -> None:
    alice = await api.authed_user()
    start, end = datetime(2030, 1, 1, tzinfo=UTC), datetime(2030, 6, 1, tzinfo=UTC)
    for policy in ("skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"):
        schedule = {
            "type": "interval",
            "every_seconds": 3600,
            "start_at": start.isoformat(),
            "end_at": end.isoformat(),
            "jitter_seconds": 30,
        }
        job = await create(alice, http_job("http://example.org/x", schedule, overlap_policy=policy))
        described = await temporal_client.get_schedule_handle(f"job-{job['id']}").describe()
        assert described.schedule.policy.overlap.name == policy.upper()
        assert described.schedule.policy.catchup_window == timedelta(seconds=300)
        spec = described.schedule.spec
        assert (spec.start_at, spec.end_at, spec.jitter) == (start, end, timedelta(seconds=30))
        assert datetime.fromisoformat(job["next_runs"][0]) >= start


async def test_paused_run_makes_no_further_attempt_until_resumed(
    api: ApiClient, target: HttpTarget, temporal_client: Client
) -> None:
    alice = await api.authed_user()
    route = path()
    target.script(route, [500, 200])
    retry = {"max_attempts": 3, "backoff": "fixed", "initial_interval_seconds": 2, "max_interval_seconds": 2}
    job = await create(alice, {**http_job(target.url(route), {"type": "immediate"}), "retry_policy": retry})
    await eventually(lambda: calls(target, route) == 1, "the first, failing attempt")
    run_id = job["last_run"]["id"]
    # A run in flight counts the attempts it has made, not only once it ends.
    await eventually(
        lambda: attempts_counted(alice, run_id, 1), "the running run to count its failed attempt"
    )
    expect(await alice.post(f"/runs/{run_id}/pause"), 202)
    # The retry due after 2 s cannot come while paused: the run holds it, with no attempt left pending.
    await eventually(lambda: held(temporal_client, run_id), "the run to hold its attempts")
    assert calls(target, route) == 1
    expect(await alice.post(f"/runs/{run_id}/resume"), 202)
    [run] = await finished_runs(alice, job["id"], 1)
    assert (run["status"], run["attempts"], calls(target, route)) == ("succeeded", 2, 2)


async def test_private_and_metadata_targets_are_refused_at_submit(
    api: ApiClient, db_engine: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    alice = await api.authed_user()  # this app allows private targets, as `chronos dev` does
    metadata = http_job("http://169.254.169.254/latest/meta-data", {"type": "immediate"})
    problem = expect(await alice.post("/jobs", json=metadata), 422)
    assert problem["errors"] == [
        {"loc": ["body", "action", "url"], "msg": "169.254.169.254 is a cloud metadata address"}
    ]
    settings = app_settings(db_engine, tmp_path_factory.mktemp("strict"), allow_private_targets=False)
    async with serve(
        create_app(settings, TemporalGateway("127.0.0.1:1", "default", session_converter()))
    ) as strict:
        bob = await strict.authed_user()
        for url, words in [("http://127.0.0.1:8080/x", "loopback"), ("http://10.1.2.3/x", "private")]:
            problem = expect(await bob.post("/jobs", json=http_job(url, {"type": "immediate"})), 422)
            assert words in problem["detail"], problem
        hook = http_job("https://example.org/x", {"type": "cron", "cron": "@daily"})
        hook["notify"] = {"webhook_url": "http://192.168.1.1/hook"}
        problem = expect(await bob.post("/jobs", json=hook), 422)
        assert problem["errors"][0]["loc"] == ["body", "notify", "webhook_url"]


async def test_the_nul_character_is_refused_wherever_a_request_carries_it(
    api: ApiClient, temporal_client: Client
) -> None:
    """PostgreSQL cannot store NUL (U+0000) in text: a name, a filter, an id or a login holding one was a 500
    there (after the job's schedule was made). Now a 422 names where it is, on both databases, and nothing
    is made."""
    alice = await api.authed_user()
    cron = {"type": "cron", "cron": "0 3 * * *"}
    job = http_job("http://example.org/x", cron)
    cases: list[tuple[Awaitable[httpx.Response], list[str | int]]] = [
        (alice.post("/jobs", json={**job, "name": "a\x00b"}), ["body", "name"]),
        (alice.post("/jobs", json={**job, "labels": {"team\x00": "a"}}), ["body", "labels", "team\x00"]),
        (
            alice.post("/jobs", json={**job, "schedule": {**cron, "cron": "0 3 * * *\x00"}}),
            ["body", "schedule", "cron"],
        ),
        (
            alice.post("/jobs", json={**job, "action": {**job["action"], "body": {"a": ["ok", "\x00"]}}}),
            ["body", "action", "body", "a", 1],
        ),
        (alice.get("/jobs", params={"q": "a\x00"}), ["query", "q"]),
        (alice.get("/jobs/a%00b"), ["path", "job_id"]),
        (alice.post("/runs/a%00b/cancel"), ["path", "run_id"]),
        (
            api.post(
                "/auth/token",
                data={"grant_type": "password", "username": "a\x00@example.org", "password": "x"},
            ),
            ["body", "username"],
        ),
    ]
    for call, loc in cases:
        problem = expect(await call, 422)
        assert problem["errors"] == [
            {"loc": loc, "msg": f"{'.'.join(map(str, loc[1:]))}: must not contain the NUL character (U+0000)"}
        ], problem
    assert expect(await alice.get("/jobs"), 200)["total"] == 0
    # The escape as text (a backslash, then `u0000`) is no NUL.
    made = await create(alice, {**job, "name": "a\\u0000b"})
    assert made["name"] == "a\\u0000b"
    expect(await alice.delete(f"/jobs/{made['id']}"), 204)


async def test_not_ready_while_no_worker_polls(
    db_engine: Any, tmp_path_factory: pytest.TempPathFactory, temporal_client: Client
) -> None:
    settings = app_settings(db_engine, tmp_path_factory.mktemp("idle"), task_queue=f"idle-{uuid.uuid4().hex}")
    async with serve(create_app(settings, TemporalGateway.of(temporal_client))) as idle:
        answer = await idle.request("GET", "http://chronos.test/ready")
        assert answer.status_code == 503
        assert answer.json()["detail"] == f"no worker is polling the task queue '{settings.task_queue}'"


async def test_database_outage_is_503_and_recovers(
    tmp_path_factory: pytest.TempPathFactory, temporal_client: Client
) -> None:
    """PostgreSQL refusing connections mid-flight: the API answers 503 with a reason, then recovers."""
    with throwaway_database("outage") as url:
        name = url.rsplit("/", 1)[1]
        settings = Settings(data_dir=tmp_path_factory.mktemp("outage"), database_url=url)
        async with serve(create_app(settings, TemporalGateway.of(temporal_client))) as api:
            alice = await api.authed_user()
            assert expect(await alice.get("/jobs"), 200)["total"] == 0
            with psycopg.connect(POSTGRES, autocommit=True) as admin:
                admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
                admin.execute(
                    f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
                )
            problem = expect(await alice.get("/jobs"), 503)
            assert problem["detail"] == "the database is unreachable; try again shortly"
            ready = await api.request("GET", "http://chronos.test/ready")
            assert ready.status_code == 503 and "database" in ready.json()["detail"]
            with psycopg.connect(POSTGRES, autocommit=True) as admin:
                admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
            assert expect(await alice.get("/jobs"), 200)["total"] == 0


async def test_concurrent_creates_do_not_starve_a_small_pool(
    db_engine: Any, temporal_client: Client, tmp_path: Any, target: HttpTarget
) -> None:
    """More concurrent writes than the pool has connections: each gives its token check's connection back
    before it may queue for SQLite's write lock, so the writer at the head of the queue always finds one
    (kept, the queue held the whole pool and the writer timed out into a 500 after 30 s)."""
    settings = app_settings(db_engine, tmp_path, db_pool_size=1)  # 1 + the pool's overflow of 10
    app = create_app(settings, TemporalGateway.of(temporal_client))
    async with serve(app) as client:
        user = await client.authed_user()
        bodies = [
            {**http_job(target.url(path()), {"type": "cron", "cron": "0 3 * * *"}), "name": f"n{i}"}
            for i in range(24)
        ]
        answers = await asyncio.gather(*(user.post("/jobs", json=body) for body in bodies))
        assert [a.status_code for a in answers] == [201] * len(bodies), [a.text for a in answers][:3]
        for job in [a.json() for a in answers]:
            expect(await user.delete(f"/jobs/{job['id']}"), 204)
