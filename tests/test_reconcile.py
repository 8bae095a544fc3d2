"""Reconciliation: drift made by hand in Temporal or in the mirror is repaired by a ReconcileWorkflow pass."""

from __future__ import annotations

import socket
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import TypeAdapter
from sqlmodel import col, select, update
from temporalio.api.workflowservice.v1 import ListSchedulesRequest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleCalendarSpec,
    ScheduleOverlapPolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowExecutionStatus,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

from activities.reconcile import ReconcileActivities, _in_shard, reconcile_activities
from core.config import Settings
from core.db import Sessions
from core.job_schedules import fire_workflow_id
from core.metrics import worker_runtime
from core.models import DeadLetter, Job, Run, RunStatus, new_id, utcnow
from core.payloads import (
    SHARDS,
    FiresPass,
    FixedDelayInput,
    HttpAction,
    RunInput,
    Shard,
    Trigger,
    schedule_id,
)
from core.reconcile import RECONCILE_SCHEDULE_ID, ensure_reconcile_schedule, pass_offset, reconcile_schedule
from core.schedules import CronSchedule, fire_times, renewal_due, temporal_spec
from core.temporal import JOB_ID, OWNER_ID
from tests.api_client import ApiClient, AuthedClient, expect
from tests.histories import keep
from tests.http_target import HttpTarget
from tests.mirror_rows import add_job
from tests.waiting import eventually
from workflows.fixed_delay import FixedDelayWorkflow
from workflows.reconcile import RECONCILE_WORKFLOWS, ReconcileInput, ReconcileWorkflow
from workflows.run_job import JobRunWorkflow

YEARLY = {"type": "cron", "cron": "0 0 1 1 *"}  # never fires while the tests run


@dataclass
class Reconciler:
    """A worker running only reconciliation, on its own queue, with the SDK's metrics on its own port."""

    client: Client
    queue: str
    metrics_url: str

    async def run(self, **options: Any) -> dict[str, int]:
        handle = await self.client.start_workflow(
            ReconcileWorkflow.run,
            ReconcileInput(**options),
            id=f"reconcile-test-{uuid.uuid4().hex[:8]}",
            task_queue=self.queue,
        )
        result = await handle.result()
        await keep("reconcile_pass", handle)
        return result

    async def scrape(self) -> str:
        async with httpx.AsyncClient() as http:
            return (await http.get(self.metrics_url)).text

    async def fixes_counted(self, kind: str) -> float:
        text = await self.scrape()
        return sum(
            sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "chronos_reconcile_fixes_total" and sample.labels.get("kind") == kind
        )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
async def reconciler(
    api: ApiClient, sessions: Sessions, temporal_client: Client
) -> AsyncIterator[Reconciler]:
    """Reconciles the API fixture's mirror: recreated schedules start runs on the API worker's queue."""
    port = free_port()
    client = await Client.connect(
        temporal_client.service_client.config.target_host,
        namespace=temporal_client.namespace,
        data_converter=temporal_client.data_converter,
        runtime=worker_runtime(port, host="127.0.0.1"),
    )
    queue = f"reconcile-{uuid.uuid4().hex[:8]}"
    activities = reconcile_activities(api.settings, sessions)
    async with Worker(client, task_queue=queue, workflows=RECONCILE_WORKFLOWS, activities=activities):
        yield Reconciler(client, queue, f"http://127.0.0.1:{port}/metrics")


async def create_job(user: AuthedClient, target: HttpTarget, schedule: dict[str, Any]) -> dict[str, Any]:
    body = {
        "name": "reconciled",
        "schedule": schedule,
        "action": {"type": "http", "method": "POST", "url": target.url(f"/{uuid.uuid4().hex[:10]}")},
    }
    job: dict[str, Any] = expect(await user.post("/jobs", json=body), 201)
    return job


