"""SQLite for the async engine, on the event loop itself: SQLAlchemy's aiosqlite dialect over a connection
shaped like aiosqlite's that runs each statement at once instead of handing it to a thread of its own.

aiosqlite hands every call (a cursor, its execute, its fetch, its close, a commit) to the connection's
thread and waits for the answer: four hand-offs a statement. A SQLite statement of this service takes tens
of microseconds; the hand-offs took more than half of `JobService.create`'s CPU (docs/bench.md). A
statement moves to a thread only where it would hold the loop:
- one that meets another connection's write lock (SQLITE_BUSY) waits for it there, with the busy timeout.
  On the loop the timeout is 0, so a write never blocks the loop; in a thread, as before, it waits.
- a read outside a write transaction that runs past `LOOP_BUDGET` is cut short and read again there. Only
  such a read: cutting short a write, or a read in a transaction that wrote, could roll the transaction
  back, and a read outside one changes nothing.
After each statement on the loop, other tasks get their turn, as the hand-offs gave them.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

# How long another connection's write lock may be waited for (in a thread), as SQLite's busy timeout.
BUSY_TIMEOUT_MS = 30_000
# How long a read may hold the event loop before it is read again in a thread: a point read takes tens of
# microseconds and never reaches it; a list page's read wastes at most this much of the loop's time before
# it moves (2 ms gave `/health` beside two list callers a p99 of 11-14 ms, 0.5 ms 8.4-9.4: docs/bench.md).
LOOP_BUDGET = 0.0005
# A wait for a lock in a thread polls in slices this long, so that it can stop when its caller is gone.
_BUSY_SLICE_MS = 50
# SQLite's progress handler runs every this many virtual machine steps (about a few microseconds' worth).
_STEPS = 1_000
_MOVE = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_INTERRUPT})
# Where moved statements run: threads of their own, not the loop's default executor, which password hashing
# and list pages use (`asyncio.to_thread`). Writes waiting out another process's lock there took all of its
# few threads (cores + 4) and held those up for as long. As many as connections can wait at once (the pool).
# A statement's future is the executor's own, not a task: the end of the loop (asyncio.run cancels every
# task) marked a task done while its statement still ran, and the connection was closed under it (a crash).
_THREADS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="sqlite")


def is_busy(error: BaseException | None) -> bool:
    """Whether SQLite refused a statement for another connection's lock (SQLITE_BUSY, extended codes too)."""
    code = getattr(error, "sqlite_errorcode", 0)
    return isinstance(error, sqlite3.OperationalError) and code & 0xFF == sqlite3.SQLITE_BUSY


async def connect(database: str) -> Connection:
    """The driver connection, for `create_async_engine(async_creator=...)`."""
    return Connection(sqlite3.connect(database, timeout=0, check_same_thread=False))


