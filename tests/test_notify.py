"""Notifications after a run: emails to a real SMTP server and a signed webhook verified here."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlmodel import col, select
from temporalio.client import Client

from core.config import Settings
from core.db import Sessions
from core.models import Job, RunLog, User
from core.payloads import LOCAL_FIRST, HttpAction, NotifySpec, RetrySpec, RunInput, RunResult
from tests.histories import keep
from tests.http_target import Answer
from tests.mirror_rows import add_job
from tests.smtp_server import SmtpSink, start_smtp
from worker import build_worker
from workflows.run_job import JobRunWorkflow

FAST = RetrySpec(max_attempts=2, backoff="fixed", initial_interval_seconds=0.1, max_interval_seconds=0.1)


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    sink, controller = start_smtp()
    yield sink
    controller.stop()


@pytest.fixture(scope="module")
async def task_queue(
    temporal_client: Client, sessions: Sessions, smtp: SmtpSink, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[str]:
    settings = Settings(
        data_dir=tmp_path_factory.mktemp("notify"),
        smtp_url=f"smtp://127.0.0.1:{smtp.port}",
        allow_private_targets=True,
    )
    queue = f"test-notify-{uuid.uuid4().hex[:8]}"
    async with build_worker(temporal_client, sessions, queue, settings=settings) as worker, worker:
        yield queue


@pytest.fixture(scope="module")
async def job(sessions: Sessions) -> Job:
    return await add_job(sessions)


def fresh(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}"


async def run(
    client: Client, queue: str, job: Job, url: str, notify: NotifySpec, history: str = ""
) -> RunResult:
    spec = RunInput(
        job_id=job.id,
        owner_id=job.owner_id,
        job_name="Nightly sync",
        action=HttpAction(url=url),
        retry=FAST,
        notify=notify,
        layout=LOCAL_FIRST,
    )
    handle = await client.start_workflow(
        JobRunWorkflow.run, spec, id=f"job-{job.id}-manual-{fresh('run')}", task_queue=queue
    )
    result = await handle.result()
    if history:
        await keep(history, handle)
    return result


async def log_of(sessions: Sessions, job: Job) -> list[str]:
    async with sessions() as session:
        rows = await session.exec(
            select(RunLog).where(col(RunLog.run_id).startswith(f"job-{job.id}-")).order_by(col(RunLog.id))
        )
        return [line.message for line in rows.all()]


async def test_failure_sends_email_and_a_signed_webhook(
    temporal_client, task_queue, job, target, smtp, sessions
):
    ops, hook, action = f"{fresh('ops')}@example.org", f"/{fresh('hook')}", f"/{fresh('broken')}"
    target.script(action, [404])
    notify = NotifySpec(on_failure=[ops], on_success=["happy@example.org"], webhook_url=target.url(hook))
    result = await run(temporal_client, task_queue, job, target.url(action), notify, history="notify_failure")
    assert result.status == "failed"

    [mail] = smtp.to(ops)
    assert mail["Subject"] == "[Chronos] Nightly sync failed"
    assert "HTTP 404" in mail.get_content()

    [request] = target.requests[hook]
    async with sessions() as session:
        owner = await session.get(User, job.owner_id)
    assert owner is not None
    expected = "sha256=" + hmac.new(owner.webhook_secret.encode(), request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["X-Chronos-Signature"], expected)
    assert request.headers["X-Chronos-Timestamp"].isdigit()
    body = json.loads(request.body)
    assert (body["event"], body["job_id"], body["status"], body["attempts"]) == (
        "run.failed",
        job.id,
        "failed",
        1,
    )
    assert body["http_status"] == 404

    log = await log_of(sessions, job)
    assert any(line.startswith(f"notification sent: email to {ops}") for line in log)
    assert any(
        line.startswith(f"notification sent: webhook {target.url(hook)} answered HTTP 200") for line in log
    )


async def test_success_notifies_on_success_only(temporal_client, task_queue, job, target, smtp):
    ops, fan = f"{fresh('ops')}@example.org", f"{fresh('fan')}@example.org"
    await run(
        temporal_client, task_queue, job, target.url("/ok"), NotifySpec(on_failure=[ops], on_success=[fan])
    )
    assert smtp.to(ops) == []
    [mail] = smtp.to(fan)
    assert mail["Subject"] == "[Chronos] Nightly sync succeeded"


async def test_webhook_retries_on_its_own_policy(temporal_client, task_queue, job, target):
    hook = f"/{fresh('flaky-hook')}"
    target.script(hook, [503, 200])
    result = await run(
        temporal_client, task_queue, job, target.url("/ok"), NotifySpec(webhook_url=target.url(hook))
    )
    assert result.status == "succeeded"
    assert len(target.requests[hook]) == 2
    run_id = json.loads(target.requests[hook][0].body)["run_id"]
    assert {r.headers["Idempotency-Key"] for r in target.requests[hook]} == {f"{run_id}:run.succeeded"}


async def test_a_webhook_is_judged_by_its_status_alone(temporal_client, task_queue, job, target, sessions):
    """Its body is never read: a 200 whose body is not the gzip it claims was a network error, and the
    notice was sent again by every retry."""
    hook = f"/{fresh('gzip-hook')}"
    target.script(hook, [Answer(200, {"Content-Encoding": "gzip"}, body=b"plain, not gzip")])
    result = await run(
        temporal_client, task_queue, job, target.url("/ok"), NotifySpec(webhook_url=target.url(hook))
    )
    assert result.status == "succeeded" and len(target.requests[hook]) == 1
    sent = f"notification sent: webhook {target.url(hook)} answered HTTP 200"
    assert any(line.startswith(sent) for line in await log_of(sessions, job))


async def test_a_webhook_that_refuses_does_not_change_the_run(
    temporal_client, task_queue, job, target, sessions
):
    hook = f"/{fresh('gone-hook')}"
    target.script(hook, [410])
    result = await run(
        temporal_client, task_queue, job, target.url("/ok"), NotifySpec(webhook_url=target.url(hook))
    )
    assert (result.status, result.attempts) == ("succeeded", 1)
    assert len(target.requests[hook]) == 1
    log = await log_of(sessions, job)
    assert any("webhook attempt 1 failed: webhook answered HTTP 410; not retryable" in line for line in log)


async def test_a_webhook_to_a_refused_address_is_logged_not_sent(
    temporal_client, task_queue, job, target, sessions
):
    """Webhooks go through the same SSRF guard as HTTP actions: metadata addresses never get a request."""
    notify = NotifySpec(webhook_url="http://169.254.169.254/latest/meta-data/")
    result = await run(temporal_client, task_queue, job, target.url("/ok"), notify)
    assert result.status == "succeeded"
    log = await log_of(sessions, job)
    assert any("webhook attempt 1 failed: target refused" in line and "not retryable" in line for line in log)
