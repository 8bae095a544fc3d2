"""Secrets generated once into the data dir (the JWT key, the payload encryption key): written so that
processes starting together all end up reading the same one."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path


def write_secret(path: Path, secret: str | None = None) -> None:
    """Written aside and hard-linked into place: processes starting together all read one complete secret.
    `secret` defaults to 48 random bytes, URL-safe; a process that loses the race keeps the winner's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{secrets.token_hex(8)}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_urlsafe(48) if secret is None else secret)
    try:
        with contextlib.suppress(FileExistsError):  # another process won; its secret is the one
            os.link(draft, path)
    finally:
        draft.unlink()
