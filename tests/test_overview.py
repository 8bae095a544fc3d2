"""The dashboard's overview numbers (core/stats.py `overview`): runs per hour counted in SQL on SQLite and
PostgreSQL, success rate, duration percentiles, failing jobs, and only what the caller may see."""

from __future__ import annotations

from datetime import timedelta

from core.auth import ROLE_SCOPES, Principal
from core.db import Sessions
from core.models import DeadLetter, Role, Run, RunStatus, utcnow
from core.payloads import Trigger
from core.stats import _percentile, overview
from tests.mirror_rows import add_job


async def test_the_overview_counts_the_last_day_by_hour(sessions: Sessions) -> None:
    job = await add_job(sessions)
    other = await add_job(sessions)
    now = utcnow()
    this_hour = now.replace(minute=0, second=0, microsecond=0)
    runs = [
        (job, this_hour + timedelta(seconds=1), RunStatus.SUCCEEDED, 100),
        (job, this_hour + timedelta(seconds=2), RunStatus.SUCCEEDED, 300),
        (job, this_hour - timedelta(minutes=90), RunStatus.FAILED, 200),
        (job, this_hour - timedelta(hours=23), RunStatus.RUNNING, None),
        (job, now - timedelta(hours=30), RunStatus.FAILED, 50),  # before the window
        (other, this_hour + timedelta(seconds=3), RunStatus.FAILED, 10),  # another user's
    ]
    async with sessions() as session:
        for n, (owner, at, status, ms) in enumerate(runs):
            session.add(
                Run(
                    id=f"{owner.id}-overview-{n}",
                    job_id=owner.id,
                    owner_id=owner.owner_id,
                    status=status,
                    trigger=Trigger.SCHEDULE,
                    created_at=at,
                    finished_at=at if ms is not None else None,
                    duration_ms=ms,
                )
            )
        await session.flush()
        session.add(DeadLetter(job_id=job.id, owner_id=job.owner_id, run_id=f"{job.id}-overview-2"))
        await session.commit()
    user = Principal(id=job.owner_id, email="x@example.org", role=Role.USER, scopes=ROLE_SCOPES[Role.USER])

    seen = await overview(sessions, user)

    assert len(seen.hours) == 24 and seen.hours[-1].hour == this_hour
    assert (seen.hours[-1].succeeded, seen.hours[-1].failed, seen.hours[-1].other) == (2, 0, 0)
    assert (seen.hours[-3].failed, seen.hours[-3].succeeded) == (1, 0)  # 90 minutes before this hour
    assert seen.hours[0].other == 1
    assert seen.runs == 4
    assert seen.success_rate == 2 / 3
    assert (seen.duration_ms_p50, seen.duration_ms_p99) == (200, 300)
    assert [(j.id, j.failures) for j in seen.failing_jobs] == [(job.id, 1)]
    assert seen.dead_letters == 1


async def test_the_overview_percentiles_are_the_nearest_ranks_of_its_durations(sessions: Sessions) -> None:
    """Picked by rank in SQL, they are what `_percentile` takes of the whole sorted list (ties too)."""
    job = await add_job(sessions)
    now = utcnow()
    durations = [(n * 37) % 101 for n in range(150)] + [500, 500, 7]
    async with sessions() as session:
        for n, ms in enumerate(durations):
            at = now - timedelta(minutes=n % 600)
            session.add(
                Run(
                    id=f"{job.id}-ranks-{n}",
                    job_id=job.id,
                    owner_id=job.owner_id,
                    status=RunStatus.SUCCEEDED,
                    trigger=Trigger.SCHEDULE,
                    created_at=at,
                    finished_at=at,
                    duration_ms=ms,
                )
            )
        await session.commit()
    user = Principal(id=job.owner_id, email="x@example.org", role=Role.USER, scopes=ROLE_SCOPES[Role.USER])

    seen = await overview(sessions, user)

    ordered = sorted(durations)
    assert (seen.duration_ms_p50, seen.duration_ms_p99) == (
        _percentile(ordered, 0.5),
        _percentile(ordered, 0.99),
    )