async def exists(client: Client, sid: str) -> bool:
    try:
        await client.get_schedule_handle(sid).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def test_schedule_deleted_in_temporal_is_recreated(
    api: ApiClient, temporal_client: Client, reconciler: Reconciler, target: HttpTarget
) -> None:
    alice = await api.authed_user()
    job = await create_job(alice, target, YEARLY)
    paused = await create_job(alice, target, YEARLY)
    expect(await alice.post(f"/jobs/{paused['id']}/pause", json={"note": "holiday"}), 200)
    sids = [schedule_id(job["id"]), schedule_id(paused["id"])]
    for sid in sids:
        await temporal_client.get_schedule_handle(sid).delete()
    assert expect(await alice.get(f"/jobs/{job['id']}"), 200)["next_runs"] == []
    counted_before = await reconciler.fixes_counted("schedule_recreated")

    fixes = await reconciler.run()

    assert fixes["schedule_recreated"] >= 2
    again = expect(await alice.get(f"/jobs/{job['id']}"), 200)
    assert again["next_runs"] == job["next_runs"] != []
    restored = await temporal_client.get_schedule_handle(schedule_id(paused["id"])).describe()
    assert restored.schedule.state.paused and restored.schedule.state.note == "holiday"
    action = restored.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow) and action.task_queue == api.settings.task_queue

    async def counted() -> bool:
        return await reconciler.fixes_counted("schedule_recreated") >= counted_before + 2

    seen: bool = await eventually(counted, "the fixes counted on the worker's metrics port")
    assert seen
    assert "temporal_worker_task_slots_available" in await reconciler.scrape()  # the SDK's own worker metrics

    # A second pass leaves them alone: the schedules are still the ones the first pass made.
    made = {sid: (await temporal_client.get_schedule_handle(sid).describe()).info.created_at for sid in sids}
    await reconciler.run()
    for sid, created_at in made.items():
        assert (await temporal_client.get_schedule_handle(sid).describe()).info.created_at == created_at


def as_chronos_makes_them(job_id: str) -> TypedSearchAttributes:
    """The search attributes Chronos gives a job's schedule or fixed-delay workflow: reconciliation lists
    a shard's by the job id among them."""
    return TypedSearchAttributes(
        [SearchAttributePair(JOB_ID, job_id), SearchAttributePair(OWNER_ID, "nobody")]
    )


async def test_each_shard_lists_its_own_schedules_only(
    api: ApiClient, temporal_client: Client, target: HttpTarget
) -> None:
    """A pass lists each of its 16 shards' schedules by a condition Temporal keeps to. With a ScheduleId
    range the dev server ignored the upper bound: every shard listed all later shards' schedules too."""
    alice = await api.authed_user()
    made = {schedule_id((await create_job(alice, target, YEARLY))["id"]) for _ in range(6)}

    async def listed() -> list[tuple[Shard, set[str]]] | None:
        by_shard = []
        for shard in SHARDS:
            request = ListSchedulesRequest(
                namespace=temporal_client.namespace, maximum_page_size=1000, query=_in_shard(shard)
            )
            page = await temporal_client.workflow_service.list_schedules(request)
            by_shard.append((shard, {s.schedule_id for s in page.schedules}))
        everything = set().union(*(sids for _, sids in by_shard))
        return by_shard if made <= everything else None  # visibility may lag behind a create

    for shard, sids in await eventually(listed, "the new jobs' schedules in the listings"):
        assert all(shard.holds(sid) for sid in sids), (shard, sids)


async def test_orphan_schedule_is_removed_once_past_the_grace(
    api: ApiClient, temporal_client: Client, reconciler: Reconciler, target: HttpTarget
) -> None:
    alice = await api.authed_user()
    owned = await create_job(alice, target, YEARLY)
    gone = new_id()
    orphan = schedule_id(gone)
    spec = RunInput(job_id=gone, owner_id="nobody", action=HttpAction(url=target.url("/orphan")))
    await temporal_client.create_schedule(
        orphan,
        Schedule(
            action=ScheduleActionStartWorkflow(JobRunWorkflow.run, spec, id=orphan, task_queue="nobody"),
            spec=ScheduleSpec(calendars=[ScheduleCalendarSpec(month=[ScheduleRange(1)])]),
            state=ScheduleState(paused=True),
        ),
        search_attributes=as_chronos_makes_them(gone),
    )

    await reconciler.run()  # too young: it may belong to a job whose row is not committed yet
    assert await exists(temporal_client, orphan)

    fixes = await reconciler.run(grace_seconds=0)

    assert fixes["orphan_schedule_deleted"] >= 1
    assert not await exists(temporal_client, orphan)
    assert await exists(temporal_client, schedule_id(owned["id"]))


