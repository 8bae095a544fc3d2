"""Sign-in, registration and sign-out: the same accounts and grants as the API's auth routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from api.deps import SessionDep, SettingsDep
from api.throttle import throttled
from api.web.render import page
from api.web.session import (
    SESSION_COOKIE,
    MaybeViewer,
    Viewer,
    anonymous_cookie,
    clear_session,
    set_session,
    start_anonymous,
)
from core import auth
from core.errors import Conflict, OAuthError
from core.models import Credentials

router = APIRouter()


def _next(target: str | None) -> str:
    """Only a path of this site, so a crafted link cannot send a signed-in user elsewhere."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _form(request: Request, mode: str, next_: str, **context: object) -> HTMLResponse:
    start_anonymous(request)
    response = page(request, "login.html", {"mode": mode, "next": next_, "viewer": None, **context})
    anonymous_cookie(request, response)
    return response


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request, viewer: MaybeViewer, next: str | None = None) -> Response:
    if viewer is not None:
        return RedirectResponse(_next(next), status_code=303)
    return _form(request, "login", _next(next))


@router.get("/register", response_class=HTMLResponse)
async def register_page(request: Request) -> Response:
    return _form(request, "register", "/")


@router.post("/login", dependencies=[Depends(throttled)])
async def login(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
    next: Annotated[str, Form(max_length=2000)] = "/",
) -> Response:
    try:
        grant = await auth.password_grant(session, settings, email, password, None)
    except OAuthError as exc:
        return _form(request, "login", _next(next), email=email, error=exc.detail, status=400)
    response = RedirectResponse(_next(next), status_code=303)
    set_session(request, response, grant.refresh_token, settings.refresh_token_ttl_seconds)
    return response


@router.post("/register", dependencies=[Depends(throttled)])
async def register(
    request: Request,
    session: SessionDep,
    settings: SettingsDep,
    email: Annotated[str, Form(max_length=320)],
    password: Annotated[str, Form(max_length=1024)],
) -> Response:
    try:
        credentials = Credentials(email=email, password=password)
        user = await auth.register(session, credentials.email, credentials.password)
    except ValidationError as exc:
        error = "; ".join(f"{e['loc'][0]}: {e['msg']}" for e in exc.errors())
        return _form(request, "register", "/", email=email, error=error, status=422)
    except Conflict as exc:
        return _form(request, "register", "/", email=email, error=exc.detail, status=409)
    grant = await auth.password_grant(session, settings, credentials.email, credentials.password, None)
    response = page(request, "welcome.html", {"viewer": None, "webhook_secret": user.webhook_secret})
    set_session(request, response, grant.refresh_token, settings.refresh_token_ttl_seconds)
    return response


@router.post("/logout")
async def logout(request: Request, viewer: Viewer, session: SessionDep) -> Response:
    """Revokes the session's token, so the cookie is worthless even if it was copied."""
    await auth.revoke_refresh_token(session, viewer, request.cookies[SESSION_COOKIE])
    response = RedirectResponse("/login", status_code=303)
    clear_session(request, response)
    return response
