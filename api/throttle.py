"""A brake on the credential endpoints, so passwords cannot be guessed at speed.

Each API process counts on its own (N replicas allow N times as many): enough against guessing, and it
needs no shared store. Jobs and runs are not throttled; they need a valid token anyway.

It counts per client address: the TCP peer's, since anyone can write an X-Forwarded-For header. Behind a
reverse proxy named in CHRONOS_TRUSTED_PROXIES, the address that proxy saw and appended is used instead.
An IPv6 client counts by its /64, the block one host or network is given, so it cannot take a new
address for each guess.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict, deque
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Address, IPv6Network, ip_address

from fastapi import Request

from core.errors import TooManyRequests


def client_key(address: str) -> str:
    """What counts as one client: an IPv4 address (also written as IPv6), or an IPv6 address's /64."""
    try:
        ip = ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(IPv6Network((ip, 64), strict=False))
    return address


class Throttle:
    """At most `limit` credential requests a minute per client address, whichever endpoint they use;
    over it, 429 with Retry-After."""

    WINDOW = 60.0

    def __init__(self, limit: int, trusted_proxies: Sequence[IPv4Network | IPv6Network] = ()) -> None:
        self.limit = limit
        self.trusted_proxies = tuple(trusted_proxies)
        self.hits: defaultdict[str, deque[float]] = defaultdict(deque)

    def client_address(self, request: Request) -> str:
        """The peer's address; when the peer is a trusted proxy, the right-most X-Forwarded-For entry that
        is not one (entries left of it are whatever the client chose to send)."""
        peer = request.client.host if request.client else "-"
        if not self._trusted(peer):
            return peer
        hops = [
            hop.strip() for value in request.headers.getlist("x-forwarded-for") for hop in value.split(",")
        ]
        return next((hop for hop in reversed(hops) if hop and not self._trusted(hop)), peer)

    def _trusted(self, address: str) -> bool:
        try:
            ip = ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted_proxies)

    def check(self, request: Request) -> None:
        now = time.monotonic()
        key = client_key(self.client_address(request))
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
