"""SQLModel tables of the mirror: what users query. Temporal stays the source of truth for execution."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Column, DateTime, Index, TypeDecorator, UniqueConstraint
from sqlalchemy.engine import Dialect
from sqlmodel import Field, SQLModel


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

    __table_args__ = (Index("ix_job_owner_state", "owner_id", "state"),)

    id: str = Field(default_factory=new_id, primary_key=True)
    owner_id: str = Field(foreign_key="user.id", index=True)
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


class Run(SQLModel, table=True):
    """One JobRunWorkflow execution; its id is the workflow id."""

    __table_args__ = (Index("ix_run_job_created", "job_id", "created_at"),)

    id: str = Field(primary_key=True, max_length=200)
    job_id: str = Field(foreign_key="job.id", index=True)
    owner_id: str = Field(index=True)
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
    id: str = Field(default_factory=new_id, primary_key=True)
    job_id: str = Field(foreign_key="job.id", index=True)
    run_id: str = Field(foreign_key="run.id", unique=True)
    owner_id: str = Field(index=True)
    error: str | None = None
    attempts: int = 0
    request: dict[str, Any] | None = json_column()
    created_at: datetime = created()
