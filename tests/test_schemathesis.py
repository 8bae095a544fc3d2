"""Schemathesis over every operation of /openapi.json, with all its checks: no server error, no status,
content type or body the document does not describe.

The app runs in schemathesis's own event loop (its ASGI client), on a fresh SQLite mirror, its Temporal
calls going to the session's Temporal dev server; requests carry a real user's token so they reach past
401. The examples per operation are bounded so the run stays near a minute on two cores.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from schemathesis.config import SchemathesisConfig
from temporalio.testing import WorkflowEnvironment

from api.main import create_app
from core.auth import ROLE_SCOPES, create_user, issue_access_token
from core.config import Settings
from core.db import create_schema, make_engine, make_sessions
from core.models import Role
from tests.api_client import PASSWORD, new_email

MAX_EXAMPLES = 8


@pytest.fixture(scope="module")
async def conformance(
    temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> tuple[FastAPI, str]:
    """The app and a bearer token of a user in its mirror, as the token endpoint would issue it."""
    settings = Settings(
        data_dir=Path(tmp_path_factory.mktemp("schemathesis")),
        temporal_address=temporal_env.client.service_client.config.target_host,
        task_queue=f"schemathesis-{uuid.uuid4().hex[:8]}",
        auth_attempts_per_minute=1_000_000,
        job_writes_per_minute=1_000_000,
        runs_per_minute=1_000_000,
    )
    engine = make_engine(settings)
    await create_schema(engine)
    user = await create_user(make_sessions(engine), new_email(), PASSWORD, admin=False)
    await engine.dispose()
    return create_app(settings), issue_access_token(settings, user, ROLE_SCOPES[Role.USER])


# The document comes from an app that is never started; the requests go to the fixture's app. (The
# lazy `schemathesis.pytest.from_fixture` does not run on pytest 9.2: it sets a removed node attribute.)
CONFIG = {
    "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
    "checks": {
        # Valid by the document yet refused by a rule it cannot state (a cron expression, a drawn id that
        # names nothing, a state that forbids the change): documented answers all the same.
        "positive_data_acceptance": {"expected-statuses": ["2xx", 401, 403, 404, 409, 422]},
        # Off: pydantic's lax mode takes values JSON Schema calls the wrong type when they convert without
        # loss (`0` for false, `"3"` for 3, epoch seconds for a date-time). Invalid input still has to meet
        # every other check: no 5xx, and only documented statuses, types and bodies.
        "negative_data_rejection": {"enabled": False},
    },
    "operations": [
        # Logout revokes the one token every case carries (tests/test_auth.py covers it).
        {"include-path": "/api/v1/auth/logout", "enabled": False},
        # No worker polls this test's task queue: not ready is the answer /ready documents for that.
        {
            "include-path": "/ready",
            "checks": {
                "not_a_server_error": {"expected-statuses": ["2xx", "3xx", "4xx", 503]},
                "positive_data_acceptance": {"expected-statuses": [200, 503]},
            },
        },
        # The JSON password grant: drawn credentials name no account (`invalid_grant`, as RFC 6749 says).
        {
            "include-path": "/api/v1/auth/login",
            "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", 400, 422]}},
        },
    ],
}
schema = schemathesis.openapi.from_dict(
    create_app(Settings()).openapi(), config=SchemathesisConfig.from_dict(CONFIG)
)


@schema.parametrize()
def test_the_api_answers_as_its_document_says(
    case: schemathesis.Case, conformance: tuple[FastAPI, str]
) -> None:
    app, token = conformance
    case.call_and_validate(app=app, headers={"Authorization": f"Bearer {token}"})
