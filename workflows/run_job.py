"""JobRunWorkflow: one execution per run of a job, whatever started it."""

from __future__ import annotations

from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from activities.mirror import RunFinished, RunStarted
    from workflows.specs import HttpCall, HttpOutcome, RunInput, RunResult

SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
# Time for a worker to take the task and report back, on top of the action's own timeout.
ATTEMPT_MARGIN = timedelta(seconds=10)
# Mirror writes retry (Temporal's default policy, no attempt limit) until the database is back.
MIRROR_TIMEOUT = timedelta(seconds=30)


@workflow.defn
class JobRunWorkflow:
    def __init__(self) -> None:
        self._paused = False

    @workflow.run
    async def run(self, spec: RunInput) -> RunResult:
        info = workflow.info()
        started = RunStarted(
            run_id=info.workflow_id,
            temporal_run_id=info.run_id,
            job_id=spec.job_id,
            owner_id=spec.owner_id,
            trigger=spec.trigger,
            scheduled_at=_scheduled_at(info),
            started_at=workflow.now(),
        )
        await workflow.execute_activity("mirror_run_started", started, start_to_close_timeout=MIRROR_TIMEOUT)
        result = await self._perform(spec, info.workflow_id)
        finished = RunFinished(run_id=info.workflow_id, finished_at=workflow.now(), result=result)
        await workflow.execute_activity(
            "mirror_run_finished", finished, start_to_close_timeout=MIRROR_TIMEOUT
        )
        return result

    async def _perform(self, spec: RunInput, run_id: str) -> RunResult:
        await workflow.wait_condition(lambda: not self._paused)
        call = HttpCall(run_id=run_id, action=spec.action)
        try:
            outcome = await workflow.execute_activity(
                "http_call",
                call,
                result_type=HttpOutcome,
                start_to_close_timeout=timedelta(seconds=spec.action.timeout_seconds) + ATTEMPT_MARGIN,
                retry_policy=spec.retry.to_temporal(spec.guarantee),
            )
        except ActivityError as exc:
            return _failure(exc, spec)
        return RunResult(status="succeeded", attempts=outcome.attempt, http_status=outcome.status_code)

    @workflow.signal
    def pause(self) -> None:
        self._paused = True

    @workflow.signal
    def resume(self) -> None:
        self._paused = False

    @workflow.query
    def paused(self) -> bool:
        return self._paused


def _scheduled_at(info: workflow.Info) -> datetime:
    """The schedule's nominal fire time when a schedule started the run, else the start time."""
    return info.typed_search_attributes.get(SCHEDULED_START) or info.start_time


def _failure(exc: ActivityError, spec: RunInput) -> RunResult:
    """The run's end from the last attempt's error; the activity puts its attempt number in the details."""
    cause = exc.cause
    details = cause.details[0] if isinstance(cause, ApplicationError) and cause.details else {}
    # No details: the attempt timed out or its worker died, so the outcome of the call is unknown.
    default_attempts = 1 if spec.guarantee == "at_most_once" else spec.retry.max_attempts
    error = str(cause) if cause is not None else str(exc)
    if not details:
        error = f"outcome unknown: {error}"
    return RunResult(
        status="failed",
        attempts=int(details.get("attempt", default_attempts)),
        http_status=details.get("http_status"),
        error=error,
    )
