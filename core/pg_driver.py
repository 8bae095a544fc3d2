"""psycopg's async connection with a bound on every wait for PostgreSQL.

libpq waits as long as the socket stays open. A database that stops answering without closing its
connections (a paused container, a stalled disk, a proxy that stops forwarding) held each request on
its next statement, and on the pool's ping before it: for minutes, until the client gave up. Each wait
(a statement, a commit, a fetch) now ends after the bound with `OperationalError`, the connection
closed, which the pool discards and the API answers as a 503. Schema upgrades are exempt
(`unbounded`): they wait on each other's lock and may build indexes for minutes.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar, TypeVar

import psycopg
from psycopg.abc import PQGen

RV = TypeVar("RV")

_UNBOUNDED: ContextVar[bool] = ContextVar("chronos_db_unbounded", default=False)
WAIT_INTERVAL = 0.1  # psycopg's own: how often a wait wakes to notice a closed socket


@contextmanager
def unbounded() -> Iterator[None]:
    """Statements of this task wait as long as PostgreSQL takes."""
    token = _UNBOUNDED.set(True)
    try:
        yield
    finally:
        _UNBOUNDED.reset(token)


class BoundedConnection(psycopg.AsyncConnection[Any]):
    """Every wait on the server without a timeout of its own gets `bound`."""

    bound: ClassVar[float]

    async def wait(
        self,
        gen: PQGen[RV],
        interval: float = WAIT_INTERVAL,
        timeout: float | None = None,  # noqa: ASYNC109 (psycopg's signature, which its callers use)
    ) -> RV:
        if timeout is not None or _UNBOUNDED.get():
            return await super().wait(gen, interval, timeout)
        try:
            return await super().wait(gen, interval, self.bound)
        except psycopg.errors._WaitTimeout:  # psycopg's own timeout (an OperationalError); the query runs on
            self.pgconn.finish()  # so the connection is of no further use
            raise psycopg.OperationalError(f"the database did not answer within {self.bound:g} s") from None


def bounded_connection(seconds: float) -> type[BoundedConnection]:
    """The connection class of one engine, its waits bounded by `seconds`."""
    return type("Bounded", (BoundedConnection,), {"bound": seconds})