async def test_runs_whose_workflow_ended_unrecorded_are_closed(
    api: ApiClient, temporal_client: Client, sessions: Sessions, reconciler: Reconciler, target: HttpTarget
) -> None:
    alice = await api.authed_user()
    job = await create_job(alice, target, YEARLY)
    spec = RunInput(job_id=job["id"], owner_id=alice.id, action=HttpAction(url=target.url("/reconciled")))

    def run_id() -> str:
        return f"job-{job['id']}-manual-{uuid.uuid4().hex[:8]}"

    # Completed, but its end never reached the mirror.
    completed = run_id()
    result = await temporal_client.execute_workflow(
        JobRunWorkflow.run, spec, id=completed, task_queue=api.settings.task_queue
    )
    # Terminated before any worker took it.
    terminated = run_id()
    handle = await temporal_client.start_workflow(
        JobRunWorkflow.run, spec, id=terminated, task_queue=f"nobody-{uuid.uuid4().hex[:8]}"
    )
    await handle.terminate("by hand")
    # Rows whose workflow never started: one long ago (lost), one a moment ago (maybe still starting).
    lost, starting = run_id(), run_id()
    long_ago = utcnow() - timedelta(minutes=10)
    async with sessions() as session:
        await session.exec(
            update(Run).where(col(Run.id) == completed).values(status="running", finished_at=None)
        )
        for rid, created in ((terminated, utcnow()), (lost, long_ago), (starting, utcnow())):
            session.add(
                Run(
                    id=rid,
                    job_id=job["id"],
                    owner_id=alice.id,
                    status=RunStatus.RUNNING if rid == terminated else RunStatus.SCHEDULED,
                    trigger=Trigger.MANUAL,
                    started_at=created,
                    created_at=created,
                )
            )
        await session.commit()

    fixes = await reconciler.run()

    assert fixes["run_closed"] >= 3
    async with sessions() as session:
        runs = {r.id: r for r in await session.exec(select(Run).where(col(Run.job_id) == job["id"]))}
        letters = {
            d.run_id for d in await session.exec(select(DeadLetter).where(DeadLetter.job_id == job["id"]))
        }
    closed = runs[completed]
    assert (closed.status, closed.attempts, closed.error) == (result.status, result.attempts, result.error)
    assert runs[completed].finished_at is not None
    assert (runs[terminated].status, runs[terminated].error) == (
        "failed",
        "closed by reconciliation: workflow terminated",
    )
    assert runs[terminated].finished_at is not None and runs[terminated].duration_ms is not None
    assert (runs[lost].status, runs[lost].error) == ("failed", "closed by reconciliation: workflow not found")
    assert runs[starting].status == "scheduled" and runs[starting].finished_at is None
    assert letters == {terminated, lost} | ({completed} if result.status == "failed" else set())


async def test_workers_ensure_the_reconcile_schedule_and_start_a_pass(
    temporal_client: Client, reconciler: Reconciler
) -> None:
    settings = Settings(task_queue=reconciler.queue, reconcile_every_seconds=3600)
    # A `chronos worker` another test killed (tests/test_failures.py) may have left the session server a
    # pass that no worker will finish; the schedule would skip its trigger behind it.
    running = 'WorkflowType = "ReconcileWorkflow" AND ExecutionStatus = "Running"'
    async for left in temporal_client.list_workflows(running):
        stale = temporal_client.get_workflow_handle(left.id, run_id=left.run_id)
        await stale.terminate("left by another test")
    handle = await ensure_reconcile_schedule(temporal_client, settings)
    try:
        query = (
            f'WorkflowType = "ReconcileWorkflow" AND TaskQueue = "{reconciler.queue}" '
            f'AND WorkflowId STARTS_WITH "{RECONCILE_SCHEDULE_ID}-" AND ExecutionStatus = "Completed"'
        )

        async def passed() -> list[Any]:
            return [w async for w in temporal_client.list_workflows(query)]

        passes: list[Any] = await eventually(passed, "a pass started by the reconcile schedule", within=120)
        assert passes  # at once, not an hour later
        await handle.pause(note="operator")
        await ensure_reconcile_schedule(
            temporal_client, settings.model_copy(update={"reconcile_every_seconds": 120}), run_now=False
        )
        described = await handle.describe()
        intervals = [(i.every, i.offset) for i in described.schedule.spec.intervals]
        assert intervals == [(timedelta(seconds=120), timedelta(seconds=74))]  # off the minute's top
        assert described.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
        assert described.schedule.state.paused and described.schedule.state.note == "operator"
    finally:
        await handle.delete()


