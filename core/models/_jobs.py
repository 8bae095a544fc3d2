"""The job family: what a user submits (JobCreate, JobUpdate), the row (Job) and the answer (JobPublic)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import AwareDatetime, field_serializer
from sqlalchemy import Index
from sqlmodel import AutoString, Field, SQLModel
from sqlmodel.main import SQLModelConfig

from core.models._common import TemporalLinks, created, enum_of, json_of, new_id, sealed_json_of, when
from core.models._runs import RunPublic
from core.payloads import (
    Action,
    Guarantee,
    NotifySpec,
    RetrySpec,
    RunOutcome,
    Trigger,
    masked_action,
    masked_notify,
)
from core.schedules import CronSchedule, ImmediateSchedule, IntervalSchedule, OnceSchedule, Schedule

# The schedules Temporal fires: every kind but `immediate`, whose one run the API starts.
Timed = OnceSchedule | CronSchedule | IntervalSchedule


class JobState(StrEnum):
    SCHEDULED = "scheduled"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class OverlapPolicy(StrEnum):
    """What a fire does while the previous run still runs (Temporal's ScheduleOverlapPolicy, by name)."""

    SKIP = "skip"
    BUFFER_ONE = "buffer_one"
    BUFFER_ALL = "buffer_all"
    CANCEL_OTHER = "cancel_other"
    TERMINATE_OTHER = "terminate_other"
    ALLOW_ALL = "allow_all"


# A paused or cancelled job keeps saying so while its runs start and end.
HELD = (JobState.PAUSED, JobState.CANCELLED)


class JobBase(SQLModel):
    """A job's definition as users write it; the row keeps schedule, action, retry policy and notify as
    their JSON, read back as these types."""

    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=4000, sa_type=AutoString)
    schedule: Schedule = json_of(Schedule, discriminator="type")
    action: Action = sealed_json_of(Action, discriminator="type")
    retry_policy: RetrySpec = json_of(RetrySpec, default=RetrySpec())
    execution_guarantee: Guarantee = enum_of(Guarantee, default=Guarantee.AT_LEAST_ONCE)
    overlap_policy: OverlapPolicy = enum_of(OverlapPolicy, default=OverlapPolicy.SKIP)
    notify: NotifySpec = sealed_json_of(NotifySpec, default=NotifySpec())


class JobCreate(JobBase):
    model_config = SQLModelConfig(
        extra="forbid",
        json_schema_extra={
            "example": {
                "name": "Daily report",
                "schedule": {"type": "cron", "cron": "0 0 12 * * ?", "timezone": "Europe/Berlin"},
                "action": {"type": "http", "method": "POST", "url": "https://example.org/hook"},
            }
        },
    )

    paused: bool = False


class JobUpdate(JobBase):
    """A partial update: only the fields sent change."""

    model_config = SQLModelConfig(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)  # type: ignore[assignment]
    description: str | None = Field(default=None, max_length=4000)
    schedule: Schedule | None = None  # type: ignore[assignment]
    action: Action | None = None  # type: ignore[assignment]
    retry_policy: RetrySpec | None = None  # type: ignore[assignment]
    execution_guarantee: Guarantee | None = None  # type: ignore[assignment]
    overlap_policy: OverlapPolicy | None = None  # type: ignore[assignment]
    notify: NotifySpec | None = None  # type: ignore[assignment]


