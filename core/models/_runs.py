"""The run family: runs (one JobRunWorkflow execution each), their attempts and their log lines."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple

from sqlalchemy import JSON, BigInteger, Index, Integer, UniqueConstraint
from sqlmodel import AutoString, Field, SQLModel

from core.models._common import OutsideText, TemporalLinks, UTCDateTime, created, enum_of, when
from core.payloads import Trigger


class RunStatus(StrEnum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # A fire that did not run: too late for the misfire window, lost to a pause, or not started in time
    # (core/misfire.py; `error` says which), or dropped by the overlap policy `skip`.
    MISSED = "missed"
    SKIPPED = "skipped"


# Runs whose workflow may still act, and runs that are over; fires that never ran.
ACTIVE_RUNS = (RunStatus.SCHEDULED, RunStatus.RUNNING, RunStatus.PAUSED)
NOT_RUN = (RunStatus.MISSED, RunStatus.SKIPPED)
FINISHED = (RunStatus.SUCCEEDED, RunStatus.FAILED, RunStatus.CANCELLED, *NOT_RUN)


class AttemptStatus(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # The worker was lost or the attempt timed out: no result was recorded.
    UNKNOWN = "unknown"


class RunBase(SQLModel):
    """A run as answers show it; the row gives a new run its defaults."""

    id: str = Field(primary_key=True, sa_type=AutoString(length=200))
    job_id: str = Field(foreign_key="job.id")
    status: RunStatus = enum_of(RunStatus, index=True)
    trigger: Trigger = enum_of(Trigger)
    scheduled_at: datetime | None = Field(sa_type=UTCDateTime)
    started_at: datetime | None = Field(sa_type=UTCDateTime)
    finished_at: datetime | None = Field(sa_type=UTCDateTime, index=True)
    duration_ms: int | None
    attempts: int
    result: dict[str, Any] | None = Field(sa_type=JSON)
    error: str | None


class Run(RunBase, table=True):
    """One JobRunWorkflow execution; its id is the workflow id."""

    # A job's runs newest first (keyset on created_at, id), optionally of one status; a user's runs over
    # a time window (stats).
    __table_args__ = (
        Index("ix_run_job_created", "job_id", "created_at", "id"),
        Index("ix_run_job_status_created", "job_id", "status", "created_at", "id"),
        Index("ix_run_owner_created", "owner_id", "created_at"),
    )

    owner_id: str
    scheduled_at: datetime | None = when()
    started_at: datetime | None = when()
    finished_at: datetime | None = when(index=True)
    # 64 bits: a run of a month (daily retries, or a long pause) is past 2**31 milliseconds. SQLite's
    # INTEGER holds 64 already (migration 0010 changes PostgreSQL's only).
    duration_ms: int | None = Field(default=None, sa_type=BigInteger().with_variant(Integer(), "sqlite"))
    attempts: int = 0
    result: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    error: str | None = Field(default=None, sa_type=OutsideText)
    temporal_run_id: str | None = None
    created_at: datetime = created()


class RunPublic(RunBase):
    temporal: TemporalLinks


class RunMark(NamedTuple):
    """A run as a jobs list's strip of recent runs shows it: enough to link it and colour its mark."""

    id: str
    job_id: str
    status: RunStatus
    scheduled_at: datetime | None


class AttemptBase(SQLModel):
    number: int
    status: AttemptStatus = enum_of(AttemptStatus)
    started_at: datetime | None = Field(sa_type=UTCDateTime)
    finished_at: datetime | None = Field(sa_type=UTCDateTime)
    http_status: int | None
    error: str | None
    duration_ms: int | None


class Attempt(AttemptBase, table=True):
    __table_args__ = (UniqueConstraint("run_id", "number"),)

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True)
    started_at: datetime | None = when()
    finished_at: datetime | None = when()
    http_status: int | None = None
    error: str | None = Field(default=None, sa_type=OutsideText)
    duration_ms: int | None = None


class AttemptPublic(AttemptBase):
    pass


class RunDetail(RunPublic):
    """One run with each attempt; `attempts` stays the count, as in run summaries."""

    attempt_history: list[AttemptPublic]


class LogLine(SQLModel):
    ts: datetime = Field(sa_type=UTCDateTime, nullable=False)
    level: str = Field(sa_type=AutoString(length=8))
    message: str


class RunLog(LogLine, table=True):
    """A line of a run's log; `key` makes a retried activity write its line only once."""

    id: int | None = Field(default=None, primary_key=True)
    run_id: str = Field(foreign_key="run.id", index=True)
    key: str = Field(unique=True, max_length=300)
    ts: datetime = created()
    message: str = Field(sa_type=OutsideText)


class LogPage(SQLModel):
    items: list[LogLine]
