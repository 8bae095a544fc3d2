"""Mirror activities: write what a run did into the SQL mirror, idempotently (a retried write lands once)."""

from __future__ import annotations

from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Table, bindparam, case, func, select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from activities.attempts import ATTEMPT, LOG, LogLine, RunRecorder, dialect_insert
from core.cron import DstRule, is_repeated_fire, parse_cron
from core.db import Sessions
from core.models import (
    NOT_RUN,
    AttemptStatus,
    Backfill,
    DeadLetter,
    Job,
    JobState,
    Run,
    RunStatus,
    new_id,
    utcnow,
)
from core.payloads import (
    ChildAttempt,
    ChildAttemptEnd,
    RunFinished,
    RunOutcome,
    RunResult,
    RunStarted,
    Trigger,
    masked_action,
)
from core.schedules import Schedule

RUN: Table = Run.__table__  # type: ignore[attr-defined]
BACKFILL: Table = Backfill.__table__  # type: ignore[attr-defined]
JOB: Table = Job.__table__  # type: ignore[attr-defined]
DEAD: Table = DeadLetter.__table__  # type: ignore[attr-defined]

# The statements of every run, built once (SQLAlchemy then finds them compiled in its cache).
JOB_STATE = select(JOB.c.state, JOB.c.schedule, JOB.c.last_run_id).where(JOB.c.id == bindparam("job"))
SET_JOB_STATE = (
    update(JOB)
    .where(JOB.c.id == bindparam("job"))
    .values(state=bindparam("state"), last_run_id=bindparam("last_run_id"))
)
# A scheduled run is a user's backfill when its fire time lies in a range they asked for before it started
# (the schedule starts both with the same input; a range is in the past when asked for).
BACKFILLED = (
    select(BACKFILL.c.id)
    .where(
        BACKFILL.c.job_id == bindparam("job"),
        BACKFILL.c.start_at <= bindparam("at"),
        BACKFILL.c.end_at >= bindparam("at"),
        BACKFILL.c.requested_at <= bindparam("started"),
    )
    .limit(1)
)
ATTEMPTS_MADE = select(func.count()).select_from(ATTEMPT).where(ATTEMPT.c.run_id == bindparam("run"))
CLOSE_OPEN_ATTEMPTS = (
    update(ATTEMPT)
    .where(ATTEMPT.c.run_id == bindparam("run"), ATTEMPT.c.status == AttemptStatus.RUNNING)
    .values(status=bindparam("status"), error=bindparam("error"), finished_at=bindparam("finished_at"))
)
RUN_AND_JOB = (
    select(
        RUN.c.job_id,
        RUN.c.owner_id,
        RUN.c.started_at,
        RUN.c.duration_ms,
        select(func.count())
        .select_from(ATTEMPT)
        .where(ATTEMPT.c.run_id == RUN.c.id)
        .scalar_subquery()
        .label("made"),
        JOB.c.state.label("job_state"),
        JOB.c.schedule,
        JOB.c.last_run_id,
        JOB.c.deleted_at,
    )
    .select_from(RUN.outerjoin(JOB, JOB.c.id == RUN.c.job_id))
    .where(RUN.c.id == bindparam("run"))
)
FINISH_RUN = (
    update(RUN)
    .where(RUN.c.id == bindparam("run"))
    .values(
        status=bindparam("status"),
        attempts=bindparam("attempts"),
        error=bindparam("error"),
        result=bindparam("result"),
        finished_at=bindparam("finished_at"),
        duration_ms=bindparam("duration_ms"),
    )
)


def skip_reason(event: RunStarted) -> str | None:
    """Why this scheduled fire must not run: the DST rule of fixed-time cron schedules."""
    rule = event.fixed_cron
    if event.trigger != "schedule" or rule is None:
        return None
    expr, dst = parse_cron(rule.cron, rule.dialect), DstRule(rule.gap, rule.repeat)
    if not is_repeated_fire(expr, rule.timezone, event.scheduled_at, dst):
        return None
    local = event.scheduled_at.astimezone(ZoneInfo(rule.timezone))
    when = f"{local:%H:%M:%S} on {local:%Y-%m-%d}"
    if not expr.names(local.replace(tzinfo=None)):
        return f"skipped: {when} is no fire time of the schedule (daylight-saving gap, dst gap: {dst.gap})"
    if local.fold == 0:
        return (
            f"skipped: {when} runs at its second occurrence (daylight-saving fall-back, dst repeat: second)"
        )
    return f"skipped: {local:%H:%M:%S} already ran on {local:%Y-%m-%d} (daylight-saving fall-back)"


