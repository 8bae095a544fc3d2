"""Reconciliation activities: repair the drift that crashes and hand edits leave between mirror and Temporal.

A job's row and its Temporal Schedule (a fixed-delay interval job: its FixedDelayWorkflow) are written in
two steps, and a run is closed in the mirror by an activity of its own workflow; a crash between the
steps, a schedule deleted in the Web UI or a terminated workflow leaves the two apart. Each activity
repairs one slice (a range of job ids, a page of open runs), so 10,000 jobs make many small heartbeating
activities instead of one giant one, and repeating any of them changes nothing that is already right.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import or_, update
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio import activity
from temporalio.api.schedule.v1 import ScheduleSpec as ScheduleSpecProto
from temporalio.api.workflowservice.v1 import ListSchedulesRequest
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleAlreadyRunningError,
    WorkflowExecutionStatus,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from activities.mirror import MirrorActivities
from core.config import Settings
from core.db import Sessions
from core.job_schedules import (
    backfill_fires,
    create_schedule,
    fire_started,
    fire_workflow_id,
    start_fixed_delay,
    started_fires,
    update_schedule,
)
from core.misfire import SCHEDULE_SETTLE, judge
from core.missed import fires_with_runs, record_not_run
from core.models import ACTIVE_RUNS, NOT_RUN, Job, JobState, OverlapPolicy, Run, RunStatus, utcnow
from core.payloads import (
    FIXED_DELAY_WORKFLOW,
    EmailNotice,
    FiresPass,
    RunFinished,
    RunNotice,
    RunOutcome,
    RunResult,
    RunsPage,
    RunsPass,
    Shard,
    WebhookNotice,
    schedule_id,
)
from core.runs import last_scheduled_runs
from core.schedules import OnceSchedule, fire_times, is_fixed_delay, renewal_due
from core.temporal import JOB_ID

FixKind = Literal[
    "schedule_recreated",
    "schedule_renewed",
    "orphan_schedule_deleted",
    "fixed_delay_restarted",
    "orphan_fixed_delay_ended",
    "run_closed",
    "job_completed",
    "fire_missed",
    "fire_skipped",
    "fire_made_up",
]
# The FixedDelayWorkflows in flight: each shard keeps those named after its jobs.
RUNNING_LOOPS = f'WorkflowType = "{FIXED_DELAY_WORKFLOW}" AND ExecutionStatus = "Running"'
# Prometheus name of the fixes counter, served with the SDK's metrics on the worker's metrics port.
FIXES_METRIC = "chronos_reconcile_fixes_total"
RUNS_PER_PAGE = 200
NOT_STARTED = (
    "Temporal's scheduler did not start it (past the catch-up window, or held back by overlap policy skip "
    "after the run before it had ended)"
)
ENDED: dict[WorkflowExecutionStatus, RunOutcome] = {
    WorkflowExecutionStatus.FAILED: RunOutcome.FAILED,
    WorkflowExecutionStatus.TERMINATED: RunOutcome.FAILED,
    WorkflowExecutionStatus.TIMED_OUT: RunOutcome.FAILED,
    WorkflowExecutionStatus.CANCELED: RunOutcome.CANCELLED,
}


def needs_schedule(job: Job, now: datetime) -> bool:
    """A live timed job needs a schedule while Temporal could still fire it: a one-time job until its
    run_at, a recurring one until its end_at."""
    timed = job.timed
    if isinstance(timed, OnceSchedule):
        return timed.fire_at > now
    return timed.end_at is None or timed.end_at > now


def recurring_ended(job: Job, now: datetime) -> bool:
    """A recurring job waiting for a fire that its end_at rules out: Job.run_ended's rule, with no run."""
    if job.state != JobState.SCHEDULED:
        return False
    timed = job.timed
    return not isinstance(timed, OnceSchedule) and timed.end_at is not None and timed.end_at <= now


