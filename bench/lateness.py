"""Target 2, fire lateness: when the target receives a scheduled call minus the second it was scheduled
for, p99, for 50 Chronos cron jobs firing every 10 s against 50 bare Temporal schedules that start the
bare workflow on the same server. The bare schedules fire 5 s after Chronos's so neither burst queues
behind the other. The scheduled second is read from the workflow id, which Temporal suffixes with it and
both sides send as the `Idempotency-Key` header. `--burst N` adds the "many schedules due in the same
minute" case: N jobs and N bare schedules due once a minute (Chronos at :00, bare at :30), one fire each.
`--live N` then makes N more jobs through the API that stay quiet during the run (a yearly cron) and
measures the same 50 again: the lateness on a server holding N schedules against the empty one.
`--in-flight M` then starts M immediate jobs whose call the target holds, and prints the resident memory
(RSS) of the Chronos API and worker (and the dev server) empty, with the N schedules, and with the M runs.

    python -m bench.lateness [--jobs 50] [--seconds 60] [--burst 0] [--live 0] [--in-flight 0] [--in-memory]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from datetime import datetime
from pathlib import Path

from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleCalendarSpec,
    ScheduleRange,
    ScheduleSpec,
)

from bench.bare import BareCall
from bench.stack import Api, Stack, machine, percentile, stack, table, verdict, with_clients

FIRE_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)$")
CLIENTS = 16
QUIET_CRON = "0 0 3 1 1 *"  # the live schedules of --live: once a year, never during a run
HOLD_MS = 600_000  # how long the target holds each call of --in-flight: the runs stay in flight
PROCESSES = ("api", "chronos-worker", "temporal")  # whose RSS is printed


def every_ten_seconds(offset: int) -> ScheduleSpec:
    return ScheduleSpec(
        calendars=[
            ScheduleCalendarSpec(
                second=[ScheduleRange(offset, 59, 10)],
                minute=[ScheduleRange(0, 59)],
                hour=[ScheduleRange(0, 23)],
            )
        ]
    )


def once_a_minute(second: int) -> ScheduleSpec:
    return ScheduleSpec(
        calendars=[
            ScheduleCalendarSpec(
                second=[ScheduleRange(second)], minute=[ScheduleRange(0, 59)], hour=[ScheduleRange(0, 23)]
            )
        ]
    )


async def bare_schedules(s: Stack, tag: str, count: int, spec: ScheduleSpec) -> None:
    url = s.target.url(f"/{tag}")

    async def create(i: int) -> None:
        action = ScheduleActionStartWorkflow(
            "BareCallWorkflow", BareCall(url), id=f"{tag}-{i}", task_queue="bare"
        )
        await s.temporal.create_schedule(f"{tag}-{i}", Schedule(action=action, spec=spec))

    await with_clients(count, CLIENTS, create)


async def chronos_jobs(api: Api, tag: str, count: int, cron: str, url: str) -> None:
    schedule = {"type": "cron", "cron": cron}
    await with_clients(count, CLIENTS, lambda i: api.create_job(f"{tag}-{i}", schedule, url))


async def lateness(s: Stack, tag: str, since: float, until: float) -> list[float]:
    """Seconds late of each call whose scheduled second lies in [since, until)."""
    late = []
    for arrived, key in await s.target.arrivals(f"/{tag}"):
        found = FIRE_TIME.search(key)
        if found is None:
            continue
        due = datetime.fromisoformat(found.group(1).replace("Z", "+00:00")).timestamp()
        if since <= due < until:
            late.append(arrived - due)
    return late


def row(what: str, late: list[float], expected: int) -> list[object]:
    return [
        what,
        len(late),
        expected,
        percentile(late, 50),
        percentile(late, 99),
        max(late, default=float("nan")),
    ]


def rss_mb(s: Stack) -> dict[str, float]:
    """Resident memory (VmRSS) of the stack's processes in MB, from /proc."""
    sizes = {}
    for name, proc in s.children.items():
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                sizes[name] = int(line.split()[1]) / 1024
    return sizes


