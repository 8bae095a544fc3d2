"""When jobs fail: attempts and logs, Retry-After, timeouts, dead letters, cancel, pause, worker crashes,
a worker full of slow calls."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text, update
from sqlmodel import col, select
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import CancelledError
from temporalio.testing import ActivityEnvironment

from activities.attempts import LogLine, RunRecorder
from activities.http import excerpt_of, retry_after
from activities.mirror import MirrorActivities
from core.config import Settings
from core.db import Sessions, create_schema, make_engine, make_sessions
from core.models import Attempt, DeadLetter, Job, Run, RunLog, utcnow
from core.payloads import (
    LOCAL_FIRST,
    AttemptRecord,
    Guarantee,
    HttpAction,
    RecordLine,
    RetrySpec,
    RunFinished,
    RunInput,
    RunRecord,
    RunResult,
    RunStarted,
)
from core.schedules import IntervalSchedule
from tests.api_client import ENCRYPTION_KEYS
from tests.histories import keep
from tests.http_target import HANG, Answer
from tests.mirror_rows import add_job
from tests.waiting import eventually
from worker import build_worker
from workflows.run_job import JobRunWorkflow

FAST = RetrySpec(max_attempts=3, backoff="fixed", initial_interval_seconds=0.1, max_interval_seconds=0.1)
# Backoff this long never elapses within a test: a test that finishes proves something cut it short.
SLOW = RetrySpec(max_attempts=3, backoff="fixed", initial_interval_seconds=600, max_interval_seconds=600)


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("failures"), allow_private_targets=True)


@pytest.fixture(scope="module")
async def task_queue(temporal_client: Client, sessions: Sessions, settings: Settings) -> AsyncIterator[str]:
    queue = f"test-failures-{uuid.uuid4().hex[:8]}"
    async with build_worker(temporal_client, sessions, queue, settings=settings) as worker, worker:
        yield queue


@pytest.fixture(scope="module")
async def job(sessions: Sessions) -> Job:
    return await add_job(sessions)


def run_input(
    job: Job, action: HttpAction, retry: RetrySpec = FAST, guarantee: Guarantee = Guarantee.AT_LEAST_ONCE
) -> RunInput:
    return RunInput(
        job_id=job.id,
        owner_id=job.owner_id,
        action=action,
        retry=retry,
        guarantee=guarantee,
        layout=LOCAL_FIRST,
    )


async def start(client: Client, queue: str, spec: RunInput) -> WorkflowHandle[JobRunWorkflow, RunResult]:
    run_id = f"job-{spec.job_id}-manual-{uuid.uuid4().hex[:8]}"
    return await client.start_workflow(JobRunWorkflow.run, spec, id=run_id, task_queue=queue)


def unique(path: str) -> str:
    """A path of its own per test and database, so scripts and request counts never mix."""
    return f"{path}-{uuid.uuid4().hex[:6]}"


async def attempts_of(sessions: Sessions, run_id: str) -> list[Attempt]:
    async with sessions() as session:
        rows = await session.exec(
            select(Attempt).where(Attempt.run_id == run_id).order_by(col(Attempt.number))
        )
        return list(rows.all())


async def attempt_failed(sessions: Sessions, run_id: str) -> bool:
    return [a.status for a in await attempts_of(sessions, run_id)] == ["failed"]


async def log_of(sessions: Sessions, run_id: str) -> list[str]:
    async with sessions() as session:
        rows = await session.exec(select(RunLog).where(RunLog.run_id == run_id).order_by(col(RunLog.id)))
        return [line.message for line in rows.all()]


async def test_each_attempt_is_recorded_with_its_log(temporal_client, task_queue, job, target, sessions):
    path = unique("/flaky")
    target.script(path, [500, 200])
    handle = await start(temporal_client, task_queue, run_input(job, HttpAction(url=target.url(path))))
    result = await handle.result()
    await keep("retry_then_success", handle)
    assert (result.status, result.attempts) == ("succeeded", 2)
    attempts = await attempts_of(sessions, handle.id)
    assert [(a.number, a.status, a.http_status) for a in attempts] == [
        (1, "failed", 500),
        (2, "succeeded", 200),
    ]
    assert all(a.started_at and a.finished_at and a.duration_ms is not None for a in attempts)
    assert "HTTP 500" in (attempts[0].error or "")
    log = await log_of(sessions, handle.id)
    assert log[0].startswith("attempt 1 started: POST ")
    assert any(line.startswith("HTTP 500 in ") for line in log)
    assert any("attempt 1 failed: HTTP 500" in line and "next attempt in 0.1 s" in line for line in log)
    assert any(line.startswith("HTTP 200 in ") for line in log)
    assert log[-1] == "run succeeded after 2 attempt(s)"


async def test_response_bodies_are_kept_as_a_bounded_excerpt(
    temporal_client, task_queue, job, target, sessions
):
    path = unique("/verbose")
    target.script(path, [Answer(500, body=b"E" * 1_000_000), 200])
    handle = await start(temporal_client, task_queue, run_input(job, HttpAction(url=target.url(path))))
    assert (await handle.result()).status == "succeeded"
    [answer] = [line for line in await log_of(sessions, handle.id) if line.startswith("HTTP 500 in ")]
    assert "EEEE" in answer and len(answer) < 400


async def test_a_target_answering_in_binary_is_recorded(temporal_client, task_queue, job, target, sessions):
    """An answer holding NUL bytes (an image, a gzip) is kept in the log with U+FFFD in their place: kept
    as it came, PostgreSQL refused the run's log line and its write was retried for ever."""
    path = unique("/binary")
    binary = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    target.script(path, [Answer(500, body=binary), Answer(200, body=binary)])
    handle = await start(temporal_client, task_queue, run_input(job, HttpAction(url=target.url(path))))
    assert (await handle.result()).status == "succeeded"
    attempts = await attempts_of(sessions, handle.id)
    assert [(a.status, a.http_status) for a in attempts] == [("failed", 500), ("succeeded", 200)]
    answers = [line for line in await log_of(sessions, handle.id) if line.startswith("HTTP ")]
    assert len(answers) == 2 and all("\ufffd\ufffd\ufffd\rIHDR" in line for line in answers), answers
    async with sessions() as session:
        run = await session.get(Run, handle.id)
        assert run is not None and run.status == "succeeded"


