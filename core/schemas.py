"""Request and response models of the REST API, in families: Base → Create / Update → Public.

Fields the workflows also need (schedule, action, retry policy, notify) reuse the types of
core/schedules.py and workflows/specs.py, so each field is defined once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer

from core.payloads import Action, Guarantee, NotifySpec, RetrySpec, Trigger, masked_action
from core.schedules import Schedule

T = TypeVar("T")

OverlapPolicy = Literal["skip", "buffer_one", "buffer_all", "cancel_other", "terminate_other", "allow_all"]
JobState = Literal["scheduled", "running", "paused", "completed", "failed", "cancelled"]
RunStatus = Literal["scheduled", "running", "paused", "succeeded", "failed", "cancelled"]


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    page: int
    limit: int


class JobBase(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=4000)
    schedule: Schedule
    action: Action
    retry_policy: RetrySpec = RetrySpec()
    execution_guarantee: Guarantee = "at_least_once"
    overlap_policy: OverlapPolicy = "skip"
    notify: NotifySpec = NotifySpec()


class JobCreate(JobBase):
    model_config = ConfigDict(
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


class JobUpdate(BaseModel):
    """A partial update: only the fields sent change."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=4000)
    schedule: Schedule | None = None
    action: Action | None = None
    retry_policy: RetrySpec | None = None
    execution_guarantee: Guarantee | None = None
    overlap_policy: OverlapPolicy | None = None
    notify: NotifySpec | None = None


class PauseRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(default=None, max_length=500)


class TemporalLinks(BaseModel):
    schedule_id: str | None = None
    workflow_id: str
    run_id: str | None = None
    ui_url: str


class AttemptPublic(BaseModel):
    number: int
    status: str
    started_at: datetime | None
    finished_at: datetime | None
    http_status: int | None
    error: str | None
    duration_ms: int | None


class RunPublic(BaseModel):
    id: str
    job_id: str
    status: RunStatus
    trigger: Trigger
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: int | None
    attempts: int
    result: dict[str, Any] | None
    error: str | None
    temporal: TemporalLinks


class RunDetail(RunPublic):
    """One run with each attempt; `attempts` stays the count, as in run summaries."""

    attempt_history: list[AttemptPublic]


class JobPublic(JobBase):
    id: str
    owner_id: str
    state: JobState
    paused: bool
    pause_note: str | None = None
    next_run_at: datetime | None
    next_runs: list[datetime]
    last_run: RunPublic | None
    created_at: datetime
    updated_at: datetime
    temporal: TemporalLinks

    @field_serializer("action")
    def _masked(self, action: Action) -> dict[str, Any]:
        return masked_action(action)


class PreviewRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedule: Schedule
    count: int = Field(default=10, ge=1, le=100)
    after: AwareDatetime | None = None


class Preview(BaseModel):
    next_runs: list[datetime]
    description: str
    dialect: str | None


class LogLine(BaseModel):
    ts: datetime
    level: str
    message: str


class LogPage(BaseModel):
    items: list[LogLine]


class DeadLetterPublic(BaseModel):
    id: str
    job_id: str
    run_id: str
    error: str | None
    attempts: int
    request: dict[str, Any] | None
    created_at: datetime


class RunWindow(BaseModel):
    runs: dict[str, int]
    success_rate: float | None
    duration_ms_p50: int | None
    duration_ms_p95: int | None
    retries: int


class Stats(BaseModel):
    jobs: dict[str, int]
    last_hour: RunWindow
    last_day: RunWindow
    dead_letters: int
