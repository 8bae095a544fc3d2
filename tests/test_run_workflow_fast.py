"""JobRunWorkflow's branches on the time-skipping test server, with its activities mocked under their real
names: a run that waits through minutes of backoff takes milliseconds. The end-to-end tier (real worker,
mirror and target) is in test_run_workflow.py and test_failures.py."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError, CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.payloads import (
    LOCAL_FIRST,
    ChildAttempt,
    ChildAttemptEnd,
    EmailAction,
    EmailOutcome,
    EmailSend,
    ErrorType,
    FixedCron,
    Guarantee,
    HttpAction,
    HttpCall,
    HttpOutcome,
    NotifySpec,
    RetrySpec,
    RunFinished,
    RunInput,
    RunRecord,
    RunResult,
    RunStarted,
    WebhookNotice,
    WorkflowAction,
    retry_delay,
)
from tests.waiting import eventually
from workflows.run_job import NOTIFY_RETRY, JobRunWorkflow, RecordRunWorkflow

# Minutes of backoff: only the skipped clock lets a test see them through.
SLOW = RetrySpec(max_attempts=3, backoff="exponential", initial_interval_seconds=60, max_interval_seconds=600)
HANG = -1  # an http_call that never reports back (its worker is lost, or the target hangs)
WEBHOOK = "https://hooks.example/chronos"
SKIPPED = "skipped: 01:30:00 already ran on 2026-11-01 (daylight-saving fall-back)"


class Activities:
    """Every activity JobRunWorkflow calls, mocked under its real name, keeping what it was called with.

    http_call answers with the scripted statuses in turn (the last one repeats), numbering its attempts and
    raising the error types of the real activity; mirror_run_started and run_skip_reason return `skip`;
    notify_webhook fails with `webhook_error` every time, or delivers when it is None. As the real
    activities do, the last attempt of a run that records itself writes the run's end (into `finished`),
    unless `away` (the database is): then it hands its record back, for the run to write later."""

    def __init__(
        self,
        env: WorkflowEnvironment,
        script: Sequence[int] = (200,),
        skip: str | None = None,
        webhook_error: ErrorType | None = None,
        away: bool = False,
    ) -> None:
        self.env = env
        self.away = away
        self.records: list[RunRecord] = []
        self.script = script
        self.skip = skip
        self.webhook_error = webhook_error
        self.calls: list[HttpCall] = []
        # When each attempt started, on the test server's skipped clock.
        self.started: list[datetime] = []
        self.emails: list[EmailSend] = []
        self.webhooks: list[WebhookNotice] = []
        self.finished: list[RunResult] = []
        self.attempts = 0
        self.children: list[ChildAttempt] = []
        self.child_ends: list[ChildAttemptEnd] = []

    def all(self) -> list[Callable[..., Any]]:
        return [
            self.run_started,
            self.attempts_made,
            self.run_finished,
            self.http_call,
            self.email_send,
            self.notify_webhook,
            self.attempt_started,
            self.attempt_finished,
            self.skip_reason,
            self.record,
        ]

    @activity.defn(name="run_skip_reason")
    async def skip_reason(self, event: RunStarted) -> str | None:
        return self.skip

    @activity.defn(name="mirror_record")
    async def record(self, record: RunRecord) -> None:
        self.records.append(record)
        if record.finished is not None:
            self.finished.append(record.finished.result)

    def ended(self, req: HttpCall | EmailSend, result: RunResult) -> RunRecord | None:
        """The run's end as the last attempt writes it; when `away`, the record the run must write."""
        if req.started is None:
            return None
        finished = RunFinished(run_id=req.run_id, finished_at=datetime.now(UTC), result=result)
        if self.away:
            return RunRecord(started=req.started, finished=finished)
        self.finished.append(result)
        return None

    @activity.defn(name="mirror_attempt_started")
    async def attempt_started(self, event: ChildAttempt) -> None:
        self.children.append(event)

    @activity.defn(name="mirror_attempt_finished")
    async def attempt_finished(self, event: ChildAttemptEnd) -> None:
        self.child_ends.append(event)

    @activity.defn(name="mirror_run_started")
    async def run_started(self, event: RunStarted) -> str | None:
        return self.skip

    @activity.defn(name="mirror_attempts_made")
    async def attempts_made(self, run_id: str) -> int:
        return self.attempts

    @activity.defn(name="mirror_run_finished")
    async def run_finished(self, event: RunFinished) -> None:
        self.finished.append(event.result)

    @activity.defn(name="http_call")
    async def http_call(self, req: HttpCall) -> HttpOutcome:
        info = activity.info()
        self.attempts = number = req.attempts_made + info.attempt
        self.calls.append(req)
        self.started.append(await self.env.get_current_time())  # the server's (skipped) clock
        status = self.script[min(len(self.calls), len(self.script)) - 1]
        if status == HANG:  # the test server's clock passes the heartbeat timeout, as when a worker is lost
            assert info.heartbeat_timeout is not None
            await self.env.sleep(info.heartbeat_timeout * 2)
            await asyncio.Event().wait()
        details: dict[str, Any] = {"attempt": number, "http_status": status}
        if status >= 300:
            server = status >= 500
            kind = ErrorType.HTTP_SERVER_ERROR if server else ErrorType.HTTP_CLIENT_ERROR
            last = not server or info.attempt == (info.retry_policy and info.retry_policy.maximum_attempts)
            if last:
                error = f"{kind}: HTTP {status}"
                result = RunResult(status="failed", attempts=number, http_status=status, error=error)
                left = self.ended(req, result)
                details |= {"recorded": left is None, "unrecorded": left and left.model_dump(mode="json")}
            elif server and info.is_local and info.retry_policy:  # handed on, as ActionAttempt does
                details["retry_in"] = retry_delay(info.retry_policy, info.attempt).total_seconds()
                raise ApplicationError(f"HTTP {status}", details, type=kind, non_retryable=True)
            raise ApplicationError(f"HTTP {status}", details, type=kind, non_retryable=not server)
        result = RunResult(status="succeeded", attempts=number, http_status=status)
        left = self.ended(req, result)
        return HttpOutcome(
            status_code=status, duration_ms=1, attempt=number, body_excerpt="", unrecorded=left
        )

    @activity.defn(name="email_send")
    async def email_send(self, req: EmailSend) -> EmailOutcome:
        self.emails.append(req)
        self.attempts = req.attempts_made + activity.info().attempt
        left = self.ended(req, RunResult(status="succeeded", attempts=self.attempts))
        return EmailOutcome(attempt=self.attempts, delivered_to="outbox", unrecorded=left)

    @activity.defn(name="notify_webhook")
    async def notify_webhook(self, req: WebhookNotice) -> None:
        self.webhooks.append(req)
        if self.webhook_error is not None:
            raise ApplicationError("webhook answered HTTP 503", type=self.webhook_error)