class ReconcileActivities:
    def __init__(self, settings: Settings, sessions: Sessions) -> None:
        self.settings = settings
        self.sessions = sessions
        self.mirror = MirrorActivities(sessions)

    @activity.defn(name="reconcile_schedules")
    async def schedules(self, shard: Shard) -> dict[str, int]:
        """Recreate missing schedules (and fixed-delay workflows) of the shard's live jobs, renew the dated
        part of their specs (holidays, DST instants: `renewal_due`), delete schedules and end fixed-delay
        workflows no live job owns, and complete recurring jobs past their end_at."""
        fixes: Counter[str] = Counter()
        client = activity.client()
        # Schedules first, then jobs: a job committed in between is seen with its schedule.
        listed = await _listed_specs(client, shard)
        running = " AND ".join(filter(None, [RUNNING_LOOPS, _in_shard(shard)]))
        loops = {w.id: w.start_time async for w in client.list_workflows(running) if shard.holds(w.id)}
        now = utcnow()
        async with self.sessions() as session:
            query = select(Job).where(
                col(Job.deleted_at).is_(None), col(Job.state) != JobState.CANCELLED, col(Job.id) >= shard.low
            )
            if shard.high is not None:
                query = query.where(col(Job.id) < shard.high)
            jobs = [job for job in await session.exec(query) if not job.immediate]
            for job in jobs:
                if not recurring_ended(job, now):
                    continue
                # Only if still waiting: a pause or an edit since the read wins.
                done = await session.exec(
                    update(Job)
                    .where(col(Job.id) == job.id, col(Job.state) == JobState.SCHEDULED)
                    .values(state=JobState.COMPLETED, updated_at=now)
                )
                if done.rowcount:
                    _fixed(fixes, "job_completed", f"job {job.id} is past its end_at: completed")
            await session.commit()
            delayed = {job.id for job in jobs if is_fixed_delay(job.schedule)}
            stopped = [
                job
                for job in jobs
                if job.id in delayed and schedule_id(job.id) not in loops and needs_schedule(job, now)
            ]
            last = await last_scheduled_runs(session, stopped)
        for job in stopped:
            activity.heartbeat()
            await self._restart(client, job, last.get(job.id), fixes)
        for job in jobs:
            activity.heartbeat()
            if job.id in delayed:
                continue
            sid = schedule_id(job.id)
            if sid not in listed and needs_schedule(job, now):
                await self._recreate(client, job, fixes)
            elif (spec := listed.get(sid)) is not None and renewal_due(job.timed, spec, now):
                await self._renew(client, job, fixes)
        born_before = now - timedelta(seconds=shard.grace_seconds)
        owned = {schedule_id(job.id) for job in jobs if job.id not in delayed}
        for orphan in sorted(listed.keys() - owned):
            activity.heartbeat()
            await self._delete_orphan(client, orphan, born_before, fixes)
        looping = {schedule_id(job_id) for job_id in delayed}
        for orphan in sorted(set(loops) - looping):
            activity.heartbeat()
            if loops[orphan] <= born_before:
                await self._end_orphan(client, orphan, fixes)
        return dict(fixes)

    async def _restart(self, client: Client, job: Job, last: Run | None, fixes: Counter[str]) -> None:
        """A live fixed-delay job whose workflow ended (terminated, lost): started again, counting from
        its last scheduled run's end, so a due run starts at once."""
        try:
            await start_fixed_delay(client, self.settings, job, last)
        except WorkflowAlreadyStartedError:
            return  # the listing lagged behind a workflow started a moment ago
        _fixed(
            fixes, "fixed_delay_restarted", f"job {job.id}: workflow {schedule_id(job.id)} was not running"
        )

    async def _end_orphan(self, client: Client, workflow_id: str, fixes: Counter[str]) -> None:
        """A fixed-delay workflow whose job is gone, cancelled or no longer fixed-delay: terminated, with
        the run it holds (the run's record is closed by the runs pass)."""
        try:
            await client.get_workflow_handle(workflow_id).terminate("reconcile: no live fixed-delay job")
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            return
        _fixed(
            fixes, "orphan_fixed_delay_ended", f"workflow {workflow_id} had no live fixed-delay job: ended"
        )

    async def _recreate(self, client: Client, job: Job, fixes: Counter[str]) -> None:
        try:
            await create_schedule(client, self.settings, job)
        except ScheduleAlreadyRunningError:
            return  # the listing lagged behind a schedule created a moment ago
        _fixed(fixes, "schedule_recreated", f"job {job.id}: schedule {schedule_id(job.id)} was missing")

    async def _renew(self, client: Client, job: Job, fixes: Counter[str]) -> None:
        try:
            await update_schedule(client, self.settings, job)
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return  # deleted since the listing: the next pass recreates it
            raise
        _fixed(fixes, "schedule_renewed", f"job {job.id}: holidays and DST instants renewed")

    async def _delete_orphan(
        self, client: Client, sid: str, born_before: datetime, fixes: Counter[str]
    ) -> None:
        handle = client.get_schedule_handle(sid)
        try:
            created = (await handle.describe()).info.created_at
            if created > born_before:
                return
            await handle.delete()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return
            raise
        _fixed(fixes, "orphan_schedule_deleted", f"schedule {sid} had no live job: deleted")

    @activity.defn(name="reconcile_fires")
    async def fires(self, shard: Shard) -> FiresPass:
        """Find the fires of the shard's live jobs that have not started within the grace period, and
        record each (core/missed.py): dropped by the overlap policy `skip`, made up or missed by the job's
        misfire rule (core/misfire.py), or still waiting in Temporal for a worker. Jobs with
        `notify.on_missed` get a `run.missed` notification for each fire that did not start in time."""
        fixes: Counter[str] = Counter()
        found = FiresPass(fixes={})
        client = activity.client()
        async with self.sessions() as session:
            query = select(Job).where(
                col(Job.deleted_at).is_(None), col(Job.state) != JobState.CANCELLED, col(Job.id) >= shard.low
            )
            if shard.high is not None:
                query = query.where(col(Job.id) < shard.high)
            # A fixed-delay job has no fire times to miss: each run starts after the last one ends.
            jobs = [
                job
                for job in await session.exec(query)
                if not job.immediate and not is_fixed_delay(job.schedule)
            ]
        for job in jobs:
            activity.heartbeat()
            await self._check_fires(client, job, fixes, found)
        found.fixes = dict(fixes)
        return found

    async def _check_fires(self, client: Client, job: Job, fixes: Counter[str], found: FiresPass) -> None:
        now = utcnow()
        grace = timedelta(seconds=self.settings.missed_grace_seconds)
        since = job.fires_checked_at or job.created_at
        until = now - grace
        if job.paused and job.paused_at is not None:  # resume judges the fires of the pause
            until = min(until, job.paused_at - SCHEDULE_SETTLE)
        timed = job.timed
        if not isinstance(timed, OnceSchedule) and timed.end_at is not None:  # none after it to look for
            until = min(until, timed.end_at)
        if until <= since:
            return
        cap = self.settings.max_backfill_fires
        fires = fire_times(timed, since, cap, until)
        if not fires:  # nothing to judge; the mark stays, and the next pass looks from it again
            return
        if len(fires) == cap:  # more than a pass takes: the rest next pass
            until = fires[-1]
        async with self.sessions() as session:
            ran = await fires_with_runs(session, job.id, since, until)
            missing = [f for f in fires if f not in ran]
            if missing and job.overlap_policy in BUFFERED and await _has_open_run(session, job.id):
                return  # a fire may wait in the schedule's buffer behind the run: judged when it ends
            late: dict[datetime, str] = {}
            skipped: dict[datetime, str] = {}
            dropped: list[datetime] = []
            # Runs Temporal started that may not be in the mirror yet (waiting for a worker).
            waiting = await _schedule_running(client, job) if missing else []
            started = await started_fires(client, job.id, missing[0], missing[-1]) if missing else {}
            for fire in missing:
                workflow_id = fire_workflow_id(job.id, fire)
                # The listing may lag behind a start: a fire it lacks is asked about by its id.
                span = started.get(workflow_id) or await fire_started(client, job.id, fire)
                if span is not None:
                    how = "waiting for a worker" if span[1] is None else "its workflow ended unrecorded"
                    late[fire] = f"missed: not started {grace.total_seconds():g} s after its time ({how})"
                    waiting.append((workflow_id, *span))
                elif job.overlap_policy == OverlapPolicy.SKIP and (
                    running := _open_at(waiting, fire) or await _running_at(session, job.id, fire)
                ):
                    skipped[fire] = f"skipped: run {running} was still running (overlap policy skip)"
                else:
                    dropped.append(fire)
            # No workflow and no run open: past the catch-up window, or Temporal's scheduler still counted an
            # ended run as running (on a busy server it learns of the end late) and `skip` dropped the fire.
            verdict = judge(job.misfire, dropped, now, NOT_STARTED)
            made_up = {
                fire: f"missed: {NOT_STARTED}; made up by misfire policy "
                f"{job.misfire.policy if job.misfire else ''}"
                for fire in verdict.backfill
            }
            recorded = [
                *await record_not_run(
                    session, job, {**late, **verdict.missed, **made_up}, RunStatus.MISSED, now
                ),
                *await record_not_run(session, job, skipped, RunStatus.SKIPPED, now),
            ]
            # The mark moves on only if the job is still as read: a resume or an edit since then wins.
            moved = await session.exec(
                update(Job)
                .where(col(Job.id) == job.id, col(Job.version) == job.version)
                .values(fires_checked_at=until)
            )
            if not moved.rowcount:
                await session.rollback()
                return
            # Made up before the commit: if Temporal refuses, nothing is recorded and the activity's retry
            # (or the next pass) judges these fires again; a fire that ran keeps its run.
            if verdict.backfill:
                ranges = [(fire, fire) for fire in verdict.backfill]
                await backfill_fires(client, job, ranges, OverlapPolicy.BUFFER_ALL)
            await session.commit()
        for row in recorded:
            kind: FixKind = "fire_skipped" if row.status == RunStatus.SKIPPED else "fire_missed"
            if row.scheduled_at in made_up:
                kind = "fire_made_up"
            _fixed(fixes, kind, f"job {job.id}: fire {row.scheduled_at:%Y-%m-%dT%H:%M:%SZ} {row.error}")
            if row.status == RunStatus.MISSED and job.notify.on_missed:
                _missed_notices(job, row, now, found)

    @activity.defn(name="reconcile_runs")
    async def runs(self, page: RunsPage) -> RunsPass:
        """Close the page's open runs whose workflow ended (or never began) without telling the mirror."""
        fixes: Counter[str] = Counter()
        client = activity.client()
        async with self.sessions() as session:
            query = select(Run.id, Run.created_at).where(col(Run.status).in_(ACTIVE_RUNS))
            if page.after is not None:
                query = query.where(col(Run.id) > page.after)
            rows = list(await session.exec(query.order_by(col(Run.id)).limit(RUNS_PER_PAGE)))
        born_before = utcnow() - timedelta(seconds=page.grace_seconds)
        for run_id, created_at in rows:
            activity.heartbeat()
            ended = await _ended(client, run_id, lost=created_at <= born_before)
            if ended is None or not await self._still_open(run_id):
                continue
            await self.mirror.run_finished(RunFinished(run_id=run_id, finished_at=ended[0], result=ended[1]))
            how = ended[1].error or "from its workflow's result"
            _fixed(fixes, "run_closed", f"run {run_id} closed as {ended[1].status}: {how}")
        more = len(rows) == RUNS_PER_PAGE
        return RunsPass(
            fixes=dict(fixes),
            next_page=page.model_copy(update={"after": rows[-1][0]}) if more else None,
        )

    async def _still_open(self, run_id: str) -> bool:
        """The workflow may have recorded its end since the page was read."""
        async with self.sessions() as session:
            run = await session.get(Run, run_id)
            return run is not None and run.status in ACTIVE_RUNS


