"""The user family: accounts, their tokens and limits, and the bodies and answers of the auth and admin
endpoints."""

from __future__ import annotations

import secrets
from datetime import datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, EmailStr
from pydantic import Field as Spec
from sqlalchemy import Index
from sqlmodel import AutoString, Field, SQLModel

from core.models._common import EnumText, UTCDateTime, created, enum_of, json_of, new_id, when
from core.payloads import TemporalName


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


class Limit(StrEnum):
    """The per-user limits; each value names the field of `Quotas` that overrides it for one user."""

    MAX_JOBS = "max_jobs"
    JOB_WRITES = "job_writes_per_minute"
    RUNS = "runs_per_minute"


# The highest value a quota may have.
MAX = 1_000_000


class Quotas(BaseModel):
    """One user's overrides of the limits' defaults (the settings); a null one means the default."""

    model_config = ConfigDict(extra="forbid")

    max_jobs: int | None = Spec(default=None, ge=0, le=MAX, description="jobs not deleted or cancelled")
    job_writes_per_minute: int | None = Spec(
        default=None, ge=0, le=MAX, description="job creates, updates, deletes, pauses, resumes, cancels"
    )
    runs_per_minute: int | None = Spec(
        default=None, ge=0, le=MAX, description="runs started through the API: immediate, trigger, replay"
    )
    workflow_task_queues: list[TemporalName] | None = Spec(
        default=None,
        max_length=50,
        description="task queues this user's workflow actions may use besides CHRONOS_WORKFLOW_TASK_QUEUES",
    )


class UserLimits(BaseModel):
    """The limits in force for one user: their quota where set, else the setting's default."""

    max_jobs: int
    job_writes_per_minute: int
    runs_per_minute: int


class UserBase(SQLModel):
    id: str = Field(primary_key=True)
    email: str = Field(unique=True, index=True, sa_type=AutoString(length=320))
    role: Role = enum_of(Role)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class User(UserBase, table=True):
    # The admin list: every account newest first (keyset on created_at, id).
    __table_args__ = (Index("ix_user_created", "created_at", "id"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    password_hash: str
    role: Role = enum_of(Role, default=Role.USER)
    # Signs this user's notification webhooks (HMAC-SHA256); shown to the user once, at registration.
    webhook_secret: str = Field(default_factory=lambda: secrets.token_urlsafe(32), max_length=64)
    created_at: datetime = created()
    disabled_at: datetime | None = when()
    # Access tokens issued before this second are refused: set when the account is disabled, kept after.
    tokens_revoked_at: datetime | None = when()
    quotas: Quotas | None = json_of(Quotas, default=None)

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None


class UserPublic(UserBase):
    pass


class UserAccount(UserPublic):
    """A user as admins see them: whether they are disabled, their quotas and the limits in force."""

    disabled: bool
    disabled_at: datetime | None
    quotas: Quotas = Spec(description="This user's overrides; null ones fall back to the defaults")
    limits: UserLimits


class UserPatch(BaseModel):
    """An admin's change to one user: only the fields sent change; in `quotas`, null clears an override."""

    model_config = ConfigDict(extra="forbid")

    role: Role | None = None
    disabled: bool | None = Spec(
        default=None,
        description="true ends the user's sessions at once and pauses their live jobs; false lets them log "
        "in again but resumes nothing",
    )
    quotas: Quotas | None = Spec(default=None, description="The overrides to set or (null) clear")


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


class RevokedToken(SQLModel, table=True):
    """A logged-out access token, refused until it would have expired anyway (then the row is pruned)."""

    jti: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(foreign_key="user.id")
    expires_at: datetime = Field(sa_type=UTCDateTime, nullable=False, index=True)


class RateEvent(SQLModel, table=True):
    """One request counted against a per-minute limit; every API replica counts the same rows."""

    __table_args__ = (Index("ix_rateevent_user_kind_at", "user_id", "kind", "at"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(foreign_key="user.id")
    kind: Limit = Field(sa_type=EnumText(Limit, length=32))
    at: datetime = Field(sa_type=UTCDateTime, nullable=False)


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

    refresh_token: str | None = Spec(
        default=None,
        max_length=200,
        description="Also revoke this refresh token (the access token is revoked in any case)",
    )
