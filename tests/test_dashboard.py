"""The dashboard without a browser: sign-in, CSRF and Origin, each user seeing only their own things,
stale edits refused and logout ending the session. The browser scenario is tests/test_dashboard_browser.py."""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine
from sse_starlette import ServerSentEvent
from temporalio.client import Client

from api.web import jobs as job_pages
from api.web import live
from core.auth import Principal
from core.jobs import JobService
from core.models import Job, Role, Run, RunStatus
from core.payloads import HttpAction, Trigger
from core.runs import RunService
from tests.api_client import PASSWORD, ApiClient, AuthedClient, expect
from tests.dashboard_client import Browser
from tests.http_target import HttpTarget
from tests.test_codec import run_input_payload, wire
from tests.waiting import eventually


@pytest.fixture
async def alice(api: ApiClient) -> AsyncIterator[Browser]:
    browser = await Browser.registered(api)
    yield browser
    await browser.close()


async def api_user(api: ApiClient, browser: Browser) -> AuthedClient:
    tokens = await api.login(browser.email)
    me = expect(await api.with_token(tokens["access_token"]).get("/auth/me"), 200)
    return AuthedClient(api.with_token(tokens["access_token"]), me, tokens)


def job_body(target: HttpTarget, name: str = "nightly", **labels: str) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": {"type": "cron", "cron": "0 3 * * *", "timezone": "UTC"},
        "action": {"type": "http", "url": target.url("/dash")},
        "labels": labels,
    }


async def test_pages_ask_for_sign_in_and_then_show_your_jobs(
    api: ApiClient, alice: Browser, target: HttpTarget
) -> None:
    anonymous = Browser(api)
    answer = await anonymous.get("/jobs?state=paused")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login?next=/jobs%3Fstate%3Dpaused"
    await anonymous.close()

    user = await api_user(api, alice)
    job = expect(await user.post("/jobs", json=job_body(target, "alice nightly")), 201)
    for path in ("/", "/jobs", "/jobs/new", f"/jobs/{job['id']}", "/dead-letters"):
        answer = await alice.get(path)
        assert answer.status_code == 200, (path, answer.text)
    listing = (await alice.get("/jobs?q=nightly")).text
    assert "alice nightly" in listing
    assert "alice nightly" not in (await alice.get("/jobs?state=paused")).text
    assert (await alice.get("/admin")).status_code == 403


async def test_a_form_is_refused_without_its_csrf_token_or_from_another_origin(
    api: ApiClient, alice: Browser, target: HttpTarget
) -> None:
    user = await api_user(api, alice)
    job = expect(await user.post("/jobs", json=job_body(target)), 201)
    pause = f"/jobs/{job['id']}/pause"
    await alice.get(f"/jobs/{job['id']}")

    no_token = await alice.http.post(pause, data={"note": "x"}, headers={"Origin": "http://chronos.test"})
    assert no_token.status_code == 403
    wrong_token = await alice.submit(pause, {"csrf_token": "forged"})
    assert wrong_token.status_code == 403
    other_origin = await alice.submit(pause, {"note": "x"}, Origin="https://evil.example")
    assert other_origin.status_code == 403
    no_origin = await alice.http.post(pause, data={"csrf_token": alice.csrf})
    assert no_origin.status_code == 403
    assert expect(await user.get(f"/jobs/{job['id']}"), 200)["paused"] is False

    done = await alice.submit(pause, {"note": "maintenance"})
    assert done.status_code == 303
    paused = expect(await user.get(f"/jobs/{job['id']}"), 200)
    assert (paused["paused"], paused["pause_note"]) == (True, "maintenance")


async def test_another_user_sees_none_of_it(api: ApiClient, alice: Browser, target: HttpTarget) -> None:
    user = await api_user(api, alice)
    job = expect(await user.post("/jobs", json=job_body(target, "alice only")), 201)
    bob = await Browser.registered(api)
    assert "alice only" not in (await bob.get("/jobs")).text
    assert (await bob.get(f"/jobs/{job['id']}")).status_code == 404
    await bob.get("/jobs")
    assert (await bob.submit(f"/jobs/{job['id']}/trigger")).status_code == 404
    await bob.close()


