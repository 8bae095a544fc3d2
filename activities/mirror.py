"""Mirror activities: write what a run did into the SQL mirror, idempotently (a retried write lands once)."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity

from activities.attempts import ATTEMPTS_MADE, LogLine, RunRecorder
from core.cron import DstRule, is_repeated_fire, parse_cron
from core.db import Sessions
from core.models import AttemptStatus
from core.payloads import ChildAttempt, ChildAttemptEnd, RunFinished, RunRecord, RunStarted


def skip_reason(event: RunStarted) -> str | None:
    """Why this scheduled fire must not run: the DST rule of fixed-time cron schedules."""
    rule = event.fixed_cron
    if event.trigger != "schedule" or rule is None:
        return None
    expr, dst = parse_cron(rule.cron, rule.dialect), DstRule(rule.gap, rule.repeat)
    if not is_repeated_fire(expr, rule.timezone, event.scheduled_at, dst):
        return None
    local = event.scheduled_at.astimezone(ZoneInfo(rule.timezone))
    when = f"{local:%H:%M:%S} on {local:%Y-%m-%d}"
    if not expr.names(local.replace(tzinfo=None)):
        return f"skipped: {when} is no fire time of the schedule (daylight-saving gap, dst gap: {dst.gap})"
    if local.fold == 0:
        return (
            f"skipped: {when} runs at its second occurrence (daylight-saving fall-back, dst repeat: second)"
        )
    return f"skipped: {local:%H:%M:%S} already ran on {local:%Y-%m-%d} (daylight-saving fall-back)"


class MirrorActivities:
    """Each write is one short transaction of Core statements (`RunRecorder`), idempotent, so Temporal may
    retry it until the database is back."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.engine: AsyncEngine = sessions.kw["bind"]
        self.recorder = RunRecorder(sessions)

    @activity.defn(name="mirror_run_started")
    async def run_started(self, event: RunStarted) -> str | None:
        await self.recorder.record(RunRecord(started=event))
        return skip_reason(event)

    @activity.defn(name="run_skip_reason")
    async def skip_reason(self, event: RunStarted) -> str | None:
        """The DST rule alone, without the database: runs that record themselves ask only this."""
        return skip_reason(event)

    @activity.defn(name="mirror_record")
    async def record(self, record: RunRecord) -> None:
        """What a run's attempts could not write (the database was away), with their true times."""
        await self.recorder.record(record)

    @activity.defn(name="mirror_attempts_made")
    async def attempts_made(self, run_id: str) -> int:
        """How many attempts a run has made: a pause can interrupt the retries between two of them."""
        async with self.engine.connect() as conn:
            count = await conn.scalar(ATTEMPTS_MADE, {"run": run_id})
        return int(count or 0)

    @activity.defn(name="mirror_attempt_started")
    async def attempt_started(self, event: ChildAttempt) -> None:
        """A workflow action's attempt opens (the workflow records it: its child runs elsewhere); the log
        line names the child, so its Web UI page is one search away."""
        line = LogLine(
            f"{event.run_id}:workflow:{event.number}:started",
            "info",
            f"attempt {event.number} started: workflow {event.workflow_type} on task queue "
            f"{event.task_queue} as child workflow {event.child_id}",
        )
        await self.recorder.attempt_started(event.run_id, event.number, line)

    @activity.defn(name="mirror_attempt_finished")
    async def attempt_finished(self, event: ChildAttemptEnd) -> None:
        prefix = f"{event.run_id}:workflow:{event.number}"
        if event.succeeded:
            line = LogLine(
                f"{prefix}:succeeded",
                "info",
                f"attempt {event.number} succeeded: child workflow {event.child_id} completed"
                + (f"; {event.then}" if event.then else ""),
            )
        else:
            level = "warning" if event.then and event.then.startswith("next") else "error"
            line = LogLine(
                f"{prefix}:failed", level, f"attempt {event.number} failed: {event.error}; {event.then}"
            )
        await self.recorder.attempt_finished(
            event.run_id,
            event.number,
            status=AttemptStatus.SUCCEEDED if event.succeeded else AttemptStatus.FAILED,
            duration_ms=event.duration_ms,
            lines=[line],
            error=event.error,
        )

    @activity.defn(name="mirror_run_finished")
    async def run_finished(self, event: RunFinished) -> None:
        """Close the run, its attempts left open, and for a failed run write its dead letter (once)."""
        await self.recorder.record(RunRecord(finished=event))
