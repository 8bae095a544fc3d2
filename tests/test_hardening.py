"""What an attack on the running API found, each through the real HTTP app: bad input is a 4xx naming the
field (never a 500, never silently dropped), the throttle keys on the peer, answers carry security headers,
and the OpenAPI document says what the answers are."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from temporalio.client import Client

from api.main import create_app, server_config
from api.openapi import PROBLEM, Problem
from core.config import Settings
from core.temporal import TemporalGateway
from tests.api_client import PASSWORD, ApiClient, AuthedClient, expect, new_email, serve
from tests.waiting import eventually

SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
    "x-frame-options": "DENY",
}


def settings(data_dir: Path, **overrides: Any) -> Settings:
    """An app of its own on a fresh SQLite mirror: these tests look at answers, not at stored rows."""
    return Settings(
        data_dir=data_dir, **{"allow_private_targets": True, "auth_attempts_per_minute": 100_000, **overrides}
    )


@pytest.fixture(scope="module")
async def api(temporal_client: Client, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[ApiClient]:
    app = create_app(settings(tmp_path_factory.mktemp("hardening")), TemporalGateway.of(temporal_client))
    async with serve(app) as client:
        yield client


@pytest.fixture(scope="module")
async def alice(api: ApiClient) -> AuthedClient:
    return await api.authed_user()


def job(**fields: Any) -> dict[str, Any]:
    """A valid paused HTTP job (nothing runs), with `fields` replacing or adding top-level members."""
    body: dict[str, Any] = {
        "name": "hardening",
        "paused": True,
        "schedule": {"type": "cron", "cron": "0 9 * * *"},
        "action": {"type": "http", "url": "http://127.0.0.1:9/never"},
    }
    return {**body, **fields}


def http_action(**fields: Any) -> dict[str, Any]:
    return {"type": "http", "url": "http://127.0.0.1:9/never", **fields}


def invalid(response: httpx.Response, *where: str | int) -> dict[str, Any]:
    """A 422 problem whose errors name the field at `where` (below `body`, `query`...)."""
    problem: dict[str, Any] = expect(response, 422)
    assert response.headers["content-type"] == PROBLEM
    locs = [tuple(error["loc"]) for error in problem["errors"]]
    assert any(loc[: len(where)] == where for loc in locs), f"no error at {where}: {problem}"
    return problem


def raw_json(text: str) -> dict[str, Any]:
    return {"content": text, "headers": {"Content-Type": "application/json"}}


# 1. Input that answered 500.


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize("header", [b'"alg"', b'["alg"]', b'{"alg": "HS256", "crit": 5}'])
async def test_a_token_whose_header_is_no_json_object_is_a_401(api: ApiClient, header: bytes) -> None:
    token = f"{b64(header)}.{b64(b'{}')}.{b64(b'signature')}"
    problem = expect(await api.with_token(token).get("/auth/me"), 401)
    assert problem["detail"] == "the access token is malformed"


@pytest.mark.parametrize("path", ["/jobs", "/dead-letters"])
async def test_a_huge_page_number_is_a_422_naming_page(alice: AuthedClient, path: str) -> None:
    invalid(await alice.get(path, params={"page": "99999999999999999999"}), "query", "page")
    invalid(await alice.get(path, params={"page": 1_000_001}), "query", "page")


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


async def test_an_action_body_nested_too_deep_is_a_422_naming_it(alice: AuthedClient) -> None:
    for depth in (33, 600):
        body = json.dumps(job(action=http_action(body=0))).replace('"body": 0', f'"body": {nested(depth)}')
        invalid(await alice.post("/jobs", **raw_json(body)), "body", "action", "body")
    deepest = json.loads(nested(32))
    expect(await alice.post("/jobs", json=job(action=http_action(body=deepest))), 201)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ("NaN", "NaN, Infinity or a number past 1.8e308"),
        ('{"x": [1, -Infinity]}', "NaN, Infinity or a number past 1.8e308"),
        ("1e400", "NaN, Infinity or a number past 1.8e308"),
        ('"\\ud800"', "a lone surrogate (U+D800)"),
        ('{"\\udfff": 1}', "a lone surrogate (U+DFFF)"),
    ],
)
async def test_an_action_body_that_is_no_json_is_a_422_naming_it(
    alice: AuthedClient, body: str, words: str
) -> None:
    """Python's parser takes NaN, Infinity and 1e400, which were stored as null; a lone surrogate cannot be
    encoded, and was a 500."""
    text = json.dumps(job(action=http_action(body=0))).replace('"body": 0', f'"body": {body}')
    problem = invalid(await alice.post("/jobs", **raw_json(text)), "body", "action", "body")
    assert words in problem["detail"], problem
    # A surrogate pair is one character, and 1e308 a finite number.
    pair = '"body": ["\\ud83d\\ude00", 1e308]'
    text = json.dumps(job(action=http_action(body=0))).replace('"body": 0', pair)
    assert expect(await alice.post("/jobs", **raw_json(text)), 201)["action"]["body"] == ["\U0001f600", 1e308]


async def test_a_form_is_read_whatever_the_case_of_its_content_type(
    api: ApiClient, alice: AuthedClient
) -> None:
    """Starlette parses `Application/X-WWW-Form-Urlencoded` as a form, consuming the body; the NUL check
    then read it again as raw bytes ("Stream consumed", a 500)."""
    for content_type in ("Application/X-WWW-Form-Urlencoded", "APPLICATION/X-WWW-FORM-URLENCODED"):
        headers = {"Content-Type": content_type}
        refused = await api.post(
            "/auth/token", content=b"grant_type=password&username=a%00b&password=x", headers=headers
        )
        invalid(refused, "body", "username")
        login = f"grant_type=password&username={alice.user['email']}&password={PASSWORD}".replace("@", "%40")
        expect(await api.post("/auth/token", content=login.encode(), headers=headers), 200)


async def test_a_body_holding_nul_is_refused_at_every_depth(alice: AuthedClient) -> None:
    """The NUL check parses a body again, deeper in the stack than the route did: at the depth the route's
    parse just managed and its own did not, it raised RecursionError (a 500). Every depth up to past the
    interpreter's limit is a 400 or a 422."""
    statuses = set()
    for depth in range(800, 1001):
        body = "[" * depth + '"\\u0000"' + "]" * depth
        text = json.dumps(job(action=http_action(body=0))).replace('"body": 0', f'"body": {body}')
        statuses.add((await alice.post("/jobs", **raw_json(text))).status_code)
    assert statuses <= {400, 422}, statuses