@workflow.defn(name="CountedReport", sandboxed=False)  # this module imports the whole app
class CountedReport:
    """A user's workflow that fails (retryably or not, as its input says) until attempt `succeed_on`."""

    @workflow.run
    async def run(self, params: dict[str, Any]) -> dict[str, Any]:
        child_id = workflow.info().workflow_id
        attempt = 1 if child_id.endswith("-child") else int(child_id.rsplit("-", 1)[1])
        if attempt < params["succeed_on"]:
            raise ApplicationError(f"attempt {attempt} fails", non_retryable=not params["retryable"])
        return {"attempt": attempt}


def report(queue: str, succeed_on: int, retryable: bool = True) -> WorkflowAction:
    """A workflow action of CountedReport on the worker's own queue."""
    params = {"succeed_on": succeed_on, "retryable": retryable}
    return WorkflowAction(workflow_type="CountedReport", task_queue=queue, input=params)


@asynccontextmanager
async def worker(env: WorkflowEnvironment, mocks: Activities) -> AsyncIterator[str]:
    """A worker of JobRunWorkflow and the mocks, on a task queue of its own."""
    queue = f"fast-{uuid.uuid4().hex[:8]}"
    workflows = [JobRunWorkflow, RecordRunWorkflow, CountedReport]
    async with Worker(env.client, task_queue=queue, workflows=workflows, activities=mocks.all()):
        yield queue


def spec(guarantee: Guarantee = Guarantee.AT_LEAST_ONCE, **extra: Any) -> RunInput:
    action = extra.pop("action", HttpAction(url="https://target.example/hook"))
    return RunInput(
        job_id="j1",
        owner_id="u1",
        action=action,
        retry=SLOW,
        guarantee=guarantee,
        layout=LOCAL_FIRST,
        **extra,
    )


async def start(env: WorkflowEnvironment, queue: str, run: RunInput) -> WorkflowHandle[Any, RunResult]:
    run_id = f"job-{run.job_id}-manual-{uuid.uuid4().hex[:8]}"
    return await env.client.start_workflow(JobRunWorkflow.run, run, id=run_id, task_queue=queue)