async def test_a_stale_edit_is_refused(api: ApiClient, alice: Browser, target: HttpTarget) -> None:
    user = await api_user(api, alice)
    job = expect(await user.post("/jobs", json=job_body(target, "before")), 201)
    form = await alice.get(f"/jobs/{job['id']}/edit")
    assert 'name="version" value="1"' in form.text
    expect(await user.post(f"/jobs/{job['id']}/pause", json={"note": "meanwhile"}), 200)  # version 2

    fields = {
        "name": "after",
        "schedule_type": "cron",
        "cron": "0 4 * * *",
        "timezone": "UTC",
        "version": "1",
    }
    stale = await alice.submit(f"/jobs/{job['id']}/edit", fields)
    assert stale.status_code == 409
    assert "changed by someone else" in stale.text
    assert expect(await user.get(f"/jobs/{job['id']}"), 200)["name"] == "before"

    fresh = await alice.submit(f"/jobs/{job['id']}/edit", {**fields, "version": "2"})
    assert fresh.status_code == 303
    assert expect(await user.get(f"/jobs/{job['id']}"), 200)["name"] == "after"

    # An email action is not in the form, so saving it leaves the action as it is.
    email = {"type": "email", "to": ["ops@example.org"], "subject": "hi", "body": "there"}
    mailer = expect(await user.post("/jobs", json={**job_body(target, "mailer"), "action": email}), 201)
    mail_form = (await alice.get(f"/jobs/{mailer['id']}/edit")).text
    assert "email action is changed through the API" in mail_form and 'name="url"' not in mail_form
    assert (await alice.submit(f"/jobs/{mailer['id']}/edit", {**fields, "version": "1"})).status_code == 303
    assert expect(await user.get(f"/jobs/{mailer['id']}"), 200)["action"] == {**email, "cc": [], "html": None}


async def test_a_body_too_deep_for_the_parser_is_a_field_error(alice: Browser) -> None:
    """The form's body textarea is parsed as JSON: one nested past the parser's recursion was a 500."""
    form = {"name": "deep", "schedule_type": "cron", "cron": "0 9 * * *", "url": "http://example.org/x"}
    answer = await alice.submit("/jobs", {**form, "body": "[" * 100_000 + "]" * 100_000}, via="/jobs/new")
    assert answer.status_code == 422
    assert 'id="body-error"' in answer.text and "nests deeper than 32 levels" in answer.text


