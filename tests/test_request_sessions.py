"""`core/db.py` `RequestSessions`: the blocks of one API request take turns on the request's session,
which the token check began, and each still ends as a block of its own session would."""

from __future__ import annotations

from sqlalchemy import text
from sqlmodel import select

from core.db import RequestSessions, Sessions
from core.models import Role, User


async def test_blocks_continue_the_request_session_and_end_it_closed(sessions: Sessions) -> None:
    user = User(email="request-sessions@example.org", password_hash="-", role=Role.USER)
    async with sessions() as setup:
        setup.add(user)
        await setup.commit()
    async with sessions() as request:
        await request.exec(select(User.id).where(User.id == user.id))  # the token check's read
        shared = RequestSessions(request, sessions)
        async with shared() as session:
            assert session is request  # the same session, no second checkout
            found = await session.get(User, user.id)
            assert found is not None
            async with shared() as inner:  # a block inside a block: a session of its own
                assert inner is not request
                assert (await inner.exec(select(User.email).where(User.id == user.id))).one() == user.email
        # Closed as a session of its own would be: no transaction left open, its objects detached.
        assert not request.in_transaction()
        assert found not in request
        async with shared() as again:  # the next block begins anew on the same session
            assert again is request
            assert (await again.exec(select(text("1")))).one() == 1
