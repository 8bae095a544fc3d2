"""Mirror rows a run points at (an owner and a job), for tests that start runs without the API."""

from __future__ import annotations

import uuid

from core.db import Sessions
from core.models import Job, User
from core.payloads import HttpAction
from core.schedules import ImmediateSchedule, Schedule


async def add_job(sessions: Sessions, schedule: Schedule | None = None) -> Job:
    async with sessions() as session:
        user = User(email=f"{uuid.uuid4().hex[:8]}@example.org", password_hash="-")
        session.add(user)
        await session.flush()
        job = Job(
            owner_id=user.id,
            name="test job",
            schedule=schedule or ImmediateSchedule(),
            # Runs carry their own action (RunInput): the row's is never read by them.
            action=HttpAction(url="http://127.0.0.1/unused"),
        )
        session.add(job)
        await session.commit()
        return job
