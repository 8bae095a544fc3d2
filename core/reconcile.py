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
# Where in its interval a pass starts: 37 s into a minute, not at its top. An interval schedule is aligned to
# the epoch, so with no offset every pass began on the second at which most cron and interval jobs fire
# (:00, and every step of 2, 3, 5, 10, 15, 20 or 30 s), and its listing of every schedule met their fires.
PASS_OFFSET = 37 / 60


def pass_offset(every: timedelta) -> timedelta:
    """The same share of any interval, in whole seconds (0 for an interval of 1 s)."""
    return timedelta(seconds=int(every.total_seconds() * PASS_OFFSET))


def reconcile_schedule(settings: Settings) -> Schedule:
    every = timedelta(seconds=settings.reconcile_every_seconds)
    return Schedule(
        action=ScheduleActionStartWorkflow(
            RECONCILE_WORKFLOW,
            ReconcileInput(),
            id=RECONCILE_SCHEDULE_ID,
            task_queue=settings.task_queue,
            execution_timeout=PASS_TIMEOUT,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every, offset=pass_offset(every))]),
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
