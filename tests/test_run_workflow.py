"""JobRunWorkflow against a real Temporal dev server, a real worker and a real HTTP target."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHistory
from temporalio.worker import Replayer

from activities.attempts import RunRecorder
from core.config import Settings
from core.db import Sessions
from core.models import Job, Run
from core.payloads import LOCAL_FIRST, Guarantee, HttpAction, RetrySpec, RunInput, RunRecord, RunResult
from tests.api_client import session_converter
from tests.histories import WORKFLOW_ID, committed, keep, load
from tests.http_target import HttpTarget, Received
from tests.mirror_rows import add_job
from tests.waiting import eventually
from worker import WORKFLOWS, build_worker
from workflows.run_job import JobRunWorkflow

FAST_RETRY = RetrySpec(
    max_attempts=3, backoff="fixed", initial_interval_seconds=0.1, max_interval_seconds=0.1
)
HISTORIES: list[WorkflowHistory] = []


@pytest.fixture(scope="module")
async def task_queue(
    temporal_client: Client, sessions: Sessions, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    queue = f"test-run-{uuid.uuid4().hex[:8]}"
    settings = Settings(data_dir=tmp_path_factory.mktemp("worker"), allow_private_targets=True)
    async with build_worker(temporal_client, sessions, queue, settings=settings) as worker, worker:
        yield queue


@pytest.fixture(scope="module")
async def job(sessions: Sessions) -> Job:
    return await add_job(sessions)


async def run_job(
    client: Client,
    queue: str,
    job: Job,
    url: str,
    retry: RetrySpec = FAST_RETRY,
    guarantee: Guarantee = Guarantee.AT_LEAST_ONCE,
) -> tuple[str, RunResult]:
    spec = RunInput(
        job_id=job.id,
        owner_id=job.owner_id,
        action=HttpAction(url=url),
        retry=retry,
        guarantee=guarantee,
        layout=LOCAL_FIRST,
    )
    run_id = f"job-{job.id}-manual-{uuid.uuid4().hex[:8]}"
    handle = await client.start_workflow(JobRunWorkflow.run, spec, id=run_id, task_queue=queue)
    result = await handle.result()
    HISTORIES.append(await handle.fetch_history())
    await keep(f"http_{result.status}_{result.attempts}", handle)
    return run_id, result


def sent(target: HttpTarget, path: str, run_id: str) -> list[Received]:
    """The requests of one run: tests run once per database, against one target."""
    return [r for r in target.requests[path] if r.headers["Idempotency-Key"] == run_id]


async def test_success_is_one_attempt(temporal_client, task_queue, job, target, sessions):
    run_id, result = await run_job(temporal_client, task_queue, job, target.url("/ok"))
    assert result == RunResult(status="succeeded", attempts=1, http_status=200)
    assert target.requests["/ok"][-1].headers["Idempotency-Key"] == run_id
    async with sessions() as session:
        run = await session.get(Run, run_id)
    assert run is not None
    assert (run.status, run.attempts, run.job_id, run.trigger) == ("succeeded", 1, job.id, "schedule")
    assert run.finished_at is not None and run.started_at is not None and run.duration_ms is not None


async def test_failed_run_is_recorded_with_its_reason(temporal_client, task_queue, job, target, sessions):
    target.script("/gone", [410])
    run_id, _ = await run_job(temporal_client, task_queue, job, target.url("/gone"))
    async with sessions() as session:
        run = await session.get(Run, run_id)
    assert run is not None
    assert (run.status, run.attempts) == ("failed", 1)
    assert "HTTP 410" in (run.error or "")


async def test_retryable_failures_retry_with_one_idempotency_key(temporal_client, task_queue, job, target):
    target.script("/flaky", [500, 503, 200])
    run_id, result = await run_job(temporal_client, task_queue, job, target.url("/flaky"))
    assert result.status == "succeeded"
    assert result.attempts == 3
    assert len(sent(target, "/flaky", run_id)) == 3  # one key for every attempt


async def test_client_error_fails_at_once(temporal_client, task_queue, job, target):
    target.script("/missing", [404])
    run_id, result = await run_job(temporal_client, task_queue, job, target.url("/missing"))
    assert result.status == "failed"
    assert (result.attempts, result.http_status) == (1, 404)
    assert "HTTP 404" in (result.error or "")
    assert len(sent(target, "/missing", run_id)) == 1


async def test_exhausted_retries_fail_the_run(temporal_client, task_queue, job, target):
    target.script("/down", [500])
    retry = FAST_RETRY.model_copy(update={"max_attempts": 2})
    run_id, result = await run_job(temporal_client, task_queue, job, target.url("/down"), retry=retry)
    assert (result.status, result.attempts, result.http_status) == ("failed", 2, 500)
    assert len(sent(target, "/down", run_id)) == 2


async def test_at_most_once_never_sends_twice(temporal_client, task_queue, job, target):
    target.script("/once", [500])
    run_id, result = await run_job(
        temporal_client, task_queue, job, target.url("/once"), guarantee=Guarantee.AT_MOST_ONCE
    )
    assert (result.status, result.attempts) == ("failed", 1)
    assert len(sent(target, "/once", run_id)) == 1


async def test_an_attempt_whose_record_fails_is_not_made_again(
    temporal_client, task_queue, job, target, sessions, monkeypatch
):
    """The call is made before its record is written. A write that failed with anything but a database
    error (a row that kept changing, a bug) failed the activity, and Temporal made the call again, even
    for an at-most-once job. The record is handed on to the run, which writes it."""
    real = RunRecorder.record
    failures: list[RunRecord] = []

    async def fails_once(self: RunRecorder, record: RunRecord) -> None:
        if not failures:
            failures.append(record)
            raise RuntimeError("not a database error")
        await real(self, record)

    monkeypatch.setattr(RunRecorder, "record", fails_once)
    run_id, result = await run_job(
        temporal_client, task_queue, job, target.url("/record"), guarantee=Guarantee.AT_MOST_ONCE
    )
    assert (result.status, result.attempts) == ("succeeded", 1)
    assert failures and len(sent(target, "/record", run_id)) == 1

    async def recorded() -> Run | None:
        async with sessions() as session:
            run = await session.get(Run, run_id)
        return run if run is not None and run.finished_at is not None else None

    run = await eventually(recorded, "the run's record, written by the run")
    assert (run.status, run.attempts) == ("succeeded", 1)


async def test_histories_replay_on_current_code():
    """Runs after the tests above (file order): a change that breaks determinism fails here."""
    assert HISTORIES, "no histories were recorded"
    replayer = Replayer(workflows=WORKFLOWS, data_converter=session_converter())
    for history in HISTORIES:
        await replayer.replay_workflow(history)


@pytest.mark.parametrize("path", committed(), ids=lambda path: path.stem)
async def test_committed_histories_replay(path: Path):
    """Histories recorded from earlier code (tests/histories): changing a path without `workflow.patched`
    makes the replay non-deterministic and fails here. Calling the activities by method reference instead
    of by name needed no patch: the commands keep their activity types, arguments and options (ErrorType's
    values are the error type strings the retry policies named), and the result types the methods declare
    decode the same values as before."""
    history = load(path)
    replayer = Replayer(workflows=WORKFLOWS, data_converter=session_converter())
    await replayer.replay_workflow(history)


@pytest.mark.parametrize("name", ["recorded_http_succeeded_1", "recorded_retry_then_success"])
async def test_a_run_an_older_worker_began_replays_on_its_patches(name: str):
    """An upgrade with both kinds of worker: a run started with the LOCAL_FIRST layout that a worker from
    before layouts began (it ignored `layout` and followed its patches) replays on current code, which
    finds its RUN_RECORDS marker."""
    path = next(path for path in committed() if path.stem == name)
    history = json.loads(path.read_text())
    started = history["events"][0]["workflowExecutionStartedEventAttributes"]["input"]["payloads"][0]
    spec = json.loads(base64.b64decode(started["data"]))
    started["data"] = base64.b64encode(json.dumps({**spec, "layout": LOCAL_FIRST}).encode()).decode()
    replayer = Replayer(workflows=WORKFLOWS, data_converter=session_converter())
    await replayer.replay_workflow(WorkflowHistory.from_json(history.pop(WORKFLOW_ID), history))
