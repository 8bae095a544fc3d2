"""Stats for one user (or everyone, for admins): a handful of aggregate queries over the mirror."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import case, func, literal
from sqlmodel import col, select

from core.auth import Principal
from core.db import Sessions
from core.models import (
    DeadLetter,
    FailingJob,
    HourOfRuns,
    Job,
    Overview,
    Run,
    RunStatus,
    RunWindow,
    Stats,
    utcnow,
)

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
    return ordered[_rank(len(ordered), q)]


def _rank(count: int, q: float) -> int:
    """The 0-based index of the nearest-rank percentile `q` among `count` ascending values."""
    return min(count - 1, max(0, round(q * count + 0.5) - 1))


async def overview(sessions: Sessions, user: Principal, hours: int = 24) -> Overview:
    """The last `hours` hours of the caller's runs (everyone's for admins): per hour, success rate,
    duration p50 and p99, the jobs that failed most, and the dead letters waiting."""
    now = utcnow()
    start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=hours - 1)
    buckets = [HourOfRuns(hour=start + timedelta(hours=i)) for i in range(hours)]
    # The hour of each run, counted in SQL (the same expression on SQLite and PostgreSQL): one more for
    # each hour boundary it is past, so only 24 x statuses rows leave the database.
    hour = sum(
        (case((col(Run.created_at) >= start + timedelta(hours=i), 1), else_=0) for i in range(1, hours)),
        start=literal(0),
    )
    async with sessions() as session:
        seen = user.sees_rows(Run.owner_id)
        counts = await session.exec(
            select(hour, Run.status, func.count())
            .where(col(Run.created_at) >= start, seen)
            .group_by(hour, Run.status)
        )
        for index, status, count in counts:
            bucket = buckets[index]
            if status == RunStatus.SUCCEEDED:
                bucket.succeeded += count
            elif status == RunStatus.FAILED:
                bucket.failed += count
            else:
                bucket.other += count
        # The two percentiles' rows picked in SQL by rank (the window's count first), so a day of runs
        # does not cross into Python as one object per run.
        within = (
            # Also by created_at: the (owner_id, created_at) index then bounds a user's scan to the window.
            col(Run.created_at) >= start,
            col(Run.finished_at) >= start,
            col(Run.duration_ms).is_not(None),
            seen,
        )
        timed = (await session.exec(select(func.count()).select_from(Run).where(*within))).one()
        ranks = {q: _rank(timed, q) for q in (0.50, 0.99)}
        by_rank: dict[int, int] = {}
        if timed:
            rank = func.row_number().over(order_by=col(Run.duration_ms)).label("rank")
            ranked = select(col(Run.duration_ms).label("duration_ms"), rank).where(*within).subquery()
            picked = select(ranked.c.rank, ranked.c.duration_ms).where(
                ranked.c.rank.in_([r + 1 for r in set(ranks.values())])
            )
            by_rank = {r - 1: d for r, d in await session.exec(picked)}
        failures = func.count().label("failures")
        failing_query = (
            select(Job.id, Job.name, failures)
            .join(Run, col(Run.job_id) == col(Job.id))
            .where(
                col(Run.created_at) >= start,
                Run.status == RunStatus.FAILED,
                col(Job.deleted_at).is_(None),
                user.sees_rows(Job.owner_id),
            )
            .group_by(col(Job.id), col(Job.name))
            .order_by(failures.desc())
            .limit(10)
        )
        failing = [FailingJob(id=i, name=n, failures=f) for i, n, f in await session.exec(failing_query)]
        letters_query = select(func.count()).select_from(DeadLetter)
        letters = (await session.exec(letters_query.where(user.sees_rows(DeadLetter.owner_id)))).one()
    succeeded = sum(b.succeeded for b in buckets)
    ended = succeeded + sum(b.failed for b in buckets)
    return Overview(
        hours=buckets,
        runs=sum(b.succeeded + b.failed + b.other for b in buckets),
        success_rate=succeeded / ended if ended else None,
        duration_ms_p50=by_rank.get(ranks[0.50]),
        duration_ms_p99=by_rank.get(ranks[0.99]),
        failing_jobs=failing,
        dead_letters=letters,
    )