async def test_a_time_with_no_utc_equivalent_is_a_422_naming_it(alice: AuthedClient) -> None:
    """Year 1 at +14:00 (or year 9999 at -14:00) is a valid ISO time with no UTC one: converting it was a
    500 in the backfill, the schedule checks and the preview."""
    early, late = "0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"
    once = job(schedule={"type": "once", "run_at": early})
    invalid(await alice.post("/jobs", json=once), "body", "schedule", "run_at")
    bounded = job(schedule={"type": "cron", "cron": "0 9 * * *", "end_at": late})
    invalid(await alice.post("/jobs", json=bounded), "body", "schedule", "end_at")
    preview = {"schedule": {"type": "cron", "cron": "0 9 * * *"}, "after": early}
    invalid(await alice.post("/schedules/preview", json=preview), "body", "after")
    made = expect(await alice.post("/jobs", json=job()), 201)
    backfill = {"start": early, "end": "2026-01-01T00:00:00Z"}
    invalid(await alice.post(f"/jobs/{made['id']}/backfill", json=backfill), "body", "start")


async def test_a_body_too_deep_for_the_json_parser_is_a_400(alice: AuthedClient) -> None:
    problem = expect(await alice.post("/jobs", **raw_json(nested(100_000))), 400)
    assert "body" in problem["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        {f"X-H{i}": "v" for i in range(51)},
        {"X-Bad\r\nInjected": "v"},
        {"X Space": "v"},
        {"": "v"},
        {"X-Value": "a\r\nInjected: yes"},
        {"X-Value": "a\nb"},
        {"X-Value": "nul\x00"},
        {"X-Value": "not ascii é"},
        {f"X-Big-{i}": "v" * 3000 for i in range(3)},
    ],
    ids=[
        "51 headers",
        "CRLF in name",
        "space in name",
        "empty name",
        "CRLF in value",
        "LF in value",
        "NUL in value",
        "non-ASCII value",
        "over 8 KiB",
    ],
)
async def test_action_headers_are_bounded_and_well_formed(
    alice: AuthedClient, headers: dict[str, str]
) -> None:
    invalid(
        await alice.post("/jobs", json=job(action=http_action(headers=headers))), "body", "action", "headers"
    )


