"""Target 5, workers: on an I/O-bound target (every call takes 200 ms) two worker processes should give
at least 1.8x the throughput of one. N immediate jobs are submitted through the API while no worker runs,
then k workers start and the rate is counted from the first call to the last one at the target, so
start-up and submission stay out of it. The same is done with bare workers for reference.

Each worker runs `--concurrency` activities at once (default 2, at most 10 calls/s per worker): with the
default of 100 one worker could hold 500 calls/s in flight, far more than this 2-core machine can start,
so the test would measure the CPU, not workers waiting on I/O. At 2, bare Temporal scales 1.99x.

    python -m bench.workers [-n 100] [--concurrency 2] [--delay-ms 200] [--in-memory] [--postgres]
"""

from __future__ import annotations

import argparse
import asyncio

from bench.bare import BareCall
from bench.stack import Api, Stack, machine, stack, table, verdict, with_clients

CLIENTS = 16


async def chronos_rate(s: Stack, api: Api, workers: int, n: int, concurrency: int, delay_ms: int) -> float:
    tag = f"chronos-{workers}w"
    url = s.target.url(f"/{tag}?delay_ms={delay_ms}")
    await with_clients(n, CLIENTS, lambda i: api.create_job(f"{tag}-{i}", {"type": "immediate"}, url))
    return await drain(
        s, tag, n, [f"chronos-worker-{k}" for k in range(workers)], concurrency, s.start_chronos_worker
    )


async def bare_rate(s: Stack, workers: int, n: int, concurrency: int, delay_ms: int) -> float:
    tag = f"bare-{workers}w"
    url = s.target.url(f"/{tag}?delay_ms={delay_ms}")
    await with_clients(
        n,
        CLIENTS,
        lambda i: s.temporal.start_workflow(
            "BareCallWorkflow", BareCall(url), id=f"{tag}-{i}", task_queue="bare"
        ),
    )
    return await drain(
        s, tag, n, [f"bare-worker-{k}" for k in range(workers)], concurrency, s.start_bare_worker
    )


async def drain(s: Stack, tag: str, n: int, names: list[str], concurrency: int, start: object) -> float:
    """Start the workers on the queued runs; calls per second from the first arrival to the last."""
    for name in names:
        start(name, concurrency)  # type: ignore[operator]
    arrivals = sorted(t for t, _ in await s.target.wait_for(f"/{tag}", n, within=600))
    for name in names:
        s.stop(name)
    return (n - 1) / (arrivals[-1] - arrivals[0])


async def main(n: int, concurrency: int, delay_ms: int, in_memory: bool, postgres: bool) -> None:
    async with stack(in_memory=in_memory, postgres=postgres) as s:
        api = await s.start_api()
        rates = {
            ("bare", 1): await bare_rate(s, 1, n, concurrency, delay_ms),
            ("bare", 2): await bare_rate(s, 2, n, concurrency, delay_ms),
            ("Chronos", 1): await chronos_rate(s, api, 1, n, concurrency, delay_ms),
            ("Chronos", 2): await chronos_rate(s, api, 2, n, concurrency, delay_ms),
        }
        await api.aclose()
    ceiling = 1000 / delay_ms * concurrency
    rows = [
        [side, rates[(side, 1)], rates[(side, 2)], rates[(side, 2)] / rates[(side, 1)]]
        for side in ("bare", "Chronos")
    ]
    store = "PostgreSQL" if postgres else "SQLite"
    title = (
        f"Workers: {n} runs against a {delay_ms} ms target, {concurrency} activities per worker "
        f"(at most {ceiling:g} calls/s per worker), {store} mirror — {machine()}"
    )
    print(table(title, ["side", "1 worker calls/s", "2 workers calls/s", "2 ÷ 1"], rows))
    ratio = rates[("Chronos", 2)] / rates[("Chronos", 1)]
    print("\n" + verdict("Chronos 2 workers ÷ 1 worker", ratio, 1.8, higher_is_better=True))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=100, help="runs per measurement")
    parser.add_argument("--concurrency", type=int, default=2, help="activities per worker at once")
    parser.add_argument("--delay-ms", type=int, default=200, help="how long the target takes to answer")
    parser.add_argument("--in-memory", action="store_true", help="dev server without its file database")
    parser.add_argument("--postgres", action="store_true", help="mirror on the local PostgreSQL")
    a = parser.parse_args()
    asyncio.run(main(a.n, a.concurrency, a.delay_ms, a.in_memory, a.postgres))
