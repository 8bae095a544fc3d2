"""The HTTP client of the `chronos` command: the signed-in profiles, token refresh, and API errors as exit
codes. Synchronous (httpx.Client): one command is a few calls in a row."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

# Exit codes of the client commands (docs/cli.md); 2 stays Click's usage error.
EXIT_ERROR = 1  # anything else: a conflict (409), a stale version (412), a server error
EXIT_NOT_FOUND = 3  # 404
EXIT_INVALID = 4  # 400, 422, 413, or a file `apply` cannot use
EXIT_UNAVAILABLE = 5  # no answer (refused, timed out), 503, 429: try again later
EXIT_AUTH = 6  # not signed in, 401, 403, a refresh token the server no longer takes

API_PREFIX = "/api/v1"
# The most items a listing answers per page (its `limit`).
MAX_PAGE = 100
# An access token this close to its expiry is refreshed before it is used.
EXPIRY_MARGIN = 30.0


class ClientError(Exception):
    """What a command failed on, with the exit code that tells scripts which kind of failure it was."""

    def __init__(
        self,
        title: str,
        detail: str = "",
        *,
        exit_code: int = EXIT_ERROR,
        status: int | None = None,
        errors: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{title}: {detail}" if detail else title)
        self.title = title
        self.detail = detail
        self.exit_code = exit_code
        self.status = status
        self.errors = errors or []

    @classmethod
    def from_response(cls, response: httpx.Response) -> ClientError:
        """An error answer: RFC 9457 problem+json (title, detail, field errors), or whatever the body is."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {"detail": response.text.strip()[:500]}
        return cls(
            str(body.get("title") or response.reason_phrase or "Error"),
            str(body.get("detail") or body.get("error_description") or ""),
            exit_code=exit_code_for(response.status_code),
            status=response.status_code,
            errors=[e for e in body.get("errors") or [] if isinstance(e, dict)],
        )


def exit_code_for(status: int) -> int:
    """The exit code of an HTTP error status."""
    if status == 404:
        return EXIT_NOT_FOUND
    if status in (400, 413, 422):
        return EXIT_INVALID
    if status in (401, 403):
        return EXIT_AUTH
    if status in (429, 502, 503, 504):
        return EXIT_UNAVAILABLE
    return EXIT_ERROR


def invalid(title: str, detail: str, errors: list[dict[str, Any]] | None = None) -> ClientError:
    """Input the command cannot use (a file, flags), with the exit code of a 422."""
    return ClientError(title, detail, exit_code=EXIT_INVALID, errors=errors)


def not_signed_in(detail: str) -> ClientError:
    return ClientError("Not signed in", detail, exit_code=EXIT_AUTH)


def config_dir() -> Path:
    """`$XDG_CONFIG_HOME/chronos`, by default `~/.config/chronos`."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "chronos"


def server_url(url: str) -> str:
    """The server's base URL as users may type it: with or without `/api/v1`, a trailing slash or a scheme."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = f"http://{url}"
    url = url.removesuffix(API_PREFIX)
    if not urlsplit(url).hostname:
        raise ClientError("Invalid server URL", url, exit_code=EXIT_INVALID)
    return url


def profile_name(url: str) -> str:
    """The default name of a server's profile: its host and port, so each server has one."""
    return urlsplit(url).netloc


@dataclass
class Profile:
    """One server signed in to: the refresh token is the login; the access token is a cache of it."""

    url: str
    email: str
    refresh_token: str
    access_token: str | None = None
    expires_at: float = 0.0


