"""Builds and runs the Chronos worker; `chronos worker` calls it, once per process you want."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from activities.http import HttpActivities
from activities.mirror import MirrorActivities
from core.config import Settings, get_settings
from core.db import Sessions, create_schema, make_engine, make_sessions
from core.temporal import connect
from workflows.run_job import JobRunWorkflow

WORKFLOWS = [JobRunWorkflow]
# On SIGTERM, attempts in progress get this long to finish before their tasks go back to the queue.
GRACEFUL_SHUTDOWN = timedelta(seconds=10)


@asynccontextmanager
async def build_worker(
    client: Client, sessions: Sessions, task_queue: str, concurrency: int = 100
) -> AsyncIterator[Worker]:
    """A worker with its activities' shared clients, closed when the worker stops."""
    mirror = MirrorActivities(sessions)
    async with httpx.AsyncClient(follow_redirects=False) as http:
        yield Worker(
            client,
            task_queue=task_queue,
            workflows=WORKFLOWS,
            activities=[HttpActivities(http).call, mirror.run_started, mirror.run_finished],
            max_concurrent_activities=concurrency,
            graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        )


async def run_worker(settings: Settings | None = None, concurrency: int = 100) -> None:
    settings = settings or get_settings()
    client = await connect(settings.temporal_address, settings.temporal_namespace)
    engine = make_engine(settings)
    await create_schema(engine)
    try:
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        sessions = make_sessions(engine)
        async with build_worker(client, sessions, settings.task_queue, concurrency) as worker, worker:
            await stop.wait()  # leaving the worker's context shuts it down gracefully
    finally:
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(run_worker())
