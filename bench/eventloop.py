"""Fire times must not block the event loop: one user with 100 jobs on the densest schedules (`* * * * * ?`
in Europe/Berlin and 1-second intervals, all paused so nothing runs) once made one `GET /jobs` take
seconds and stalled `/health` with it, because each listed job's next runs were computed second by second.

Measures p50/p99 of `GET /jobs?limit=100` (one request at a time), of a preview of `* * * * * ?` with
count 100, and of `/health` probed every 20 ms while `--clients` callers request the list back to back;
each against its goal. The service time alone is what counts, so requests run one at a time except for
the concurrent list load of the last figure.

    python -m bench.eventloop [--jobs 100] [--samples 50] [--seconds 5] [--clients 2]
                              [--cron "* * * * * ?"] [--every 1]

`--cron "0 0 3 * * ?" --every 86400` gives the same figures for sparse schedules: what the list costs
whatever the density.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from bench.stack import LeanClient, machine, percentile, stack, table, verdict

# Goals for p99, in milliseconds.
LIST_GOAL, PREVIEW_GOAL, HEALTH_GOAL = 50, 20, 10


async def one_at_a_time(samples: int, what: str, call: Callable[[], Awaitable[int]]) -> list[float]:
    """Latencies of `samples` calls after one warm-up call; any answer but 200 stops the benchmark."""
    latencies = []
    for n in range(samples + 1):
        began = time.perf_counter()
        status = await call()
        if status != 200:
            raise RuntimeError(f"{what} answered {status}")
        if n:
            latencies.append(time.perf_counter() - began)
    return latencies


async def health_under_load(
    seconds: float,
    clients: int,
    list_jobs: Callable[[], Awaitable[Any]],
    health: Callable[[], Awaitable[int]],
) -> list[float]:
    """`health()` every 20 ms (its own connection) while `clients` callers request the list back to back."""
    stop = asyncio.Event()
    lists = 0

    async def lister() -> None:
        nonlocal lists
        while not stop.is_set():
            await list_jobs()
            lists += 1

    latencies = []
    loaders = [asyncio.create_task(lister()) for _ in range(clients)]
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        began = time.perf_counter()
        if (status := await health()) != 200:
            raise RuntimeError(f"GET /health answered {status}")
        latencies.append(time.perf_counter() - began)
        await asyncio.sleep(0.02)
    stop.set()
    await asyncio.gather(*loaders)
    print(f"{lists} list requests ran beside {len(latencies)} /health probes")
    return latencies


async def main(jobs: int, samples: int, seconds: float, clients: int, cron: str, every: int) -> None:
    dense_cron = {"type": "cron", "cron": cron, "timezone": "Europe/Berlin"}
    dense_interval = {"type": "interval", "every_seconds": every}
    async with stack(in_memory=True) as s:
        api = await s.start_api()
        url = s.target.url("/never")
        for n in range(jobs):
            schedule = dense_cron if n % 2 == 0 else dense_interval
            body = {"name": f"dense {n}", "schedule": schedule, "paused": True}
            answer = await api.http.post("/jobs", json={**body, "action": {"type": "http", "url": url}})
            if answer.status_code != 201:
                raise RuntimeError(f"POST /jobs answered {answer.status_code}: {answer.text[:300]}")

        def list_jobs() -> Awaitable[int]:
            return api.get("/jobs", {"limit": 100})

        def preview() -> Awaitable[int]:
            return api.post("/schedules/preview", {"schedule": dense_cron, "count": 100})

        async def health() -> int:
            status, _ = await probe.request("GET", "/health")
            return status

        probe = LeanClient(api.base)
        listed = await one_at_a_time(samples, "GET /jobs", list_jobs)
        previewed = await one_at_a_time(samples, "POST /schedules/preview", preview)
        alone = await one_at_a_time(samples, "GET /health", health)
        probed = await health_under_load(seconds, clients, list_jobs, health)
        probe.close()
        figures = [
            (f"GET /jobs?limit=100 ({jobs} jobs: `{cron}`, every {every} s)", listed, LIST_GOAL),
            (f"POST /schedules/preview, `{cron}`, count 100", previewed, PREVIEW_GOAL),
            ("GET /health alone (the machine's floor)", alone, HEALTH_GOAL),
            (f"GET /health while {clients} clients list", probed, HEALTH_GOAL),
        ]
        await api.aclose()
    rows = [
        [what, len(ms), percentile(ms, 50) * 1000, percentile(ms, 99) * 1000, goal]
        for what, ms, goal in figures
    ]
    print(
        table(
            f"Fire times and the event loop — {machine()}",
            ["request", "n", "p50 ms", "p99 ms", "goal p99 ms"],
            rows,
        )
    )
    print()
    for what, ms, goal in figures:
        print(verdict(f"{what}: p99 ms", percentile(ms, 99) * 1000, goal, higher_is_better=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=100, help="half every-second crons, half 1 s intervals")
    parser.add_argument("--samples", type=int, default=50, help="requests per sequential figure")
    parser.add_argument("--seconds", type=float, default=5, help="how long /health is probed under load")
    parser.add_argument("--clients", type=int, default=2, help="concurrent list callers while probing")
    parser.add_argument("--cron", default="* * * * * ?", help="the cron half's expression (Europe/Berlin)")
    parser.add_argument("--every", type=int, default=1, help="the interval half's every_seconds")
    a = parser.parse_args()
    asyncio.run(main(a.jobs, a.samples, a.seconds, a.clients, a.cron, a.every))