class Job(JobBase, table=True):
    """A job definition as submitted, and the state its runs leave it in."""

    # The list query: a user's live jobs, newest first, optionally of one state.
    __table_args__ = (
        Index("ix_job_owner_state_created", "owner_id", "state", "created_at", "id"),
        Index("ix_job_owner_created", "owner_id", "created_at", "id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True)
    owner_id: str = Field(foreign_key="user.id")
    state: JobState = enum_of(JobState, default=JobState.SCHEDULED, index=True)
    paused: bool = False
    pause_note: str | None = None
    last_run_id: str | None = None
    # +1 on each change the API makes to the definition or state (core/jobs.py); the answers' ETag.
    version: int = Field(default=1, sa_column_kwargs={"server_default": "1"})
    created_at: datetime = created()
    updated_at: datetime = created()
    deleted_at: datetime | None = when()

    @property
    def immediate(self) -> bool:
        return isinstance(self.schedule, ImmediateSchedule)

    @property
    def timed(self) -> Timed:
        """The schedule Temporal fires; immediate jobs have none."""
        assert not isinstance(self.schedule, ImmediateSchedule), "immediate jobs have no Temporal schedule"
        return self.schedule

    def waiting_state(self) -> JobState:
        """The state of a job between runs: paused, or waiting for its next fire."""
        return JobState.PAUSED if self.paused else JobState.SCHEDULED

    def run_started(self, run_id: str, trigger: Trigger | None = None) -> None:
        """A run began; a paused or cancelled job keeps saying so, unless the run is the immediate job's
        one run (the job is that run)."""
        self.last_run_id = run_id
        if trigger == Trigger.IMMEDIATE or self.state not in HELD:
            self.state = JobState.RUNNING

    def run_ended(self, status: RunOutcome, now: datetime) -> None:
        """One-shot jobs end with their run; recurring ones wait for their next fire, or end past end_at."""
        if self.state in HELD:
            return
        schedule = self.schedule
        if isinstance(schedule, ImmediateSchedule | OnceSchedule):
            ends = {RunOutcome.SUCCEEDED: JobState.COMPLETED, RunOutcome.CANCELLED: JobState.CANCELLED}
            self.state = ends.get(status, JobState.FAILED)
            return
        end_at = schedule.end_at
        self.state = JobState.COMPLETED if end_at and end_at <= now else JobState.SCHEDULED


class JobPublic(JobBase):
    id: str
    owner_id: str
    state: JobState
    paused: bool
    pause_note: str | None = None
    next_run_at: datetime | None
    next_runs: list[datetime]
    next_run_note: str | None = Field(
        default=None,
        description="Why `next_runs` holds at most one time: a fixed-delay interval counts from each run's "
        "end, so later runs are not known in advance, and none while a run is in flight",
    )
    last_run: RunPublic | None
    version: int = Field(
        description="1 at creation, +1 on each patch, pause, resume and cancel (not on trigger); "
        "answers for one job carry it as their ETag, and a PATCH with a stale If-Match is a 412"
    )
    created_at: datetime
    updated_at: datetime
    temporal: TemporalLinks
    warnings: list[str] = Field(
        default_factory=list,
        description="What the schedule may mean other than intended, e.g. day-of-week numbers in a 6-field "
        "cron without a `dialect`, which Spring and Quartz read as different days",
    )

    @field_serializer("action")
    def _masked(self, action: Action) -> dict[str, Any]:
        return masked_action(action)

    @field_serializer("notify")
    def _masked_notify(self, notify: NotifySpec) -> dict[str, Any]:
        return masked_notify(notify)


class IdempotencyKey(SQLModel, table=True):
    """An `Idempotency-Key` of POST /jobs: the same key and body give back the job it made."""

    owner_id: str = Field(foreign_key="user.id", primary_key=True)
    key: str = Field(primary_key=True, max_length=200)
    body_hash: str = Field(max_length=64)
    job_id: str = Field(foreign_key="job.id")
    created_at: datetime = created()


class PauseRequest(SQLModel):
    model_config = SQLModelConfig(extra="forbid")

    note: str | None = Field(default=None, max_length=500)


class PreviewRequest(SQLModel):
    model_config = SQLModelConfig(extra="forbid")

    schedule: Schedule
    count: int = Field(default=10, ge=1, le=100)
    after: AwareDatetime | None = None


class Preview(SQLModel):
    next_runs: list[datetime]
    description: str
    dialect: str | None = Field(description="The cron dialect the expression was read in; null for others")
    warnings: list[str] = Field(
        default_factory=list, description="As a job's `warnings`: readings the schedule may not intend"
    )
