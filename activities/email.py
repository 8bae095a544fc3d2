"""The email action and the mailer that notifications share: SMTP through aiosmtplib, or the dev outbox.

`CHRONOS_SMTP_URL` says how to reach the server:

- `smtp://user:pass@host:port` (port 25 by default): STARTTLS when the server offers it;
  add `?starttls=true` to require it (port 587 by default) or `?starttls=false` never to use it.
- `smtps://user:pass@host:port` (port 465 by default): implicit TLS from the first byte.

User and password are optional and URL-encoded. Without `CHRONOS_SMTP_URL` every message is written as an
`.eml` file into `<data_dir>/outbox/` instead, and the run log says so: development needs no mail server.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import aiosmtplib
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.attempts import ActionAttempt, RunRecorder
from core.config import Settings
from core.payloads import EmailAction, EmailOutcome, EmailSend, ErrorType, unicode_text

SMTP_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    username: str | None
    password: str | None
    use_tls: bool
    start_tls: bool | None

    @classmethod
    def from_url(cls, url: str) -> SmtpServer:
        parts = urlsplit(url)
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError("CHRONOS_SMTP_URL must look like smtp://user:pass@host:port or smtps://…")
        flag = parse_qs(parts.query).get("starttls", [""])[0].lower()
        start_tls = {"true": True, "1": True, "false": False, "0": False}.get(flag)
        use_tls = parts.scheme == "smtps"
        default_port = 465 if use_tls else 587 if start_tls else 25
        return cls(
            host=parts.hostname,
            port=parts.port or default_port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=use_tls,
            start_tls=False if use_tls else start_tls,
        )


class Mailer:
    """Sends one message through the configured SMTP server, or keeps it in the outbox when there is none."""

    def __init__(self, settings: Settings) -> None:
        self.server = SmtpServer.from_url(settings.smtp_url) if settings.smtp_url else None
        self.sender = settings.smtp_from
        self.outbox = settings.data_dir / "outbox"

    def compose(
        self,
        key: str,
        to: list[str],
        subject: str,
        text: str,
        html: str | None = None,
        cc: list[str] | None = None,
    ) -> EmailMessage:
        """A message whose Message-ID derives from `key`, so a resent retry can be recognised as one."""
        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = ", ".join(to)
        if cc:
            message["Cc"] = ", ".join(cc)
        message["Subject"] = subject
        message["Message-ID"] = f"<{_safe(key)}@chronos>"
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")  # multipart/alternative: text first, then HTML
        return message

    async def send(self, key: str, message: EmailMessage) -> str:
        """Deliver `message`; returns where it went, for the run log."""
        if self.server is None:
            path = self.outbox / f"{_safe(key)}.eml"
            await asyncio.to_thread(_write, path, bytes(message))
            return f"outbox file {path} (CHRONOS_SMTP_URL is not set)"
        server = self.server
        await aiosmtplib.send(
            message,
            hostname=server.host,
            port=server.port,
            username=server.username,
            password=server.password,
            use_tls=server.use_tls,
            start_tls=server.start_tls,
            timeout=SMTP_TIMEOUT_SECONDS,
        )
        return f"SMTP server {server.host}:{server.port}"


def _safe(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)  # a reader never sees half a message


def smtp_error(exc: Exception, number: int) -> ApplicationError:
    """5xx answers (refused recipient or sender, failed auth) need a change, not another attempt. The
    server's words come as aiosmtplib decodes them, a byte that is not UTF-8 as a lone surrogate: made
    Unicode first, or the failure could not be sent to Temporal nor the attempt stored."""
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        refused = "; ".join(f"{r.recipient}: {r.code} {unicode_text(r.message)}" for r in exc.recipients)
        return ApplicationError(
            f"recipients refused: {refused}",
            {"attempt": number},
            type=ErrorType.EMAIL_REJECTED,
            non_retryable=True,
        )
    if isinstance(exc, aiosmtplib.SMTPResponseException) and exc.code >= 500:
        return ApplicationError(
            f"SMTP {exc.code}: {unicode_text(exc.message)}",
            {"attempt": number},
            type=ErrorType.EMAIL_REJECTED,
            non_retryable=True,
        )
    return ApplicationError(f"SMTP error: {exc!r}", {"attempt": number}, type=ErrorType.EMAIL_ERROR)


class EmailActivities:
    def __init__(self, mailer: Mailer, recorder: RunRecorder) -> None:
        self.mailer = mailer
        self.recorder = recorder

    @activity.defn(name="email_send")
    async def send(self, req: EmailSend) -> EmailOutcome:
        action: EmailAction = req.action
        recipients = ", ".join([*action.to, *action.cc])
        what = f"email to {recipients}"
        async with ActionAttempt(
            self.recorder, req.run_id, "email", req.attempts_made, what, req.started, action, req.carried
        ) as attempt:
            message = self.mailer.compose(
                req.run_id, list(action.to), action.subject, action.body, action.html, list(action.cc)
            )
            try:
                where = await attempt.perform(self.mailer.send(req.run_id, message))
            except (aiosmtplib.SMTPException, OSError) as exc:
                raise smtp_error(exc, attempt.number) from None
            attempt.lines.append(
                attempt.line("sent", f"email sent to {recipients} via {where} in {attempt.duration_ms} ms")
            )
            outcome = EmailOutcome(attempt=attempt.number, delivered_to=where)
        outcome.unrecorded = attempt.unrecorded
        return outcome
