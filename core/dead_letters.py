"""Dead letters: runs that failed for good, listed per user (admins see all), replayed or discarded."""

from __future__ import annotations

from sqlalchemy import delete
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core import audit
from core.auth import Principal
from core.db import Sessions, paginate
from core.errors import NotFound
from core.jobs import JobService
from core.links import fields_of
from core.models import AuditAction, DeadLetter, DeadLetterPublic, Page, RunPublic
from core.payloads import Trigger

LETTER_FIELDS = tuple(name for name in DeadLetterPublic.model_fields if name in DeadLetter.model_fields)


class DeadLetterService:
    def __init__(self, sessions: Sessions, jobs: JobService) -> None:
        self.sessions = sessions
        self.jobs = jobs

    async def find(
        self,
        user: Principal,
        job_id: str | None,
        limit: int,
        cursor: str | None = None,
        page: int | None = None,
    ) -> Page[DeadLetterPublic]:
        async with self.sessions() as session:
            query = select(DeadLetter).where(user.sees_rows(DeadLetter.owner_id))
            if job_id is not None:
                query = query.where(DeadLetter.job_id == job_id)
            at, id_ = col(DeadLetter.created_at), col(DeadLetter.id)
            letters = await paginate(session, query, at, id_, limit, cursor, page)
            return letters.with_items(
                [DeadLetterPublic.model_validate(fields_of(row, LETTER_FIELDS)) for row in letters.items]
            )

    async def replay(self, user: Principal, letter_id: str) -> RunPublic:
        """A new run of the job (trigger `replay`) with its current definition; the letter is settled.

        The trail shows both changes, each with its own commit: the run (`job.trigger`, trigger
        `replay`) and the settled letter (`dead_letter.replay`)."""
        async with self.sessions() as session:
            letter = await self._owned(session, user, letter_id)
            run = await self.jobs.trigger(user, letter.job_id, Trigger.REPLAY, key=letter.id)
            await session.exec(delete(DeadLetter).where(col(DeadLetter.id) == letter.id))
            changes = {"dead_letter_id": letter.id, "failed_run_id": letter.run_id, "run_id": run.id}
            session.add(
                audit.entry(user, AuditAction.DEAD_LETTER_REPLAY, job_id=letter.job_id, changes=changes)
            )
            await session.commit()
            return run

    async def discard(self, user: Principal, letter_id: str) -> None:
        async with self.sessions() as session:
            letter = await self._owned(session, user, letter_id)
            gone = await session.exec(delete(DeadLetter).where(col(DeadLetter.id) == letter.id))
            if not gone.rowcount:  # replayed or discarded meanwhile
                raise NotFound(f"dead letter {letter_id} not found")
            changes = {"dead_letter_id": letter.id, "failed_run_id": letter.run_id}
            session.add(
                audit.entry(user, AuditAction.DEAD_LETTER_DISCARD, job_id=letter.job_id, changes=changes)
            )
            await session.commit()

    async def _owned(self, session: AsyncSession, user: Principal, letter_id: str) -> DeadLetter:
        letter = await session.get(DeadLetter, letter_id)
        if letter is None or not user.sees(letter.owner_id):
            raise NotFound(f"dead letter {letter_id} not found")
        return letter