async def run(env: WorkflowEnvironment, mocks: Activities, run: RunInput) -> RunResult:
    """The run's result, its timers and backoffs skipped."""
    async with worker(env, mocks) as queue:
        return await (await start(env, queue, run)).result()


async def has_event(handle: WorkflowHandle[Any, Any], kind: EventType.ValueType) -> bool:
    """Whether the run's history has an event of that kind."""
    return any([event.event_type == kind async for event in handle.fetch_history_events()])


async def paused_in_backoff(handle: WorkflowHandle[Any, Any]) -> None:
    """Pause the run once its first attempt (local) failed into its backoff (a workflow timer), and wait
    until the pause has cut that backoff short."""
    await eventually(
        lambda: has_event(handle, EventType.EVENT_TYPE_TIMER_STARTED), "attempt 1 to fail into its backoff"
    )
    await handle.signal(JobRunWorkflow.pause)
    await eventually(
        lambda: has_event(handle, EventType.EVENT_TYPE_TIMER_CANCELED), "the pause to cut the backoff short"
    )


async def test_retries_back_off_exponentially_until_success(time_skipping_env):
    mocks = Activities(time_skipping_env, [500, 503, 200])
    result = await run(time_skipping_env, mocks, spec())
    assert result == RunResult(status="succeeded", attempts=3, http_status=200)
    waits = [later - earlier for earlier, later in itertools.pairwise(mocks.started)]
    assert [round(wait.total_seconds()) for wait in waits] == [60, 120]
    assert mocks.finished == [result]


async def test_exhausted_retries_fail_with_the_last_answer(time_skipping_env):
    mocks = Activities(time_skipping_env, [500])
    result = await run(time_skipping_env, mocks, spec())
    assert result == RunResult(
        status="failed", attempts=3, http_status=500, error="HttpServerError: HTTP 500"
    )
    assert (len(mocks.calls), mocks.finished) == (3, [result])


async def test_client_error_fails_at_once(time_skipping_env):
    mocks = Activities(time_skipping_env, [404, 200])
    result = await run(time_skipping_env, mocks, spec())
    assert result == RunResult(
        status="failed", attempts=1, http_status=404, error="HttpClientError: HTTP 404"
    )
    assert len(mocks.calls) == 1


async def test_email_action_is_one_email_send(time_skipping_env):
    mocks = Activities(time_skipping_env)
    action = EmailAction(to=["ops@example.org"], subject="hello", body="hi")
    result = await run(time_skipping_env, mocks, spec(action=action))
    assert result == RunResult(status="succeeded", attempts=1)
    assert (len(mocks.emails), mocks.calls) == (1, [])


async def test_an_attempt_that_could_not_record_leaves_it_to_a_record_workflow(temporal_env):
    """The database was away when the attempt ended: the run ends on time all the same, and a workflow of
    its own writes the record, with the attempt's times, once the mirror answers. (On the dev server: on
    the time-skipping one, with this abandoned child, the next test's calls to the server timed out.)"""
    mocks = Activities(temporal_env, away=True)
    async with worker(temporal_env, mocks) as queue:
        handle = await start(temporal_env, queue, spec())
        result = await handle.result()
        await temporal_env.client.get_workflow_handle(f"{handle.id}-record").result()
    assert result == RunResult(status="succeeded", attempts=1, http_status=200)
    assert mocks.finished == [result]
    assert mocks.records[0].started == mocks.calls[0].started


async def test_pause_in_backoff_holds_the_next_attempt_until_resume(time_skipping_env):
    """Paused while attempt 2 waits out its minute of backoff: ten minutes pass with no attempt; resumed,
    attempt 2 runs at once, numbered after the one made."""
    mocks = Activities(time_skipping_env, [500, 200])
    async with worker(time_skipping_env, mocks) as queue:
        handle = await start(time_skipping_env, queue, spec())
        await paused_in_backoff(handle)
        await time_skipping_env.sleep(timedelta(minutes=10))
        assert await handle.query(JobRunWorkflow.paused)
        assert not (await handle.describe()).raw_description.pending_activities
        assert len(mocks.calls) == 1
        await handle.signal(JobRunWorkflow.resume)
        result = await handle.result()
    assert result == RunResult(status="succeeded", attempts=2, http_status=200)
    assert [call.attempts_made for call in mocks.calls] == [0, 1]