async def test_retry_after_is_honoured(temporal_client, task_queue, job, target, sessions):
    """The policy would wait 10 minutes; the target's Retry-After of 1 s is what Temporal waits instead."""
    path = unique("/busy")
    target.script(path, [Answer(429, {"Retry-After": "1"}), 200])
    handle = await start(temporal_client, task_queue, run_input(job, HttpAction(url=target.url(path)), SLOW))
    result = await handle.result()
    assert (result.status, result.attempts) == ("succeeded", 2)
    assert any("next attempt in 1 s (Retry-After)" in line for line in await log_of(sessions, handle.id))


async def test_an_answer_in_a_charset_python_cannot_decode_succeeds_once(
    temporal_client, task_queue, job, target, sessions
):
    """`charset=rot13` names a codec that is no text encoding: decoding the excerpt with it raised, so a 200
    failed its attempt and the target was called again. Now the excerpt falls back to UTF-8."""
    path = unique("/rot13")
    target.script(path, [Answer(200, {"Content-Type": "text/plain; charset=rot13"}, body=b"done")])
    handle = await start(temporal_client, task_queue, run_input(job, HttpAction(url=target.url(path))))
    result = await handle.result()
    assert (result.status, result.attempts, len(target.requests[path])) == ("succeeded", 1, 1)
    assert any(line.endswith(": done") for line in await log_of(sessions, handle.id))


async def test_an_answer_whose_body_does_not_decompress_keeps_its_status(
    temporal_client, task_queue, job, target, sessions
):
    """A 200 whose body is not the gzip its Content-Encoding says was a network error, retried: the target
    was called by every attempt. Its status now stands, and the excerpt says the body could not be read."""
    path = unique("/gzip")
    target.script(path, [Answer(200, {"Content-Encoding": "gzip"}, body=b"plain, not gzip")])
    handle = await start(temporal_client, task_queue, run_input(job, HttpAction(url=target.url(path))))
    result = await handle.result()
    assert (result.status, result.attempts, len(target.requests[path])) == ("succeeded", 1, 1)
    assert any("could not be read: DecodingError" in line for line in await log_of(sessions, handle.id))