async def test_fifty_well_formed_headers_are_accepted(alice: AuthedClient) -> None:
    headers = {f"X-H{i}": "value\twith tab" for i in range(50)}
    expect(await alice.post("/jobs", json=job(action=http_action(headers=headers))), 201)


# 2. Every number has a bound.


@pytest.mark.parametrize("field", ["initial_interval_seconds", "max_interval_seconds"])
@pytest.mark.parametrize("value", ["1e300", "Infinity", "NaN", "86401"])
async def test_retry_intervals_are_finite_and_at_most_a_day(
    alice: AuthedClient, field: str, value: str
) -> None:
    policy = {"initial_interval_seconds": 1, "max_interval_seconds": 300, field: "VALUE"}
    text = json.dumps(job(retry_policy=policy)).replace('"VALUE"', value)
    invalid(await alice.post("/jobs", **raw_json(text)), "body", "retry_policy", field)


async def test_a_day_long_retry_interval_is_accepted(alice: AuthedClient) -> None:
    policy = {"initial_interval_seconds": 86400, "max_interval_seconds": 86400}
    expect(await alice.post("/jobs", json=job(retry_policy=policy)), 201)


@pytest.mark.parametrize("subject", ["two\r\nBcc: eve@example.org", "line\nbreak", "nul\x00"])
async def test_an_email_subject_is_one_line(alice: AuthedClient, subject: str) -> None:
    action = {"type": "email", "to": ["bob@example.org"], "subject": subject, "body": "hi"}
    invalid(await alice.post("/jobs", json=job(action=action)), "body", "action", "subject")


async def test_a_timeout_over_an_hour_is_a_422(alice: AuthedClient) -> None:
    action = http_action(timeout_seconds=3601)
    invalid(await alice.post("/jobs", json=job(action=action)), "body", "action", "timeout_seconds")


# 3. Unknown fields are refused, wherever they are.


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (job(action=http_action(methd="PUT")), ("body", "action", "methd")),
        (
            job(
                action={
                    "type": "email",
                    "to": ["b@example.org"],
                    "subject": "s",
                    "body": "b",
                    "bcc": ["x@y.org"],
                }
            ),
            ("body", "action", "bcc"),
        ),
        (job(retry_policy={"max_attempts": 2, "max_attempt": 5}), ("body", "retry_policy", "max_attempt")),
        (job(notify={"on_failures": ["ops@example.org"]}), ("body", "notify", "on_failures")),
        (job(colour="red"), ("body", "colour")),
    ],
    ids=["action.methd", "email action.bcc", "retry_policy.max_attempt", "notify.on_failures", "top level"],
)
async def test_an_unknown_field_in_a_job_is_a_422_naming_it(
    alice: AuthedClient, body: dict[str, Any], where: tuple[str, ...]
) -> None:
    invalid(await alice.post("/jobs", json=body), *where)


async def test_an_unknown_field_in_an_update_is_a_422_naming_it(alice: AuthedClient) -> None:
    created = expect(await alice.post("/jobs", json=job()), 201)
    update = {"action": http_action(methd="PUT")}
    invalid(await alice.patch(f"/jobs/{created['id']}", json=update), "body", "action", "methd")
    pause = {"note": "later", "reason": "x"}
    invalid(await alice.post(f"/jobs/{created['id']}/pause", json=pause), "body", "reason")


async def test_an_unknown_field_in_an_auth_body_is_a_422_naming_it(
    api: ApiClient, alice: AuthedClient
) -> None:
    register = {"email": new_email(), "password": PASSWORD, "role": "admin"}
    invalid(await api.post("/auth/register", json=register), "body", "role")
    login = {"email": alice.email, "password": PASSWORD, "remember": True}
    invalid(await api.post("/auth/login", json=login), "body", "remember")
    logout = {"refresh_token": alice.tokens["refresh_token"], "everywhere": True}
    invalid(await alice.post("/auth/logout", json=logout), "body", "everywhere")


SCHEDULE_EXTRAS = [
    {"type": "cron", "cron": "0 9 * * *", "time_zone": "Europe/Berlin"},
    {"type": "interval", "every_seconds": 60, "every": 5},
    {"type": "once", "run_at": "2099-01-01T00:00:00Z", "at": "2099-01-02T00:00:00Z"},
    {"type": "immediate", "delay": 5},
]


