"""What every action attempt shares: its Attempt row and log lines in the mirror, its heartbeat, its backoff.

Each action activity records its own attempt (one activity execution per attempt, no extra round trip to
the workflow) through `ActionAttempt`. Writes are keyed, so a retried write lands once: Attempt by
(run_id, number), RunLog by key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar

from sqlalchemy import Connection, Table, bindparam, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.db import Sessions
from core.models import Attempt, AttemptStatus, Run, RunLog, utcnow
from core.payloads import job_of_workflow, retry_delay

logger = logging.getLogger("chronos.attempts")
T = TypeVar("T")

ATTEMPT: Table = Attempt.__table__  # type: ignore[attr-defined]
LOG: Table = RunLog.__table__  # type: ignore[attr-defined]
RUN: Table = Run.__table__  # type: ignore[attr-defined]

# The statements of every attempt, built once (SQLAlchemy then finds them compiled in its cache).
LOSE_EARLIER_ATTEMPTS = (
    update(ATTEMPT)
    .where(
        ATTEMPT.c.run_id == bindparam("run"),
        ATTEMPT.c.number < bindparam("below"),
        ATTEMPT.c.status == AttemptStatus.RUNNING,
    )
    .values(status=AttemptStatus.UNKNOWN, error="no result: the worker was lost or the attempt timed out")
)
# A run in flight counts its attempts as they start (its end writes the final count).
COUNT_ATTEMPT = (
    update(RUN)
    .where(RUN.c.id == bindparam("run"), RUN.c.attempts < bindparam("number"))
    .values(attempts=bindparam("number"))
)
FINISH_ATTEMPT = (
    update(ATTEMPT)
    .where(ATTEMPT.c.run_id == bindparam("run"), ATTEMPT.c.number == bindparam("attempt"))
    .values(
        status=bindparam("status"),
        finished_at=bindparam("finished_at"),
        duration_ms=bindparam("duration_ms"),
        http_status=bindparam("http_status"),
        error=bindparam("error"),
    )
)


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
    return retry_delay(policy, info.attempt)


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
    """Writes attempts and log lines of runs into the mirror; every write is idempotent.

    Each write is one short transaction of Core statements built once, run in one call into the
    database's thread (`run_sync`): no ORM session, as this runs twice for every attempt."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.engine: AsyncEngine = sessions.kw["bind"]
        self.insert = dialect_insert(sessions)
        opened = self.insert(ATTEMPT).values(
            run_id=bindparam("run_id"),
            number=bindparam("number"),
            status=AttemptStatus.RUNNING,
            started_at=bindparam("started_at"),
        )
        self._open_attempt = opened.on_conflict_do_update(
            index_elements=["run_id", "number"],
            set_={"status": opened.excluded.status, "started_at": opened.excluded.started_at},
        )
        self._log_lines = self.insert(LOG).on_conflict_do_nothing(index_elements=["key"])

    async def attempt_started(self, run_id: str, number: int, line: LogLine) -> None:
        """Open attempt `number`; earlier attempts still open lost their worker or timed out."""
        async with self.engine.connect() as conn:
            await conn.run_sync(self._attempt_started, run_id, number, line)

    def _attempt_started(self, conn: Connection, run_id: str, number: int, line: LogLine) -> None:
        with conn.begin():
            row = {"run_id": run_id, "number": number, "started_at": line.ts}
            conn.execute(self._open_attempt, row)
            conn.execute(COUNT_ATTEMPT, {"run": run_id, "number": number})
            if number > 1:  # attempt 1 has no earlier attempts
                conn.execute(LOSE_EARLIER_ATTEMPTS, {"run": run_id, "below": number})
            self._log(conn, run_id, [line])

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
        values = {
            "run": run_id,
            "attempt": number,
            "status": status,
            "finished_at": utcnow(),
            "duration_ms": duration_ms,
            "http_status": http_status,
            "error": error,
        }
        async with self.engine.connect() as conn:
            await conn.run_sync(self._attempt_finished, values, lines)

    def _attempt_finished(self, conn: Connection, values: dict[str, Any], lines: list[LogLine]) -> None:
        with conn.begin():
            conn.execute(FINISH_ATTEMPT, values)
            self._log(conn, values["run"], lines)

    async def log(self, run_id: str, *lines: LogLine) -> None:
        async with self.engine.connect() as conn:
            await conn.run_sync(self._log_in_transaction, run_id, list(lines))

    def _log_in_transaction(self, conn: Connection, run_id: str, lines: list[LogLine]) -> None:
        with conn.begin():
            self._log(conn, run_id, lines)

    def _log(self, conn: Connection, run_id: str, lines: list[LogLine]) -> None:
        """The lines in one statement (one row, or one executemany of the prepared insert)."""
        if not lines:
            return
        rows = [
            {"run_id": run_id, "key": line.key, "ts": line.ts, "level": line.level, "message": line.message}
            for line in lines
        ]
        conn.execute(self._log_lines, rows[0] if len(rows) == 1 else rows)


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


class ActionAttempt:
    """One attempt of a run's action, as an async context: entering numbers the attempt (after those a
    pause interrupted) and records its start; `perform` awaits the action, heartbeating and timed; leaving
    records the outcome, failed with its log line when the body raised an ApplicationError, else succeeded.
    Any other exception (a cancelled or lost attempt) records nothing: the attempt stays open until a later
    attempt or the run's end closes it as unknown."""

    def __init__(self, recorder: RunRecorder, run_id: str, kind: str, attempts_made: int, what: str) -> None:
        self.recorder = recorder
        self.run_id = run_id
        self.info = activity.info()
        self.number = attempts_made + self.info.attempt
        self.prefix = f"{run_id}:{kind}"
        self.what = what
        # What the body learnt, recorded with the outcome.
        self.lines: list[LogLine] = []
        self.http_status: int | None = None
        self.duration_ms = 0

    def line(self, suffix: str, message: str) -> LogLine:
        """An info line of this attempt, keyed `<run>:<kind>:<number>:<suffix>`."""
        return LogLine(f"{self.prefix}:{self.number}:{suffix}", "info", message)

    async def __aenter__(self) -> ActionAttempt:
        started = self.line("started", f"attempt {self.number} started: {self.what}")
        await heartbeating(self.recorder.attempt_started(self.run_id, self.number, started))
        return self

    async def perform(self, work: Awaitable[T]) -> T:
        """Await the action itself while heartbeating; its duration is kept, whether it answers or raises."""
        started = time.monotonic()
        try:
            return await heartbeating(work)
        finally:
            self.duration_ms = int((time.monotonic() - started) * 1000)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        if error is not None and not isinstance(error, ApplicationError):
            return
        if error is not None:
            failed = failure_line(self.prefix, self.info, error, self.number)
            self.lines.append(failed)
            # The one console line of an expected failure; the SDK's own (with a traceback) is filtered.
            logger.log(
                logging.WARNING if failed.level == "warning" else logging.ERROR,
                failed.message,
                extra={
                    "job_id": job_of_workflow(self.run_id),
                    "run_id": self.run_id,
                    "attempt": self.number,
                    "error_type": error.type,
                },
            )
        await heartbeating(
            self.recorder.attempt_finished(
                self.run_id,
                self.number,
                status=AttemptStatus.FAILED if error else AttemptStatus.SUCCEEDED,
                duration_ms=self.duration_ms,
                lines=self.lines,
                http_status=self.http_status,
                error=error.message if error else None,
            )
        )
