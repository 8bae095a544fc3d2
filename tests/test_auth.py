"""Auth through the real HTTP interface: accounts, the OAuth2 grants, refresh rotation and bad tokens."""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from argon2 import PasswordHasher
from joserfc import jwt
from joserfc.jwk import OctKey
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import select

from api.main import create_app
from cli import users_create_command
from core.auth import (
    LEEWAY_SECONDS,
    decode_access_token,
    issue_access_token,
    needs_rehash,
    refresh_grant,
    signing_key,
)
from core.config import Settings
from core.errors import OAuthError
from core.models import RefreshToken, Role, User
from tests.api_client import PASSWORD, ApiClient, app_settings, expect, new_email, serve


@pytest.fixture(scope="module")
async def api(db_engine: AsyncEngine, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiClient]:
    settings = app_settings(db_engine, tmp_path_factory.mktemp("auth"))
    async with serve(create_app(settings)) as client:
        yield client


def claims_for(api: ApiClient, user: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    settings = api.settings
    claims = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": user["id"],
        "email": user["email"],
        "role": "user",
        "scope": "jobs:read jobs:write",
        "iat": now,
        "exp": now + 600,
        "jti": "test",
    }
    return {**claims, **overrides}


def sign(api: ApiClient, claims: dict[str, Any]) -> str:
    """A token signed with the app's real key: only the claims can make it wrong."""
    return jwt.encode({"alg": "HS256"}, claims, signing_key(api.settings), algorithms=["HS256"])


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def oauth_error(response: Any, status: int = 400) -> str:
    problem = expect(response, status)
    assert response.headers["content-type"] == "application/problem+json"
    return str(problem["error"])


async def test_register_answers_the_account_and_its_webhook_secret(api: ApiClient) -> None:
    email = new_email()
    user = await api.register(email.upper())
    assert user["email"] == email
    assert user["role"] == "user"
    assert user["id"] and user["created_at"]
    assert len(user["webhook_secret"]) >= 32
    assert "password" not in json.dumps(user)


async def test_an_email_registers_once_whatever_its_case(api: ApiClient) -> None:
    email = new_email()
    await api.register(email)
    for again in (email, email.upper()):
        problem = expect(await api.post("/auth/register", json={"email": again, "password": PASSWORD}), 409)
        assert problem["status"] == 409


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, "email"),
        ({"email": "someone@example.org", "password": "7chars!"}, "password"),
    ],
)
async def test_register_names_the_invalid_field(api: ApiClient, body: dict[str, str], field: str) -> None:
    response = await api.post("/auth/register", json=body)
    problem = expect(response, 422)
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["loc"] for e in problem["errors"]] == [["body", field]]


async def test_password_grant_answers_a_bearer_token_pair(api: ApiClient) -> None:
    user = await api.register()
    response = await api.token(grant_type="password", username=user["email"], password=PASSWORD)
    tokens = expect(response, 200)
    assert response.headers["cache-control"] == "no-store"
    assert tokens["token_type"] == "bearer"
    assert tokens["expires_in"] == api.settings.access_token_ttl_seconds
    assert tokens["scope"] == "jobs:read jobs:write"
    assert tokens["refresh_token"]
    me = expect(await api.with_token(tokens["access_token"]).get("/auth/me"), 200)
    assert me == {
        "id": user["id"],
        "email": user["email"],
        "role": "user",
        "scopes": ["jobs:read", "jobs:write"],
    }


async def test_json_login_answers_as_the_password_grant_does(api: ApiClient) -> None:
    user = await api.register()
    tokens = expect(await api.post("/auth/login", json={"email": user["email"], "password": PASSWORD}), 200)
    assert tokens["token_type"] == "bearer"
    assert tokens["scope"] == "jobs:read jobs:write"
    me = expect(await api.with_token(tokens["access_token"]).get("/auth/me"), 200)
    assert me["id"] == user["id"]


async def test_wrong_credentials_are_an_invalid_grant_that_names_neither(api: ApiClient) -> None:
    user = await api.register()
    wrong_password = await api.token(grant_type="password", username=user["email"], password="wrong-password")
    unknown_email = await api.token(grant_type="password", username=new_email(), password=PASSWORD)
    json_login = await api.post("/auth/login", json={"email": user["email"], "password": "x"})
    for response in (wrong_password, unknown_email, json_login):
        assert oauth_error(response) == "invalid_grant"
    assert wrong_password.json()["detail"] == unknown_email.json()["detail"]


