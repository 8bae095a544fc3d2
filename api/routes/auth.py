"""Auth endpoints: registration, the OAuth2 token endpoint (password and refresh_token grants), logout, me."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Response

from api.deps import CurrentUser, SessionDep, SettingsDep
from api.openapi import responses
from api.throttle import throttled
from core import auth
from core.models import Credentials, Login, Me, RefreshTokenBody, Registered, TokenGrant, TokenRequest

router = APIRouter(tags=["auth"])
# Register, token and login answer 429 with Retry-After when one address tries too often.
Throttled = [Depends(throttled)]

OAUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    **responses(429, 503),
    400: {
        "description": "RFC 6749 `error`: `invalid_grant` (wrong credentials; unknown, expired, revoked or "
        "reused refresh token), `invalid_scope`, `unsupported_grant_type` or `invalid_request`"
    },
}


@router.post(
    "/auth/register",
    status_code=201,
    responses={**responses(429, 503), 409: {"description": "The email is taken"}},
    dependencies=Throttled,
)
async def register(body: Credentials, session: SessionDep) -> Registered:
    """Create an account with the role `user`. Keep the `webhook_secret`: it is shown only here."""
    return Registered.model_validate(await auth.register(session, body.email, body.password))


@router.post("/auth/token", responses=OAUTH_ERRORS, dependencies=Throttled)
async def token(
    form: Annotated[TokenRequest, Form()], session: SessionDep, settings: SettingsDep, response: Response
) -> TokenGrant:
    """OAuth2 token endpoint. A refresh token works once; presenting a used one revokes its whole login."""
    response.headers["Cache-Control"] = "no-store"  # RFC 6749 section 5.1
    return await auth.grant(session, settings, form)


@router.post("/auth/login", responses=OAUTH_ERRORS, dependencies=Throttled)
async def login(body: Login, session: SessionDep, settings: SettingsDep, response: Response) -> TokenGrant:
    """The password grant with a JSON body."""
    response.headers["Cache-Control"] = "no-store"
    return await auth.password_grant(session, settings, body.email, body.password, body.scope)


@router.post("/auth/logout", status_code=204, responses=responses(503))
async def logout(user: CurrentUser, session: SessionDep, body: RefreshTokenBody | None = None) -> None:
    """Revoke the access token of this call (401 from now on) and, if given, one of your refresh tokens.
    Answers 204 for any refresh token, so it reveals nothing about others'."""
    await auth.logout(session, user, body.refresh_token if body else None)


@router.get("/auth/me")
async def me(user: CurrentUser) -> Me:
    """Who the token belongs to, and the scopes it carries."""
    return user.me()
