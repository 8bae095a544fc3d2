"""The job family: what a user submits (JobCreate, JobUpdate), the row (Job) and the answer (JobPublic)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, field_serializer, model_validator
from pydantic import Field as Spec
from sqlalchemy import Index, event, text
from sqlmodel import AutoString, Field, SQLModel
from sqlmodel.main import SQLModelConfig

from core.misfire import Misfire
from core.models._common import (
    TemporalLinks,
    UTCDateTime,
    created,
    enum_of,
    json_of,
    new_id,
    sealed_json_of,
    when,
)
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
from core.schedules import CronSchedule, ImmediateSchedule, Instant, IntervalSchedule, OnceSchedule, Schedule

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

ScheduleType = Literal["immediate", "once", "cron", "interval"]

# Labels follow Kubernetes: a key is an optional DNS-subdomain prefix and "/" and a name of at most 63
# characters, alphanumeric at both ends with "-", "_", "." inside; a value is empty or such a name.
_NAME = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAME_RULE = "at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
MAX_LABELS = 32


def _label_key(key: str) -> str:
    prefix, _, name = key.rpartition("/")
    if prefix and (len(prefix) > 253 or not _PREFIX.fullmatch(prefix)):
        raise ValueError("a label key's prefix must be a lowercase DNS subdomain of at most 253 characters")
    if not _NAME.fullmatch(name):
        raise ValueError(f"a label key's name must be {_NAME_RULE}")
    return key


def _label_value(value: str) -> str:
    if value and not _NAME.fullmatch(value):
        raise ValueError(f"a label value must be empty or {_NAME_RULE}")
    return value


LabelKey = Annotated[str, AfterValidator(_label_key)]
LabelValue = Annotated[str, AfterValidator(_label_value)]
Labels = Annotated[dict[LabelKey, LabelValue], Spec(max_length=MAX_LABELS)]


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
    labels: Labels = json_of(
        Labels,
        default_factory=dict,
        sa_column_kwargs={"server_default": "{}"},
        description=f"Up to {MAX_LABELS} `key: value` pairs to find jobs by (Kubernetes label syntax)",
    )
    misfire: Misfire | None = json_of(
        Misfire,
        default=None,
        description="What becomes of fires the job could not run on time (docs/cron.md); absent: Temporal's "
        "catch-up window (CHRONOS_CATCHUP_WINDOW_SECONDS) and nothing more",
    )


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
    labels: Labels | None = None  # type: ignore[assignment]
    misfire: Misfire | None = None


LIVE = text("deleted_at IS NULL")
# The jobs a user's quota counts (`core/limits.py`): live and not cancelled. Written out, not bound, so the
# count's query matches the partial index on it, and counting reads the index alone.
COUNTED = text("deleted_at IS NULL AND state != 'cancelled'")


class Job(JobBase, table=True):
    """A job definition as submitted, and the state its runs leave it in."""

    # The list query: a user's live jobs (admins: everyone's), newest first, optionally of one state or
    # schedule type (core/jobs.py `JobFilter` conditions). A user's live jobs are an index of their own
    # (only live jobs are ever read by owner), so counting them for a page by number reads only it. It also
    # holds `deleted_at` (always null in it): SQLite reads an index alone only if it holds every column the
    # query names, its own condition aside, and read a user's 10,000 rows whole for the count otherwise.
    __table_args__ = (
        Index("ix_job_owner_state_created", "owner_id", "state", "created_at", "id"),
        Index("ix_job_owner_type_created", "owner_id", "schedule_type", "created_at", "id"),
        Index(
            "ix_job_owner_live",
            "owner_id",
            "created_at",
            "id",
            "deleted_at",
            postgresql_where=LIVE,
            sqlite_where=LIVE,
        ),
        Index("ix_job_owner_counted", "owner_id", postgresql_where=COUNTED, sqlite_where=COUNTED),
        Index("ix_job_created", "created_at", "id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True)
    owner_id: str = Field(foreign_key="user.id")
    # `schedule.type`, kept beside the JSON so lists filter on an index (set on every flush, below).
    schedule_type: str = Field(default="", max_length=16)
    state: JobState = enum_of(JobState, default=JobState.SCHEDULED, index=True)
    paused: bool = False
    pause_note: str | None = None
    # Since when the job is paused: resume applies the misfire rule to the fires in between.
    paused_at: datetime | None = when()
    # Fires up to here have been checked for ones that never ran (activities/reconcile.py).
    fires_checked_at: datetime | None = when()
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
        if self.state not in HELD:
            self.state = self.state_after(status, now)

    def state_after(self, status: RunOutcome, now: datetime) -> JobState:
        """The job's state once its last run ended so, at `now`. One-shot jobs end with their run, but a
        one-time job whose fire is still to come (the run was a manual one) waits for it: it ended with
        that run, `completed` with its fire listed, and then fired all the same. Recurring jobs wait for
        their next fire, or end past end_at."""
        schedule = self.schedule
        if isinstance(schedule, ImmediateSchedule) or (
            isinstance(schedule, OnceSchedule) and schedule.fire_at <= now
        ):
            ends = {RunOutcome.SUCCEEDED: JobState.COMPLETED, RunOutcome.CANCELLED: JobState.CANCELLED}
            return ends.get(status, JobState.FAILED)
        end_at = None if isinstance(schedule, OnceSchedule) else schedule.end_at
        return JobState.COMPLETED if end_at and end_at <= now else JobState.SCHEDULED


@event.listens_for(Job, "before_insert")
@event.listens_for(Job, "before_update")
def _schedule_type(_mapper: Any, _connection: Any, job: Job) -> None:
    job.schedule_type = job.schedule.type


class JobLabel(SQLModel, table=True):
    """One label of a live job, a row each, so a `label=k:v` filter is an index lookup on both databases
    (the job's `labels` column stays what answers show; core/jobs.py writes both, and deletes a job's rows
    when it deletes the job). Each row copies its job's owner and creation time, which never change: a
    user's jobs with a label, newest first, are then a range of one index, so a page counts, skips or
    seeks them there instead of joining every live job of the user's (core/jobs.py `_label_index`)."""

    __table_args__ = (
        Index("ix_joblabel_key_value", "key", "value", "job_id"),
        Index("ix_joblabel_owner_key_value_created", "owner_id", "key", "value", "created_at", "job_id"),
    )

    job_id: str = Field(foreign_key="job.id", primary_key=True)
    key: str = Field(primary_key=True, max_length=317)
    value: str = Field(max_length=63)
    owner_id: str
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)

    @classmethod
    def of(cls, job: Job) -> list[JobLabel]:
        """The rows that hold a job's labels."""
        return [
            cls(job_id=job.id, key=key, value=value, owner_id=job.owner_id, created_at=job.created_at)
            for key, value in job.labels.items()
        ]