@pytest.mark.parametrize("schedule", SCHEDULE_EXTRAS, ids=lambda s: s["type"])
async def test_an_unknown_schedule_field_is_a_422_naming_it(
    alice: AuthedClient, schedule: dict[str, Any]
) -> None:
    extra = next(iter(set(schedule) - {"type", "cron", "every_seconds", "run_at"}))
    invalid(await alice.post("/jobs", json=job(schedule=schedule)), "body", "schedule", extra)


async def test_an_unknown_schedule_field_in_a_preview_is_a_422_naming_it(alice: AuthedClient) -> None:
    body = {"schedule": SCHEDULE_EXTRAS[0]}
    invalid(await alice.post("/schedules/preview", json=body), "body", "schedule", "time_zone")


# 4. The throttle keys on the peer.


@asynccontextmanager
async def over_tcp(app: Any, app_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """The app served by uvicorn as `chronos api` serves it, on a free local port."""
    server = uvicorn.Server(server_config(app, "127.0.0.1", 0, app_settings, log_level="warning"))
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, "uvicorn to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/api/v1") as client:
            yield client
    finally:
        server.should_exit = True
        await task


async def test_a_new_x_forwarded_for_each_time_does_not_escape_the_throttle(tmp_path: Path) -> None:
    app_settings = settings(tmp_path, auth_attempts_per_minute=10)
    async with over_tcp(create_app(app_settings), app_settings) as client:
        statuses = []
        for i in range(40):
            body = {"email": new_email(), "password": "wrong password"}
            response = await client.post(
                "/auth/login", json=body, headers={"X-Forwarded-For": f"198.51.100.{i}"}
            )
            statuses.append(response.status_code)
        assert statuses[:10] == [400] * 10
        assert set(statuses[10:]) == {429}
        assert "server" not in response.headers


async def wrong_login(api: ApiClient, forwarded_for: str) -> int:
    """The status of a login with a wrong password, through a proxy that saw `forwarded_for`."""
    body = {"email": new_email(), "password": "wrong password"}
    response = await api.post("/auth/login", json=body, headers={"X-Forwarded-For": forwarded_for})
    return response.status_code


async def test_behind_a_trusted_proxy_the_address_it_saw_is_counted(tmp_path: Path) -> None:
    # The in-process client's peer address is 127.0.0.1: here it is the trusted proxy.
    app = create_app(settings(tmp_path, auth_attempts_per_minute=3, trusted_proxies="127.0.0.1, 10.0.0.0/8"))
    async with serve(app) as api:
        login = partial(wrong_login, api)
        # Each client counts on its own: the proxy saw six different ones.
        assert [await login(f"203.0.113.{i}, 10.0.0.1") for i in range(6)] == [400] * 6
        # What the client wrote left of the address the proxy saw changes nothing.
        spoofed = [await login(f"192.0.2.{i}, 198.51.100.7, 10.0.0.1") for i in range(4)]
        assert spoofed == [400, 400, 400, 429]


async def test_an_ipv6_client_counts_by_its_64_block(tmp_path: Path) -> None:
    # Behind the trusted proxy 127.0.0.1, the addresses it saw are the clients.
    app = create_app(settings(tmp_path, auth_attempts_per_minute=3, trusted_proxies="127.0.0.1"))
    async with serve(app) as api:
        login = partial(wrong_login, api)
        # A new address of one /64 for each guess is still one client.
        assert [await login(f"2001:db8:1:2::{i:x}") for i in range(1, 5)] == [400, 400, 400, 429]
        assert await login("2001:db8:1:3::1") == 400  # the next /64 is another client
        # An IPv4 address written as IPv6 is that IPv4 client.
        assert [await login("192.0.2.9"), await login("::ffff:192.0.2.9")] == [400, 400]
        assert [await login("::ffff:c000:209"), await login("192.0.2.9")] == [400, 429]


# 5. Security headers, and no `server` header.


