"""Headers every answer carries, and the one it must not: the API holds user data and is never framed. And
HEAD, an answer that is its headers alone."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Answers hold jobs, runs and tokens: no shared or browser cache keeps them.
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "frame-ancestors 'none'",
}


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every answer and drops any `server` header, so no answer names the
    software behind it (uvicorn's own is turned off where it starts: api/main.py `server_config`)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                del headers["server"]
                kept = headers.get("Referrer-Policy")  # the dashboard's pages set `same-origin`
                headers.update(SECURITY_HEADERS)
                if kept:
                    headers["Referrer-Policy"] = kept
            await send(message)

        await self.app(scope, receive, send_with_headers)


class HeadAsGet:
    """HEAD is GET without the body (RFC 9110 section 9.3.2), which FastAPI's routes do not answer: a health
    check or a link checker sending `HEAD /health` got a 405. The request goes on as a GET; its status and
    headers end the answer, and its body is never sent. The server then tells a streamed answer (a live
    page, whose first event may be seconds away) that the client has gone, so it stops."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.start":
                await send(message)
                await send({"type": "http.response.body", "body": b"", "more_body": False})

        await self.app({**scope, "method": "GET"}, receive, headers_only)
