"""Target 4, API latency: p99 of every list endpoint, deep pages included, at a fixed 100 requests/s with
10,000 jobs, 100,000 runs, 10,000 dead letters and 20,000 audit entries in the mirror, on SQLite and
(when reachable on 127.0.0.1:5432) PostgreSQL.

The mirror is seeded with SQL (what the API and worker would have written, through the product's own
models) so the run takes seconds; 20 cron jobs are then made through the API, so the first page of
`GET /jobs` holds jobs with live schedules. One job has 10,000 runs (a tenth failed, each with its dead
letter) and 10,000 audit entries. Each list is walked once by cursor to collect where its pages start;
the measured requests then ask for pages at random depths by those cursors and, on the lists that
take one, by page number (which counts the rows and skips an offset). The target is PostgreSQL's, the
production mirror: its worst p99 decides, and SQLite's is printed beside it. Beside each case, the CPU
the API process and the PostgreSQL server spent per request: one API process past about a core's worth
of CPU at the rate queues its requests, which is where a p99 comes from when the machine is slow.

    python -m bench.api_latency [--jobs 10000] [--runs 100000] [--rate 100] [--seconds 10]
                                [--db sqlite,postgresql] [--cases jobs,runs,...]
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

from sqlalchemy import create_engine, text, update
from sqlmodel import SQLModel, col

from bench.stack import (
    Api,
    Stack,
    at_fixed_rate,
    machine,
    percentile,
    reachable,
    stack,
    table,
    verdict,
)
from core.codec import keyring
from core.config import Settings
from core.models import JobCreate, User, attach_keyring

HOT_RUNS = 10_000
HOT_AUDIT = 10_000
TEAMS = 10
LIVE_JOBS = 20
SEQUENTIAL = 21
BOUND_MS = 50


def seed(
    s: Stack,
    owner_id: str,
    email: str,
    url: str,
    jobs: int,
    runs: int,
    days_ago: float = 30,
    spread: bool = False,
) -> list[str]:
    """Insert `jobs` finished immediate jobs (label `team: t<n % 10>`), `runs` runs (one job gets HOT_RUNS
    of them), a dead letter for every tenth run, a `job.create` entry per job and HOT_AUDIT more entries
    for the hot job; the first job made `days_ago` days ago and each next one a second later, and with
    `spread` the runs spaced evenly from then to now instead."""
    body = JobCreate.model_validate(
        {"name": "seeded", "schedule": {"type": "immediate"}, "action": {"type": "http", "url": url}}
    )
    fields = {
        "schedule": body.schedule.model_dump(mode="json"),
        "retry_policy": body.retry_policy.model_dump(mode="json"),
        "notify": body.notify.model_dump(mode="json"),
        "execution_guarantee": body.execution_guarantee,
        "overlap_policy": body.overlap_policy,
        "schedule_type": "immediate",
    }
    past = datetime.now(UTC) - timedelta(days=days_ago)
    step = timedelta(days=days_ago) / max(runs, 1)
    ids = [f"seed{n:012d}" for n in range(jobs)]
    per_job = [HOT_RUNS if n == 0 else 0 for n in range(jobs)]
    for n in range(runs - min(runs, HOT_RUNS)):
        per_job[1 + n % (jobs - 1)] += 1
    rows: dict[str, list[dict[str, Any]]] = {
        "job": [],
        "joblabel": [],
        "run": [],
        "deadletter": [],
        "auditentry": [],
    }
    actor = {"actor_id": owner_id, "actor_email": email, "target_user_id": None}
    for n, job_id in enumerate(ids):
        created = past + timedelta(seconds=n)
        last = f"job-{job_id}-immediate-{per_job[n] - 1:08d}" if per_job[n] else None
        team = f"t{n % TEAMS}"
        rows["job"].append(
            {
                "id": job_id,
                "owner_id": owner_id,
                "name": f"seeded {n}",
                "description": None,
                **fields,
                # Each job its own URL and secret header, as real jobs have (nothing decodes alike).
                "action": {
                    **body.action.model_dump(mode="json"),
                    "url": f"{url}?job={n}",
                    "headers": {"Authorization": f"Bearer secret-{n}"},
                },
                "labels": {"team": team},
                "state": "completed",
                "paused": False,
                "pause_note": None,
                "last_run_id": last,
                "version": 1,
                "created_at": created,
                "updated_at": created,
                "deleted_at": None,
            }
        )
        label = {"job_id": job_id, "key": "team", "value": team, "owner_id": owner_id, "created_at": created}
        rows["joblabel"].append(label)
        audit = {"job_id": job_id, "action": "job.create", "changes": {"name": f"seeded {n}"}, **actor}
        rows["auditentry"].append({"id": f"a{job_id}", "at": created, **audit})
        for k in range(per_job[n]):
            at = past + len(rows["run"]) * step if spread else created + timedelta(seconds=k)
            run_id = f"job-{job_id}-immediate-{k:08d}"
            failed = k % 10 == 9
            rows["run"].append(
                {
                    "id": run_id,
                    "job_id": job_id,
                    "owner_id": owner_id,
                    "status": "failed" if failed else "succeeded",
                    "trigger": "immediate",
                    "scheduled_at": at,
                    "started_at": at,
                    "finished_at": at + timedelta(milliseconds=50),
                    "duration_ms": 50,
                    "attempts": 1,
                    "result": {"status": "failed" if failed else "succeeded", "attempts": 1},
                    "error": "HTTP 500" if failed else None,
                    "temporal_run_id": None,
                    "created_at": at,
                }
            )
            if failed:
                letter = {"job_id": job_id, "run_id": run_id, "owner_id": owner_id, "error": "HTTP 500"}
                rows["deadletter"].append(
                    {"id": f"d{run_id}", **letter, "attempts": 1, "request": None, "created_at": at}
                )
    for k in range(HOT_AUDIT):
        changes = {"name": {"before": "a", "after": "b"}}
        at = past + timedelta(seconds=k, milliseconds=500)
        rows["auditentry"].append(
            {
                "id": f"u{k:08d}",
                "at": at,
                "job_id": ids[0],
                "action": "job.update",
                "changes": changes,
                **actor,
            }
        )
    engine = create_engine(s.mirror_url)
    # The API's key ring (the one generated into the work dir), so the seeded rows read as its own.
    attach_keyring(engine.dialect, keyring(Settings(data_dir=s.workdir)))
    with engine.begin() as conn:
        for name, values in rows.items():
            for start in range(0, len(values), 5000):
                conn.execute(SQLModel.metadata.tables[name].insert(), values[start : start + 5000])
    # The statistics a database that grew to this size would have, and on PostgreSQL the visibility map
    # its autovacuum would have set (index-only scans rely on it); on both, the seed written out by a
    # checkpoint now rather than during the first measured cases (on SQLite, out of its write-ahead log,
    # as a mirror that grew over time would have it).
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("VACUUM ANALYZE"))
            conn.execute(text("CHECKPOINT"))
        else:
            conn.execute(text("ANALYZE"))
            conn.execute(text("PRAGMA wal_checkpoint(TRUNCATE)"))
    engine.dispose()
    return ids


def make_admin(s: Stack, user_id: str) -> None:
    engine = create_engine(s.mirror_url)
    with engine.begin() as conn:
        conn.execute(
            update(SQLModel.metadata.tables["user"]).where(col(User.id) == user_id).values(role="admin")
        )
    engine.dispose()


async def cursors(api: Api, path: str, params: dict[str, Any]) -> list[str]:
    """Where each page of 100 of a list starts, walked once by cursor."""
    found: list[str] = []
    cursor = None
    while True:
        answer = await api.http.get(
            path, params={**params, "limit": 100, **({"cursor": cursor} if cursor else {})}
        )
        answer.raise_for_status()
        cursor = answer.json()["next_cursor"]
        if cursor is None:
            return found
        found.append(cursor)


async def measure(rate: float, seconds: float, call: Callable[[int], Awaitable[int]]) -> list[object]:
    """Latencies of all requests, failed ones included, and how many failed."""
    statuses: list[int] = []

    async def counted(i: int) -> None:
        try:
            statuses.append(await call(i))
        except (OSError, asyncio.IncompleteReadError):  # the connection failed: counted as failed
            statuses.append(599)

    latencies = await at_fixed_rate(rate, seconds, counted)
    failed = sum(1 for status in statuses if status >= 400)
    ms = [percentile(latencies, p) * 1000 for p in (50, 99, 100)]
    return [len(latencies), failed, *ms]


def per_request(before: dict[str, float], after: dict[str, float], requests: int) -> list[float]:
    """The API's and the mirror's CPU ms per request over a case (NaN for SQLite, which runs inside the
    API): at `rate` requests a second, the API's share of its one core is the rate times this, over 1,000."""
    return [
        (after[name] - before[name]) * 1000 / requests if name in after else float("nan")
        for name in ("api", "PostgreSQL")
    ]


