"""Builds and runs the Chronos worker; `chronos worker` calls it, once per process you want."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta

import httpx
import uvloop
from temporalio.client import Client
from temporalio.worker import UnsandboxedWorkflowRunner, Worker, WorkflowRunner

from activities.attempts import RunRecorder
from activities.email import EmailActivities, Mailer
from activities.http import HttpActivities
from activities.mirror import MirrorActivities
from activities.notify import NotifyActivities
from activities.reconcile import reconcile_activities
from core.config import Settings, get_settings
from core.db import Sessions, create_schema, make_engine, make_sessions
from core.metrics import worker_runtime
from core.reconcile import ensure_reconcile_schedule
from core.targets import TargetGuard
from core.temporal import connect, data_converter
from workflows.fixed_delay import FIXED_DELAY_WORKFLOWS
from workflows.reconcile import RECONCILE_WORKFLOWS
from workflows.run_job import JobRunWorkflow, RecordRunWorkflow

logger = logging.getLogger(__name__)

WORKFLOWS = [JobRunWorkflow, RecordRunWorkflow, *FIXED_DELAY_WORKFLOWS, *RECONCILE_WORKFLOWS]
# Workflows run without the SDK's sandbox here: it re-imported the workflow module into every run's
# sandbox (3.7-9.5 ms of CPU a run), and with that module passed through it still cost about a fifth of
# the worker's CPU, an `exec` of a code string per activation and per payload the codec handles
# (docs/bench.md, "The worker without the sandbox"). The workflow modules hold nothing but constants, so
# runs sharing them stay deterministic; the tests' workers and the replay tests run the default sandbox
# (tests/conftest.py), which fails a restricted call (`datetime.now()`, I/O) on every path they take.
WORKFLOW_RUNNER: WorkflowRunner = UnsandboxedWorkflowRunner()
# The SDK's default, kept as a floor: a worker takes runs a little ahead of its free activity slots, which
# one worker's rate needs (with 4 slots instead of 100 at a concurrency of 2, one worker's calls a second
# fell from 9.6 to 8.4: docs/bench.md).
WORKFLOW_TASK_SLOTS = 100
# On SIGTERM, attempts in progress get this long to finish before their tasks go back to the queue.
GRACEFUL_SHUTDOWN = timedelta(seconds=10)


@asynccontextmanager
async def build_worker(
    client: Client,
    sessions: Sessions,
    task_queue: str,
    concurrency: int = 100,
    settings: Settings | None = None,
) -> AsyncIterator[Worker]:
    """A worker with its activities' shared clients, closed when the worker stops."""
    settings = settings or get_settings()
    recorder = RunRecorder(sessions)
    mirror = MirrorActivities(sessions)
    mailer = Mailer(settings)
    # Every outgoing request goes through the SSRF guard; redirects are never followed. The worker's slots
    # bound its calls; httpx's pool must not add a bound of its own (100 connections by default, where a
    # call waiting for one spent its timeout without going out).
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=concurrency)
    transport = TargetGuard(settings.allow_private_targets).transport(limits=limits)
    async with httpx.AsyncClient(transport=transport, follow_redirects=False) as http:
        notify = NotifyActivities(http, mailer, sessions, recorder)
        yield Worker(
            client,
            task_queue=task_queue,
            workflows=WORKFLOWS,
            workflow_runner=WORKFLOW_RUNNER,
            activities=[
                HttpActivities(http, recorder).call,
                EmailActivities(mailer, recorder).send,
                mirror.run_started,
                mirror.skip_reason,
                mirror.record,
                mirror.attempts_made,
                mirror.attempt_started,
                mirror.attempt_finished,
                mirror.run_finished,
                notify.email,
                notify.webhook,
                *reconcile_activities(settings, sessions),
            ],
            # A run's first attempt is a local activity (workflows/run_job.py): it counts against the
            # same concurrency, in the local activities' own slots, and holds its workflow task's slot
            # until it ends, so there are at least as many of those.
            max_concurrent_activities=concurrency,
            max_concurrent_local_activities=concurrency,
            max_concurrent_workflow_tasks=max(concurrency, WORKFLOW_TASK_SLOTS),
            graceful_shutdown_timeout=GRACEFUL_SHUTDOWN,
        )


async def run_worker(settings: Settings | None = None, concurrency: int = 100) -> None:
    settings = settings or get_settings()
    runtime = worker_runtime(settings.worker_metrics_port) if settings.worker_metrics_port else None
    client = await connect(
        settings.temporal_address, settings.temporal_namespace, data_converter(settings), runtime=runtime
    )
    engine = make_engine(settings)
    await create_schema(engine)
    if settings.smtp_url is None:
        outbox = (settings.data_dir / "outbox").resolve()
        logger.info("CHRONOS_SMTP_URL is not set: outgoing mail is kept in %s", outbox)
    try:
        stop = asyncio.Event()
        for signum in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        sessions = make_sessions(engine)
        async with (
            build_worker(client, sessions, settings.task_queue, concurrency, settings) as worker,
            worker,
        ):
            await ensure_reconcile_schedule(client, settings)  # and a first pass at every start
            await stop.wait()  # leaving the worker's context shuts it down gracefully
    finally:
        await engine.dispose()


def serve(settings: Settings | None = None, concurrency: int = 100) -> None:
    """Runs the worker until SIGTERM, on uvloop's event loop: the worker's Python
    side is mostly the event loop passing tasks between the SDK's core, the activities and the
    database's thread, which uvloop does with less CPU per run (docs/bench.md). Workflow code never
    sees it: each run executes on the SDK's own deterministic loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(run_worker(settings, concurrency))


if __name__ == "__main__":
    serve()
