"""/docs and /redoc work with the network off: every asset they reference is served by Chronos itself."""

from __future__ import annotations

import re
from urllib.parse import urljoin

import pytest

from tests.api_client import ApiClient
from tests.conftest import sqlite_only

ORIGIN = "http://chronos.test"

pytestmark = sqlite_only  # the pages and their assets are the same whatever the database


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_api_docs_load_only_from_the_server(api: ApiClient, page: str) -> None:
    html = await api.get(ORIGIN + page)
    assert html.status_code == 200
    referenced = re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", html.text)
    referenced += re.findall(r"""url\s*:\s*['"]([^'"]+)['"]""", html.text)  # swagger's openapi url
    referenced += re.findall(r"""spec-url\s*=\s*["']([^"']+)["']""", html.text)  # redoc's
    assert referenced, html.text
    for ref in referenced:
        url = urljoin(ORIGIN + page, ref)
        assert url.startswith(ORIGIN + "/"), f"{page} loads {ref} from another host"
        asset = await api.get(url)
        assert asset.status_code == 200, f"{page}: {ref} answered {asset.status_code}"
        assert asset.content, ref


async def test_the_api_index_answers_where_things_are(api: ApiClient) -> None:
    index = await api.get(ORIGIN + "/api/v1")
    assert index.status_code == 200
    assert index.json()["docs"] == "/docs"
