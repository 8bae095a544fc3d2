"""Access tokens that stop working before they expire: logged out ones (a deny-list by `jti`), and every
token of a disabled account. Checked on each request in one indexed read."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.auth._grants import revoke_refresh_token
from core.auth._principal import ROLE_SCOPES, Principal
from core.auth._tokens import LEEWAY_SECONDS
from core.errors import Unauthorized
from core.models import RefreshToken, RevokedToken, User, utcnow


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
    revoked = select(RevokedToken.jti).where(col(RevokedToken.jti) == token.jti).exists()
    query = select(col(User.role), col(User.disabled_at), col(User.tokens_revoked_at), revoked).where(
        col(User.id) == principal.id
    )
    row = (await session.exec(query)).one_or_none()
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