class CredentialStore:
    """`credentials.json` in the config dir, mode 0600 (its folder 0700): `{"current", "profiles"}`.

    Every change happens under an exclusive lock on a lock file beside it, and re-reads the file first:
    two commands refreshing at once would otherwise both use one refresh token, and the API revokes the
    whole login when a used refresh token comes back."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or config_dir()
        self.path = self.folder / "credentials.json"

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"current": None, "profiles": {}}
        except ValueError as exc:
            raise ClientError("Unreadable credentials", f"{self.path}: {exc}", exit_code=EXIT_AUTH) from exc
        return {"current": data.get("current"), "profiles": data.get("profiles") or {}}

    def profile(self, name: str) -> Profile | None:
        found = self.read()["profiles"].get(name)
        return Profile(**found) if found else None

    def current(self) -> str | None:
        current: str | None = self.read()["current"]
        return current

    def named_for(self, url: str) -> str | None:
        """The profile of this server, if signed in to it."""
        for name, found in self.read()["profiles"].items():
            if found.get("url") == url:
                return str(name)
        return None

    @contextlib.contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """The store's content, to change in place; written back (0600) when the block ends."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.folder / "credentials.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            data = self.read()
            before = json.dumps(data)
            yield data
            if json.dumps(data) != before:
                self._write(data)
        finally:
            os.close(fd)  # releases the lock

    def save(self, name: str, profile: Profile, *, make_current: bool = False) -> None:
        with self.locked() as data:
            data["profiles"][name] = asdict(profile)
            if make_current or data["current"] not in data["profiles"]:
                data["current"] = name

    def remove(self, name: str) -> None:
        with self.locked() as data:
            data["profiles"].pop(name, None)
            if data["current"] == name:
                data["current"] = next(iter(data["profiles"]), None)

    def _write(self, data: Mapping[str, Any]) -> None:
        """Written to a new 0600 file and renamed over the old one: never readable by others, never half
        written."""
        temporary = self.path.with_suffix(".tmp")
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as file:
            json.dump(data, file, indent=2)
        os.replace(temporary, self.path)


