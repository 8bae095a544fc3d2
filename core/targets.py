"""SSRF guard for HTTP actions and webhooks: which addresses Chronos may send requests to.

Two checks share one rule. `check_url` runs at submit time without DNS (literal IPs and `localhost`);
`TargetGuard.transport` checks at connect time: it resolves the host, checks every address and connects
to the checked one, so a name that resolves differently later (DNS rebinding) cannot reach a refused one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from typing import Any

import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud metadata endpoints: refused even when private targets are allowed.
METADATA = frozenset({ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")})
LOCALHOST_NAMES = ("localhost", "localhost.localdomain")


class TargetRefused(Exception):
    """The target address is not one Chronos sends requests to."""


def address_refusal(address: IPAddress, allow_private: bool = False) -> str | None:
    """Why a request to `address` is refused, or None when it is allowed."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA:
        return f"{address} is a cloud metadata address"
    if allow_private:
        return None
    for kind, refused in (
        ("loopback", address.is_loopback),
        ("unspecified", address.is_unspecified),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("private", address.is_private),
        ("non-public", not address.is_global),
    ):
        if refused:
            return f"{address} is a {kind} address"
    return None


def check_url(url: str, allow_private: bool = False) -> str | None:
    """Submit-time check without DNS: why `url` is refused, or None (names are checked again at connect)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        return f"invalid URL: {exc}"
    if parsed.scheme not in ("http", "https"):
        return f"scheme {parsed.scheme!r} is not http or https"
    host = parsed.host.rstrip(".").lower()
    if not host:
        return "the URL has no host"
    if host in LOCALHOST_NAMES or host.endswith(".localhost"):
        return None if allow_private else f"{host} is a loopback address"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    return address_refusal(address, allow_private)


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address `host` resolves to, through the event loop's resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [ipaddress.ip_address(info[4][0]) for info in infos]


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """Opens every TCP connection of the HTTP client: resolves the host, checks every address it resolves
    to, then connects to the first one itself, so what was checked is what is reached.

    TLS is started afterwards by httpcore on this connection with the original host name, so certificates
    are verified against the name, and connections are pooled per name, never shared across names.
    """

    def __init__(self, guard: TargetGuard, backend: httpcore.AsyncNetworkBackend) -> None:
        self.guard = guard
        self.backend = backend

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            addresses = await asyncio.wait_for(resolve(host, port), timeout)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} took over {timeout:g} s") from exc
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc}") from exc
        if not addresses:
            raise httpcore.ConnectError(f"{host} resolves to no address")
        for address in addresses:
            reason = address_refusal(address, self.guard.allow_private)
            if reason is not None:
                shown = reason if str(address) == host else f"{host} resolves to {reason}"
                raise TargetRefused(f"target refused: {shown}")
        return await self.backend.connect_tcp(str(addresses[0]), port, timeout, local_address, socket_options)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,  # noqa: ASYNC109  (httpcore's interface)
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise TargetRefused("target refused: unix sockets are not HTTP targets")

    async def sleep(self, seconds: float) -> None:
        await self.backend.sleep(seconds)


class TargetGuard:
    """The SSRF rule of one process: `allow_private` comes from `CHRONOS_ALLOW_PRIVATE_TARGETS`."""

    def __init__(self, allow_private: bool = False) -> None:
        self.allow_private = allow_private

    def check_url(self, url: str) -> str | None:
        return check_url(url, self.allow_private)

    def transport(self, **kwargs: Any) -> httpx.AsyncHTTPTransport:
        """An httpx transport whose every connection goes through `GuardedBackend`."""
        transport = httpx.AsyncHTTPTransport(**kwargs)
        # httpx has no public hook for the connection backend; its pool (httpcore) takes one.
        pool = transport._pool
        pool._network_backend = GuardedBackend(self, pool._network_backend)
        return transport
