"""Waiting on a condition instead of sleeping: tests poll what they expect, with a deadline."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar, overload

T = TypeVar("T")


@overload
async def eventually(check: Callable[[], Awaitable[T | None]], what: str, within: float = 30) -> T: ...


@overload
async def eventually(check: Callable[[], T | None], what: str, within: float = 30) -> T: ...


async def eventually(check: Callable[[], Any], what: str, within: float = 30) -> Any:
    """The first truthy value `check` returns (or awaits to); fails with `what` after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within:g} s waiting for {what}")
        await asyncio.sleep(0.05)
