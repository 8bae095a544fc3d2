"""The SQL mirror's engine and sessions: one async engine per process, SQLite or PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import math
import time
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from itertools import groupby
from pathlib import Path
from typing import Any, TypeVar, TypeVarTuple, overload

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Row, event, func, insert, inspect, literal, make_url, text, tuple_
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlalchemy.orm import Mapper, Session
from sqlmodel import SQLModel, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import Select, SelectOfScalar

from core import pg_driver, sqlite_driver
from core.codec import keyring
from core.config import Settings
from core.errors import Invalid
from core.models import CursorPage, Page, attach_keyring

Sessions = async_sessionmaker[AsyncSession]
M = TypeVar("M")
Ts = TypeVarTuple("Ts")


MIGRATIONS = Path(__file__).with_name("migrations")
# Key of the PostgreSQL advisory lock that every Chronos process holds while it upgrades the schema.
SCHEMA_LOCK = 0x6368726F6E6F73  # "chronos"
# Between tries of a schema upgrade that SQLite refused at once ("database is locked": `create_schema`).
SCHEMA_RETRY_SECONDS = 0.05


def make_engine(settings: Settings) -> AsyncEngine:
    """The engine, carrying the key ring that seals the secrets of its jobs' rows (`SealedJSON`)."""
    engine = _engine(settings)
    attach_keyring(engine.dialect, keyring(settings))
    return engine


def _engine(settings: Settings) -> AsyncEngine:
    """SQLite gets WAL so the API and worker processes can share one file, and statements run on the event
    loop (`core.sqlite_driver`, which also waits out another process's write lock). PostgreSQL gets a
    bound on every wait (`core.pg_driver`), so a database that stops answering is a 503, not a hang."""
    url = settings.sqlalchemy_url
    if url.startswith("sqlite"):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        database = make_url(url).database or ":memory:"
        engine = create_async_engine(url, async_creator=partial(sqlite_driver.connect, database))

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    bound = settings.db_timeout_seconds
    return create_async_engine(
        url,
        pool_size=settings.db_pool_size,
        pool_pre_ping=True,
        pool_timeout=bound,
        connect_args={
            "async_creator_fn": pg_driver.bounded_connection(bound).connect,
            "connect_timeout": max(2, math.ceil(bound)),  # libpq's unit, and its least
        },
    )


def make_sessions(engine: AsyncEngine) -> Sessions:
    return async_sessionmaker(engine, class_=AsyncSession, expire_on_commit=False)


class RequestSessions:
    """The sessions of one API request. Its blocks take turns on the request's one session, which the
    token check (`core.auth.authorize`) has already begun, so a read that checks a token and reads a page
    pays one pool checkout (with the pool's ping), one BEGIN and one ROLLBACK, not two of each: on
    PostgreSQL those round trips were most of a short page's time. (A write's token check gives the
    connection back at once: `api.deps.current_principal`.) Each block still ends as one of its own
    session would: the session is closed, its transaction rolled back unless committed, its objects
    detached (it begins anew on its next use). A block opened while another is open (a service that calls
    another, or a concurrent task) gets a session of its own from `sessions`, as before. The services take
    it where they take `Sessions` (`async with sessions() as session` is all they do with either)."""

    def __init__(self, session: AsyncSession, sessions: Sessions) -> None:
        self._session = session
        self._sessions = sessions
        self._busy = False

    def __call__(self) -> AbstractAsyncContextManager[AsyncSession]:
        return self._sessions() if self._busy else self._turn()

    @asynccontextmanager
    async def _turn(self) -> AsyncIterator[AsyncSession]:
        self._busy = True
        try:
            async with self._session as session:  # closes it at the end, as a block of its own would
                yield session
        finally:
            self._busy = False


# One queue of writers per SQLite engine and event loop (see `writing`).
_WRITERS: weakref.WeakKeyDictionary[Any, dict[asyncio.AbstractEventLoop, asyncio.Lock]] = (
    weakref.WeakKeyDictionary()
)


