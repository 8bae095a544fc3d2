"""The dashboard in a real browser (Debian's Chromium driven by Playwright): one user's whole session,
from registration to a replayed dead letter, another user seeing none of it, axe-core on every page,
and screenshots of each page in light and dark (to tests/screenshots/, not committed).

Skipped with the reason when Chromium or Playwright is missing (`make test` installs Chromium first)."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from core.auth import create_user
from core.db import Sessions
from tests.api_client import PASSWORD, new_email
from tests.browser import needs_chromium
from tests.http_target import Answer, HttpTarget
from tests.waiting import eventually

SCREENSHOTS = Path(__file__).parent / "screenshots"

playwright_api = pytest.importorskip("playwright.async_api", reason="playwright is not installed")
axe_api = pytest.importorskip(
    "axe_playwright_python.async_playwright", reason="axe-playwright-python is missing"
)
pytestmark = [needs_chromium, pytest.mark.timeout(300)]
Page = Any  # playwright.async_api.Page, imported only when installed
# The tab hidden or shown again, as the browser tells the page (`HIDDEN`: true or false).
HIDE = """() => {
  Object.defineProperty(document, "hidden", {value: HIDDEN, configurable: true});
  document.dispatchEvent(new Event("visibilitychange"));
}"""


async def check_page(page: Page, name: str) -> None:
    """No serious or critical axe-core violation, and a screenshot in the light and the dark theme."""
    results = await axe_api.Axe().run(page)
    bad = [v for v in results.response["violations"] if v["impact"] in ("serious", "critical")]
    assert not bad, f"{name}: " + "; ".join(f"{v['id']}: {v['help']} ({len(v['nodes'])})" for v in bad)
    SCREENSHOTS.mkdir(exist_ok=True)
    for scheme in ("light", "dark"):
        await page.emulate_media(color_scheme=scheme)
        if scheme == "dark":
            dark = await axe_api.Axe().run(page)
            bad = [v for v in dark.response["violations"] if v["impact"] in ("serious", "critical")]
            assert not bad, f"{name} (dark): " + "; ".join(f"{v['id']}: {v['help']}" for v in bad)
        await page.screenshot(path=str(SCREENSHOTS / f"{name}-{scheme}.png"), full_page=True)
    await page.emulate_media(color_scheme="light")


async def register(page: Page, base: str, email: str) -> None:
    await page.goto(f"{base}/register")
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await page.wait_for_load_state()
    assert "Welcome to Chronos" in await page.inner_text("main"), await page.content()


async def reload_until(page: Page, pattern: str, within: float = 60) -> None:
    """Reload until the page shows `pattern` (a page that is not live, such as the dead letters)."""

    async def shown() -> bool:
        await page.reload()
        return re.search(pattern, await page.inner_text("main")) is not None

    await eventually(shown, f"{page.url} to show {pattern!r}", within=within)


async def test_a_whole_session_in_the_browser(site: str, browser: Any, target: HttpTarget) -> None:
    expect = playwright_api.expect
    tick, fail = f"/tick-{uuid.uuid4().hex[:6]}", f"/fail-{uuid.uuid4().hex[:6]}"
    context = await browser.new_context()
    page = await context.new_page()
    page.on("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))

    # Register (signed in at once), then the pages before there is anything on them.
    await page.goto(f"{site}/jobs")
    await expect(page).to_have_url(re.compile(r"/login\?next=/jobs$"))
    await check_page(page, "login")
    await register(page, site, new_email())
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"

    # A job every 2 seconds, its schedule previewed live as it is typed.
    await page.goto(f"{site}/jobs/new")
    await page.get_by_label("Name", exact=True).fill("every two seconds")
    await page.get_by_label("Cron expression").fill("*/2 * * * * 1-5")
    await expect(page.locator("#preview")).to_contain_text("Warning")  # weekday numbers, no dialect
    await page.get_by_label("Cron expression").fill("*/2 * * * * *")
    await page.get_by_label("Cron dialect").select_option("spring")
    await expect(page.locator("#preview")).to_contain_text("every 2 seconds")
    await expect(page.locator("#preview")).to_contain_text("Next fires")
    await expect(page.locator("#preview")).not_to_contain_text("Warning")
    await page.get_by_label("URL", exact=True).fill(target.url(tick))
    await check_page(page, "new-job")
    await page.get_by_role("button", name="Create job").click()
    await expect(page.get_by_role("status").filter(has_text="Job created.")).to_be_visible()
    job_url = page.url

    # It fires; the job page lists the run without a reload (it follows its job live).
    await target.wait_for(tick)
    await expect(page.locator("#job-runs")).to_contain_text("succeeded", timeout=30_000)
    await check_page(page, "job")

    # A run in flight: its page tails the log and the attempts live, without a reload.
    target.script(tick, [Answer(delay=3)])
    await page.get_by_role("button", name="Run now").click()
    await expect(page).to_have_url(re.compile(r"/runs/"))
    await expect(page.get_by_role("button", name="Live updates on")).to_be_visible()
    await check_page(page, "run-live")
    await expect(page.locator("#run-summary")).to_contain_text("succeeded", timeout=30_000)
    await expect(page.locator("#log li").first).to_be_visible()
    await expect(page.locator("#live-state")).to_have_text("run ended")
    await expect(page.locator("#announce")).to_contain_text("Run ended")
    await expect(page.locator(".attempt").first).to_contain_text("HTTP 200")
    target.script(tick, [200])

    # Pause with a note, then resume.
    await page.goto(job_url)
    await page.get_by_label("Pause note").fill("maintenance window")
    await page.get_by_role("button", name="Pause").click()
    await expect(page.get_by_role("status").filter(has_text="Job paused.")).to_be_visible()
    await expect(page.locator(".note")).to_contain_text("maintenance window")
    await page.get_by_role("button", name="Resume").click()
    await expect(page.get_by_role("status").filter(has_text="Job resumed.")).to_be_visible()

    # A job that fails for good lands in the dead letters; replayed once the target is fixed, it succeeds.
    target.script(fail, [500])
    await page.goto(f"{site}/jobs/new")
    await page.get_by_label("Name", exact=True).fill("fails once")
    await page.get_by_label("Kind").select_option("immediate")
    await page.get_by_label("URL", exact=True).fill(target.url(fail))
    await page.get_by_label("Attempts at most").fill("1")
    await page.get_by_role("button", name="Create job").click()
    await expect(page.get_by_role("status").filter(has_text="Job created.")).to_be_visible()
    await page.goto(f"{site}/dead-letters")
    await reload_until(page, r"1 dead letter\b")
    await page.get_by_text("Request (secrets masked)").click()
    await check_page(page, "dead-letters")
    target.script(fail, [200])
    await page.get_by_role("button", name="Replay").click()
    await expect(page).to_have_url(re.compile(r"/runs/"))
    await expect(page.locator("#run-summary")).to_contain_text("succeeded", timeout=30_000)

    # The overview and the list, with the time shown as the user chose (remembered across pages). The
    # list follows its rows live: a new last run shows without a reload; hidden, the stream is closed.
    await page.goto(f"{site}/jobs")
    await expect(page.get_by_role("link", name="every two seconds")).to_be_visible()
    row = page.locator("tr", has=page.get_by_role("link", name="every two seconds"))
    last_run = row.locator("td").nth(5).locator("a")
    await page.evaluate("window.sameDocument = true")
    seen = await last_run.get_attribute("href")
    await expect(last_run).not_to_have_attribute("href", seen or "", timeout=20_000)
    assert await page.evaluate("window.sameDocument === true")
    await page.evaluate(HIDE.replace("HIDDEN", "true"))
    await expect(page.locator("#live-state")).to_have_text("paused while hidden")
    await page.evaluate(HIDE.replace("HIDDEN", "false"))
    await expect(page.locator("#live-state")).to_have_text("live")
    await page.get_by_role("button", name="Live updates on").click()
    await expect(page.locator("#live-state")).to_have_text("paused")
    toggle = page.get_by_role("button", name="Live updates off")
    await expect(toggle).to_have_attribute("aria-pressed", "false")
    await page.get_by_label("Show times as").select_option("relative")
    await expect(page.locator("time").first).to_contain_text(re.compile(r"^in |ago$"))
    await check_page(page, "jobs")
    await page.goto(f"{site}/")
    await expect(page.locator("time").first).to_contain_text(re.compile(r"^in |ago$"))
    await expect(page.locator(".tiles")).to_contain_text("Dead letters")
    await check_page(page, "overview")

    # Sign out; another user sees none of it.
    await page.get_by_role("button", name="Sign out").click()
    await expect(page).to_have_url(re.compile(r"/login$"))
    await register(page, site, new_email())
    await page.goto(f"{site}/jobs")
    await expect(page.get_by_role("status").filter(has_text="0 jobs")).to_be_visible()
    response = await page.goto(job_url)
    assert response is not None and response.status == 404
    await page.goto(f"{site}/dead-letters")
    await expect(page.get_by_role("status").filter(has_text="0 dead letters")).to_be_visible()
    await context.close()


async def test_the_admin_page_in_the_browser(
    site: str, browser: Any, sessions: Sessions, target: HttpTarget
) -> None:
    """An admin sees every user, changes one's quota, and reads the audit log and readiness."""
    expect = playwright_api.expect
    context = await browser.new_context()
    page = await context.new_page()
    await register(page, site, new_email())
    await check_page(page, "welcome")
    await page.goto(f"{site}/jobs/new")
    await page.get_by_label("Name", exact=True).fill("a user's job")
    await page.get_by_label("URL", exact=True).fill(target.url("/admin-view"))
    await page.get_by_role("button", name="Create job").click()

    # A backfill from the job page: refused beside the form first, then two past fires of */5.
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    local = "%Y-%m-%dT%H:%M:%S"
    await page.get_by_label(re.compile("^Start")).fill(start.strftime(local))
    await page.get_by_label(re.compile("^End")).fill(start.strftime(local))
    await page.get_by_role("button", name="Backfill").click()
    await expect(page.locator("#backfill-end-error")).to_have_text("end must be after start")
    await expect(page.get_by_label(re.compile("^End"))).to_have_attribute("aria-invalid", "true")
    await check_page(page, "job-backfill")
    await page.get_by_label(re.compile("^End")).fill((start + timedelta(minutes=5)).strftime(local))
    await page.get_by_role("button", name="Backfill").click()
    await expect(page.get_by_role("status").filter(has_text="Backfilled 2 fires.")).to_be_visible()

    await page.get_by_role("link", name="Edit").click()
    await check_page(page, "edit-job")
    await page.get_by_role("button", name="Sign out").click()

    admin = await create_user(sessions, new_email(), PASSWORD, admin=True)
    await page.goto(f"{site}/login")
    await page.get_by_label("Email").fill(admin.email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("link", name="Admin").click()
    await expect(page.locator("#ready-h + p")).to_contain_text("Ready")
    await expect(page.locator("table").last).to_contain_text("job.create")
    await check_page(page, "admin")
    first = page.locator(".user-form").first
    await first.get_by_label("Max jobs").fill("7")
    await first.get_by_role("button", name=re.compile("^Save")).click()
    await expect(page.get_by_role("status").filter(has_text="User saved.")).to_be_visible()
    await expect(page.locator(".user-form").first.get_by_label("Max jobs")).to_have_value("7")
    await page.goto(f"{site}/jobs")
    await expect(page.get_by_role("link", name="a user's job")).to_be_visible()  # admins see every job
    await context.close()


async def test_bulk_pause_by_label_in_the_browser(site: str, browser: Any, target: HttpTarget) -> None:
    """Two jobs labelled team=billing and one not: filtered by the label, all matching are paused with a
    note after a confirmation that counts them, from the keyboard."""
    expect = playwright_api.expect
    context = await browser.new_context()
    page = await context.new_page()
    await register(page, site, new_email())
    for name, labels in (("bill a", "team=billing"), ("bill b", "team=billing\nenv=prod"), ("other", "")):
        await page.goto(f"{site}/jobs/new")
        await page.get_by_label("Name", exact=True).fill(name)
        await page.get_by_label("Cron expression").fill("0 3 * * *")
        await page.get_by_label("Labels").fill(labels)
        await page.get_by_label("URL", exact=True).fill(target.url("/bulk"))
        await page.get_by_role("button", name="Create job").click()
        await expect(page.get_by_role("status").filter(has_text="Job created.")).to_be_visible()

    await page.goto(f"{site}/jobs")
    await page.get_by_label("Label", exact=True).fill("team")
    await page.get_by_label("Label", exact=True).press("Enter")
    await expect(page.get_by_role("alert")).to_contain_text("'team' is not key:value")
    await page.get_by_label("Label", exact=True).fill("team:billing")
    await page.get_by_label("Label", exact=True).press("Enter")
    await expect(page.get_by_role("status").filter(has_text="2 jobs")).to_be_visible()
    await expect(page).to_have_url(re.compile(r"label=team%3Abilling"))
    await expect(page.get_by_role("link", name="other")).to_have_count(0)
    await page.get_by_label("All my jobs matching the filter").focus()
    await page.keyboard.press("Space")
    await expect(page.locator("#bulk-count")).to_have_text("All jobs matching the filter selected")
    await page.get_by_label("Note", exact=True).fill("billing freeze")
    await check_page(page, "jobs-filtered")
    await page.get_by_role("button", name="Pause selected…").click()

    await expect(page).to_have_url(re.compile(r"/jobs/bulk\?"))
    await expect(page.get_by_role("heading", name="Pause 2 jobs?")).to_be_visible()
    await expect(page.get_by_label(re.compile("^Note"))).to_have_value("billing freeze")
    await check_page(page, "bulk-confirm")
    await page.get_by_role("button", name="Pause 2 jobs").click()
    await expect(page.get_by_role("status").filter(has_text="Paused 2 jobs.")).to_be_visible()
    rows = page.locator("#results tbody tr")
    await expect(rows).to_have_count(2)
    for i in range(2):
        await expect(rows.nth(i)).to_contain_text("paused")
        await expect(rows.nth(i)).to_contain_text("billing freeze")
    await page.goto(f"{site}/jobs?q=other")
    await expect(page.locator("#results tbody tr")).not_to_contain_text("paused")
    await context.close()
