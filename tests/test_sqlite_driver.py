"""`core/sqlite_driver.py`: SQLite statements run on the event loop, and move to a thread only where they
would hold it: waiting for another connection's write lock, or a long read."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine

from core import sqlite_driver
from core.config import Settings
from core.db import make_engine

ROOT = Path(__file__).resolve().parent.parent
# Counts to a few million: far more than `LOOP_BUDGET` of work on any machine.
LONG_READ = (
    "SELECT count(*) FROM (WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 3000000)"
    " SELECT x FROM c)"
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    made = make_engine(Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'driver.db'}"))
    async with made.begin() as conn:
        await conn.execute(text("CREATE TABLE item (id INTEGER PRIMARY KEY, name TEXT)"))
    yield made
    await made.dispose()


@pytest.fixture
def other(engine: AsyncEngine, tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """Another process's connection to the same database, in autocommit: tests take its write lock."""
    conn = sqlite3.connect(tmp_path / "driver.db", isolation_level=None)
    yield conn
    conn.close()


async def test_rows_written_and_read_back(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO item (name) VALUES (:n)"), [{"n": "a"}, {"n": "b"}])
        found = await conn.execute(text("INSERT INTO item (name) VALUES ('c') RETURNING id"))
        assert found.scalar_one() == 3
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT name FROM item ORDER BY id"))).scalars().all()
    assert rows == ["a", "b", "c"]


async def test_an_error_reaches_the_caller_and_the_connection_goes_on(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        with pytest.raises(OperationalError, match="no such table"):
            await conn.execute(text("SELECT * FROM missing"))
        assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1


async def test_a_write_that_meets_another_writer_waits_in_a_thread(
    engine: AsyncEngine, other: sqlite3.Connection
) -> None:
    """Another process's write lock (here another connection's) is waited for off the loop: other tasks run
    meanwhile, and the write lands once the lock is free."""
    other.execute("BEGIN IMMEDIATE")  # holds the write lock
    other.execute("INSERT INTO item (name) VALUES ('other')")

    async def write() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO item (name) VALUES ('mine')"))

    writer = asyncio.create_task(write())
    ticks = 0
    while ticks < 20:  # the loop turns while the write waits
        await asyncio.sleep(0.01)
        ticks += 1
        assert not writer.done()
    other.execute("COMMIT")
    await asyncio.wait_for(writer, 30)
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT name FROM item ORDER BY id"))).scalars().all()
    assert rows == ["other", "mine"]


async def test_a_write_waiting_in_a_thread_ends_with_its_caller(
    engine: AsyncEngine, other: sqlite3.Connection
) -> None:
    """Cancelled while it waits for another writer, the statement is interrupted there and then, not left to
    land later on a connection that its session has rolled back and handed on."""
    other.execute("BEGIN IMMEDIATE")

    async def write() -> None:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO item (name) VALUES ('cancelled')"))

    writer = asyncio.create_task(write())
    for _ in range(20):  # into its thread, waiting for the lock
        await asyncio.sleep(0.01)
    writer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(writer, 10)  # well inside the 30 s it would otherwise wait
    other.execute("COMMIT")
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO item (name) VALUES ('after')"))
    async with engine.connect() as conn:
        rows = (await conn.execute(text("SELECT name FROM item ORDER BY id"))).scalars().all()
    assert rows == ["after"]


async def test_a_long_read_moves_to_a_thread_and_the_loop_runs_meanwhile(engine: AsyncEngine) -> None:
    turned = asyncio.Event()
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))  # connected: the read below is the only thing left to wait on
        asyncio.get_running_loop().call_soon(turned.set)  # on the loop's next turn
        count = (await conn.execute(text(LONG_READ))).scalar_one()
        assert turned.is_set(), "the loop stood still for the whole read"
    assert count == 3_000_000


