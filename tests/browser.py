"""The browser test tier's shared parts: Debian's Chromium (never a downloaded browser) launched by
Playwright, and the app served over TCP as `chronos dev` runs it. Playwright is imported lazily, so the
test modules can skip with the reason when it is missing."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from api.main import create_app, server_config
from core.db import Sessions
from core.temporal import TemporalGateway
from tests.api_client import app_settings
from tests.waiting import eventually
from worker import build_worker

CHROMIUM = os.environ.get("CHRONOS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

needs_chromium = pytest.mark.skipif(
    shutil.which(CHROMIUM) is None, reason=f"no Chromium at {CHROMIUM} (apt-get install chromium)"
)


@asynccontextmanager
async def served(
    engine: AsyncEngine,
    sessions: Sessions,
    client: Client,
    data_dir: Path,
    listening: socket.socket | None = None,
    **overrides: Any,
) -> AsyncIterator[str]:
    """The app and a worker as `chronos dev` runs them, over TCP on a free port (or on `listening`, a
    socket bound beforehand when the port must be known first): the site's base URL."""
    if engine.dialect.name != "sqlite":
        pytest.skip("the browser tier runs once, on SQLite")
    queue = f"web-{uuid.uuid4().hex[:8]}"
    settings = app_settings(engine, data_dir, task_queue=queue, **overrides)
    app = create_app(settings, TemporalGateway.of(client))
    server = uvicorn.Server(server_config(app, "127.0.0.1", 0, settings, log_level="warning"))
    async with build_worker(client, sessions, queue, settings=settings) as worker, worker:
        task = asyncio.create_task(server.serve([listening] if listening else None))
        try:
            await eventually(lambda: server.started, "uvicorn to start")
            yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        finally:
            server.should_exit = True
            await task


@asynccontextmanager
async def launched() -> AsyncIterator[Any]:
    """Chromium, headless, without its own background traffic (updates, sync)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        chromium = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()
