"""The mirror keeps a job's secrets sealed: whoever reads the `job` table (a backup, a read replica, an
analyst's SQL client) finds no header value but the plain ones and no URL with its userinfo in clear.

The proof reads the rows as such a reader does, with plain SQL and no column types, on SQLite and
PostgreSQL; answers and runs see the real definition as before.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import JSON, bindparam, text
from sqlalchemy.dialects import sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from core.codec import SEALED, new_key_entry
from core.config import Settings
from core.db import make_engine
from core.models import Job, SealedJSON
from core.payloads import Action, HttpAction, NotifySpec, masked_action, masked_notify
from tests.api_client import ENCRYPTION_KEYS, ApiClient, AuthedClient, expect
from tests.http_target import HttpTarget
from tests.test_jobs_api import FAST_RETRY, create, finished_runs, path

ROW = text("SELECT action, notify FROM job WHERE id = :id")
# A row as Chronos wrote it before sealing: the JSON in clear (a plain JSON type, not the column's).
PLAIN_ROW = text("UPDATE job SET action = :action, notify = :notify WHERE id = :id").bindparams(
    bindparam("action", type_=JSON), bindparam("notify", type_=JSON)
)


def secret() -> str:
    return f"s3cret{secrets.token_hex(12)}"


def with_userinfo(url: str, user: str, password: str) -> str:
    return url.replace("http://", f"http://{user}:{password}@", 1)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def once_job(action: dict[str, Any], notify: dict[str, Any] | None = None) -> dict[str, Any]:
    """A job that only runs when triggered (its one fire is a day away): each run reads the row."""
    run_at = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    return {
        "name": "sealed job",
        "schedule": {"type": "once", "run_at": run_at},
        "action": action,
        "retry_policy": FAST_RETRY,
        "notify": notify or {},
    }


async def raw_row(engine: AsyncEngine, job_id: str) -> str:
    """The row's action and notify as the database holds them (SQLite gives text, PostgreSQL JSON)."""
    async with engine.connect() as conn:
        action, notify = (await conn.execute(ROW, {"id": job_id})).one()
    return " ".join(value if isinstance(value, str) else json.dumps(value) for value in (action, notify))


async def triggered(
    user: AuthedClient, target: HttpTarget, job_id: str, route: str, runs: int
) -> dict[str, str]:
    """The headers the target got from a run triggered now (the run builds its input from the row)."""
    expect(await user.post(f"/jobs/{job_id}/trigger"), 202)
    [*_, received] = await target.wait_for(route, runs)
    await finished_runs(user, job_id, runs)
    return received.headers


async def test_secrets_are_sealed_in_the_mirror(
    api: ApiClient, db_engine: AsyncEngine, target: HttpTarget
) -> None:
    alice = await api.authed_user()
    token, api_key, password, hook_password = secret(), secret(), secret(), secret()
    route, hook = path(), path()
    action = {
        "type": "http",
        "url": with_userinfo(target.url(route), "robot", password),
        "headers": {
            "Authorization": f"Bearer {token}",
            "X-Api-Key": api_key,
            "Content-Type": "application/json",
        },
        "body": {"hello": "world"},
    }
    notify = {"webhook_url": with_userinfo(target.url(hook), "hook", hook_password)}
    job = await create(alice, once_job(action, notify))

    row = await raw_row(db_engine, job["id"])
    for value in (token, api_key, password, hook_password):
        assert value not in row
    assert row.count(f"{SEALED}test:") == 4, row  # two headers, two URLs (whole), under the session's key
    assert "application/json" in row, "a plain header stays readable"

    # Answers mask what the row seals: the action's secrets, and the webhook URL's userinfo.
    answer = expect(await alice.get(f"/jobs/{job['id']}"), 200)
    masked = masked_action(HttpAction.model_validate(action))
    assert answer["action"] == job["action"] == masked
    assert answer["notify"] == job["notify"] == masked_notify(NotifySpec.model_validate(notify))
    assert hook_password not in json.dumps(answer) and "****@" in answer["notify"]["webhook_url"]

    # The run gets the real values. httpx sends a URL's userinfo as Basic auth, over the header.
    headers = await triggered(alice, target, job["id"], route, 1)
    assert (headers["Authorization"], headers["X-Api-Key"]) == (basic("robot", password), api_key)
    [notice] = await target.wait_for(hook)
    assert notice.headers["Authorization"] == basic("hook", hook_password)

    # Without userinfo in the URL, the Authorization header itself reaches the target.
    plain_url = {**action, "url": target.url(route)}
    expect(await alice.patch(f"/jobs/{job['id']}", json={"action": plain_url}), 200)
    assert token not in await raw_row(db_engine, job["id"])
    headers = await triggered(alice, target, job["id"], route, 2)
    assert (headers["Authorization"], headers["X-Api-Key"]) == (f"Bearer {token}", api_key)


