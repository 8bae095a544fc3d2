"""A job in Temporal's terms: its Schedule, the input and search attributes of its runs, and the calls that
pause, rewrite, drop or describe them. The job service decides; this module says it to Temporal.

A fixed-delay interval job has no Schedule: its FixedDelayWorkflow (`job-<id>`, workflows/fixed_delay.py)
starts each run after the previous one ended. The same calls start, signal, stop or cancel it instead."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleBackfill,
    ScheduleHandle,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
    WorkflowHandle,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from core.config import Settings
from core.models import ACTIVE_RUNS, Job, JobState, OverlapPolicy, Run, Timed
from core.payloads import (
    FIXED_DELAY_WORKFLOW,
    LOCAL_FIRST,
    RUN_WORKFLOW,
    FixedCron,
    FixedDelayInput,
    RunInput,
    Trigger,
    schedule_id,
)
from core.schedules import (
    CronSchedule,
    IntervalSchedule,
    OnceSchedule,
    fire_times,
    fixed_delay_due,
    is_fixed_delay,
    next_runs,
    temporal_spec,
)
from core.temporal import JOB_ID, OWNER_ID, TRIGGER


def run_workflow_id(job_id: str, trigger: Trigger, key: str | None = None) -> str:
    """Runs the API starts; the schedule names its own as `job-<id>-<fire time>`. `key`: what allows one run
    only (a dead letter's id), in place of a random part."""
    return f"job-{job_id}-{trigger}-{key or uuid.uuid4().hex[:8]}"


def fire_workflow_id(job_id: str, at: datetime) -> str:
    """The id Temporal's scheduler gives the run of one fire (a backfilled one too): `job-<id>-<fire time>`.
    A fire that never ran is recorded under it, so the fire is one row whether it runs late or not."""
    return f"{schedule_id(job_id)}-{at.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


async def started_fires(
    client: Client, job_id: str, first: datetime, last: datetime
) -> dict[str, tuple[datetime, datetime | None]]:
    """The fires from `first` to `last` whose workflow Temporal started (it may wait for a worker), by
    workflow id, with when it started and closed (None: open); one visibility query for all of them."""
    query = (
        f'ChronosJobId = "{job_id}" AND TemporalScheduledStartTime >= "{rfc3339(first)}" '
        f'AND TemporalScheduledStartTime <= "{rfc3339(last)}"'
    )
    return {
        execution.id: (execution.start_time, execution.close_time)
        async for execution in client.list_workflows(query)
    }


async def fire_started(client: Client, job_id: str, at: datetime) -> tuple[datetime, datetime | None] | None:
    """When Temporal started the fire's workflow and when it closed (None: open), or None if it never
    started it; read at once, unlike the visibility listing of `started_fires`."""
    try:
        described = await client.get_workflow_handle(fire_workflow_id(job_id, at)).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return described.start_time, described.close_time


def rfc3339(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_input(job: Job, trigger: Trigger) -> RunInput:
    """What every run of the job carries, so a run never reads its definition from the mirror."""
    return RunInput(
        job_id=job.id,
        owner_id=job.owner_id,
        job_name=job.name,
        action=job.action,
        retry=job.retry_policy,
        guarantee=job.execution_guarantee,
        trigger=trigger,
        notify=job.notify,
        fixed_cron=fixed_cron(job) if trigger == Trigger.SCHEDULE else None,
        layout=LOCAL_FIRST,
    )


def fixed_cron(job: Job) -> FixedCron | None:
    """The DST rule a scheduled run applies, for fixed-time cron schedules only."""
    schedule = job.schedule
    if not isinstance(schedule, CronSchedule) or not schedule.expression.fixed_time:
        return None
    rule = schedule.dst_rule
    return FixedCron(
        cron=schedule.cron,
        timezone=schedule.timezone,
        dialect=schedule.dialect,
        gap=rule.gap,
        repeat=rule.repeat,
    )


def attributes(job: Job, trigger: Trigger | None = None) -> TypedSearchAttributes:
    """Search attributes that find a job's schedule and runs in the Temporal Web UI."""
    pairs: list[SearchAttributePair[str]] = [
        SearchAttributePair(JOB_ID, job.id),
        SearchAttributePair(OWNER_ID, job.owner_id),
    ]
    if trigger is not None:
        pairs.append(SearchAttributePair(TRIGGER, str(trigger)))
    return TypedSearchAttributes(pairs)


def build_schedule(settings: Settings, job: Job) -> Schedule:
    """The Temporal Schedule of a timed job: its spec, its action (a JobRunWorkflow), policy and state.
    Creation, in-place updates and reconciliation all build it here."""
    timed = job.timed
    action = ScheduleActionStartWorkflow(
        RUN_WORKFLOW,
        run_input(job, Trigger.SCHEDULE),
        id=schedule_id(job.id),
        task_queue=settings.task_queue,
        typed_search_attributes=attributes(job, Trigger.SCHEDULE),
        memo={"job_name": job.name},
    )
    once = isinstance(timed, OnceSchedule)
    return Schedule(
        action=action,
        spec=temporal_spec(timed, datetime.now(UTC)),
        policy=SchedulePolicy(
            overlap=ScheduleOverlapPolicy[job.overlap_policy.upper()],
            catchup_window=job.misfire.catchup_window()
            if job.misfire
            else timedelta(seconds=settings.catchup_window_seconds),
        ),
        state=ScheduleState(
            paused=job.paused, note=job.pause_note, limited_actions=once, remaining_actions=1 if once else 0
        ),
    )


async def create_schedule(client: Client, settings: Settings, job: Job) -> None:
    """The job's Schedule, or for a fixed-delay job its FixedDelayWorkflow."""
    if is_fixed_delay(job.schedule):
        await start_fixed_delay(client, settings, job)
        return
    await client.create_schedule(
        schedule_id(job.id),
        build_schedule(settings, job),
        memo={"job_name": job.name, "owner_id": job.owner_id},
        search_attributes=attributes(job),
        backfill=overdue(job),
    )


def overdue(job: Job) -> list[ScheduleBackfill]:
    """A one-time job whose run_at has just passed (inside the grace the API allows): Temporal never fires a
    calendar time from before the schedule existed, so the schedule is backfilled over that instant (its
    fire_at, the calendar's whole second), which runs it at once with that as its nominal time."""
    schedule = job.schedule
    if not isinstance(schedule, OnceSchedule) or schedule.fire_at > datetime.now(UTC):
        return []
    second = timedelta(seconds=1)
    at = schedule.fire_at
    return [
        ScheduleBackfill(start_at=at - second, end_at=at + second, overlap=ScheduleOverlapPolicy.ALLOW_ALL)
    ]


async def patched(handle: ScheduleHandle, patch: Awaitable[None]) -> None:
    """Send one patch to a schedule (pause, unpause, backfill) and return once its scheduler has taken it
    in. Temporal's scheduler workflow keeps only the last patch of those that reach it in one workflow task,
    so a patch sent right after another (a resume's backfill, then its unpause) silently drops the first.
    Describing the schedule is a query, which Temporal answers only after that task: a patch sent after
    it lands in a later one."""
    await patch
    await handle.describe()


async def backfill_overdue(client: Client, job: Job) -> None:
    """After a PATCH gave a one-time job a run_at that has just passed: run it now, as on creation."""
    if backfills := overdue(job):
        handle = client.get_schedule_handle(schedule_id(job.id))
        await patched(handle, handle.backfill(*backfills))


async def backfill_fires(
    client: Client, job: Job, ranges: list[tuple[datetime, datetime]], overlap: OverlapPolicy
) -> None:
    """Run the schedule's fires of each range, both ends included (Temporal's backfill range), as the
    schedule would have: each run carries the schedule's input and its fire time (a paused schedule
    backfills too)."""
    policy = ScheduleOverlapPolicy[overlap.upper()]
    backfills = [ScheduleBackfill(start_at=start, end_at=end, overlap=policy) for start, end in ranges]
    if backfills:
        handle = client.get_schedule_handle(schedule_id(job.id))
        await patched(handle, handle.backfill(*backfills))


async def update_schedule(
    client: Client, settings: Settings, job: Job, was_fixed_delay: bool = False, last: Run | None = None
) -> None:
    """Rewrite spec, action and policy in place; Temporal keeps the schedule's state and history. A
    fixed-delay job's workflow gets the new definition for its next run (started again if it had ended,
    counting from the `last` scheduled run); a job
    that changes between fixed delay and a Schedule gets the new one made and the old one stopped."""
    if is_fixed_delay(job.schedule):
        fresh_input = fixed_delay_input(job, last)
        await client.start_workflow(
            FIXED_DELAY_WORKFLOW,
            fresh_input,
            start_signal="update",
            start_signal_args=[fresh_input],
            **_fixed_delay_options(settings, job),
        )
        if not was_fixed_delay:
            await _ignore_gone(client.get_schedule_handle(schedule_id(job.id)).delete())
        return
    if was_fixed_delay:
        await create_schedule(client, settings, job)
        await _ignore_gone(client.get_workflow_handle(schedule_id(job.id)).signal("stop"))
        return
    fresh = build_schedule(settings, job)
    once = isinstance(job.schedule, OnceSchedule)

    def updater(current: ScheduleUpdateInput) -> ScheduleUpdate:
        state = current.description.schedule.state
        if once:  # a new run_at arms the one-time schedule again
            state = fresh.state
        fresh.state = state
        fresh.state.paused, fresh.state.note = job.paused, job.pause_note
        return ScheduleUpdate(schedule=fresh)

    await client.get_schedule_handle(schedule_id(job.id)).update(updater)


async def start_run_workflow(
    client: Client, settings: Settings, job: Job, run_id: str, trigger: Trigger
) -> WorkflowHandle[Any, Any]:
    """The workflow of a run the API starts (schedules start their own)."""
    return await client.start_workflow(
        RUN_WORKFLOW,
        run_input(job, trigger),
        id=run_id,
        task_queue=settings.task_queue,
        search_attributes=attributes(job, trigger),
        memo={"job_name": job.name},
    )


async def set_paused(client: Client, job: Job, note: str | None, known: Sequence[str]) -> None:
    """Pause or unpause the schedule (or the fixed-delay workflow), then signal every run in flight
    (`runs_in_flight`)."""
    signal = "pause" if job.paused else "resume"
    if is_fixed_delay(job.schedule):
        await _ignore_gone(client.get_workflow_handle(schedule_id(job.id)).signal(signal))
    elif not job.immediate:
        handle = client.get_schedule_handle(schedule_id(job.id))
        patch = handle.pause(note=note or "paused") if job.paused else handle.unpause(note="resumed")
        await patched(handle, patch)
    # The run holds before its next attempt; the attempt in progress finishes (JobRunWorkflow).
    for run_id in await runs_in_flight(client, job, known):
        await _ignore_gone(client.get_workflow_handle(run_id).signal(signal))


async def drop_schedule(client: Client, job: Job, at_once: bool = False) -> None:
    """No further runs: the Schedule goes; a fixed-delay workflow stops after the run in flight ends, or
    `at_once` (a job that was never committed) is terminated with that run."""
    if job.immediate:
        return
    if is_fixed_delay(job.schedule):
        handle = client.get_workflow_handle(schedule_id(job.id))
        await _ignore_gone(handle.terminate("job not created") if at_once else handle.signal("stop"))
        return
    await _ignore_gone(client.get_schedule_handle(schedule_id(job.id)).delete())


async def cancel_runs(client: Client, job: Job, known: Sequence[str]) -> None:
    """Cancel the runs in flight (`runs_in_flight`); a fixed-delay workflow is cancelled with its run."""
    if is_fixed_delay(job.schedule):
        await _ignore_gone(client.get_workflow_handle(schedule_id(job.id)).cancel())
    for run_id in await runs_in_flight(client, job, known):
        await _ignore_gone(client.get_workflow_handle(run_id).cancel())


async def runs_in_flight(client: Client, job: Job, known: Sequence[str]) -> list[str]:
    """The job's runs in flight: those Temporal lists, and `known`, those the mirror says the API started
    and have not ended. Temporal's list shows a run a moment after it starts: a cancel sent with a "run
    now" missed that run, which went on after the job was cancelled."""
    listed = [execution.id async for execution in client.list_workflows(_running_query(job.id))]
    return list(dict.fromkeys([*listed, *known]))


def has_no_fires(job: Job) -> bool:
    """Immediate, cancelled and deleted jobs have no coming fires to show."""
    return job.immediate or job.state == JobState.CANCELLED or job.deleted_at is not None


async def described_next_runs(client: Client, job: Job) -> list[datetime]:
    """A job's coming fires as its Temporal schedule lists them (fixed delay: `fixed_delay_next`)."""
    if has_no_fires(job) or is_fixed_delay(job.schedule):
        return []
    try:
        described = await client.get_schedule_handle(schedule_id(job.id)).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return []  # reconciliation recreates it
        raise
    return next_runs(job.timed, described.info.next_action_times)


# The coming fires `upcoming_local` last computed for each job: (the schedule, how many, from when, the
# fires). A job's fires after any time up to the first of them are the same, so a list shown again before
# then reuses them: a cron schedule's fires, computed in Python, were most of the CPU that building a page of
# 20 cron jobs' answers took (docs/bench.md). Emptied when it reaches UPCOMING_KEPT jobs.
_UPCOMING: dict[str, tuple[Timed, int, datetime, list[datetime]]] = {}
UPCOMING_KEPT = 10_000


def upcoming_local(job: Job, now: datetime, count: int = 5) -> list[datetime]:
    """A job's next runs computed here rather than asked of Temporal: lists show many jobs at once, and a
    describe() per listed job would cost Temporal more than the whole page (docs/bench.md). The same
    rules as the schedule's spec; GET /jobs/{id} reads the schedule itself."""
    if has_no_fires(job) or is_fixed_delay(job.schedule):
        return []
    schedule = job.timed
    kept = _UPCOMING.get(job.id)
    if kept is not None:
        kept_schedule, kept_count, since, fires = kept
        # `fire_times` gives the fires strictly after its instant: none lies between `since` and `now`.
        if (
            kept_count == count
            and since <= now
            and (not fires or now < fires[0])
            and kept_schedule == schedule
        ):
            return list(fires)
    fires = fire_times(schedule, now, count)
    if len(_UPCOMING) >= UPCOMING_KEPT:
        _UPCOMING.clear()
    _UPCOMING[job.id] = (schedule, count, now, fires)
    return list(fires)


def jittered(job: Job) -> bool:
    """Whether Temporal moves the fires by a random jitter: then only its describe() knows the times, and
    `upcoming_local` shows the nominal ones."""
    return not job.immediate and not isinstance(job.timed, OnceSchedule) and job.timed.jitter_seconds > 0


def fixed_delay_input(job: Job, last: Run | None = None) -> FixedDelayInput:
    """What the FixedDelayWorkflow of a job runs: its runs' input, the delay and the window; started
    again (reconciliation, a PATCH after it ended), it counts from the `last` scheduled run's end."""
    schedule = job.timed
    assert isinstance(schedule, IntervalSchedule), "fixed delay is an interval mode"
    return FixedDelayInput(
        run=run_input(job, Trigger.SCHEDULE),
        every_seconds=schedule.every_seconds,
        jitter_seconds=schedule.jitter_seconds,
        start_at=schedule.start_at,
        end_at=schedule.end_at,
        paused=job.paused,
        last_end=last.finished_at if last is not None else None,
    )


async def start_fixed_delay(client: Client, settings: Settings, job: Job, last: Run | None = None) -> None:
    await client.start_workflow(
        FIXED_DELAY_WORKFLOW, fixed_delay_input(job, last), **_fixed_delay_options(settings, job)
    )


def _fixed_delay_options(settings: Settings, job: Job) -> dict[str, Any]:
    return {
        "id": schedule_id(job.id),
        "task_queue": settings.task_queue,
        "search_attributes": attributes(job),
        "memo": {"job_name": job.name, "owner_id": job.owner_id},
    }


def fixed_delay_next(job: Job, last: Run | None, now: datetime) -> tuple[list[datetime], str | None]:
    """A fixed-delay job's next run from its last scheduled run in the mirror, and the note that says
    why at most one is known: the previous end plus every_seconds (at once if that has passed, as after
    an outage), the start_at of a job that has not begun, or none while a run is in flight."""
    if has_no_fires(job):
        return [], None
    schedule = job.timed
    assert isinstance(schedule, IntervalSchedule), "fixed delay is an interval mode"
    every = schedule.every_seconds
    if last is not None and last.status in ACTIVE_RUNS:
        return [], f"fixed delay: the next run starts {every} s after the running run ends"
    due = fixed_delay_due(schedule, last.finished_at if last is not None else None, now)
    if due is None:
        return [], None
    return [
        due
    ], f"fixed delay: each run starts {every} s after the previous run ends, so only the next is known"


def _running_query(job_id: str) -> str:
    """The job's runs in flight (not its FixedDelayWorkflow, which carries the job's id too)."""
    return f'ChronosJobId = "{job_id}" AND WorkflowType = "{RUN_WORKFLOW}" AND ExecutionStatus = "Running"'


async def _ignore_gone(call: Awaitable[Any]) -> None:
    """A schedule or run that has just ended needs no signal, cancel or delete: not an error."""
    try:
        await call
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
