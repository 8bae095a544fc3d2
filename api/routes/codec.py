"""Temporal's remote codec protocol (`--codec-endpoint`, the Web UI's codec server) over Chronos
credentials (a bearer token, or the dashboard's session cookie in the browser that runs the Web UI): each
caller reads only the payloads of jobs they may see."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CodecServiceDep
from api.web.session import CodecReader
from core.codec_service import WirePayloads

# The codec-only CORS rule in api/cors.py matches this prefix.
PREFIX = "/codec"

router = APIRouter(prefix=PREFIX, tags=["codec"])


@router.post("/decode", response_model=WirePayloads)
async def decode(body: WirePayloads, user: CodecReader, codec: CodecServiceDep) -> WirePayloads:
    """Payloads decrypted where the caller may see their job; the others come back as they were."""
    return await codec.decode(user, body)


@router.post("/encode", response_model=WirePayloads)
async def encode(body: WirePayloads, user: CodecReader, codec: CodecServiceDep) -> WirePayloads:
    """Payloads encrypted as Chronos encrypts them (for signals and starts sent from the UI or CLI)."""
    return codec.encode(body)
