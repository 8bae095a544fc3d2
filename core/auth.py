"""Users, passwords and tokens: the auth rules that the API and the `chronos users` command share."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import os
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from joserfc import jwt
from joserfc.errors import (
    BadSignatureError,
    ClaimError,
    ExpiredTokenError,
    JoseError,
    MissingAlgorithmError,
    UnsupportedAlgorithmError,
)
from joserfc.jwk import OctKey
from pydantic import BaseModel, ConfigDict, EmailStr, Field
from sqlalchemy import ColumnElement, true, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core.config import Settings
from core.db import Sessions
from core.errors import Conflict, OAuthError, Unauthorized
from core.models import RefreshToken, User, utcnow

Role = Literal["user", "admin"]

SCOPES = {
    "jobs:read": "See your jobs, runs, logs and dead letters",
    "jobs:write": "Create, change, pause, trigger and delete your jobs",
    "admin": "See and manage every user's jobs, dead letters and users",
}
ROLE_SCOPES: dict[str, frozenset[str]] = {
    "user": frozenset({"jobs:read", "jobs:write"}),
    "admin": frozenset(SCOPES),
}

# HS256 and nothing else: naming the algorithms on decode is what refuses `alg: none` and key confusion.
ALGORITHMS = ["HS256"]
# Tolerated clock skew between the API processes that issue and check tokens.
LEEWAY_SECONDS = 30

# argon2id with the library's defaults (RFC 9106 low-memory profile); stored hashes record their parameters.
_hasher = PasswordHasher()


@dataclass(frozen=True)
class Principal:
    """The caller, as its access token describes it: no database read per request."""

    id: str
    email: str
    role: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        """Admin powers need the role and the `admin` scope, so a narrowed admin token acts as a user's."""
        return self.role == "admin" and "admin" in self.scopes

    def sees(self, owner_id: str) -> bool:
        """Users see their own jobs, runs and dead letters; admins see everyone's (others' are a 404)."""
        return self.is_admin or owner_id == self.id

    def sees_rows(self, owner_id: Any) -> ColumnElement[bool]:
        """`sees` as a query filter on a table's owner_id column."""
        return true() if self.is_admin else col(owner_id) == self.id


class Credentials(BaseModel):
    """A new account's email and password: the one place their rules live (API and CLI)."""

    model_config = ConfigDict(extra="forbid")

    email: EmailStr = Field(examples=["ada@example.org"])
    password: str = Field(min_length=8, max_length=1024, examples=["correct horse battery"])


class Login(BaseModel):
    """No rules beyond presence and size: a wrong email or password is an `invalid_grant`, never a 422."""

    model_config = ConfigDict(extra="forbid")

    email: str = Field(max_length=320, examples=["ada@example.org"])
    password: str = Field(max_length=1024)
    scope: str | None = Field(
        default=None, max_length=1000, description="Space-separated subset of the account's scopes"
    )


class TokenRequest(BaseModel):
    """The OAuth2 token endpoint's form (RFC 6749 sections 4.3 and 6); what /docs' Authorize button sends."""

    grant_type: str | None = Field(default=None, max_length=100, description="`password` or `refresh_token`")
    username: str | None = Field(
        default=None, max_length=320, description="The email, for the password grant"
    )
    password: str | None = Field(default=None, max_length=1024)
    scope: str | None = Field(
        default=None, max_length=1000, description="Space-separated subset; default: all of the role's"
    )
    refresh_token: str | None = Field(default=None, max_length=200, description="For the refresh_token grant")


class TokenGrant(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Field(description="Seconds until the access token expires")
    refresh_token: str = Field(description="Single use: each refresh answers a new one")
    scope: str


class RefreshTokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Field(max_length=200)


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    email: str
    role: Role
    created_at: datetime


class Registered(UserPublic):
    webhook_secret: str = Field(
        description="Key of the HMAC-SHA256 signature on this user's notification webhooks. "
        "Shown only in this answer: keep it."
    )


class Me(BaseModel):
    id: str
    email: str
    role: Role
    scopes: list[str]

    @classmethod
    def of(cls, principal: Principal) -> Me:
        return cls(
            id=principal.id, email=principal.email, role=principal.role, scopes=sorted(principal.scopes)
        )


def normalize_email(email: str) -> str:
    """Emails compare case-insensitively, so they are stored and looked up lowercased."""
    return email.strip().lower()


async def hash_password(password: str) -> str:
    """Argon2 takes tens of milliseconds on purpose: off the event loop."""
    return await asyncio.to_thread(_hasher.hash, password)


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash(secrets.token_urlsafe(16))


def _verify(password_hash: str | None, password: str) -> bool:
    """Hashes even for an unknown email (on a dummy), so response time doesn't tell which emails exist."""
    try:
        return _hasher.verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


async def _user_by_email(session: AsyncSession, email: str) -> User | None:
    result = await session.exec(select(User).where(User.email == normalize_email(email)))
    return result.first()


async def register(session: AsyncSession, email: str, password: str, *, role: Role = "user") -> User:
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
            session, credentials.email, credentials.password, role="admin" if admin else "user"
        )


