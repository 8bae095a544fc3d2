"""Dead letters: runs that failed for good, listed per user (admins see all), replayed or discarded."""

from __future__ import annotations

from sqlalchemy import func
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.auth import Principal
from core.db import Sessions
from core.errors import NotFound
from core.jobs import JobService
from core.models import DeadLetter
from core.schemas import DeadLetterPublic, Page, RunPublic


class DeadLetterService:
    def __init__(self, sessions: Sessions, jobs: JobService) -> None:
        self.sessions = sessions
        self.jobs = jobs

    async def find(
        self, user: Principal, job_id: str | None, page: int, limit: int
    ) -> Page[DeadLetterPublic]:
        async with self.sessions() as session:
            query = select(DeadLetter).where(user.sees_rows(DeadLetter.owner_id))
            if job_id is not None:
                query = query.where(DeadLetter.job_id == job_id)
            total = (await session.exec(select(func.count()).select_from(query.subquery()))).one()
            rows = await session.exec(
                query.order_by(col(DeadLetter.created_at).desc(), col(DeadLetter.id))
                .offset((page - 1) * limit)
                .limit(limit)
            )
            items = [DeadLetterPublic.model_validate(row.model_dump()) for row in rows]
            return Page(items=items, total=total, page=page, limit=limit)

    async def replay(self, user: Principal, letter_id: str) -> RunPublic:
        """A new run of the job (trigger `replay`) with its current definition; the letter is settled."""
        async with self.sessions() as session:
            letter = await self._owned(session, user, letter_id)
            run = await self.jobs.trigger(user, letter.job_id, "replay")
            await session.delete(letter)
            await session.commit()
            return run

    async def discard(self, user: Principal, letter_id: str) -> None:
        async with self.sessions() as session:
            await session.delete(await self._owned(session, user, letter_id))
            await session.commit()

    async def _owned(self, session: AsyncSession, user: Principal, letter_id: str) -> DeadLetter:
        letter = await session.get(DeadLetter, letter_id)
        if letter is None or not user.sees(letter.owner_id):
            raise NotFound(f"dead letter {letter_id} not found")
        return letter
