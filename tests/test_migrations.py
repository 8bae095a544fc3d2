"""The migrations build exactly the models' schema, on SQLite and PostgreSQL, also when processes race."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from asyncio.subprocess import PIPE
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event, func, inspect, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from sqlmodel import SQLModel, col, select

from core import models
from core.config import Settings
from core.db import alembic_config, create_schema, include_object, make_engine, make_sessions
from core.jobs import matching
from tests.conftest import throwaway_database


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Settings]:
    """Settings of an empty database: a new SQLite file, or a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        yield Settings(data_dir=tmp_path)
        return
    with throwaway_database("migrate") as url:
        yield Settings(data_dir=tmp_path, database_url=url)


@pytest.fixture
async def engine(fresh_settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(fresh_settings)
    yield engine
    await engine.dispose()


def _schema_diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(connection, opts={"include_object": include_object})
    return compare_metadata(context, SQLModel.metadata)


def _revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def _inspect(engine: AsyncEngine) -> tuple[list[Any], str | None]:
    async with engine.connect() as conn:
        return await conn.run_sync(_schema_diff), await conn.run_sync(_revision)


HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()


async def test_upgrade_builds_the_models_schema(engine: AsyncEngine) -> None:
    """A model change without a migration fails here: write one as docs/operations.md says."""
    await create_schema(engine)
    diff, revision = await _inspect(engine)
    assert diff == []
    assert revision == HEAD


async def test_upgrade_again_keeps_the_data(engine: AsyncEngine) -> None:
    await create_schema(engine)
    async with make_sessions(engine)() as session:
        session.add(models.User(email="alice@example.org", password_hash="x"))
        await session.commit()
    await create_schema(engine)
    async with make_sessions(engine)() as session:
        users = (await session.exec(select(models.User))).all()
    assert [u.email for u in users] == ["alice@example.org"]


# A Chronos process at start: it connects, waits for the go (a line on stdin), then upgrades.
_PROCESS_START = """
import asyncio, sys
from core.config import Settings
from core.db import create_schema, make_engine

async def start():
    engine = make_engine(Settings())
    print("ready", flush=True)
    sys.stdin.readline()
    await create_schema(engine)
    await engine.dispose()

asyncio.run(start())
"""


async def test_processes_starting_at_once_upgrade_once(fresh_settings: Settings, engine: AsyncEngine) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHRONOS_")}
    env["CHRONOS_DATA_DIR"] = str(fresh_settings.data_dir)
    if fresh_settings.database_url:
        env["CHRONOS_DATABASE_URL"] = fresh_settings.database_url
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", _PROCESS_START, env=env, stdin=PIPE, stdout=PIPE, stderr=PIPE
        )
        for _ in range(4)
    ]
    for p in processes:
        assert p.stdout is not None
        assert await p.stdout.readline() == b"ready\n"
    for p in processes:
        assert p.stdin is not None
        p.stdin.write(b"go\n")
    outcomes = await asyncio.gather(*(p.communicate() for p in processes))
    assert [p.returncode for p in processes] == [0] * 4, [err.decode()[-2000:] for _, err in outcomes]
    diff, revision = await _inspect(engine)
    assert diff == []
    assert revision == HEAD


def _refusing_at_first(engine: AsyncEngine, code: int, message: str) -> list[int]:
    """The engine's first new connection fails as SQLite fails it (its error code set); the list counts
    the refusals."""
    refused: list[int] = []

    @event.listens_for(engine.sync_engine, "connect")
    def refuse_once(*_: Any) -> None:
        if not refused:
            refused.append(code)
            error = sqlite3.OperationalError(message)
            error.sqlite_errorcode = code
            raise error

    return refused


