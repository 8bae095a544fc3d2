"""Backfills, misfire rules and missed fires, through the REST API with a real worker and Temporal server."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleBackfill,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.service import RPCError, RPCStatusCode

from api.main import create_app
from core.codec import keyring
from core.config import Settings
from core.db import Sessions, create_schema, make_engine, make_sessions
from core.job_schedules import patched
from core.misfire import TEMPORAL_MIN_CATCHUP, Misfire, MisfirePolicy, judge
from core.models import Job
from core.payloads import ReconcileInput, schedule_id
from core.schedules import fire_times
from core.temporal import TemporalGateway
from tests.api_client import ENCRYPTION_KEYS, ApiClient, AuthedClient, app_settings, expect, serve
from tests.histories import keep
from tests.http_target import HttpTarget
from tests.smtp_server import start_smtp
from tests.waiting import eventually
from worker import build_worker
from workflows.reconcile import ReconcileWorkflow


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
    alice: AuthedClient, sessions: Sessions, job_id: str, fires: int, bulk: bool = False
) -> list[datetime]:
    """Pause the job, let `fires` of its fires pass, resume it (`bulk`: through POST /jobs/resume): the
    fires of the pause, as the service saw the pause (from its row: paused_at, and fires_checked_at, the
    moment resume looked)."""
    expect(await alice.post(f"/jobs/{job_id}/pause"), 200)
    async with sessions() as session:
        paused_at = (await session.get(Job, job_id)).paused_at  # type: ignore[union-attr]
    assert paused_at is not None
    await eventually(
        lambda: datetime.now(UTC) > paused_at + timedelta(seconds=fires + 0.5), f"{fires} fires to pass"
    )
    if bulk:
        assert expect(await alice.post("/jobs/resume", json={"ids": [job_id]}), 200) == {"count": 1}
    else:
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

    seen: dict[datetime, dict[str, Any]] = {}

    async def settled() -> dict[datetime, dict[str, Any]] | None:
        runs = [r for r in await runs_of(alice, job_id) if r["scheduled_at"]]
        times = [datetime.fromisoformat(r["scheduled_at"]) for r in runs]
        assert len(times) == len(set(times)), f"a fire has two runs: {sorted(times)}"
        seen.update((t, r) for t, r in zip(times, runs, strict=True) if t in pause)
        rows = {t: r for t, r in seen.items() if r["finished_at"]}
        return rows if len(rows) == len(pause) else None

    try:
        return await eventually(settled, f"a settled run row for each of the {len(pause)} fires of the pause")
    except AssertionError as failed:
        rows = {t.isoformat(): (r["id"], r["status"], r["trigger"]) for t, r in seen.items()}
        raise AssertionError(f"{failed}: pause {[t.isoformat() for t in pause]}, rows {rows}") from None


@pytest.mark.parametrize(
    ("policy", "bulk"), [("run_all", False), ("run_latest", False), ("skip", False), ("run_latest", True)]
)
async def test_resume_applies_the_misfire_policy_to_the_fires_of_the_pause(
    api, sessions: Sessions, target: HttpTarget, policy: str, bulk: bool
):
    """Also a bulk resume, which skipped the rule: the fires of the pause were neither made up nor
    recorded as missed."""
    alice = await api.authed_user()
    misfire = {"window_seconds": 3600, "policy": policy}
    body = http_job(
        target.url(f"/{uuid.uuid4().hex[:10]}"), {"type": "interval", "every_seconds": 1}, misfire=misfire
    )
    job = await create(alice, body)
    assert job["misfire"] == misfire
    pause = await paused_and_resumed(alice, sessions, job["id"], 4, bulk)
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


async def test_a_patch_right_after_a_backfill_keeps_the_backfill(temporal_client: Client):
    """Temporal's scheduler keeps only the last patch signal of a workflow task: without `patched`
    waiting for each, a resume's unpause sent right after its backfill dropped the backfill."""
    sid = f"patched-{uuid.uuid4().hex[:8]}"
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    handle = await temporal_client.create_schedule(
        sid,
        Schedule(
            action=ScheduleActionStartWorkflow("NoSuchWorkflow", id=sid, task_queue=f"{sid}-nowhere"),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1))]),
            state=ScheduleState(paused=True),
        ),
    )
    fire = ScheduleBackfill(start_at=hour, end_at=hour, overlap=ScheduleOverlapPolicy.ALLOW_ALL)
    await patched(handle, handle.backfill(fire))
    await patched(handle, handle.unpause(note="resumed"))
    run = temporal_client.get_workflow_handle(f"{sid}-{hour:%Y-%m-%dT%H:%M:%SZ}")

    async def started() -> bool:
        try:
            await run.describe()
        except RPCError as error:
            assert error.status == RPCStatusCode.NOT_FOUND
            return False
        return True

    await eventually(started, "the backfilled fire's workflow to start", within=10)
    await run.terminate()
    await handle.delete()


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


