"""The API process's own CPU per `POST /jobs`, in process (no HTTP, no Temporal server): what
`JobService.create` costs the event loop for a daily cron job and for an immediate HTTP job (run now),
with a stand-in Temporal client that answers at once. CPU time, not wall time, so the figures hold better
on a busy machine (SQLite runs its queries inside the process: its CPU includes them). Statements: how
many the database was sent per create.

    python -m bench.create_cpu [--creates 300] [--db sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from sqlalchemy import event
from temporalio.converter import DataConverter

from bench.stack import machine, percentile, reachable, scratch_mirror, table
from core.auth import Principal
from core.jobs import JobService
from core.models import JobCreate, Role
from core.temporal import TemporalGateway


class Handle:
    first_execution_run_id = "run"
    result_run_id = "run"


class AtOnce:
    """A Temporal client that takes every schedule and workflow without a server."""

    async def create_schedule(self, *_: Any, **__: Any) -> None:
        return None

    async def start_workflow(self, *_: Any, **__: Any) -> Handle:
        return Handle()


BODIES = {
    "cron (daily)": {"schedule": {"type": "cron", "cron": "0 0 3 * * *"}},
    "immediate (run now)": {"schedule": {"type": "immediate"}},
}


async def one_database(db: str, creates: int) -> list[list[object]]:
    unlimited = {"max_jobs_per_user": 10**6, "job_writes_per_minute": 10**6, "runs_per_minute": 10**6}
    async with scratch_mirror("createcpu", db, **unlimited) as mirror:
        statements = 0

        def count(*_: Any) -> None:
            nonlocal statements
            statements += 1

        event.listen(mirror.engine.sync_engine, "before_cursor_execute", count)
        owner = await mirror.add_user(Role.USER)
        user = Principal(id=owner.id, email=owner.email, role=Role.USER, scopes=frozenset({"jobs:write"}))
        gateway = TemporalGateway("127.0.0.1:1", "default", DataConverter.default)
        gateway._client = AtOnce()  # type: ignore[assignment]
        service = JobService(mirror.settings, mirror.sessions, gateway)
        rows: list[list[object]] = []
        for what, extra in BODIES.items():
            body = JobCreate.model_validate(
                {"name": "bench", "action": {"type": "http", "url": "https://example.org/"}, **extra}
            )
            for _ in range(20):  # warm
                await service.create(user, body)
            cpu: list[float] = []
            before = statements
            for _ in range(creates):
                began = time.process_time()
                await service.create(user, body)
                cpu.append(time.process_time() - began)
            per = (statements - before) / creates
            mean = sum(cpu) / len(cpu) * 1000
            rows.append([db, what, mean, *(percentile(cpu, p) * 1000 for p in (50, 99)), per])
        return rows


async def main(creates: int, dbs: list[str]) -> None:
    rows: list[list[object]] = []
    for db in reachable(dbs):
        rows += await one_database(db, creates)
    title = f"API CPU per POST /jobs in JobService.create, {creates} creates each — {machine()}"
    headers = ["mirror", "job", "CPU mean ms", "CPU p50 ms", "CPU p99 ms", "statements"]
    print(table(title, headers, rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--creates", type=int, default=300)
    parser.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    a = parser.parse_args()
    asyncio.run(main(a.creates, a.db.split(",")))