async def test_an_answer_whose_body_trickles_past_the_timeout_keeps_its_status(
    temporal_client, task_queue, job, target, sessions
):
    """The status came in time and the body did not: that was "no answer within timeout_seconds", and the
    target was called again by every retry although it had answered 200."""
    path = unique("/trickle")
    target.script(path, [Answer(200, body=b"late", body_after=3)])
    action = HttpAction(url=target.url(path), timeout_seconds=1)
    handle = await start(temporal_client, task_queue, run_input(job, action))
    result = await handle.result()
    assert (result.status, result.attempts, len(target.requests[path])) == ("succeeded", 1, 1)
    log = await log_of(sessions, handle.id)
    assert any("(the body did not arrive within timeout_seconds=1)" in line for line in log), log


@pytest.mark.parametrize("charset", ["rot13", "base64", "zlib", "idna", "punycode", "utf-7", None])
def test_an_excerpt_is_text_whatever_charset_the_answer_names(charset: str | None) -> None:
    assert excerpt_of(b"ok \xff", charset) == "ok \ufffd"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7),
        (" 7 ", 7),
        ("99999999999999999999999", 86400),
        ("9" * 5000, 86400),
        ("Fri, 31 Dec 9999 23:59:59 GMT", 86400),
        ("²", None),
        ("-5", None),
        ("1e3", None),
        ("soon", None),
    ],
)
def test_a_retry_after_of_any_shape_is_read_capped_or_ignored(value: str, seconds: int | None) -> None:
    """A target's header never raises in the worker: a long run of digits overflowed `timedelta` (or
    `int`), and a superscript digit passed `isdigit` but not `int`."""
    response = httpx.Response(429, headers={b"Retry-After": value.encode()})
    delay = retry_after(response)
    assert (delay.total_seconds() if delay is not None else None) == seconds


async def test_timeout_is_named_in_the_error(temporal_client, task_queue, job, target):
    path = unique("/slow")
    target.script(path, [HANG])
    action = HttpAction(url=target.url(path), timeout_seconds=0.5)
    retry = FAST.model_copy(update={"max_attempts": 1})
    result = await (await start(temporal_client, task_queue, run_input(job, action, retry))).result()
    assert result.status == "failed"
    assert "timeout_seconds=0.5" in (result.error or "")


async def test_exhausted_run_becomes_a_dead_letter_with_secrets_masked(
    temporal_client, task_queue, job, target, sessions
):
    path = unique("/down")
    target.script(path, [503])
    action = HttpAction(url=target.url(path), headers={"Authorization": "Bearer s3cret", "X-Trace": "t-1"})
    retry = FAST.model_copy(update={"max_attempts": 2})
    handle = await start(temporal_client, task_queue, run_input(job, action, retry))
    result = await handle.result()
    await keep("exhausted_dead_letter", handle)
    assert (result.status, result.attempts, result.http_status) == ("failed", 2, 503)
    async with sessions() as session:
        dead = (await session.exec(select(DeadLetter).where(DeadLetter.run_id == handle.id))).one()
        run = await session.get(Run, handle.id)
    assert (dead.job_id, dead.owner_id, dead.attempts) == (job.id, job.owner_id, 2)
    assert "HTTP 503" in (dead.error or "")
    assert dead.request is not None
    assert dead.request["headers"] == {"Authorization": "****", "X-Trace": "****"}
    assert dead.request["url"] == target.url(path)
    assert run is not None and run.status == "failed"
    # A retried mirror write lands once: the dead letter and the run's last log line stay single.
    assert run.finished_at is not None
    again = RunFinished(run_id=handle.id, finished_at=run.finished_at, result=result, action=action)
    await ActivityEnvironment().run(MirrorActivities(sessions).run_finished, again)
    async with sessions() as session:
        dead_letters = (await session.exec(select(DeadLetter).where(DeadLetter.run_id == handle.id))).all()
    assert len(dead_letters) == 1
    assert (await log_of(sessions, handle.id)).count(
        "run failed after 2 attempt(s): " + (result.error or "")
    ) == 1


async def test_client_error_is_a_dead_letter_after_one_attempt(
    temporal_client, task_queue, job, target, sessions
):
    path = unique("/missing")
    target.script(path, [404])
    handle = await start(temporal_client, task_queue, run_input(job, HttpAction(url=target.url(path))))
    result = await handle.result()
    assert (result.status, result.attempts, result.http_status) == ("failed", 1, 404)
    assert any("not retryable" in line for line in await log_of(sessions, handle.id))
    async with sessions() as session:
        assert (await session.exec(select(DeadLetter).where(DeadLetter.run_id == handle.id))).one()


