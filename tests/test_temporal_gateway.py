"""An unreachable Temporal server is a clear `Unavailable` (503) within the timeout, never a hang."""

from __future__ import annotations

import socket

import pytest

from core.errors import Unavailable
from core.temporal import TemporalGateway
from tests.api_client import session_converter


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_server_is_unavailable():
    gateway = TemporalGateway(f"127.0.0.1:{closed_port()}", "default", session_converter(), timeout=2)
    with pytest.raises(Unavailable, match=r"unreachable|did not answer"):
        await gateway.call(lambda client: client.count_workflows())


async def test_calls_pass_through_to_a_live_server(temporal_client):
    gateway = TemporalGateway.of(temporal_client)
    count = await gateway.call(lambda client: client.count_workflows())
    assert count.count >= 0