@pytest.fixture
async def without_worker(
    temporal_client: Client, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[ApiClient, Sessions]]:
    """An app of its own (its own mirror, so reconciliation sees only this test's jobs) whose runs go to a
    task queue no worker polls yet: its fires start in Temporal but not in the mirror."""
    data_dir = tmp_path_factory.mktemp("missed")
    settings = Settings(data_dir=data_dir, encryption_keys=ENCRYPTION_KEYS)
    engine = make_engine(settings)
    await create_schema(engine)
    app_conf = app_settings(engine, data_dir, task_queue=f"idle-{uuid.uuid4().hex[:8]}")
    async with serve(create_app(app_conf, TemporalGateway.of(temporal_client))) as client:
        yield client, make_sessions(engine)
    await engine.dispose()


async def test_fire_not_started_in_time_is_recorded_missed_and_notified(
    without_worker: tuple[ApiClient, Sessions], temporal_client: Client, target: HttpTarget
):
    api, sessions = without_worker
    sink, smtp = start_smtp()
    alice = await api.authed_user()
    hook = f"/{uuid.uuid4().hex[:10]}"
    notify = {"on_failure": ["ops@example.org"], "webhook_url": target.url(hook), "on_missed": True}
    every_second = {"type": "interval", "every_seconds": 1}
    # Every fire starts a workflow (allow_all) that no worker takes: each is late.
    late_job = await create(
        alice, http_job(target.url("/late"), every_second, notify=notify, overlap_policy="allow_all")
    )
    # The first fire's workflow waits for a worker and the overlap policy skip drops the next ones.
    skip_job = await create(alice, http_job(target.url("/skip"), every_second, notify=notify))
    created = datetime.fromisoformat(skip_job["created_at"])
    await eventually(lambda: datetime.now(UTC) > created + timedelta(seconds=7.5), "fires to pass")
    for job in (late_job, skip_job):  # the fires to judge stop at the pause
        expect(await alice.post(f"/jobs/{job['id']}/pause"), 200)
    reconcile_settings = api.settings.model_copy(
        update={"missed_grace_seconds": 1, "smtp_url": f"smtp://127.0.0.1:{smtp.port}"}
    )
    queue = f"reconcile-{uuid.uuid4().hex[:8]}"
    try:
        async with build_worker(temporal_client, sessions, queue, settings=reconcile_settings) as rec, rec:
            handle = await temporal_client.start_workflow(
                ReconcileWorkflow.run, ReconcileInput(), id=f"reconcile-{queue}", task_queue=queue
            )
            fixes = await handle.result()
            await keep("reconcile_missed_fires", handle, keyring(Settings(encryption_keys=ENCRYPTION_KEYS)))

            missed = await runs_of(alice, late_job["id"])
            assert len(missed) >= 2 and fixes["fire_missed"] == len(missed)
            for row in missed:
                assert row["status"] == "missed" and row["trigger"] == "schedule", row
                assert "waiting for a worker" in row["error"] and row["attempts"] == 0
            skipped = await runs_of(alice, skip_job["id"])
            assert len(skipped) >= 2 and fixes["fire_skipped"] == len(skipped)
            assert {r["status"] for r in skipped} == {"skipped"}
            assert all("overlap policy skip" in r["error"] for r in skipped)

            # A notification for each missed fire; a skipped fire is the job's own overlap policy.
            hooks = await target.wait_for(hook, len(missed))
            notices = [json.loads(h.body) for h in hooks]
            assert {n["event"] for n in notices} == {"run.missed"}
            assert sorted(n["run_id"] for n in notices) == sorted(r["id"] for r in missed)
            await eventually(lambda: len(sink.to("ops@example.org")) >= len(missed), "the emails")
            assert all("missed a fire" in m["Subject"] for m in sink.to("ops@example.org"))
            scrape = (await api.get("http://chronos.test/metrics")).text
            for job, rows, status in ((late_job, missed, "missed"), (skip_job, skipped, "skipped")):
                series = f'chronos_fires_not_run_total{{job_id="{job["id"]}",status="{status}"}}'
                assert f"{series} {len(rows)}.0" in scrape

            # A second pass finds nothing new: each fire is judged once.
            again: dict[str, int] = await temporal_client.execute_workflow(
                ReconcileWorkflow.run, ReconcileInput(), id=f"reconcile-{queue}-2", task_queue=queue
            )
            assert again.get("fire_missed", 0) == 0 and again.get("fire_skipped", 0) == 0

        # A worker comes (and the job resumes: its runs in flight were told to pause): the late fires start
        # after all, each becoming the run of its missed row.
        expect(await alice.post(f"/jobs/{late_job['id']}/resume"), 200)
        queue = api.settings.task_queue
        async with build_worker(temporal_client, sessions, queue, settings=api.settings) as worker, worker:

            async def ran() -> list[dict[str, Any]] | None:
                runs = {r["id"]: r for r in await runs_of(alice, late_job["id"])}
                done = [runs[r["id"]] for r in missed if runs[r["id"]]["status"] == "succeeded"]
                return done if len(done) == len(missed) else None

            late = await eventually(ran, "the missed fires to run late")
            assert all(r["error"] is None and r["attempts"] == 1 for r in late)
            expect(await alice.post(f"/jobs/{late_job['id']}/cancel"), 200)
    finally:
        smtp.stop()