async def test_metadata_target_is_refused_even_when_private_targets_are_allowed(
    temporal_client, task_queue, job, target
):
    action = HttpAction(url="http://169.254.169.254/latest/meta-data/", timeout_seconds=1)
    result = await (await start(temporal_client, task_queue, run_input(job, action))).result()
    assert (result.status, result.attempts) == ("failed", 1)
    assert "cloud metadata" in (result.error or "")


async def test_cancelled_run_is_recorded_as_cancelled(temporal_client, task_queue, job, target, sessions):
    path = unique("/cancel")
    target.script(path, [500])
    handle = await start(temporal_client, task_queue, run_input(job, HttpAction(url=target.url(path)), SLOW))
    await target.wait_for(path)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert isinstance(failure.value.cause, CancelledError)
    await keep("cancelled_in_backoff", handle)
    async with sessions() as session:
        run = await session.get(Run, handle.id)
    assert run is not None
    assert (run.status, run.attempts) == ("cancelled", 1)
    assert (await log_of(sessions, handle.id))[-1] == "run cancelled"


async def test_pause_holds_the_next_attempt_until_resume(temporal_client, task_queue, job, target, sessions):
    """Paused during the 10-minute backoff, resumed: the next attempt runs at once, numbered 2."""
    path = unique("/paused")
    target.script(path, [500, 200])
    handle = await start(temporal_client, task_queue, run_input(job, HttpAction(url=target.url(path)), SLOW))
    await target.wait_for(path)
    await handle.signal(JobRunWorkflow.pause)
    await eventually(lambda: attempt_failed(sessions, handle.id), "attempt 1 to end, failed, under the pause")
    assert await handle.query(JobRunWorkflow.paused)
    assert len(target.requests[path]) == 1
    await handle.signal(JobRunWorkflow.resume)
    result = await handle.result()
    await keep("pause_resume", handle)
    assert (result.status, result.attempts) == ("succeeded", 2)
    assert len(target.requests[path]) == 2
    assert [a.number for a in await attempts_of(sessions, handle.id)] == [1, 2]


async def test_minutes_of_backoff_pass_on_the_time_skipping_server(
    time_skipping_env, sessions, settings, target, job
):
    """Exponential backoff of 1 then 2 minutes, with Temporal's clock skipped instead of waited for."""
    path = unique("/later")
    target.script(path, [500, 500, 200])
    retry = RetrySpec(
        max_attempts=3, backoff="exponential", initial_interval_seconds=60, max_interval_seconds=600
    )
    client = time_skipping_env.client
    queue = f"test-skip-{uuid.uuid4().hex[:8]}"
    async with build_worker(client, sessions, queue, settings=settings) as worker, worker:
        spec = run_input(job, HttpAction(url=target.url(path)), retry)
        result = await client.execute_workflow(
            JobRunWorkflow.run, spec, id=f"job-{job.id}-manual-{uuid.uuid4().hex[:8]}", task_queue=queue
        )
    assert (result.status, result.attempts) == ("succeeded", 3)
    assert len(target.requests[path]) == 3


