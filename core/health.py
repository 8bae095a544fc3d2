"""Readiness: the mirror answers, Temporal answers, and some worker polls the task queue."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import literal
from sqlalchemy.exc import DBAPIError
from sqlmodel import select
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from core.config import Settings
from core.db import Sessions
from core.errors import Unavailable
from core.temporal import TemporalGateway

# Workers long-poll for up to a minute; a poller seen within this window counts as alive.
POLLER_FRESH = timedelta(seconds=90)


async def readiness(settings: Settings, sessions: Sessions, temporal: TemporalGateway) -> str | None:
    """None when ready, else the first reason it is not."""
    try:
        async with sessions() as session:
            await session.exec(select(literal(1)))
    except (DBAPIError, OSError) as exc:
        return f"the database is unreachable: {exc.__class__.__name__}"
    try:
        workers = await temporal.call(lambda c: live_pollers(c, settings.task_queue))
    except Unavailable as exc:
        return exc.detail
    if not workers:
        return f"no worker is polling the task queue '{settings.task_queue}'"
    return None


async def live_pollers(client: Client, task_queue: str) -> list[str]:
    """Identities of workers that polled the queue for workflow tasks lately."""
    answer = await client.workflow_service.describe_task_queue(
        DescribeTaskQueueRequest(
            namespace=client.namespace,
            task_queue=TaskQueue(name=task_queue),
            task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
        )
    )
    since = datetime.now(UTC) - POLLER_FRESH
    return [p.identity for p in answer.pollers if p.last_access_time.ToDatetime(UTC) >= since]
