"""The HTTP action: one attempt per activity execution, so Temporal's retry policy drives the retries."""

from __future__ import annotations

import time

import httpx
from temporalio import activity
from temporalio.exceptions import ApplicationError

from workflows.specs import HttpCall, HttpOutcome

RETRYABLE_STATUS = frozenset({408, 429})
EXCERPT_CHARS = 2000


class HttpActivities:
    """Holds one pooled httpx client for the worker's lifetime."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @activity.defn(name="http_call")
    async def call(self, req: HttpCall) -> HttpOutcome:
        info = activity.info()
        action = req.action
        # Every attempt of one run carries the same key, so targets can deduplicate retries.
        headers = {"Idempotency-Key": req.run_id, **action.headers}
        started = time.monotonic()
        try:
            response = await self.client.request(
                action.method,
                str(action.url),
                headers=headers,
                json=action.body,
                timeout=action.timeout_seconds,
            )
        except httpx.TimeoutException as exc:
            raise ApplicationError(
                f"no answer within timeout_seconds={action.timeout_seconds:g}",
                {"attempt": info.attempt},
                type="HttpTimeout",
            ) from exc
        except httpx.HTTPError as exc:
            raise ApplicationError(
                f"network error: {exc!r}", {"attempt": info.attempt}, type="HttpNetworkError"
            ) from exc
        duration_ms = int((time.monotonic() - started) * 1000)
        status = response.status_code
        if 200 <= status < 300:
            return HttpOutcome(
                status_code=status,
                duration_ms=duration_ms,
                attempt=info.attempt,
                body_excerpt=response.text[:EXCERPT_CHARS],
            )
        message = f"HTTP {status} from {action.method} {action.url}"
        details = {"attempt": info.attempt, "http_status": status}
        if status >= 500 or status in RETRYABLE_STATUS:
            raise ApplicationError(message, details, type="HttpServerError")
        raise ApplicationError(message, details, type="HttpClientError", non_retryable=True)