def _worker_process(settings: Settings, client: Client, queue: str, *args: str) -> subprocess.Popen[bytes]:
    """`chronos worker [args]` in a process of its own, as users run it: a test can kill it mid-request."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHRONOS_")}
    env.update(
        CHRONOS_DATA_DIR=str(settings.data_dir),
        CHRONOS_TEMPORAL_ADDRESS=client.service_client.config.target_host,
        CHRONOS_TEMPORAL_NAMESPACE=client.namespace,
        CHRONOS_TASK_QUEUE=queue,
        CHRONOS_ALLOW_PRIVATE_TARGETS="true",
        CHRONOS_ENCRYPTION_KEYS=ENCRYPTION_KEYS,
    )
    root = Path(__file__).resolve().parent.parent
    return subprocess.Popen([sys.executable, "-m", "cli", "worker", *args], env=env, cwd=root)


async def test_killed_worker_mid_request(temporal_client, target, tmp_path):
    """SIGKILL while both requests hang: at_least_once retries on another worker with the same
    Idempotency-Key; at_most_once never sends again and fails with "outcome unknown"."""
    settings = Settings(data_dir=tmp_path, allow_private_targets=True, encryption_keys=ENCRYPTION_KEYS)
    engine = make_engine(settings)
    await create_schema(engine)
    sessions = make_sessions(engine)
    job = await add_job(sessions)
    queue = f"test-kill-{uuid.uuid4().hex[:8]}"
    least, most = unique("/least"), unique("/most")
    target.script(least, [HANG, 200])
    target.script(most, [HANG, 200])
    process = _worker_process(settings, temporal_client, queue)
    try:
        handles = [
            await start(temporal_client, queue, run_input(job, HttpAction(url=target.url(least)), FAST)),
            await start(
                temporal_client,
                queue,
                run_input(job, HttpAction(url=target.url(most)), FAST, Guarantee.AT_MOST_ONCE),
            ),
        ]
        await target.wait_for(least)
        await target.wait_for(most)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    try:
        async with build_worker(temporal_client, sessions, queue, settings=settings) as worker, worker:
            at_least_once, at_most_once = [await handle.result() for handle in handles]
    finally:
        await engine.dispose()
    # The first attempt is a local activity: the one the kill cut is run again, as attempt 1, by the
    # worker that takes the run over (an activity's would be retried as attempt 2).
    assert (at_least_once.status, at_least_once.attempts) == ("succeeded", 1)
    keys = {r.headers["Idempotency-Key"] for r in target.requests[least]}
    assert len(target.requests[least]) == 2 and keys == {handles[0].id}
    assert at_most_once.status == "failed"
    assert "outcome unknown" in (at_most_once.error or "")
    assert len(target.requests[most]) == 1


# Past the SDK's default of 100 workflow-task slots, which a run's first attempt holds until it ends, and
# past httpx's default pool of 100 connections.
WIDE = 110
# Each call's own timeout, longer than the target's wait for all of them (HANG_SECONDS): on two cores
# shared with another test file's `chronos dev`, starting 110 runs took the first calls past the default
# 30 s, and they were tried again. The test is about how many calls are in flight, not how fast they start.
WIDE_CALL_SECONDS = 90


@pytest.mark.timeout(240)
async def test_a_worker_makes_as_many_calls_at_once_as_its_concurrency(temporal_client, target, tmp_path):
    """`chronos worker --concurrency 110` has 110 slow calls in flight at once: it had 100, the rest waiting
    behind them, a wait that their attempts' timeouts counted."""
    settings = Settings(data_dir=tmp_path, allow_private_targets=True, encryption_keys=ENCRYPTION_KEYS)
    engine = make_engine(settings)
    await create_schema(engine)
    job = await add_job(make_sessions(engine))
    queue = f"test-wide-{uuid.uuid4().hex[:8]}"
    path = unique("/wide")
    release = threading.Event()
    target.script(path, [Answer(until=release)])
    process = _worker_process(settings, temporal_client, queue, "--concurrency", str(WIDE))
    try:
        action = HttpAction(url=target.url(path), timeout_seconds=WIDE_CALL_SECONDS)
        handles = [await start(temporal_client, queue, run_input(job, action)) for _ in range(WIDE)]
        try:
            await target.wait_for(path, WIDE)  # every call in flight together, none answered yet
        finally:
            release.set()
        results = [await handle.result() for handle in handles]
    finally:
        process.terminate()
        process.wait()
        await engine.dispose()
    assert {(r.status, r.attempts) for r in results} == {("succeeded", 1)}


async def test_pause_and_resume_at_once_continue_the_run(temporal_client, task_queue, job, target, sessions):
    """A resume that arrives before the interrupted attempts report back still continues the run."""
    path = unique("/blink")
    target.script(path, [500, 200])
    handle = await start(temporal_client, task_queue, run_input(job, HttpAction(url=target.url(path)), SLOW))
    await target.wait_for(path)
    await handle.signal(JobRunWorkflow.pause)
    await handle.signal(JobRunWorkflow.resume)
    result = await handle.result()
    assert (result.status, result.attempts) == ("succeeded", 2)
    assert [a.number for a in await attempts_of(sessions, handle.id)] == [1, 2]


def manual_start(job: Job) -> RunStarted:
    """The start of a new manual run of `job`, now."""
    now = utcnow()
    return RunStarted(
        run_id=f"job-{job.id}-manual-{uuid.uuid4().hex[:8]}",
        temporal_run_id="t-1",
        job_id=job.id,
        owner_id=job.owner_id,
        trigger="manual",
        scheduled_at=now,
        started_at=now,
    )