async def _ended(client: Client, run_id: str, lost: bool) -> tuple[datetime, RunResult] | None:
    """When and how the run's workflow ended, or None while it runs (or may still be starting)."""
    handle = client.get_workflow_handle(run_id, result_type=RunResult)
    try:
        described = await handle.describe()
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        if not lost:
            return None
        return utcnow(), _closed(RunOutcome.FAILED, "not found")
    status, finished_at = described.status, described.close_time or utcnow()
    if status == WorkflowExecutionStatus.COMPLETED:
        try:
            return finished_at, await handle.result(follow_runs=False)
        except RPCError:  # the history is gone (retention): the run did complete
            return finished_at, RunResult(status=RunOutcome.SUCCEEDED, attempts=0)
    if status is None or status not in ENDED:
        return None
    return finished_at, _closed(ENDED[status], status.name.lower())


def _closed(status: RunOutcome, how: str) -> RunResult:
    # attempts=0: the mirror keeps the count of the attempts it recorded.
    return RunResult(status=status, attempts=0, error=f"closed by reconciliation: workflow {how}")


def _fixed(fixes: Counter[str], kind: FixKind, message: str) -> None:
    """One log line and one count per repair."""
    activity.logger.warning("reconcile %s: %s", kind, message)
    fixes[kind] += 1
    activity.metric_meter().create_counter(FIXES_METRIC, "drift repaired by reconciliation").add(
        1, {"kind": kind}
    )


