"""SQLModel tables of the mirror: what users query. Temporal stays the source of truth for execution."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, TypeDecorator, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel

# Named constraints, so later migrations can drop them on SQLite too (batch mode needs the names).
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    """Short, URL-safe ids: they appear in paths, schedule ids and workflow ids."""
    return uuid.uuid4().hex[:16]


class UTCDateTime(TypeDecorator[datetime]):
    """Stores UTC and always reads back an aware UTC datetime (SQLite forgets the zone otherwise)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def when(*, index: bool = False, nullable: bool = True) -> Any:
    return Field(default=None, sa_type=UTCDateTime, index=index, nullable=nullable)


def created() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


def json_column() -> Any:
    return Field(default=None, sa_column=Column(JSON))


class User(SQLModel, table=True):
    id: str = Field(default_factory=new_id, primary_key=True)
    email: str = Field(unique=True, index=True, max_length=320)
    password_hash: str
    role: str = Field(default="user", max_length=16)
    # Signs this user's notification webhooks (HMAC-SHA256); shown to the user once, at registration.
    webhook_secret: str = Field(default_factory=lambda: secrets.token_urlsafe(32), max_length=64)
    created_at: datetime = created()


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


class Job(SQLModel, table=True):
    """A job definition as submitted; schedule, action, retry policy and notify are kept as their JSON."""

    # The list query: a user's live jobs, newest first, optionally of one state.
    __table_args__ = (
        Index("ix_job_owner_state_created", "owner_id", "state", "created_at", "id"),
        Index("ix_job_owner_created", "owner_id", "created_at", "id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True)
    owner_id: str = Field(foreign_key="user.id")
    name: str = Field(max_length=200)
    description: str | None = None
    schedule: dict[str, Any] = json_column()
    action: dict[str, Any] = json_column()
    retry_policy: dict[str, Any] = json_column()
    notify: dict[str, Any] = json_column()
    execution_guarantee: str = Field(max_length=16)
    overlap_policy: str = Field(max_length=16)
    state: str = Field(default="scheduled", max_length=16, index=True)
    paused: bool = False
    pause_note: str | None = None
    last_run_id: str | None = None
    created_at: datetime = created()
    updated_at: datetime = created()
    deleted_at: datetime | None = when()

    def run_started(self, run_id: str) -> None:
        """A run began; a paused or cancelled job keeps saying so."""
        self.last_run_id = run_id
        if self.state not in ("paused", "cancelled"):
            self.state = "running"

    def run_ended(self, status: str, now: datetime) -> None:
        """One-shot jobs end with their run; recurring ones wait for their next fire, or end past end_at."""
        if self.state in ("paused", "cancelled"):
            return
        if self.schedule.get("type") in ("immediate", "once"):
            self.state = {"succeeded": "completed", "cancelled": "cancelled"}.get(status, "failed")
            return
        end_at = self.schedule.get("end_at")
        self.state = "completed" if end_at and datetime.fromisoformat(end_at) <= now else "scheduled"


class Run(SQLModel, table=True):
    """One JobRunWorkflow execution; its id is the workflow id."""

    # A job's runs newest first; a user's runs over a time window (stats).
    __table_args__ = (
        Index("ix_run_job_created", "job_id", "created_at"),
        Index("ix_run_owner_created", "owner_id", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=200)
    job_id: str = Field(foreign_key="job.id")
    owner_id: str
    status: str = Field(max_length=16, index=True)
    trigger: str = Field(max_length=16)
    scheduled_at: datetime | None = when()
    started_at: datetime | None = when()
    finished_at: datetime | None = when(index=True)
    duration_ms: int | None = None
    attempts: int = 0
    result: dict[str, Any] | None = json_column()
    error: str | None = None
    temporal_run_id: str | None = None
    created_at: datetime = created()


class Attempt(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("run_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True)
    number: int
    status: str = Field(max_length=16)
    started_at: datetime | None = when()
    finished_at: datetime | None = when()
    http_status: int | None = None
    error: str | None = None
    duration_ms: int | None = None


class RunLog(SQLModel, table=True):
    """A line of a run's log; `key` makes a retried activity write its line only once."""

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True)
    key: str = Field(unique=True, max_length=300)
    ts: datetime = created()
    level: str = Field(max_length=8)
    message: str


class DeadLetter(SQLModel, table=True):
    __table_args__ = (Index("ix_deadletter_owner_created", "owner_id", "created_at"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    job_id: str = Field(foreign_key="job.id", index=True)
    run_id: str = Field(foreign_key="run.id", unique=True)
    owner_id: str
    error: str | None = None
    attempts: int = 0
    request: dict[str, Any] | None = json_column()
    created_at: datetime = created()


class IdempotencyKey(SQLModel, table=True):
    """An `Idempotency-Key` of POST /jobs: the same key and body give back the job it made."""

    owner_id: str = Field(foreign_key="user.id", primary_key=True)
    key: str = Field(primary_key=True, max_length=200)
    body_hash: str = Field(max_length=64)
    job_id: str = Field(foreign_key="job.id")
    created_at: datetime = created()
