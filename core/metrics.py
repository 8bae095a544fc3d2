"""Prometheus metrics: the `chronos_*` series of the API, and the Temporal SDK's own metrics of a worker.

Several API replicas and workers run at once, and a counter kept in one process's memory would count only
what that process saw. So the job and run series are read from the mirror at scrape time, by a few
aggregate queries, and every replica reports the same totals; the queue depth is Temporal's own backlog
estimate. Nothing is kept between scrapes, so each scrape fills a registry of its own (and two apps in one
process never share one).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Integer, case, func
from sqlmodel import col, select
from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.service import RPCError

from core.db import Sessions
from core.errors import Unavailable
from core.models import NOT_RUN, Job, Run
from core.temporal import TemporalGateway

# Upper bounds (seconds) of the run duration histogram: from quick webhooks to hour-long jobs.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
TASK_TYPES = {
    "workflow": TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    "activity": TaskQueueType.TASK_QUEUE_TYPE_ACTIVITY,
}


@dataclass(frozen=True)
class Snapshot:
    """What one scrape read: counts by key, the cumulative duration buckets, and None where unreadable."""

    jobs: dict[str, int]
    runs: dict[str, int]
    buckets: list[int]
    durations_sum_seconds: float
    durations_count: int
    retries: int
    queue_depth: dict[str, int] | None
    # Fires that never ran, by job and status (missed, skipped).
    not_run: dict[tuple[str, str], int] = field(default_factory=dict)


class SnapshotCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot
        # Jobs and open runs move between states, so these are gauges despite their API.md names.
        jobs = GaugeMetricFamily("chronos_jobs_total", "Jobs (not deleted) by state", labels=["state"])
        for state, count in sorted(snap.jobs.items()):
            jobs.add_metric([state], count)
        yield jobs
        runs = GaugeMetricFamily("chronos_runs_total", "Runs by status", labels=["status"])
        for status, count in sorted(snap.runs.items()):
            runs.add_metric([status], count)
        yield runs
        bounds = [f"{b:g}" for b in DURATION_BUCKETS]
        yield HistogramMetricFamily(
            "chronos_runs_duration_seconds",
            "Duration of finished runs, from start to end",
            buckets=[*zip(bounds, snap.buckets, strict=True), ("+Inf", snap.durations_count)],
            sum_value=snap.durations_sum_seconds,
        )
        yield CounterMetricFamily(
            "chronos_retries", "Attempts beyond the first, over all runs", value=snap.retries
        )
        not_run = CounterMetricFamily(
            "chronos_fires_not_run",
            "Fires of a job that never ran: missed (late past the misfire window, lost to a pause) or "
            "skipped (the overlap policy)",
            labels=["job_id", "status"],
        )
        for (job_id, status), count in sorted(snap.not_run.items()):
            not_run.add_metric([job_id, status], count)
        yield not_run
        if snap.queue_depth is not None:
            depth = GaugeMetricFamily(
                "chronos_queue_depth",
                "Tasks waiting on the Chronos task queue (Temporal's approximate backlog)",
                labels=["task_type"],
            )
            for task_type, count in snap.queue_depth.items():
                depth.add_metric([task_type], count)
            yield depth


async def read_snapshot(sessions: Sessions, temporal: TemporalGateway, task_queue: str) -> Snapshot:
    """The mirror's aggregates and the queue's backlog; Temporal being down drops only the queue depth."""
    async with sessions() as session:
        jobs = (
            await session.exec(
                select(Job.state, func.count()).where(col(Job.deleted_at).is_(None)).group_by(Job.state)
            )
        ).all()
        runs = (await session.exec(select(Run.status, func.count()).group_by(Run.status))).all()
        not_run = (
            await session.exec(
                select(Run.job_id, Run.status, func.count())
                .where(col(Run.status).in_(NOT_RUN))
                .group_by(Run.job_id, Run.status)
            )
        ).all()
        finished = col(Run.duration_ms).is_not(None)
        within = [
            func.coalesce(func.sum(case((col(Run.duration_ms) <= bound * 1000, 1), else_=0)), 0)
            for bound in DURATION_BUCKETS
        ]
        histogram = (
            await session.exec(
                select(
                    func.count(col(Run.duration_ms)),
                    func.coalesce(func.sum(col(Run.duration_ms)), 0),
                    *within,
                ).where(finished)
            )
        ).one()
        retries = (
            await session.exec(
                select(func.coalesce(func.sum(col(Run.attempts) - 1), 0).cast(Integer)).where(
                    col(Run.attempts) > 1
                )
            )
        ).one()
    try:
        depth: dict[str, int] | None = await temporal.call(lambda c: queue_depth(c, task_queue))
    except (Unavailable, RPCError):
        depth = None
    count, total_ms, *buckets = (int(value or 0) for value in histogram)
    return Snapshot(
        jobs={state: int(n) for state, n in jobs},
        runs={status: int(n) for status, n in runs},
        buckets=buckets,
        durations_sum_seconds=total_ms / 1000,
        durations_count=count,
        retries=int(retries),
        queue_depth=depth,
        not_run={(job_id, status): int(n) for job_id, status, n in not_run},
    )


async def queue_depth(client: Client, task_queue: str) -> dict[str, int]:
    """Temporal's approximate backlog of the queue, for workflow and for activity tasks."""

    async def backlog(task_type: TaskQueueType.ValueType) -> int:
        answer = await client.workflow_service.describe_task_queue(
            DescribeTaskQueueRequest(
                namespace=client.namespace,
                task_queue=TaskQueue(name=task_queue),
                task_queue_type=task_type,
                report_stats=True,
            )
        )
        return int(answer.stats.approximate_backlog_count)

    counts = await asyncio.gather(*(backlog(t) for t in TASK_TYPES.values()))
    return dict(zip(TASK_TYPES, counts, strict=True))


def render(snapshot: Snapshot) -> bytes:
    """The Prometheus text exposition of one scrape."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return generate_latest(registry)


def worker_runtime(metrics_port: int, host: str = "0.0.0.0") -> Runtime:
    """A Temporal runtime that serves the SDK's worker metrics (task slots, poll and schedule latencies,
    activity outcomes) and reconciliation's fixes in Prometheus text on `host:metrics_port`/metrics.
    Clients connected with it report through it; one per process, as the port can be bound once."""
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=f"{host}:{metrics_port}")))
