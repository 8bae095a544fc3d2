"""The email action through a real SMTP server (aiosmtpd), and the dev outbox when no server is configured."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes, policy

import aiosmtplib
import pytest
from sqlmodel import col, select
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client

from activities.email import SmtpServer, smtp_error
from core.config import Settings
from core.db import Sessions
from core.models import Attempt, Job, RunLog
from core.payloads import LOCAL_FIRST, EmailAction, RunInput, RunResult
from core.temporal import data_converter
from tests.api_client import ENCRYPTION_KEYS
from tests.histories import keep
from tests.mirror_rows import add_job
from tests.smtp_server import SmtpSink, start_smtp
from worker import build_worker
from workflows.run_job import JobRunWorkflow


@pytest.fixture(scope="module")
def smtp() -> Iterator[SmtpSink]:
    sink, controller = start_smtp()
    yield sink
    controller.stop()


@pytest.fixture(scope="module")
def smtp_settings(smtp: SmtpSink, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(
        data_dir=tmp_path_factory.mktemp("email"),
        smtp_url=f"smtp://127.0.0.1:{smtp.port}",
        smtp_from="chronos@example.org",
    )


@pytest.fixture(scope="module")
def outbox_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings(data_dir=tmp_path_factory.mktemp("outbox"), smtp_url=None)


@pytest.fixture(scope="module")
async def queues(
    temporal_client: Client, sessions: Sessions, smtp_settings: Settings, outbox_settings: Settings
) -> AsyncIterator[dict[str, str]]:
    """One worker that sends through SMTP and one with no SMTP server configured."""
    smtp_queue, outbox_queue = (f"test-email-{uuid.uuid4().hex[:8]}" for _ in range(2))
    async with (
        build_worker(temporal_client, sessions, smtp_queue, settings=smtp_settings) as smtp_worker,
        build_worker(temporal_client, sessions, outbox_queue, settings=outbox_settings) as outbox_worker,
        smtp_worker,
        outbox_worker,
    ):
        yield {"smtp": smtp_queue, "outbox": outbox_queue}


@pytest.fixture(scope="module")
async def job(sessions: Sessions) -> Job:
    return await add_job(sessions)


def address(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:6]}@example.org"


async def send(
    client: Client, queue: str, job: Job, action: EmailAction, history: str = ""
) -> tuple[str, RunResult]:
    spec = RunInput(job_id=job.id, owner_id=job.owner_id, action=action, layout=LOCAL_FIRST)
    handle = await client.start_workflow(
        JobRunWorkflow.run, spec, id=f"job-{job.id}-manual-{uuid.uuid4().hex[:8]}", task_queue=queue
    )
    result = await handle.result()
    if history:
        await keep(history, handle)
    return handle.id, result


async def log_of(sessions: Sessions, run_id: str) -> list[str]:
    async with sessions() as session:
        rows = await session.exec(select(RunLog).where(RunLog.run_id == run_id).order_by(col(RunLog.id)))
        return [line.message for line in rows.all()]


async def test_email_action_sends_text_and_html(temporal_client, queues, job, smtp, sessions):
    to, cc = address("ops"), address("boss")
    action = EmailAction(
        to=[to], cc=[cc], subject="Nightly report", body="All good.", html="<p>All good.</p>"
    )
    run_id, result = await send(temporal_client, queues["smtp"], job, action, history="email")
    assert (result.status, result.attempts) == ("succeeded", 1)
    [message] = smtp.to(to)
    assert smtp.to(cc) == [message]
    assert (message["From"], message["To"], message["Cc"]) == ("chronos@example.org", to, cc)
    assert message["Subject"] == "Nightly report"
    assert message.get_content_type() == "multipart/alternative"
    text, html = (part.get_content() for part in message.iter_parts())
    assert (text.strip(), html.strip()) == ("All good.", "<p>All good.</p>")
    async with sessions() as session:
        attempt = (await session.exec(select(Attempt).where(Attempt.run_id == run_id))).one()
    assert (attempt.number, attempt.status) == (1, "succeeded")
    assert any(
        line.startswith(f"email sent to {to}, {cc} via SMTP server")
        for line in await log_of(sessions, run_id)
    )


async def test_refused_recipient_fails_the_run_at_once(temporal_client, queues, job, smtp):
    action = EmailAction(to=[f"nobody@{uuid.uuid4().hex[:6]}.example.org"], subject="x", body="x")
    _, result = await send(temporal_client, queues["smtp"], job, action)
    assert (result.status, result.attempts) == ("failed", 1)
    assert "recipients refused" in (result.error or "")


@pytest.mark.parametrize(
    "refusal",
    [
        aiosmtplib.SMTPResponseException(550, "no such user \udcff"),
        aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(550, "no \udcfe", "a@b.org")]),
    ],
)
def test_a_reply_that_is_no_utf8_makes_a_failure_temporal_takes(refusal: Exception) -> None:
    """aiosmtplib decodes a reply's byte that is not UTF-8 as a lone surrogate: the failure carrying it
    could not be encoded for Temporal (UnicodeEncodeError)."""
    error = smtp_error(refusal, 1)
    assert "\ufffd" in error.message
    converter = data_converter(Settings(encryption_keys=ENCRYPTION_KEYS))
    converter.failure_converter.to_failure(error, converter.payload_converter, Failure())


async def test_without_smtp_url_mail_is_kept_in_the_outbox(
    temporal_client, queues, job, outbox_settings, sessions
):
    to = address("dev")
    action = EmailAction(to=[to], subject="Dev mail", body="kept, not sent")
    run_id, result = await send(temporal_client, queues["outbox"], job, action)
    assert result.status == "succeeded"
    [path] = (outbox_settings.data_dir / "outbox").glob(f"{run_id}*.eml")
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert (message["To"], message["Subject"]) == (to, "Dev mail")
    assert any(
        "outbox file" in line and "CHRONOS_SMTP_URL is not set" in line
        for line in await log_of(sessions, run_id)
    )


async def test_smtp_login_from_the_url(temporal_client, sessions, job, tmp_path):
    """User and password of CHRONOS_SMTP_URL log in; a wrong password is a 5xx that no retry fixes."""
    sink, controller = start_smtp(login=("mailer", "p@ss:word"))
    good, bad = (f"test-email-auth-{uuid.uuid4().hex[:8]}" for _ in range(2))
    url = f"smtp://mailer:{{}}@127.0.0.1:{sink.port}"
    good_settings = Settings(data_dir=tmp_path, smtp_url=url.format("p%40ss%3Aword"))
    bad_settings = Settings(data_dir=tmp_path, smtp_url=url.format("wrong"))
    to = address("authed")
    try:
        async with (
            build_worker(temporal_client, sessions, good, settings=good_settings) as good_worker,
            build_worker(temporal_client, sessions, bad, settings=bad_settings) as bad_worker,
            good_worker,
            bad_worker,
        ):
            _, sent = await send(temporal_client, good, job, EmailAction(to=[to], subject="in", body="x"))
            _, refused = await send(temporal_client, bad, job, EmailAction(to=[to], subject="out", body="x"))
    finally:
        controller.stop()
    assert sent.status == "succeeded"
    assert [m["Subject"] for m in sink.to(to)] == ["in"]
    assert (refused.status, refused.attempts) == ("failed", 1)
    assert "SMTP 535" in (refused.error or "")


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.example.org", SmtpServer("mail.example.org", 25, None, None, False, None)),
        ("smtp://u%40x:p%3Aw@mail:2525", SmtpServer("mail", 2525, "u@x", "p:w", False, None)),
        ("smtp://mail?starttls=true", SmtpServer("mail", 587, None, None, False, True)),
        ("smtp://mail:25?starttls=false", SmtpServer("mail", 25, None, None, False, False)),
        ("smtps://u:p@mail", SmtpServer("mail", 465, "u", "p", True, False)),
    ],
)
def test_smtp_url_forms(url: str, expected: SmtpServer) -> None:
    assert SmtpServer.from_url(url) == expected


def test_smtp_url_must_be_smtp() -> None:
    with pytest.raises(ValueError, match="smtp://"):
        SmtpServer.from_url("http://mail")
