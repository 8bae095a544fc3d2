"""JobRunWorkflow: one execution per run of a job, whatever started it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import suppress
from datetime import datetime, timedelta
from typing import Any, TypeVar

from temporalio import workflow
from temporalio.common import RawValue, RetryPolicy, SearchAttributeKey
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    CancelledError,
    ChildWorkflowError,
    FailureError,
    RetryState,
    TerminatedError,
    TimeoutError,
)
from temporalio.workflow import ActivityCancellationType, ChildWorkflowCancellationType, ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    import email_validator  # noqa: F401  (pydantic's EmailStr imports it lazily, inside the sandbox)
    from pydantic_core import to_json

    # The activities are called by method reference; their modules (httpx, SQLAlchemy, aiosmtplib) are the
    # worker's own, passed through once rather than imported again into every run's sandbox.
    from activities.attempts import describe_delay
    from activities.email import EmailActivities
    from activities.http import HttpActivities
    from activities.mirror import MirrorActivities
    from activities.notify import NotifyActivities
    from core.payloads import (
        LOCAL_FIRST,
        MAX_OUTPUT_BYTES,
        RUN_WORKFLOW,
        AttemptRecord,
        ChildAttempt,
        ChildAttemptEnd,
        EmailAction,
        EmailNotice,
        EmailOutcome,
        EmailSend,
        ErrorType,
        Guarantee,
        HttpCall,
        HttpOutcome,
        RunFinished,
        RunInput,
        RunNotice,
        RunOutcome,
        RunRecord,
        RunResult,
        RunStarted,
        Trigger,
        WebhookNotice,
        WorkflowAction,
        payload_encoding,
        retry_delay,
    )

ArgT = TypeVar("ArgT")
ResultT = TypeVar("ResultT")

SCHEDULED_START = SearchAttributeKey.for_datetime("TemporalScheduledStartTime")
# Time for a worker to take the task and report back, on top of the action's own timeout.
ATTEMPT_MARGIN = timedelta(seconds=10)
# An attempt whose worker stops heartbeating for this long is lost: retried, or for at_most_once failed.
HEARTBEAT_TIMEOUT = timedelta(seconds=10)
EMAIL_TIMEOUT = timedelta(seconds=60)
# Mirror writes retry (Temporal's default policy, no attempt limit) until the database is back.
MIRROR_TIMEOUT = timedelta(seconds=30)
LOCAL_MIRROR = "local-mirror-writes"
# Runs whose attempts record them after their call (the mirror off the way to the target, docs/bench.md).
RUN_RECORDS = "attempts-record-runs"
# A run's own try at writing what its attempts could not; past it, RecordRunWorkflow retries durably.
RECORD_TRY = timedelta(seconds=5)
RECORD_WORKFLOW = "ChronosRecordRun"
# Runs of a workflow action: each attempt is a child workflow (`_children`). No earlier history has one.
WORKFLOW_ACTION = "workflow-action"
# Notifications retry on their own policy; when they give up the run keeps its outcome.
NOTIFY_TIMEOUT = timedelta(seconds=30)
NOTIFY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=6,
    non_retryable_error_types=[
        ErrorType.TARGET_REFUSED,
        ErrorType.WEBHOOK_REJECTED,
        ErrorType.EMAIL_REJECTED,
    ],
)


@workflow.defn(name=RUN_WORKFLOW)
class JobRunWorkflow:
    def __init__(self) -> None:
        self._paused = False
        self._attempts: workflow.ActivityHandle[Any] | None = None
        self._child: workflow.ChildWorkflowHandle[Any, Any] | None = None
        # A pause cancelled the attempts in flight: they resume when the run does (even if it already has).
        self._paused_attempts = False
        # Pauses signalled so far: one during a local attempt's backoff cuts it short.
        self._pauses = 0
        # The run follows LOCAL_FIRST (`run`): its first at-least-once attempt is a local activity.
        self._local_first = False
        # How the last attempt ended: what it wrote into the mirror is in its outcome or error details.
        self._last: HttpOutcome | EmailOutcome | BaseException | None = None

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
            fixed_cron=spec.fixed_cron,
        )
        # A workflow action's attempts are the workflow's own to record: it writes its start first.
        if isinstance(spec.action, WorkflowAction):
            return await self._run_mirrored(spec, started)
        # Runs of a layout know their branch from their input; earlier ones from their patches.
        self._local_first = spec.layout >= LOCAL_FIRST and not _begun_by_an_older_worker()
        if not self._local_first and not workflow.patched(RUN_RECORDS):
            return await self._run_mirrored(spec, started)
        return await self._run_recorded(spec, started)

    async def _run_recorded(self, spec: RunInput, started: RunStarted) -> RunResult:
        """The action's attempts record the run (its start, themselves, its end) after their call, so the
        mirror is never on the way to the target; what they could not write, the run writes here."""
        if spec.fixed_cron is not None and spec.trigger == Trigger.SCHEDULE:
            skip = await workflow.execute_local_activity_method(
                MirrorActivities.skip_reason, started, start_to_close_timeout=MIRROR_TIMEOUT
            )
            if skip:  # a fall-back repeat of a fixed time: recorded, not run (no attempt, no notice)
                result = RunResult(status=RunOutcome.CANCELLED, attempts=0, error=skip)
                await self._record(RunRecord(started=started, finished=_finished(spec, result)))
                return result
        try:
            result = await self._perform(spec, started.run_id, started)
        except asyncio.CancelledError:
            self._cancel_in_flight()
            result = RunResult(status=RunOutcome.CANCELLED, attempts=0, error="cancelled")
            await self._record(RunRecord(started=started, finished=_finished(spec, result)))
            raise
        left, tried = self._left_to_record(spec, started, result)
        if left is not None:
            await self._record(left, tried)
        await self._notify(spec, result)
        return result

    def _left_to_record(
        self, spec: RunInput, started: RunStarted, result: RunResult
    ) -> tuple[RunRecord | None, bool]:
        """What the last attempt left for the run to write, and whether it already tried: nothing when it
        wrote the run's end; its record when the database was away; the run's end when it never reported
        (timed out, its worker lost)."""
        last = self._last
        if isinstance(last, HttpOutcome | EmailOutcome):
            return last.unrecorded, True
        details = _details(last) if isinstance(last, FailureError) else {}
        if details.get("recorded"):
            return None, True
        if details.get("unrecorded"):
            return RunRecord.model_validate(details["unrecorded"]), True
        return RunRecord(started=started, finished=_finished(spec, result)), False

    async def _record(self, record: RunRecord, tried: bool = False) -> None:
        """Written at once when the database answers; else a child workflow writes it, retrying until the
        database is back, and this run ends now: the schedule's next fire (its overlap policy) and the
        notifications never wait for the mirror."""
        if not tried:
            try:
                await workflow.execute_local_activity_method(
                    MirrorActivities.record,
                    record,
                    start_to_close_timeout=RECORD_TRY,
                    retry_policy=RetryPolicy(maximum_attempts=2),
                )
                return
            except FailureError:
                pass
        await workflow.start_child_workflow(
            RecordRunWorkflow.run,
            record,
            id=f"{record.run_id()}-record",
            parent_close_policy=ParentClosePolicy.ABANDON,
        )

    def _cancel_in_flight(self) -> None:
        """The attempt in flight (if any) is asked to stop after its request."""
        if self._attempts is not None and not self._attempts.done():
            self._attempts.cancel()
        if self._child is not None and not self._child.done():
            self._child.cancel()

    async def _run_mirrored(self, spec: RunInput, started: RunStarted) -> RunResult:
        """Runs before RUN_RECORDS, and workflow actions: the workflow writes the start before the action
        and the end after it."""
        recorded = False
        try:
            skip = await _mirror(MirrorActivities.run_started, started)
            recorded = True
            if skip:  # a fall-back repeat of a fixed time: recorded, not run (no attempt, no notice)
                result = RunResult(status=RunOutcome.CANCELLED, attempts=0, error=skip)
                await self._finish(spec, result)
                return result
            result = await self._perform(spec, started.run_id)
        except asyncio.CancelledError:
            # The attempt in flight (if any) is asked to stop after its request; the run ends cancelled.
            self._cancel_in_flight()
            if not recorded:  # cancelled while the start was written: write it (again, idempotently)
                await _mirror(MirrorActivities.run_started, started)
            await self._finish(spec, RunResult(status=RunOutcome.CANCELLED, attempts=0, error="cancelled"))
            raise
        await self._finish(spec, result)
        await self._notify(spec, result)
        return result

    async def _perform(self, spec: RunInput, run_id: str, started: RunStarted | None = None) -> RunResult:
        """All attempts, retried by Temporal; a pause interrupts them between two attempts. Given the
        run's start, the attempts record the run themselves."""
        if isinstance(spec.action, WorkflowAction):
            workflow.patched(WORKFLOW_ACTION)  # marks the branch in the history
            return await self._children(spec, spec.action, run_id)
        made = 0
        carried: list[AttemptRecord] = []
        limit = spec.retry.attempt_limit(spec.guarantee)
        while True:
            await workflow.wait_condition(lambda: not self._paused)
            handle = self._start_attempts(spec, run_id, made, started, carried)
            self._attempts = handle
            await workflow.wait([handle])
            try:
                outcome = handle.result()
            except (FailureError, asyncio.CancelledError) as exc:
                self._last = exc
                if self._paused_attempts and _interrupted(exc):
                    self._paused_attempts = False
                    made = await _mirror(MirrorActivities.attempts_made, run_id)
                    if made < limit:
                        continue
                if isinstance(exc, FailureError):
                    details = _details(exc)
                    if "retry_in" in details:  # the local first attempt failed: activities go on after it
                        made = int(details["attempt"])
                        if details.get("unrecorded"):
                            carried = RunRecord.model_validate(details["unrecorded"]).attempts
                        if self._paused_attempts:  # paused during the attempt: no backoff
                            self._paused_attempts = False
                        else:
                            await self._backoff(timedelta(seconds=details["retry_in"]))
                        continue
                    return _failure(exc, limit)
                raise
            self._last = outcome
            if isinstance(outcome, HttpOutcome):
                return RunResult(
                    status=RunOutcome.SUCCEEDED, attempts=outcome.attempt, http_status=outcome.status_code
                )
            return RunResult(status=RunOutcome.SUCCEEDED, attempts=outcome.attempt)

    async def _children(self, spec: RunInput, action: WorkflowAction, run_id: str) -> RunResult:
        """Each attempt starts the user's workflow as a child on their task queue; a failed child is
        retried as a new child (its own id) after a workflow timer, under the job's retry policy. A pause
        holds the next attempt and lets the child in flight finish; a cancelled run cancels its child."""
        limit = spec.retry.attempt_limit(spec.guarantee)
        policy = spec.retry.to_temporal(spec.guarantee)
        timeout = timedelta(seconds=action.timeout_seconds)
        number = 0
        while True:
            await workflow.wait_condition(lambda: not self._paused)
            number += 1
            child_id = f"{run_id}-child" if number == 1 else f"{run_id}-child-{number}"
            attempt = ChildAttempt(
                run_id=run_id,
                number=number,
                child_id=child_id,
                workflow_type=action.workflow_type,
                task_queue=action.task_queue,
            )
            await _mirror(MirrorActivities.attempt_started, attempt)
            began = workflow.now()
            child = await workflow.start_child_workflow(
                action.workflow_type,
                args=[] if action.input is None else [action.input],
                id=child_id,
                task_queue=action.task_queue,
                execution_timeout=timeout,
                # A cancelled run asks its child to stop and ends at once (the child's worker may be
                # gone); a run that ends any other way leaves no child behind either.
                cancellation_type=ChildWorkflowCancellationType.TRY_CANCEL,
                parent_close_policy=ParentClosePolicy.REQUEST_CANCEL,
                result_type=RawValue,  # converted by `_kept`, where a result it cannot read is a note
            )
            self._child = child
            # Waited on, not awaited: the run's cancellation reaches `run`, which cancels the child.
            await workflow.wait([child])
            try:
                output = child.result()
            except ChildWorkflowError as exc:
                error, retryable = _child_failure(exc, action)
                delay = retry_delay(policy, number) if retryable and number < limit else None
                if delay is not None:
                    then = f"next attempt in {describe_delay(delay)}"
                else:
                    then = "no attempts left" if retryable else "not retryable"
                end = ChildAttemptEnd(
                    run_id=run_id,
                    number=number,
                    child_id=child_id,
                    succeeded=False,
                    duration_ms=_ms_since(began),
                    error=error,
                    then=then,
                )
                await _mirror(MirrorActivities.attempt_finished, end)
                if delay is None:
                    return RunResult(status=RunOutcome.FAILED, attempts=number, error=error)
                await workflow.sleep(delay)
                continue
            kept, note = _kept(output)
            end = ChildAttemptEnd(
                run_id=run_id,
                number=number,
                child_id=child_id,
                succeeded=True,
                duration_ms=_ms_since(began),
                then=note,
            )
            await _mirror(MirrorActivities.attempt_finished, end)
            return RunResult(status=RunOutcome.SUCCEEDED, attempts=number, output=kept)

    async def _backoff(self, delay: timedelta) -> None:
        """The wait after a local first attempt, which a pause cuts short, even one resumed at once: once
        resumed, the next attempt runs without waiting, as when a pause cancels an activity's backoff."""
        pauses = self._pauses
        with suppress(asyncio.TimeoutError):
            await workflow.wait_condition(lambda: self._pauses > pauses, timeout=delay)

    def _start_attempts(
        self, spec: RunInput, run_id: str, made: int, started: RunStarted | None, carried: list[AttemptRecord]
    ) -> workflow.ActivityHandle[Any]:
        """The attempts still to come, retried by Temporal. An at-least-once run of LOCAL_FIRST tries first
        in a local activity: in the worker that holds the run, with no activity task (a run that succeeds
        at once is one workflow task and 6 history events instead of 2 and 11). Only the first: a local
        activity re-runs when its worker is lost, which at-most-once forbids, and later attempts keep
        their count and carried records on the server."""
        retry = spec.retry.to_temporal(spec.guarantee, attempts_made=made)
        activity: Any
        call: EmailSend | HttpCall
        if isinstance(spec.action, EmailAction):
            activity, timeout = EmailActivities.send, EMAIL_TIMEOUT
            call = EmailSend(
                run_id=run_id, action=spec.action, attempts_made=made, started=started, carried=carried
            )
        else:
            activity = HttpActivities.call
            timeout = timedelta(seconds=spec.action.timeout_seconds) + ATTEMPT_MARGIN
            call = HttpCall(
                run_id=run_id, action=spec.action, attempts_made=made, started=started, carried=carried
            )
        # Cancelling (pause, cancel) waits until the attempt in progress has reported its outcome.
        cancellation = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
        if self._local_first and spec.guarantee == Guarantee.AT_LEAST_ONCE and made == 0:
            return workflow.start_local_activity_method(
                activity,
                call,
                start_to_close_timeout=timeout,
                retry_policy=retry,
                cancellation_type=cancellation,
            )
        return workflow.start_activity_method(
            activity,
            call,
            start_to_close_timeout=timeout,
            retry_policy=retry,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            cancellation_type=cancellation,
        )

    async def _finish(self, spec: RunInput, result: RunResult) -> None:
        await _mirror(MirrorActivities.run_finished, _finished(spec, result))

    async def _notify(self, spec: RunInput, result: RunResult) -> None:
        """Emails and webhook go out side by side; one that gives up is logged, the run keeps its end."""
        if result.status == RunOutcome.CANCELLED:
            return
        notice = RunNotice(
            event="run.succeeded" if result.status == RunOutcome.SUCCEEDED else "run.failed",
            job_id=spec.job_id,
            job_name=spec.job_name,
            run_id=workflow.info().workflow_id,
            owner_id=spec.owner_id,
            status=result.status,
            attempts=result.attempts,
            http_status=result.http_status,
            error=result.error,
            finished_at=workflow.now(),
        )
        sends = []
        to = spec.notify.on_success if result.status == RunOutcome.SUCCEEDED else spec.notify.on_failure
        if to:
            sends.append(send_notice(NotifyActivities.email, EmailNotice(notice=notice, to=list(to))))
        if spec.notify.webhook_url is not None:
            sends.append(
                send_notice(
                    NotifyActivities.webhook, WebhookNotice(notice=notice, url=str(spec.notify.webhook_url))
                )
            )
        await asyncio.gather(*sends)

    @workflow.signal
    def pause(self) -> None:
        """Hold the run before its next attempt; the attempt in progress finishes first."""
        self._paused = True
        self._pauses += 1
        if self._attempts is not None and not self._attempts.done():
            self._paused_attempts = True
            self._attempts.cancel()

    @workflow.signal
    def resume(self) -> None:
        self._paused = False

    @workflow.query
    def paused(self) -> bool:
        return self._paused