@asynccontextmanager
async def writing(session: AsyncSession) -> AsyncIterator[None]:
    """Take this process's turn to write on SQLite, until the session commits or rolls back (or the block
    ends). SQLite has one write lock, and a connection that finds it taken polls it with sleeps of up to
    100 ms (its busy handler): with many concurrent requests in one process, waiters slept past the moment
    it freed and the hot writes (rate events, new jobs) had a tail of seconds (docs/bench.md). Queued here
    they start as soon as the writer before them ends; other processes still meet the busy handler. A
    no-op on PostgreSQL, whose row locks queue writers themselves."""
    engine = session.bind
    if engine is None or engine.dialect.name != "sqlite":
        yield
        return
    lock = _WRITERS.setdefault(engine.sync_engine, {}).setdefault(asyncio.get_running_loop(), asyncio.Lock())
    await lock.acquire()
    held = True

    def release(*_: Any) -> None:
        nonlocal held
        if held:
            held = False
            lock.release()

    session.sync_session.info[_RELEASE] = release
    try:
        yield
    finally:
        session.sync_session.info.pop(_RELEASE, None)
        release()


def insert_rows(conn: Connection, rows: Sequence[SQLModel]) -> None:
    """New rows as Core inserts in the order given (parents first), one statement for each run of rows of
    one model: a create's rows need none of the ORM's unit of work, whose flush and commit bookkeeping cost
    more than the statements (docs/bench.md). Each row's `before_insert` listeners still run, as a flush
    runs them; the rows stay outside any session."""
    for model, group in groupby(rows, key=type):
        mapper: Mapper[Any] = inspect(model)
        batch = list(group)
        for row in batch:
            mapper.dispatch.before_insert(mapper, conn, inspect(row))
        columns = mapper.local_table.columns
        conn.execute(insert(model), [{c.key: getattr(row, c.key) for c in columns} for row in batch])


# The key under which a session in its turn keeps the function that ends it: one listener for every
# session, registered once, calls it (adding and removing listeners per turn cost more than the writes).
_RELEASE = "chronos.writing.release"


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _turn_ends(session: Session) -> None:
    release = session.info.get(_RELEASE)
    if release is not None:
        release()


# The first key of PostgreSQL's two-key advisory locks that `lock_for_change` takes ("chng").
CHANGE_SPACE = 0x63686E67
# The turns `lock_for_change` takes in this process, by engine, event loop and key; each goes once unused.
_CHANGES: weakref.WeakValueDictionary[tuple[int, int, str], asyncio.Lock] = weakref.WeakValueDictionary()
_CHANGING = "chronos.changing.held"


async def lock_for_change(session: AsyncSession, key: str) -> None:
    """Hold `key`'s lock (what is changed: `job:<id>`, `user:<id>`) until the session's transaction ends, so
    that changes to one thing sent at once take turns, each reading what the one before left. Not the
    row's own lock: the worker writes its runs into the job's row, and a change waiting on Temporal may
    wait on such a run (a pause's signal to a run whose first attempt was writing its record waited 5 s,
    then failed).

    Changes in this process take turns on a lock of the process first, and a session that has not begun
    takes it before its pooled connection: a change waiting for another holds none. Fifty changes sent at
    once to four jobs each held one while they waited, the pool ran out, and changes to other jobs waited
    for it until their time ran out. On PostgreSQL the turn's holder then takes an advisory lock, which
    only another process's change waits for; SQLite has no other lock but its database's."""
    place = (id(session.sync_session.get_bind()), id(asyncio.get_running_loop()), key)
    turn = _CHANGES.get(place) or _CHANGES.setdefault(place, asyncio.Lock())
    await turn.acquire()
    try:
        conn = await session.connection()  # in the transaction the lock lasts for
        if conn.dialect.name == "postgresql":
            number = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=4).digest(), "big", signed=True)
            await conn.execute(
                text("SELECT pg_advisory_xact_lock(:space, :key)"), {"space": CHANGE_SPACE, "key": number}
            )
    except BaseException:  # no transaction to end it (the pool's wait ran out, a cancel): given back here
        turn.release()
        raise
    session.sync_session.info.setdefault(_CHANGING, []).append(turn)


@event.listens_for(Session, "after_transaction_end")
def _changes_end(session: Session, transaction: Any) -> None:
    if transaction.parent is None:
        for lock in session.info.pop(_CHANGING, ()):
            lock.release()