def end_line(result: RunResult) -> str:
    if result.status == RunOutcome.SUCCEEDED:
        return f"run succeeded after {result.attempts} attempt(s)"
    if result.status == RunOutcome.CANCELLED:
        return "run cancelled"
    return f"run failed after {result.attempts} attempt(s): {result.error}"


def detached_job(job_id: str, state: JobState, schedule: Schedule, last_run_id: str | None) -> Job:
    """A Job outside any session with just the columns its run rules (`run_started`, `run_ended`) read
    and write: the rules stay in one place, and the mirror writes what they decide with one UPDATE.
    The Core select reads `state` and `schedule` through their column types, so they come typed."""
    columns: dict[str, Any] = {"id": job_id, "state": state, "schedule": schedule, "last_run_id": last_run_id}
    return Job(**columns)


class MirrorActivities:
    """Each write is one short transaction of Core statements (no ORM unit of work: this runs for every
    run, twice, and was the largest part of the worker's CPU). The job's state still follows the one rule
    in `Job.run_started` / `Job.run_ended`, applied to the columns it reads."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.engine: AsyncEngine = sessions.kw["bind"]
        self.insert = dialect_insert(sessions)
        self._upsert_run = self.insert(RUN).values(
            id=bindparam("id"),
            job_id=bindparam("job_id"),
            owner_id=bindparam("owner_id"),
            status=RunStatus.RUNNING,
            trigger=bindparam("trigger"),
            temporal_run_id=bindparam("temporal_run_id"),
            scheduled_at=bindparam("scheduled_at"),
            started_at=bindparam("started_at"),
            attempts=0,
            created_at=bindparam("created_at"),
        )
        # The API may have written the row already, for runs it starts itself: a finished run stays so. A
        # fire recorded as missed (reconciliation) that starts after all is running now.
        not_run = RUN.c.status.in_([status.value for status in NOT_RUN])
        self._upsert_run = self._upsert_run.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "status": case(
                    (RUN.c.finished_at.is_(None) | not_run, RunStatus.RUNNING.value), else_=RUN.c.status
                ),
                "finished_at": case((not_run, None), else_=RUN.c.finished_at),
                "error": case((not_run, None), else_=RUN.c.error),
                "trigger": self._upsert_run.excluded.trigger,
                "temporal_run_id": self._upsert_run.excluded.temporal_run_id,
                "scheduled_at": self._upsert_run.excluded.scheduled_at,
                "started_at": self._upsert_run.excluded.started_at,
            },
        ).returning(RUN.c.finished_at)
        self._log_line = self.insert(LOG).on_conflict_do_nothing(index_elements=["key"])
        self._dead_letter = self.insert(DEAD).on_conflict_do_nothing(index_elements=["run_id"])
        self.recorder = RunRecorder(sessions)

    @activity.defn(name="mirror_run_started")
    async def run_started(self, event: RunStarted) -> str | None:
        async with self.engine.connect() as conn:
            await conn.run_sync(self._run_started, event)
        return skip_reason(event)

    def _run_started(self, conn: Connection, event: RunStarted) -> None:
        with conn.begin():
            trigger = event.trigger
            if (
                trigger == Trigger.SCHEDULE
                and conn.execute(
                    BACKFILLED, {"job": event.job_id, "at": event.scheduled_at, "started": event.started_at}
                ).first()
            ):
                trigger = Trigger.BACKFILL
            params = {
                "id": event.run_id,
                "job_id": event.job_id,
                "owner_id": event.owner_id,
                "trigger": trigger,
                "temporal_run_id": event.temporal_run_id,
                "scheduled_at": event.scheduled_at,
                "started_at": event.started_at,
                "created_at": utcnow(),
            }
            finished_at = conn.execute(self._upsert_run, params).scalar_one()
            if finished_at is not None:
                return
            row = conn.execute(JOB_STATE, {"job": event.job_id}).first()
            if row is not None:
                job = detached_job(event.job_id, row.state, row.schedule, row.last_run_id)
                job.run_started(event.run_id)
                conn.execute(
                    SET_JOB_STATE, {"job": job.id, "state": job.state, "last_run_id": job.last_run_id}
                )

    @activity.defn(name="mirror_attempts_made")
    async def attempts_made(self, run_id: str) -> int:
        """How many attempts a run has made: a pause can interrupt the retries between two of them."""
        async with self.engine.connect() as conn:
            count = await conn.scalar(ATTEMPTS_MADE, {"run": run_id})
        return int(count or 0)

    @activity.defn(name="mirror_attempt_started")
    async def attempt_started(self, event: ChildAttempt) -> None:
        """A workflow action's attempt opens (the workflow records it: its child runs elsewhere); the log
        line names the child, so its Web UI page is one search away."""
        line = LogLine(
            f"{event.run_id}:workflow:{event.number}:started",
            "info",
            f"attempt {event.number} started: workflow {event.workflow_type} on task queue "
            f"{event.task_queue} as child workflow {event.child_id}",
        )
        await self.recorder.attempt_started(event.run_id, event.number, line)

    @activity.defn(name="mirror_attempt_finished")
    async def attempt_finished(self, event: ChildAttemptEnd) -> None:
        prefix = f"{event.run_id}:workflow:{event.number}"
        if event.succeeded:
            line = LogLine(
                f"{prefix}:succeeded",
                "info",
                f"attempt {event.number} succeeded: child workflow {event.child_id} completed"
                + (f"; {event.then}" if event.then else ""),
            )
        else:
            level = "warning" if event.then and event.then.startswith("next") else "error"
            line = LogLine(
                f"{prefix}:failed", level, f"attempt {event.number} failed: {event.error}; {event.then}"
            )
        await self.recorder.attempt_finished(
            event.run_id,
            event.number,
            status=AttemptStatus.SUCCEEDED if event.succeeded else AttemptStatus.FAILED,
            duration_ms=event.duration_ms,
            lines=[line],
            error=event.error,
        )

    @activity.defn(name="mirror_run_finished")
    async def run_finished(self, event: RunFinished) -> None:
        """Close the run, its attempts left open, and for a failed run write its dead letter (once)."""
        async with self.engine.connect() as conn:
            await conn.run_sync(self._run_finished, event)

    def _run_finished(self, conn: Connection, event: RunFinished) -> None:
        result = event.result
        with conn.begin():
            open_status, open_error = (
                (AttemptStatus.CANCELLED, "run cancelled")
                if result.status == RunOutcome.CANCELLED
                else (AttemptStatus.UNKNOWN, "outcome unknown: no result from the worker")
            )
            # A write first, so that on SQLite what follows reads under the write lock.
            conn.execute(
                CLOSE_OPEN_ATTEMPTS,
                {
                    "run": event.run_id,
                    "status": open_status,
                    "error": open_error,
                    "finished_at": event.finished_at,
                },
            )
            run = conn.execute(RUN_AND_JOB, {"run": event.run_id}).first()
            if run is None:
                raise RuntimeError(f"run {event.run_id} has no started record yet")  # retried by Temporal
            attempts = max(result.attempts, int(run.made or 0))
            values: dict[str, Any] = {
                "run": event.run_id,
                "status": result.status,
                "attempts": attempts,
                "error": result.error,
                # Runs of the other actions keep the result's JSON as before: no `output` key.
                "result": result.model_dump(
                    mode="json", exclude={"error", *(["output"] if result.output is None else [])}
                ),
                "finished_at": event.finished_at,
                "duration_ms": run.duration_ms,
            }
            if run.started_at is not None:
                values["duration_ms"] = int((event.finished_at - run.started_at).total_seconds() * 1000)
            conn.execute(FINISH_RUN, values)
            if run.job_state is not None and run.last_run_id == event.run_id:
                # A newer run of the job speaks for it now, unless this is its last run.
                job = detached_job(run.job_id, run.job_state, run.schedule, run.last_run_id)
                job.run_ended(result.status, event.finished_at)
                if job.state != run.job_state:
                    conn.execute(
                        SET_JOB_STATE, {"job": job.id, "state": job.state, "last_run_id": job.last_run_id}
                    )
            level = {RunOutcome.SUCCEEDED: "info", RunOutcome.FAILED: "error"}.get(result.status, "warning")
            conn.execute(
                self._log_line,
                {
                    "run_id": event.run_id,
                    "key": f"{event.run_id}:run:finished",
                    "ts": event.finished_at,
                    "level": level,
                    "message": end_line(result),
                },
            )
            if result.status == RunOutcome.FAILED and run.deleted_at is None:  # a deleted job's go with it
                request = masked_action(event.action) if event.action is not None else None
                conn.execute(
                    self._dead_letter,
                    {
                        "id": new_id(),
                        "job_id": run.job_id,
                        "run_id": event.run_id,
                        "owner_id": run.owner_id,
                        "error": result.error,
                        "attempts": attempts,
                        "request": request,
                        "created_at": utcnow(),
                    },
                )
