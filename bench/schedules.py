"""Target 3, scale of schedules: creating N recurring jobs through the API (16 clients) against N bare
`create_schedule` calls (16 clients) on the same server, in two halves run bare, Chronos, Chronos, bare so
the growing number of schedules weighs on both alike; then the latency of a page of `GET /jobs` (20 jobs
with their `next_runs`, computed by the schedules' own rules as `POST /jobs` answers them) with all N live,
beside a page of bare `list_schedules`, and what each process spent in CPU per create on either side.
Each side's creates are also timed inside Temporal (the dev server's own `CreateSchedule` latency), which
tells a slower server from a slower way to it. The jobs fire daily at 03:00 UTC so they exist without
firing during the run.

    python -m bench.schedules [-n 400] [--pages 100] [--in-memory]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time

from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleCalendarSpec,
    ScheduleRange,
    ScheduleSpec,
)

from bench.bare import BareCall
from bench.stack import (
    Api,
    Stack,
    add_cpu,
    cpu_table,
    machine,
    percentile,
    stack,
    table,
    verdict,
    with_clients,
)

CLIENTS = 16
DAILY_SPEC = ScheduleSpec(
    calendars=[
        ScheduleCalendarSpec(second=[ScheduleRange(0)], minute=[ScheduleRange(0)], hour=[ScheduleRange(3)])
    ]
)


async def bare_creates(s: Stack, start: int, count: int) -> tuple[float, list[float]]:
    url = s.target.url("/bare-daily")

    async def create(i: int) -> None:
        sid = f"bare-daily-{start + i}"
        action = ScheduleActionStartWorkflow("BareCallWorkflow", BareCall(url), id=sid, task_queue="bare")
        await s.temporal.create_schedule(sid, Schedule(action=action, spec=DAILY_SPEC))

    began = time.perf_counter()
    latencies = await with_clients(count, CLIENTS, create)
    return time.perf_counter() - began, latencies


async def chronos_creates(api: Api, url: str, start: int, count: int) -> tuple[float, list[float]]:
    schedule = {"type": "cron", "cron": "0 0 3 * * *"}
    began = time.perf_counter()
    latencies = await with_clients(
        count, CLIENTS, lambda i: api.create_job(f"daily-{start + i}", schedule, url)
    )
    return time.perf_counter() - began, latencies


async def server_time_of(s: Stack, spent: float, answered: int) -> float:
    """The server's seconds on the creates since it had spent `spent`, once it has counted `answered` in
    all (its metrics may trail the answers by a moment)."""
    for _ in range(50):
        now_spent, now_answered = s.server_time("CreateSchedule")
        if now_answered >= answered:
            break
        await asyncio.sleep(0.1)
    return now_spent - spent


async def page_latencies(pages: int, total: int, fetch: object) -> list[float]:
    latencies = []
    for _ in range(pages):
        page = random.randint(1, max(1, total // 20))
        began = time.perf_counter()
        await fetch(page)  # type: ignore[operator]
        latencies.append(time.perf_counter() - began)
    return latencies


async def main(n: int, pages: int, in_memory: bool) -> None:
    async with stack(in_memory=in_memory) as s:
        s.start_bare_worker()
        s.start_chronos_worker()
        api = await s.start_api()
        await s.wait_for_pollers("chronos")
        url = s.target.url("/daily")
        half = n // 2
        bare_s = chronos_s = 0.0
        bare_lat: list[float] = []
        chronos_lat: list[float] = []
        cpu: dict[str, dict[str, float]] = {"bare": {}, "Chronos": {}}
        inside = {"bare": 0.0, "Chronos": 0.0}  # seconds the server spent answering each side's creates
        for start, count, sides in ((0, half, ("bare", "Chronos")), (half, n - half, ("Chronos", "bare"))):
            for side in sides:  # bare, Chronos, Chronos, bare: each side meets as many schedules before it
                spent, answered = s.server_time("CreateSchedule")
                before = s.cpu_seconds()
                if side == "bare":
                    took, lat = await bare_creates(s, start, count)
                    bare_s, bare_lat = bare_s + took, bare_lat + lat
                else:
                    took, lat = await chronos_creates(api, url, start, count)
                    chronos_s, chronos_lat = chronos_s + took, chronos_lat + lat
                add_cpu(cpu[side], before, s.cpu_seconds())
                inside[side] += await server_time_of(s, spent, answered + count)

        async def jobs_page(page: int) -> None:
            query = {"page": page, "limit": 20}
            status, content = await api.lean.request("GET", "/jobs", api.authorization, query=query)
            if status != 200 or len(json.loads(content)["items"]) != 20:
                raise RuntimeError(f"GET /jobs page {page} answered {status}: {content[:300]!r}")

        async def bare_page(_page: int) -> None:
            # The first page of 20: Temporal's list is a cursor, so a deep page costs one call per page.
            listing = await s.temporal.list_schedules(page_size=20)
            await listing.fetch_next_page()

        await jobs_page(1)  # warm-up
        chronos_pages = await page_latencies(pages, n, jobs_page)
        bare_pages = await page_latencies(pages, n, bare_page)
        await api.aclose()
    server = "in-memory" if in_memory else "file"
    title = f"Schedules: {n} recurring jobs, {CLIENTS} clients, {server} dev server — {machine()}"
    rows = [
        [
            "bare create_schedule",
            n / bare_s,
            percentile(bare_lat, 50) * 1000,
            percentile(bare_lat, 99) * 1000,
            sum(bare_lat) / n * 1000,
            inside["bare"] / n * 1000,
        ],
        [
            "Chronos POST /jobs (cron)",
            n / chronos_s,
            percentile(chronos_lat, 50) * 1000,
            percentile(chronos_lat, 99) * 1000,
            sum(chronos_lat) / n * 1000,
            inside["Chronos"] / n * 1000,
        ],
        [
            "bare list_schedules, page of 20",
            "",
            percentile(bare_pages, 50) * 1000,
            percentile(bare_pages, 99) * 1000,
            "",
            "",
        ],
        [
            "Chronos GET /jobs, page of 20",
            "",
            percentile(chronos_pages, 50) * 1000,
            percentile(chronos_pages, 99) * 1000,
            "",
            "",
        ],
    ]
    columns = ["what", "per s", "p50 ms", "p99 ms", "mean ms", "in Temporal, mean ms"]
    print(table(title, columns, rows))
    print()
    print(cpu_table("creates", cpu, n))
    ratio = chronos_s / bare_s
    print("\n" + verdict("creation time ratio (Chronos ÷ bare)", ratio, 1.2, higher_is_better=False))
    p99 = percentile(chronos_pages, 99) * 1000
    print(verdict("GET /jobs page p99 ms", p99, 100, higher_is_better=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=400, help="recurring jobs and bare schedules (issue: 10,000)")
    parser.add_argument("--pages", type=int, default=100, help="pages fetched for the listing latency")
    parser.add_argument("--in-memory", action="store_true", help="dev server without its file database")
    a = parser.parse_args()
    asyncio.run(main(a.n, a.pages, a.in_memory))