# Indexes a migration makes only where the database allows (0006: the trigram index for the name filter,
# which needs pg_trgm), so the models do not declare them: comparing the schema with the models skips them.
UNMODELLED_INDEXES = frozenset({"ix_job_name_trgm"})


def include_object(_obj: Any, name: str | None, type_: str, reflected: bool, _compare_to: Any) -> bool:
    """Alembic's filter when it compares the database with the models (`UNMODELLED_INDEXES`)."""
    return not (type_ == "index" and reflected and name in UNMODELLED_INDEXES)


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's settings without an ini file, so an installed package finds its migrations."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    command.upgrade(alembic_config(connection), "head")


async def create_schema(engine: AsyncEngine) -> None:
    """Upgrade the mirror to the newest migration (idempotent), so every process can start on any database.

    Processes that start at once queue on a lock held until the commit: SQLite's write lock (`BEGIN
    IMMEDIATE` waits out the busy timeout) or a PostgreSQL advisory lock. The next one then finds the
    schema at head. Both databases have transactional DDL, so a failed upgrade leaves nothing half done.

    SQLite may also answer "database is locked" at once instead of waiting, where a wait could deadlock
    (connections switching a new file to WAL together, say: three of four processes starting at once on a
    new file failed so in one CI run), and the driver passes such an answer on (`core.sqlite_driver`).
    Nothing has been written then, so the whole step is tried again, for as long as a lock is waited for."""
    deadline = time.monotonic() + sqlite_driver.BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            with pg_driver.unbounded():
                await _upgrade_under_lock(engine)
            return
        except OperationalError as exc:
            if not sqlite_driver.is_busy(exc.orig) or time.monotonic() > deadline:
                raise
        await asyncio.sleep(SCHEMA_RETRY_SECONDS)


