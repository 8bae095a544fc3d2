"""Run service: reading runs, attempts and logs from the mirror, and signalling one run's workflow."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Literal, NamedTuple

import sqlalchemy
from sqlalchemy import CompoundSelect, bindparam, func, union_all
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from core.auth import Principal
from core.config import Settings
from core.db import Sessions, paginate
from core.errors import Conflict, NotFound
from core.links import Links
from core.models import (
    FINISHED,
    Attempt,
    AttemptPublic,
    Job,
    LogLine,
    Page,
    Run,
    RunDetail,
    RunLog,
    RunMark,
    RunPublic,
    RunStatus,
)
from core.payloads import Trigger
from core.schedules import is_fixed_delay
from core.temporal import TemporalGateway

RunCommand = Literal["pause", "resume", "cancel"]


class RunService:
    def __init__(self, settings: Settings, sessions: Sessions, temporal: TemporalGateway) -> None:
        self.sessions = sessions
        self.temporal = temporal
        self.links = Links(settings)

    async def for_job(
        self,
        user: Principal,
        job_id: str,
        status: RunStatus | None,
        limit: int,
        cursor: str | None = None,
        page: int | None = None,
    ) -> Page[RunPublic]:
        """Newest first. Admins also read the runs of deleted jobs; owners only of live ones."""
        async with self.sessions() as session:
            if not sees_history_of(user, await job_owner(session, job_id)):
                raise NotFound(f"job {job_id} not found")
            query = select(Run).where(Run.job_id == job_id)
            if status is not None:
                query = query.where(Run.status == status)
            runs = await paginate(session, query, col(Run.created_at), col(Run.id), limit, cursor, page)
            return runs.with_items([self.links.run_public(run) for run in runs.items])

    async def recent(self, user: Principal, job_ids: list[str], per_job: int) -> dict[str, list[RunMark]]:
        """The newest `per_job` runs of each of these jobs that the caller may see, newest first, in one
        read (`_newest_runs`): one round trip instead of one per job, which on PostgreSQL was most of a
        jobs page's time."""
        ids = list(dict.fromkeys(job_ids))
        if not ids:
            return {}
        query = _newest_runs(len(ids), user.is_admin)
        params: dict[str, object] = {f"job_{n}": job_id for n, job_id in enumerate(ids)}
        params.update(per_job=per_job, owner=user.id)
        async with self.sessions() as session:  # plain rows, no ORM: the connection runs the statement
            rows = (await (await session.connection()).execute(query, params)).all()
        found: dict[str, list[RunMark]] = {}
        for row in sorted(rows, key=lambda r: (r.created_at, r.id), reverse=True):
            found.setdefault(row.job_id, []).append(RunMark(row.id, row.job_id, row.status, row.scheduled_at))
        return found

    async def get(self, user: Principal, run_id: str) -> RunDetail:
        async with self.sessions() as session:
            run = await self._owned(session, user, run_id)
            attempts = await session.exec(
                select(Attempt).where(Attempt.run_id == run_id).order_by(col(Attempt.number))
            )
            return RunDetail.model_validate(
                {
                    **self.links.run_public(run).model_dump(),
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
            return self.links.run_public(run)

    async def _owned(self, session: AsyncSession, user: Principal, run_id: str) -> Run:
        run = await session.get(Run, run_id)
        if run is None or not sees_history_of(user, await job_owner(session, run.job_id)):
            raise NotFound(f"run {run_id} not found")
        return run


@functools.cache
def _newest_runs(jobs: int, admin: bool) -> CompoundSelect:
    """The newest `per_job` runs of `jobs` jobs (`job_0`, `job_1`, ...) whose runs the caller (`owner`,
    unless `admin`) may see: a `UNION ALL` of one short read of the (job_id, created_at) index per job,
    each joined to its job for the visibility rule (`sees_history_of`). Built once per count of jobs, as
    building it costs more than running it."""
    visible = [] if admin else [col(Job.owner_id) == bindparam("owner"), col(Job.deleted_at).is_(None)]
    columns = (col(Run.id), col(Run.job_id), col(Run.status), col(Run.scheduled_at), col(Run.created_at))
    return union_all(
        *(
            sqlalchemy.select(*columns)
            .join(Job, col(Job.id) == col(Run.job_id))
            .where(col(Run.job_id) == bindparam(f"job_{n}"), *visible)
            .order_by(col(Run.created_at).desc(), col(Run.id).desc())
            .limit(bindparam("per_job"))
            .subquery()
            .select()
            for n in range(jobs)
        )
    )


class JobOwner(NamedTuple):
    owner_id: str
    deleted_at: datetime | None


async def job_owner(session: AsyncSession, job_id: str) -> JobOwner | None:
    """Whose the job is and whether it was deleted, all that seeing its runs or trail depends on: read
    without loading the whole row, whose sealed columns would be decrypted for nothing."""
    query = select(col(Job.owner_id), col(Job.deleted_at)).where(col(Job.id) == job_id)
    row = (await session.exec(query)).one_or_none()
    return None if row is None else JobOwner(*row)


def sees_history_of(user: Principal, job: JobOwner | None) -> bool:
    """A job's runs and audit trail are its owner's while it lives; those of a deleted job, admins' only."""
    return job is not None and user.sees(job.owner_id) and (user.is_admin or job.deleted_at is None)


async def _send(client: Client, run_id: str, command: RunCommand) -> None:
    handle = client.get_workflow_handle(run_id)
    try:
        await (handle.cancel() if command == "cancel" else handle.signal(command))
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise Conflict(f"run {run_id} is not running") from exc
        raise


async def last_scheduled_runs(session: AsyncSession, jobs: list[Job]) -> dict[str, Run]:
    """The latest scheduled run of each fixed-delay job among `jobs`, in one query: its next run counts
    from that run's end (a manual run does not move it)."""
    ids = [job.id for job in jobs if is_fixed_delay(job.schedule)]
    if not ids:
        return {}
    latest = (
        select(col(Run.job_id), func.max(col(Run.created_at)).label("at"))
        .where(col(Run.job_id).in_(ids), col(Run.trigger) == Trigger.SCHEDULE)
        .group_by(col(Run.job_id))
        .subquery()
    )
    found = await session.exec(
        select(Run).join(latest, (col(Run.job_id) == latest.c.job_id) & (col(Run.created_at) == latest.c.at))
    )
    return {run.job_id: run for run in found}
