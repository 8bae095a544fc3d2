"""Bare Temporal, the yardstick: one workflow with one activity that makes the same HTTP call as a Chronos
job, written the way a competent user would without Chronos (a shared pooled httpx client, default worker
settings with the same activity concurrency, the sandbox on). `python -m bench.bare --task-queue Q` runs
its worker.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from dataclasses import dataclass
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():
    import httpx


@dataclass(frozen=True)
class BareCall:
    url: str


class BareActivities:
    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @activity.defn(name="bare_http_call")
    async def call(self, call: BareCall) -> int:
        # The same header Chronos sends, so the target can tell which fire a call belongs to.
        headers = {"Idempotency-Key": activity.info().workflow_id or ""}
        response = await self.client.post(call.url, headers=headers, timeout=30)
        response.raise_for_status()
        return response.status_code


@workflow.defn(name="BareCallWorkflow")
class BareCallWorkflow:
    @workflow.run
    async def run(self, call: BareCall) -> int:
        return await workflow.execute_activity(
            "bare_http_call",
            call,
            result_type=int,
            start_to_close_timeout=timedelta(seconds=40),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )


async def run_worker(address: str, task_queue: str, concurrency: int) -> None:
    client = await Client.connect(address)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(signum, stop.set)
    async with httpx.AsyncClient() as http:
        worker = Worker(
            client,
            task_queue=task_queue,
            workflows=[BareCallWorkflow],
            activities=[BareActivities(http).call],
            max_concurrent_activities=concurrency,
        )
        async with worker:
            await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--address", default="127.0.0.1:7233")
    parser.add_argument("--task-queue", default="bare")
    parser.add_argument("--concurrency", type=int, default=100, help="activities at once, as chronos worker")
    args = parser.parse_args()
    asyncio.run(run_worker(args.address, args.task_queue, args.concurrency))
