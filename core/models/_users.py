"""The user family: accounts, their refresh tokens, and the bodies and answers of the auth endpoints."""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr
from pydantic import Field as Spec
from sqlmodel import AutoString, Field, SQLModel

from core.models._common import UTCDateTime, created, enum_of, new_id, when


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


class UserBase(SQLModel):
    id: str = Field(primary_key=True)
    email: str = Field(unique=True, index=True, sa_type=AutoString(length=320))
    role: Role = enum_of(Role)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class User(UserBase, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    password_hash: str
    role: Role = enum_of(Role, default=Role.USER)
    # Signs this user's notification webhooks (HMAC-SHA256); shown to the user once, at registration.
    webhook_secret: str = Field(default_factory=lambda: secrets.token_urlsafe(32), max_length=64)
    created_at: datetime = created()


class UserPublic(UserBase):
    pass


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


class RefreshToken(SQLModel, table=True):
    """One issued refresh token; tokens of one login form a family that reuse revokes as a whole."""

    id: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(foreign_key="user.id", index=True)
    family_id: str = Field(index=True, max_length=64)
    scope: str
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    used_at: datetime | None = when()
    revoked_at: datetime | None = when()
    created_at: datetime = created()


class Credentials(BaseModel):
    """A new account's email and password: the one place their rules live (API and CLI)."""

    model_config = ConfigDict(extra="forbid")

    email: EmailStr = Spec(examples=["ada@example.org"])
    password: str = Spec(min_length=8, max_length=1024, examples=["correct horse battery"])


class Login(BaseModel):
    """No rules beyond presence and size: a wrong email or password is an `invalid_grant`, never a 422."""

    model_config = ConfigDict(extra="forbid")

    email: str = Spec(max_length=320, examples=["ada@example.org"])
    password: str = Spec(max_length=1024)
    scope: str | None = Spec(
        default=None, max_length=1000, description="Space-separated subset of the account's scopes"
    )


class TokenRequest(BaseModel):
    """The OAuth2 token endpoint's form (RFC 6749 sections 4.3 and 6); what /docs' Authorize button sends."""

    grant_type: str | None = Spec(default=None, max_length=100, description="`password` or `refresh_token`")
    username: str | None = Spec(default=None, max_length=320, description="The email, for the password grant")
    password: str | None = Spec(default=None, max_length=1024)
    scope: str | None = Spec(
        default=None, max_length=1000, description="Space-separated subset; default: all of the role's"
    )
    refresh_token: str | None = Spec(default=None, max_length=200, description="For the refresh_token grant")


class TokenGrant(BaseModel):
    access_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int = Spec(description="Seconds until the access token expires")
    refresh_token: str = Spec(description="Single use: each refresh answers a new one")
    scope: str


class RefreshTokenBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    refresh_token: str = Spec(max_length=200)
