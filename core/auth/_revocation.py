"""Access tokens that stop working before they expire: logged out ones (a deny-list by `jti`), and every
token of a disabled account. Checked on each request in one indexed read."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import bindparam, delete, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import col
from sqlmodel.ext.asyncio.session import AsyncSession

from core.auth._grants import revoke_refresh_token
from core.auth._principal import ROLE_SCOPES, Principal
from core.auth._tokens import LEEWAY_SECONDS
from core.errors import Unauthorized
from core.models import RefreshToken, RevokedToken, User, utcnow

# The one read of every authenticated request, built once with bind parameters: building it per request
# (ORM column expressions, then the compiled-cache key) cost two thirds of what running it does.
_users = User.__table__  # type: ignore[attr-defined]
_revoked = RevokedToken.__table__  # type: ignore[attr-defined]
_AUTHORIZE = sa_select(
    _users.c.role,
    _users.c.disabled_at,
    _users.c.tokens_revoked_at,
    sa_select(_revoked.c.jti).where(_revoked.c.jti == bindparam("jti")).exists(),
).where(_users.c.id == bindparam("user_id"))


async def authorize(session: AsyncSession, principal: Principal) -> Principal:
    """The caller of a verified token as the database has them now: 401 if the token was logged out, the
    account is disabled (or its tokens were revoked by a disable) or gone. The role is read from the row
    and the token's scopes narrowed to it, so a demoted admin loses the admin scope at once.

    One statement: the user row by primary key, and the deny-list row by primary key as a subquery. It
    runs in `session`, the request's, and leaves it open: the request's other reads continue its
    transaction (`core.db.RequestSessions`). Nothing is cached, so a logout or disable holds from the
    next request on."""
    token = principal.token
    assert token is not None, "a principal from a verified access token carries its token"
    connection = await session.connection()
    found = await connection.execute(_AUTHORIZE, {"jti": token.jti, "user_id": principal.id})
    row = found.one_or_none()
    if row is None:
        raise Unauthorized("the access token's account does not exist")
    role, disabled_at, tokens_revoked_at, logged_out = row
    if logged_out:
        raise Unauthorized("the access token was revoked by a logout")
    if disabled_at is not None:
        raise Unauthorized("the account is disabled; an admin can enable it again")
    # `iat` has whole seconds: a token of the very second of a disable survives it, a later login's works.
    if tokens_revoked_at is not None and token.issued_at < int(tokens_revoked_at.timestamp()):
        raise Unauthorized("the access token was revoked when the account was disabled; log in again")
    return replace(principal, role=role, scopes=principal.scopes & ROLE_SCOPES[role])


async def logout(session: AsyncSession, principal: Principal, refresh_token: str | None) -> None:
    """Revoke the access token of the call, and the refresh token if one is given. The deny-list row
    lives as long as the token would (plus the clock leeway decode allows); expired rows are pruned here."""
    if refresh_token is not None:
        await revoke_refresh_token(session, principal, refresh_token)
    token = principal.token
    assert token is not None, "logout is called with a verified access token"
    now = utcnow()
    await session.exec(delete(RevokedToken).where(col(RevokedToken.expires_at) < now))
    expires_at = datetime.fromtimestamp(token.expires_at + LEEWAY_SECONDS, UTC)
    session.add(RevokedToken(jti=token.jti, user_id=principal.id, expires_at=expires_at))
    try:
        await session.commit()
    except IntegrityError:  # a concurrent logout with the same token revoked it first
        await session.rollback()


async def end_sessions(session: AsyncSession, user: User) -> None:
    """Every login of the user ends: their refresh tokens are revoked and the access tokens issued so far
    refused (left for the caller to commit, with the change that needs it)."""
    now = utcnow()
    user.tokens_revoked_at = now
    session.add(user)
    await session.exec(
        update(RefreshToken)
        .where(col(RefreshToken.user_id) == user.id, col(RefreshToken.revoked_at).is_(None))
        .values(revoked_at=now)
    )