Case = tuple[str, str, Callable[[int], Awaitable[int]]]


async def one_database(
    db: str, jobs: int, runs: int, rate: float, seconds: float, only: set[str]
) -> list[list[object]]:
    async with stack(postgres=db == "postgresql") as s:
        api = await s.start_api()
        admin = await Api.login(api.base)  # promoted to admin once the mirror is seeded
        url = s.target.url("/seeded")
        began = time.perf_counter()
        ids = await asyncio.to_thread(seed, s, api.user_id, api.email, url, jobs, runs)
        await asyncio.to_thread(make_admin, s, admin.user_id)
        await admin.login_again()
        print(f"{db}: seeded in {time.perf_counter() - began:.1f} s", file=sys.stderr)
        for n in range(LIVE_JOBS):
            await api.create_job(f"live {n}", {"type": "cron", "cron": "0 0 3 * * *"}, url)
        hot = ids[0]
        lists = {
            "jobs": (api, "/jobs", {}),
            "jobs-label": (api, "/jobs", {"label": "team:t3"}),
            "runs": (api, f"/jobs/{hot}/runs", {}),
            "runs-failed": (api, f"/jobs/{hot}/runs", {"status": "failed"}),
            "dead-letters": (api, "/dead-letters", {}),
            "job-audit": (api, f"/jobs/{hot}/audit", {}),
            "admin-audit": (admin, "/admin/audit", {}),
        }
        began = time.perf_counter()
        walked = [name for name in lists if name in only or f"{name}-page" in only]
        starts = {name: await cursors(*lists[name]) for name in walked}
        print(f"{db}: walked the lists in {time.perf_counter() - began:.1f} s", file=sys.stderr)

        def deep(name: str) -> Callable[[int], Awaitable[int]]:
            user, path, params = lists[name]

            async def call(i: int) -> int:
                query: dict[str, Any] = {**params, "limit": 20, "cursor": random.choice(starts[name])}
                return await user.get(path, query)

            return call

        def by_number(name: str) -> Callable[[int], Awaitable[int]]:
            user, path, params = lists[name]
            pages = (len(starts[name]) + 1) * 5  # of 20, from the walk's pages of 100 (the last one short)

            async def call(i: int) -> int:
                query: dict[str, Any] = {**params, "limit": 20, "page": random.randint(2, pages)}
                return await user.get(path, query)

            return call

        async def first(i: int) -> int:
            return await api.get("/jobs", {"limit": 20})

        cases: list[Case] = [("jobs-first", "GET /jobs first page (20 live schedules), counted", first)]
        for name in starts:
            what = f"GET {lists[name][1]} {lists[name][2] or ''}"
            cases.append((name, f"{what} deep page by cursor", deep(name)))
            if name in BY_NUMBER:
                cases.append((f"{name}-page", f"{what} random page by number, counted", by_number(name)))
        rows: list[list[object]] = []
        for name, what, call in cases:
            if name not in only:
                continue
            alone = []  # one request at a time: the service time, without any queue
            for i in range(SEQUENTIAL):
                began = time.perf_counter()
                await call(i)
                alone.append(time.perf_counter() - began)
            before = s.cpu_seconds()
            measured = await measure(rate, seconds, call)
            used = per_request(before, s.cpu_seconds(), int(rate * seconds))
            met = "met" if float(measured[3]) < BOUND_MS and measured[1] == 0 else "not met"  # type: ignore[arg-type]
            rows.append([db, what, percentile(alone[1:], 50) * 1000, *measured, *used, met])
            print(" | ".join(str(cell) for cell in rows[-1]), file=sys.stderr)
        await api.aclose()
        await admin.aclose()
        return rows


