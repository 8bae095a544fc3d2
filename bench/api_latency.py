"""Target 4, API latency: p99 of `GET /jobs` and `GET /jobs/{id}/runs` at a fixed 100 requests/s with
10,000 jobs and 100,000 runs in the mirror, on SQLite and (when reachable on 127.0.0.1:5432) PostgreSQL.

The mirror is seeded with SQL (what the API and worker would have written, through the product's own
models) so the run takes seconds; 20 cron jobs are then made through the API, so the first page of
`GET /jobs` holds jobs with live schedules and shows what `next_runs` (one `describe()` per listed job)
costs beside deeper pages of seeded immediate jobs, which make no Temporal call. One job has 10,000 runs.

    python -m bench.api_latency [--jobs 10000] [--runs 100000] [--rate 100] [--seconds 10]
                                [--db sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import create_engine

from bench.stack import Stack, at_fixed_rate, machine, percentile, postgres_reachable, stack, table, verdict
from core.codec import keyring
from core.config import Settings
from core.models import Job, JobCreate, Run, attach_keyring

HOT_RUNS = 10_000
LIVE_JOBS = 20
SEQUENTIAL = 21


def seed(
    s: Stack, owner_id: str, url: str, jobs: int, runs: int, days_ago: float = 30, spread: bool = False
) -> list[str]:
    """Insert `jobs` finished immediate jobs and `runs` succeeded runs (one job gets HOT_RUNS of them),
    the first made `days_ago` days ago and each next one a second later; with `spread`, the runs are
    spaced evenly from then to now instead."""
    body = JobCreate.model_validate(
        {"name": "seeded", "schedule": {"type": "immediate"}, "action": {"type": "http", "url": url}}
    )
    fields = {
        "schedule": body.schedule.model_dump(mode="json"),
        "action": body.action.model_dump(mode="json"),
        "retry_policy": body.retry_policy.model_dump(mode="json"),
        "notify": body.notify.model_dump(mode="json"),
        "execution_guarantee": body.execution_guarantee,
        "overlap_policy": body.overlap_policy,
    }
    past = datetime.now(UTC) - timedelta(days=days_ago)
    step = timedelta(days=days_ago) / max(runs, 1)
    ids = [f"seed{n:012d}" for n in range(jobs)]
    per_job = [HOT_RUNS if n == 0 else 0 for n in range(jobs)]
    for n in range(runs - min(runs, HOT_RUNS)):
        per_job[1 + n % (jobs - 1)] += 1
    job_rows: list[dict[str, Any]] = []
    run_rows: list[dict[str, Any]] = []
    for n, job_id in enumerate(ids):
        created = past + timedelta(seconds=n)
        last = f"job-{job_id}-immediate-{per_job[n] - 1:08d}" if per_job[n] else None
        job_rows.append(
            {
                "id": job_id,
                "owner_id": owner_id,
                "name": f"seeded {n}",
                "description": None,
                **fields,
                "state": "completed",
                "paused": False,
                "pause_note": None,
                "last_run_id": last,
                "created_at": created,
                "updated_at": created,
                "deleted_at": None,
            }
        )
        for k in range(per_job[n]):
            at = past + len(run_rows) * step if spread else created + timedelta(seconds=k)
            run_rows.append(
                {
                    "id": f"job-{job_id}-immediate-{k:08d}",
                    "job_id": job_id,
                    "owner_id": owner_id,
                    "status": "succeeded",
                    "trigger": "immediate",
                    "scheduled_at": at,
                    "started_at": at,
                    "finished_at": at + timedelta(milliseconds=50),
                    "duration_ms": 50,
                    "attempts": 1,
                    "result": {"status": "succeeded", "attempts": 1, "http_status": 200},
                    "error": None,
                    "temporal_run_id": None,
                    "created_at": at,
                }
            )
    engine = create_engine(s.mirror_url)
    # The API's key ring (the one generated into the work dir), so the seeded rows read as its own.
    attach_keyring(engine.dialect, keyring(Settings(data_dir=s.workdir)))
    with engine.begin() as conn:
        for start in range(0, len(job_rows), 5000):
            conn.execute(Job.metadata.tables["job"].insert(), job_rows[start : start + 5000])
        for start in range(0, len(run_rows), 5000):
            conn.execute(Run.metadata.tables["run"].insert(), run_rows[start : start + 5000])
    engine.dispose()
    return ids


async def measure(rate: float, seconds: float, call: Callable[[int], Awaitable[int]]) -> list[object]:
    """Latencies of all requests, failed ones included, and how many failed (503: Temporal timed out)."""
    statuses: list[int] = []

    async def counted(i: int) -> None:
        statuses.append(await call(i))

    latencies = await at_fixed_rate(rate, seconds, counted)
    failed = sum(1 for status in statuses if status >= 400)
    ms = [percentile(latencies, p) * 1000 for p in (50, 99, 100)]
    return [len(latencies), failed, *ms]


async def one_database(db: str, jobs: int, runs: int, rate: float, seconds: float) -> list[list[object]]:
    async with stack(postgres=db == "postgresql") as s:
        api = await s.start_api()
        url = s.target.url("/seeded")
        began = time.perf_counter()
        ids = await asyncio.to_thread(seed, s, api.user_id, url, jobs, runs)
        print(
            f"{db}: seeded {jobs} jobs and {runs} runs in {time.perf_counter() - began:.1f} s",
            file=sys.stderr,
        )
        for n in range(LIVE_JOBS):
            await api.create_job(f"live {n}", {"type": "cron", "cron": "0 0 3 * * *"}, url)
        pages = (jobs + LIVE_JOBS) // 20

        async def get(path: str, params: dict[str, Any]) -> int:
            return (await api.http.get(path, params=params)).status_code

        cases: list[tuple[str, Callable[[int], Awaitable[int]]]] = [
            (
                "GET /jobs page 1 (20 live schedules: 20 describe())",
                lambda i: get("/jobs", {"page": 1, "limit": 20}),
            ),
            (
                "GET /jobs random page (seeded, no Temporal call)",
                lambda i: get("/jobs", {"page": random.randint(2, pages), "limit": 20}),
            ),
            (
                "GET /jobs/{id}/runs random job (~10 runs)",
                lambda i: get(f"/jobs/{random.choice(ids[1:])}/runs", {"limit": 20}),
            ),
            (
                f"GET /jobs/{{id}}/runs job with {HOT_RUNS} runs",
                lambda i: get(f"/jobs/{ids[0]}/runs", {"limit": 20}),
            ),
        ]
        rows: list[list[object]] = []
        for what, call in cases:
            alone = []  # one request at a time: the service time, without any queue
            for i in range(SEQUENTIAL):
                began = time.perf_counter()
                await call(i)
                alone.append(time.perf_counter() - began)
            rows.append([db, what, percentile(alone[1:], 50) * 1000, *await measure(rate, seconds, call)])
        await api.aclose()
        return rows


async def main(jobs: int, runs: int, rate: float, seconds: float, dbs: list[str]) -> None:
    rows: list[list[object]] = []
    for db in dbs:
        if db == "postgresql" and not postgres_reachable():
            print("PostgreSQL is not reachable on 127.0.0.1:5432: skipped")
            continue
        rows += await one_database(db, jobs, runs, rate, seconds)
    title = f"API latency at {rate:g} requests/s, {jobs} jobs and {runs} runs in the mirror — {machine()}"
    print(
        table(
            title,
            ["mirror", "request", "alone p50 ms", "requests", "failed", "p50 ms", "p99 ms", "max ms"],
            rows,
        )
    )
    worst = max(float(r[6]) for r in rows)  # type: ignore[arg-type]
    print("\n" + verdict("worst p99 ms", worst, 50, higher_is_better=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=100, help="requests per second, open loop")
    parser.add_argument("--seconds", type=float, default=10, help="per request kind and database")
    parser.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    a = parser.parse_args()
    asyncio.run(main(a.jobs, a.runs, a.rate, a.seconds, a.db.split(",")))