async def authenticate(session: AsyncSession, email: str, password: str) -> User:
    """The account for these credentials, its hash upgraded if the hasher's parameters changed since."""
    user = await _user_by_email(session, email)
    ok = await asyncio.to_thread(_verify, user.password_hash if user else None, password)
    if user is None or not ok:
        raise OAuthError("invalid_grant", "the email or password is wrong")
    if _hasher.check_needs_rehash(user.password_hash):
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
    row = await session.get(RefreshToken, _digest(refresh_token))
    if row is not None and row.used_at is not None:
        raise await _reused(session, row, now)
    user = await session.get(User, row.user_id) if row is not None else None
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
            col(RefreshToken.id) == _digest(refresh_token),
            col(RefreshToken.user_id) == principal.id,
            col(RefreshToken.revoked_at).is_(None),
        )
        .values(revoked_at=utcnow())
    )
    await session.commit()


def _digest(refresh_token: str) -> str:
    """Stored hashed, so a leaked table grants nothing; SHA-256 suffices for 256 random bits."""
    return hashlib.sha256(refresh_token.encode()).hexdigest()


async def _issue(
    session: AsyncSession, settings: Settings, user: User, scopes: frozenset[str], family_id: str
) -> TokenGrant:
    refresh_token = secrets.token_urlsafe(32)
    scope = " ".join(sorted(scopes))
    session.add(
        RefreshToken(
            id=_digest(refresh_token),
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


def issue_access_token(settings: Settings, user: User, scopes: frozenset[str]) -> str:
    now = int(time.time())
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": user.id,
        "email": user.email,
        "role": user.role,
        "scope": " ".join(sorted(scopes)),
        "iat": now,
        "exp": now + settings.access_token_ttl_seconds,
        "jti": secrets.token_urlsafe(16),
    }
    return jwt.encode({"alg": "HS256"}, claims, signing_key(settings), algorithms=ALGORITHMS)


def decode_access_token(settings: Settings, token: str) -> Principal:
    """The caller of a valid access token; Unauthorized, with the reason, for any other token."""
    try:
        claims = jwt.decode(token, signing_key(settings), algorithms=ALGORITHMS).claims
        _claims_registry(settings).validate(claims)
    except ExpiredTokenError:
        raise Unauthorized("the access token has expired") from None
    except BadSignatureError:
        raise Unauthorized("the access token's signature does not verify") from None
    except (UnsupportedAlgorithmError, MissingAlgorithmError):
        raise Unauthorized(f"the access token must be signed with {' or '.join(ALGORITHMS)}") from None
    except ClaimError as exc:
        raise Unauthorized(f"the access token's {exc.claim!r} claim is missing or wrong") from None
    except (JoseError, ValueError, TypeError, AttributeError, KeyError):  # a header that is no JSON object
        raise Unauthorized("the access token is malformed") from None
    return Principal(
        id=claims["sub"],
        email=claims["email"],
        role=claims["role"],
        scopes=frozenset(claims["scope"].split()),
    )


def _claims_registry(settings: Settings) -> jwt.JWTClaimsRegistry:
    return jwt.JWTClaimsRegistry(
        leeway=LEEWAY_SECONDS,
        iss={"essential": True, "value": settings.jwt_issuer},
        aud={"essential": True, "value": settings.jwt_audience},
        sub={"essential": True},
        email={"essential": True},
        role={"essential": True, "values": list(ROLE_SCOPES)},
        scope={"essential": True},
        iat={"essential": True},
        exp={"essential": True},
        jti={"essential": True},
    )


def signing_key(settings: Settings) -> OctKey:
    """CHRONOS_JWT_SECRET, or a secret generated once into the data dir so a restart keeps tokens valid."""
    if settings.jwt_secret:
        return _key_of_secret(settings.jwt_secret)
    return _key_of_file(settings.data_dir.resolve() / "jwt_secret")


@functools.cache
def _key_of_secret(secret: str) -> OctKey:
    return OctKey.import_key(secret)


@functools.cache
def _key_of_file(path: Path) -> OctKey:
    if not path.exists():
        _write_secret(path)
    return OctKey.import_key(path.read_text().strip())


def _write_secret(path: Path) -> None:
    """Written aside and hard-linked into place: processes starting together all read one complete secret."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(48))
    try:
        with contextlib.suppress(FileExistsError):  # another process won; its secret is the one
            os.link(draft, path)
    finally:
        draft.unlink()
