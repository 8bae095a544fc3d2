"""Password hashing with argon2id, off the event loop, in constant time whether or not the account exists."""

from __future__ import annotations

import asyncio
import functools
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from core.config import get_settings


@functools.cache
def _hasher() -> PasswordHasher:
    """argon2id at the process's cost settings (by default the library's, RFC 9106's low-memory profile);
    stored hashes record their parameters, and a login upgrades one made with other parameters."""
    settings = get_settings()
    return PasswordHasher(
        time_cost=settings.password_hash_time_cost, memory_cost=settings.password_hash_memory_kib
    )


async def hash_password(password: str) -> str:
    """Argon2 takes tens of milliseconds on purpose: off the event loop."""
    return await asyncio.to_thread(_hasher().hash, password)


@functools.cache
def _dummy_hash() -> str:
    return _hasher().hash(secrets.token_urlsafe(16))


def _verify(password_hash: str | None, password: str) -> bool:
    """Hashes even for an unknown email (on a dummy), so response time doesn't tell which emails exist."""
    try:
        return _hasher().verify(password_hash or _dummy_hash(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(password_hash: str | None, password: str) -> bool:
    return await asyncio.to_thread(_verify, password_hash, password)


def needs_rehash(password_hash: str) -> bool:
    """Whether the hasher's parameters changed since this hash was made."""
    return _hasher().check_needs_rehash(password_hash)
