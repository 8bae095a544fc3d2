"""Mirror rows a run points at (an owner and a job), for tests that start runs without the API."""

from __future__ import annotations

import uuid

from core.db import Sessions
from core.models import Job, User


async def add_job(sessions: Sessions) -> Job:
    async with sessions() as session:
        user = User(email=f"{uuid.uuid4().hex[:8]}@example.org", password_hash="-")
        session.add(user)
        await session.flush()
        job = Job(
            owner_id=user.id,
            name="test job",
            schedule={"type": "immediate"},
            action={},
            retry_policy={},
            notify={},
            execution_guarantee="at_least_once",
            overlap_policy="skip",
        )
        session.add(job)
        await session.commit()
        return job