async def reseal(engine: AsyncEngine, data_dir: Path) -> str:
    """`chronos reseal` on the session's database and keys, as an operator runs it; its output."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHRONOS_")}
    env |= {
        "CHRONOS_DATA_DIR": str(data_dir),
        "CHRONOS_DATABASE_URL": engine.url.render_as_string(hide_password=False),
        "CHRONOS_ENCRYPTION_KEYS": ENCRYPTION_KEYS,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli",
        "reseal",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return out.decode()


async def test_a_row_written_before_sealing_still_loads_and_runs_and_reseal_seals_it(
    api: ApiClient, db_engine: AsyncEngine, target: HttpTarget, tmp_path: Path
) -> None:
    alice = await api.authed_user()
    route = path()
    job = await create(alice, once_job({"type": "http", "url": target.url(route)}))
    token = secret()
    action = {"type": "http", "url": target.url(route), "headers": {"Authorization": f"Bearer {token}"}}
    notify: dict[str, Any] = {"webhook_url": None, "on_failure": [], "on_success": []}
    async with db_engine.begin() as conn:
        await conn.execute(PLAIN_ROW, {"action": action, "notify": notify, "id": job["id"]})
    assert token in await raw_row(db_engine, job["id"])

    answer = expect(await alice.get(f"/jobs/{job['id']}"), 200)
    assert answer["action"] == masked_action(HttpAction.model_validate(action))
    headers = await triggered(alice, target, job["id"], route, 1)
    assert headers["Authorization"] == f"Bearer {token}"

    assert "with key 'test'" in await reseal(db_engine, tmp_path)
    row = await raw_row(db_engine, job["id"])
    assert token not in row and f"{SEALED}test:" in row
    headers = await triggered(alice, target, job["id"], route, 2)
    assert headers["Authorization"] == f"Bearer {token}"


async def test_a_row_sealed_with_an_old_key_loads_after_a_new_key_is_added(
    api: ApiClient, db_engine: AsyncEngine, target: HttpTarget, tmp_path: Path
) -> None:
    alice = await api.authed_user()
    token = secret()
    action = {"type": "http", "url": target.url(path()), "headers": {"X-Api-Key": token}}
    job = await create(alice, once_job(action))  # sealed with the session's key, `test`
    url = db_engine.url.render_as_string(hide_password=False)
    rotated = make_engine(
        Settings(
            data_dir=tmp_path, database_url=url, encryption_keys=f"{new_key_entry('next')},{ENCRYPTION_KEYS}"
        )
    )
    retired = make_engine(
        Settings(data_dir=tmp_path, database_url=url, encryption_keys=new_key_entry("next"))
    )
    try:
        async with AsyncSession(rotated) as session:
            row = await session.get(Job, job["id"])
        assert row is not None and isinstance(row.action, HttpAction)
        assert row.action.headers == {"X-Api-Key": token}

        # What the rotated engine writes, it seals with the newest key.
        column = SealedJSON(Action)
        sealed = column.process_bind_param(row.action, rotated.dialect)
        assert sealed["headers"]["X-Api-Key"].startswith(f"{SEALED}next:")
        assert column.process_result_value(sealed, rotated.dialect) == row.action

        # A ring without the old key cannot read the row, and says which key it lacks.
        async with AsyncSession(retired) as session:
            with pytest.raises(ValueError, match="key 'test', which CHRONOS_ENCRYPTION_KEYS does not hold"):
                await session.get(Job, job["id"])
    finally:
        await rotated.dispose()
        await retired.dispose()


def test_an_engine_without_a_key_ring_refuses_sealed_columns() -> None:
    with pytest.raises(RuntimeError, match="no key ring"):
        SealedJSON(NotifySpec).process_bind_param(NotifySpec(), sqlite.dialect())
