"""The answer of GET /stats: jobs by state, and runs over the last hour and day."""

from __future__ import annotations

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
