"""Mirror activities: write what a run did into the SQL mirror, idempotently (a retried write lands once)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from sqlalchemy import func, select, update
from sqlmodel import col
from temporalio import activity

from activities.attempts import dialect_insert
from core.cron import is_repeated_fire, parse_cron
from core.db import Sessions
from core.models import Attempt, DeadLetter, Job, Run, RunLog, new_id, utcnow
from workflows.specs import Action, FixedCron, RunResult, Trigger, masked_action


class RunStarted(BaseModel):
    run_id: str
    temporal_run_id: str
    job_id: str
    owner_id: str
    trigger: Trigger
    scheduled_at: datetime
    started_at: datetime
    fixed_cron: FixedCron | None = None

    def skip_reason(self) -> str | None:
        """Why this scheduled fire must not run: the DST repeat rule of fixed-time cron schedules."""
        rule = self.fixed_cron
        if self.trigger != "schedule" or rule is None:
            return None
        if not is_repeated_fire(parse_cron(rule.cron), rule.timezone, self.scheduled_at):
            return None
        local = self.scheduled_at.astimezone(ZoneInfo(rule.timezone))
        return f"skipped: {local:%H:%M:%S} already ran on {local:%Y-%m-%d} (daylight-saving fall-back)"


class RunFinished(BaseModel):
    run_id: str
    finished_at: datetime
    result: RunResult
    # The action that ran: a failed run keeps it (secrets masked) in its dead letter.
    action: Action | None = None


def end_line(result: RunResult) -> str:
    if result.status == "succeeded":
        return f"run succeeded after {result.attempts} attempt(s)"
    if result.status == "cancelled":
        return "run cancelled"
    return f"run failed after {result.attempts} attempt(s): {result.error}"


class MirrorActivities:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.insert = dialect_insert(sessions)

    @activity.defn(name="mirror_run_started")
    async def run_started(self, event: RunStarted) -> str | None:
        async with self.sessions() as session:
            run = await session.get(Run, event.run_id)
            if run is None:  # the API may have written the row already, for runs it starts itself
                run = Run(
                    id=event.run_id,
                    job_id=event.job_id,
                    owner_id=event.owner_id,
                    status="running",
                    trigger=event.trigger,
                )
            if run.finished_at is None:
                run.status = "running"
            run.trigger = event.trigger
            run.temporal_run_id = event.temporal_run_id
            run.scheduled_at = event.scheduled_at
            run.started_at = event.started_at
            session.add(run)
            job = await session.get(Job, event.job_id)
            if job is not None and run.finished_at is None:
                job.run_started(run.id)
                session.add(job)
            await session.commit()
        return event.skip_reason()

    @activity.defn(name="mirror_attempts_made")
    async def attempts_made(self, run_id: str) -> int:
        """How many attempts a run has made: a pause can interrupt the retries between two of them."""
        async with self.sessions() as session:
            count = await session.scalar(
                select(func.count()).select_from(Attempt).where(col(Attempt.run_id) == run_id)
            )
        return int(count or 0)

    @activity.defn(name="mirror_run_finished")
    async def run_finished(self, event: RunFinished) -> None:
        """Close the run, its attempts left open, and for a failed run write its dead letter (once)."""
        result = event.result
        async with self.sessions() as session:
            run = await session.get(Run, event.run_id)
            if run is None:
                raise RuntimeError(f"run {event.run_id} has no started record yet")  # retried by Temporal
            open_status, open_error = (
                ("cancelled", "run cancelled")
                if result.status == "cancelled"
                else ("unknown", "outcome unknown: no result from the worker")
            )
            await session.exec(
                update(Attempt)
                .where(col(Attempt.run_id) == event.run_id, col(Attempt.status) == "running")
                .values(status=open_status, error=open_error, finished_at=event.finished_at)
            )
            made = await session.scalar(
                select(func.count()).select_from(Attempt).where(col(Attempt.run_id) == event.run_id)
            )
            run.status = result.status
            run.attempts = max(result.attempts, int(made or 0))
            run.error = result.error
            run.result = result.model_dump(exclude={"error"})
            run.finished_at = event.finished_at
            if run.started_at is not None:
                run.duration_ms = int((event.finished_at - run.started_at).total_seconds() * 1000)
            session.add(run)
            job = await session.get(Job, run.job_id)
            if job is not None and job.last_run_id == run.id:  # a newer run of the job speaks for it now
                job.run_ended(result.status, event.finished_at)
                session.add(job)
            line = {"run_id": run.id, "key": f"{run.id}:run:finished", "ts": event.finished_at}
            level = {"succeeded": "info", "failed": "error"}.get(result.status, "warning")
            await session.exec(
                self.insert(RunLog)
                .values(**line, level=level, message=end_line(result))
                .on_conflict_do_nothing(index_elements=["key"])
            )
            if result.status == "failed":
                request = masked_action(event.action) if event.action is not None else None
                dead = {"id": new_id(), "job_id": run.job_id, "run_id": run.id, "owner_id": run.owner_id}
                await session.exec(
                    self.insert(DeadLetter)
                    .values(
                        **dead,
                        error=result.error,
                        attempts=run.attempts,
                        request=request,
                        created_at=utcnow(),
                    )
                    .on_conflict_do_nothing(index_elements=["run_id"])
                )
            await session.commit()
