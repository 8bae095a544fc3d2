"""Temporal's remote codec protocol (`--codec-endpoint`, the Web UI's codec server) over Chronos
credentials: each caller reads only the payloads of jobs they may see."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import CodecServiceDep, Reader
from core.codec_service import WirePayloads

# The codec-only CORS rule in api/cors.py matches this prefix.
PREFIX = "/codec"

router = APIRouter(prefix=PREFIX, tags=["codec"])


@router.post("/decode", response_model=WirePayloads)
async def decode(body: WirePayloads, user: Reader, codec: CodecServiceDep) -> WirePayloads:
    """Payloads decrypted where the caller may see their job; the others come back as they were."""
    return await codec.decode(user, body)


@router.post("/encode", response_model=WirePayloads)
async def encode(body: WirePayloads, user: Reader, codec: CodecServiceDep) -> WirePayloads:
    """Payloads encrypted as Chronos encrypts them (for signals and starts sent from the UI or CLI)."""
    return codec.encode(body)
