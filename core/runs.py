"""Run service: reading runs, attempts and logs from the mirror, and signalling one run's workflow."""

from __future__ import annotations

from typing import Literal

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from core.auth import Principal
from core.config import Settings
from core.db import Sessions
from core.errors import Conflict, NotFound
from core.jobs import Links, run_public
from core.models import Attempt, Job, Run, RunLog
from core.schemas import AttemptPublic, LogLine, Page, RunDetail, RunPublic, RunStatus
from core.temporal import TemporalGateway

RunCommand = Literal["pause", "resume", "cancel"]
FINISHED = ("succeeded", "failed", "cancelled")


class RunService:
    def __init__(self, settings: Settings, sessions: Sessions, temporal: TemporalGateway) -> None:
        self.sessions = sessions
        self.temporal = temporal
        self.links = Links(settings)

    async def for_job(
        self, user: Principal, job_id: str, status: RunStatus | None, page: int, limit: int
    ) -> Page[RunPublic]:
        """Newest first. Admins also read the runs of deleted jobs; owners only of live ones."""
        async with self.sessions() as session:
            job = await session.get(Job, job_id)
            visible = job is not None and (
                user.is_admin or (job.owner_id == user.id and job.deleted_at is None)
            )
            if not visible:
                raise NotFound(f"job {job_id} not found")
            query = select(Run).where(Run.job_id == job_id)
            if status is not None:
                query = query.where(Run.status == status)
            total = (await session.exec(select(func.count()).select_from(query.subquery()))).one()
            rows = await session.exec(
                query.order_by(col(Run.created_at).desc(), col(Run.id).desc())
                .offset((page - 1) * limit)
                .limit(limit)
            )
            items = [run_public(run, self.links) for run in rows]
            return Page(items=items, total=total, page=page, limit=limit)

    async def get(self, user: Principal, run_id: str) -> RunDetail:
        async with self.sessions() as session:
            run = await self._owned(session, user, run_id)
            attempts = await session.exec(
                select(Attempt).where(Attempt.run_id == run_id).order_by(col(Attempt.number))
            )
            return RunDetail.model_validate(
                {
                    **run_public(run, self.links).model_dump(),
                    "attempt_history": [AttemptPublic.model_validate(a.model_dump()) for a in attempts],
                }
            )

    async def logs(self, user: Principal, run_id: str) -> list[LogLine]:
        async with self.sessions() as session:
            await self._owned(session, user, run_id)
            lines = await session.exec(
                select(RunLog).where(RunLog.run_id == run_id).order_by(col(RunLog.ts), col(RunLog.id))
            )
            return [LogLine.model_validate(line.model_dump()) for line in lines]

    async def command(self, user: Principal, run_id: str, command: RunCommand) -> RunPublic:
        """Pause and resume are signals the run obeys before its next attempt; cancel cancels it."""
        async with self.sessions() as session:
            run = await self._owned(session, user, run_id)
            if run.status in FINISHED:
                raise Conflict(f"run {run_id} has already ended ({run.status})")
            await self.temporal.call(lambda c: _send(c, run_id, command))
            return run_public(run, self.links)

    async def _owned(self, session: AsyncSession, user: Principal, run_id: str) -> Run:
        run = await session.get(Run, run_id)
        if run is None or not user.sees(run.owner_id):
            raise NotFound(f"run {run_id} not found")
        return run


async def _send(client: Client, run_id: str, command: RunCommand) -> None:
    handle = client.get_workflow_handle(run_id)
    try:
        await (handle.cancel() if command == "cancel" else handle.signal(command))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise Conflict(f"run {run_id} is not running") from exc
        raise