async def test_cancel_while_paused_ends_the_run_cancelled(time_skipping_env):
    mocks = Activities(time_skipping_env, [500, 200])
    async with worker(time_skipping_env, mocks) as queue:
        handle = await start(time_skipping_env, queue, spec())
        await paused_in_backoff(handle)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
    assert isinstance(failure.value.cause, CancelledError)
    assert mocks.finished == [RunResult(status="cancelled", attempts=0, error="cancelled")]
    assert len(mocks.calls) == 1


async def test_at_most_once_without_an_answer_is_outcome_unknown(time_skipping_env):
    """The attempt stops heartbeating (its worker is lost, or the call hangs): at_most_once never tries
    again, and the run cannot tell whether the call happened."""
    mocks = Activities(time_skipping_env, [HANG, 200])
    result = await run(time_skipping_env, mocks, spec(guarantee=Guarantee.AT_MOST_ONCE))
    assert (result.status, result.attempts, result.http_status) == ("failed", 1, None)
    assert (result.error or "").startswith("outcome unknown: ")
    assert len(mocks.calls) == 1


async def test_repeated_fall_back_fire_is_cancelled_without_an_attempt(time_skipping_env):
    mocks = Activities(time_skipping_env, skip=SKIPPED)
    rule = FixedCron(cron="30 1 * * *", timezone="Europe/Berlin")
    result = await run(
        time_skipping_env, mocks, spec(notify=NotifySpec(webhook_url=WEBHOOK), fixed_cron=rule)
    )
    assert result == RunResult(status="cancelled", attempts=0, error=SKIPPED)
    assert (mocks.finished, mocks.calls, mocks.webhooks) == ([result], [], [])


@pytest.mark.parametrize(
    ("error", "tries"),
    [(ErrorType.WEBHOOK_ERROR, NOTIFY_RETRY.maximum_attempts), (ErrorType.WEBHOOK_REJECTED, 1)],
)
async def test_notification_that_gives_up_leaves_the_run_its_result(time_skipping_env, error, tries):
    mocks = Activities(time_skipping_env, webhook_error=error)
    result = await run(time_skipping_env, mocks, spec(notify=NotifySpec(webhook_url=WEBHOOK)))
    assert result == RunResult(status="succeeded", attempts=1, http_status=200)
    assert mocks.finished == [result]
    assert [hook.notice.event for hook in mocks.webhooks] == ["run.succeeded"] * tries


async def child_runs(
    env: WorkflowEnvironment, spec_of: Callable[[str], RunInput], mocks: Activities | None = None
) -> tuple[str, RunResult]:
    """A run of a workflow action whose child runs on the run's own worker, and its result."""
    async with worker(env, mocks or Activities(env)) as queue:
        handle = await start(env, queue, spec_of(queue))
        return handle.id, await handle.result()


async def test_failed_children_retry_as_new_children_after_the_backoff(time_skipping_env):
    """Each attempt a new child; between them the policy's exponential backoff, on workflow timers."""
    env, mocks = time_skipping_env, Activities(time_skipping_env)
    run_id, result = await child_runs(env, lambda queue: spec(action=report(queue, succeed_on=3)), mocks)
    assert result == RunResult(status="succeeded", attempts=3, output={"attempt": 3})
    ids = [f"{run_id}-child", f"{run_id}-child-2", f"{run_id}-child-3"]
    assert [(c.number, c.child_id) for c in mocks.children] == list(enumerate(ids, start=1))
    assert [(e.succeeded, e.then) for e in mocks.child_ends] == [
        (False, "next attempt in 60 s"),
        (False, "next attempt in 2 min"),
        (True, None),
    ]
    started = [(await env.client.get_workflow_handle(i).describe()).start_time for i in ids]
    waits = [later - earlier for earlier, later in itertools.pairwise(started)]
    assert [round(wait.total_seconds()) for wait in waits] == [60, 120]


async def test_at_most_once_never_starts_a_second_child(time_skipping_env):
    run_id, result = await child_runs(
        time_skipping_env,
        lambda queue: spec(Guarantee.AT_MOST_ONCE, action=report(queue, succeed_on=2)),
    )
    assert result == RunResult(
        status="failed", attempts=1, error=f"child workflow {run_id}-child failed: attempt 1 fails"
    )


async def test_a_non_retryable_child_failure_is_not_retried(time_skipping_env):
    _, result = await child_runs(
        time_skipping_env, lambda queue: spec(action=report(queue, succeed_on=2, retryable=False))
    )
    assert (result.status, result.attempts) == ("failed", 1)