# The lists that also page by number (the audit trails page by cursor only).
BY_NUMBER = ("jobs", "jobs-label", "runs", "runs-failed", "dead-letters")
ALL_CASES = ",".join(
    ["jobs-first", "jobs", "jobs-label", "runs", "runs-failed", "dead-letters", "job-audit", "admin-audit"]
    + [f"{name}-page" for name in BY_NUMBER]
)


async def main(jobs: int, runs: int, rate: float, seconds: float, dbs: list[str], only: set[str]) -> None:
    rows: list[list[object]] = []
    for db in reachable(dbs):
        rows += await one_database(db, jobs, runs, rate, seconds, only)
    title = f"API latency at {rate:g} requests/s, {jobs} jobs and {runs} runs in the mirror — {machine()}"
    header = [
        "mirror",
        "request",
        "alone p50 ms",
        "requests",
        "failed",
        "p50 ms",
        "p99 ms",
        "max ms",
        "API CPU ms",
        "PostgreSQL CPU ms",
        "p99 < 50 ms",
    ]
    print(table(title, header, rows))
    print()
    # One API process serves every request: past about one core's worth of its CPU, requests queue.
    busiest = max(rows, key=lambda r: float(r[8]))  # type: ignore[arg-type]
    print(
        f"the API's busiest case ({busiest[0]}, {busiest[1]}): {float(busiest[8]):.2f} ms of its CPU a "  # type: ignore[arg-type]
        f"request, {rate * float(busiest[8]) / 1000:.0%} of one core at {rate:g} requests/s"  # type: ignore[arg-type]
    )
    worst = {db: max(float(r[6]) for r in rows if r[0] == db) for db in {str(r[0]) for r in rows}}  # type: ignore[arg-type]
    if "sqlite" in worst:
        print(f"worst p99 ms on sqlite = {worst['sqlite']:.2f} (the target is PostgreSQL's)")
    if "postgresql" in worst:
        print(verdict("worst p99 ms on postgresql", worst["postgresql"], BOUND_MS, higher_is_better=False))
    else:
        print("PostgreSQL was not measured: the target is not judged")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--rate", type=float, default=100, help="requests per second, open loop")
    parser.add_argument("--seconds", type=float, default=10, help="per request kind and database")
    parser.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--cases", default=ALL_CASES, help=f"comma-separated, of {ALL_CASES}")
    a = parser.parse_args()
    asyncio.run(main(a.jobs, a.runs, a.rate, a.seconds, a.db.split(","), set(a.cases.split(","))))
