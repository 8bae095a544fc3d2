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

`--once N` makes N one-time jobs and N one-action bare schedules all due in the same second (`--spread`:
over one minute), both sides at the same times (`--apart`: Chronos's in one minute, bare's in the one two
minutes later, so that each side's N, not both sides' 2N, meet Temporal's start rate limit). After each
window the benchmark waits for the fires still on their way, and splits each fire's lateness at its
workflow's start: Temporal's scheduler, then the worker.

    python -m bench.lateness [--jobs 50] [--seconds 60] [--burst 0] [--once 0 [--spread] [--apart]] [--live 0]
        [--settle 0] [--in-flight 0] [--in-memory] [--start-rps R] [--sqlite-pragma journal_mode=wal ...]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleCalendarSpec,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
)
from temporalio.service import RPCError

from bench.bare import BareCall
from bench.stack import Api, Stack, machine, percentile, stack, table, verdict, with_clients
from core.payloads import RUN_WORKFLOW
from core.reconcile import RECONCILE_SCHEDULE_ID

FIRE_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)$")
CLIENTS = 16
QUIET_CRON = "0 0 3 1 1 *"  # the live schedules of --live: once a year, never during a run
HOLD_MS = 600_000  # how long the target holds each call of --in-flight: the runs stay in flight
PROCESSES = ("api", "chronos-worker", "temporal")  # whose RSS is printed
# Temporal's scheduler starts at most this many workflows a second in a namespace, every schedule's together.
LATE_WAIT = 180  # the longest a window waits for its late fires: any not in by then count as lost
# --once: seconds after the creates for Temporal's schedulers to take their first task, and per schedule
# (on this 2-core machine 2,000 new schedulers took over 2 minutes to take theirs).
SCHEDULER_MARGIN = 90
SCHEDULER_MARGIN_EACH = 0.1
# The benchmark's own visibility listings of every run (thousands, on a dev server still firing): past the
# SDK's default deadline on a slow machine (a run at 16:38 UTC on the AMD EPYC VM stopped there).
LISTING = timedelta(seconds=120)
ONCE_WAIT = 600  # --once: how long after the due minute a call may arrive before it counts as lost
APART = 120  # --once --apart: seconds between Chronos's due minute and bare's
START_RPS = "worker.schedulerNamespaceStartWorkflowRPS"


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


def one_second(at: float) -> ScheduleSpec:
    """A calendar matching the one whole second `at` (UTC), as a one-time Chronos job's schedule has."""
    t = datetime.fromtimestamp(at, UTC)
    one = ScheduleCalendarSpec(
        second=[ScheduleRange(t.second)],
        minute=[ScheduleRange(t.minute)],
        hour=[ScheduleRange(t.hour)],
        day_of_month=[ScheduleRange(t.day)],
        month=[ScheduleRange(t.month)],
        year=[ScheduleRange(t.year)],
    )
    return ScheduleSpec(calendars=[one], time_zone_name="UTC")


async def bare_schedules(s: Stack, tag: str, count: int, spec: ScheduleSpec) -> None:
    await with_clients(count, CLIENTS, lambda i: bare_schedule(s, tag, i, spec))


async def bare_schedule(s: Stack, tag: str, i: int, spec: ScheduleSpec, once: bool = False) -> None:
    """Bare schedule `i` of `tag`; `once`: one action, as a one-time Chronos job's schedule is limited to."""
    action = ScheduleActionStartWorkflow(
        "BareCallWorkflow", BareCall(s.target.url(f"/{tag}")), id=f"{tag}-{i}", task_queue="bare"
    )
    state = ScheduleState(limited_actions=once, remaining_actions=1 if once else 0)
    await s.temporal.create_schedule(f"{tag}-{i}", Schedule(action=action, spec=spec, state=state))


async def chronos_jobs(api: Api, tag: str, count: int, cron: str, url: str) -> None:
    schedule = {"type": "cron", "cron": cron}
    await with_clients(count, CLIENTS, lambda i: api.create_job(f"{tag}-{i}", schedule, url))


RETRIED = [0]  # POST /jobs sent again after a 503


async def submit(api: Api, job: dict[str, object]) -> None:
    """Not measured: a 503 (Temporal slower than the API's 5 s on a busy machine) leaves no job behind,
    so it is sent again."""
    for _ in range(10):
        answer = await api.http.post("/jobs", json=job)
        if answer.status_code != 503:
            break
        RETRIED[0] += 1
    if answer.status_code != 201:
        raise RuntimeError(f"POST /jobs answered {answer.status_code}: {answer.text[:500]}")


