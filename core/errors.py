"""Domain errors raised by service functions; the API maps each to one RFC 9457 problem."""

from __future__ import annotations


class ChronosError(Exception):
    status = 500
    title = "Internal error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class Unavailable(ChronosError):
    """A dependency (Temporal, the database) is down: 503 with the reason."""

    status = 503
    title = "Service unavailable"
