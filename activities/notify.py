"""Notifications after a run ends: emails to `notify.on_failure` / `on_success` and a signed JSON webhook.

The webhook body is the `RunNotice` JSON; `X-Chronos-Signature: sha256=<hex>` is the HMAC-SHA256 of the
exact body bytes under the owner's `webhook_secret`, so a receiver verifies it before parsing. The body
carries `finished_at` and `run_id` (signed, for replay checks); `X-Chronos-Timestamp` (Unix seconds) says
when this delivery was sent and `Idempotency-Key` is the same for every retry of one notification.
"""

from __future__ import annotations

import hashlib
import hmac
import time

import aiosmtplib
import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.attempts import LogLine, RunRecorder, failure_line, heartbeating
from activities.email import Mailer, smtp_error
from core.db import Sessions
from core.models import User
from core.payloads import EmailNotice, ErrorType, RunNotice, WebhookNotice, masked_url
from core.targets import TargetRefused

SIGNATURE_HEADER = "X-Chronos-Signature"
TIMESTAMP_HEADER = "X-Chronos-Timestamp"
WEBHOOK_TIMEOUT_SECONDS = 15


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def notice_text(notice: RunNotice) -> tuple[str, str]:
    """Subject and text of a notification email."""
    outcome = {"run.succeeded": "succeeded", "run.failed": "failed"}.get(notice.event, "missed a fire")
    subject = f"[Chronos] {notice.job_name or notice.job_id} {outcome}"
    lines = [
        f"Job:      {notice.job_name} ({notice.job_id})",
        f"Run:      {notice.run_id}",
        f"Status:   {notice.status}",
        f"Attempts: {notice.attempts}",
        f"Finished: {notice.finished_at.isoformat()}",
    ]
    if notice.http_status is not None:
        lines.append(f"HTTP:     {notice.http_status}")
    if notice.error:
        lines.append(f"Error:    {notice.error}")
    return subject, "\n".join(lines) + "\n"


class NotifyActivities:
    def __init__(
        self, client: httpx.AsyncClient, mailer: Mailer, sessions: Sessions, recorder: RunRecorder
    ) -> None:
        self.client = client
        self.mailer = mailer
        self.sessions = sessions
        self.recorder = recorder

    @activity.defn(name="notify_email")
    async def email(self, req: EmailNotice) -> None:
        info = activity.info()
        notice = req.notice
        prefix = f"{notice.run_id}:notify-email"
        subject, text = notice_text(notice)
        key = f"{notice.run_id}-{notice.event}"
        try:
            where = await heartbeating(self.mailer.send(key, self.mailer.compose(key, req.to, subject, text)))
        except (aiosmtplib.SMTPException, OSError) as exc:
            error = smtp_error(exc, info.attempt)
            await self.recorder.log(
                notice.run_id, failure_line(prefix, info, error, info.attempt, "notification email")
            )
            raise error from exc
        recipients = ", ".join(req.to)
        await self.recorder.log(
            notice.run_id,
            LogLine(f"{prefix}:sent", "info", f"notification sent: email to {recipients} via {where}"),
        )

    async def _post(self, url: str, body: bytes, headers: dict[str, str]) -> int:
        """The webhook's status. Its body is never read: a huge one cannot fill the worker's memory, and one
        that does not decode cannot turn a delivered notice into a failed one, sent again."""
        request = self.client.build_request(
            "POST", url, content=body, headers=headers, timeout=WEBHOOK_TIMEOUT_SECONDS
        )
        response = await self.client.send(request, stream=True)
        await response.aclose()
        return response.status_code

    @activity.defn(name="notify_webhook")
    async def webhook(self, req: WebhookNotice) -> None:
        info = activity.info()
        notice = req.notice
        prefix = f"{notice.run_id}:notify-webhook"
        async with self.sessions() as session:
            owner = await session.get(User, notice.owner_id)
        if owner is None:
            raise ApplicationError(
                f"owner {notice.owner_id} is gone", type=ErrorType.WEBHOOK_REJECTED, non_retryable=True
            )
        body = notice.model_dump_json().encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(owner.webhook_secret, body),
            TIMESTAMP_HEADER: str(int(time.time())),
            "Idempotency-Key": f"{notice.run_id}:{notice.event}",
        }
        error: ApplicationError | None = None
        try:
            status = await heartbeating(self._post(req.url, body, headers))
        except TargetRefused as exc:
            error = ApplicationError(str(exc), type=ErrorType.TARGET_REFUSED, non_retryable=True)
        except httpx.HTTPError as exc:
            error = ApplicationError(f"webhook network error: {exc!r}", type=ErrorType.WEBHOOK_ERROR)
        else:
            if status >= 500 or status in (408, 429):
                error = ApplicationError(f"webhook answered HTTP {status}", type=ErrorType.WEBHOOK_ERROR)
            elif status >= 300:
                error = ApplicationError(
                    f"webhook answered HTTP {status}", type=ErrorType.WEBHOOK_REJECTED, non_retryable=True
                )
        if error is not None:
            await self.recorder.log(
                notice.run_id, failure_line(prefix, info, error, info.attempt, "webhook attempt")
            )
            raise error
        await self.recorder.log(
            notice.run_id,
            LogLine(
                f"{prefix}:sent",
                "info",
                f"notification sent: webhook {masked_url(req.url)} answered HTTP {status}",
            ),
        )
