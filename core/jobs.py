"""Job service: the rules behind every job route, and the only code that turns jobs into Temporal schedules.

No transaction stays open across a call to Temporal (on SQLite it would hold the one write lock that
every other request and worker waits on). A timed job's schedule (`job-<id>`) is created first and its
row committed after, so a Temporal failure leaves nothing behind (an orphan schedule from a failed
commit is removed by reconciliation); a run the API starts is committed first and the workflow started
after, and a failed start removes the row again.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

from pydantic import TypeAdapter
from sqlalchemy import delete, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.common import SearchAttributePair, TypedSearchAttributes
from temporalio.service import RPCError, RPCStatusCode

from core.auth import Principal
from core.config import Settings
from core.cron import parse_cron
from core.db import Sessions
from core.errors import Conflict, Invalid, NotFound
from core.models import IdempotencyKey, Job, Run, new_id, utcnow
from core.payloads import (
    RUN_WORKFLOW,
    Action,
    FixedCron,
    HttpAction,
    NotifySpec,
    RetrySpec,
    RunInput,
    Trigger,
    schedule_id,
)
from core.schedules import (
    CronSchedule,
    ImmediateSchedule,
    IntervalSchedule,
    OnceSchedule,
    check_submitted,
    fire_times,
    next_runs,
    temporal_spec,
)
from core.schedules import Schedule as JobSchedule
from core.schemas import (
    JobCreate,
    JobPublic,
    JobState,
    JobUpdate,
    Page,
    Preview,
    PreviewRequest,
    RunPublic,
    TemporalLinks,
)
from core.targets import check_url
from core.temporal import JOB_ID, OWNER_ID, TRIGGER, TemporalGateway

SCHEDULE_ADAPTER: TypeAdapter[JobSchedule] = TypeAdapter(JobSchedule)
ACTION_ADAPTER: TypeAdapter[Action] = TypeAdapter(Action)
Timed = OnceSchedule | CronSchedule | IntervalSchedule
# Idempotency keys are honoured for at least this long (API.md asks for 24 hours).
IDEMPOTENCY_TTL = timedelta(hours=48)
ACTIVE_RUNS = ("scheduled", "running", "paused")


def run_workflow_id(job_id: str, trigger: Trigger) -> str:
    """Runs the API starts; the schedule names its own as `job-<id>-<fire time>`."""
    return f"job-{job_id}-{trigger}-{uuid.uuid4().hex[:8]}"


class Links:
    """Deep links into the Temporal Web UI for jobs and runs."""

    def __init__(self, settings: Settings) -> None:
        self.base = f"{settings.temporal_ui_url.rstrip('/')}/namespaces/{quote(settings.temporal_namespace)}"

    def job(self, job: Job) -> TemporalLinks:
        if job.schedule.get("type") == "immediate":
            query = quote(f'ChronosJobId="{job.id}"')
            return TemporalLinks(workflow_id=f"job-{job.id}", ui_url=f"{self.base}/workflows?query={query}")
        sid = schedule_id(job.id)
        return TemporalLinks(schedule_id=sid, workflow_id=sid, ui_url=f"{self.base}/schedules/{sid}")

    def run(self, run: Run) -> TemporalLinks:
        url = f"{self.base}/workflows/{quote(run.id)}"
        if run.temporal_run_id:
            url += f"/{run.temporal_run_id}/history"
        return TemporalLinks(workflow_id=run.id, run_id=run.temporal_run_id, ui_url=url)


def run_public(run: Run, links: Links) -> RunPublic:
    return RunPublic.model_validate({**run.model_dump(), "temporal": links.run(run)})


def run_input(job: Job, trigger: Trigger) -> RunInput:
    """What every run of the job carries, so a run never reads its definition from the mirror."""
    return RunInput(
        job_id=job.id,
        owner_id=job.owner_id,
        job_name=job.name,
        action=ACTION_ADAPTER.validate_python(job.action),
        retry=RetrySpec.model_validate(job.retry_policy),
        guarantee=job.execution_guarantee,
        trigger=trigger,
        notify=NotifySpec.model_validate(job.notify),
        fixed_cron=fixed_cron(job) if trigger == "schedule" else None,
    )


def fixed_cron(job: Job) -> FixedCron | None:
    """The DST repeat rule a scheduled run applies, for fixed-time cron schedules only."""
    schedule = job.schedule
    if schedule.get("type") != "cron" or not parse_cron(schedule["cron"]).fixed_time:
        return None
    return FixedCron(cron=schedule["cron"], timezone=schedule.get("timezone", "UTC"))


def attributes(job: Job, trigger: Trigger | None = None) -> TypedSearchAttributes:
    """Search attributes that find a job's schedule and runs in the Temporal Web UI."""
    pairs: list[SearchAttributePair[str]] = [
        SearchAttributePair(JOB_ID, job.id),
        SearchAttributePair(OWNER_ID, job.owner_id),
    ]
    if trigger is not None:
        pairs.append(SearchAttributePair(TRIGGER, trigger))
    return TypedSearchAttributes(pairs)


