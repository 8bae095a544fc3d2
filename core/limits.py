"""Per-user quotas and rate limits, counted in the database every API replica shares.

A check writes its own row first (a rate event, or the new job), then reads the user row `FOR NO KEY
UPDATE` and counts. On PostgreSQL that read is the lock that serialises one user's checks: the next
check of the same user waits for this transaction to end, and its count (READ COMMITTED takes a new
snapshot per statement) sees the rows this one committed. On SQLite the first write already took the
database's only write lock, and SQLAlchemy omits `FOR UPDATE`. Either way two concurrent requests cannot
both see room for one, and one user's checks never wait on another user's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.config import Settings
from core.db import Sessions, writing
from core.errors import QuotaExceeded, RateLimited
from core.models import Job, JobState, Limit, Quotas, RateEvent, User, UserLimits, utcnow

WINDOW = timedelta(seconds=60)

# How each limit reads in an answer: "at most 60 job writes per minute".
WHAT = {
    Limit.MAX_JOBS: "live jobs per user",
    Limit.JOB_WRITES: "job writes per minute",
    Limit.RUNS: "runs started through the API per minute",
}
SETTING = {
    Limit.MAX_JOBS: "max_jobs_per_user",
    Limit.JOB_WRITES: "job_writes_per_minute",
    Limit.RUNS: "runs_per_minute",
}


@dataclass(frozen=True)
class InForce:
    """One limit's value for one user, and where it comes from: their quota or the setting."""

    limit: Limit
    value: int
    overridden: bool

    def detail(self) -> str:
        source = (
            f"this account's quota {self.limit}"
            if self.overridden
            else f"CHRONOS_{SETTING[self.limit].upper()}"
        )
        return f"at most {self.value} {WHAT[self.limit]} ({source})"


def in_force(settings: Settings, quotas: Quotas | None, limit: Limit) -> InForce:
    override = getattr(quotas, limit.value) if quotas is not None else None
    if override is not None:
        return InForce(limit, override, overridden=True)
    return InForce(limit, getattr(settings, SETTING[limit]), overridden=False)


def limits_of(settings: Settings, quotas: Quotas | None) -> UserLimits:
    values = {limit.value: in_force(settings, quotas, limit).value for limit in Limit}
    return UserLimits.model_validate(values)


class Limits:
    def __init__(self, settings: Settings, sessions: Sessions) -> None:
        self.settings = settings
        self.sessions = sessions

    async def spend(self, user_id: str, *rates: Limit) -> None:
        """Count one request against per-minute limits, all or none, in a short transaction of its own
        (no lock is held across the Temporal call that follows). Every request the service gets counts,
        also one that then fails; one over a limit is refused with 429 and not counted."""
        now = utcnow()
        since = now - WINDOW
        async with self.sessions() as session, writing(session):
            session.add_all([RateEvent(user_id=user_id, kind=rate, at=now) for rate in rates])
            await session.flush()
            quotas = await _locked_quotas(session, user_id)
            for rate in rates:
                mine = (col(RateEvent.user_id) == user_id, col(RateEvent.kind) == rate)
                await session.exec(delete(RateEvent).where(*mine, col(RateEvent.at) <= since))
                counted = (
                    await session.exec(select(func.count()).where(*mine, col(RateEvent.at) > since))
                ).one()
                limit = in_force(self.settings, quotas, rate)
                if counted > limit.value:
                    wait = await _retry_after(session, user_id, rate, counted - 1 - limit.value, now)
                    await session.rollback()
                    raise RateLimited(limit.detail(), wait, limit.limit, limit.value)
            await session.commit()

    async def hold_jobs(self, session: AsyncSession, owner_id: str) -> None:
        """Refuse a new job that passes its owner's quota. Called in the creating transaction after the
        job is flushed, so the count includes it; the caller's commit or rollback ends the lock. Counts at
        most one job past the quota: that decides, and a user with many jobs does not make each create
        count them all while it holds the lock (docs/bench.md)."""
        quotas = await _locked_quotas(session, owner_id)
        limit = in_force(self.settings, quotas, Limit.MAX_JOBS)
        live_jobs = (
            select(col(Job.id))
            .where(
                col(Job.owner_id) == owner_id,
                col(Job.deleted_at).is_(None),
                col(Job.state) != JobState.CANCELLED,
            )
            .limit(limit.value + 1)
            .subquery()
        )
        live = (await session.exec(select(func.count()).select_from(live_jobs))).one()
        if live > limit.value:
            raise QuotaExceeded(limit.detail(), limit.limit, limit.value)


async def _locked_quotas(session: AsyncSession, user_id: str) -> Quotas | None:
    """The user's quotas, read with the row lock that serialises their checks (see the module doc)."""
    query = select(col(User.quotas)).where(col(User.id) == user_id).with_for_update(key_share=True)
    return (await session.exec(query)).one_or_none()


async def _retry_after(session: AsyncSession, user_id: str, rate: Limit, skip: int, now: datetime) -> int:
    """Seconds until the window frees a slot: when the event `skip` places after the oldest leaves it."""
    query = (
        select(RateEvent.at)
        .where(col(RateEvent.user_id) == user_id, col(RateEvent.kind) == rate)
        .where(col(RateEvent.at) > now - WINDOW)
        .order_by(col(RateEvent.at))
        .offset(max(skip, 0))
        .limit(1)
    )
    leaves = (await session.exec(query)).first()
    if leaves is None:
        return math.ceil(WINDOW.total_seconds())
    return max(1, math.ceil((leaves + WINDOW - now).total_seconds()))
