"""Domain errors raised by service functions; the API maps each to one RFC 9457 problem."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ChronosError(Exception):
    status = 500
    title = "Internal error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def extra(self) -> dict[str, Any]:
        """Members added to the problem document beside type, title, status and detail."""
        return {}


class NotFound(ChronosError):
    """Also what a user gets for another user's job: they never learn it exists."""

    status = 404
    title = "Not found"


class Conflict(ChronosError):
    status = 409
    title = "Conflict"


class PreconditionFailed(ChronosError):
    """An `If-Match` that names a version the job has moved past: the client must read it again."""

    status = 412
    title = "Precondition failed"


class Invalid(ChronosError):
    """A request that parsed but breaks a rule; `errors` names the fields as validation errors do."""

    status = 422
    title = "Invalid request"

    def __init__(self, detail: str, loc: Sequence[str | int] = ()) -> None:
        super().__init__(detail)
        self.loc = list(loc)

    def extra(self) -> dict[str, Any]:
        return {"errors": [{"loc": self.loc, "msg": self.detail}]} if self.loc else {}


class Unauthorized(ChronosError):
    status = 401
    title = "Unauthorized"


class Forbidden(ChronosError):
    status = 403
    title = "Forbidden"


class OAuthError(ChronosError):
    """A token-endpoint failure: RFC 6749 section 5.2 `error` code inside the problem document."""

    status = 400
    title = "OAuth2 error"

    def __init__(self, error: str, detail: str, status: int = 400) -> None:
        super().__init__(detail)
        self.error = error
        self.status = status

    def extra(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.detail}


class TooManyRequests(ChronosError):
    status = 429
    title = "Too many requests"

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


def _limit_members(limit: str, value: int) -> dict[str, Any]:
    return {"limit": limit, "limit_value": value}


class QuotaExceeded(Forbidden):
    """A user's quota (live jobs) is used up: the problem names the limit and the value in force."""

    title = "Quota exceeded"

    def __init__(self, detail: str, limit: str, value: int) -> None:
        super().__init__(detail)
        self.limit, self.value = limit, value

    def extra(self) -> dict[str, Any]:
        return _limit_members(self.limit, self.value)


class RateLimited(TooManyRequests):
    """A user's per-minute limit is reached: 429 with Retry-After, naming the limit and its value."""

    def __init__(self, detail: str, retry_after: int, limit: str, value: int) -> None:
        super().__init__(detail, retry_after)
        self.limit, self.value = limit, value

    def extra(self) -> dict[str, Any]:
        return _limit_members(self.limit, self.value)


class Unavailable(ChronosError):
    """A dependency (Temporal, the database) is down: 503 with the reason."""

    status = 503
    title = "Service unavailable"
