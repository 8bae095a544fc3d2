"""Fires that never ran, in the mirror: the run rows of status `missed` or `skipped` that make every fire
of a job visible in its runs (core/misfire.py says which fires; resume and reconciliation find them)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.job_schedules import fire_workflow_id
from core.models import Job, Run, RunStatus
from core.payloads import Trigger


def whole_second(at: datetime) -> datetime:
    """Fire times are whole seconds (Temporal's precision); a run's scheduled_at is compared by them."""
    return at.astimezone(UTC).replace(microsecond=0)


async def fires_with_runs(
    session: AsyncSession, job_id: str, start: datetime, end: datetime
) -> set[datetime]:
    """The fire times from `start` to `end` that have a run row (run, running, or recorded as not run)."""
    found = await session.exec(
        select(Run.scheduled_at).where(
            col(Run.job_id) == job_id, col(Run.scheduled_at) >= start, col(Run.scheduled_at) <= end
        )
    )
    return {whole_second(at) for at in found if at is not None}


async def record_not_run(
    session: AsyncSession, job: Job, fires: dict[datetime, str], status: RunStatus, now: datetime
) -> list[Run]:
    """A row per fire that has none yet, ended at `now` with the reason in `error`; the rows added (not
    committed). A fire that starts after all becomes its running run (the mirror's run_started)."""
    if not fires:
        return []
    ids = {fire_workflow_id(job.id, fire): fire for fire in fires}
    taken = set(await session.exec(select(Run.id).where(col(Run.id).in_(list(ids)))))
    rows = [
        Run(
            id=run_id,
            job_id=job.id,
            owner_id=job.owner_id,
            status=status,
            trigger=Trigger.SCHEDULE,
            scheduled_at=fire,
            finished_at=now,
            duration_ms=0,
            error=fires[fire],
        )
        for run_id, fire in ids.items()
        if run_id not in taken
    ]
    session.add_all(rows)
    return rows