# Overlap policies under which a fire waits in the schedule's buffer while a run of the job is open.
BUFFERED = (OverlapPolicy.BUFFER_ONE, OverlapPolicy.BUFFER_ALL)


async def _schedule_running(client: Client, job: Job) -> list[tuple[str, datetime, datetime | None]]:
    """The runs the job's schedule started that are still open, by Temporal's account."""
    try:
        info = (await client.get_schedule_handle(schedule_id(job.id)).describe()).info
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return []
        raise
    running = {
        action.workflow_id
        for action in info.running_actions
        if isinstance(action, ScheduleActionExecutionStartWorkflow)
    }
    return [
        (result.action.workflow_id, result.started_at, None)
        for result in info.recent_actions
        if isinstance(result.action, ScheduleActionExecutionStartWorkflow)
        and result.action.workflow_id in running
    ]


def _open_at(waiting: list[tuple[str, datetime, datetime | None]], at: datetime) -> str | None:
    """A started workflow of the job that was open at `at`, though the mirror has not heard of it."""
    for workflow_id, started, closed in waiting:
        if started <= at and (closed is None or closed > at):
            return workflow_id
    return None


async def _has_open_run(session: AsyncSession, job_id: str) -> bool:
    found = await session.exec(
        select(Run.id).where(col(Run.job_id) == job_id, col(Run.status).in_(ACTIVE_RUNS)).limit(1)
    )
    return found.first() is not None


