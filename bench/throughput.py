"""Target 1, end-to-end throughput: N immediate HTTP jobs through the API from 16 concurrent clients until
the target has received every call, against bare Temporal starting the same N workflows from 16 clients.
Rounds alternate bare and Chronos on one server so drift on a noisy machine hits both. Afterwards every
Chronos run must be in the mirror as succeeded with its attempt; how long that took is reported too.

    python -m bench.throughput [-n 300] [--clients 16] [--rounds 2] [--in-memory] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from sqlalchemy import create_engine, text
from temporalio.api.enums.v1 import TimeoutType

from bench.bare import BareCall
from bench.stack import Api, Stack, add_cpu, cpu_table, machine, stack, table, verdict, with_clients
from core.config import Settings
from core.temporal import data_converter

CHECK = text(
    """
    SELECT count(*) FROM run r JOIN job j ON j.id = r.job_id
    WHERE j.name LIKE :prefix AND r.status = 'succeeded' AND r.attempts = 1
      AND EXISTS (SELECT 1 FROM attempt a WHERE a.run_id = r.id AND a.number = 1 AND a.status = 'succeeded')
    """
)

# Runs of a round that are not (yet) recorded as succeeded with their one succeeded attempt, and why.
ODD = text(
    """
    SELECT r.id, r.status, r.attempts, r.error FROM run r JOIN job j ON j.id = r.job_id
    WHERE j.name LIKE :prefix AND NOT (r.status = 'succeeded' AND r.attempts = 1
      AND EXISTS (SELECT 1 FROM attempt a WHERE a.run_id = r.id AND a.number = 1 AND a.status = 'succeeded'))
    """
)
ENDED = text(
    """
    SELECT count(*) FROM run r JOIN job j ON j.id = r.job_id
    WHERE j.name LIKE :prefix AND r.status IN ('succeeded', 'failed', 'cancelled')
    """
)
ATTEMPTS = text("SELECT number, status FROM attempt WHERE run_id = :run_id ORDER BY number")


async def why_retried(s: Stack, run_id: str) -> str:
    """The failure Temporal recorded before an activity's later attempt (a timeout names its kind)."""
    history = await s.temporal.get_workflow_handle(run_id).fetch_history()
    for event in history.events:
        if event.HasField("activity_task_started_event_attributes"):
            started = event.activity_task_started_event_attributes
            if started.attempt > 1 and started.HasField("last_failure"):
                failure = started.last_failure
                timeout = failure.timeout_failure_info.timeout_type
                kind = TimeoutType.Name(timeout) if failure.HasField("timeout_failure_info") else ""
                # Chronos encrypts failure messages: read with the key its processes made in the workdir.
                error = await data_converter(Settings(data_dir=s.workdir)).decode_failure(failure)
                return f"{error} {kind}".strip()
    return "no retried activity in the history"


async def bare_round(s: Stack, tag: str, n: int, clients: int) -> float:
    url = s.target.url(f"/{tag}")
    started = time.time()
    await with_clients(
        n,
        clients,
        lambda i: s.temporal.start_workflow(
            "BareCallWorkflow", BareCall(url), id=f"{tag}-{i}", task_queue="bare"
        ),
    )
    arrivals = await s.target.wait_for(f"/{tag}", n, within=600)
    return max(t for t, _ in arrivals) - started