async def test_the_new_job_form_previews_and_creates(
    api: ApiClient, alice: Browser, target: HttpTarget
) -> None:
    preview = await alice.get("/jobs/preview", params={"schedule_type": "cron", "cron": "0 9 * * 1-5"})
    assert "Next fires" in preview.text
    bad = await alice.get("/jobs/preview", params={"schedule_type": "cron", "cron": "61 * * * *"})
    assert 'class="error"' in bad.text

    form = {
        "name": "from the form",
        "schedule_type": "cron",
        "cron": "*/10 * * * *",
        "timezone": "UTC",
        "method": "POST",
        "url": target.url("/form"),
        "headers": "X-Token: s3cret",
        "body": '{"a": 1}',
    }
    refused = await alice.submit("/jobs", {**form, "url": "not a url"}, via="/jobs/new")
    assert refused.status_code == 422
    assert 'id="url-error"' in refused.text
    secret_url = target.url("/form").replace("http://", "http://hook:pa55word@")
    form.update(headers="X-Token: s3cret\nAuthorization: Bearer 0123456789abcdef", url=secret_url)
    created = await alice.submit("/jobs", form)
    assert created.status_code == 303
    job_url = created.headers["location"].split("?")[0]
    page = await alice.get(job_url)
    assert "from the form" in page.text
    assert "s3cret" not in page.text and "pa55word" not in page.text

    # The edit form shows the action and notifications masked; masks sent back keep the secrets.
    edit = (await alice.get(f"{job_url}/edit")).text
    masked_url = secret_url.replace("hook:pa55word", "****")
    assert "s3cret" not in edit and "pa55word" not in edit and "0123456789" not in edit
    assert "X-Token: ****\nAuthorization: ****cdef</textarea>" in edit
    assert f'name="url" type="url" value="{masked_url}"' in edit
    changed = {
        **form,
        "version": "1",
        "url": masked_url.replace("/form", "/edited"),
        "headers": "X-Token: ****\nAuthorization: ****cdef\nX-New: fresh",
        "body": '{"b": 2}',
        "timeout_seconds": "12",
        "on_failure": "ops@example.org",
        "webhook_url": "https://owner:w3bhook@hooks.example.org/chronos",
        "on_missed": "on",
    }
    assert (await alice.submit(f"{job_url}/edit", changed)).status_code == 303
    job_id = job_url.rsplit("/", 1)[1]
    async with api.app.state.sessions() as session:
        stored = await session.get(Job, job_id)
        assert stored is not None
        action, notify = stored.action, stored.notify
    assert isinstance(action, HttpAction)
    assert str(action.url) == secret_url.replace("/form", "/edited")
    assert action.headers == {
        "X-Token": "s3cret",
        "Authorization": "Bearer 0123456789abcdef",
        "X-New": "fresh",
    }
    assert (action.body, action.timeout_seconds) == ({"b": 2}, 12)
    assert (notify.on_failure, notify.on_missed) == (["ops@example.org"], True)
    edit = (await alice.get(f"{job_url}/edit")).text
    assert 'value="https://****@hooks.example.org/chronos"' in edit and "w3bhook" not in edit
    typed_over = {**changed, "version": "2", "headers": "X-Token: new-token", "webhook_url": ""}
    assert (await alice.submit(f"{job_url}/edit", typed_over)).status_code == 303
    async with api.app.state.sessions() as session:
        stored = await session.get(Job, job_id)
        assert stored is not None and isinstance(stored.action, HttpAction)
        assert (stored.action.headers, stored.notify.webhook_url) == ({"X-Token": "new-token"}, None)


async def test_logout_ends_the_session(api: ApiClient, alice: Browser) -> None:
    cookie = alice.http.cookies["chronos_session"]
    await alice.get("/jobs")
    assert (await alice.submit("/logout")).status_code == 303
    stolen = Browser(api)
    stolen.http.cookies.set("chronos_session", cookie)
    assert (await stolen.get("/jobs")).status_code == 303
    await stolen.close()
    signed_in = await alice.submit("/login", {"email": alice.email, "password": PASSWORD}, via="/login")
    assert signed_in.status_code == 303
    assert (await alice.get("/jobs")).status_code == 200


async def test_the_codec_endpoint_decodes_for_the_signed_in_browser_only(
    api: ApiClient, alice: Browser, temporal_client: Client, target: HttpTarget
) -> None:
    """The Temporal Web UI in the browser where the dashboard is signed in sends its session cookie
    (a cross-origin fetch with credentials): that user's payloads come back decoded, others' do not."""
    user = await api_user(api, alice)
    sealed = await run_input_payload(temporal_client, user, target)
    body = wire([sealed])
    ui = {"Origin": api.settings.temporal_ui_url.rstrip("/")}

    mine = await alice.http.post("/api/v1/codec/decode", json=body, headers=ui)
    assert mine.status_code == 200, mine.text
    assert mine.headers["access-control-allow-credentials"] == "true"
    assert "codec-endpoint-secret" in base64.b64decode(mine.json()["payloads"][0]["data"]).decode()

    bob = await Browser.registered(api)
    theirs = await bob.http.post("/api/v1/codec/decode", json=body, headers=ui)
    assert theirs.json() == body
    await bob.close()
    anonymous = Browser(api)
    assert (await anonymous.http.post("/api/v1/codec/decode", json=body, headers=ui)).status_code == 401
    await anonymous.close()


