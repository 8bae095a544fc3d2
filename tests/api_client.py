"""The REST API as tests use it: in-process over ASGI, lifespan running, calls named as the README names them.

`async with serve(create_app(settings)) as api:` then `alice = await api.authed_user()` and
`expect(await alice.get("/auth/me"), 200)`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.converter import DataConverter

from core.auth import create_user
from core.codec import new_key_entry
from core.config import Settings
from core.temporal import data_converter

PASSWORD = "correct horse battery staple"
BASE_URL = "http://chronos.test/api/v1"
# The test session's one key: its Temporal client, the workers, the API apps and the worker processes
# tests start all encrypt with it, so every test runs on encrypted payloads.
ENCRYPTION_KEYS = new_key_entry("test")


def session_converter() -> DataConverter:
    """The data converter of the session's Temporal client (`data_converter` with the session's key)."""
    return data_converter(Settings(encryption_keys=ENCRYPTION_KEYS))


def app_settings(engine: AsyncEngine, data_dir: Path, **overrides: Any) -> Settings:
    """Settings for an app on the test session's database, so its rows are visible to the fixtures too."""
    return Settings(
        data_dir=data_dir,
        database_url=engine.url.render_as_string(hide_password=False),
        **{
            "allow_private_targets": True,
            "auth_attempts_per_minute": 100_000,
            # The general suite never meets the per-user rate limits; tests/test_limits.py sets small ones.
            "job_writes_per_minute": 100_000,
            "runs_per_minute": 100_000,
            "encryption_keys": ENCRYPTION_KEYS,
            **overrides,
        },
    )


def new_email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.org"


def expect(response: httpx.Response, status: int) -> Any:
    """The JSON body of an answer that must have this status; the failure shows the problem document."""
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url.path}: expected {status}, "
        f"got {response.status_code}: {response.text}"
    )
    return response.json() if response.content else None


@asynccontextmanager
async def serve(app: FastAPI) -> AsyncIterator[ApiClient]:
    """The app as uvicorn would run it (lifespan entered, then closed), with an anonymous client on it."""
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url=BASE_URL) as http,
    ):
        yield ApiClient(app, http)


class ApiClient:
    """Anonymous calls; `authed_user()` and `authed_admin()` give clients that send a bearer token."""

    def __init__(self, app: FastAPI, http: httpx.AsyncClient, headers: dict[str, str] | None = None) -> None:
        self.app = app
        self.http = http
        self.headers = headers or {}

    @property
    def settings(self) -> Settings:
        settings: Settings = self.app.state.settings
        return settings

    async def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """`path` is relative to /api/v1 (`/auth/me`); an absolute URL reaches /health and /metrics."""
        headers = {**self.headers, **kwargs.pop("headers", {})}
        return await self.http.request(method, path, headers=headers, **kwargs)

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("GET", path, **kwargs)

    async def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("POST", path, **kwargs)

    async def patch(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("PATCH", path, **kwargs)

    async def delete(self, path: str, **kwargs: Any) -> httpx.Response:
        return await self.request("DELETE", path, **kwargs)

    def with_token(self, access_token: str) -> ApiClient:
        """The same client sending this bearer token (also a forged or expired one)."""
        return ApiClient(self.app, self.http, {**self.headers, "Authorization": f"Bearer {access_token}"})

    async def register(self, email: str | None = None, password: str = PASSWORD) -> dict[str, Any]:
        body = {"email": email or new_email(), "password": password}
        registered: dict[str, Any] = expect(await self.post("/auth/register", json=body), 201)
        return registered

    async def token(self, **form: str) -> httpx.Response:
        """The OAuth2 token endpoint, form-encoded, answer unchecked."""
        return await self.post("/auth/token", data=form)

    async def login(self, email: str, password: str = PASSWORD, scope: str | None = None) -> dict[str, Any]:
        """The password grant, as /docs' Authorize button does it: the token answer."""
        form = {"grant_type": "password", "username": email, "password": password}
        tokens: dict[str, Any] = expect(await self.token(**form, **({"scope": scope} if scope else {})), 200)
        return tokens

    async def refresh(self, refresh_token: str) -> httpx.Response:
        return await self.token(grant_type="refresh_token", refresh_token=refresh_token)

    async def authed_user(self, scope: str | None = None) -> AuthedClient:
        """A fresh user with a random email, logged in."""
        user = await self.register()
        return await self._logged_in(user, scope)

    async def authed_admin(self, scope: str | None = None) -> AuthedClient:
        """A fresh admin, made as the CLI makes one, logged in."""
        admin = await create_user(self.app.state.sessions, new_email(), PASSWORD, admin=True)
        return await self._logged_in({"id": admin.id, "email": admin.email, "role": admin.role}, scope)

    async def _logged_in(self, user: dict[str, Any], scope: str | None) -> AuthedClient:
        tokens = await self.login(user["email"], scope=scope)
        return AuthedClient(self.with_token(tokens["access_token"]), user, tokens)


class AuthedClient(ApiClient):
    """Calls as one user: `user` is the registration answer, `tokens` the token answer of its login."""

    def __init__(self, client: ApiClient, user: dict[str, Any], tokens: dict[str, Any]) -> None:
        super().__init__(client.app, client.http, client.headers)
        self.user = user
        self.tokens = tokens

    @property
    def id(self) -> str:
        return str(self.user["id"])

    @property
    def email(self) -> str:
        return str(self.user["email"])