class Connection:
    """What SQLAlchemy's aiosqlite dialect uses of an `aiosqlite.Connection`."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.sqlite = conn
        # Named as aiosqlite names it: the dialect reads it (set while open) before a commit or rollback.
        self._connection: sqlite3.Connection | None = conn
        self._deadline: float | None = None
        self._moved: asyncio.Future[Any] | None = None  # the statement last moved to a thread
        self._abandoned = False  # its caller was cancelled: it stops waiting for a lock
        conn.set_progress_handler(self._past_budget, _STEPS)

    def _past_budget(self) -> bool:
        return self._deadline is not None and time.perf_counter() > self._deadline

    async def run(self, work: Callable[[], T], read: bool = False) -> T:
        """`work` on the loop, or in a thread where it would wait for a lock or (a `read`) run long."""
        budgeted = read and not self.sqlite.in_transaction
        self._deadline = time.perf_counter() + LOOP_BUDGET if budgeted else None
        try:
            done = work()
        except sqlite3.OperationalError as exc:
            code = exc.sqlite_errorcode & 0xFF
            if code not in _MOVE or (code == sqlite3.SQLITE_INTERRUPT and not budgeted):
                raise
        else:
            # Other tasks' turn, as a hand-off to a thread gave them: without it a request ran all its
            # statements in one stretch, and `/health` beside two lists waited twice as long (docs/bench.md).
            await asyncio.sleep(0)
            return done
        finally:
            self._deadline = None
        self._moved = moved = asyncio.get_running_loop().run_in_executor(_THREADS, self._waiting, work)
        try:
            return await asyncio.shield(moved)
        except asyncio.CancelledError:
            # The caller is gone (a timeout, a shutdown): end the statement before the connection is used
            # again, instead of leaving it running in the thread.
            self._abandon()
            await asyncio.wait([moved])
            self._abandoned = False
            raise

    def _abandon(self) -> asyncio.Future[Any] | None:
        """The statement still running in a thread, if any, told to end: a wait for a lock stops at its next
        slice, a long read is interrupted, and its failure (the caller's, who is gone) is not reported."""
        moved = self._moved
        if moved is None or moved.done():
            return None
        self._abandoned = True
        self.sqlite.interrupt()
        moved.add_done_callback(lambda done: done.cancelled() or done.exception())
        return moved

    def _waiting(self, work: Callable[[], T]) -> T:
        """`work` in a thread, waiting up to `BUSY_TIMEOUT_MS` for a write lock in short slices, so that a
        cancelled caller (`_abandoned`) ends the wait within one (an interrupt does not end SQLite's).

        Only a lock that SQLite itself waited for (its busy handler ran the slice) is waited for again. A
        busy error it gives at once cannot end while the transaction lasts: one whose snapshot another
        writer has since moved past, or one that read before it wrote. That is the caller's at once, as
        with a plain busy timeout; tried again, it spun a core for the whole timeout."""
        self.sqlite.execute(f"PRAGMA busy_timeout={_BUSY_SLICE_MS}")
        ends = time.monotonic() + BUSY_TIMEOUT_MS / 1000
        try:
            while True:
                began = time.monotonic()
                try:
                    return work()
                except sqlite3.OperationalError as exc:
                    busy = is_busy(exc)
                    waited = time.monotonic() - began >= _BUSY_SLICE_MS / 2000
                    if not (busy and waited) or self._abandoned or time.monotonic() > ends:
                        raise
        finally:
            self.sqlite.execute("PRAGMA busy_timeout=0")

    def cursor(self) -> Cursor:
        return Cursor(self)

    async def commit(self) -> None:
        await self.run(self.sqlite.commit)

    async def rollback(self) -> None:
        await self.run(self.sqlite.rollback)

    async def close(self) -> None:
        if (moved := self._abandon()) is not None:
            await asyncio.wait([moved])
        self.stop()

    def stop(self) -> None:
        """SQLAlchemy's forced close (`terminate`) too. A statement still running in a thread (its caller
        cancelled) is interrupted and the connection closed once it has ended: closing it under the
        statement crashed the process."""
        self._connection = None
        if (moved := self._abandon()) is not None:
            moved.add_done_callback(lambda _: self.sqlite.close())
            return
        self.sqlite.close()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self.sqlite.create_function(*args, **kwargs)

    @property
    def isolation_level(self) -> str | None:
        return self.sqlite.isolation_level


class Cursor:
    """A cursor whose execute also reads every row, so that a read moved to a thread moves whole."""

    def __init__(self, connection: Connection) -> None:
        self._owner = connection
        self._cursor = connection.sqlite.cursor()
        self._rows: collections.deque[Any] = collections.deque()

    async def __aenter__(self) -> Cursor:
        return self

    async def __aexit__(self, *_: object) -> None:
        self._cursor.close()

    async def execute(self, sql: str, parameters: Sequence[Any] | dict[str, Any] = ()) -> Cursor:
        def work() -> list[Any]:
            self._cursor.execute(sql, parameters)
            return self._cursor.fetchall() if self._cursor.description else []

        read = sql.lstrip()[:6].upper() == "SELECT"
        self._rows = collections.deque(await self._owner.run(work, read))
        return self

    async def executemany(self, sql: str, parameters: Iterable[Any]) -> Cursor:
        rows = list(parameters)  # an iterator could not be gone through again in a thread
        await self._owner.run(lambda: self._cursor.executemany(sql, rows))
        self._rows.clear()
        return self

    async def fetchall(self) -> list[Any]:
        rows = list(self._rows)
        self._rows.clear()
        return rows

    async def fetchone(self) -> Any:
        return self._rows.popleft() if self._rows else None

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        count = self._cursor.arraysize if size is None else size
        return [self._rows.popleft() for _ in range(min(count, len(self._rows)))]

    async def close(self) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value