async def test_every_mirror_write_retried_lands_once(sessions):
    """Each of a run's four mirror writes, run twice (a retried activity), leaves the rows of one run."""
    job = await add_job(sessions)
    mirror, recorder = MirrorActivities(sessions), RunRecorder(sessions)
    started = manual_start(job)
    run_id = started.run_id
    failed = RunResult(status="failed", attempts=2, http_status=503, error="HTTP 503")
    action = HttpAction(url="https://example.org/hook", headers={"Authorization": "Bearer s3cret"})
    for _ in range(2):
        assert await mirror.run_started(started) is None
        async with sessions() as session:
            assert (await session.get(Job, job.id)).state == "running"
        await recorder.attempt_started(run_id, 1, LogLine(f"{run_id}:http:1:started", "info", "attempt 1"))
    for _ in range(2):
        await recorder.attempt_started(run_id, 2, LogLine(f"{run_id}:http:2:started", "info", "attempt 2"))
        lines = [
            LogLine(f"{run_id}:http:2:answer", "info", "HTTP 503"),
            LogLine(f"{run_id}:http:2:failed", "error", "attempt 2 failed"),
        ]
        await recorder.attempt_finished(
            run_id, 2, status="failed", duration_ms=7, lines=lines, http_status=503, error="HTTP 503"
        )
    finished = RunFinished(run_id=run_id, finished_at=utcnow(), result=failed, action=action)
    for _ in range(2):
        await ActivityEnvironment().run(mirror.run_finished, finished)
    # A late retry of the start changes nothing of a finished run.
    await mirror.run_started(started)
    async with sessions() as session:
        run = await session.get(Run, run_id)
        fresh = await session.get(Job, job.id)
        dead = (await session.exec(select(DeadLetter).where(DeadLetter.run_id == run_id))).all()
    attempts = [
        (a.number, a.status, a.http_status, a.duration_ms) for a in await attempts_of(sessions, run_id)
    ]
    assert attempts == [(1, "unknown", None, None), (2, "failed", 503, 7)]
    assert run is not None and fresh is not None
    assert (run.status, run.attempts, run.error, run.trigger) == ("failed", 2, "HTTP 503", "manual")
    assert run.result == {"status": "failed", "attempts": 2, "http_status": 503}
    assert run.duration_ms is not None and run.duration_ms >= 0
    assert (fresh.state, fresh.last_run_id) == ("failed", run_id)
    assert [(d.attempts, d.error, d.request["headers"]) for d in dead] == [
        (2, "HTTP 503", {"Authorization": "****"})
    ]
    assert await log_of(sessions, run_id) == [
        "attempt 1",
        "attempt 2",
        "HTTP 503",
        "attempt 2 failed",
        "run failed after 2 attempt(s): HTTP 503",
    ]


async def test_a_run_that_ends_during_its_jobs_cancel_leaves_the_job_cancelled(sessions):
    """A cancel cancels the job's runs before it commits, under the job's row lock. A run's end recorded
    meanwhile read the job as running, decided `scheduled` and wrote that over the cancel once it had
    committed: a cancelled job was live again, with no schedule. On PostgreSQL (SQLite's mirror reads
    under its write lock, so there the row cannot change in between)."""
    if sessions.kw["bind"].dialect.name != "postgresql":
        pytest.skip("SQLite's mirror reads the job under its write lock")
    job = await add_job(sessions, IntervalSchedule(every_seconds=60))
    mirror = MirrorActivities(sessions)
    started = manual_start(job)
    await mirror.run_started(started)
    result = RunResult(status="cancelled", attempts=1)
    action = HttpAction(url="https://example.org/hook")
    finished = RunFinished(run_id=started.run_id, finished_at=utcnow(), result=result, action=action)

    async def mirror_waits_for_a_lock() -> bool:
        async with sessions() as session:
            query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            return bool((await session.exec(text(query))).scalar_one())

    async with sessions() as api:
        await api.exec(update(Job).where(col(Job.id) == job.id).values(state="cancelled"))
        recording = asyncio.create_task(ActivityEnvironment().run(mirror.run_finished, finished))
        await eventually(mirror_waits_for_a_lock, "the run's end waiting for the cancel's lock")
        await api.commit()
    await recording
    async with sessions() as session:
        fresh = await session.get(Job, job.id)
        run = await session.get(Run, started.run_id)
    assert (fresh.state, fresh.last_run_id) == ("cancelled", started.run_id)
    assert run.status == "cancelled"