async def test_the_token_endpoint_speaks_oauth2_errors(api: ApiClient) -> None:
    assert oauth_error(await api.token(grant_type="client_credentials")) == "unsupported_grant_type"
    assert oauth_error(await api.token(username="a@example.org", password=PASSWORD)) == "invalid_request"
    assert oauth_error(await api.token(grant_type="password", username="a@example.org")) == "invalid_request"
    assert oauth_error(await api.token(grant_type="refresh_token")) == "invalid_request"


async def test_emails_log_in_whatever_their_case(api: ApiClient) -> None:
    user = await api.register()
    tokens = await api.login(user["email"].upper())
    assert expect(await api.with_token(tokens["access_token"]).get("/auth/me"), 200)["id"] == user["id"]


async def test_a_requested_scope_narrows_the_token(api: ApiClient) -> None:
    alice = await api.authed_user(scope="jobs:read")
    assert alice.tokens["scope"] == "jobs:read"
    assert expect(await alice.get("/auth/me"), 200)["scopes"] == ["jobs:read"]
    refreshed = expect(await api.refresh(alice.tokens["refresh_token"]), 200)
    assert refreshed["scope"] == "jobs:read"


@pytest.mark.parametrize("scope", ["admin", "jobs:read admin", "jobs:delete"])
async def test_a_user_cannot_ask_for_a_scope_beyond_the_role(api: ApiClient, scope: str) -> None:
    user = await api.register()
    response = await api.token(grant_type="password", username=user["email"], password=PASSWORD, scope=scope)
    assert oauth_error(response) == "invalid_scope"


async def test_only_admins_get_the_admin_scope(api: ApiClient) -> None:
    admin = await api.authed_admin()
    assert admin.tokens["scope"] == "admin jobs:read jobs:write"
    me = expect(await admin.get("/auth/me"), 200)
    assert me["role"] == "admin"
    assert me["scopes"] == ["admin", "jobs:read", "jobs:write"]
    user = await api.authed_user()
    assert "admin" not in expect(await user.get("/auth/me"), 200)["scopes"]


async def test_a_narrowed_admin_token_has_no_admin_powers(api: ApiClient) -> None:
    admin = await api.authed_admin(scope="jobs:read jobs:write")
    principal = decode_access_token(api.settings, admin.tokens["access_token"])
    assert principal.role == "admin"
    assert not principal.is_admin