class Client:
    """Calls the API with a bearer token: `CHRONOS_TOKEN` as given, or the profile's access token,
    refreshed through the refresh grant when it expires (or a call answers 401), the rotated refresh
    token stored at once."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        profile: str | None = None,
        store: CredentialStore | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.url = url
        self.token = token
        self.profile = profile
        self.store = store or CredentialStore()
        self.http = httpx.Client(base_url=url + API_PREFIX, timeout=timeout)
        self._used: str | None = None  # the access token of the last call, so a 401 refreshes it

    @classmethod
    def signed_in(cls, profile: str | None = None, store: CredentialStore | None = None) -> Client:
        """The client of the command line: `CHRONOS_URL` and `CHRONOS_TOKEN` override the stored login;
        `--profile` picks one of them, by default the last one signed in to (or CHRONOS_URL's)."""
        store = store or CredentialStore()
        env_url = os.environ.get("CHRONOS_URL")
        token = os.environ.get("CHRONOS_TOKEN") or None
        url = server_url(env_url) if env_url else None
        name = profile or (store.named_for(url) if url else None) or (None if url else store.current())
        found = store.profile(name) if name else None
        if profile and found is None:
            raise not_signed_in(f"no profile {profile!r}: run `chronos login URL --profile {profile}`")
        if url is None:
            if found is None:
                raise not_signed_in("run `chronos login URL` (or set CHRONOS_URL and CHRONOS_TOKEN)")
            url = found.url
        if token is None and found is None:
            raise not_signed_in(f"run `chronos login {url}` (or set CHRONOS_TOKEN)")
        return cls(url, token=token, profile=name if found else None, store=store)

    def close(self) -> None:
        self.http.close()

    def login(self, email: str, password: str, name: str) -> Profile:
        """The OAuth2 password grant; the refresh token becomes the profile `name`, now the current one."""
        form = {"grant_type": "password", "username": email, "password": password}
        grant = self._grant(form)
        profile = Profile(self.url, email, grant["refresh_token"], grant["access_token"], self._expiry(grant))
        self.store.save(name, profile, make_current=True)
        self.profile = name
        return profile

    def logout(self) -> None:
        """Revoke the session (its access and refresh token) on the server; the profile is removed even
        when the server cannot be reached, and that failure raised after."""
        if self.profile is None:
            raise not_signed_in("no stored login to sign out of")
        found = self.store.profile(self.profile)
        try:
            if found is not None:
                self.request("POST", "/auth/logout", json={"refresh_token": found.refresh_token})
        finally:
            self.store.remove(self.profile)

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One call; an error answer raises ClientError (problem+json read), no answer raises it too."""
        response = self._send(method, path, self._access_token(), **kwargs)
        if response.status_code == 401 and self.token is None:
            response = self._send(method, path, self._access_token(refresh=True), **kwargs)
        if response.status_code >= 400:
            raise ClientError.from_response(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        return response.json() if response.content else None

    def _send(self, method: str, path: str, token: str, **kwargs: Any) -> httpx.Response:
        headers = {**kwargs.pop("headers", {}), "Authorization": f"Bearer {token}"}
        try:
            return self.http.request(method, path, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise unreachable(self.url, exc) from exc

    def _access_token(self, *, refresh: bool = False) -> str:
        if self.token is not None:
            return self.token
        assert self.profile is not None
        with self.store.locked() as data:
            stored = data["profiles"].get(self.profile)
            if stored is None:
                raise not_signed_in(f"the profile {self.profile!r} was signed out")
            found = Profile(**stored)
            # Another command may have refreshed since this one read the store: its token is used then.
            fresh = found.access_token and found.expires_at - EXPIRY_MARGIN > time.time()
            if fresh and not (refresh and found.access_token == self._used):
                self._used = found.access_token
                return str(found.access_token)
            form = {"grant_type": "refresh_token", "refresh_token": found.refresh_token}
            try:
                grant = self._grant(form)
            except ClientError as exc:
                if exc.exit_code == EXIT_AUTH:
                    raise not_signed_in(f"the login to {found.url} has ended: run `chronos login`") from exc
                raise
            found.refresh_token, found.access_token = grant["refresh_token"], grant["access_token"]
            found.expires_at = self._expiry(grant)
            data["profiles"][self.profile] = asdict(found)
        self._used = found.access_token
        return found.access_token

    def _grant(self, form: dict[str, str]) -> dict[str, Any]:
        try:
            response = self.http.post("/auth/token", data=form)
        except httpx.TransportError as exc:
            raise unreachable(self.url, exc) from exc
        if response.status_code >= 400:
            error = ClientError.from_response(response)
            if response.status_code == 400 and "invalid_grant" in response.text:
                error.exit_code = EXIT_AUTH  # wrong password, or a refresh token the server dropped
            raise error
        grant: dict[str, Any] = response.json()
        return grant

    @staticmethod
    def _expiry(grant: Mapping[str, Any]) -> float:
        return time.time() + float(grant.get("expires_in") or 0)


def unreachable(url: str, exc: Exception) -> ClientError:
    return ClientError(
        "Server unavailable", f"{url}: {exc or type(exc).__name__}", exit_code=EXIT_UNAVAILABLE
    )


def pages(
    client: Client, path: str, params: Mapping[str, Any], limit: int | None = None, size: int = MAX_PAGE
) -> Iterator[Any]:
    """Every item of a listing, page after page of at most `size`: by `next_cursor` where the answer has
    one, else by `page` until `total` is reached; at most `limit` items (all when None)."""
    query = {k: v for k, v in params.items() if v not in (None, [], "")}
    query["limit"] = min(limit or size, size)
    seen, page = 0, 1
    while True:
        body = client.json("GET", path, params=query)
        for item in body["items"]:
            yield item
            seen += 1
            if limit is not None and seen >= limit:
                return
        if body.get("next_cursor"):
            query["cursor"] = body["next_cursor"]
        elif "next_cursor" not in body and "total" in body and page * query["limit"] < body["total"]:
            page += 1
            query["page"] = page
        else:
            return
