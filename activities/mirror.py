"""Mirror activities: write what a run did into the SQL mirror, idempotently (a retried write lands once)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel
from temporalio import activity

from core.db import Sessions
from core.models import Run
from workflows.specs import RunResult, Trigger


class RunStarted(BaseModel):
    run_id: str
    temporal_run_id: str
    job_id: str
    owner_id: str
    trigger: Trigger
    scheduled_at: datetime
    started_at: datetime


class RunFinished(BaseModel):
    run_id: str
    finished_at: datetime
    result: RunResult


class MirrorActivities:
    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    @activity.defn(name="mirror_run_started")
    async def run_started(self, event: RunStarted) -> None:
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
            await session.commit()

    @activity.defn(name="mirror_run_finished")
    async def run_finished(self, event: RunFinished) -> None:
        async with self.sessions() as session:
            run = await session.get(Run, event.run_id)
            if run is None:
                raise RuntimeError(f"run {event.run_id} has no started record yet")  # retried by Temporal
            result = event.result
            run.status = result.status
            run.attempts = result.attempts
            run.error = result.error
            run.result = result.model_dump(exclude={"error"})
            run.finished_at = event.finished_at
            if run.started_at is not None:
                run.duration_ms = int((event.finished_at - run.started_at).total_seconds() * 1000)
            session.add(run)
            await session.commit()