async def test_other_tasks_get_a_turn_after_each_statement(engine: AsyncEngine) -> None:
    """As a hand-off to a driver thread gave them: a request's statements do not run in one stretch."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
        for _ in range(3):
            turned = asyncio.Event()
            asyncio.get_running_loop().call_soon(turned.set)
            await conn.execute(text("SELECT 1"))
            assert turned.is_set()


async def test_a_read_in_a_transaction_that_wrote_is_not_cut_short(engine: AsyncEngine) -> None:
    """Cutting it short could roll the write back: it runs to the end where it is."""
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO item (name) VALUES ('kept')"))
        assert (await conn.execute(text(LONG_READ))).scalar_one() == 3_000_000
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT name FROM item"))).scalars().all() == ["kept"]


@pytest.mark.parametrize("other_commits", [True, False], ids=["stale snapshot", "read before the write"])
async def test_a_lock_no_wait_can_get_is_refused_at_once(
    engine: AsyncEngine, other: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch, other_commits: bool
) -> None:
    """A transaction that read before it wrote cannot take the write lock while another writer holds it,
    nor once that writer has committed past its snapshot: SQLite refuses at once, without waiting, and so
    does the driver (it used to try again until the busy timeout, spinning a core all along)."""
    monkeypatch.setattr(sqlite_driver, "BUSY_TIMEOUT_MS", 3_600_000)  # a retry would outlast the guard
    async with engine.connect() as conn:
        await conn.exec_driver_sql("BEGIN")
        await conn.execute(text("SELECT count(*) FROM item"))  # the transaction's snapshot
        other.execute("BEGIN IMMEDIATE")
        other.execute("INSERT INTO item (name) VALUES ('other')")
        if other_commits:
            other.execute("COMMIT")
        with pytest.raises(OperationalError, match="database is locked"):
            await asyncio.wait_for(conn.execute(text("INSERT INTO item (name) VALUES ('mine')")), 20)
        await conn.rollback()
    if not other_commits:
        other.execute("COMMIT")
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT name FROM item"))).scalars().all() == ["other"]


async def test_writes_waiting_for_the_lock_leave_the_default_executor_free(
    engine: AsyncEngine, other: sqlite3.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Password checks and list pages run in the loop's default executor (`asyncio.to_thread`): writes
    waiting out another process's lock must not take its threads (a small pool here, as on 2 cores)."""
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(max_workers=2))
    writers_count, waiting, all_waiting = 4, [], asyncio.Event()
    wait = sqlite_driver.Connection._waiting

    def counted(self: sqlite_driver.Connection, work: Callable[[], Any]) -> Any:
        waiting.append(self)
        if len(waiting) == writers_count:
            loop.call_soon_threadsafe(all_waiting.set)
        return wait(self, work)

    monkeypatch.setattr(sqlite_driver.Connection, "_waiting", counted)
    other.execute("BEGIN IMMEDIATE")

    async def write(n: int) -> None:
        async with engine.begin() as conn:
            await conn.execute(text("INSERT INTO item (name) VALUES (:n)"), {"n": f"w{n}"})

    writers = [asyncio.create_task(write(n)) for n in range(writers_count)]
    async with asyncio.timeout(10):
        await all_waiting.wait()  # every write waits for the lock, in a thread
        assert await asyncio.to_thread(lambda: "free") == "free"  # and the default executor still runs
    other.execute("COMMIT")
    await asyncio.wait_for(asyncio.gather(*writers), 30)
    async with engine.connect() as conn:
        assert len((await conn.execute(text("SELECT name FROM item"))).scalars().all()) == 4


# A process whose loop ends (asyncio.run's teardown, as on SIGTERM, cancels every task) while a write waits
# in a thread for another connection's lock.
SHUTDOWN = """
import asyncio, os, sqlite3, sys, threading
from sqlalchemy import text
from core import sqlite_driver
from core.config import Settings
from core.db import make_engine

path = sys.argv[1]
entered = threading.Event()
wait = sqlite_driver.Connection._waiting
def counted(self, work):
    entered.set()
    return wait(self, work)
sqlite_driver.Connection._waiting = counted
other = sqlite3.connect(path, isolation_level=None)
other.execute("BEGIN IMMEDIATE")
engine = make_engine(Settings(data_dir=os.path.dirname(path), database_url=f"sqlite:///{path}"))

async def write():
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO item (name) VALUES ('late')"))

async def main():
    asyncio.create_task(write())
    await asyncio.to_thread(entered.wait, 20)

asyncio.run(main())
other.execute("COMMIT")
print("ended")
"""


def test_a_loop_that_ends_while_a_write_waits_in_a_thread_ends_cleanly(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """The statement's connection is closed only once its thread is done with it, even when the loop's
    end cancels every task: closing it under the statement crashed the process."""
    done = subprocess.run(
        [sys.executable, "-c", SHUTDOWN, str(tmp_path / "driver.db")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "ended"
