"""The SSRF guard: refused addresses at submit time (literals) and at connect time (after DNS)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from core.targets import TargetGuard, TargetRefused, check_url
from tests.http_target import Answer, HttpTarget, start_target


@pytest.fixture(scope="module")
def target() -> Iterator[HttpTarget]:
    target = start_target()
    yield target
    target.close()


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1/", "loopback"),
        ("http://[::1]:8080/", "loopback"),
        ("http://localhost/x", "loopback"),
        ("http://api.localhost/x", "loopback"),
        ("http://10.1.2.3/", "private"),
        ("http://192.168.0.10/", "private"),
        ("http://172.16.0.1/", "private"),
        ("http://169.254.10.1/", "link-local"),
        ("http://[fe80::1]/", "link-local"),
        ("http://[fd12:3456::1]/", "private"),
        ("http://0.0.0.0/", "unspecified"),
        ("http://[::]/", "unspecified"),
        ("http://224.0.0.1/", "multicast"),
        ("http://[::ffff:127.0.0.1]/", "loopback"),
        ("http://100.64.0.1/", "non-public"),
        ("http://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("http://[fd00:ec2::254]/", "cloud metadata"),
        ("http://[64:ff9b::a9fe:a9fe]/", "reaches 169.254.169.254: 169.254.169.254 is a cloud metadata"),
        ("http://[64:ff9b:1::a00:1]/", "reaches 10.0.0.1"),
        ("http://[2002:a9fe:a9fe::1]/", "cloud metadata"),
        ("http://[2002:7f00:1::]/", "reaches 127.0.0.1: 127.0.0.1 is a loopback"),
        ("http://[::a9fe:a9fe]/", "cloud metadata"),
        ("http://[::7f00:1]/", "loopback"),
        ("http://[2001:0:4136:e378:8000:63bf:5601:56ff]/", "reaches 169.254.169.0"),
        ("ftp://example.org/", "scheme"),
    ],
)
def test_refused_at_submit(url: str, kind: str) -> None:
    reason = check_url(url)
    assert reason is not None and kind in reason


@pytest.mark.parametrize(
    "url",
    [
        "https://example.org/hook",
        "http://93.184.216.34/",
        "http://[2606:4700::1111]/",
        "http://[64:ff9b::5db8:d822]/",  # NAT64 to 93.184.216.34
        "http://[2002:5db8:d822::1]/",  # 6to4 from it
    ],
)
def test_public_targets_pass_at_submit(url: str) -> None:
    assert check_url(url) is None


def test_private_targets_pass_when_allowed_but_metadata_never() -> None:
    assert check_url("http://127.0.0.1:8000/", allow_private=True) is None
    assert check_url("http://localhost/", allow_private=True) is None
    reason = check_url("http://169.254.169.254/", allow_private=True)
    assert reason is not None and "metadata" in reason
    for carrier in ("64:ff9b::a9fe:a9fe", "2002:a9fe:a9fe::", "::169.254.169.254", "::ffff:0:a9fe:a9fe"):
        reason = check_url(f"http://[{carrier}]/", allow_private=True)
        assert reason is not None and "metadata" in reason, carrier
    assert check_url("http://[64:ff9b::7f00:1]/", allow_private=True) is None
    reason = check_url("http://[::ffff:169.254.169.254]/", allow_private=True)
    assert reason is not None and "metadata" in reason


async def test_name_resolving_to_loopback_is_refused_at_connect(target: HttpTarget) -> None:
    """A name passes the submit check; the connect-time check sees what it resolves to."""
    guard = TargetGuard(allow_private=False)
    url = target.url("/guarded").replace("127.0.0.1", "localhost")
    async with httpx.AsyncClient(transport=guard.transport()) as client:
        with pytest.raises(TargetRefused, match="loopback"):
            await client.get(url)
        with pytest.raises(TargetRefused):
            await client.get(target.url("/guarded"))
    assert target.requests["/guarded"] == []


async def test_allowed_target_is_reached_with_its_own_host_header(target: HttpTarget) -> None:
    guard = TargetGuard(allow_private=True)
    url = target.url("/allowed").replace("127.0.0.1", "localhost")
    async with httpx.AsyncClient(transport=guard.transport(), follow_redirects=False) as client:
        response = await client.get(url)
    assert response.status_code == 200
    assert target.requests["/allowed"][0].headers["Host"].startswith("localhost:")


async def test_redirects_are_not_followed(target: HttpTarget) -> None:
    target.script("/redirect", [Answer(302, {"Location": target.url("/elsewhere")})])
    guard = TargetGuard(allow_private=True)
    async with httpx.AsyncClient(transport=guard.transport(), follow_redirects=False) as client:
        response = await client.get(target.url("/redirect"))
    assert response.status_code == 302
    assert target.requests["/elsewhere"] == []