async def test_an_upgrade_sqlite_refuses_at_once_is_tried_again(tmp_path: Path) -> None:
    """SQLite answers "database is locked" at once where a wait could deadlock (connections switching a new
    file to WAL together, say): three of four processes starting at once failed so in one CI run. The
    start tries again."""
    engine = make_engine(Settings(data_dir=tmp_path))
    refused = _refusing_at_first(engine, sqlite3.SQLITE_BUSY, "database is locked")
    try:
        await create_schema(engine)
        diff, revision = await _inspect(engine)
    finally:
        await engine.dispose()
    assert refused == [sqlite3.SQLITE_BUSY]
    assert diff == []
    assert revision == HEAD


async def test_an_upgrade_failing_otherwise_fails_the_start(tmp_path: Path) -> None:
    engine = make_engine(Settings(data_dir=tmp_path))
    _refusing_at_first(engine, sqlite3.SQLITE_IOERR, "disk I/O error")
    try:
        with pytest.raises(OperationalError, match="disk I/O error"):
            await create_schema(engine)
    finally:
        await engine.dispose()


def _downgrade_to_base(connection: Connection) -> None:
    command.downgrade(alembic_config(connection), "base")


async def test_downgrade_to_base_leaves_an_empty_database(engine: AsyncEngine) -> None:
    await create_schema(engine)
    async with engine.begin() as conn:
        await conn.run_sync(_downgrade_to_base)
    async with engine.connect() as conn:
        tables = await conn.run_sync(lambda c: inspect(c).get_table_names())
        revision = await conn.run_sync(_revision)
    assert tables == ["alembic_version"]
    assert revision is None


async def test_the_name_filter_has_a_trigram_index_on_postgresql(engine: AsyncEngine) -> None:
    """The job list's `q` condition is the expression the index holds, so PostgreSQL can use it (an empty
    table would be read whole anyway: sequential scans are turned off to ask whether it could)."""
    await create_schema(engine)
    query = select(models.Job.id).where(*matching(models.JobFilter(q="nightly")))
    async with engine.connect() as conn:
        indexes = await conn.run_sync(lambda c: [i["name"] for i in inspect(c).get_indexes("job")])
        if conn.dialect.name != "postgresql":
            assert "ix_job_name_trgm" not in indexes
            return
        assert "ix_job_name_trgm" in indexes
        await conn.exec_driver_sql("SET enable_seqscan = off")
        compiled = query.compile(conn.engine, compile_kwargs={"literal_binds": True})
        plan = (await conn.exec_driver_sql(f"EXPLAIN {compiled}")).scalars().all()
    assert any("ix_job_name_trgm" in line for line in plan), plan


def _upgrade_to(revision: str) -> Any:
    return lambda connection: command.upgrade(alembic_config(connection), revision)


# Rows written in SQL, as the schema at 0007 and later takes them: user u1 and its jobs.
async def _add_user(conn: AsyncConnection) -> None:
    await conn.exec_driver_sql(
        'INSERT INTO "user" (id, email, role, created_at, password_hash, webhook_secret) '
        "VALUES ('u1', 'a@example.org', 'user', '2026-01-01 00:00:00+00:00', 'x', 's')"
    )


async def _add_job(conn: AsyncConnection, job_id: str, action: str = "{}", deleted_at: str = "NULL") -> None:
    """`deleted_at` as an SQL literal."""
    await conn.exec_driver_sql(
        "INSERT INTO job (id, owner_id, name, schedule, action, retry_policy, execution_guarantee, "
        "overlap_policy, notify, state, paused, created_at, updated_at, deleted_at) VALUES "
        f"('{job_id}', 'u1', 'n', '{{}}', '{action}', '{{}}', 'at_least_once', 'skip', '{{}}', "
        f"'scheduled', false, '2026-01-02 03:04:05+00:00', '2026-01-02 03:04:05+00:00', {deleted_at})"
    )