def test_a_pass_starts_off_the_seconds_where_jobs_fire() -> None:
    """Interval schedules are aligned to the epoch: with no offset the default pass began at the top of
    each minute, with most cron and interval jobs' fires."""
    (interval,) = reconcile_schedule(Settings()).spec.intervals
    assert interval.every == timedelta(seconds=60) and interval.offset is not None
    second = int(interval.offset.total_seconds())
    assert all(second % step for step in (2, 3, 5)), second  # never a step of 2, 3, 5, 10, 15, 20 or 30 s
    assert pass_offset(timedelta(seconds=1)) == timedelta(0)  # an offset is shorter than its interval


async def test_recurring_job_past_its_end_is_completed_without_a_schedule(
    api: ApiClient, temporal_client: Client, sessions: Sessions, reconciler: Reconciler, target: HttpTarget
) -> None:
    alice = await api.authed_user()
    job = await create_job(alice, target, YEARLY)
    sid = schedule_id(job["id"])
    await temporal_client.get_schedule_handle(sid).delete()
    ended = {**YEARLY, "end_at": (utcnow() - timedelta(minutes=1)).isoformat()}
    async with sessions() as session:
        await session.exec(update(Job).where(col(Job.id) == job["id"]).values(schedule=ended))
        await session.commit()

    fixes = await reconciler.run()

    assert fixes["job_completed"] >= 1
    assert expect(await alice.get(f"/jobs/{job['id']}"), 200)["state"] == "completed"
    assert not await exists(temporal_client, sid)  # nothing left for it to fire


async def test_holidays_and_dst_instants_are_renewed_as_the_years_move_on(
    api: ApiClient, temporal_client: Client, reconciler: Reconciler, target: HttpTarget
) -> None:
    """A spec built a year and a half ago lists old holidays and gaps: a pass rewrites it as one built
    now, keeping the schedule (its state and history) and its job's definition."""
    alice = await api.authed_user()
    berlin = {
        "type": "cron",
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "exclude": {"holidays": "DE-BY"},
    }
    job = await create_job(alice, target, berlin)
    expect(await alice.post(f"/jobs/{job['id']}/pause", json={"note": "kept"}), 200)
    timed: CronSchedule = TypeAdapter(CronSchedule).validate_python(berlin)
    handle = temporal_client.get_schedule_handle(schedule_id(job["id"]))
    stale = temporal_spec(timed, utcnow() - timedelta(days=550))

    def aged(update: ScheduleUpdateInput) -> ScheduleUpdate:
        update.description.schedule.spec = stale
        return ScheduleUpdate(schedule=update.description.schedule)

    await handle.update(aged)

    async def listed_stale() -> bool:
        async for listed in await temporal_client.list_schedules(f'ScheduleId = "{handle.id}"'):
            return listed.schedule is not None and renewal_due(timed, listed.schedule.spec, utcnow())
        return False

    assert await eventually(listed_stale, "the aged spec in the schedule listing")

    fixes = await reconciler.run()

    assert fixes["schedule_renewed"] >= 1
    described = await handle.describe()
    assert not renewal_due(timed, described.schedule.spec, utcnow())
    year = utcnow().astimezone(ZoneInfo("Europe/Berlin")).year
    assert {c.comment for c in described.schedule.spec.skip} == {f"holidays DE-BY {year}-{year + 2}"}
    assert described.schedule.state.paused and described.schedule.state.note == "kept"


