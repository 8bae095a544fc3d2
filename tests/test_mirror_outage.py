"""The mirror is never on a fire's way: while PostgreSQL is cut off, an interval job's fires call their
target on time, and once it is back every run and attempt is recorded with its true times. And a
database that stops answering without closing anything is a 503 from the API, not a hang.

A small TCP proxy stands between Chronos (API and worker) and PostgreSQL; the test cuts it (open
connections dropped, new ones closed at once) and restores it, or freezes it (connections stay open and
carry nothing, as with a paused database) and thaws it."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import uuid
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from temporalio.client import Client

from api.main import create_app
from core.config import Settings
from core.db import create_schema, make_engine, make_sessions
from core.payloads import schedule_id
from core.temporal import TemporalGateway
from tests.api_client import ENCRYPTION_KEYS, app_settings, expect, serve
from tests.conftest import throwaway_database
from tests.http_target import HttpTarget
from tests.waiting import eventually
from worker import build_worker

EVERY_SECONDS = 2
# A frozen database, each wait on PostgreSQL bound at 1 s (a new connection's at libpq's least, 2 s): the
# run that meets the freeze first holds its job about 3 s and one fire is skipped; after it the worker
# knows the database is away and each run ends half a second after its call.
FROZEN_SKIPS = 1
# The outage: long enough for several fires, each of which would have waited on the mirror before.
OUTAGE_FIRES = 5


class TcpProxy:
    """Forwards 127.0.0.1:<port> to PostgreSQL; `cut` drops every connection and refuses new ones,
    `freeze` holds every byte (and new connections) until `thaw`."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.down = False
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.links: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._link, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.flowing.wait()
        if self.down:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.links |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                await self.flowing.wait()
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
        self.links.discard(writer)

    def cut(self) -> None:
        self.down = True
        for writer in list(self.links):
            writer.transport.abort()
        self.links.clear()

    def restore(self) -> None:
        self.down = False

    def freeze(self) -> None:
        self.flowing.clear()

    def thaw(self) -> None:
        self.flowing.set()

    async def close(self) -> None:
        self.thaw()
        self.cut()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.mark.parametrize("outage", ["cut", "frozen"])
async def test_fires_call_on_time_while_the_mirror_is_away(
    temporal_client: Client, target: HttpTarget, tmp_path, outage: str
) -> None:
    frozen = outage == "frozen"
    bound: dict[str, Any] = {"db_timeout_seconds": 1} if frozen else {}
    with throwaway_database("outage") as url:
        proxy = TcpProxy("127.0.0.1", 5432)
        port = await proxy.start()
        proxied = url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")
        engine = make_engine(Settings(database_url=proxied, encryption_keys=ENCRYPTION_KEYS, **bound))
        await create_schema(engine)
        queue = f"outage-{uuid.uuid4().hex[:8]}"
        settings = app_settings(engine, tmp_path, task_queue=queue, **bound)
        app = create_app(settings, TemporalGateway.of(temporal_client))
        route = f"/outage-{uuid.uuid4().hex[:8]}"
        try:
            async with (
                build_worker(temporal_client, make_sessions(engine), queue, settings=settings) as worker,
                worker,
                serve(app) as api,
            ):
                alice = await api.authed_user()
                body = {
                    "name": "outage",
                    "schedule": {"type": "interval", "every_seconds": EVERY_SECONDS},
                    "action": {"type": "http", "url": target.url(route), "method": "POST"},
                }
                job = expect(await alice.post("/jobs", json=body), 201)
                await target.wait_for(route, 2)  # fires with the database up
                proxy.freeze() if frozen else proxy.cut()
                before = len(target.requests[route])
                # Fires keep calling while the database is away (the test's timeout bounds the wait).
                await target.wait_for(route, before + OUTAGE_FIRES)
                proxy.thaw() if frozen else proxy.restore()
                schedule = temporal_client.get_schedule_handle(schedule_id(job["id"]))
                await schedule.pause(note="the test counts its fires")
                info = (await schedule.describe()).info
                fired = info.num_actions
                calls = await target.wait_for(route, fired)

                def recorded() -> list[tuple]:
                    with psycopg.connect(url) as conn:
                        rows = conn.execute(
                            "SELECT r.id, r.scheduled_at, r.started_at, r.status, r.attempts,"
                            " a.number, a.status, a.started_at, a.finished_at"
                            " FROM run r JOIN attempt a ON a.run_id = r.id"
                            " WHERE r.job_id = %s AND r.status = 'succeeded' ORDER BY r.scheduled_at",
                            (job["id"],),
                        ).fetchall()
                    return rows if len(rows) >= fired else []

                # The runs of the outage are written by the workflows that retry until the database is back.
                rows = await eventually(recorded, f"{fired} runs recorded", within=90)
        finally:
            await proxy.close()
            await engine.dispose()

    keys = [call.headers["Idempotency-Key"] for call in calls]
    skipped = info.num_actions_skipped_overlap
    assert skipped <= (FROZEN_SKIPS if frozen else 0) and info.num_actions_missed_catchup_window == 0
    assert len(calls) == fired == len(rows), (len(calls), fired, len(rows))
    assert len(set(keys)) == len(keys), "a fire called its target twice"
    assert {row[0] for row in rows} == set(keys)
    # One fire every EVERY_SECONDS through the outage too, none missing but those the schedule skipped.
    scheduled = [row[1] for row in rows]
    gaps = [(b - a) / timedelta(seconds=EVERY_SECONDS) for a, b in itertools.pairwise(scheduled)]
    assert all(gap == int(gap) for gap in gaps) and sum(gap - 1 for gap in gaps) == skipped, gaps
    arrived = {call.headers["Idempotency-Key"]: call.at for call in calls}
    for run_id, _, started_at, _, attempts, number, status, attempt_started, finished in rows:
        assert (attempts, number, status) == (1, 1, "succeeded")
        # The true times, carried in the payloads: not when the database came back.
        assert abs(attempt_started - arrived[run_id]) < timedelta(seconds=2), run_id
        assert abs(started_at - arrived[run_id]) < timedelta(seconds=3), run_id
        assert finished >= attempt_started