async def _upgrade_under_lock(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
        await conn.run_sync(_upgrade)
        await conn.commit()


@dataclass(frozen=True)
class RowIndex:
    """Rows of another table that stand one for one for a query's rows, with the same sort key (`at`,
    `id_`): a page counts, skips or seeks by cursor in them instead of the query's own rows, which would
    join tables. `ids` selects the index's `id_` column under its conditions."""

    ids: SelectOfScalar[Any]
    at: Any
    id_: Any


@overload
async def paginate(
    session: AsyncSession,
    query: SelectOfScalar[M],
    at: Any,
    id_: Any,
    limit: int,
    cursor: str | None = None,
    page: int | None = None,
    index: RowIndex | None = None,
) -> Page[M]: ...


@overload
async def paginate(
    session: AsyncSession,
    query: Select[*Ts],
    at: Any,
    id_: Any,
    limit: int,
    cursor: str | None = None,
    page: int | None = None,
    index: RowIndex | None = None,
) -> Page[tuple[*Ts]]: ...


async def paginate(
    session: AsyncSession,
    query: Any,
    at: Any,
    id_: Any,
    limit: int,
    cursor: str | None = None,
    page: int | None = None,
    index: RowIndex | None = None,
) -> Page[Any]:
    """One page of a query's rows, newest first by (`at`, `id_`): after the row `cursor` names (`keyset`),
    or else page number `page` (1-based, default 1), which also counts the rows (`total`): an offset and a
    count cost the more the deeper the page, so only clients that ask by number pay them. Either way
    the answer carries `next_cursor`, so a walk can go on by cursor. A query of several entities pages
    by its first one's (`at`, `id_`), its conditions on that entity alone: a join only brings a row's
    companion along (an outer join on a unique key), since rows are counted and skipped without it. Given
    `index`, its rows are counted, skipped and sought by cursor instead, and only the page's read whole."""
    if cursor is not None:
        if page is not None:
            raise Invalid("page: give either page or cursor, not both", ("query", "page"))
        if index is not None:
            after = _after(index.ids, index.at, index.id_, cursor)
            query = query.where(id_.in_(_newest_first(after, index.at, index.id_).limit(limit + 1)))
            cursor = None
        found = await keyset(session, query, at, id_, cursor, limit)
        return Page(items=found.items, limit=limit, next_cursor=found.next_cursor, total=None, page=None)
    return await _numbered(session, query, at, id_, limit, page or 1, index)


async def _numbered(
    session: AsyncSession, query: Any, at: Any, id_: Any, limit: int, page: int, index: RowIndex | None
) -> Page[Any]:
    """Page `page` of `paginate`, and the count. Rows are counted and skipped by their ids alone, by
    `query`'s conditions without its joins (an index); then only the page's rows are read. Skipping
    whole rows, sorted and joined, took 40 ms a deep page of 10,000 jobs on PostgreSQL, and counting
    them with the join 5 ms on SQLite. (One read of the ids with `count(*) OVER ()` doubled a page's
    time on SQLite, which then sorts every row.)"""
    if index is None:
        index = RowIndex(
            select(id_).where(*([] if query.whereclause is None else [query.whereclause])), at, id_
        )
    total = (await session.exec(select(func.count()).select_from(index.ids.subquery()))).one()
    skipped = _newest_first(index.ids, index.at, index.id_).offset((page - 1) * limit).limit(limit + 1)
    rows = list(await session.exec(_newest_first(query.where(id_.in_(skipped)), at, id_)))
    items, next_cursor = _cut(rows, at, id_, limit)
    return Page(items=items, limit=limit, next_cursor=next_cursor, total=total, page=page)


async def keyset(
    session: AsyncSession, query: SelectOfScalar[M], at: Any, id_: Any, cursor: str | None, limit: int
) -> CursorPage[M]:
    """One page of a query's rows, newest first by (`at`, `id_`), starting after the row `cursor` names.

    Unlike an offset, the cursor pins where the next page starts: rows inserted meanwhile are newer and
    come before it, so a walk through the pages sees every row that existed when it began exactly once.
    The condition is a row-value comparison, which both databases answer by seeking in an index that
    ends with (`at`, `id_`), however deep the page.
    """
    if cursor is not None:
        query = _after(query, at, id_, cursor)
    rows = list(await session.exec(_newest_first(query, at, id_).limit(limit + 1)))
    items, next_cursor = _cut(rows, at, id_, limit)
    return CursorPage(items=items, next_cursor=next_cursor)


def _after(query: SelectOfScalar[M], at: Any, id_: Any, cursor: str) -> SelectOfScalar[M]:
    after_at, after_id = _decoded(cursor)
    return query.where(tuple_(at, id_) < tuple_(literal(after_at, at.type), literal(after_id, id_.type)))


def _newest_first(query: SelectOfScalar[M], at: Any, id_: Any) -> SelectOfScalar[M]:
    return query.order_by(at.desc(), id_.desc())


def _cut(rows: list[M], at: Any, id_: Any, limit: int) -> tuple[list[M], str | None]:
    """The page out of `limit + 1` rows read, and the cursor after it if there was one more."""
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    if isinstance(last, Row):  # a row of several entities (a job and its last run): sorted by the first
        last = last[0]
    return rows[:limit], _encoded(getattr(last, at.key), getattr(last, id_.key))


def _encoded(at: datetime, row_id: str) -> str:
    """Opaque to clients: the last row's (at, id), base64url."""
    return base64.urlsafe_b64encode(json.dumps([at.isoformat(), row_id]).encode()).decode().rstrip("=")


def _decoded(cursor: str) -> tuple[datetime, str]:
    """The (at, id) of a cursor; anything but what `_encoded` writes is a 422. A cursor is the client's
    text, so its parts are checked as the database will meet them: an id of printable ASCII (ids are;
    NUL or a lone surrogate failed the query on PostgreSQL) and a time that has a UTC one (year 1 at
    +14:00 has none, and failed on SQLite)."""
    try:
        at, row_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        when = datetime.fromisoformat(at)
        if when.tzinfo is None or not _an_id(row_id):
            raise ValueError("not what _encoded writes")
        return when.astimezone(UTC), row_id
    except (ValueError, TypeError, OverflowError, binascii.Error) as exc:
        raise Invalid("cursor: not a cursor this API gave out", ("query", "cursor")) from exc


def _an_id(value: object) -> bool:
    return isinstance(value, str) and value.isascii() and value.isprintable()