async def chronos_round(s: Stack, api: Api, tag: str, n: int, clients: int) -> tuple[float, float]:
    """Seconds until the target had every call, and until the mirror had every run succeeded."""
    url = s.target.url(f"/{tag}")
    started = time.time()
    await with_clients(n, clients, lambda i: api.create_job(f"{tag}-{i}", {"type": "immediate"}, url))
    arrivals = await s.target.wait_for(f"/{tag}", n, within=600)
    arrived = max(t for t, _ in arrivals) - started
    engine = create_engine(s.mirror_url)
    try:
        deadline = time.monotonic() + 60
        while True:
            with engine.connect() as conn:
                # Ended first: a run that ends between the two counts must not read as a wrong record.
                ended = int(conn.execute(ENDED, {"prefix": f"{tag}-%"}).scalar_one())
                done = int(conn.execute(CHECK, {"prefix": f"{tag}-%"}).scalar_one())
            if done == n:
                return arrived, time.time() - started
            if ended == n or time.monotonic() > deadline:
                print(f"{tag}: only {done} of {n} runs are recorded as succeeded with attempt 1:")
                with engine.connect() as conn:
                    for run_id, status, attempts, error in conn.execute(ODD, {"prefix": f"{tag}-%"}).all():
                        made = conn.execute(ATTEMPTS, {"run_id": run_id}).all()
                        tried = " ".join(f"{number}:{outcome}" for number, outcome in made)
                        print(f"    {run_id} {status} attempts={attempts} error={error} [{tried}]")
                        if len(made) > 1:
                            print(f"      retried because: {await why_retried(s, run_id)}")
                return arrived, float("nan")
            await asyncio.sleep(0.1)
    finally:
        engine.dispose()


async def history_events(s: Stack, workflow_id: str) -> int:
    """Events in one run's history: each activity and workflow task is a server round trip or more."""
    history = await s.temporal.get_workflow_handle(workflow_id).fetch_history()
    return len(history.events)


async def main(n: int, clients: int, rounds: int, in_memory: bool, postgres: bool) -> None:
    async with stack(in_memory=in_memory, postgres=postgres) as s:
        s.start_bare_worker()
        s.start_chronos_worker()
        api = await s.start_api()
        await s.wait_for_pollers("bare")
        await s.wait_for_pollers("chronos")
        # Warm-up: sandbox imports, connection pools, the SQLite file; not measured.
        await bare_round(s, "warm-bare", clients, clients)
        await chronos_round(s, api, "warm-chronos", clients, clients)
        rows: list[list[object]] = []
        bare_total = chronos_total = 0.0
        cpu: dict[str, dict[str, float]] = {"bare": {}, "Chronos": {}}
        for r in range(1, rounds + 1):
            before = s.cpu_seconds()
            bare = await bare_round(s, f"bare-{r}", n, clients)
            await asyncio.sleep(1)
            middle = s.cpu_seconds()
            chronos, recorded = await chronos_round(s, api, f"chronos-{r}", n, clients)
            await asyncio.sleep(1)
            add_cpu(cpu["bare"], before, middle)
            add_cpu(cpu["Chronos"], middle, s.cpu_seconds())
            bare_total += bare
            chronos_total += chronos
            rows.append([r, bare, n / bare, chronos, n / chronos, recorded, bare / chronos])
        run_id = (await api.http.get("/jobs", params={"q": "chronos-1-0"})).json()["items"][0]["last_run"][
            "id"
        ]
        events = {"bare": await history_events(s, "bare-1-0"), "Chronos": await history_events(s, run_id)}
        await api.aclose()
    ratio = bare_total / chronos_total
    rows.append(
        ["all", bare_total, n * rounds / bare_total, chronos_total, n * rounds / chronos_total, "", ratio]
    )
    store = "PostgreSQL" if postgres else "SQLite"
    title = (
        f"Throughput: {n} immediate HTTP jobs, {clients} clients, {store} mirror, "
        f"{'in-memory' if in_memory else 'file'} dev server — {machine()}"
    )
    header = [
        "round",
        "bare s",
        "bare calls/s",
        "Chronos s",
        "Chronos calls/s",
        "Chronos recorded s",
        "ratio",
    ]
    print(table(title, header, rows))
    print()
    print(cpu_table("runs", cpu, n * rounds, **{"history events/run": events}))
    print("\n" + verdict("ratio (Chronos calls/s ÷ bare calls/s)", ratio, 1.0, higher_is_better=True))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=300, help="jobs per round (issue: any N; default 300)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--in-memory", action="store_true", help="dev server without its file database")
    parser.add_argument("--postgres", action="store_true", help="mirror on the local PostgreSQL")
    a = parser.parse_args()
    asyncio.run(main(a.n, a.clients, a.rounds, a.in_memory, a.postgres))
