"""What every action attempt shares: its Attempt row and log lines in the mirror, its heartbeat, its backoff.

Each action activity records its own attempt (one activity execution per attempt, no extra round trip to
the workflow). Writes are keyed, so a retried write lands once: Attempt by (run_id, number), RunLog by key.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import update
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import col
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.db import Sessions
from core.models import Attempt, RunLog, utcnow

T = TypeVar("T")


def dialect_insert(sessions: Sessions) -> Any:
    """The INSERT of the mirror's dialect, whose ON CONFLICT clauses make keyed writes idempotent."""
    return postgresql.insert if sessions.kw["bind"].dialect.name == "postgresql" else sqlite.insert


@dataclass
class LogLine:
    key: str
    level: str
    message: str
    ts: datetime = field(default_factory=utcnow)


def next_retry(info: activity.Info, error: ApplicationError) -> timedelta | None:
    """When Temporal will run the next attempt after `error`, or None when this attempt was the last."""
    policy = info.retry_policy
    if policy is None or error.non_retryable or error.type in (policy.non_retryable_error_types or ()):
        return None
    if policy.maximum_attempts and info.attempt >= policy.maximum_attempts:
        return None
    if error.next_retry_delay is not None:
        return error.next_retry_delay
    delay = policy.initial_interval * (policy.backoff_coefficient ** (info.attempt - 1))
    return min(delay, policy.maximum_interval) if policy.maximum_interval else delay


def describe_delay(delay: timedelta) -> str:
    seconds = delay.total_seconds()
    return f"{seconds:g} s" if seconds < 120 else f"{seconds / 60:g} min"


async def heartbeating(work: Awaitable[T]) -> T:
    """Await `work` while heartbeating, so Temporal notices a lost worker within the heartbeat timeout.

    When the workflow asks for cancellation (a pause or a cancelled run) `work` is not aborted: the attempt
    in progress finishes and reports its outcome. Cancelled for any other reason (worker shutting down,
    attempt timed out, workflow gone) the outcome could not be reported anyway, so `work` is aborted.
    """
    task = asyncio.ensure_future(work)
    timeout = activity.info().heartbeat_timeout
    every = timeout.total_seconds() / 4 if timeout else None
    while True:
        try:
            done, _ = await asyncio.wait({task}, timeout=every)
        except asyncio.CancelledError:
            why = activity.cancellation_details()
            if why is None or not why.cancel_requested or why.worker_shutdown or why.timed_out:
                task.cancel()
                raise
            activity.logger.info("cancel requested: the attempt in progress finishes first")
            continue
        if done:
            return task.result()
        activity.heartbeat()


class RunRecorder:
    """Writes attempts and log lines of runs into the mirror; every write is idempotent."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.insert = dialect_insert(sessions)

    async def attempt_started(self, run_id: str, number: int, line: LogLine) -> None:
        """Open attempt `number`; earlier attempts still open lost their worker or timed out."""
        async with self.sessions() as session:
            await session.exec(
                update(Attempt)
                .where(
                    col(Attempt.run_id) == run_id,
                    col(Attempt.number) < number,
                    col(Attempt.status) == "running",
                )
                .values(status="unknown", error="no result: the worker was lost or the attempt timed out")
            )
            row = {"run_id": run_id, "number": number, "status": "running", "started_at": line.ts}
            await session.exec(
                self.insert(Attempt)
                .values(row)
                .on_conflict_do_update(index_elements=["run_id", "number"], set_=row)
            )
            await self._log(session, run_id, [line])
            await session.commit()

    async def attempt_finished(
        self,
        run_id: str,
        number: int,
        *,
        status: str,
        duration_ms: int,
        lines: list[LogLine],
        http_status: int | None = None,
        error: str | None = None,
    ) -> None:
        async with self.sessions() as session:
            await session.exec(
                update(Attempt)
                .where(col(Attempt.run_id) == run_id, col(Attempt.number) == number)
                .values(
                    status=status,
                    finished_at=utcnow(),
                    duration_ms=duration_ms,
                    http_status=http_status,
                    error=error,
                )
            )
            await self._log(session, run_id, lines)
            await session.commit()

    async def log(self, run_id: str, *lines: LogLine) -> None:
        async with self.sessions() as session:
            await self._log(session, run_id, list(lines))
            await session.commit()

    async def _log(self, session: Any, run_id: str, lines: list[LogLine]) -> None:
        if not lines:
            return
        rows = [
            {"run_id": run_id, "key": line.key, "ts": line.ts, "level": line.level, "message": line.message}
            for line in lines
        ]
        await session.exec(self.insert(RunLog).values(rows).on_conflict_do_nothing(index_elements=["key"]))


def failure_line(
    prefix: str, info: activity.Info, error: ApplicationError, number: int, what: str = "attempt"
) -> LogLine:
    """The log line of a failed attempt: the error and what happens next."""
    delay = next_retry(info, error)
    if delay is not None:
        why = " (Retry-After)" if error.next_retry_delay is not None else ""
        then = f"next attempt in {describe_delay(delay)}{why}"
    elif info.retry_policy is not None and info.attempt >= (info.retry_policy.maximum_attempts or 0) > 0:
        then = "no attempts left"
    else:
        then = "not retryable"
    level = "warning" if delay is not None else "error"
    return LogLine(f"{prefix}:{number}:failed", level, f"{what} {number} failed: {error.message}; {then}")