async def test_outside_text_that_is_no_unicode_is_recorded(sessions):
    """A mail server's reply comes with a byte that is not UTF-8 as a lone surrogate, and an answer may
    hold NUL: neither database could store either, so the attempt's write failed for ever. Both are kept
    as U+FFFD."""
    job = await add_job(sessions)
    mirror, recorder = MirrorActivities(sessions), RunRecorder(sessions)
    started = manual_start(job)
    await mirror.run_started(started)
    run_id = started.run_id
    await recorder.attempt_started(run_id, 1, LogLine(f"{run_id}:email:1:started", "info", "attempt 1"))
    said = "SMTP 550: no such user \udcff\x00"
    line = LogLine(f"{run_id}:email:1:failed", "error", f"attempt 1 failed: {said}")
    await recorder.attempt_finished(run_id, 1, status="failed", duration_ms=3, lines=[line], error=said)
    [attempt] = await attempts_of(sessions, run_id)
    assert attempt.error == "SMTP 550: no such user \ufffd\ufffd"
    assert (await log_of(sessions, run_id))[-1] == "attempt 1 failed: SMTP 550: no such user \ufffd\ufffd"


async def test_a_run_of_a_month_is_recorded_with_its_duration(sessions):
    """A month of daily retries, or a pause of as long: the run's duration in milliseconds is past a 32-bit
    integer (24.8 days), which PostgreSQL's INTEGER column refused, so the run's end was never recorded."""
    job = await add_job(sessions)
    mirror = MirrorActivities(sessions)
    started = manual_start(job)
    month_ago = started.started_at - timedelta(days=31)
    started = started.model_copy(update={"started_at": month_ago, "scheduled_at": month_ago})
    await mirror.run_started(started)
    result = RunResult(status="succeeded", attempts=31)
    action = HttpAction(url="https://example.org/hook")
    finished = RunFinished(run_id=started.run_id, finished_at=utcnow(), result=result, action=action)
    await ActivityEnvironment().run(mirror.run_finished, finished)
    async with sessions() as session:
        run = await session.get(Run, started.run_id)
    assert run is not None and run.status == "succeeded"
    assert run.duration_ms is not None and run.duration_ms >= 31 * 24 * 3600 * 1000


@pytest.mark.parametrize("one_write", [True, False], ids=["one-write", "start-then-end"])
async def test_a_record_that_ends_its_run_writes_what_a_start_and_an_end_write(sessions, one_write):
    """A quick call's one record (start, attempt, end) leaves the rows that the same parts written in
    two records do: the job's state follows both rules, the count and the log lines are all there."""
    job = await add_job(sessions)
    recorder = RunRecorder(sessions)
    started = manual_start(job)
    run_id, now = started.run_id, started.started_at
    lines = [
        RecordLine(key=f"{run_id}:http:1:started", level="info", message="attempt 1", ts=now),
        RecordLine(key=f"{run_id}:http:1:answer", level="info", message="HTTP 200", ts=now),
    ]
    attempt = AttemptRecord(
        number=1,
        started_at=now,
        status="succeeded",
        finished_at=now,
        duration_ms=3,
        http_status=200,
        lines=lines,
    )
    result = RunResult(status="succeeded", attempts=1, http_status=200)
    finished = RunFinished(run_id=run_id, finished_at=utcnow(), result=result)
    for _ in range(2):  # a retried write lands once
        if one_write:
            await recorder.record(RunRecord(started=started, attempts=[attempt], finished=finished))
        else:
            await recorder.record(RunRecord(started=started, attempts=[attempt]))
            async with sessions() as session:
                row = await session.get(Run, run_id)
                assert row is not None and row.attempts == 1
            await recorder.record(RunRecord(finished=finished))
    async with sessions() as session:
        run = await session.get(Run, run_id)
        fresh = await session.get(Job, job.id)
    assert run is not None and fresh is not None
    assert (run.status, run.attempts, run.started_at is not None) == ("succeeded", 1, True)
    # An immediate job ends with its run.
    assert (fresh.state, fresh.last_run_id) == ("completed", run_id)
    assert [(a.number, a.status, a.http_status) for a in await attempts_of(sessions, run_id)] == [
        (1, "succeeded", 200)
    ]
    assert await log_of(sessions, run_id) == ["attempt 1", "HTTP 200", "run succeeded after 1 attempt(s)"]
