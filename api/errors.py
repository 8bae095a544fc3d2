"""Every error leaves the API as RFC 9457 application/problem+json, and a client's mistake never as a 500."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.headers import SECURITY_HEADERS
from api.openapi import PROBLEM, Problem, allowed_methods
from core.errors import ChronosError, TooManyRequests, Unauthorized

log = logging.getLogger("chronos.api")

# Fields holding a union told apart by `type`: pydantic puts the type in the error path.
TAGGED = {
    "schedule": {"immediate", "once", "cron", "interval"},
    "action": {"http", "email"},
}
TITLES = {400: "Malformed request", 404: "Not found", 405: "Method not allowed", 413: "Body too large"}


def problem(
    status: int,
    title: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    """The one way an error answer is made, so every one has the documented shape."""
    body = Problem(title=title, status=status, detail=detail, **extra).model_dump(
        mode="json", exclude_none=True
    )
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers=headers)


def user_loc(loc: Sequence[Any]) -> list[Any]:
    """The field path as users wrote it: without pydantic's union-member tags (`schedule.cron.timezone`
    becomes `schedule.timezone`) or validator names (`function-after[...]`)."""
    path: list[Any] = []
    for i, part in enumerate(loc):
        tags = TAGGED.get(loc[i - 1], ()) if i and isinstance(loc[i - 1], str) else ()
        if isinstance(part, str) and ("[" in part or part in tags):
            continue
        path.append(part)
    return path


async def _validation(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e["type"] == "json_invalid" for e in errors):
        return problem(400, "Malformed request", "the body is not valid JSON")
    items = [{"loc": user_loc(e["loc"]), "msg": e["msg"]} for e in errors]
    first = items[0]
    where = ".".join(str(p) for p in first["loc"][1:]) or "body"
    detail = f"{where}: {first['msg']}" + (f" (and {len(items) - 1} more)" if len(items) > 1 else "")
    return problem(422, "Invalid request", detail, errors=items)


async def _domain(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ChronosError)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    if isinstance(exc, TooManyRequests):
        headers = {"Retry-After": str(exc.retry_after)}
    if exc.status == 503:
        log.warning("dependency down: %s", exc.detail)
    return problem(exc.status, exc.title, exc.detail, headers=headers, **exc.extra())


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    title = TITLES.get(exc.status_code, "Error")
    headers = exc.headers
    # The router's Allow names only the first route's methods; the path may have more.
    if exc.status_code == 405 and (methods := allowed_methods(request.app, request.url.path)):
        headers = {"Allow": ", ".join(methods)}
    return problem(exc.status_code, title, str(exc.detail), headers=headers)


async def _database(_: Request, exc: Exception) -> JSONResponse:
    log.warning("database error: %s", exc)
    return problem(503, "Service unavailable", "the database is unreachable; try again shortly")


async def _busy(_: Request, exc: Exception) -> JSONResponse:
    """The pool's wait for a connection ran out (`CHRONOS_DB_TIMEOUT_SECONDS`): every one is in use. A
    burst is not the client's mistake nor a bug, so not a 500."""
    log.warning("database busy: %s", exc)
    return problem(
        503,
        "Service unavailable",
        "every database connection is in use; try again shortly",
        headers={"Retry-After": "1"},
    )


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", exc_info=exc)
    # Answered outside the middleware (Starlette's outermost layer), so the headers are added here.
    return problem(
        500, "Internal error", "an unexpected error happened; it has been logged", headers=SECURITY_HEADERS
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(ChronosError, _domain)
    app.add_exception_handler(HTTPException, _http)
    app.add_exception_handler(OperationalError, _database)
    app.add_exception_handler(InterfaceError, _database)
    app.add_exception_handler(PoolTimeout, _busy)
    app.add_exception_handler(Exception, _unexpected)


class BodyLimit:
    """413 for bodies over the limit, declared or streamed, before any route reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._too_large(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise HTTPException(413, f"the body is over {self.max_bytes} bytes")
            return message

        await self.app(scope, limited, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(413, "Body too large", f"the body is over {self.max_bytes} bytes")
        await response(scope, receive, send)