async def _mirror(activity: Callable[[MirrorActivities, ArgT], Awaitable[ResultT]], arg: ArgT) -> ResultT:
    """A write to the mirror. Runs started since LOCAL_MIRROR make it a local activity: it runs in the
    worker that holds the run, with no task queue round trip, which was a third of a run's server work
    (docs/bench.md); earlier histories replay their regular activities."""
    if workflow.patched(LOCAL_MIRROR):
        return await workflow.execute_local_activity_method(
            activity, arg, start_to_close_timeout=MIRROR_TIMEOUT
        )
    return await workflow.execute_activity_method(activity, arg, start_to_close_timeout=MIRROR_TIMEOUT)


async def send_notice(activity: Callable[[NotifyActivities, ArgT], Awaitable[None]], notice: ArgT) -> None:
    """One notification on its own retry policy; when it gives up that is logged, not raised."""
    try:
        await workflow.execute_activity_method(
            activity,
            notice,
            start_to_close_timeout=NOTIFY_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=NOTIFY_RETRY,
        )
    except ActivityError as exc:
        workflow.logger.warning("%s gave up: %s", exc.activity_type, exc.cause or exc)


def _begun_by_an_older_worker() -> bool:
    """Whether a worker from before layouts began this run: it ignored `layout` and followed its patches,
    whose RUN_RECORDS marker the replay finds (an upgrade with both kinds of worker). Asked only when
    replaying: on a first execution `patched` would add the marker that layouts exist to save."""
    return workflow.unsafe.is_replaying() and workflow.patched(RUN_RECORDS)