async def test_label_rows_get_their_jobs_owner_and_time_and_a_deleted_jobs_go(engine: AsyncEngine) -> None:
    """0008: the label rows of a database written before it are filled from their jobs, and a deleted job's
    are removed (the label index holds live jobs only)."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade_to("0007_quota_count"))
        await _add_user(conn)
        for job_id, deleted in (("live", "NULL"), ("gone", "'2026-02-01 00:00:00+00:00'")):
            await _add_job(conn, job_id, deleted_at=deleted)
            await conn.exec_driver_sql(f"INSERT INTO joblabel VALUES ('{job_id}', 'team', 'a')")
        await conn.run_sync(_upgrade_to("head"))
    async with make_sessions(engine)() as session:
        rows = (await session.exec(select(models.JobLabel))).all()
    assert [(r.job_id, r.owner_id, r.created_at.isoformat()) for r in rows] == [
        ("live", "u1", "2026-01-02T03:04:05+00:00")
    ]


async def test_a_run_keeps_its_row_through_0010_and_takes_a_month_long_duration(engine: AsyncEngine) -> None:
    """0010 makes `run.duration_ms` 64 bits on PostgreSQL (SQLite's are already): a run written before keeps
    its row and the rows that refer to it, and a duration past 2**31 ms fits after."""
    async with engine.begin() as conn:
        await conn.run_sync(_upgrade_to("0009_live_jobs_covering"))
        await _add_user(conn)
        await _add_job(conn, "j1")
        await conn.exec_driver_sql(
            "INSERT INTO run (id, job_id, owner_id, status, trigger, attempts, duration_ms, created_at) "
            "VALUES ('r1', 'j1', 'u1', 'succeeded', 'manual', 1, 1234, '2026-01-02 03:04:05+00:00')"
        )
        # Rows that refer to the run: a copy of the table (SQLite's way to change a type) would fail on them.
        await conn.exec_driver_sql(
            "INSERT INTO attempt (run_id, number, status) VALUES ('r1', 1, 'succeeded')"
        )
        await conn.run_sync(_upgrade_to("head"))
        month = 31 * 24 * 3600 * 1000
        await conn.execute(update(models.Run).where(col(models.Run.id) == "r1").values(duration_ms=month))
    async with make_sessions(engine)() as session:
        run = await session.get(models.Run, "r1")
    assert run is not None and (run.job_id, run.status, run.duration_ms) == ("j1", "succeeded", month)
    diff, revision = await _inspect(engine)
    assert diff == [] and revision == HEAD


async def test_a_users_live_jobs_are_counted_from_their_index_alone(engine: AsyncEngine) -> None:
    """A page by number counts the user's live jobs (core/db.py `_numbered`): from `ix_job_owner_live`
    alone, not the table, once the statistics say one user owns every job (SQLite read the whole table
    while the index lacked `deleted_at`)."""
    await create_schema(engine)
    count = select(func.count()).select_from(
        select(models.Job.id)
        .where(col(models.Job.deleted_at).is_(None), col(models.Job.owner_id) == "u1")
        .subquery()
    )
    async with engine.begin() as conn:
        await _add_user(conn)
        action = '{"url": "' + "x" * 500 + '"}'  # rows as wide as real ones, so reading the table costs
        for n in range(100):
            await _add_job(conn, f"j{n}", action=action)
    postgresql = engine.dialect.name == "postgresql"
    options = {"isolation_level": "AUTOCOMMIT"} if postgresql else {}  # VACUUM runs outside a transaction
    async with engine.execution_options(**options).connect() as conn:
        if postgresql:
            await conn.exec_driver_sql("VACUUM ANALYZE job")
            await conn.exec_driver_sql("SET enable_seqscan = off")  # 100 rows would be read whole anyway
        else:
            await conn.exec_driver_sql("ANALYZE")
        compiled = count.compile(conn.engine, compile_kwargs={"literal_binds": True})
        explain = "EXPLAIN" if postgresql else "EXPLAIN QUERY PLAN"
        plan = " ".join(str(row[-1]) for row in await conn.exec_driver_sql(f"{explain} {compiled}"))
    if postgresql:
        assert "Index Only Scan using ix_job_owner_live" in plan, plan
    else:
        assert "COVERING INDEX ix_job_owner_live" in plan, plan
