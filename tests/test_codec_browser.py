"""The Temporal Web UI that `chronos dev` starts, in a real browser, decoding a run's input through
Chronos's codec endpoint with the dashboard's session cookie: the run's owner reads it, another user
sees it still encrypted. The API serves the UI under /temporal (api/web/temporal_ui.py), so the UI's
codec calls are same-origin and carry the cookie with no setting in the browser.

Skipped with the reason when Chromium or Playwright is missing (tests/browser.py)."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from cli import _temporal_dev_server
from core.auth import create_user
from core.db import Sessions
from tests.api_client import PASSWORD, new_email, session_converter
from tests.browser import needs_chromium, served
from tests.http_target import HttpTarget
from tests.smtp_server import free_port
from tests.waiting import eventually

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
pytestmark = [needs_chromium, pytest.mark.timeout(180)]
Page = Any  # playwright.async_api.Page, imported only when installed


@asynccontextmanager
async def dev_server(data_dir: Path, codec: str) -> AsyncIterator[tuple[Client, str]]:
    """A Temporal dev server started as `chronos dev` starts it (Web UI on, under /temporal, its codec
    endpoint `codec`): a client on it and the UI server's address. The session's server runs headless,
    hence this one."""
    port, ui_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        *_temporal_dev_server(data_dir, port, ui_port, codec),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    ui = f"http://127.0.0.1:{ui_port}"

    async def connected() -> Client | None:
        try:
            return await Client.connect(f"127.0.0.1:{port}", data_converter=session_converter())
        except RuntimeError:
            return None

    async def ui_up() -> bool:
        try:
            async with httpx.AsyncClient() as http:
                return (await http.get(f"{ui}/temporal/api/v1/settings")).status_code == 200
        except httpx.TransportError:
            return False

    try:
        client = await eventually(connected, "the Temporal dev server")
        await eventually(ui_up, "its Web UI")
        yield client, ui
    finally:
        process.terminate()
        await process.wait()


async def sign_in(page: Page, sessions: Sessions) -> None:
    """A new user signs in on the sign-in page that `page` shows, and is sent on where it leads."""
    user = await create_user(sessions, new_email(), PASSWORD, admin=False)
    await page.get_by_label("Email").fill(user.email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await playwright_api.expect(page).not_to_have_url(re.compile(r"/login"))


def decoding(response: Any) -> bool:
    return "/api/v1/codec/decode" in response.url and response.request.method == "POST"


async def test_the_web_ui_decodes_a_run_for_its_owner_only(
    db_engine: AsyncEngine, sessions: Sessions, browser: Any, target: HttpTarget, tmp_path: Path
) -> None:
    if db_engine.dialect.name != "sqlite":
        pytest.skip("the browser tier runs once, on SQLite")
    expect = playwright_api.expect
    secret = f"codec-ui-{uuid.uuid4().hex[:8]}"
    # The API's port is bound first: the dev server's UI is told the codec endpoint when it starts.
    listening = socket.socket()
    listening.bind(("127.0.0.1", 0))
    site = f"http://127.0.0.1:{listening.getsockname()[1]}"
    async with (
        dev_server(tmp_path, f"{site}/api/v1/codec") as (client, upstream),
        served(
            db_engine,
            sessions,
            client,
            tmp_path,
            listening,
            temporal_ui_url=f"{site}/temporal",
            temporal_ui_upstream=upstream,
        ),
    ):
        # Alice creates a job whose action carries the secret; its run's page links to the Web UI.
        alice = await (await browser.new_context()).new_page()
        await alice.goto(f"{site}/login")
        await sign_in(alice, sessions)
        await alice.goto(f"{site}/jobs/new")
        await alice.get_by_label("Name", exact=True).fill("codec in the web ui")
        await alice.get_by_label("Kind").select_option("immediate")
        await alice.get_by_label("URL", exact=True).fill(target.url(f"/{secret}"))
        await alice.get_by_label("Body (JSON or text)").fill(json.dumps({"token": secret}))
        await alice.get_by_role("button", name="Create job").click()
        await expect(alice.get_by_role("status").filter(has_text="Job created.")).to_be_visible()
        run_link = alice.locator("a[href*='/runs/']").first

        async def listed() -> bool:
            await alice.reload()
            return bool(await run_link.count())

        await eventually(listed, "the job page to list its run")
        await run_link.click()

        # The Web UI is served from the API's origin: its codec calls carry the session cookie as they
        # are, and the endpoint decodes the run's input for its owner.
        async with (
            alice.context.expect_page() as opened,
            alice.context.expect_event("response", decoding) as decoded,
        ):
            await alice.get_by_role("link", name=re.compile("Open in Temporal Web UI")).click()
        assert (await decoded.value).status == 200
        alices_ui = await opened.value
        assert alices_ui.url.startswith(f"{site}/temporal/namespaces/"), alices_ui.url
        await expect(alices_ui.locator("body")).to_contain_text(secret)

        # Bob, in a browser of his own, follows the same link: the proxy sends him to sign in first, then
        # back to the run, whose input the UI shows him still encrypted.
        bob = await (await browser.new_context()).new_page()
        await bob.goto(alices_ui.url)
        assert bob.url.startswith(f"{site}/login?next=/temporal/"), bob.url
        async with bob.expect_response(decoding) as answer:
            await sign_in(bob, sessions)
        assert (await answer.value).status == 200
        assert bob.url == alices_ui.url
        workflow_id = re.search(r"/workflows/([^/]+)/", alices_ui.url)
        assert workflow_id, alices_ui.url
        history = await client.get_workflow_handle(workflow_id[1]).fetch_history()
        [sealed] = history.events[0].workflow_execution_started_event_attributes.input.payloads
        await expect(bob.locator("body")).to_contain_text(base64.b64encode(sealed.data).decode()[:60])
        assert secret not in await bob.inner_text("body")
