"""A brake on the credential endpoints, so passwords cannot be guessed at speed.

Each API process counts on its own (N replicas allow N times as many): enough against guessing, and it
needs no shared store. Jobs and runs are not throttled; they need a valid token anyway.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque

from fastapi import Request

from core.errors import TooManyRequests


class Throttle:
    """At most `limit` credential requests a minute per client address, whichever endpoint they use;
    over it, 429 with Retry-After."""

    WINDOW = 60.0

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.hits: defaultdict[str, deque[float]] = defaultdict(deque)

    def check(self, request: Request) -> None:
        now = time.monotonic()
        key = request.client.host if request.client else "-"
        hits = self.hits[key]
        while hits and hits[0] <= now - self.WINDOW:
            hits.popleft()
        if len(hits) >= self.limit:
            wait = math.ceil(hits[0] + self.WINDOW - now)
            raise TooManyRequests(f"too many attempts from your address; try again in {wait} s", wait)
        hits.append(now)
        if len(self.hits) > 10_000:  # forget idle addresses rather than grow without bound
            for stale in [k for k, v in self.hits.items() if not v or v[-1] <= now - self.WINDOW]:
                del self.hits[stale]


async def throttled(request: Request) -> None:
    throttle: Throttle = request.app.state.throttle
    throttle.check(request)