async def test_an_admin_disables_a_user_and_their_session_ends(api: ApiClient, alice: Browser) -> None:
    admin_user = await api.authed_admin()
    admin = Browser(api)
    signed_in = await admin.submit("/login", {"email": admin_user.email, "password": PASSWORD}, via="/login")
    assert signed_in.status_code == 303
    me = expect(await (await api_user(api, alice)).get("/auth/me"), 200)
    page = await admin.get("/admin", params={"q": alice.email})
    assert alice.email in page.text
    assert "not a cursor" in (await admin.get("/admin", params={"users_cursor": "x"})).text
    saved = await admin.submit(f"/admin/users/{me['id']}", {"role": "user", "disabled": "on"})
    assert saved.status_code == 303
    assert (await alice.get("/jobs")).status_code == 303  # back to the sign-in page
    refused = await alice.submit("/login", {"email": alice.email, "password": PASSWORD}, via="/login")
    assert "disabled" in refused.text
    await admin.close()


async def test_a_finished_runs_stream_sends_its_log_and_ends(
    api: ApiClient, alice: Browser, target: HttpTarget
) -> None:
    user = await api_user(api, alice)
    body = {**job_body(target, "streamed"), "schedule": {"type": "immediate"}}
    job = expect(await user.post("/jobs", json=body), 201)

    async def finished() -> dict[str, Any] | None:
        runs = expect(await user.get(f"/jobs/{job['id']}/runs"), 200)["items"]
        return runs[0] if runs and runs[0]["status"] == "succeeded" else None

    run = await eventually(finished, "the run to succeed")
    stream = await alice.get(f"/runs/{run['id']}/events")
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = [line.removeprefix("event: ") for line in stream.text.splitlines() if line.startswith("event:")]
    assert events[0] == "log" and events[-2:] == ["status", "end"]
    assert "HTTP 200" in stream.text
    later = await alice.get(f"/runs/{run['id']}/events", params={"after": events.count("log")})
    assert "event: log" not in later.text  # a reopened stream sends only the lines after those shown

    bob = await Browser.registered(api)
    assert (await bob.get(f"/runs/{run['id']}/events")).status_code == 404
    await bob.close()


def next_link(html: str) -> str:
    found = re.search(r'<a href="(/jobs\?[^"]*cursor=[^"]+)">Next</a>', html)
    assert found, html
    return found.group(1).replace("&amp;", "&")