class JobFilter(SQLModel):
    """Which of the caller's jobs a list shows or a bulk pause or resume acts on; all conditions ANDed."""

    model_config = SQLModelConfig(extra="forbid")

    state: JobState | None = None
    type: ScheduleType | None = Field(default=None, description="the schedule's type")
    q: str | None = Field(default=None, max_length=200, description="part of the name, any case")
    labels: Labels = Field(default_factory=dict, description="labels the job has, each with this value")


class JobSelection(SQLModel):
    """A bulk pause or resume: the caller's jobs named by `ids`, or those matching `filter`."""

    model_config = SQLModelConfig(
        extra="forbid",
        json_schema_extra={"example": {"filter": {"labels": {"team": "billing"}}, "note": "freeze"}},
    )

    ids: list[str] | None = Field(default=None, min_length=1, max_length=1000)
    filter: JobFilter | None = None
    note: str | None = Field(default=None, max_length=500)

    @model_validator(mode="after")
    def _one_selector(self) -> JobSelection:
        if (self.ids is None) == (self.filter is None):
            raise ValueError("give either ids or filter")
        return self

    @property
    def selector(self) -> JobFilter | Sequence[str]:
        return self.filter if self.filter is not None else self.ids or []


class BulkResult(SQLModel):
    count: int = Field(
        description="How many jobs this call paused or resumed (jobs already so are not counted)"
    )


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
        "end, so later runs are not known in advance, and none while a run is in flight. Or that they were "
        "computed by Chronos because Temporal did not answer (the answer is still the job's)",
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
    skipped: list[str] = Field(
        default_factory=list,
        description="The excluded days (`schedule.exclude`) up to the last of `next_runs` on which the "
        'schedule would have fired, named: "2027-12-25 Christmas Day"',
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


class BackfillRequest(SQLModel):
    """Run every fire of the job's schedule from `start` to `end` (both included), as the schedule would
    have; at most CHRONOS_MAX_BACKFILL_FIRES of them."""

    model_config = SQLModelConfig(extra="forbid")

    start: Instant
    end: Instant
    overlap_policy: OverlapPolicy = Field(
        default=OverlapPolicy.BUFFER_ALL,
        description="how the backfilled runs overlap each other and the job's runs; the default runs them "
        "one after another",
    )


class BackfillCount(SQLModel):
    count: int = Field(description="how many fires the backfill runs")


class Backfill(SQLModel, table=True):
    """A backfill a user asked for: the mirror tells its runs (trigger `backfill`) from the schedule's own,
    which carry the same input, by their fire time in the range and a start after the request."""

    id: str = Field(default_factory=new_id, primary_key=True)
    job_id: str = Field(foreign_key="job.id", index=True)
    start_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    end_at: datetime = Field(sa_type=UTCDateTime, nullable=False)
    count: int
    requested_at: datetime = created()


class PauseRequest(SQLModel):
    model_config = SQLModelConfig(extra="forbid")

    note: str | None = Field(default=None, max_length=500)


class PreviewRequest(SQLModel):
    model_config = SQLModelConfig(extra="forbid")

    schedule: Schedule
    count: int = Field(default=10, ge=1, le=100)
    after: Instant | None = None


class Preview(SQLModel):
    next_runs: list[datetime]
    description: str
    dialect: str | None = Field(description="The cron dialect the expression was read in; null for others")
    warnings: list[str] = Field(
        default_factory=list, description="As a job's `warnings`: readings the schedule may not intend"
    )
    skipped: list[str] = Field(
        default_factory=list, description="As a job's `skipped`: excluded days the listed runs pass over"
    )
