"""The API's dependencies, defined once as `Annotated` aliases that routes name in their signatures.

All are `async def`, even those that await nothing: FastAPI runs a plain `def` dependency in its thread
pool, a hand-off to a thread and back for each one, several per request (docs/bench.md)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any, cast

from fastapi import Depends, Query, Request, Security
from fastapi.security import OAuth2PasswordBearer, SecurityScopes
from pydantic import ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from core.audit import AuditService
from core.auth import SCOPES, Principal, authorize, decode_access_token
from core.codec import keyring
from core.codec_service import CodecService
from core.config import Settings
from core.db import RequestSessions, Sessions
from core.dead_letters import DeadLetterService
from core.errors import Forbidden, Invalid, Unauthorized
from core.jobs import JobService
from core.models import JobFilter, JobState, ScheduleType
from core.runs import RunService
from core.temporal import TemporalGateway
from core.users import UserService

# The methods that change nothing (RFC 9110 9.2.1): the dashboard asks no CSRF token of them, and their
# token check's session stays theirs (`current_principal`).
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# The token URL makes the Authorize button of /docs run the OAuth2 password grant.
oauth2_scheme = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", scopes=SCOPES, auto_error=False)


# Text no request may carry, wherever in it: PostgreSQL cannot store the NUL character (a name, a filter or
# an id holding one failed there as a 500), and SQLite could, so the two mirrors would disagree.
NUL = "\x00"
FORMS = ("application/x-www-form-urlencoded", "multipart/form-data")


async def refuse_nul(request: Request) -> None:
    """422 for a NUL character in the path, the query or the body (a JSON string or key, a form field),
    naming where; every route has it (`create_app`). A JSON body is searched for the escape `\\u0000`
    first, so one without it is never walked."""
    where = [("path", name) for name, value in request.path_params.items() if NUL in str(value)]
    where += [("query", key) for key, value in request.query_params.multi_items() if NUL in key + value]
    if request.method not in SAFE_METHODS:
        # Read whole first, so a route that takes the body as it is (the Temporal UI's proxy) still can; a
        # route that parsed it as a form (its content type in any case) has it kept as one instead.
        try:
            body: bytes | None = await request.body()
        except RuntimeError:  # "Stream consumed": parsed as a form already
            body = None
        if body is None or request.headers.get("content-type", "").lower().startswith(FORMS):
            form = await request.form()
            where += [("body", key) for key, value in form.multi_items() if NUL in key + str(value)]
        elif b"\\u0000" in body:
            # Not JSON, or nested past the parser here (deeper in the stack than the route's own parse):
            # the route refuses it as it stands (any body nested past 32 levels is a 422).
            with contextlib.suppress(ValueError, RecursionError):
                where += [("body", *path) for path in _nul_paths(json.loads(body))]
    if where:
        first = ".".join(str(part) for part in where[0][1:])
        more = f" (and {len(where) - 1} more)" if len(where) > 1 else ""
        raise Invalid(f"{first}: must not contain the NUL character (U+0000){more}", where[0])


def _nul_paths(document: Any) -> Iterator[tuple[Any, ...]]:
    """The paths of a parsed JSON document's strings and keys that hold NUL (a stack: a deep document
    cannot exhaust the interpreter's recursion)."""
    stack: list[tuple[tuple[Any, ...], Any]] = [((), document)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str) and NUL in value:
            yield path
        elif isinstance(value, dict):  # a key that holds NUL is reported at its own path
            stack.extend(((*path, k), NUL if NUL in k else v) for k, v in reversed(value.items()))
        elif isinstance(value, list):
            stack.extend(((*path, i), item) for i, item in reversed(list(enumerate(value))))


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.sessions
    return sessions


async def get_temporal(request: Request) -> TemporalGateway:
    gateway: TemporalGateway = request.app.state.temporal
    return gateway


# Bounded, so a huge page number is a 422 rather than an offset the database cannot hold.
PageNo = Annotated[
    int | None,
    Query(
        ge=1,
        le=1_000_000,
        description="1-based page number, for older clients: the answer counts every row (`total`), and "
        "deep pages are slow; page by `cursor` instead",
    ),
]
Limit = Annotated[int, Query(ge=1, le=100, description="items per page")]
Cursor = Annotated[
    str | None, Query(max_length=500, description="`next_cursor` of the previous page; none for the first")
]


