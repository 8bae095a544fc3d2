"""Target 2, fire lateness: when the target receives a scheduled call minus the second it was scheduled
for, p99, for 50 Chronos cron jobs firing every 10 s against 50 bare Temporal schedules that start the
bare workflow on the same server. The bare schedules fire 5 s after Chronos's so neither burst queues
behind the other. The scheduled second is read from the workflow id, which Temporal suffixes with it and
both sides send as the `Idempotency-Key` header. `--burst N` adds the "many schedules due in the same
minute" case: N jobs and N bare schedules due once a minute (Chronos at :00, bare at :30), one fire each.

    python -m bench.lateness [--jobs 50] [--seconds 60] [--burst 0] [--in-memory]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from datetime import datetime

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


async def main(jobs: int, seconds: int, burst: int, in_memory: bool) -> None:
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
        await api.aclose()
    title = f"Fire lateness, {'in-memory' if in_memory else 'file'} dev server — {machine()}"
    print(table(title, ["schedules", "fires seen", "fires due", "p50 s", "p99 s", "max s"], rows))
    ratio = float(rows[1][4]) / float(rows[0][4])  # type: ignore[arg-type]
    print("\n" + verdict("p99 ratio (Chronos ÷ bare)", ratio, 1.1, higher_is_better=False))
    if burst:
        ratio = float(rows[3][4]) / float(rows[2][4])  # type: ignore[arg-type]
        print(verdict("burst p99 ratio (Chronos ÷ bare)", ratio, 1.2, higher_is_better=False))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=50, help="cron jobs (and bare schedules) every 10 s")
    parser.add_argument("--seconds", type=int, default=60, help="measured window")
    parser.add_argument("--burst", type=int, default=0, help="schedules due in one minute (issue: 1,000)")
    parser.add_argument("--in-memory", action="store_true", help="dev server without its file database")
    a = parser.parse_args()
    asyncio.run(main(a.jobs, a.seconds, a.burst, a.in_memory))
