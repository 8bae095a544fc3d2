"""The answer of GET /stats: jobs by state, and runs over the last hour and day."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel


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


class HourOfRuns(BaseModel):
    """Runs started in one hour, by how they ended (`other`: still going, or cancelled)."""

    hour: datetime
    succeeded: int = 0
    failed: int = 0
    other: int = 0


class FailingJob(BaseModel):
    id: str
    name: str
    failures: int


class Overview(BaseModel):
    """The dashboard's first page: the last day's runs per hour, and how they went."""

    hours: list[HourOfRuns]
    runs: int
    success_rate: float | None
    duration_ms_p50: int | None
    duration_ms_p99: int | None
    failing_jobs: list[FailingJob]
    dead_letters: int
