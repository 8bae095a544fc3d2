"""JobRunWorkflow: one execution per run of a job, whatever started it."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from workflows.specs import HttpCall, HttpOutcome, RunInput, RunResult

# Time for a worker to take the task and report back, on top of the action's own timeout.
ATTEMPT_MARGIN = timedelta(seconds=10)


@workflow.defn
class JobRunWorkflow:
    def __init__(self) -> None:
        self._paused = False

    @workflow.run
    async def run(self, spec: RunInput) -> RunResult:
        await workflow.wait_condition(lambda: not self._paused)
        call = HttpCall(run_id=workflow.info().workflow_id, action=spec.action)
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
