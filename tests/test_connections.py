"""Connections no client can hold for nothing (api/connections.py), on uvicorn as `chronos api` serves the
app, with raw sockets: slow requests are cut at their deadline, and over the cap the heaviest sender's
idle connections make room for a newcomer."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import uvicorn

from api.main import server_config
from core.config import Settings
from tests.waiting import eventually

GET = b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n"


class App:
    """An ASGI app that reads the whole body, and answers `/hold` only once `release` is set."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.holding = 0
        self.seen = 0  # requests

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.seen += 1
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            more = message.get("more_body", False)
        if scope["path"] == "/hold":
            self.holding += 1
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
        await send({"type": "http.response.body", "body": b"ok"})


@asynccontextmanager
async def served(app: App, **limits: Any) -> AsyncIterator[int]:
    """`app` behind the API's server config with these limits: its port."""
    config = server_config(app, "127.0.0.1", 0, Settings(**limits), lifespan="off", log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await eventually(lambda: server.started, "uvicorn to start")
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        app.release.set()
        await task


class Peer:
    """Raw connections from one loopback address (all of 127.0.0.0/8 is this machine)."""

    def __init__(self, port: int, address: str, stack: AsyncExitStack) -> None:
        self.port, self.address, self.stack = port, address, stack

    async def connect(self, sent: bytes = b"") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port, local_addr=(self.address, 0))
        self.stack.callback(writer.close)
        if sent:
            writer.write(sent)
            await writer.drain()
        return reader, writer


async def answer(reader: asyncio.StreamReader, within: float = 10) -> tuple[int, bytes]:
    """Status and body of the one answer the server sends before it closes or keeps the connection."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), within)
    lines = head.decode().split("\r\n")
    length = next(int(line.split(":")[1]) for line in lines if line.lower().startswith("content-length"))
    return int(lines[0].split()[1]), await asyncio.wait_for(reader.readexactly(length), within)


async def closed(reader: asyncio.StreamReader, within: float = 10) -> bool:
    """The server closed the connection (whatever it sent first is read and dropped)."""
    await asyncio.wait_for(reader.read(), within)
    return reader.at_eof()


async def test_a_connection_that_sends_nothing_in_time_is_closed_without_an_answer() -> None:
    async with served(App(), client_timeout_seconds=1) as port, AsyncExitStack() as stack:
        reader, _ = await Peer(port, "127.0.0.1", stack).connect()
        assert await asyncio.wait_for(reader.read(), 10) == b""


@pytest.mark.parametrize(
    "sent",
    [
        b"G",
        b"GET /ok HTTP/1.1\r\nHost: t\r\n",
        b"POST /ok HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{",
    ],
    ids=["a byte", "half the headers", "half the body"],
)
async def test_a_request_that_does_not_arrive_whole_in_time_is_a_408(sent: bytes) -> None:
    async with served(App(), client_timeout_seconds=1) as port, AsyncExitStack() as stack:
        reader, _ = await Peer(port, "127.0.0.1", stack).connect(sent)
        status, body = await answer(reader)
        assert status == 408
        assert json.loads(body)["status"] == 408
        assert await closed(reader)


@pytest.mark.parametrize(
    "request_",
    [
        b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n",
        b"GET /ok HTTP/1.1\r\n" + b"X-A: b\r\n" * 20_000 + b"\r\n",
    ],
    ids=["a long URL", "many headers"],
)
async def test_a_request_head_over_64_kib_is_a_431_before_the_app_sees_it(request_: bytes) -> None:
    app = App()
    async with served(app) as port, AsyncExitStack() as stack:
        peer = Peer(port, "127.0.0.1", stack)
        reader, _ = await peer.connect(request_)
        status, body = await answer(reader)
        assert (status, json.loads(body)["status"], app.seen) == (431, 431, 0)
        assert await closed(reader)
        reader, _ = await peer.connect(b"GET /ok HTTP/1.1\r\nX-A: " + b"b" * 60_000 + b"\r\n\r\n")
        assert await answer(reader) == (200, b"ok")


async def test_a_request_that_stalls_after_one_answered_on_the_connection_is_a_408() -> None:
    async with served(App(), client_timeout_seconds=1) as port, AsyncExitStack() as stack:
        reader, _ = await Peer(port, "127.0.0.1", stack).connect(GET + b"GET /ok HTTP/1.1\r\n")
        assert await answer(reader) == (200, b"ok")
        assert (await answer(reader))[0] == 408
        assert await closed(reader)


async def test_the_deadline_is_each_requests_not_the_connections_nor_the_answers() -> None:
    app = App()
    async with served(app, client_timeout_seconds=1) as port, AsyncExitStack() as stack:
        reader, writer = await Peer(port, "127.0.0.1", stack).connect()
        for _ in range(3):  # one keep-alive connection, open longer than the deadline in all
            writer.write(GET)
            assert await answer(reader) == (200, b"ok")
            await asyncio.sleep(0.6)
        # An answer that takes longer than the deadline is not cut: the request had arrived.
        writer.write(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n")
        await eventually(lambda: app.holding, "the app to hold the request")
        await asyncio.sleep(1.5)
        app.release.set()
        assert await answer(reader) == (200, b"ok")


async def test_over_the_cap_the_heaviest_senders_oldest_idle_connection_makes_room() -> None:
    async with served(App(), max_connections=8) as port, AsyncExitStack() as stack:
        flood, other, newcomer = (Peer(port, f"127.0.0.{n}", stack) for n in (2, 3, 4))
        flooded = [(await flood.connect())[0] for _ in range(6)]
        others = [(await other.connect(b"GET /ok HTTP/1.1\r\n"))[0] for _ in range(2)]

        for n in range(3):  # each newcomer closes one more of the flood's, oldest first
            reader, _ = await newcomer.connect(GET)
            assert await answer(reader) == (200, b"ok")
            assert await closed(flooded[n])
        assert not any(reader.at_eof() for reader in flooded[3:] + others)


async def test_when_every_connection_is_being_answered_a_newcomer_is_a_503() -> None:
    app = App()
    async with served(app, max_connections=3) as port, AsyncExitStack() as stack:
        peer = Peer(port, "127.0.0.1", stack)
        held = [(await peer.connect(b"GET /hold HTTP/1.1\r\nHost: t\r\n\r\n"))[0] for _ in range(3)]
        await eventually(lambda: app.holding == 3, "three requests held")

        reader, _ = await peer.connect()
        status, body = await answer(reader)
        assert (status, json.loads(body)["title"]) == (503, "Service Unavailable")
        assert await closed(reader)

        app.release.set()
        assert [await answer(reader) for reader in held] == [(200, b"ok")] * 3
