"""The API process's own CPU per list page, in process (no HTTP, no other process): what one `GET` of
each list costs the event loop, deep pages by cursor, and how much of a page of jobs is decoding their
typed and sealed JSON columns (`TypedJSON`, `SealedJSON`). CPU time, not wall time, so the figures
hold better on a busy machine (SQLite runs its queries inside the process: its CPU includes them).

The mirror (10,000 jobs, 100,000 runs, 10,000 dead letters, 20,000 audit entries) is seeded as
`bench.api_latency` seeds it, in a scratch SQLite file or PostgreSQL database.

    python -m bench.list_cpu [--jobs 10000] [--runs 100000] [--pages 200] [--db sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

from sqlalchemy import JSON, Text, type_coerce
from sqlalchemy import cast as sql_cast
from sqlalchemy.engine import Dialect
from sqlmodel import SQLModel, select
from temporalio.converter import DataConverter

from bench.api_latency import seed
from bench.stack import (
    Stack,
    machine,
    percentile,
    reachable,
    scratch_mirror,
    table,
)
from core.audit import AuditService
from core.auth import Principal
from core.db import Sessions
from core.dead_letters import DeadLetterService
from core.jobs import JobService
from core.models import JobFilter, Role, TypedJSON
from core.runs import RunService
from core.temporal import TemporalGateway


async def decode_cost(sessions: Sessions, dialect: Dialect) -> list[float]:
    """CPU p50 and p99 (ms) of validating the typed and sealed JSON columns of 20 stored jobs, as loading
    a page of them does: the share of `GET /jobs` that decoding is."""
    async with sessions() as session:
        result = await session.exec(select(*TYPED_COLUMNS).limit(20))
        stored = [row._asdict() for row in result]
    cpu: list[float] = []
    for _ in range(200):
        began = time.process_time()
        for row in stored:
            for column in TYPED:
                cast(TypedJSON, column.type).process_result_value(row[column.key], dialect)
        cpu.append(time.process_time() - began)
    return [percentile(cpu, p) * 1000 for p in (50, 99)]


class Mirror:
    """What `seed` needs of a benchmark stack: where the mirror is and the key ring's directory."""

    def __init__(self, workdir: Path, url: str) -> None:
        self.workdir, self.mirror_url = workdir, url


# The job's typed JSON columns, and the same read as what the driver hands them over as (`TypedJSON` selects
# them as text: PostgreSQL's driver hands over the text, SQLite's JSON type the parsed value).
TYPED = [c for c in SQLModel.metadata.tables["job"].columns if isinstance(c.type, TypedJSON)]
TYPED_COLUMNS = [type_coerce(sql_cast(c, Text), JSON).label(c.key) for c in TYPED]


async def one_database(db: str, jobs: int, runs: int, pages: int) -> list[list[object]]:
    async with scratch_mirror("listcpu", db) as scratch:
        settings, engine, sessions = scratch.settings, scratch.engine, scratch.sessions
        owner = await scratch.add_user(Role.ADMIN)
        mirror = cast(Stack, Mirror(scratch.workdir, scratch.url))
        ids = await asyncio.to_thread(seed, mirror, owner.id, owner.email, "http://x.test/", jobs, runs)
        user = Principal(id=owner.id, email=owner.email, role=Role.USER, scopes=frozenset({"jobs:read"}))
        unused = TemporalGateway("127.0.0.1:1", "default", DataConverter.default)  # lists never call it
        job_service = JobService(settings, sessions, unused)
        runs_service = RunService(settings, sessions, unused)
        team, named = JobFilter(labels={"team": "t3"}), JobFilter(q="seeded 99")
        letters = DeadLetterService(sessions, job_service)
        trail = AuditService(sessions)

        async def dashboard_jobs(cursor: str | None, limit: int) -> Any:
            """What the dashboard's jobs list reads: a page of jobs and each one's strip of 10 runs."""
            found = await job_service.find(user, JobFilter(), limit, cursor)
            await runs_service.recent(user, [job.id for job in found.items], 10)
            return found

        lists: dict[str, Callable[[str | None, int], Awaitable[Any]]] = {
            "GET /jobs": lambda c, n: job_service.find(user, JobFilter(), n, c),
            "GET /jobs?label=team:t3": lambda c, n: job_service.find(user, team, n, c),
            "GET /jobs?q=seeded 99": lambda c, n: job_service.find(user, named, n, c),
            "dashboard /jobs (page and run strips)": dashboard_jobs,
            "GET /jobs/{id}/runs": lambda c, n: runs_service.for_job(user, ids[0], None, n, c),
            "GET /dead-letters": lambda c, n: letters.find(user, None, n, c),
            "GET /jobs/{id}/audit": lambda c, n: trail.for_job(user, ids[0], c, n),
            "GET /admin/audit": lambda c, n: trail.find(None, None, None, c, n),
        }
        rows: list[list[object]] = []
        for what, page in lists.items():
            starts: list[str | None] = [None]
            while (cursor := (await page(starts[-1], 100)).next_cursor) is not None:
                starts.append(cursor)
            for start in starts:  # warm: every page read once
                await page(start, 20)
            cpu: list[float] = []
            for _ in range(pages):
                began = time.process_time()
                await page(random.choice(starts), 20)
                cpu.append(time.process_time() - began)
            rows.append([db, what, *(percentile(cpu, p) * 1000 for p in (50, 99))])
        rows.append(
            [db, "typed JSON columns of 20 job rows, decoded", *await decode_cost(sessions, engine.dialect)]
        )
        return rows


async def main(jobs: int, runs: int, pages: int, dbs: list[str]) -> None:
    rows: list[list[object]] = []
    for db in reachable(dbs):
        rows += await one_database(db, jobs, runs, pages)
    title = f"API CPU per list page of 20, deep pages by cursor, {jobs} jobs and {runs} runs — {machine()}"
    print(table(title, ["mirror", "list", "CPU p50 ms", "CPU p99 ms"], rows))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--pages", type=int, default=200, help="pages measured per list and mode")
    parser.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    a = parser.parse_args()
    asyncio.run(main(a.jobs, a.runs, a.pages, a.db.split(",")))