async def test_every_answer_carries_the_security_headers(api: ApiClient, alice: AuthedClient) -> None:
    answers = [
        await api.get("http://chronos.test/health"),
        await api.get("http://chronos.test/openapi.json"),
        await api.get("/auth/me"),
        await alice.get("/jobs"),
        await alice.post("/jobs", json={}),
        await alice.request("PUT", "/jobs/x"),
    ]
    for response in answers:
        for name, value in SECURITY_HEADERS.items():
            assert response.headers.get(name) == value, (response.request.url, name)
        assert "server" not in response.headers


async def test_head_is_get_without_the_body(api: ApiClient, alice: AuthedClient) -> None:
    """FastAPI answers HEAD only where a route names it, so `HEAD /health`, a health check's usual probe,
    was a 405, as was every page."""
    for client, url in (
        (api, "http://chronos.test/health"),
        (api, "http://chronos.test/login"),
        (alice, "/jobs"),
    ):
        got, head = await client.get(url), await client.request("HEAD", url)
        assert (head.status_code, head.content) == (got.status_code, b""), url
        assert head.headers["content-type"] == got.headers["content-type"]
        assert head.headers["content-length"] == got.headers["content-length"]
    assert (await alice.request("HEAD", "/jobs/nothing")).status_code == 404


# 6. The OpenAPI document agrees with the answers.


async def test_options_and_other_unsupported_methods_name_every_method_of_the_path(
    alice: AuthedClient,
) -> None:
    for method in ("OPTIONS", "PUT"):
        response = await alice.request(method, "/jobs/some-job")
        expect(response, 405)
        assert set(response.headers["allow"].split(", ")) == {"GET", "PATCH", "DELETE"}
    response = await alice.request("OPTIONS", "/jobs")
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}


@pytest.fixture(scope="module")
async def document(api: ApiClient) -> dict[str, Any]:
    document: dict[str, Any] = expect(await api.get("http://chronos.test/openapi.json"), 200)
    return document


def error_statuses(document: dict[str, Any], method: str, path: str) -> set[int]:
    answers = document["paths"][path][method]["responses"]
    return {int(status) for status in answers if int(status) >= 400}


async def test_every_error_is_documented_as_a_problem(document: dict[str, Any]) -> None:
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for status, answer in operation["responses"].items():
                if int(status) >= 400:
                    assert answer["content"] == {
                        PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}
                    }, (
                        method,
                        path,
                        status,
                    )
    assert "HTTPValidationError" not in document["components"]["schemas"]
    assert document["components"]["schemas"]["Problem"]["required"] == ["title", "status", "detail"]


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("post", "/api/v1/jobs", {400, 401, 403, 409, 413, 422, 429, 503}),
        ("patch", "/api/v1/jobs/{job_id}", {400, 401, 403, 404, 409, 412, 413, 422, 429, 503}),
        ("get", "/api/v1/jobs", {401, 403, 422, 503}),
        ("delete", "/api/v1/dead-letters/{letter_id}", {401, 403, 404, 422, 503}),
        ("post", "/api/v1/runs/{run_id}/cancel", {401, 403, 404, 409, 422, 503}),
        ("post", "/api/v1/auth/register", {400, 409, 413, 422, 429, 503}),
        ("post", "/api/v1/auth/token", {400, 413, 422, 429, 503}),
        ("get", "/api/v1/auth/me", {401}),
        ("get", "/ready", {503}),
    ],
)
async def test_each_operation_documents_the_errors_it_can_answer(
    document: dict[str, Any], method: str, path: str, statuses: set[int]
) -> None:
    assert error_statuses(document, method, path) == statuses


async def test_a_tagged_union_requires_its_tag(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    members = [
        name
        for name in schemas
        if name.split("-")[0].endswith(("Schedule", "Action"))
        and "type" in schemas[name].get("properties", {})
    ]
    assert len(members) >= 6
    for name in members:
        assert "type" in schemas[name]["required"], name


async def test_answers_have_the_documented_problem_shape(api: ApiClient, alice: AuthedClient) -> None:
    answers = [
        await alice.post("/jobs", json=job(action=http_action(methd="PUT"))),
        await api.post("/auth/login", json={"email": "nobody@example.org", "password": "x"}),
        await api.get("/auth/me"),
        await alice.get("/jobs/nothing-here"),
        await alice.post("/jobs", **raw_json("{")),
    ]
    for response in answers:
        assert response.headers["content-type"] == PROBLEM
        body = response.json()
        assert set(body) <= set(Problem.model_fields), body
        assert Problem.model_validate(body).status == response.status_code
