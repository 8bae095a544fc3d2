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
# Prefixes whose translator sends a packet on to the IPv4 address in its last 32 bits: NAT64's well-known
# (RFC 6052) and local-use (RFC 8215) ones, and SIIT's IPv4-translated addresses (RFC 2765).
TRANSLATED = tuple(ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::ffff:0:0:0/96"))
LOCALHOST_NAMES = ("localhost", "localhost.localdomain")


class TargetRefused(Exception):
    """The target address is not one Chronos sends requests to."""


def carried_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address that a packet to `address` reaches through a translator or tunnel: NAT64 or SIIT,
    6to4, Teredo's client, or the deprecated IPv4-compatible form (`::a.b.c.d`). Python calls most of these
    global, so `[64:ff9b::a9fe:a9fe]` reached 169.254.169.254 where a NAT64 gateway runs."""
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in network for network in TRANSLATED) or (int(address) >> 32 == 0 and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def address_refusal(address: IPAddress, allow_private: bool = False) -> str | None:
    """Why a request to `address` is refused, or None when it is allowed. An IPv6 address that carries an
    IPv4 one (`carried_ipv4`) is refused as that one would be, and then judged itself."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    carried = carried_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    if carried is not None and (reason := address_refusal(carried, allow_private)):
        return f"{address} reaches {carried}: {reason}"
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
