"""The dashboard as a browser uses it, without the browser: a cookie jar, forms with their CSRF token and
this site's Origin. `browser = await Browser.registered(api)` then `await browser.submit("/jobs", {...})`."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.api_client import PASSWORD, ApiClient, new_email

SITE = "http://chronos.test"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


class Browser:
    def __init__(self, api: ApiClient) -> None:
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(app=api.app), base_url=SITE)
        self.csrf = ""
        self.email = ""

    @classmethod
    async def registered(cls, api: ApiClient, email: str | None = None) -> Browser:
        browser = cls(api)
        browser.email = email or new_email()
        answer = await browser.submit(
            "/register", {"email": browser.email, "password": PASSWORD}, via="/register"
        )
        assert answer.status_code == 200, answer.text
        return browser

    async def get(self, path: str, **kwargs: Any) -> httpx.Response:
        answer = await self.http.get(path, **kwargs)
        if found := CSRF.search(answer.text):
            self.csrf = found.group(1)
        return answer

    async def submit(
        self, path: str, form: dict[str, str] | None = None, *, via: str | None = None, **headers: str
    ) -> httpx.Response:
        """POST a form as a page of this site does: the CSRF token of the last page seen (or of `via`,
        read first) and this site's Origin, unless `headers` say otherwise."""
        if via is not None:
            await self.get(via)
        data = {"csrf_token": self.csrf, **(form or {})}
        return await self.http.post(path, data=data, headers={"Origin": SITE, **headers})

    async def close(self) -> None:
        await self.http.aclose()