async def window(s: Stack, seconds: int, jobs: int, what: str) -> list[list[object]]:
    """The lateness of the every-10-s schedules in the next whole window of `seconds`."""
    since = (int(time.time()) // 10 + 1) * 10 + 10
    until = since + seconds
    await asyncio.sleep(until + 15 - time.time())  # the last bare fire is at until - 5
    fires = seconds // 10 * jobs
    return [
        row(f"bare, every 10 s, {what}", await lateness(s, "bare-cron", since + 5, until + 5), fires),
        row(f"Chronos, every 10 s, {what}", await lateness(s, "cron", since, until), fires),
    ]


async def with_live(
    s: Stack, api: Api, jobs: int, seconds: int, live: int, in_flight: int
) -> tuple[list[list[object]], list[list[object]], float]:
    """`--live` and `--in-flight`: the every-10-s lateness with `live` quiet schedules made through the
    API, and RSS empty, with them, and with `in_flight` held runs; the seconds the creates took."""
    memory: list[tuple[str, dict[str, float]]] = [("empty (the every-10-s schedules only)", rss_mb(s))]
    retried = 0

    async def submit(job: dict[str, object]) -> None:
        """Not measured: a 503 (Temporal slower than the API's 5 s on a busy machine) leaves no job
        behind, so it is sent again."""
        nonlocal retried
        for _ in range(10):
            answer = await api.http.post("/jobs", json=job)
            if answer.status_code != 503:
                break
            retried += 1
        if answer.status_code != 201:
            raise RuntimeError(f"POST /jobs answered {answer.status_code}: {answer.text[:500]}")

    quiet = {"type": "cron", "cron": QUIET_CRON}
    action = {"type": "http", "method": "POST", "url": s.target.url("/live")}
    began = time.perf_counter()
    await with_clients(
        live, CLIENTS, lambda i: submit({"name": f"live-{i}", "schedule": quiet, "action": action})
    )
    took = time.perf_counter() - began
    memory.append((f"{live} more schedules", rss_mb(s)))
    rows = await window(s, seconds, jobs, f"{live} live")
    if in_flight:
        url = s.target.url(f"/held?delay_ms={HOLD_MS}")
        held = {"type": "http", "method": "POST", "url": url, "timeout_seconds": HOLD_MS / 1000 + 60}
        now = {"type": "immediate"}
        await with_clients(
            in_flight, CLIENTS, lambda i: submit({"name": f"held-{i}", "schedule": now, "action": held})
        )
        running = 'ExecutionStatus = "Running" AND ChronosTrigger = "immediate"'
        deadline = time.monotonic() + 120
        while (await s.temporal.count_workflows(running)).count < in_flight:
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {in_flight} runs in flight after 120 s")
            await asyncio.sleep(1)
        await s.target.wait_for("/held", 1, 60)
        await asyncio.sleep(10)  # the worker has taken up what its slots allow
        memory.append((f"{live} schedules + {in_flight} runs in flight", rss_mb(s)))
    mb = [[what, *(sizes.get(name, float("nan")) for name in PROCESSES)] for what, sizes in memory]
    if retried:
        print(f"{retried} POST /jobs answered 503 (Temporal did not answer in 5 s) and were sent again")
    return rows, mb, took


async def main(jobs: int, seconds: int, burst: int, live: int, in_flight: int, in_memory: bool) -> None:
    live_rows: list[list[object]] = []
    memory: list[list[object]] = []
    took = 0.0
    async with stack(in_memory=in_memory) as s:
        s.start_bare_worker()
        s.start_chronos_worker()
        api = await s.start_api()
        await s.wait_for_pollers("bare")
        await s.wait_for_pollers("chronos")
        await chronos_jobs(api, "cron", jobs, "*/10 * * * * *", s.target.url("/cron"))
        await bare_schedules(s, "bare-cron", jobs, every_ten_seconds(5))
        since = (int(time.time()) // 10 + 1) * 10 + 10  # the first whole ten seconds after all exist
        until = since + seconds
        await asyncio.sleep(until + 15 - time.time())  # the last bare fire is at until - 5
        fires = seconds // 10 * jobs
        rows = [
            row("bare, every 10 s", await lateness(s, "bare-cron", since + 5, until + 5), fires),
            row("Chronos, every 10 s", await lateness(s, "cron", since, until), fires),
        ]
        if burst:
            await chronos_jobs(api, "burst", burst, "0 * * * * *", s.target.url("/burst"))
            await bare_schedules(s, "bare-burst", burst, once_a_minute(30))
            minute = (int(time.time()) // 60 + 1) * 60
            await asyncio.sleep(minute + 30 + 30 - time.time())
            rows.append(
                row(
                    f"bare, {burst} due at :30",
                    await lateness(s, "bare-burst", minute + 30, minute + 31),
                    burst,
                )
            )
            rows.append(
                row(f"Chronos, {burst} due at :00", await lateness(s, "burst", minute, minute + 1), burst)
            )
        if live:
            live_rows, memory, took = await with_live(s, api, jobs, seconds, live, in_flight)
        await api.aclose()
    title = f"Fire lateness, {'in-memory' if in_memory else 'file'} dev server — {machine()}"
    print(table(title, ["schedules", "fires seen", "fires due", "p50 s", "p99 s", "max s"], rows))
    ratio = float(rows[1][4]) / float(rows[0][4])  # type: ignore[arg-type]
    print("\n" + verdict("p99 ratio (Chronos ÷ bare)", ratio, 1.0, higher_is_better=False))
    if burst:
        ratio = float(rows[3][4]) / float(rows[2][4])  # type: ignore[arg-type]
        print(verdict("burst p99 ratio (Chronos ÷ bare)", ratio, 1.0, higher_is_better=False))
    if live:
        title = f"With {live} live schedules (made through the API in {took:.0f} s, {live / took:.3g}/s)"
        print(
            "\n"
            + table(title, ["schedules", "fires seen", "fires due", "p50 s", "p99 s", "max s"], live_rows)
        )
        header = ["Chronos RSS", "API MB", "worker MB", "dev server MB"]
        print("\n" + table("Resident memory (RSS)", header, memory))
        bare = float(live_rows[0][4]) / float(rows[0][4])  # type: ignore[arg-type]
        print(f"\n(bare p99 with {live} live ÷ empty = {bare:.2f})")
        growth = float(live_rows[1][4]) / float(rows[1][4])  # type: ignore[arg-type]
        print(verdict(f"Chronos p99 with {live} live ÷ empty", growth, 1.1, higher_is_better=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=50, help="cron jobs (and bare schedules) every 10 s")
    parser.add_argument("--seconds", type=int, default=60, help="measured window")
    parser.add_argument("--burst", type=int, default=0, help="schedules due in one minute (issue: 1,000)")
    parser.add_argument("--live", type=int, default=0, help="quiet schedules then made (target: 10,000)")
    parser.add_argument(
        "--in-flight", type=int, default=0, help="held runs then started, for RSS (target: 1,000)"
    )
    parser.add_argument("--in-memory", action="store_true", help="dev server without its file database")
    a = parser.parse_args()
    asyncio.run(main(a.jobs, a.seconds, a.burst, a.live, a.in_flight, a.in_memory))
