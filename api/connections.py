"""Connections a client cannot hold for nothing: uvicorn's HTTP protocol with a deadline for each request
and a cap on open connections.

uvicorn waits forever for a request that never completes: a connection that sends nothing, or sends its
headers or body a byte at a time, stays open, and each one holds a file descriptor. One client opening
enough of them (about 20,000 here) left the API unable to accept anyone, `/health` included. So:

- a request must arrive whole, headers and body, within `client_timeout_seconds` of its first byte (or of
  the connection opening); if not, 408 and the connection closes, as nginx's header and body timeouts do
  (a connection that sent nothing closes without one);
- a request's line and headers take at most MAX_HEAD_BYTES, or it is a 431 (uvicorn's httptools parser
  keeps any amount, and gathers the URL by concatenation, so a long one also cost time squared);
- at most `max_connections` are open (fewer if the process's file limit is lower, keeping room for the
  database, Temporal and logs). A new connection over the cap closes the oldest one not being answered
  (idle, or still sending its request) of the client holding the most (an address, or an IPv6 /64), so
  a flood costs its sender and a newcomer is served; only when every open connection is being answered
  is the newcomer a 503.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import time
from collections import OrderedDict
from typing import Any, ClassVar

import httptools
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from api.throttle import client_key
from core.config import Settings

log = logging.getLogger(__name__)

# File descriptors left to the process beside its clients' connections: database, Temporal, logs, files.
RESERVED_FDS = 256
WARN_EVERY = 10.0  # seconds between warnings that connections are being shed
MAX_HEAD_BYTES = 64 * 1024  # a request line and headers, as sent (nginx allows 32 KiB, Node.js 16 KiB)


def problem_response(status: int, reason: str, detail: str, *extra: bytes) -> bytes:
    """A whole RFC 9457 answer written straight to the socket, before any request reached the app."""
    body = json.dumps({"type": "about:blank", "title": reason, "status": status, "detail": detail}).encode()
    head = [
        f"HTTP/1.1 {status} {reason}".encode(),
        b"content-type: application/problem+json",
        b"content-length: " + str(len(body)).encode(),
        b"cache-control: no-store",
        b"x-content-type-options: nosniff",
        b"connection: close",
        *extra,
    ]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


TIMED_OUT = problem_response(
    408, "Request Timeout", "the request did not arrive whole in time; send it again, at once"
)
TOO_LARGE = problem_response(
    431, "Request Header Fields Too Large", f"the request line and headers are over {MAX_HEAD_BYTES} bytes"
)
FULL = problem_response(
    503, "Service Unavailable", "the API is answering as many connections as it can", b"retry-after: 1"
)


def connection_cap(wanted: int) -> int:
    """`wanted`, or fewer when the process may not open that many files beside what it needs itself."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - RESERVED_FDS))


class Connections:
    """Every open connection of one server, by peer address in the order they opened."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.count = 0
        self.by_peer: dict[str, OrderedDict[GuardedProtocol, None]] = {}
        self.warned_at = -WARN_EVERY
        self.shed = 0

    def add(self, connection: GuardedProtocol) -> None:
        self.by_peer.setdefault(connection.peer, OrderedDict())[connection] = None
        self.count += 1

    def remove(self, connection: GuardedProtocol) -> None:
        held = self.by_peer.get(connection.peer)
        if held is None or connection not in held:
            return
        del held[connection]
        self.count -= 1
        if not held:
            del self.by_peer[connection.peer]

    def make_room(self) -> bool:
        """Close one connection that is not being answered, the oldest of the peer holding the most;
        False when every open connection is being answered."""
        heaviest = max(self.by_peer, key=lambda p: len(self.by_peer[p]))
        for peer in [heaviest, *self.by_peer]:
            victim = next((c for c in self.by_peer[peer] if not c.answering), None)
            if victim is not None:
                victim.drop()
                self._warn(f"the connection cap ({self.cap}) was reached; closing idle ones, first {peer}'s")
                return True
        self._warn(f"the connection cap ({self.cap}) was reached with every connection being answered")
        return False

    def _warn(self, message: str) -> None:
        self.shed += 1
        now = time.monotonic()
        if now - self.warned_at >= WARN_EVERY:
            log.warning("%s (%d connections shed so far)", message, self.shed)
            self.warned_at = now


class GuardedProtocol(HttpToolsProtocol):
    """HttpToolsProtocol that times each request's arrival and counts itself in `held` (uvicorn's own
    `connections` is a set it keeps for shutdown)."""

    held: ClassVar[Connections]
    timeout: ClassVar[float]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.peer = "-"
        self.reading = True  # a request is arriving (or the first has yet to start)
        self.begun = False  # a byte of that request has arrived
        self.counted = False
        self.deadline: asyncio.TimerHandle | None = None
        self.head_bytes = 0  # of the request arriving

    @property
    def answering(self) -> bool:
        """The app holds a whole request and has not finished its answer (a request pipelined behind it
        may still be arriving)."""
        cycle = self.cycle
        return (
            cycle is not None and not cycle.response_complete and (not cycle.more_body or bool(self.pipeline))
        )

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.peer = client_key(self.client[0]) if self.client else "-"
        if self.held.count >= self.held.cap and not self.held.make_room():
            transport.write(FULL)
            transport.close()
            return
        self.held.add(self)
        self.counted = True
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        if self.counted:
            self.held.remove(self)
            self.counted = False
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.reading = self.begun = True
        self.head_bytes = 0
        self._arm()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value))
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        """Stop the parse (before the app sees a request cut short) once the head is over its bound."""
        self.head_bytes += size
        if self.head_bytes > MAX_HEAD_BYTES:
            raise httptools.HttpParserError("request head too large")

    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to a parse error, which `_count`'s is: a 431 then."""
        if self.head_bytes <= MAX_HEAD_BYTES:
            super().send_400_response(msg)
            return
        self.transport.write(TOO_LARGE)
        self.drop()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.reading = self.begun = False
        self._disarm()

    def drop(self) -> None:
        """Close at once, leaving the cap's count (the close itself is reported later)."""
        self._disarm()
        self.held.remove(self)
        self.counted = False
        if self.cycle is not None:
            self.cycle.disconnected = True
        self.transport.close()

    def _arm(self) -> None:
        if self.deadline is None:
            self.deadline = self.loop.call_later(self.timeout, self._timed_out)

    def _disarm(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
            self.deadline = None

    def _timed_out(self) -> None:
        self.deadline = None
        if not self.reading or self.transport.is_closing():
            return
        if self.answering:  # the request arriving waits behind an answer: its time starts after it
            self._arm()
            return
        cycle = self.cycle
        # A connection that sent nothing just closes, as nginx's does: a 408 there would be read as the
        # answer to a request a client (a browser's spare connection) sends at that moment.
        if self.begun and (cycle is None or cycle.response_complete or not cycle.response_started):
            self.transport.write(TIMED_OUT)
        self.drop()


def guarded_protocol(settings: Settings) -> type[GuardedProtocol]:
    """The protocol class for one server: its connections are counted together."""
    return type(
        "Guarded",
        (GuardedProtocol,),
        {
            "held": Connections(connection_cap(settings.max_connections)),
            "timeout": float(settings.client_timeout_seconds),
        },
    )
