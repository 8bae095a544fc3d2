"""The reconcile schedule: every worker makes sure it exists, so drift is repaired without an operator."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleHandle,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from core.config import Settings
from core.payloads import RECONCILE_WORKFLOW, ReconcileInput

RECONCILE_SCHEDULE_ID = "chronos-reconcile"
# A pass stuck on an unreachable database ends, so the next one (skipped while it overlaps) can start.
PASS_TIMEOUT = timedelta(minutes=30)


def reconcile_schedule(settings: Settings) -> Schedule:
    return Schedule(
        action=ScheduleActionStartWorkflow(
            RECONCILE_WORKFLOW,
            ReconcileInput(),
            id=RECONCILE_SCHEDULE_ID,
            task_queue=settings.task_queue,
            execution_timeout=PASS_TIMEOUT,
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(seconds=settings.reconcile_every_seconds))]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_reconcile_schedule(
    client: Client, settings: Settings, run_now: bool = True
) -> ScheduleHandle:
    """Create the schedule, or bring an existing one to these settings (keeping an operator's pause);
    `run_now` starts a pass at once, as `chronos dev` and a starting worker want after downtime."""
    schedule = reconcile_schedule(settings)
    try:
        handle = await client.create_schedule(RECONCILE_SCHEDULE_ID, schedule)
    except ScheduleAlreadyRunningError:
        handle = client.get_schedule_handle(RECONCILE_SCHEDULE_ID)

        def keep_state(current: ScheduleUpdateInput) -> ScheduleUpdate:
            schedule.state = current.description.schedule.state
            return ScheduleUpdate(schedule=schedule)

        await handle.update(keep_state)
    if run_now:
        await handle.trigger(overlap=ScheduleOverlapPolicy.SKIP)
    return handle
