"""The Temporal Web UI that `chronos dev` starts, in a real browser, decoding a run's input through
Chronos's codec endpoint with the dashboard's session cookie: the run's owner reads it, another user
sees it still encrypted.

The dev server's UI calls the codec without credentials (`temporal server start-dev` has no flag for
it), so the cookie reaches the endpoint only once the browser's own codec setting includes cross-origin
credentials: the test shows both, as docs/dashboard.md tells people to do.

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
    """A Temporal dev server started as `chronos dev` starts it (Web UI on, its codec endpoint `codec`):
    a client on it and the Web UI's URL. The session's server runs headless, hence this one."""
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
                return (await http.get(f"{ui}/api/v1/settings")).status_code == 200
        except httpx.TransportError:
            return False

    try:
        client = await eventually(connected, "the Temporal dev server")
        await eventually(ui_up, "its Web UI")
        yield client, ui
    finally:
        process.terminate()
        await process.wait()


async def signed_in(browser: Any, site: str, sessions: Sessions, **context: Any) -> Page:
    """A new user signed in to the dashboard, in a browser context of their own."""
    user = await create_user(sessions, new_email(), PASSWORD, admin=False)
    page = await (await browser.new_context(**context)).new_page()
    await page.goto(f"{site}/login")
    await page.get_by_label("Email").fill(user.email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await playwright_api.expect(page).not_to_have_url(re.compile(r"/login"))
    return page


def decoding(response: Any) -> bool:
    return "/api/v1/codec/decode" in response.url and response.request.method == "POST"


async def use_codec_with_credentials(page: Page, codec: str) -> Any:
    """What a person does once per browser in the Web UI: the codec setting of this browser, the same
    endpoint with cross-origin credentials included. The page reloaded decodes again: the answer."""
    await page.locator('[data-testid^="data-encoder-status"]').first.click()
    await page.get_by_text("Use my browser setting and ignore Cluster-level setting.").click()
    await page.locator("#data-encoder-endpoint-input").fill(codec)
    await page.get_by_text("Include cross-origin credentials").click()
    await page.get_by_role("button", name="Apply").click()
    async with page.expect_response(decoding) as answer:
        await page.reload()
    return await answer.value


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
    codec = f"http://127.0.0.1:{listening.getsockname()[1]}/api/v1/codec"
    async with (
        dev_server(tmp_path, codec) as (client, ui),
        served(db_engine, sessions, client, tmp_path, listening, temporal_ui_url=ui) as site,
    ):
        # Alice creates a job whose action carries the secret; its run's page links to the Web UI.
        alice = await signed_in(browser, site, sessions)
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

        # As `chronos dev` configures it, the UI calls the codec without credentials: no cookie, 401.
        async with (
            alice.context.expect_page() as opened,
            alice.context.expect_event("response", decoding) as refused,
        ):
            await alice.get_by_role("link", name=re.compile("Open in Temporal Web UI")).click()
        assert (await refused.value).status == 401
        alices_ui = await opened.value
        assert secret not in await alices_ui.inner_text("body")

        # With credentials included, the session cookie (SameSite=Strict: both origins are on
        # 127.0.0.1, the same site) reaches the endpoint, which decodes the run's input for its owner.
        assert (await use_codec_with_credentials(alices_ui, codec)).status == 200
        await expect(alices_ui.locator("body")).to_contain_text(secret)

        # Bob, signed in in another browser with the same codec setting (the UI's local storage, not
        # Alice's cookies), sees the input's ciphertext.
        state = await alices_ui.context.storage_state()
        setting = {"cookies": [], "origins": [o for o in state["origins"] if o["origin"] == ui]}
        assert setting["origins"], state
        bob = await signed_in(browser, site, sessions, storage_state=setting)
        async with bob.expect_response(decoding) as answer:
            await bob.goto(alices_ui.url)
        assert (await answer.value).status == 200
        workflow_id = re.search(r"/workflows/([^/]+)/", alices_ui.url)
        assert workflow_id, alices_ui.url
        history = await client.get_workflow_handle(workflow_id[1]).fetch_history()
        [sealed] = history.events[0].workflow_execution_started_event_attributes.input.payloads
        await expect(bob.locator("body")).to_contain_text(base64.b64encode(sealed.data).decode()[:60])
        assert secret not in await bob.inner_text("body")
