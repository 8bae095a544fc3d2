"""ReconcileWorkflow: one pass of drift repair, started by its own Temporal Schedule (`chronos-reconcile`)."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.notify import NotifyActivities
    from activities.reconcile import ReconcileActivities
    from core.payloads import RECONCILE_WORKFLOW, SHARDS, ReconcileInput, RunsPage
    from workflows.run_job import send_notice

# A slice that fails is retried a little, then left to the next pass a minute later.
SLICE_RETRY = RetryPolicy(initial_interval=timedelta(seconds=1), maximum_attempts=3)
SLICE_TIMEOUT = timedelta(minutes=5)
HEARTBEAT_TIMEOUT = timedelta(seconds=30)
# Passes since this check every job for fires that never ran (activities/reconcile.py `fires`).
MISSED_FIRES = "missed-fires"


@workflow.defn(name=RECONCILE_WORKFLOW)
class ReconcileWorkflow:
    @workflow.run
    async def run(self, spec: ReconcileInput) -> dict[str, int]:
        """Every shard of jobs and schedules, then every page of open runs; the fixes counted by kind."""
        fixes: Counter[str] = Counter()
        for shard in SHARDS:
            fixes.update(
                await workflow.execute_activity_method(
                    ReconcileActivities.schedules,
                    shard.model_copy(update={"grace_seconds": spec.grace_seconds}),
                    start_to_close_timeout=SLICE_TIMEOUT,
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=SLICE_RETRY,
                )
            )
        if workflow.patched(MISSED_FIRES):
            for shard in SHARDS:
                found = await workflow.execute_activity_method(
                    ReconcileActivities.fires,
                    shard,
                    start_to_close_timeout=SLICE_TIMEOUT,
                    heartbeat_timeout=HEARTBEAT_TIMEOUT,
                    retry_policy=SLICE_RETRY,
                )
                fixes.update(found.fixes)
                await asyncio.gather(
                    *(send_notice(NotifyActivities.email, notice) for notice in found.emails),
                    *(send_notice(NotifyActivities.webhook, notice) for notice in found.webhooks),
                )
        page: RunsPage | None = RunsPage(grace_seconds=spec.grace_seconds)
        while page is not None:
            done = await workflow.execute_activity_method(
                ReconcileActivities.runs,
                page,
                start_to_close_timeout=SLICE_TIMEOUT,
                heartbeat_timeout=HEARTBEAT_TIMEOUT,
                retry_policy=SLICE_RETRY,
            )
            fixes.update(done.fixes)
            page = done.next_page
        return dict(fixes)


RECONCILE_WORKFLOWS = [ReconcileWorkflow]