async def test_misfire_rule_sets_the_schedule_catchup_window(
    api, temporal_client: Client, target: HttpTarget
):
    alice = await api.authed_user()
    hourly = {"type": "cron", "cron": "0 * * * *"}
    misfire = {"window_seconds": 900, "policy": "run_all"}
    job = await create(alice, http_job(target.url("/x"), hourly, misfire=misfire))
    handle = temporal_client.get_schedule_handle(schedule_id(job["id"]))

    async def window() -> timedelta | None:
        return (await handle.describe()).schedule.policy.catchup_window

    assert await window() == timedelta(minutes=15)
    patched = expect(
        await alice.patch(f"/jobs/{job['id']}", json={"misfire": {**misfire, "policy": "skip"}}), 200
    )
    assert patched["misfire"]["policy"] == "skip" and await window() == TEMPORAL_MIN_CATCHUP
    cleared = expect(await alice.patch(f"/jobs/{job['id']}", json={"misfire": None}), 200)
    assert cleared["misfire"] is None
    assert await window() == timedelta(seconds=api.settings.catchup_window_seconds)
    bad = {"window_seconds": 5, "policy": "run_all"}
    problem = expect(await alice.post("/jobs", json=http_job(target.url("/x"), hourly, misfire=bad)), 422)
    assert problem["errors"][0]["loc"][-2:] == ["misfire", "window_seconds"]
    unknown = {"window_seconds": 60, "policy": "run_some"}
    problem = expect(await alice.post("/jobs", json=http_job(target.url("/x"), hourly, misfire=unknown)), 422)
    assert problem["errors"][0]["loc"][-2:] == ["misfire", "policy"]


