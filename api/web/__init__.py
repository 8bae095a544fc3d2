"""The dashboard: server-rendered pages over the same services as the API (no rules of their own), with
vendored htmx for partial updates and server-sent events for live runs."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from api.web import account, admin, jobs, letters, overview, runs
from api.web.render import page
from api.web.session import SignInRequired, checked, optional_viewer
from core.errors import ChronosError

Handler = Callable[[Request, Exception], Awaitable[Response]]
ApiHandler = Callable[[Request, Any], Response | Awaitable[Response]]
STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """The pages, their assets under /ui/static, and error answers as pages for dashboard requests (the
    API's own requests keep their problem+json answers)."""
    for module in (account, overview, jobs, runs, letters, admin):
        app.include_router(module.router, dependencies=[Depends(checked)], include_in_schema=False)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")
    app.add_exception_handler(SignInRequired, _sign_in)
    for kind in (ChronosError, HTTPException, RequestValidationError):
        app.add_exception_handler(kind, _as_page(app.exception_handlers[kind]))


async def _sign_in(request: Request, _: Exception) -> Response:
    target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""), safe="/")
    if request.headers.get("HX-Request"):
        return Response(status_code=204, headers={"HX-Redirect": f"/login?next={target}"})
    return RedirectResponse(f"/login?next={target}", status_code=303)


def _as_page(api_handler: ApiHandler) -> Handler:
    async def handle(request: Request, exc: Exception) -> Response:
        if not getattr(request.state, "web", False):
            answer = api_handler(request, exc)
            return answer if isinstance(answer, Response) else await answer
        if isinstance(exc, ChronosError):
            status, title, detail = exc.status, exc.title, exc.detail
        elif isinstance(exc, HTTPException):
            status, title, detail = exc.status_code, "Error", str(exc.detail)
        else:
            status, title, detail = 422, "Invalid request", "the address or form has a value out of range"
        viewer = await optional_viewer(request, request.app.state.sessions)
        return page(
            request, "error.html", {"viewer": viewer, "title": title, "detail": detail}, status=status
        )

    return handle