async def test_the_jobs_list_filters_by_the_address_and_pages_by_cursor(
    api: ApiClient, alice: Browser, target: HttpTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    user = await api_user(api, alice)
    expect(await user.post("/jobs", json=job_body(target, "bill one", team="billing")), 201)
    interval = {
        **job_body(target, "bill two", team="billing"),
        "schedule": {"type": "interval", "every_seconds": 600},
    }
    expect(await user.post("/jobs", json=interval), 201)
    expect(await user.post("/jobs", json=job_body(target, "ops one", team="ops")), 201)

    billing = (await alice.get("/jobs", params={"label": "team:billing"})).text
    assert "bill one" in billing and "bill two" in billing and "ops one" not in billing
    assert "<code>team:billing</code>" in billing  # each row shows its labels
    typed = (await alice.get("/jobs", params={"type": "interval", "label": "team:billing"})).text
    assert "bill two" in typed and "bill one" not in typed
    by_name = (await alice.get("/jobs", params=[("q", "one"), ("label", "team:ops")])).text
    assert "ops one" in by_name and "bill one" not in by_name

    for params, reason in (
        ({"label": "team billing"}, "is not key:value"),
        ({"state": "sleeping"}, "state:"),
        ({"type": "weekly"}, "type:"),
        ({"cursor": "not-a-cursor"}, "cursor:"),
    ):
        refused = await alice.get("/jobs", params=params)
        assert refused.status_code == 422, (params, refused.text)
        assert reason in refused.text and "These filters cannot be used" in refused.text

    job_id = re.search(r'href="/jobs/([^"/]+)">ops one', by_name)
    assert job_id
    for path in (f"/jobs/{job_id.group(1)}", "/dead-letters"):
        assert (await alice.get(path)).status_code == 200
        assert "not a cursor" in (await alice.get(path, params={"cursor": "x"})).text

    monkeypatch.setattr(job_pages, "PAGE_SIZE", 2)
    first = (await alice.get("/jobs")).text
    assert "ops one" in first and "bill two" in first and "bill one" not in first
    assert "First page" not in first
    second = (await alice.get(next_link(first))).text
    assert "bill one" in second and "ops one" not in second
    assert 'href="/jobs?">First page' in second and ">Next<" not in second

    monkeypatch.setattr(job_pages, "PAGE_SIZE", 1)
    filtered = (await alice.get("/jobs", params={"label": "team:billing", "type": ""})).text
    assert "bill two" in filtered and "bill one" not in filtered
    link = next_link(filtered)
    assert "label=team%3Abilling" in link  # the filter rides along with the cursor
    assert "bill one" in (await alice.get(link)).text


async def test_bulk_pause_by_label_changes_only_the_callers_matching_jobs(
    api: ApiClient, alice: Browser, target: HttpTarget
) -> None:
    user = await api_user(api, alice)
    ids = [
        expect(await user.post("/jobs", json=job_body(target, name, team=team)), 201)["id"]
        for name, team in (("b1", "billing"), ("b2", "billing"), ("o1", "ops"))
    ]
    bob = await Browser.registered(api)
    bob_user = await api_user(api, bob)
    bobs = expect(await bob_user.post("/jobs", json=job_body(target, "bob b", team="billing")), 201)["id"]

    confirm = await alice.get("/jobs/bulk", params={"action": "pause", "all": "on", "label": "team:billing"})
    assert confirm.status_code == 200, confirm.text
    assert "Pause 2 jobs?" in confirm.text
    form = {"action": "pause", "all": "on", "label": "team:billing", "note": "billing freeze"}
    assert (
        await alice.http.post("/jobs/bulk", data=form, headers={"Origin": "http://chronos.test"})
    ).status_code == 403
    assert (await alice.submit("/jobs/bulk", {**form, "csrf_token": "forged"})).status_code == 403
    assert (await alice.submit("/jobs/bulk", form, Origin="https://evil.example")).status_code == 403
    assert not any([expect(await user.get(f"/jobs/{i}"), 200)["paused"] for i in ids])

    done = await alice.submit("/jobs/bulk", form)
    assert done.status_code == 303
    assert done.headers["location"] == "/jobs?label=team%3Abilling&done=bulk-paused&count=2"
    assert "Paused 2 jobs." in (await alice.get(done.headers["location"])).text
    states = [expect(await user.get(f"/jobs/{i}"), 200) for i in ids]
    assert [(j["paused"], j["pause_note"]) for j in states] == [
        (True, "billing freeze"),
        (True, "billing freeze"),
        (False, None),
    ]
    assert expect(await bob_user.get(f"/jobs/{bobs}"), 200)["paused"] is False

    # Rows ticked by id: another user's id is not counted nor touched.
    picked = await alice.get("/jobs/bulk", params=[("action", "resume"), ("id", ids[0]), ("id", bobs)])
    assert "Resume 1 job?" in picked.text
    resumed = await alice.submit("/jobs/bulk", {"action": "resume", "id": ids[0]})
    assert resumed.headers["location"].endswith("done=bulk-resumed&count=1")
    assert expect(await user.get(f"/jobs/{ids[0]}"), 200)["paused"] is False
    assert expect(await user.get(f"/jobs/{ids[1]}"), 200)["paused"] is True
    nothing = await alice.get("/jobs/bulk", params={"action": "pause"})
    assert nothing.status_code == 422 and "select some jobs" in nothing.text
    await bob.close()


async def test_labels_in_the_job_forms(api: ApiClient, alice: Browser, target: HttpTarget) -> None:
    form = {
        "name": "labelled",
        "schedule_type": "cron",
        "cron": "0 3 * * *",
        "timezone": "UTC",
        "url": target.url("/labels"),
        "labels": "team=billing\nbad key=x",
    }
    refused = await alice.submit("/jobs", form, via="/jobs/new")
    assert refused.status_code == 422
    assert 'id="labels-error"' in refused.text and "label key" in refused.text
    missing = await alice.submit("/jobs", {**form, "labels": "team"})
    assert "is not key=value" in missing.text
    created = await alice.submit("/jobs", {**form, "labels": "team=billing\nenv=prod"})
    assert created.status_code == 303
    job_url = created.headers["location"].split("?")[0]
    assert "<code>env:prod</code>" in (await alice.get(job_url)).text
    edit = await alice.get(f"{job_url}/edit")
    assert "team=billing\nenv=prod" in edit.text
    saved = await alice.submit(f"{job_url}/edit", {**form, "labels": "team=ops", "version": "1"})
    assert saved.status_code == 303
    user = await api_user(api, alice)
    assert expect(await user.get(f"/jobs/{job_url.rsplit('/', 1)[1]}"), 200)["labels"] == {"team": "ops"}


async def test_a_backfill_from_the_job_page_runs_the_past_fires(
    api: ApiClient, alice: Browser, target: HttpTarget
) -> None:
    """The form's times are read on the clock of its time zone; refusals stay beside the form."""
    user = await api_user(api, alice)
    body = {**job_body(target, "quarterly"), "schedule": {"type": "cron", "cron": "*/15 * * * *"}}
    job = expect(await user.post("/jobs", json={**body, "paused": True}), 201)
    page = f"/jobs/{job['id']}"
    assert f'action="{page}/backfill"' in (await alice.get(page)).text
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    berlin = ZoneInfo("Europe/Berlin")
    form = {
        "start": start.astimezone(berlin).strftime("%Y-%m-%dT%H:%M"),
        "end": (start + timedelta(hours=1)).astimezone(berlin).strftime("%Y-%m-%dT%H:%M"),
        "timezone": "Europe/Berlin",
        "overlap_policy": "allow_all",
    }
    url = f"{page}/backfill"

    assert (await alice.submit(url, {**form, "csrf_token": "forged"})).status_code == 403
    assert (await alice.submit(url, form, Origin="https://evil.example")).status_code == 403
    backwards = await alice.submit(url, {**form, "end": form["start"]})
    assert backwards.status_code == 422
    assert re.search(r'id="backfill-end-error">end must be after start<', backwards.text), backwards.text
    zone = await alice.submit(url, {**form, "timezone": "Mars/Olympus"})
    assert zone.status_code == 422 and 'id="backfill-timezone-error"' in zone.text
    assert expect(await user.get(f"/jobs/{job['id']}/runs"), 200)["items"] == []

    done = await alice.submit(url, form)
    assert done.status_code == 303 and done.headers["location"] == f"{page}?done=backfilled&count=5"
    shown = await alice.get(done.headers["location"])
    assert '<p class="flash" role="status">Backfilled 5 fires.</p>' in shown.text

    async def backfilled() -> list[dict[str, Any]] | None:
        runs = expect(await user.get(f"/jobs/{job['id']}/runs"), 200)["items"]
        return runs if len(runs) == 5 and all(r["trigger"] == "backfill" for r in runs) else None

    runs = await eventually(backfilled, "the five backfilled runs")
    fired = sorted(datetime.fromisoformat(r["scheduled_at"]) for r in runs)
    assert fired == [start + timedelta(minutes=15 * i) for i in range(5)]
    listed = (await alice.get(page)).text
    assert listed.count("</td><td>backfill</td>") == 5

    immediate = {**job_body(target, "once now"), "schedule": {"type": "immediate"}}
    now_job = expect(await user.post("/jobs", json=immediate), 201)
    assert "no fire times to backfill" in (await alice.get(f"/jobs/{now_job['id']}")).text
    refused = await alice.submit(f"/jobs/{now_job['id']}/backfill", form)
    assert refused.status_code == 409 and 'id="backfill-error" role="alert"' in refused.text


async def test_missed_and_skipped_fires_show_their_status_and_reason(
    api: ApiClient, alice: Browser, target: HttpTarget
) -> None:
    user = await api_user(api, alice)
    job = expect(await user.post("/jobs", json={**job_body(target), "paused": True}), 201)
    at = datetime(2026, 1, 1, 3, tzinfo=UTC)
    reasons = {
        RunStatus.MISSED: "missed: the job was paused at the fire time",
        RunStatus.SKIPPED: "skipped: the previous run was still running (overlap policy skip)",
    }
    async with api.app.state.sessions() as session:
        for status, reason in reasons.items():
            run_id = f"job-{job['id']}-{status}"
            session.add(
                Run(
                    id=run_id,
                    job_id=job["id"],
                    owner_id=user.user["id"],
                    status=status,
                    trigger=Trigger.SCHEDULE,
                    scheduled_at=at,
                    finished_at=at,
                    error=reason,
                )
            )
        await session.commit()

    listed = (await alice.get(f"/jobs/{job['id']}")).text
    for status, reason in reasons.items():
        assert re.search(
            rf'status-{status}"><span class="icon" aria-hidden="true">[^<]+</span> {status}<', listed
        )
        assert reason in listed
        run = (await alice.get(f"/runs/job-{job['id']}-{status}")).text
        assert f"<strong>Why it did not run:</strong> {reason}" in run
        assert "None: this fire did not run." in run and "Error:" not in run


class Tabs:
    """A request to a stream whose page stays open for `ticks` looks (then its tab is closed)."""

    def __init__(self, ticks: int) -> None:
        self.ticks = ticks

    async def is_disconnected(self) -> bool:
        self.ticks -= 1
        return self.ticks < 0


async def test_a_user_holds_at_most_eight_live_views(
    api: ApiClient, alice: Browser, target: HttpTarget
) -> None:
    """Each live view reads the database every few seconds while it is open: past eight of one user's in
    a process, a new one answers `busy` and ends (the page stops following), and a closed one frees its
    place. Another user's views are not counted against them."""
    user = await api_user(api, alice)

    async def forever() -> AsyncGenerator[ServerSentEvent, None]:
        yield ServerSentEvent(data="open", event="open")
        await asyncio.Event().wait()

    async def first(stream: AsyncGenerator[ServerSentEvent, None]) -> str | None:
        return (await anext(stream)).event

    views = [live.held(user.id, forever()) for _ in range(live.MAX_PER_USER)]
    assert [await first(view) for view in views] == ["open"] * live.MAX_PER_USER
    over = live.held(user.id, forever())
    assert await first(over) == "busy"
    assert [event async for event in over] == []  # and it ends
    theirs = live.held("someone-else", forever())
    assert await first(theirs) == "open"
    await theirs.aclose()

    job = expect(await user.post("/jobs", json=job_body(target, "followed")), 201)
    row = re.search(r'id="job-runs" data-live="([^"]+)"', (await alice.get(f"/jobs/{job['id']}")).text)
    assert row is not None
    stream = await alice.get(f"/jobs/{job['id']}/events", params={"row": row.group(1)})
    assert "event: busy" in stream.text and "at most 8 live views" in stream.text

    await views.pop().aclose()
    again = live.held(user.id, forever())
    assert await first(again) == "open"
    for view in [*views, again]:
        await view.aclose()
    assert user.id not in live._open
    # HEAD of a live view ends once its headers are out, and frees its place.
    head = await alice.http.head(f"/jobs/{job['id']}/events", params={"row": row.group(1)})
    assert (head.status_code, head.headers["content-type"], head.content) == (
        200,
        "text/event-stream; charset=utf-8",
        b"",
    )
    assert user.id not in live._open


async def test_the_jobs_list_streams_only_the_rows_that_changed(
    api: ApiClient,
    alice: Browser,
    target: HttpTarget,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One read a tick while nothing changes; a paused job's row comes again, a deleted one goes, a
    passed next fire redraws its row once; another user's rows are only ever gone."""
    user = await api_user(api, alice)
    kept, dropped = [
        expect(await user.post("/jobs", json=job_body(target, name)), 201)["id"] for name in ("kept", "drop")
    ]
    listing = (await alice.get("/jobs")).text
    keys = dict(re.findall(r'<tr id="job-([^"]+)" data-live="([^"]+)"', listing))
    assert set(keys) == {kept, dropped} and 'id="live-toggle"' in listing
    for params in ({}, {"row": "x"}, {"row": [keys[kept]] * 101}):
        assert (await alice.get("/jobs/events", params=params)).status_code == 422

    monkeypatch.setattr(job_pages, "LIVE_SECONDS", 0)
    state = api.app.state
    jobs = JobService(state.settings, state.sessions, state.temporal)
    runs = RunService(state.settings, state.sessions, state.temporal)
    viewer = Principal(id=user.id, email=alice.email, role=Role.USER, scopes=frozenset())
    shown = dict(map(job_pages._shown, keys.values()))

    async def ticks(count: int, who: Principal = viewer) -> list[tuple[str | None, str]]:
        draw = job_pages._rows(who, jobs, runs)
        stream = job_pages._watch(Tabs(count), who, jobs, shown, draw)  # type: ignore[arg-type]
        return [(event.event, str(event.data)) async for event in stream]

    engine: AsyncEngine = state.sessions.kw["bind"]
    reads: list[str] = []

    def count(*args: Any) -> None:
        reads.append(args[2])

    event.listen(engine.sync_engine, "before_cursor_execute", count)
    try:
        assert await ticks(1) == []
    finally:
        event.remove(engine.sync_engine, "before_cursor_execute", count)
    assert len(reads) == 1, reads  # nothing changed: one read of the rows' versions

    expect(await user.post(f"/jobs/{kept}/pause", json={"note": "live"}), 200)
    sent = await ticks(1)
    assert [name for name, _ in sent] == ["job_row"], sent
    assert f'<tr id="job-{kept}"' in sent[0][1] and "status-paused" in sent[0][1]
    assert shown[kept].digest != job_pages._shown(keys[kept])[1].digest
    assert await ticks(2) == []  # drawn once

    shown[kept] = job_pages._Shown(shown[kept].digest, 1.0)  # its next fire, as the page had it, passed
    assert [name for name, _ in await ticks(2)] == ["job_row"]

    expect(await user.delete(f"/jobs/{dropped}"), 204)
    assert await ticks(1) == [("gone", dropped)]
    bob = Principal(id="someone-else", email="bob@example.org", role=Role.USER, scopes=frozenset())
    assert await ticks(1, bob) == [("gone", kept), ("end", "")]

    # The job page follows its own job: its state, next runs and newest runs come again on a change.
    found = re.search(r'id="job-runs" data-live="([^"]+)"', (await alice.get(f"/jobs/{kept}")).text)
    assert found and 'id="live-toggle"' in (await alice.get(f"/jobs/{kept}")).text
    assert (await alice.get(f"/jobs/{kept}/events", params={"row": keys[dropped]})).status_code == 422
    other = await Browser.registered(api)
    assert (await other.get(f"/jobs/{kept}/events", params={"row": found.group(1)})).status_code == 404
    await other.close()
    expect(await user.post(f"/jobs/{kept}/resume"), 200)
    parts = job_pages._job_parts(viewer, jobs, runs)
    stream = job_pages._watch(Tabs(1), viewer, jobs, dict([job_pages._shown(found.group(1))]), parts)  # type: ignore[arg-type]
    sent = [(str(event.event), str(event.data)) async for event in stream]
    assert [name for name, _ in sent] == ["job_state", "job_next", "job_runs"]
    assert 'data-state="scheduled"' in sent[0][1] and 'id="job-runs"' in sent[2][1]