def build_schedule(settings: Settings, job: Job) -> Schedule:
    """The Temporal Schedule of a timed job: its spec, its action (a JobRunWorkflow), policy and state.
    Creation, in-place updates and reconciliation all build it here."""
    timed = timed_schedule(job)
    action = ScheduleActionStartWorkflow(
        RUN_WORKFLOW,
        run_input(job, "schedule"),
        id=schedule_id(job.id),
        task_queue=settings.task_queue,
        typed_search_attributes=attributes(job, "schedule"),
        memo={"job_name": job.name},
    )
    once = isinstance(timed, OnceSchedule)
    return Schedule(
        action=action,
        spec=temporal_spec(timed, datetime.now(UTC)),
        policy=SchedulePolicy(
            overlap=ScheduleOverlapPolicy[job.overlap_policy.upper()],
            catchup_window=timedelta(seconds=settings.catchup_window_seconds),
        ),
        state=ScheduleState(
            paused=job.paused, note=job.pause_note, limited_actions=once, remaining_actions=1 if once else 0
        ),
    )


def timed_schedule(job: Job) -> Timed:
    schedule = SCHEDULE_ADAPTER.validate_python(job.schedule)
    assert not isinstance(schedule, ImmediateSchedule), "immediate jobs have no Temporal schedule"
    return schedule


async def create_schedule(client: Client, settings: Settings, job: Job) -> None:
    await client.create_schedule(
        schedule_id(job.id),
        build_schedule(settings, job),
        memo={"job_name": job.name, "owner_id": job.owner_id},
        search_attributes=attributes(job),
    )


def body_hash(body: JobCreate) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