def due_at(start: float, i: int, count: int, spread: bool) -> float:
    """The whole second fire `i` of `count` is due: all at `start`, or spread evenly over its minute."""
    return start + (i * 60 // count if spread else 0)


async def one_time(
    s: Stack, api: Api, count: int, spread: bool, apart: bool
) -> tuple[list[list[object]], str]:
    """`--once N`: N one-time Chronos jobs (`{"type": "once"}`) and N bare schedules with the same one-second
    calendar and a single action, due at the same times: all at the first second of one minute, or with
    `spread` one every 60/N s of it. Both sides fire together because Temporal's scheduler starts at most
    `worker.schedulerNamespaceStartWorkflowRPS` workflows a second in the namespace, both sides' together:
    a burst's tail would otherwise delay whichever side came second. `apart`: bare's fire two minutes after
    Chronos's instead, so each side's N alone meet that limit (1,000 spread over a minute stay under 30 a
    second; 2,000 do not), and Chronos's tail has two minutes to clear first."""
    # The first second is far enough ahead for the creates, at the rate 32 quiet ones were made.
    quiet = {"type": "cron", "cron": QUIET_CRON}
    warm = {"type": "http", "method": "POST", "url": s.target.url("/warm")}
    began = time.perf_counter()
    await with_clients(
        32, CLIENTS, lambda i: submit(api, {"name": f"warm-{i}", "schedule": quiet, "action": warm})
    )
    rate = 32 / (time.perf_counter() - began)
    margin = SCHEDULER_MARGIN + 2 * count * SCHEDULER_MARGIN_EACH
    start = (int(time.time() + 1.5 * count / rate + margin) // 60 + 1) * 60
    bare_start = start + (APART if apart else 0)

    async def chronos_job(i: int) -> None:
        at = datetime.fromtimestamp(due_at(start, i, count, spread), UTC).isoformat()
        action = {"type": "http", "method": "POST", "url": s.target.url("/once")}
        await submit(api, {"name": f"once-{i}", "schedule": {"type": "once", "run_at": at}, "action": action})

    async def either(n: int) -> None:
        """Chronos's and bare's made alternately: a schedule's fire times count from its scheduler's first
        workflow task, which Temporal runs in the order the schedules were made."""
        i = n // 2
        if n % 2:
            at = one_second(due_at(bare_start, i, count, spread))
            await bare_schedule(s, "bare-once", i, at, once=True)
        else:
            await chronos_job(i)

    await with_clients(2 * count, CLIENTS, either)
    if time.time() > start:
        raise RuntimeError(
            "the one-time jobs were created after they were due: try again on a quieter machine"
        )
    # Temporal's scheduler counts a schedule's times from its first workflow task, not from its create:
    # a one-time schedule whose first task runs after its second never fires. A describe is a query,
    # answered after that task: the last ones made say whether the schedulers were ready in time.
    late_start = []
    for schedule in [f"bare-once-{i}" for i in range(count - 8, count)]:
        with contextlib.suppress(RPCError):  # a query may time out on a busy server: then it is not known
            described = await s.temporal.get_schedule_handle(schedule).describe()
            late_start.append(described.info.created_at.timestamp() - bare_start)
    if late_start:
        print(f"the last bare schedulers made started {max(late_start):+.1f} s from the due second")
    for tag, first in (("once", start), ("bare-once", bare_start)):
        try:
            await s.target.wait_for(f"/{tag}", count, first + ONCE_WAIT - time.time())
        except TimeoutError as exc:
            print(exc)
    await asyncio.sleep(10)  # a call sent twice would have arrived by now
    how = "spread over a minute" if spread else "due in the same second"
    if apart:
        how += ", each side in its own minute"
    rows, doubled = [], []
    for what, tag, first in (("bare", "bare-once", bare_start), ("Chronos", "once", start)):
        arrived = await s.target.arrivals(f"/{tag}")
        keys = [key for _, key in arrived]
        doubled.append(f"{what} {len(keys) - len(set(keys))}")
        rows.append(row(f"{what}, {count} one-time {how}", await lateness(s, tag, first, first + 60), count))
    return rows, f"calls that arrived twice: {', '.join(doubled)}"


def nominal(workflow_id: str) -> float | None:
    """The scheduled second Temporal appended to a scheduled workflow's id."""
    found = FIRE_TIME.search(workflow_id)
    if found is None:
        return None
    return datetime.fromisoformat(found.group(1).replace("Z", "+00:00")).timestamp()


async def lateness(s: Stack, tag: str, since: float, until: float) -> list[float]:
    """Seconds late of each call whose scheduled second lies in [since, until)."""
    return [late for late, _ in await fires(s, tag, since, until)]


async def fires(s: Stack, tag: str, since: float, until: float) -> list[tuple[float, str]]:
    """(seconds late, workflow id) of each call whose scheduled second lies in [since, until)."""
    late = []
    for arrived, key in await s.target.arrivals(f"/{tag}"):
        due = nominal(key)
        if due is not None and since <= due < until:
            late.append((arrived - due, key))
    return late


async def stages(s: Stack, workflow_type: str, fired: list[tuple[float, str]]) -> list[list[float]]:
    """Where each fire's lateness went: nominal second → its workflow execution started (Temporal's start
    time: the scheduler's timer, its workflow task, its start rate limit, the start) → the call arrived (the
    run's first workflow task, its activity's dispatch to a worker, the call); seconds, one list a stage."""
    wanted = {key for _, key in fired}
    started_at = {
        wf.id: wf.start_time.timestamp()
        async for wf in s.temporal.list_workflows(f'WorkflowType = "{workflow_type}"', rpc_timeout=LISTING)
        if wf.id in wanted
    }
    split: list[list[float]] = [[], []]
    for late, key in fired:
        due = nominal(key)
        if due is not None and key in started_at:
            split[0].append(started_at[key] - due)
            split[1].append(due + late - started_at[key])
    return split


async def not_started(s: Stack, bare: bool) -> list[int]:
    """[fires skipped by the overlap policy, fires missed by the catch-up window] of one side's schedules
    since they were made (Temporal's counts; both sides keep the default overlap policy `skip`, so a fire
    due while the previous run of its schedule is still open is dropped, not late)."""
    counts = [0, 0]
    # A schedule next due more than a day from now was never due in this run (the `--live` ones): with
    # 10,000 of them, describing each took longer than the run.
    quiet = datetime.now(UTC) + timedelta(days=1)
    async for listed in await s.temporal.list_schedules(rpc_timeout=LISTING):
        if listed.id.startswith("bare-") != bare or listed.id == RECONCILE_SCHEDULE_ID:
            continue
        upcoming = listed.info.next_action_times if listed.info else []
        if upcoming and min(upcoming) > quiet:
            continue
        with contextlib.suppress(RPCError):
            info = (await s.temporal.get_schedule_handle(listed.id).describe()).info
            counts[0] += info.num_actions_skipped_overlap
            counts[1] += info.num_actions_missed_catchup_window
    return counts


async def all_in(s: Stack, windows: Iterable[tuple[str, float, float]], due: int) -> None:
    """Until every fire due in each (tag, since, until) has arrived, or for LATE_WAIT s: a fire later than
    a fixed wait would otherwise be left out of the percentiles, looking lost rather than late."""
    deadline = time.monotonic() + LATE_WAIT
    for tag, since, until in windows:
        while len(await lateness(s, tag, since, until)) < due:
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(1)


def stage_rows(what: str, split: list[list[float]]) -> list[list[object]]:
    names = ["nominal → workflow starts", "workflow starts → call arrives"]
    return [
        [
            f"{what}: {name}",
            len(part),
            percentile(part, 50),
            percentile(part, 99),
            max(part, default=float("nan")),
        ]
        for name, part in zip(names, split, strict=True)
    ]


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


async def cores_during(s: Stack, since: float, until: float) -> dict[str, float]:
    """The cores each process used from `since` to `until` (both ahead): where a window's time went."""
    await asyncio.sleep(since - time.time())
    before = s.cpu_seconds()
    await asyncio.sleep(until - time.time())
    after = s.cpu_seconds()
    return {name: (after[name] - before.get(name, 0.0)) / (until - since) for name in after}


async def window(s: Stack, seconds: int, jobs: int, what: str) -> tuple[list[list[object]], dict[str, float]]:
    """The lateness of the every-10-s schedules in the next whole window of `seconds`, and the cores each
    process used during it."""
    since = (int(time.time()) // 10 + 1) * 10 + 10
    until = since + seconds
    fires = seconds // 10 * jobs
    cores = await cores_during(s, since, until)
    await asyncio.sleep(until + 15 - time.time())  # the last bare fire is at until - 5
    await all_in(s, (("bare-cron", since + 5, until + 5), ("cron", since, until)), fires)
    rows = []
    for side, tag, workflow_type, first in (
        ("bare", "bare-cron", "BareCallWorkflow", since + 5),
        ("Chronos", "cron", RUN_WORKFLOW, since),
    ):
        late = await lateness(s, tag, first, first + seconds)
        rows.append(row(f"{side}, every 10 s, {what}", late, fires))
        if len(late) < fires:
            await why_missing(s, side, workflow_type, first, first + seconds, fires - len(late))
    return rows, cores


async def why_missing(
    s: Stack, side: str, workflow_type: str, since: float, until: float, missing: int
) -> None:
    """Say where fires that never reached the target stopped: never started by Temporal's scheduler
    (skipped or missed by its counts since the schedules were made), or started and not finished."""
    started: dict[str, int] = {}
    async for wf in s.temporal.list_workflows(f'WorkflowType = "{workflow_type}"', rpc_timeout=LISTING):
        due = nominal(wf.id)
        if due is not None and since <= due < until:
            status = wf.status.name if wf.status is not None else "UNKNOWN"
            started[status] = started.get(status, 0) + 1
    skipped, missed = await not_started(s, bare=side == "bare")
    print(
        f"{side}: {missing} fires due in the window never reached the target; workflows Temporal started "
        f"for the window's fires by status: {started}; since the schedules were made, fires skipped by "
        f"overlap {skipped}, missed by the catch-up window {missed}"
    )


async def with_live(
    s: Stack, api: Api, jobs: int, seconds: int, live: int, in_flight: int, settle: float = 0
) -> tuple[list[list[object]], list[list[object]], float, dict[str, float]]:
    """`--live` and `--in-flight`: the every-10-s lateness with `live` quiet schedules made through the
    API (`settle` seconds after the last was made), and RSS empty, with them, and with `in_flight` held
    runs; the seconds the creates took; the cores each process used during the window."""
    memory: list[tuple[str, dict[str, float]]] = [("empty (the every-10-s schedules only)", rss_mb(s))]
    retried = RETRIED[0]

    quiet = {"type": "cron", "cron": QUIET_CRON}
    action = {"type": "http", "method": "POST", "url": s.target.url("/live")}
    began = time.perf_counter()
    await with_clients(
        live, CLIENTS, lambda i: submit(api, {"name": f"live-{i}", "schedule": quiet, "action": action})
    )
    took = time.perf_counter() - began
    memory.append((f"{live} more schedules", rss_mb(s)))
    await asyncio.sleep(settle)
    rows, cores = await window(s, seconds, jobs, f"{live} live")
    if in_flight:
        url = s.target.url(f"/held?delay_ms={HOLD_MS}")
        held = {"type": "http", "method": "POST", "url": url, "timeout_seconds": HOLD_MS / 1000 + 60}
        now = {"type": "immediate"}
        await with_clients(
            in_flight, CLIENTS, lambda i: submit(api, {"name": f"held-{i}", "schedule": now, "action": held})
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
    if retried := RETRIED[0] - retried:
        print(f"{retried} POST /jobs answered 503 (Temporal did not answer in 5 s) and were sent again")
    return rows, mb, took, cores


async def main(
    jobs: int,
    seconds: int,
    burst: int,
    live: int,
    in_flight: int,
    in_memory: bool,
    once: int = 0,
    spread: bool = False,
    apart: bool = False,
    start_rps: float | None = None,
    pragmas: Sequence[str] = (),
    settle: float = 0,
) -> None:
    live_rows: list[list[object]] = []
    once_rows: list[list[object]] = []
    doubled = ""
    memory: list[list[object]] = []
    took = 0.0
    empty_cores: dict[str, float] = {}
    live_cores: dict[str, float] = {}
    dynamic = {} if start_rps is None else {START_RPS: str(start_rps)}
    async with stack(in_memory=in_memory, dynamic_config=dynamic, sqlite_pragmas=pragmas) as s:
        s.start_bare_worker()
        s.start_chronos_worker()
        api = await s.start_api()
        await s.wait_for_pollers("bare")
        await s.wait_for_pollers("chronos")
        await chronos_jobs(api, "cron", jobs, "*/10 * * * * *", s.target.url("/cron"))
        await bare_schedules(s, "bare-cron", jobs, every_ten_seconds(5))
        since = (int(time.time()) // 10 + 1) * 10 + 10  # the first whole ten seconds after all exist
        until = since + seconds
        due = seconds // 10 * jobs
        empty_cores = await cores_during(s, since, until)
        await asyncio.sleep(until + 15 - time.time())  # the last bare fire is at until - 5
        await all_in(s, (("bare-cron", since + 5, until + 5), ("cron", since, until)), due)
        bare_fired = await fires(s, "bare-cron", since + 5, until + 5)
        chronos_fired = await fires(s, "cron", since, until)
        rows = [
            row("bare, every 10 s", [late for late, _ in bare_fired], due),
            row("Chronos, every 10 s", [late for late, _ in chronos_fired], due),
        ]
        split = stage_rows("bare", await stages(s, "BareCallWorkflow", bare_fired))
        split += stage_rows("Chronos", await stages(s, RUN_WORKFLOW, chronos_fired))
        dropped = [await not_started(s, bare=True), await not_started(s, bare=False)]
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
        if once:
            once_rows, doubled = await one_time(s, api, once, spread, apart)
        if live:
            live_rows, memory, took, live_cores = await with_live(
                s, api, jobs, seconds, live, in_flight, settle
            )
        await api.aclose()
    server = f"{'in-memory' if in_memory else 'file'} dev server"
    if start_rps is not None:
        server += f" with {START_RPS}={start_rps:g}"
    if pragmas and not in_memory:
        server += f" with PRAGMA {', '.join(pragmas)}"
    title = f"Fire lateness, {server} — {machine()}"
    print(table(title, ["schedules", "fires seen", "fires due", "p50 s", "p99 s", "max s"], rows))
    ratio = float(rows[1][4]) / float(rows[0][4])  # type: ignore[arg-type]
    print("\n" + verdict("p99 ratio (Chronos ÷ bare)", ratio, 1.0, higher_is_better=False))
    header = ["every 10 s, stage", "fires", "p50 s", "p99 s", "max s"]
    print("\n" + table("Where the lateness goes (the every-10-s fires)", header, split))
    print(
        "fires not started (skipped by overlap policy `skip` / missed the catch-up window), since made: "
        f"bare {dropped[0][0]} / {dropped[0][1]}, Chronos {dropped[1][0]} / {dropped[1][1]}"
    )
    if once:
        header = ["schedules", "fires seen", "fires due", "p50 s", "p99 s", "max s"]
        print("\n" + table(f"{once} one-time jobs due in one minute — {machine()}", header, once_rows))
        print(doubled)
        ratio = float(once_rows[1][4]) / float(once_rows[0][4])  # type: ignore[arg-type]
        print(verdict("one-time p99 ratio (Chronos ÷ bare)", ratio, 1.0, higher_is_better=False))
    if burst:
        ratio = float(rows[3][4]) / float(rows[2][4])  # type: ignore[arg-type]
        print(verdict("burst p99 ratio (Chronos ÷ bare)", ratio, 1.0, higher_is_better=False))
    if live:
        title = f"With {live} live schedules (made through the API in {took:.0f} s, {live / took:.3g}/s)"
        print(
            "\n"
            + table(title, ["schedules", "fires seen", "fires due", "p50 s", "p99 s", "max s"], live_rows)
        )
        names = sorted(empty_cores)
        cores = [
            [what, *(used.get(name, 0.0) for name in names)]
            for what, used in (("empty", empty_cores), (f"{live} live", live_cores))
        ]
        print("\n" + table("Cores each process used during the window", ["window", *names], cores))
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
    parser.add_argument(
        "--settle", type=float, default=0, help="seconds between the last --live create and the window"
    )
    parser.add_argument("--in-memory", action="store_true", help="dev server without its file database")
    parser.add_argument("--once", type=int, default=0, help="one-time jobs due in one minute (target: 1,000)")
    parser.add_argument("--spread", action="store_true", help="--once spread over the minute, not one second")
    parser.add_argument("--apart", action="store_true", help="--once: each side in its own minute")
    parser.add_argument(
        "--start-rps", type=float, default=None, help=f"the dev server's {START_RPS} (Temporal's default: 30)"
    )
    parser.add_argument(
        "--sqlite-pragma",
        action="append",
        default=[],
        help="for the file database: journal_mode=wal, synchronous=normal (repeatable)",
    )
    a = parser.parse_args()
    asyncio.run(
        main(
            a.jobs,
            a.seconds,
            a.burst,
            a.live,
            a.in_flight,
            a.in_memory,
            a.once,
            a.spread,
            a.apart,
            a.start_rps,
            a.sqlite_pragma,
            a.settle,
        )
    )