def _scheduled_at(info: workflow.Info) -> datetime:
    """The schedule's nominal fire time when a schedule started the run, else the start time."""
    return info.typed_search_attributes.get(SCHEDULED_START) or info.start_time


def _interrupted(exc: FailureError | asyncio.CancelledError) -> bool:
    """The attempts stopped because the workflow cancelled them (a pause), not because one failed for good."""
    if isinstance(exc, asyncio.CancelledError | CancelledError):
        return True
    return isinstance(exc, ActivityError) and (
        isinstance(exc.cause, CancelledError) or exc.retry_state == RetryState.CANCEL_REQUESTED
    )


def _child_failure(exc: ChildWorkflowError, action: WorkflowAction) -> tuple[str, bool]:
    """Why a child attempt failed, and whether another attempt may help (not when the child's own error
    says it cannot)."""
    cause = exc.cause
    if isinstance(cause, TimeoutError):
        return (
            f"no worker on task queue {action.task_queue} ran {action.workflow_type} "
            f"within {action.timeout_seconds:g} s",
            True,
        )
    if isinstance(cause, ApplicationError):
        return f"child workflow {exc.workflow_id} failed: {cause.message}", not cause.non_retryable
    if isinstance(cause, TerminatedError):
        return f"child workflow {exc.workflow_id} was terminated", True
    if isinstance(cause, CancelledError):
        return f"child workflow {exc.workflow_id} was cancelled", True
    return f"child workflow {exc.workflow_id} failed: {cause or exc}", True