@pytest.mark.parametrize(("policy", "made_up"), [("run_all", "each"), ("run_latest", 1), ("skip", 0)])
async def test_reconcile_makes_up_fires_temporal_dropped_by_the_misfire_rule(
    without_worker: tuple[ApiClient, Sessions],
    temporal_client: Client,
    target: HttpTarget,
    policy: str,
    made_up: Any,
):
    """The schedule is gone for a few seconds (deleted by hand): Temporal drops those fires, and the reconcile
    pass that recreates the schedule makes them up by the job's rule."""
    api, sessions = without_worker
    alice = await api.authed_user()
    every_second = {"type": "interval", "every_seconds": 1}
    misfire = {"window_seconds": 3600, "policy": policy}
    # The recreated schedule's own first fires must start within the grace, or the pass judges them
    # dropped too (made up, but after `back` below): 1 s was too short on a slow, busy machine.
    grace = 3
    settings = api.settings.model_copy(update={"missed_grace_seconds": grace})
    queue = f"reconcile-{uuid.uuid4().hex[:8]}"
    async with (
        build_worker(temporal_client, sessions, api.settings.task_queue, settings=api.settings) as worker,
        worker,
        build_worker(temporal_client, sessions, queue, settings=settings) as reconciler,
        reconciler,
    ):
        job = await create(
            alice, http_job(target.url(f"/{uuid.uuid4().hex[:8]}"), every_second, misfire=misfire)
        )
        await settled_runs(alice, job["id"], 1)
        await temporal_client.get_schedule_handle(schedule_id(job["id"])).delete()
        gone = datetime.now(UTC)
        dropping = timedelta(seconds=grace + 3.5)  # at least 3 fires of the gap past the grace
        await eventually(lambda: datetime.now(UTC) > gone + dropping, "fires to be dropped")
        fixes: dict[str, int] = await temporal_client.execute_workflow(
            ReconcileWorkflow.run, ReconcileInput(), id=f"reconcile-{queue}", task_queue=queue
        )
        assert fixes["schedule_recreated"] == 1
        dropped = fixes.get("fire_made_up", 0) + fixes.get("fire_missed", 0)
        assert dropped >= 3
        expected = dropped if made_up == "each" else made_up
        assert fixes.get("fire_made_up", 0) == expected
        # The fires of the gap: after the delete, before the schedule was back (its own fires run after).
        back = (await temporal_client.get_schedule_handle(schedule_id(job["id"])).describe()).info.created_at

        async def judged() -> list[dict[str, Any]] | None:
            runs = [r for r in await runs_of(alice, job["id"]) if r["scheduled_at"]]
            times = [datetime.fromisoformat(r["scheduled_at"]) for r in runs]
            assert len(times) == len(set(times)), "a fire has two runs"
            rows = [r for r in runs if datetime.fromisoformat(r["scheduled_at"]) > gone]
            rows = [r for r in rows if datetime.fromisoformat(r["scheduled_at"]) < back]
            # A made-up fire's row says so until its run starts.
            done = all(
                r["status"] == "succeeded" or (r["status"] == "missed" and "made up" not in r["error"])
                for r in rows
            )
            return rows if done else None

        rows = await eventually(judged, "the dropped fires to be made up or missed")
        made = [r for r in rows if r["status"] == "succeeded"]
        missed = [r for r in rows if r["status"] == "missed"]
        assert len(rows) >= 3 and len(made) + len(missed) == len(rows)
        if policy == "run_all":
            assert missed == []
        elif policy == "run_latest":  # the latest of the gap only
            assert len(made) == 1 and all(m["scheduled_at"] < made[0]["scheduled_at"] for m in missed)
        else:
            assert made == []
        expect(await alice.post(f"/jobs/{job['id']}/cancel"), 200)
