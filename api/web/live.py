"""The dashboard's live streams (a run's log, the jobs list's rows, a job's page): how many one user may
hold open at once in one API process. Each stream reads the database every few seconds for as long as it
is open, so without a bound one account could open thousands and keep the database busy for everyone."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncGenerator
from contextlib import aclosing

from sse_starlette import ServerSentEvent

# A page holds one stream, and a hidden tab closes its own: eight is eight visible tabs.
MAX_PER_USER = 8

_open: Counter[str] = Counter()


async def held(
    user_id: str, events: AsyncGenerator[ServerSentEvent, None]
) -> AsyncGenerator[ServerSentEvent, None]:
    """`events`, counted against the user's streams; past MAX_PER_USER, one `busy` event and the end (the
    page then stops following, rather than reconnecting as a stream that ends makes a browser do). The
    count is taken when the stream starts and given back when it ends, however it ends."""
    if _open[user_id] >= MAX_PER_USER:
        yield ServerSentEvent(
            data=f"paused: at most {MAX_PER_USER} live views at once; reload to follow again", event="busy"
        )
        return
    _open[user_id] += 1
    try:
        async with aclosing(events) as stream:
            async for event in stream:
                yield event
    finally:
        _open[user_id] -= 1
        if not _open[user_id]:
            del _open[user_id]