def parse_labels(label: list[str]) -> dict[str, str]:
    """Labels from `key:value` pairs, for the API's filter and the dashboard's; a pair that is not
    `key:value`, or a key given twice with different values, is a 422 naming `label`."""
    labels: dict[str, str] = {}
    for pair in label:
        key, colon, value = pair.partition(":")
        if not colon:
            raise Invalid(f"label: '{pair}' is not key:value", ("query", "label"))
        if labels.get(key, value) != value:
            raise Invalid(f"label: {key} is given twice with different values", ("query", "label"))
        labels[key] = value
    return labels


async def job_filter(
    state: JobState | None = None,
    type: Annotated[ScheduleType | None, Query(description="the schedule's type")] = None,
    q: Annotated[str | None, Query(max_length=200, description="part of the name, any case")] = None,
    label: Annotated[
        list[str], Query(description="`key:value`, a label the job has; repeat it for more (all must hold)")
    ] = [],  # noqa: B006 (FastAPI copies the default)
) -> JobFilter:
    """The list filter from the query string; a label that is not `key:value` is a 422 naming `label`."""
    try:
        return JobFilter(state=state, type=type, q=q, labels=parse_labels(label))
    except ValidationError as exc:
        raise Invalid(f"label: {exc.errors()[0]['msg']}", ("query", "label")) from exc


JobFilterDep = Annotated[JobFilter, Depends(job_filter)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionsDep = Annotated[Sessions, Depends(get_sessions)]
TemporalDep = Annotated[TemporalGateway, Depends(get_temporal)]


async def get_session(sessions: SessionsDep) -> AsyncIterator[AsyncSession]:
    async with sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


async def request_sessions(session: SessionDep, sessions: SessionsDep) -> Sessions:
    """The services' sessions: their blocks continue the request's session, which the token check began
    (`core.db.RequestSessions`). Typed as the session maker they take, of which they only call."""
    return cast(Sessions, RequestSessions(session, sessions))


RequestSessionsDep = Annotated[Sessions, Depends(request_sessions)]


async def current_principal(
    request: Request,
    scopes: SecurityScopes,
    settings: SettingsDep,
    session: SessionDep,
    token: Annotated[str | None, Depends(oauth2_scheme)],
) -> Principal:
    """The caller from a valid access token that is not logged out and whose account is enabled (one
    indexed read, in the request's session); 401 otherwise, 403 when it lacks a required scope.

    A read (GET, HEAD) keeps the session's connection for the services' first block. Any other method
    gives it back first: a write may queue for SQLite's write lock (`core.db.writing`), and requests
    waiting there with a connection each could hold the whole pool while the writer ahead of them waits
    for one (a 30 s pool timeout, then a 500, with 16 concurrent creates)."""
    if not token:
        raise Unauthorized("a bearer token is required")
    principal = await authorize(session, decode_access_token(settings, token))
    if request.method not in SAFE_METHODS:
        await session.close()
    missing = [s for s in scopes.scopes if s not in principal.scopes]
    if missing:
        raise Forbidden(f"this token lacks the scope {' '.join(missing)}")
    return principal


CurrentUser = Annotated[Principal, Security(current_principal)]
Reader = Annotated[Principal, Security(current_principal, scopes=["jobs:read"])]
Writer = Annotated[Principal, Security(current_principal, scopes=["jobs:write"])]
Admin = Annotated[Principal, Security(current_principal, scopes=["admin"])]


async def get_jobs(settings: SettingsDep, sessions: RequestSessionsDep, temporal: TemporalDep) -> JobService:
    return JobService(settings, sessions, temporal)


JobServiceDep = Annotated[JobService, Depends(get_jobs)]


async def get_runs(settings: SettingsDep, sessions: RequestSessionsDep, temporal: TemporalDep) -> RunService:
    return RunService(settings, sessions, temporal)


RunServiceDep = Annotated[RunService, Depends(get_runs)]


async def get_dead_letters(sessions: RequestSessionsDep, jobs: JobServiceDep) -> DeadLetterService:
    return DeadLetterService(sessions, jobs)


DeadLetterServiceDep = Annotated[DeadLetterService, Depends(get_dead_letters)]


async def get_codec(settings: SettingsDep, sessions: RequestSessionsDep) -> CodecService:
    return CodecService(sessions, keyring(settings))


CodecServiceDep = Annotated[CodecService, Depends(get_codec)]


async def get_users(settings: SettingsDep, sessions: RequestSessionsDep, jobs: JobServiceDep) -> UserService:
    return UserService(settings, sessions, jobs)


UserServiceDep = Annotated[UserService, Depends(get_users)]


async def get_audit(sessions: RequestSessionsDep) -> AuditService:
    return AuditService(sessions)


AuditServiceDep = Annotated[AuditService, Depends(get_audit)]
