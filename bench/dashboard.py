"""The dashboard's pages with 10,000 jobs and 100,000 runs in the mirror: the server time of each page,
one request at a time from a signed-in browser session (over localhost, so the latency is the server's
time plus a loopback round trip), on SQLite and (when reachable on 127.0.0.1:5432) PostgreSQL.

The mirror is seeded as bench/api_latency.py seeds it, with the runs spread evenly over the last
`--days` days (30: the overview's 24-hour window holds 1/30 of them); `--days 1` puts every run in that
window, the overview's worst case. One job has 10,000 runs. The jobs list's deep pages are asked by
cursor (as its Next link does), from cursors collected by walking `GET /api/v1/jobs` once.

    python -m bench.dashboard [--jobs 10000] [--runs 100000] [--days 30] [--requests 200]
                              [--db sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import sys
import time
from collections.abc import Callable

import httpx

from bench.api_latency import LIVE_JOBS, cursors, seed
from bench.stack import PASSWORD, Stack, machine, percentile, reachable, stack, table, verdict

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
BOUND_MS = 100


async def signed_in(s: Stack, base: str, email: str) -> httpx.AsyncClient:
    """A browser session: the sign-in form posted with its CSRF token and this site's Origin."""
    http = httpx.AsyncClient(base_url=base, timeout=60)
    form = await http.get("/login")
    found = CSRF.search(form.text)
    assert found, "the sign-in page has a CSRF token"
    data = {"email": email, "password": PASSWORD, "csrf_token": found.group(1), "next": "/"}
    answer = await http.post("/login", data=data, headers={"Origin": base})
    if answer.status_code != 303:
        raise RuntimeError(f"sign-in answered {answer.status_code}: {answer.text[:300]}")
    return http


async def one_database(db: str, jobs: int, runs: int, requests: int, days: float) -> list[list[object]]:
    async with stack(postgres=db == "postgresql") as s:
        api = await s.start_api()
        url = s.target.url("/seeded")
        began = time.perf_counter()
        ids = await asyncio.to_thread(seed, s, api.user_id, api.email, url, jobs, runs, days, True)
        print(
            f"{db}: seeded {jobs} jobs and {runs} runs in {time.perf_counter() - began:.1f} s",
            file=sys.stderr,
        )
        for n in range(LIVE_JOBS):
            await api.create_job(f"live {n}", {"type": "cron", "cron": "0 0 3 * * *"}, url)
        email = (await api.http.get("/auth/me")).json()["email"]
        browser = await signed_in(s, api.base, email)
        starts = await cursors(api, "/jobs", {})  # the dashboard pages by cursor, as the API does
        hot_run = f"job-{ids[0]}-immediate-{9_999:08d}"
        cases: list[tuple[str, Callable[[], str]]] = [
            ("/ (overview)", lambda: "/"),
            ("/jobs page 1 (20 live schedules)", lambda: "/jobs"),
            ("/jobs random deep page (cursor)", lambda: f"/jobs?cursor={random.choice(starts)}"),
            ("/jobs?q=seeded 99 (name filter)", lambda: "/jobs?q=seeded+99"),
            ("/jobs/{id} random seeded job", lambda: f"/jobs/{random.choice(ids[1:])}"),
            ("/jobs/{id} the job with 10,000 runs", lambda: f"/jobs/{ids[0]}"),
            ("/runs/{id}", lambda: f"/runs/{hot_run}"),
            ("/dead-letters", lambda: "/dead-letters"),
            ("/jobs/preview (cron)", lambda: "/jobs/preview?schedule_type=cron&cron=0+9+*+*+1-5"),
        ]
        rows: list[list[object]] = []
        for what, path in cases:
            latencies: list[float] = []
            for i in range(requests + 1):
                if i == 1:
                    cpu = s.cpu_seconds()["api"]
                began = time.perf_counter()
                answer = await browser.get(path())
                if i:  # the first request warms caches
                    latencies.append(time.perf_counter() - began)
                if answer.status_code != 200:
                    raise RuntimeError(f"{path()} answered {answer.status_code}: {answer.text[:300]}")
            # The API process's own CPU time per request (user + system), which other load moves less.
            cpu_ms = (s.cpu_seconds()["api"] - cpu) * 1000 / requests
            ms = [min(latencies) * 1000, *(percentile(latencies, p) * 1000 for p in (50, 99, 100))]
            rows.append([db, what, len(latencies), *ms, cpu_ms])
        await browser.aclose()
        await api.aclose()
        return rows


async def main(jobs: int, runs: int, requests: int, days: float, dbs: list[str]) -> None:
    rows: list[list[object]] = []
    for db in reachable(dbs):
        rows += await one_database(db, jobs, runs, requests, days)
    title = (
        f"Dashboard pages, one at a time, {jobs} jobs and {runs} runs over {days:g} days in the mirror"
        f" — {machine()}"
    )
    header = ["mirror", "page", "requests", "min ms", "p50 ms", "p99 ms", "max ms", "API CPU ms/req"]
    print(table(title, header, rows))
    print("\nload average (1, 5, 15 min) at the end: " + ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    worst = max(float(r[5]) for r in rows)  # type: ignore[arg-type]
    print("\n" + verdict("worst page p99 ms", worst, BOUND_MS, higher_is_better=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=200, help="per page and database")
    parser.add_argument("--days", type=float, default=30, help="the seeded runs span this many days")
    parser.add_argument("--db", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    a = parser.parse_args()
    asyncio.run(main(a.jobs, a.runs, a.requests, a.days, a.db.split(",")))