async def _running_at(session: AsyncSession, job_id: str, at: datetime) -> str | None:
    """A run of the job that was running at `at`: the overlap policy `skip` dropped a fire for it."""
    found = await session.exec(
        select(Run.id).where(
            col(Run.job_id) == job_id,
            col(Run.status).not_in(NOT_RUN),
            col(Run.started_at) <= at,
            or_(col(Run.finished_at).is_(None), col(Run.finished_at) > at),
        )
    )
    return found.first()


def _missed_notices(job: Job, row: Run, now: datetime, found: FiresPass) -> None:
    """`run.missed` to the job's failure addresses and its webhook."""
    notice = RunNotice(
        event="run.missed",
        job_id=job.id,
        job_name=job.name,
        run_id=row.id,
        owner_id=job.owner_id,
        status=RunStatus.MISSED,
        attempts=0,
        error=row.error,
        finished_at=now,
    )
    if job.notify.on_failure:
        found.emails.append(EmailNotice(notice=notice, to=list(job.notify.on_failure)))
    if job.notify.webhook_url is not None:
        found.webhooks.append(WebhookNotice(notice=notice, url=str(job.notify.webhook_url)))


async def _listed_specs(client: Client, shard: Shard) -> dict[str, ScheduleSpecProto | None]:
    """The shard's schedules by id, each with its spec as the listing sends it. The SDK's `list_schedules`
    converts every entry whole (spec ranges, search attributes, memo): 89 % of a pass's CPU with 2,000
    schedules, of which the pass reads only ids and a spec's dated parts."""
    request = ListSchedulesRequest(namespace=client.namespace, maximum_page_size=1000, query=_in_shard(shard))
    listed: dict[str, ScheduleSpecProto | None] = {}
    while True:
        page = await client.workflow_service.list_schedules(request, retry=True)
        for s in page.schedules:
            if shard.holds(s.schedule_id):
                listed[s.schedule_id] = s.info.spec if s.HasField("info") else None
        if not page.next_page_token:
            return listed
        request.next_page_token = page.next_page_token


def _in_shard(shard: Shard) -> str:
    """A visibility condition for the shard's job ids, [low, high), which each job's schedule and
    fixed-delay workflow carries as a search attribute. A range on ScheduleId was one the dev server did not
    keep to: it ignored the upper bound, so each of the 16 shards listed every later shard's schedules as
    well, 8.5 listings of every schedule a pass (with 10,000 jobs, a core of the server's for half of every
    minute; docs/bench.md)."""
    bounds = [f'{JOB_ID.name} >= "{shard.low}"'] if shard.low else []
    if shard.high is not None:
        bounds.append(f'{JOB_ID.name} < "{shard.high}"')
    return " AND ".join(bounds)


def reconcile_activities(settings: Settings, sessions: Sessions) -> list[Callable[..., Any]]:
    """The activities a worker registers next to ReconcileWorkflow."""
    reconcile = ReconcileActivities(settings, sessions)
    return [reconcile.schedules, reconcile.fires, reconcile.runs]
