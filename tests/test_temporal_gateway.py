"""An unreachable Temporal server is a clear `Unavailable` (503) within the timeout, never a hang."""

from __future__ import annotations

import socket

import pytest
from temporalio.service import RPCError, RPCStatusCode

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


@pytest.mark.parametrize(
    "status", [RPCStatusCode.CANCELLED, RPCStatusCode.RESOURCE_EXHAUSTED, RPCStatusCode.DEADLINE_EXCEEDED]
)
async def test_a_call_dropped_or_refused_for_load_is_unavailable(temporal_client, status):
    """What a busy server answers says nothing of the request: a 503 with the reason, not a 500."""
    gateway = TemporalGateway.of(temporal_client)

    async def dropped(_client: object) -> None:
        raise RPCError("operation was canceled", status, b"")

    with pytest.raises(Unavailable, match="operation was canceled"):
        await gateway.call(dropped)


async def test_other_rpc_errors_pass_through(temporal_client):
    """A refusal that is about the request (a missing schedule, say) is the caller's to handle."""
    gateway = TemporalGateway.of(temporal_client)

    async def missing(_client: object) -> None:
        raise RPCError("schedule not found", RPCStatusCode.NOT_FOUND, b"")

    with pytest.raises(RPCError):
        await gateway.call(missing)