def _ms_since(began: datetime) -> int:
    return int((workflow.now() - began).total_seconds() * 1000)


def _kept(result: RawValue) -> tuple[Any, str | None]:
    """The child's result as the run keeps it: whole up to MAX_OUTPUT_BYTES of JSON, else not at all. It is
    the user's workflow's, of any shape: one Chronos cannot read (a protobuf type it does not know, bytes
    that are not UTF-8) is a note here, where the SDK's own conversion failed the run's workflow task, again
    and again for ever."""
    try:
        output = workflow.payload_converter().from_payload(result.payload)
        size = len(to_json(output))  # what the run's result will hold, by the converter's own serializer
    except Exception as exc:
        return None, f"its result ({payload_encoding(result.payload)}) cannot be kept as JSON: {exc}"
    if size <= MAX_OUTPUT_BYTES:
        return output, None
    return None, f"its result of {size} bytes is over the {MAX_OUTPUT_BYTES} a run keeps"


def _error(exc: FailureError) -> BaseException | None:
    """The attempt's own error: an activity's comes inside an ActivityError, a local activity's that
    ends without a retry (non-retryable) comes bare."""
    return exc.cause if isinstance(exc, ActivityError) else exc


def _details(exc: FailureError) -> dict[str, Any]:
    """What the attempt put in its error: its number, the HTTP status, what it recorded."""
    cause = _error(exc)
    details = cause.details[0] if isinstance(cause, ApplicationError) and cause.details else {}
    return details if isinstance(details, dict) else {}


def _finished(spec: RunInput, result: RunResult) -> RunFinished:
    return RunFinished(
        run_id=workflow.info().workflow_id, finished_at=workflow.now(), result=result, action=spec.action
    )


def _failure(exc: FailureError, limit: int) -> RunResult:
    """The run's end from the last attempt's error; the activity puts its attempt number in the details."""
    cause = _error(exc)
    details = _details(exc)
    error = str(cause) if cause is not None else str(exc)
    # No details: the attempt timed out or its worker died, so the outcome of the call is unknown.
    if not details:
        error = f"outcome unknown: {error}"
    return RunResult(
        status=RunOutcome.FAILED,
        attempts=int(details.get("attempt", limit)),
        http_status=details.get("http_status"),
        error=error,
    )


@workflow.defn(name=RECORD_WORKFLOW)
class RecordRunWorkflow:
    """Writes into the mirror what a run could not while the database was away, retrying until it is
    back; the run it belongs to has ended meanwhile, on time."""

    @workflow.run
    async def run(self, record: RunRecord) -> None:
        await workflow.execute_activity_method(
            MirrorActivities.record,
            record,
            start_to_close_timeout=MIRROR_TIMEOUT,
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
        )
