"""/docs and /redoc render in a real browser with the network off: every request to a host other than
the test server is aborted and recorded, and the test fails if a page attempted any, or logged an error.

Skipped with the reason when Chromium or Playwright is missing (tests/browser.py)."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.browser import needs_chromium
from tests.waiting import eventually

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
pytestmark = [needs_chromium, pytest.mark.timeout(60)]
Page = Any  # playwright.async_api.Page, imported only when installed
# ReDoc parses the whole OpenAPI document in the page before it draws anything: on a loaded machine that
# took longer than Playwright's default 5 s wait, so the pages get as long as a person would wait.
RENDERED_MS = 30_000


class Offline:
    """A page whose requests may reach only `site`: the others are aborted and kept in `blocked`, and
    the page's console errors and failed requests are kept in `errors`."""

    def __init__(self, page: Page, site: str) -> None:
        self.page, self.host = page, urlsplit(site).netloc
        self.blocked: list[str] = []
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(str(e)))
        page.on("requestfailed", lambda r: self.errors.append(f"{r.url}: {r.failure}"))

    @classmethod
    async def open(cls, browser: Any, site: str) -> Offline:
        page = await (await browser.new_context()).new_page()
        offline = cls(page, site)
        await page.route("**/*", offline.route)
        return offline

    async def route(self, route: Any) -> None:
        if urlsplit(route.request.url).netloc == self.host:
            await route.continue_()
        else:
            self.blocked.append(route.request.url)
            await route.abort()

    async def check(self) -> None:
        """After the page's late requests too (ReDoc asks for its logo once mounted)."""
        await self.page.wait_for_load_state("networkidle")
        assert not self.blocked, f"{self.page.url} tried the network: {self.blocked}"
        assert not self.errors, f"{self.page.url} logged errors: {self.errors}"


async def test_swagger_ui_renders_offline(site: str, browser: Any) -> None:
    offline = await Offline.open(browser, site)
    page = offline.page
    await page.goto(f"{site}/docs")
    create = page.locator(".opblock-post").filter(has=page.locator('[data-path="/api/v1/jobs"]'))
    await playwright_api.expect(create).to_be_visible(timeout=RENDERED_MS)
    await playwright_api.expect(page.locator(".info .title")).to_contain_text("Chronos 0.1.0")
    await offline.check()


async def test_redoc_renders_offline(site: str, browser: Any) -> None:
    offline = await Offline.open(browser, site)
    page = offline.page
    await page.goto(f"{site}/redoc")
    title = page.get_by_role("heading", level=1)
    await playwright_api.expect(title).to_contain_text("Chronos (0.1.0)", timeout=RENDERED_MS)
    create = page.get_by_role("heading", level=2, name=re.compile(r"\bCreate Job$"))
    await playwright_api.expect(create).to_be_visible()
    await offline.check()


async def test_a_page_that_uses_a_cdn_is_caught(site: str, browser: Any) -> None:
    """The guard itself: a script from a CDN is aborted, recorded, and fails the check."""
    offline = await Offline.open(browser, site)
    await offline.page.goto(f"{site}/api/v1")
    cdn = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"
    await offline.page.evaluate(
        "url => document.head.appendChild(Object.assign(document.createElement('script'), {src: url}))",
        cdn,
    )
    await eventually(lambda: offline.blocked == [cdn], "the CDN request to be aborted")
    with pytest.raises(AssertionError, match="tried the network"):
        await offline.check()
