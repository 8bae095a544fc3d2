"""Cross-origin calls for the codec routes only: the Temporal Web UI (another origin, the same site) calls
them from the browser with the dashboard's session cookie or a bearer token, while every other route stays
same-origin."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send


class CodecCors:
    """Starlette's CORS rules for paths under `prefix`, with the UI's origin, credentials and the headers
    the UI sends (`X-Namespace` always, `Authorization` when set to pass a token) allowed; other paths pass
    by untouched."""

    def __init__(self, app: ASGIApp, prefix: str, ui_url: str) -> None:
        self.app = app
        self.prefix = prefix
        parts = urlsplit(ui_url)
        self.cors = CORSMiddleware(
            app,
            allow_origins=[f"{parts.scheme}://{parts.netloc}"],
            allow_methods=["POST"],
            allow_headers=["Authorization", "Content-Type", "X-Namespace"],
            allow_credentials=True,
            max_age=600,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(self.prefix):
            await self.cors(scope, receive, send)
        else:
            await self.app(scope, receive, send)
