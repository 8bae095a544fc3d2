"""The dashboard's sign-in and request checks: the session cookie, the CSRF token and the Origin rule.

The session cookie carries the refresh token of a password login (core/auth/_sessions.py); a
state-changing request also needs a CSRF token bound to that session (an anonymous form, sign-in and
registration, a double-submit cookie instead) and an Origin header naming this very site."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated

from fastapi import Depends, Request, Response
from fastapi.security import SecurityScopes

from api.deps import SAFE_METHODS, SessionDep, SessionsDep, SettingsDep, current_principal, oauth2_scheme
from core.auth import Principal, session_principal, signing_key
from core.config import Settings
from core.errors import Forbidden, Unauthorized

SESSION_COOKIE = "chronos_session"
ANON_COOKIE = "chronos_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


class SignInRequired(Exception):
    """A page asked for without a valid session: the answer sends the browser to /login."""


def csrf_token(settings: Settings, request: Request) -> str:
    """The token a form of this browser must send back: bound to its session when signed in, else to its
    anonymous cookie (set by `anonymous_cookie` on the sign-in and registration pages)."""
    session = request.cookies.get(SESSION_COOKIE)
    if session:
        key = signing_key(settings).raw_value
        return hmac.new(key, b"csrf:" + session.encode(), hashlib.sha256).hexdigest()
    return str(request.cookies.get(ANON_COOKIE) or getattr(request.state, "anon_csrf", ""))


def start_anonymous(request: Request) -> None:
    """A double-submit value for the forms shown before a session exists (sign-in, registration)."""
    if not request.cookies.get(ANON_COOKIE):
        request.state.anon_csrf = secrets.token_urlsafe(32)


def anonymous_cookie(request: Request, response: Response) -> None:
    """Sets the cookie that `start_anonymous` chose, when the browser did not have one yet."""
    value = getattr(request.state, "anon_csrf", None)
    if value is not None:
        response.set_cookie(ANON_COOKIE, value, httponly=True, samesite="strict", secure=_secure(request))


def set_session(request: Request, response: Response, token: str, max_age: int) -> None:
    response.set_cookie(
        SESSION_COOKIE, token, max_age=max_age, httponly=True, samesite="strict", secure=_secure(request)
    )
    response.delete_cookie(ANON_COOKIE)


def clear_session(request: Request, response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, httponly=True, samesite="strict", secure=_secure(request))


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def same_origin(request: Request) -> bool:
    """The Origin header names this very site: a state-changing request from anywhere else, even the
    same site on another port (which the SameSite=Strict cookie does not tell apart), is refused."""
    return request.headers.get("origin") == f"{request.url.scheme}://{request.url.netloc}"


async def checked(request: Request, settings: SettingsDep) -> None:
    """Every dashboard request: marks it as one (errors become pages), and refuses a state-changing one
    whose Origin is not this site or whose CSRF token (form field or header) does not match."""
    request.state.web = True
    if request.method in SAFE_METHODS:
        return
    if not same_origin(request):
        raise Forbidden("the request's Origin is not this site")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.headers.get("content-type", "").startswith(
        ("application/x-www-form-urlencoded", "multipart/form-data")
    ):
        value = (await request.form()).get(CSRF_FIELD)
        sent = value if isinstance(value, str) else None
    expected = csrf_token(settings, request)
    if not sent or not expected or not hmac.compare_digest(sent, expected):
        raise Forbidden("the form's CSRF token is missing or stale; reload the page and try again")


async def optional_viewer(request: Request, sessions: SessionsDep) -> Principal | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        return await session_principal(sessions, token)
    except Unauthorized:
        return None


async def viewer(principal: Annotated[Principal | None, Depends(optional_viewer)]) -> Principal:
    if principal is None:
        raise SignInRequired
    return principal


Viewer = Annotated[Principal, Depends(viewer)]
MaybeViewer = Annotated[Principal | None, Depends(optional_viewer)]


async def admin_viewer(principal: Viewer) -> Principal:
    """As the API's `Admin`: the session must carry the admin scope."""
    if "admin" not in principal.scopes:
        raise Forbidden("this page is for admins")
    return principal


AdminViewer = Annotated[Principal, Depends(admin_viewer)]


async def codec_reader(
    request: Request,
    settings: SettingsDep,
    sessions: SessionsDep,
    session: SessionDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> Principal:
    """The codec endpoint's caller: a bearer token as on every route, else the dashboard's session
    cookie, so the Temporal Web UI in a signed-in browser decodes that user's payloads (and no one
    else's). Decoding changes nothing, so it needs no CSRF token; CORS admits only the UI's origin."""
    session_token = request.cookies.get(SESSION_COOKIE)
    if token or not session_token:
        return await current_principal(request, SecurityScopes(["jobs:read"]), settings, session, token)
    principal = await session_principal(sessions, session_token)
    if "jobs:read" not in principal.scopes:
        raise Forbidden("this session lacks the scope jobs:read")
    return principal


CodecReader = Annotated[Principal, Depends(codec_reader)]
