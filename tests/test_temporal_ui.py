"""The API's proxy to the Temporal Web UI (api/web/temporal_ui.py) without a browser or a UI server: a
recording HTTP server stands in for the UI. The browser scenario is tests/test_codec_browser.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from api.main import create_app
from core.auth import create_user
from tests.api_client import PASSWORD, ApiClient, app_settings, new_email, serve
from tests.dashboard_client import SITE, Browser
from tests.http_target import Answer, HttpTarget


@pytest.fixture
async def proxying(db_engine: AsyncEngine, target: HttpTarget, tmp_path: Path) -> AsyncIterator[ApiClient]:
    if db_engine.dialect.name != "sqlite":
        pytest.skip("the proxy does not touch the database beyond the session: once, on SQLite")
    settings = app_settings(db_engine, tmp_path, temporal_ui_upstream=target.url("/"))
    async with serve(create_app(settings)) as api:  # Temporal is never called
        yield api


async def test_only_a_session_reaches_the_ui_and_without_chronos_credentials(
    proxying: ApiClient, target: HttpTarget
) -> None:
    path = "/temporal/api/v1/namespaces/default/workflows/a%2Fb%20c?query=x%3D1"  # forwarded as is
    anonymous = Browser(proxying)
    page = await anonymous.get("/temporal/namespaces/default/workflows")
    assert (page.status_code, page.headers["location"]) == (
        303,
        "/login?next=/temporal/namespaces/default/workflows",
    )
    assert (await anonymous.get(path)).status_code == 401
    assert not target.requests[path]

    alice = await Browser.registered(proxying)
    alice.http.cookies.set("_csrf", "ui-token")  # the UI server's own cookie goes through
    target.script(path, [Answer(headers={"Set-Cookie": "_csrf=new; Path=/", "Keep-Alive": "timeout=5"})])
    answer = await alice.get(
        path,
        headers={"Authorization": "Bearer chronos", "Connection": "keep-alive, X-Hop", "X-Hop": "1"},
    )
    assert (answer.status_code, answer.json()) == (200, {"ok": True})
    assert answer.headers["set-cookie"] == "_csrf=new; Path=/" and "keep-alive" not in answer.headers
    [received] = target.requests[path]
    sent = {k.lower(): v for k, v in received.headers.items()}
    assert sent["cookie"] == "_csrf=ui-token"
    assert not {"authorization", "x-hop"} & sent.keys()

    # Reading is for every signed-in user; changing a workflow, for admins, from this site only.
    terminate = "/temporal/api/v1/namespaces/default/workflows/w/terminate"
    assert (await alice.http.post(terminate, json={}, headers={"Origin": SITE})).status_code == 403
    admin = Browser(proxying)
    user = await create_user(proxying.app.state.sessions, new_email(), PASSWORD, admin=True)
    await admin.submit("/login", {"email": user.email, "password": PASSWORD}, via="/login")
    elsewhere = await admin.http.post(terminate, json={}, headers={"Origin": "http://127.0.0.1:9"})
    assert elsewhere.status_code == 403
    assert not target.requests[terminate]
    done = await admin.http.post(terminate, json={"reason": "r"}, headers={"Origin": SITE})
    assert done.status_code == 200
    [received] = target.requests[terminate]
    assert (received.method, received.body) == ("POST", b'{"reason":"r"}')
    # A form goes through whole too: the NUL check reads it before the route, and keeps it.
    signal = "/temporal/api/v1/namespaces/default/workflows/w/signal"
    sent_form = await admin.http.post(signal, data={"name": "go"}, headers={"Origin": SITE})
    assert sent_form.status_code == 200
    [received] = target.requests[signal]
    assert received.body == b"name=go"
    for browser in (anonymous, alice, admin):
        await browser.close()
