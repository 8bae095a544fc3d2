"""Browser sessions of the dashboard: the session is the refresh token of a password login, kept in an
HttpOnly cookie and never spent, so logout, a disable and the token's expiry end it as they end a login."""

from __future__ import annotations

from sqlmodel import col, select

from core.auth._grants import digest
from core.auth._principal import ROLE_SCOPES, Principal
from core.db import Sessions
from core.errors import Unauthorized
from core.models import RefreshToken, User, utcnow


async def session_principal(sessions: Sessions, session_token: str) -> Principal:
    """The caller of a session token, as the database has them now (one read by primary key): 401 when
    the login was logged out, used by a refresh grant, expired, or its account disabled or gone."""
    query = (
        select(RefreshToken, User)
        .join(User, col(User.id) == col(RefreshToken.user_id))
        .where(col(RefreshToken.id) == digest(session_token))
    )
    async with sessions() as session:
        row = (await session.exec(query)).one_or_none()
    if row is None:
        raise Unauthorized("the session is unknown; sign in again")
    token, user = row
    if token.revoked_at is not None or token.used_at is not None or token.expires_at <= utcnow():
        raise Unauthorized("the session has ended; sign in again")
    if user.disabled_at is not None:
        raise Unauthorized("the account is disabled; an admin can enable it again")
    scopes = frozenset(token.scope.split()) & ROLE_SCOPES[user.role]
    return Principal(id=user.id, email=user.email, role=user.role, scopes=scopes)