async def test_a_database_that_stops_answering_is_a_503_not_a_hang(temporal_client: Client, tmp_path) -> None:
    with throwaway_database("frozen") as url:
        proxy = TcpProxy("127.0.0.1", 5432)
        port = await proxy.start()
        proxied = url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")
        engine = make_engine(Settings(database_url=proxied, encryption_keys=ENCRYPTION_KEYS))
        await create_schema(engine)
        settings = app_settings(engine, tmp_path, db_timeout_seconds=1)
        app = create_app(settings, TemporalGateway.of(temporal_client))
        body = {
            "name": "frozen",
            "paused": True,
            "schedule": {"type": "cron", "cron": "0 9 * * *"},
            "action": {"type": "http", "url": "http://127.0.0.1:9/never"},
        }
        try:
            async with serve(app) as api:
                alice = await api.authed_user()
                expect(await alice.get("/jobs"), 200)  # the pool holds connections that will hang
                proxy.freeze()
                # Each answer comes, a 503 naming the database (the test's timeout bounds the wait).
                for answer in (await alice.get("/jobs"), await alice.post("/jobs", json=body)):
                    assert "database" in expect(answer, 503)["detail"]
                assert expect(await api.get("http://chronos.test/ready"), 503)["status"] == 503
                proxy.thaw()
                assert expect(await alice.get("/jobs"), 200)["items"] == []  # the refused create left nothing
        finally:
            await proxy.close()
            await engine.dispose()


async def test_a_pool_with_every_connection_taken_is_a_503(temporal_client: Client, tmp_path) -> None:
    """A burst that takes every pooled connection: a request that waited its bound for one is told to come
    back (503, Retry-After), not answered as a bug; once one is free, requests are served again."""
    with throwaway_database("busy") as url:
        engine = make_engine(Settings(database_url=url, encryption_keys=ENCRYPTION_KEYS))
        await create_schema(engine)
        settings = app_settings(engine, tmp_path, db_timeout_seconds=1, db_pool_size=1)
        app = create_app(settings, TemporalGateway.of(temporal_client))
        try:
            async with serve(app) as api:
                alice = await api.authed_user()
                pool = app.state.sessions.kw["bind"]
                # Its one pooled connection and SQLAlchemy's default overflow of 10 more.
                held = [await pool.connect() for _ in range(1 + 10)]
                try:
                    answer = await alice.get("/jobs")
                    assert "connection" in expect(answer, 503)["detail"]
                    assert answer.headers["Retry-After"] == "1"
                finally:
                    for conn in held:
                        await conn.close()
                expect(await alice.get("/jobs"), 200)
        finally:
            await engine.dispose()
