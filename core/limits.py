"""Per-user quotas and rate limits, counted in the database every API replica shares.

A check writes its own row first (a rate event, or the new job), then reads the user row `FOR NO KEY
UPDATE` and counts. On PostgreSQL that read is the lock that serialises one user's checks: the next
check of the same user waits for this transaction to end, and its count (READ COMMITTED takes a new
snapshot per statement) sees the rows this one committed. On SQLite the first write already took the
database's only write lock, so the quotas are read in the same statement as the count, without a lock
of their own. Either way two concurrent requests cannot both see room for one, and one user's checks
never wait on another user's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import bindparam, delete, func, insert
from sqlalchemy import select as sa_select
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.config import Settings
from core.db import Sessions, writing
from core.errors import QuotaExceeded, RateLimited
from core.models import COUNTED, Job, Limit, Quotas, RateEvent, User, UserLimits, utcnow

WINDOW = timedelta(seconds=60)
# A user's events past the window are deleted once this many have gathered (`Limits.spend`).
PRUNE_AFTER = 64

# The statements of every check, built once: each request binds its values (SQLAlchemy caches the compiled
# form by the statement's shape, and a statement built per request costs more than its execution).
_events = RateEvent.__table__  # type: ignore[attr-defined]
_INSERT_EVENTS = insert(_events)
_LOCK_USER = (
    sa_select(User.__table__.c.quotas)  # type: ignore[attr-defined]
    .where(User.__table__.c.id == bindparam("user_id"))  # type: ignore[attr-defined]
    .with_for_update(key_share=True)
)
_COUNT_EVENTS = (
    sa_select(
        _events.c.kind,
        func.count().filter(_events.c.at > bindparam("since")),
        func.count(),
    )
    .where(_events.c.user_id == bindparam("user_id"), _events.c.kind.in_(bindparam("kinds", expanding=True)))
    .group_by(_events.c.kind)
)
_jobs = Job.__table__  # type: ignore[attr-defined]
# Reads `ix_job_owner_counted` alone: the condition is that partial index's own, written out (`COUNTED`),
# and the column read is one it holds (selecting `id` read every job's row: 6 times slower at 10,000 jobs).
_COUNT_LIVE_JOBS = sa_select(func.count()).select_from(
    sa_select(_jobs.c.owner_id)
    .where(_jobs.c.owner_id == bindparam("owner_id"), COUNTED)
    .limit(bindparam("past"))
    .subquery()
)
_QUOTA = (
    sa_select(User.__table__.c.quotas)  # type: ignore[attr-defined]
    .where(User.__table__.c.id == bindparam("user_id"))  # type: ignore[attr-defined]
    .scalar_subquery()
)
_COUNT_EVENTS_AND_QUOTAS = _COUNT_EVENTS.add_columns(_QUOTA)
_QUOTAS_AND_LIVE_JOBS = sa_select(
    _QUOTA,
    _COUNT_LIVE_JOBS.scalar_subquery(),  # user_id and owner_id: the same user
)
_PRUNE_EVENTS = delete(_events).where(
    _events.c.user_id == bindparam("user_id"), _events.c.at <= bindparam("since")
)

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
        also one that then fails; one over a limit is refused with 429 and not counted.

        Three statements whatever the number of limits, each built once with bind parameters: the events'
        insert, the user row's lock, and one count of the user's events by kind. That count also counts the
        events past the window, and they are deleted only once `PRUNE_AFTER` of them have gathered: the
        window's count never includes them, so the delete need not run on every request."""
        now = utcnow()
        since = now - WINDOW
        async with self.sessions() as session, writing(session):
            conn = await session.connection()
            await conn.execute(
                _INSERT_EVENTS, [{"user_id": user_id, "kind": rate, "at": now} for rate in rates]
            )
            params = {"user_id": user_id, "kinds": rates, "since": since}
            if conn.dialect.name == "sqlite":  # the insert took the one write lock: read the quotas along
                counts = list(await conn.execute(_COUNT_EVENTS_AND_QUOTAS, params))
                quotas = counts[0][3] if counts else None
            else:
                quotas = await _locked_quotas(session, user_id)
                counts = list(await conn.execute(_COUNT_EVENTS, params))
            window: dict[str, int] = {}
            stale = 0
            for kind, inside, total, *_ in counts:
                window[kind] = int(inside)
                stale += int(total) - int(inside)
            for rate in rates:
                counted = window.get(rate, 0)
                limit = in_force(self.settings, quotas, rate)
                if counted > limit.value:
                    wait = await _retry_after(session, user_id, rate, counted - 1 - limit.value, now)
                    await session.rollback()
                    raise RateLimited(limit.detail(), wait, limit.limit, limit.value)
            if stale >= PRUNE_AFTER:
                await conn.execute(_PRUNE_EVENTS, {"user_id": user_id, "since": since})
            await session.commit()

    async def hold_jobs(self, session: AsyncSession, owner_id: str) -> None:
        """Refuse a new job that passes its owner's quota. Called in the creating transaction after the
        job is flushed, so the count includes it; the caller's commit or rollback ends the lock. Counts at
        most one job past the quota: that decides, and a user with many jobs does not make each create
        count them all while it holds the lock (docs/bench.md)."""
        conn = await session.connection()
        params = {"owner_id": owner_id}
        if conn.dialect.name == "sqlite":  # the job's insert took the one write lock: one read for both
            # counted up to one past the setting, and again only if the user's own quota is higher
            past = self.settings.max_jobs_per_user + 1
            both = {**params, "user_id": owner_id, "past": past}
            found = (await conn.execute(_QUOTAS_AND_LIVE_JOBS, both)).one()
            quotas, live = found[0], found[1]
            limit = in_force(self.settings, quotas, Limit.MAX_JOBS)
            if live < past or limit.value < past:
                self._refuse_past(limit, live)
                return
        else:
            quotas = await _locked_quotas(session, owner_id)
            limit = in_force(self.settings, quotas, Limit.MAX_JOBS)
        live = (await conn.execute(_COUNT_LIVE_JOBS, {**params, "past": limit.value + 1})).scalar_one()
        self._refuse_past(limit, live)

    @staticmethod
    def _refuse_past(limit: InForce, live: int) -> None:
        if live > limit.value:
            raise QuotaExceeded(limit.detail(), limit.limit, limit.value)


async def _locked_quotas(session: AsyncSession, user_id: str) -> Quotas | None:
    """The user's quotas, read with the row lock that serialises their checks (see the module doc)."""
    found = await (await session.connection()).execute(_LOCK_USER, {"user_id": user_id})
    return found.scalar_one_or_none()


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
