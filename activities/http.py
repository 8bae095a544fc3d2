"""The HTTP action: one attempt per activity execution, so Temporal's retry policy drives the retries."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.attempts import ActionAttempt, RunRecorder
from core.payloads import ErrorType, HttpCall, HttpOutcome, masked_url
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
    if value.isascii() and value.isdigit():  # `isdigit` alone takes '²', which `int` refuses
        # Ten digits or more are past the cap anyway; `int` and `timedelta` refuse a long enough run of them.
        delay = timedelta(seconds=int(value)) if len(value) < 10 else MAX_RETRY_AFTER
    else:
        try:
            delay = parsedate_to_datetime(value) - datetime.now(UTC)
        except (TypeError, ValueError):
            return None
    return min(max(delay, timedelta(0)), MAX_RETRY_AFTER)


def excerpt_of(body: bytes, encoding: str | None) -> str:
    """The body as text in the charset the answer names, or UTF-8 when that is no text encoding Python can
    decode with replacement (`rot13`, `base64`, `idna`, …): a target's header never fails the call."""
    try:
        return body.decode(encoding or "utf-8", errors="replace")
    except (LookupError, UnicodeError):
        return body.decode("utf-8", errors="replace")


class HttpActivities:
    """Holds one pooled httpx client (behind the SSRF guard's transport) for the worker's lifetime."""

    def __init__(self, client: httpx.AsyncClient, recorder: RunRecorder) -> None:
        self.client = client
        self.recorder = recorder

    @activity.defn(name="http_call")
    async def call(self, req: HttpCall) -> HttpOutcome:
        action = req.action
        what = f"{action.method} {masked_url(action.url)}"
        async with ActionAttempt(
            self.recorder, req.run_id, "http", req.attempts_made, what, req.started, action, req.carried
        ) as attempt:
            number = attempt.number
            # Every attempt of one run carries the same key, so targets can deduplicate retries.
            headers = {"Idempotency-Key": req.run_id, **action.headers}
            try:
                response, excerpt = await attempt.perform(self._send(req, headers))
            except TargetRefused as exc:
                raise ApplicationError(
                    str(exc), {"attempt": number}, type=ErrorType.TARGET_REFUSED, non_retryable=True
                ) from None
            except (httpx.TimeoutException, TimeoutError):
                raise ApplicationError(
                    f"no answer within timeout_seconds={action.timeout_seconds:g}",
                    {"attempt": number},
                    type=ErrorType.HTTP_TIMEOUT,
                ) from None
            except httpx.HTTPError as exc:
                raise ApplicationError(
                    f"network error: {exc!r}", {"attempt": number}, type=ErrorType.HTTP_NETWORK_ERROR
                ) from None
            status = attempt.http_status = response.status_code
            shown = f": {excerpt[:LOG_EXCERPT_CHARS]}" if excerpt else ""
            attempt.lines.append(attempt.line("answer", f"HTTP {status} in {attempt.duration_ms} ms{shown}"))
            error = self._check(response, excerpt, req, number)
            if error is not None:
                raise error
            outcome = HttpOutcome(
                status_code=status, duration_ms=attempt.duration_ms, attempt=number, body_excerpt=excerpt
            )
        # Known only once the attempt has written its outcome, when leaving its context.
        outcome.unrecorded = attempt.unrecorded
        return outcome

    async def _send(self, req: HttpCall, headers: dict[str, str]) -> tuple[httpx.Response, str]:
        """The answer and an excerpt of its body: never more than EXCERPT_BYTES of it are read, all within
        timeout_seconds. Without a status by then there is no answer (TimeoutError); once the status is in,
        the target has answered, and a body that trickles past the deadline, breaks off, or does not
        decompress as its Content-Encoding says is noted in the excerpt: the status stands, where a retry
        would only call the target again."""
        action = req.action
        request = self.client.build_request(
            action.method, str(action.url), headers=headers, json=action.body, timeout=action.timeout_seconds
        )
        deadline = asyncio.get_running_loop().time() + action.timeout_seconds
        async with asyncio.timeout_at(deadline):
            response = await self.client.send(request, stream=True)
        try:
            body = bytearray()
            async with asyncio.timeout_at(deadline):
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= EXCERPT_BYTES:
                        break
        except TimeoutError:
            return response, f"(the body did not arrive within timeout_seconds={action.timeout_seconds:g})"
        except httpx.HTTPError as exc:
            return response, f"(the body could not be read: {type(exc).__name__}: {exc})"
        finally:
            await response.aclose()
        return response, excerpt_of(bytes(body[:EXCERPT_BYTES]), response.encoding)

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
                message, details, type=ErrorType.HTTP_SERVER_ERROR, next_retry_delay=retry_after(response)
            )
        return ApplicationError(message, details, type=ErrorType.HTTP_CLIENT_ERROR, non_retryable=True)
