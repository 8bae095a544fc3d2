"""`GET /metrics`: Prometheus text whose series count exactly what a fresh mirror holds."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.main import create_app
from core.config import Settings
from core.models import Run, RunStatus, utcnow
from core.payloads import Trigger
from core.temporal import TemporalGateway
from tests.api_client import ApiClient, expect, serve, session_converter
from tests.conftest import POSTGRES
from tests.waiting import eventually

YEARLY = {"type": "cron", "cron": "0 0 1 1 *"}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
METRICS = "http://chronos.test/metrics"


@pytest.fixture
async def fresh_mirror(db_engine: AsyncEngine, tmp_path: Path) -> AsyncIterator[str | None]:
    """An empty mirror of the session's kind (None: SQLite in the data dir), so totals are this test's."""
    if db_engine.dialect.name != "postgresql":
        yield None
        return
    name = f"chronos_metrics_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    yield POSTGRES.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture
async def fresh_api(
    fresh_mirror: str | None, temporal_client: Client, tmp_path: Path
) -> AsyncIterator[ApiClient]:
    """The API on the fresh mirror, its task queue polled by no worker so that runs wait in the backlog."""
    settings = Settings(
        data_dir=tmp_path,
        database_url=fresh_mirror,
        allow_private_targets=True,
        task_queue=f"metrics-{uuid.uuid4().hex[:8]}",
    )
    async with serve(create_app(settings, TemporalGateway.of(temporal_client))) as api:
        yield api


def scrape(text: str) -> Samples:
    """Every sample by name and labels."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def job(schedule: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "measured",
        "schedule": schedule,
        "action": {"type": "http", "url": "http://127.0.0.1:9/never"},
    }


async def test_metrics_count_what_the_mirror_holds(fresh_api: ApiClient, temporal_client: Client) -> None:
    alice = await fresh_api.authed_user()
    scheduled = expect(await alice.post("/jobs", json=job(YEARLY)), 201)
    paused = expect(await alice.post("/jobs", json=job(YEARLY)), 201)
    expect(await alice.post(f"/jobs/{paused['id']}/pause", json={}), 200)
    deleted = expect(await alice.post("/jobs", json=job(YEARLY)), 201)
    expect(await alice.delete(f"/jobs/{deleted['id']}"), 204)
    immediate = expect(await alice.post("/jobs", json=job({"type": "immediate"})), 201)
    waiting = immediate["last_run"]["id"]
    now = utcnow()
    async with fresh_api.app.state.sessions() as session:
        for n, (status, ms, attempts) in enumerate(
            [(RunStatus.SUCCEEDED, 40, 1), (RunStatus.SUCCEEDED, 2000, 3), (RunStatus.FAILED, 7000, 2)]
        ):
            session.add(
                Run(
                    id=f"job-{scheduled['id']}-manual-{n}",
                    job_id=scheduled["id"],
                    owner_id=alice.id,
                    status=status,
                    trigger=Trigger.MANUAL,
                    started_at=now - timedelta(milliseconds=ms),
                    finished_at=now,
                    duration_ms=ms,
                    attempts=attempts,
                )
            )
        await session.commit()

    try:

        async def backlog() -> Samples | None:
            answer = await fresh_api.get(METRICS)
            assert answer.status_code == 200
            assert answer.headers["content-type"].startswith("text/plain; version=")
            samples = scrape(answer.text)
            return samples if samples.get(("chronos_queue_depth", (("task_type", "workflow"),))) else None

        samples: Samples = await eventually(
            backlog, "the immediate run's workflow task in the queue's backlog"
        )
    finally:
        await temporal_client.get_workflow_handle(waiting).terminate("test over")

    def value(name: str, **labels: str) -> float:
        return samples[(name, tuple(sorted(labels.items())))]

    assert {k: v for k, v in samples.items() if k[0] == "chronos_jobs_total"} == {
        ("chronos_jobs_total", (("state", "scheduled"),)): 1,
        ("chronos_jobs_total", (("state", "paused"),)): 1,
        ("chronos_jobs_total", (("state", "running"),)): 1,
    }
    assert value("chronos_runs_total", status="succeeded") == 2
    assert value("chronos_runs_total", status="failed") == 1
    assert value("chronos_runs_total", status="scheduled") == 1
    assert value("chronos_retries_total") == 3
    assert value("chronos_queue_depth", task_type="workflow") == 1
    assert value("chronos_queue_depth", task_type="activity") == 0
    cumulative = {
        "0.05": 1,
        "0.1": 1,
        "1": 1,
        "2.5": 2,
        "5": 2,
        "10": 3,
        "3600": 3,
        "+Inf": 3,
    }
    for le, count in cumulative.items():
        assert value("chronos_runs_duration_seconds_bucket", le=le) == count, le
    assert value("chronos_runs_duration_seconds_count") == 3
    assert value("chronos_runs_duration_seconds_sum") == pytest.approx(9.04)


async def test_metrics_without_temporal_still_count_the_mirror(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    async with serve(
        create_app(settings, TemporalGateway("127.0.0.1:1", "default", session_converter(), timeout=2))
    ) as api:
        answer = await api.get(METRICS)
    assert answer.status_code == 200, answer.text
    samples = scrape(answer.text)
    names = {name for name, _ in samples}
    assert "chronos_queue_depth" not in names
    assert {"chronos_retries_total", "chronos_runs_duration_seconds_count"} <= names