async def test_me_without_a_token_is_401_with_a_bearer_challenge(api: ApiClient) -> None:
    for client in (api, api.with_token("")):
        response = await client.get("/auth/me")
        expect(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
        assert response.headers["content-type"] == "application/problem+json"


async def refused(api: ApiClient, token: str) -> str:
    response = await api.with_token(token).get("/auth/me")
    problem = expect(response, 401)
    assert response.headers["www-authenticate"] == "Bearer"
    return str(problem["detail"])


async def test_the_forged_token_helpers_make_accepted_tokens(api: ApiClient) -> None:
    """The tests below change one thing each; this shows the rest of what they send is accepted."""
    user = await api.register()
    me = expect(await api.with_token(sign(api, claims_for(api, user))).get("/auth/me"), 200)
    assert me["id"] == user["id"]


async def test_an_expired_token_is_refused(api: ApiClient) -> None:
    user = await api.register()
    now = int(time.time())
    token = sign(api, claims_for(api, user, iat=now - 7200, exp=now - 3600))
    assert "expired" in await refused(api, token)


async def test_a_token_accepted_before_is_refused_once_it_expires(
    api: ApiClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A verified token is not verified again (`core.auth._tokens._verified`): its expiry still is."""
    user = await api.register()
    now = int(time.time())
    token = sign(api, claims_for(api, user, iat=now, exp=now + 60))
    expect(await api.with_token(token).get("/auth/me"), 200)
    later = now + 60 + LEEWAY_SECONDS
    monkeypatch.setattr("core.auth._tokens.time", SimpleNamespace(time=lambda: later))
    assert "expired" in await refused(api, token)


async def test_a_tampered_token_is_refused(api: ApiClient) -> None:
    alice = await api.authed_user()
    header, _, signature = alice.tokens["access_token"].split(".")
    escalated = b64(claims_for(api, alice.user, role="admin", scope="admin jobs:read jobs:write"))
    assert "signature" in await refused(api, f"{header}.{escalated}.{signature}")
    other_key = OctKey.generate_key(256)
    resigned = jwt.encode({"alg": "HS256"}, claims_for(api, alice.user), other_key, algorithms=["HS256"])
    assert "signature" in await refused(api, resigned)


async def test_an_unsigned_alg_none_token_is_refused(api: ApiClient) -> None:
    user = await api.register()
    token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims_for(api, user))}."
    assert "HS256" in await refused(api, token)


@pytest.mark.parametrize(
    ("claim", "value"), [("aud", "another-api"), ("iss", "someone-else"), ("role", "root"), ("sub", None)]
)
async def test_a_token_with_a_wrong_claim_is_refused(api: ApiClient, claim: str, value: str | None) -> None:
    user = await api.register()
    claims = claims_for(api, user, **{claim: value})
    if value is None:
        del claims[claim]
    assert claim in await refused(api, sign(api, claims))


async def test_a_garbled_token_is_refused(api: ApiClient) -> None:
    assert "malformed" in await refused(api, "not.a.jwt")


async def test_refresh_rotates_the_pair_and_spends_the_old_token(api: ApiClient) -> None:
    alice = await api.authed_user()
    first = alice.tokens
    second = expect(await api.refresh(first["refresh_token"]), 200)
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]
    assert second["scope"] == first["scope"]
    assert expect(await api.with_token(second["access_token"]).get("/auth/me"), 200)["id"] == alice.id
    assert oauth_error(await api.refresh(first["refresh_token"])) == "invalid_grant"


async def test_reusing_a_spent_refresh_token_revokes_its_whole_login(api: ApiClient) -> None:
    alice = await api.authed_user()
    other_login = await api.login(alice.email)
    stolen = alice.tokens["refresh_token"]
    newer = expect(await api.refresh(stolen), 200)["refresh_token"]
    assert oauth_error(await api.refresh(stolen)) == "invalid_grant"
    assert oauth_error(await api.refresh(newer)) == "invalid_grant"
    expect(await api.refresh(other_login["refresh_token"]), 200)


async def test_a_refresh_cannot_widen_the_scope_and_does_not_spend_the_token(api: ApiClient) -> None:
    alice = await api.authed_user(scope="jobs:read")
    refresh_token = alice.tokens["refresh_token"]
    widened = await api.token(grant_type="refresh_token", refresh_token=refresh_token, scope="jobs:write")
    assert oauth_error(widened) == "invalid_scope"
    expect(await api.refresh(refresh_token), 200)


async def test_an_unknown_refresh_token_is_an_invalid_grant(api: ApiClient) -> None:
    assert oauth_error(await api.refresh("never-issued")) == "invalid_grant"


async def test_logout_revokes_the_refresh_token_and_the_access_token(api: ApiClient) -> None:
    alice = await api.authed_user()
    refresh_token = alice.tokens["refresh_token"]
    expect(await alice.post("/auth/logout", json={"refresh_token": refresh_token}), 204)
    assert oauth_error(await api.refresh(refresh_token)) == "invalid_grant"
    assert "logout" in await refused(api, alice.tokens["access_token"])
    for body in ({"refresh_token": refresh_token}, {"refresh_token": "never-issued"}):
        again = api.with_token((await api.login(alice.email))["access_token"])
        expect(await again.post("/auth/logout", json=body), 204)


async def test_logout_without_a_body_revokes_only_the_access_token(api: ApiClient) -> None:
    alice = await api.authed_user()
    expect(await alice.post("/auth/logout"), 204)
    assert "logout" in await refused(api, alice.tokens["access_token"])
    refreshed = expect(await api.refresh(alice.tokens["refresh_token"]), 200)
    expect(await api.with_token(refreshed["access_token"]).get("/auth/me"), 200)


async def test_logout_needs_a_token_and_touches_only_your_own(api: ApiClient) -> None:
    alice = await api.authed_user()
    mallory = await api.authed_user()
    body = {"refresh_token": alice.tokens["refresh_token"]}
    expect(await api.post("/auth/logout", json=body), 401)
    expect(await mallory.post("/auth/logout", json=body), 204)
    expect(await api.refresh(alice.tokens["refresh_token"]), 200)


async def test_login_upgrades_a_hash_made_with_old_parameters(api: ApiClient) -> None:
    user = await api.register()
    weak = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
    async with api.app.state.sessions() as session:
        row = (await session.exec(select(User).where(User.id == user["id"]))).one()
        row.password_hash = weak.hash(PASSWORD)
        session.add(row)
        await session.commit()
    await api.login(user["email"])
    async with api.app.state.sessions() as session:
        row = (await session.exec(select(User).where(User.id == user["id"]))).one()
    assert row.password_hash.startswith("$argon2id$")
    assert not needs_rehash(row.password_hash)  # the parameters the process hashes with


def test_a_generated_secret_is_private_and_outlives_the_process(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    user = User(id="u1", email="ada@example.org", password_hash="-", role=Role.USER)
    token = issue_access_token(settings, user, frozenset({"jobs:read"}))
    assert stat.S_IMODE((tmp_path / "jwt_secret").stat().st_mode) == 0o600
    check = (
        "import sys; from core.auth import decode_access_token; from core.config import Settings; "
        "print(decode_access_token(Settings(data_dir=sys.argv[1]), sys.argv[2]).email)"
    )
    env = {k: v for k, v in os.environ.items() if k != "CHRONOS_JWT_SECRET"}
    later = subprocess.run(
        [sys.executable, "-c", check, str(tmp_path), token],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    assert later.stdout.strip() == "ada@example.org"


def test_a_configured_secret_signs_instead_of_the_data_dir_one(tmp_path: Path) -> None:
    configured = Settings(data_dir=tmp_path, jwt_secret="a configured secret of enough length")
    user = User(id="u1", email="ada@example.org", password_hash="-", role=Role.USER)
    token = issue_access_token(configured, user, frozenset({"jobs:read"}))
    assert decode_access_token(configured, token).id == "u1"
    assert not (tmp_path / "jwt_secret").exists()


def test_users_create_command_makes_an_admin_from_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = Settings(data_dir=tmp_path)
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    assert users_create_command(settings, "Root@Example.org", admin=True) == 0
    out = capsys.readouterr().out
    assert "created admin root@example.org" in out
    assert "webhook secret" in out
    assert users_create_command(settings, "root@example.org", admin=True, password=PASSWORD) == 1
    assert "already exists" in capsys.readouterr().err
    assert users_create_command(settings, "other@example.org", admin=False, password="short") == 2
    assert "password" in capsys.readouterr().err


async def test_a_refresh_that_loses_a_race_counts_as_reuse(api: ApiClient) -> None:
    """Two uses that both read the token unspent: the conditional write lets one win and ends the login."""
    alice = await api.authed_user()
    token = alice.tokens["refresh_token"]
    async with api.app.state.sessions() as late:
        mine = select(RefreshToken).where(RefreshToken.user_id == alice.id)
        seen = (await late.exec(mine)).one()  # read, and held in `late`, before the other use spends it
        assert seen.used_at is None
        winner = expect(await api.refresh(token), 200)
        with pytest.raises(OAuthError) as lost:
            await refresh_grant(late, api.settings, token, None)
    assert lost.value.error == "invalid_grant"
    assert oauth_error(await api.refresh(winner["refresh_token"])) == "invalid_grant"


async def test_credential_endpoints_are_throttled(db_engine, tmp_path_factory) -> None:
    """Guessing passwords at speed meets a 429 with Retry-After, on every credential endpoint."""
    settings = app_settings(db_engine, tmp_path_factory.mktemp("throttle"), auth_attempts_per_minute=3)
    async with serve(create_app(settings)) as api:
        email = new_email()
        await api.register(email)
        wrong = {"grant_type": "password", "username": email, "password": "not the password"}
        answers = [await api.token(**wrong) for _ in range(2)]  # the registration counted too
        assert [a.status_code for a in answers] == [400, 400]
        blocked = await api.token(**wrong)
        assert blocked.status_code == 429
        assert 0 < int(blocked.headers["Retry-After"]) <= 60
        assert blocked.headers["content-type"] == "application/problem+json"
        login = await api.post("/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 429
        assert expect(await api.get("/jobs"), 401)["status"] == 401  # other endpoints are not throttled
