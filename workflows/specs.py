"""Types shared by the API, the workflows and the activities, so each field is defined once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, HttpUrl, model_validator
from temporalio.common import RetryPolicy

Guarantee = Literal["at_least_once", "at_most_once"]
Trigger = Literal["schedule", "immediate", "manual", "replay"]


class HttpAction(BaseModel):
    model_config = ConfigDict(frozen=True)

    type: Literal["http"] = "http"
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] = "POST"
    url: HttpUrl
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None
    timeout_seconds: float = Field(default=30, gt=0, le=3600)


class RetrySpec(BaseModel):
    """A job's retry policy as users write it; `to_temporal` is the one mapping onto Temporal's."""

    model_config = ConfigDict(frozen=True)

    max_attempts: int = Field(default=3, ge=1, le=100)
    backoff: Literal["exponential", "fixed"] = "exponential"
    initial_interval_seconds: float = Field(default=1, gt=0)
    max_interval_seconds: float = Field(default=300, gt=0)

    @model_validator(mode="after")
    def _interval_order(self) -> RetrySpec:
        if self.max_interval_seconds < self.initial_interval_seconds:
            raise ValueError("max_interval_seconds must not be below initial_interval_seconds")
        return self

    def to_temporal(self, guarantee: Guarantee) -> RetryPolicy:
        return RetryPolicy(
            initial_interval=timedelta(seconds=self.initial_interval_seconds),
            backoff_coefficient=2.0 if self.backoff == "exponential" else 1.0,
            maximum_interval=timedelta(seconds=self.max_interval_seconds),
            maximum_attempts=1 if guarantee == "at_most_once" else self.max_attempts,
            non_retryable_error_types=list(NON_RETRYABLE),
        )


# Error types the HTTP activity raises that no further attempt can fix.
NON_RETRYABLE = ("HttpClientError", "InvalidAction", "TargetRefused")


class RunInput(BaseModel):
    """Everything one run needs: the schedule carries it, so a run reads nothing from the mirror."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    owner_id: str
    action: HttpAction
    retry: RetrySpec = RetrySpec()
    guarantee: Guarantee = "at_least_once"
    trigger: Trigger = "schedule"


class HttpCall(BaseModel):
    run_id: str
    action: HttpAction


class HttpOutcome(BaseModel):
    status_code: int
    duration_ms: int
    attempt: int
    body_excerpt: str


class RunResult(BaseModel):
    status: Literal["succeeded", "failed", "cancelled"]
    attempts: int
    http_status: int | None = None
    error: str | None = None
