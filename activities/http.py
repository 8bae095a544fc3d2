"""The HTTP action: one attempt per activity execution, so Temporal's retry policy drives the retries."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.attempts import LogLine, RunRecorder, failure_line, heartbeating
from core.payloads import HttpCall, HttpOutcome, masked_url
from core.targets import TargetRefused

RETRYABLE_STATUS = frozenset({408, 429})
RETRY_AFTER_STATUS = frozenset({429, 503})
# A Retry-After beyond this is read as this: one target cannot park a run for longer.
MAX_RETRY_AFTER = timedelta(days=1)
# Response bodies are kept only as an excerpt: this much is read, and less of it goes into the run log.
EXCERPT_BYTES = 2000
LOG_EXCERPT_CHARS = 300


def retry_after(response: httpx.Response) -> timedelta | None:
    """The delay a 429 or 503 asks for, in seconds or as an HTTP date; None when absent or unreadable."""
    value = response.headers.get("Retry-After")
    if response.status_code not in RETRY_AFTER_STATUS or not value:
        return None
    value = value.strip()
    if value.isdigit():
        delay = timedelta(seconds=int(value))
    else:
        try:
            delay = parsedate_to_datetime(value) - datetime.now(UTC)
        except (TypeError, ValueError):
            return None
    return min(max(delay, timedelta(0)), MAX_RETRY_AFTER)


class HttpActivities:
    """Holds one pooled httpx client (behind the SSRF guard's transport) for the worker's lifetime."""

    def __init__(self, client: httpx.AsyncClient, recorder: RunRecorder) -> None:
        self.client = client
        self.recorder = recorder

    @activity.defn(name="http_call")
    async def call(self, req: HttpCall) -> HttpOutcome:
        info = activity.info()
        number = req.attempts_made + info.attempt
        action = req.action
        prefix = f"{req.run_id}:http"
        await heartbeating(
            self.recorder.attempt_started(
                req.run_id,
                number,
                LogLine(
                    f"{prefix}:{number}:started",
                    "info",
                    f"attempt {number} started: {action.method} {masked_url(action.url)}",
                ),
            )
        )
        # Every attempt of one run carries the same key, so targets can deduplicate retries.
        headers = {"Idempotency-Key": req.run_id, **action.headers}
        started = time.monotonic()
        response: httpx.Response | None = None
        excerpt = ""
        try:
            answer, excerpt = await heartbeating(
                asyncio.wait_for(self._send(req, headers), action.timeout_seconds)
            )
            response = answer
            error = self._check(answer, excerpt, req, number)
        except TargetRefused as exc:
            error = ApplicationError(str(exc), {"attempt": number}, type="TargetRefused", non_retryable=True)
        except (httpx.TimeoutException, TimeoutError):
            error = ApplicationError(
                f"no answer within timeout_seconds={action.timeout_seconds:g}",
                {"attempt": number},
                type="HttpTimeout",
            )
        except httpx.HTTPError as exc:
            error = ApplicationError(f"network error: {exc!r}", {"attempt": number}, type="HttpNetworkError")
        duration_ms = int((time.monotonic() - started) * 1000)
        status = response.status_code if response is not None else None
        lines = []
        if response is not None:
            shown = f": {excerpt[:LOG_EXCERPT_CHARS]}" if excerpt else ""
            lines.append(
                LogLine(f"{prefix}:{number}:answer", "info", f"HTTP {status} in {duration_ms} ms{shown}")
            )
        if error is not None:
            lines.append(failure_line(prefix, info, error, number))
        await heartbeating(
            self.recorder.attempt_finished(
                req.run_id,
                number,
                status="failed" if error else "succeeded",
                duration_ms=duration_ms,
                lines=lines,
                http_status=status,
                error=error.message if error else None,
            )
        )
        if error is not None:
            raise error
        assert status is not None
        return HttpOutcome(status_code=status, duration_ms=duration_ms, attempt=number, body_excerpt=excerpt)

    async def _send(self, req: HttpCall, headers: dict[str, str]) -> tuple[httpx.Response, str]:
        """The answer and an excerpt of its body: never more than EXCERPT_BYTES of it are read."""
        action = req.action
        request = self.client.build_request(
            action.method, str(action.url), headers=headers, json=action.body, timeout=action.timeout_seconds
        )
        response = await self.client.send(request, stream=True)
        try:
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) >= EXCERPT_BYTES:
                    break
        finally:
            await response.aclose()
        return response, body[:EXCERPT_BYTES].decode(response.encoding or "utf-8", errors="replace")

    @staticmethod
    def _check(response: httpx.Response, excerpt: str, req: HttpCall, number: int) -> ApplicationError | None:
        """None for a 2xx answer, else the error that says whether another attempt may help."""
        status = response.status_code
        if 200 <= status < 300:
            return None
        message = f"HTTP {status} from {req.action.method} {masked_url(req.action.url)}"
        details = {"attempt": number, "http_status": status, "body_excerpt": excerpt}
        if status >= 500 or status in RETRYABLE_STATUS:
            return ApplicationError(
                message, details, type="HttpServerError", next_retry_delay=retry_after(response)
            )
        return ApplicationError(message, details, type="HttpClientError", non_retryable=True)
