"""Stats for one user (or everyone, for admins): a handful of aggregate queries over the mirror."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import func
from sqlmodel import col, select

from core.auth import Principal
from core.db import Sessions
from core.models import DeadLetter, Job, Run, RunStatus, RunWindow, Stats, utcnow

WINDOWS = {"last_hour": timedelta(hours=1), "last_day": timedelta(days=1)}


async def stats(sessions: Sessions, user: Principal) -> Stats:
    now = utcnow()
    async with sessions() as session:
        jobs_query = select(Job.state, func.count()).where(col(Job.deleted_at).is_(None)).group_by(Job.state)
        jobs = dict((await session.exec(jobs_query.where(user.sees_rows(Job.owner_id)))).all())
        windows = {}
        for name, span in WINDOWS.items():
            since = now - span
            by_status_query = (
                select(Run.status, func.count()).where(col(Run.created_at) >= since).group_by(Run.status)
            )
            by_status = dict((await session.exec(by_status_query.where(user.sees_rows(Run.owner_id)))).all())
            retries_query = select(func.coalesce(func.sum(Run.attempts - 1), 0)).where(
                col(Run.created_at) >= since, Run.attempts > 1
            )
            retries = (await session.exec(retries_query.where(user.sees_rows(Run.owner_id)))).one()
            durations_query = (
                select(Run.duration_ms)
                .where(col(Run.finished_at) >= since, col(Run.duration_ms).is_not(None))
                .order_by(col(Run.duration_ms))
            )
            durations = [
                d
                for d in (await session.exec(durations_query.where(user.sees_rows(Run.owner_id)))).all()
                if d is not None
            ]
            succeeded = by_status.get(RunStatus.SUCCEEDED, 0)
            ended = succeeded + by_status.get(RunStatus.FAILED, 0)
            windows[name] = RunWindow(
                runs=by_status,
                success_rate=succeeded / ended if ended else None,
                duration_ms_p50=_percentile(durations, 0.50),
                duration_ms_p95=_percentile(durations, 0.95),
                retries=int(retries),
            )
        letters_query = select(func.count()).select_from(DeadLetter)
        letters = (await session.exec(letters_query.where(user.sees_rows(DeadLetter.owner_id)))).one()
        return Stats(jobs=jobs, dead_letters=letters, **windows)


def _percentile(ordered: list[int], q: float) -> int | None:
    """Nearest-rank percentile of an ascending list."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]