async def test_a_fixed_delay_job_whose_workflow_ended_is_started_again_without_a_schedule(
    api: ApiClient, temporal_client: Client, sessions: Sessions, reconciler: Reconciler, target: HttpTarget
) -> None:
    alice = await api.authed_user()
    job = await create_job(alice, target, {"type": "interval", "every_seconds": 3600, "mode": "fixed_delay"})
    loop = temporal_client.get_workflow_handle(schedule_id(job["id"]))

    async def first_run() -> Run | None:
        async with sessions() as session:
            found = await session.exec(select(Run).where(col(Run.job_id) == job["id"]))
            return next((r for r in found if r.finished_at is not None), None)

    run = await eventually(first_run, "the first run to finish")
    await loop.terminate("lost by hand")

    fixes = await reconciler.run()

    assert fixes["fixed_delay_restarted"] >= 1
    assert not await exists(temporal_client, schedule_id(job["id"])), "no schedule for a fixed-delay job"
    restarted = temporal_client.get_workflow_handle(schedule_id(job["id"]))
    assert (await restarted.describe()).status == WorkflowExecutionStatus.RUNNING
    due = await eventually(lambda: restarted.query(FixedDelayWorkflow.next_run_at), "the loop to wait")
    assert run.finished_at is not None and due >= run.finished_at + timedelta(seconds=3600)
    running = (await restarted.describe()).run_id
    await reconciler.run()  # a second pass leaves the running workflow alone
    assert (await restarted.describe()).run_id == running
    expect(await alice.delete(f"/jobs/{job['id']}"), 204)


async def test_an_orphan_fixed_delay_workflow_is_ended_once_past_the_grace(
    temporal_client: Client, reconciler: Reconciler, target: HttpTarget
) -> None:
    gone = new_id()
    orphan = schedule_id(gone)
    run = RunInput(job_id=gone, owner_id="nobody", action=HttpAction(url=target.url("/orphan")))
    spec = FixedDelayInput(run=run, every_seconds=60)
    handle = await temporal_client.start_workflow(
        FixedDelayWorkflow.run,
        spec,
        id=orphan,
        task_queue=f"nobody-{uuid.uuid4().hex[:8]}",
        search_attributes=as_chronos_makes_them(gone),
    )

    await reconciler.run()  # too young: its job's row may not be committed yet
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING

    fixes = await reconciler.run(grace_seconds=0)

    assert fixes["orphan_fixed_delay_ended"] >= 1
    assert (await handle.describe()).status == WorkflowExecutionStatus.TERMINATED


async def test_a_pass_writes_nothing_for_a_job_with_no_fire_to_judge(
    api: ApiClient, sessions: Sessions, temporal_client: Client
) -> None:
    """Each minute's pass asks every live job for its fires since the last pass. A job with none to judge
    (a daily cron between its fires) costs a computation bounded by now, not a transaction: its mark
    stays. Once a fire has passed and has its run, the mark moves past it. With 2,000 daily jobs the
    worker spent 17 s of CPU a minute on the passes before (docs/bench.md)."""
    now = utcnow()
    # Daily, half a day from now: the last fire was about 12 hours ago and the next is as far ahead.
    daily = CronSchedule.model_validate({"type": "cron", "cron": f"0 0 {(now.hour + 12) % 24} * * *"})
    job = await add_job(sessions, daily)
    reconcile = ReconcileActivities(api.settings, sessions)

    async def mark_after_a_pass(mark: datetime | None) -> datetime | None:
        async with sessions() as session:
            row = await session.get(Job, job.id)
            assert row is not None
            row.fires_checked_at = mark
            await session.commit()
        await reconcile._check_fires(temporal_client, row, Counter(), FiresPass(fixes={}))
        async with sessions() as session:
            row = await session.get(Job, job.id)
            assert row is not None
            return row.fires_checked_at

    last = fire_times(daily, now - timedelta(days=1), 1)[0]
    assert last < now - timedelta(hours=11)
    quiet = last + timedelta(seconds=1)  # looked at since just after the last fire: none to judge yet
    assert await mark_after_a_pass(quiet) == quiet

    async with sessions() as session:  # the last fire ran
        session.add(
            Run(
                id=fire_workflow_id(job.id, last),
                job_id=job.id,
                owner_id=job.owner_id,
                status=RunStatus.SUCCEEDED,
                trigger=Trigger.SCHEDULE,
                scheduled_at=last,
            )
        )
        await session.commit()
    before = last - timedelta(seconds=1)
    moved = await mark_after_a_pass(before)
    assert moved is not None and moved > last