class JobService:
    def __init__(self, settings: Settings, sessions: Sessions, temporal: TemporalGateway) -> None:
        self.settings = settings
        self.sessions = sessions
        self.temporal = temporal
        self.links = Links(settings)

    # -- definitions -----------------------------------------------------------------------------

    async def create(self, user: Principal, body: JobCreate, idempotency_key: str | None = None) -> JobPublic:
        self._check_targets(body.action, body.notify)
        check_submitted(body.schedule, self.settings)
        async with self.sessions() as session:
            if idempotency_key is not None:
                replay = await self._idempotent(session, user, idempotency_key, body)
                if replay is not None:
                    return await self._public(session, replay)
            job = Job(
                id=new_id(),
                owner_id=user.id,
                name=body.name,
                description=body.description,
                schedule=body.schedule.model_dump(mode="json"),
                action=body.action.model_dump(mode="json"),
                retry_policy=body.retry_policy.model_dump(mode="json"),
                notify=body.notify.model_dump(mode="json"),
                execution_guarantee=body.execution_guarantee,
                overlap_policy=body.overlap_policy,
                paused=body.paused,
                state="paused" if body.paused else "scheduled",
            )
            if not isinstance(body.schedule, ImmediateSchedule):
                await self.temporal.call(lambda c: self._create_schedule(c, job))
            session.add(job)
            await session.flush()  # the key refers to the job: insert the job first
            if idempotency_key is not None:
                session.add(
                    IdempotencyKey(
                        owner_id=user.id, key=idempotency_key, body_hash=body_hash(body), job_id=job.id
                    )
                )
            if isinstance(body.schedule, ImmediateSchedule):
                await self._start_run(session, job, "immediate")
            else:
                await session.commit()
            return await self._public(session, job)

    async def _idempotent(
        self, session: AsyncSession, user: Principal, key: str, body: JobCreate
    ) -> Job | None:
        """The job a used key made, if the body matches; a used key with another body is a conflict."""
        found = await session.get(IdempotencyKey, (user.id, key))
        if found is None:
            return None
        if found.created_at < utcnow() - IDEMPOTENCY_TTL:
            await session.delete(found)
            await session.commit()
            return None
        if found.body_hash != body_hash(body):
            raise Conflict(f"Idempotency-Key '{key}' was used with a different body")
        return await session.get(Job, found.job_id)

    async def find(
        self, user: Principal, state: JobState | None, q: str | None, page: int, limit: int
    ) -> Page[JobPublic]:
        async with self.sessions() as session:
            query = select(Job).where(col(Job.deleted_at).is_(None), user.sees_rows(Job.owner_id))
            if state is not None:
                query = query.where(Job.state == state)
            if q:
                query = query.where(func.lower(Job.name).contains(q.lower()))
            total = (await session.exec(select(func.count()).select_from(query.subquery()))).one()
            rows = await session.exec(
                query.order_by(col(Job.created_at).desc(), col(Job.id).desc())
                .offset((page - 1) * limit)
                .limit(limit)
            )
            jobs = list(rows)
            last_ids = [job.last_run_id for job in jobs if job.last_run_id]
            last_runs: dict[str, Run] = {}
            if last_ids:
                found = await session.exec(select(Run).where(col(Run.id).in_(last_ids)))
                last_runs = {run.id: run for run in found}
            now = datetime.now(UTC)
            items = [
                self._assemble(job, upcoming_local(job, now), last_runs.get(job.last_run_id or ""))
                for job in jobs
            ]
            return Page(items=items, total=total, page=page, limit=limit)

    async def get(self, user: Principal, job_id: str) -> JobPublic:
        async with self.sessions() as session:
            return await self._public(session, await self._owned(session, user, job_id))

    async def update(self, user: Principal, job_id: str, body: JobUpdate) -> JobPublic:
        changes = body.model_dump(exclude_unset=True)
        check_submitted(body.schedule, self.settings)
        async with self.sessions() as session:
            job = await self._owned(session, user, job_id)
            if job.state == "cancelled":
                raise Conflict("a cancelled job cannot be changed; create a new one")
            new_schedule = body.schedule if "schedule" in changes else None
            if new_schedule is not None and (new_schedule.type == "immediate") != (
                job.schedule["type"] == "immediate"
            ):
                raise Invalid(
                    "schedule.type cannot change between immediate and a timed schedule; create a new job",
                    ("body", "schedule", "type"),
                )
            if body.action is not None or body.notify is not None:
                self._check_targets(body.action, body.notify)
            for field in changes:
                value = getattr(body, field)
                if value is None and field != "description":
                    raise Invalid(f"{field} cannot be null", ("body", field))
                setattr(job, field, value.model_dump(mode="json") if hasattr(value, "model_dump") else value)
            job.updated_at = utcnow()
            if job.state == "completed" and new_schedule is not None:
                job.state = "paused" if job.paused else "scheduled"
            session.add(job)
            if job.schedule["type"] != "immediate":
                await self.temporal.call(lambda c: self._update_schedule(c, job))
            await session.commit()
            return await self._public(session, job)

    async def delete(self, user: Principal, job_id: str) -> None:
        async with self.sessions() as session:
            job = await self._owned(session, user, job_id)
            await self.temporal.call(lambda c: self._drop_schedule(c, job))
            job.deleted_at = utcnow()
            session.add(job)
            await session.commit()

    # -- control ---------------------------------------------------------------------------------

    async def pause(self, user: Principal, job_id: str, note: str | None) -> JobPublic:
        async with self.sessions() as session:
            job = await self._owned(session, user, job_id)
            self._refuse_cancelled(job)
            job.paused, job.pause_note, job.state = True, note, "paused"
            job.updated_at = utcnow()
            session.add(job)
            await self.temporal.call(lambda c: self._set_paused(c, job, note))
            await session.commit()
            return await self._public(session, job)

    async def resume(self, user: Principal, job_id: str) -> JobPublic:
        async with self.sessions() as session:
            job = await self._owned(session, user, job_id)
            self._refuse_cancelled(job)
            state = await self._resumed_state(session, job)
            job.paused, job.pause_note, job.state = False, None, state
            job.updated_at = utcnow()
            session.add(job)
            await self.temporal.call(lambda c: self._set_paused(c, job, None))
            await session.commit()
            return await self._public(session, job)

    async def trigger(self, user: Principal, job_id: str, trigger: Trigger = "manual") -> RunPublic:
        async with self.sessions() as session:
            job = await self._owned(session, user, job_id)
            self._refuse_cancelled(job)
            run = await self._start_run(session, job, trigger)
            return run_public(run, self.links)

    async def cancel(self, user: Principal, job_id: str) -> JobPublic:
        async with self.sessions() as session:
            job = await self._owned(session, user, job_id)
            job.state, job.updated_at = "cancelled", utcnow()
            session.add(job)
            await self.temporal.call(lambda c: self._drop_schedule(c, job))
            await self.temporal.call(lambda c: self._cancel_runs(c, job))
            await session.commit()
            return await self._public(session, job)

    async def preview(self, body: PreviewRequest) -> Preview:
        """Fire times computed by a scratch Temporal schedule would cost a write; compute them locally."""
        schedule = body.schedule
        check_submitted(schedule, self.settings)
        after = body.after or datetime.now(UTC)
        if isinstance(schedule, ImmediateSchedule):
            return Preview(next_runs=[after], description="once, as soon as it is submitted", dialect=None)
        upcoming = fire_times(schedule, after, body.count)
        if isinstance(schedule, OnceSchedule):
            description = f"once at {schedule.run_at.astimezone(UTC).isoformat()}"
            return Preview(next_runs=upcoming, description=description, dialect=None)
        if isinstance(schedule, IntervalSchedule):
            description = f"every {schedule.every_seconds} s"
            return Preview(next_runs=upcoming, description=description, dialect=None)
        expr = schedule.expression
        description = f"{expr.describe()}, {schedule.timezone}"
        return Preview(next_runs=upcoming, description=description, dialect=expr.dialect)

    # -- Temporal --------------------------------------------------------------------------------

    async def _create_schedule(self, client: Client, job: Job) -> None:
        try:
            await create_schedule(client, self.settings, job)
        except ScheduleAlreadyRunningError as exc:  # only a replayed create can hit this; ids are fresh
            raise Conflict(f"job {job.id} already has a schedule") from exc

    async def _update_schedule(self, client: Client, job: Job) -> None:
        """Rewrite spec, action and policy in place; Temporal keeps the schedule's state and history."""
        fresh = build_schedule(self.settings, job)
        once = job.schedule["type"] == "once"

        def updater(current: ScheduleUpdateInput) -> ScheduleUpdate:
            state = current.description.schedule.state
            if once:  # a new run_at arms the one-time schedule again
                state = fresh.state
            fresh.state = state
            fresh.state.paused, fresh.state.note = job.paused, job.pause_note
            return ScheduleUpdate(schedule=fresh)

        await client.get_schedule_handle(schedule_id(job.id)).update(updater)

    async def _set_paused(self, client: Client, job: Job, note: str | None) -> None:
        """Pause or unpause the schedule, then signal every run in flight."""
        if job.schedule["type"] != "immediate":
            handle = client.get_schedule_handle(schedule_id(job.id))
            await (handle.pause(note=note or "paused") if job.paused else handle.unpause(note="resumed"))
        # The run holds before its next attempt; the attempt in progress finishes (JobRunWorkflow).
        signal = "pause" if job.paused else "resume"
        async for execution in client.list_workflows(_running_query(job.id)):
            await _ignore_gone(client.get_workflow_handle(execution.id).signal(signal))

    async def _drop_schedule(self, client: Client, job: Job) -> None:
        if job.schedule["type"] == "immediate":
            return
        await _ignore_gone(client.get_schedule_handle(schedule_id(job.id)).delete())

    async def _cancel_runs(self, client: Client, job: Job) -> None:
        async for execution in client.list_workflows(_running_query(job.id)):
            await _ignore_gone(client.get_workflow_handle(execution.id).cancel())

    async def _start_run(self, session: AsyncSession, job: Job, trigger: Trigger) -> Run:
        """A run the API starts: its row is committed first (the caller reads it at once, the worker
        finds it), then the workflow starts; if Temporal refuses, the rows are put back as they were."""
        run_id = run_workflow_id(job.id, trigger)
        run = Run(
            id=run_id,
            job_id=job.id,
            owner_id=job.owner_id,
            status="scheduled",
            trigger=trigger,
            scheduled_at=utcnow(),
        )
        previous = (job.state, job.last_run_id)
        job.last_run_id = run_id
        if trigger == "immediate" or job.state not in ("paused", "cancelled"):
            job.state = "running"
        session.add_all([job, run])
        await session.commit()
        spec = run_input(job, trigger)
        try:
            handle = await self.temporal.call(
                lambda c: c.start_workflow(
                    RUN_WORKFLOW,
                    spec,
                    id=run_id,
                    task_queue=self.settings.task_queue,
                    search_attributes=attributes(job, trigger),
                    memo={"job_name": job.name},
                )
            )
        except Exception:
            await session.delete(run)
            await session.flush()
            if trigger == "immediate":  # the job was made by this request: nothing of it remains
                await session.exec(delete(IdempotencyKey).where(col(IdempotencyKey.job_id) == job.id))
                await session.delete(job)
            else:
                job.state, job.last_run_id = previous
            await session.commit()
            raise
        run.temporal_run_id = handle.first_execution_run_id or handle.result_run_id
        return run

    async def _next_runs(self, client: Client, job: Job) -> list[datetime]:
        if job.schedule["type"] == "immediate" or job.state == "cancelled" or job.deleted_at:
            return []
        try:
            described = await client.get_schedule_handle(schedule_id(job.id)).describe()
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                return []  # reconciliation recreates it
            raise
        return next_runs(timed_schedule(job), described.info.next_action_times)

    # -- mirror ----------------------------------------------------------------------------------

    async def _owned(self, session: AsyncSession, user: Principal, job_id: str) -> Job:
        """The job if the caller may see it: another user's job is 404, so its existence never leaks."""
        job = await session.get(Job, job_id)
        if job is None or job.deleted_at is not None or not user.sees(job.owner_id):
            raise NotFound(f"job {job_id} not found")
        return job

    async def _resumed_state(self, session: AsyncSession, job: Job) -> str:
        last = await session.get(Run, job.last_run_id) if job.last_run_id else None
        if job.schedule["type"] in ("immediate", "once") and last and last.status in ("succeeded", "failed"):
            return "completed" if last.status == "succeeded" else "failed"
        return "running" if last is not None and last.status in ACTIVE_RUNS else "scheduled"

    async def _public(self, session: AsyncSession, job: Job) -> JobPublic:
        """One job as answers show it, its next runs read back from the Temporal schedule."""
        upcoming = await self.temporal.call(lambda c: self._next_runs(c, job))
        last = await session.get(Run, job.last_run_id) if job.last_run_id else None
        return self._assemble(job, upcoming, last)

    def _assemble(self, job: Job, upcoming: list[datetime], last: Run | None) -> JobPublic:
        return JobPublic.model_validate(
            {
                **job.model_dump(),
                "next_runs": upcoming,
                "next_run_at": upcoming[0] if upcoming else None,
                "last_run": run_public(last, self.links) if last else None,
                "temporal": self.links.job(job),
            }
        )

    def _refuse_cancelled(self, job: Job) -> None:
        if job.state == "cancelled":
            raise Conflict(f"job {job.id} is cancelled")

    def _check_targets(self, action: Any, notify: NotifySpec | None) -> None:
        """Refuse private and metadata targets at submit time (the worker checks again after DNS)."""
        allow = self.settings.allow_private_targets
        if isinstance(action, HttpAction) and (reason := check_url(str(action.url), allow)):
            raise Invalid(reason, ("body", "action", "url"))
        if (
            notify is not None
            and notify.webhook_url
            and (reason := check_url(str(notify.webhook_url), allow))
        ):
            raise Invalid(reason, ("body", "notify", "webhook_url"))


def _running_query(job_id: str) -> str:
    return f'ChronosJobId = "{job_id}" AND ExecutionStatus = "Running"'


async def _ignore_gone(call: Any) -> None:
    """A schedule or run that has just ended needs no signal, cancel or delete: not an error."""
    try:
        await call
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise


def upcoming_local(job: Job, now: datetime, count: int = 5) -> list[datetime]:
    """A job's next runs computed here rather than asked of Temporal: lists show many jobs at once, and a
    describe() per listed job would cost Temporal more than the whole page (docs/bench.md). The same
    rules as the schedule's spec; GET /jobs/{id} reads the schedule itself."""
    if job.schedule["type"] == "immediate" or job.state == "cancelled" or job.deleted_at:
        return []
    return fire_times(timed_schedule(job), now, count)
