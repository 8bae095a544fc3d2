"""`core/db.py` `writing`: on SQLite the writers of one process take turns, each until its commit or
rollback, instead of polling SQLite's write lock."""

from __future__ import annotations

import asyncio

import pytest
from sqlmodel.ext.asyncio.session import AsyncSession

from core.db import Sessions, lock_for_change, writing


async def yield_a_while() -> None:
    """Let every ready task run (no timer: a blocked writer stays blocked however long this takes)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_writer_waits_for_the_commit_of_the_one_before(sessions: Sessions) -> None:
    async with sessions() as first, sessions() as second:
        if first.bind is None or first.bind.dialect.name != "sqlite":
            pytest.skip("PostgreSQL's row locks queue writers themselves: writing() is a no-op there")
        entered = asyncio.Event()

        async def after() -> None:
            async with writing(second):
                entered.set()

        async with writing(first):
            waiting = asyncio.create_task(after())
            await yield_a_while()
            assert not entered.is_set()
            await first.commit()  # the turn ends here, not at the end of the block
            await asyncio.wait_for(entered.wait(), 30)
        await waiting


async def test_a_rollback_or_an_error_ends_the_turn(sessions: Sessions) -> None:
    async with sessions() as session:
        if session.bind is None or session.bind.dialect.name != "sqlite":
            pytest.skip("PostgreSQL's row locks queue writers themselves: writing() is a no-op there")
        async with writing(session):
            await session.rollback()
        with pytest.raises(RuntimeError):
            async with writing(session):
                raise RuntimeError("refused")
        # Each turn ended once: a third one starts at once.
        await asyncio.wait_for(_one_turn(session), 30)


async def _one_turn(session: AsyncSession) -> None:
    async with writing(session):
        pass


async def test_a_change_lock_is_held_until_the_transaction_ends_however_it_ends(sessions: Sessions) -> None:
    """`lock_for_change`, on both databases: a second change to the same key waits for the first's commit;
    a rollback, or a session closed with an error, lets it go too (else that job could never change
    again in this process); another key never waits."""

    async def locked(session: AsyncSession, key: str) -> None:
        await lock_for_change(session, key)

    async with sessions() as first, sessions() as second:
        await lock_for_change(first, "job-a")
        waiting = asyncio.create_task(locked(second, "job-a"))
        await yield_a_while()
        assert not waiting.done()
        async with sessions() as other:
            await asyncio.wait_for(lock_for_change(other, "job-b"), 30)
        await first.commit()
        await asyncio.wait_for(waiting, 30)
        await second.rollback()
    with pytest.raises(RuntimeError):
        async with sessions() as failing:
            await lock_for_change(failing, "job-a")
            raise RuntimeError("refused")
    async with sessions() as last:
        await asyncio.wait_for(lock_for_change(last, "job-a"), 30)


async def test_a_change_waiting_for_its_turn_holds_no_pooled_connection(sessions: Sessions) -> None:
    """Changes queued on one key wait without a connection: fifty sent at once to four jobs each held one
    while they waited, and the pool ran out for everything else."""
    async with sessions() as first, sessions() as second:
        await lock_for_change(first, "job-c")
        waiting = asyncio.create_task(lock_for_change(second, "job-c"))
        await yield_a_while()
        assert not waiting.done()
        assert not second.in_transaction()  # no connection taken from the pool while it waits
        await first.commit()
        await asyncio.wait_for(waiting, 30)
        assert second.in_transaction()
        await second.commit()
