"""Accounts and grants: registration, the OAuth2 password and refresh_token grants (with rotation), logout."""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.auth._passwords import hash_password, needs_rehash, verify_password
from core.auth._principal import ROLE_SCOPES, Principal
from core.auth._tokens import issue_access_token
from core.config import Settings
from core.db import Sessions
from core.errors import Conflict, OAuthError
from core.models import Credentials, RefreshToken, Role, TokenGrant, TokenRequest, User, utcnow

DISABLED = "the account is disabled; an admin can enable it again"


def normalize_email(email: str) -> str:
    """Emails compare case-insensitively, so they are stored and looked up lowercased."""
    return email.strip().lower()


async def _user_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.exec(select(User).where(User.email == normalize_email(email)))
    return result.first()


async def register(session: AsyncSession, email: str, password: str, *, role: Role = Role.USER) -> User:
    """A new account; the unique email index, not a prior read, decides a race between two registrations."""
    user = User(email=normalize_email(email), password_hash=await hash_password(password), role=role)
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        raise Conflict(f"an account for {user.email} already exists") from None
    return user


async def create_user(sessions: Sessions, email: str, password: str, admin: bool) -> User:
    """Create an account outside the API (the CLI, tests); raises pydantic's ValidationError on bad input."""
    credentials = Credentials(email=email, password=password)
    async with sessions() as session:
        return await register(
            session, credentials.email, credentials.password, role=Role.ADMIN if admin else Role.USER
        )


async def authenticate(session: AsyncSession, email: str, password: str) -> User:
    """The account for these credentials, its hash upgraded if the hasher's parameters changed since."""
    user = await _user_by_email(session, email)
    ok = await verify_password(user.password_hash if user else None, password)
    if user is None or not ok:
        raise OAuthError("invalid_grant", "the email or password is wrong")
    if user.disabled:  # said only to whoever knows the password
        raise OAuthError("invalid_grant", DISABLED)
    if needs_rehash(user.password_hash):
        user.password_hash = await hash_password(password)
        session.add(user)
    return user


def _narrow(allowed: frozenset[str], requested: str | None) -> frozenset[str]:
    """The requested scopes if the account may have them all; no request means everything allowed."""
    wanted = frozenset((requested or "").split())
    if not wanted:
        return allowed
    if extra := wanted - allowed:
        raise OAuthError("invalid_scope", f"this account may not have the scope {' '.join(sorted(extra))}")
    return wanted


async def grant(session: AsyncSession, settings: Settings, form: TokenRequest) -> TokenGrant:
    """The token endpoint: dispatch on grant_type, with RFC 6749 error codes for what is missing."""
    if form.grant_type == "password":
        if form.username is None or form.password is None:
            raise OAuthError("invalid_request", "the password grant needs username and password")
        return await password_grant(session, settings, form.username, form.password, form.scope)
    if form.grant_type == "refresh_token":
        if form.refresh_token is None:
            raise OAuthError("invalid_request", "the refresh_token grant needs refresh_token")
        return await refresh_grant(session, settings, form.refresh_token, form.scope)
    if form.grant_type is None:
        raise OAuthError("invalid_request", "grant_type is required")
    raise OAuthError("unsupported_grant_type", f"grant_type {form.grant_type!r} is not supported")


async def password_grant(
    session: AsyncSession, settings: Settings, email: str, password: str, scope: str | None
) -> TokenGrant:
    """A login: a new refresh-token family and the first pair of tokens in it."""
    user = await authenticate(session, email, password)
    scopes = _narrow(ROLE_SCOPES[user.role], scope)
    return await _issue(session, settings, user, scopes, family_id=secrets.token_hex(16))


async def refresh_grant(
    session: AsyncSession, settings: Settings, refresh_token: str, scope: str | None
) -> TokenGrant:
    """Rotation: the presented token is spent; presenting a spent one again revokes its whole family."""
    now = utcnow()
    row = await session.get(RefreshToken, digest(refresh_token))
    if row is not None and row.used_at is not None:
        raise await _reused(session, row, now)
    user = await session.get(User, row.user_id) if row is not None else None
    if user is not None and user.disabled:
        raise OAuthError("invalid_grant", DISABLED)
    if row is None or user is None or row.revoked_at is not None or row.expires_at <= now:
        raise OAuthError("invalid_grant", "the refresh token is unknown, expired or revoked")
    scopes = _narrow(frozenset(row.scope.split()) & ROLE_SCOPES[user.role], scope)
    # A conditional write spends it, so of two concurrent uses one wins and the other counts as a reuse.
    spent = await session.exec(
        update(RefreshToken)
        .where(col(RefreshToken.id) == row.id, col(RefreshToken.used_at).is_(None))
        .values(used_at=now)
    )
    if spent.rowcount != 1:
        raise await _reused(session, row, now)
    return await _issue(session, settings, user, scopes, family_id=row.family_id)


async def _reused(session: AsyncSession, row: RefreshToken, now: datetime) -> OAuthError:
    """A spent token presented again was stolen or replayed: end that login everywhere."""
    await session.exec(
        update(RefreshToken)
        .where(col(RefreshToken.family_id) == row.family_id, col(RefreshToken.revoked_at).is_(None))
        .values(revoked_at=now)
    )
    await session.commit()
    return OAuthError("invalid_grant", "the refresh token was already used; its login is now revoked")


async def revoke_refresh_token(session: AsyncSession, principal: Principal, refresh_token: str) -> None:
    """Logout. Silent for unknown tokens or another user's, so the answer tells nothing about them."""
    await session.exec(
        update(RefreshToken)
        .where(
            col(RefreshToken.id) == digest(refresh_token),
            col(RefreshToken.user_id) == principal.id,
            col(RefreshToken.revoked_at).is_(None),
        )
        .values(revoked_at=utcnow())
    )
    await session.commit()


def digest(refresh_token: str) -> str:
    """Stored hashed, so a leaked table grants nothing; SHA-256 suffices for 256 random bits."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()


async def _issue(
    session: AsyncSession, settings: Settings, user: User, scopes: frozenset[str], family_id: str
) -> TokenGrant:
    refresh_token = secrets.token_urlsafe(32)
    scope = " ".join(sorted(scopes))
    session.add(
        RefreshToken(
            id=digest(refresh_token),
            user_id=user.id,
            family_id=family_id,
            scope=scope,
            expires_at=utcnow() + timedelta(seconds=settings.refresh_token_ttl_seconds),
        )
    )
    await session.commit()
    return TokenGrant(
        access_token=issue_access_token(settings, user, scopes),
        expires_in=settings.access_token_ttl_seconds,
        refresh_token=refresh_token,
        scope=scope,
    )
