"""The Temporal Web UI served from the API's own origin, under /temporal: a reverse proxy to the UI server
(`CHRONOS_TEMPORAL_UI_UPSTREAM`, started with `--ui-public-path /temporal`).

Same origin is the point: the UI's calls to the codec endpoint then carry the dashboard's session cookie
by default, so a signed-in person reads their own payloads with no browser setting. The UI can act on
every workflow, so the proxy requires a dashboard session: any signed-in user may read, only admins may
send what changes something (any method but GET and HEAD), and only from this very origin."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.datastructures import Headers

from api.deps import SAFE_METHODS
from api.web.session import MaybeViewer, SignInRequired, same_origin
from core.errors import Forbidden, Unauthorized, Unavailable

PREFIX = "/temporal"
# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection, not to the message.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

router = APIRouter(include_in_schema=False)


@asynccontextmanager
async def upstream_client(app: FastAPI, upstream: str) -> AsyncIterator[None]:
    """One pooled client to the UI server for the app's lifetime."""
    async with httpx.AsyncClient(base_url=upstream.rstrip("/"), timeout=60.0) as client:
        app.state.temporal_ui = client
        yield


@router.api_route(PREFIX, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
@router.api_route(PREFIX + "/{path:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"])
async def temporal_ui(request: Request, viewer: MaybeViewer) -> Response:
    """The UI server's answer to the same path, streamed back; a page asked for without a session goes
    to sign-in, the UI's own API calls get 401."""
    if viewer is None:
        if request.method == "GET" and not request.url.path.startswith(f"{PREFIX}/api/"):
            raise SignInRequired
        raise Unauthorized("sign in to the dashboard to use the Temporal Web UI")
    if request.method not in SAFE_METHODS:
        if "admin" not in viewer.scopes:
            raise Forbidden("only admins change workflows in the Temporal Web UI")
        if not same_origin(request):
            raise Forbidden("the request's Origin is not this site")
    client: httpx.AsyncClient = request.app.state.temporal_ui
    # The path as sent (an escaped `/` in a workflow id stays escaped), then the query as sent.
    target = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
    if request.url.query:
        target += f"?{request.url.query}"
    upstream = client.build_request(
        request.method,
        target,
        headers=_forwarded(request),
        content=await request.body(),
    )
    try:
        answer = await client.send(upstream, stream=True)
    except httpx.TransportError as exc:
        raise Unavailable("the Temporal Web UI server does not answer") from exc
    response = StreamingResponse(
        answer.aiter_raw(), status_code=answer.status_code, background=BackgroundTask(answer.aclose)
    )
    dropped = _hop_by_hop(answer.headers)
    response.raw_headers = [
        (key.lower().encode("latin-1"), value.encode("latin-1"))
        for key, value in answer.headers.multi_items()
        if key.lower() not in dropped
    ]
    return response


def _hop_by_hop(headers: Headers | httpx.Headers) -> frozenset[str]:
    """HOP_BY_HOP and the headers that Connection names."""
    named = {h.strip().lower() for h in headers.get("connection", "").split(",")}
    return HOP_BY_HOP | (named - {""})


def _forwarded(request: Request) -> dict[str, str]:
    """The browser's headers minus hop-by-hop ones and Chronos's credentials: no Authorization, and only
    the UI server's own cookies (its `_csrf`), never the dashboard's session."""
    dropped = _hop_by_hop(request.headers) | {"host", "content-length", "authorization", "cookie"}
    headers = {k: v for k, v in request.headers.items() if k not in dropped}
    cookies = "; ".join(f"{k}={v}" for k, v in request.cookies.items() if not k.startswith("chronos_"))
    if cookies:
        headers["cookie"] = cookies
    return headers
