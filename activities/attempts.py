"""What every action attempt shares: its Attempt row and log lines in the mirror, its heartbeat, its backoff.

Each action activity records its own attempt (one activity execution per attempt, no extra round trip to
the workflow) through `ActionAttempt`. Writes are keyed, so a retried write lands once: Attempt by
(run_id, number), RunLog by key.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Table, bindparam, case, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import activity
from temporalio.exceptions import ApplicationError

from core.db import Sessions
from core.models import (
    NOT_RUN,
    Attempt,
    AttemptStatus,
    Backfill,
    DeadLetter,
    Job,
    JobState,
    Run,
    RunLog,
    RunStatus,
    new_id,
    utcnow,
)
from core.payloads import (
    Action,
    AttemptRecord,
    CarriedAttempts,
    RecordLine,
    RunFinished,
    RunOutcome,
    RunRecord,
    RunResult,
    RunStarted,
    Trigger,
    job_of_workflow,
    masked_action,
    retry_delay,
)
from core.schedules import Schedule

logger = logging.getLogger("chronos.attempts")
T = TypeVar("T")

# An attempt shows its run as running only if its call lasts this long: a quick call's one write says all
# (under load a second write per run was what filled the worker's connection pool, docs/bench.md).
OPEN_AFTER = timedelta(seconds=1)
# How long an attempt waits for the mirror after its call. A database that is away fails at once (refused
# connection) and the run writes the record later; one that is busy (SQLite's writer lock) is waited for,
# up to SQLite's own busy timeout, so a loaded worker does not turn every write into a deferred one.
RECORD_WAIT = timedelta(seconds=30)
# The wait instead while this worker's last write did not land (it failed, or outlasted its wait): a
# database that hangs rather than refusing (paused, or its network dropping packets) held every run
# RECORD_WAIT (or the driver's own bound) past its call, and under the overlap policy `skip` the job's
# next fires with it. The write still goes on in the background; the first one to land ends this.
AWAY_WAIT = timedelta(seconds=0.5)

ATTEMPT: Table = Attempt.__table__  # type: ignore[attr-defined]
LOG: Table = RunLog.__table__  # type: ignore[attr-defined]
RUN: Table = Run.__table__  # type: ignore[attr-defined]

ATTEMPT_COLUMNS = {"number", "status", "started_at", "finished_at", "duration_ms", "http_status", "error"}

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


JOB: Table = Job.__table__  # type: ignore[attr-defined]
DEAD: Table = DeadLetter.__table__  # type: ignore[attr-defined]
BACKFILL: Table = Backfill.__table__  # type: ignore[attr-defined]

# The statements of every run, built once (SQLAlchemy then finds them compiled in its cache).
JOB_STATE = select(JOB.c.state, JOB.c.schedule, JOB.c.last_run_id).where(JOB.c.id == bindparam("job"))
# Written only if the row is still as read (`move_job`).
SET_JOB_STATE = (
    update(JOB)
    .where(
        JOB.c.id == bindparam("job"),
        JOB.c.state == bindparam("was"),
        JOB.c.last_run_id.is_not_distinct_from(bindparam("was_last")),
    )
    .values(state=bindparam("state"), last_run_id=bindparam("last_run_id"))
)
# How many times a job's row may change under `move_job` before the write gives up (and is retried).
MOVES = 3
# A scheduled run is a user's backfill when its fire time lies in a range they asked for before it started
# (the schedule starts both with the same input; a range is in the past when asked for).
BACKFILLED = (
    select(BACKFILL.c.id)
    .where(
        BACKFILL.c.job_id == bindparam("job"),
        BACKFILL.c.start_at <= bindparam("at"),
        BACKFILL.c.end_at >= bindparam("at"),
        BACKFILL.c.requested_at <= bindparam("started"),
    )
    .limit(1)
)
ATTEMPTS_MADE = select(func.count()).select_from(ATTEMPT).where(ATTEMPT.c.run_id == bindparam("run"))
CLOSE_OPEN_ATTEMPTS = (
    update(ATTEMPT)
    .where(ATTEMPT.c.run_id == bindparam("run"), ATTEMPT.c.status == AttemptStatus.RUNNING)
    .values(status=bindparam("status"), error=bindparam("error"), finished_at=bindparam("finished_at"))
)
RUN_AND_JOB = (
    select(
        RUN.c.job_id,
        RUN.c.owner_id,
        RUN.c.started_at,
        RUN.c.duration_ms,
        select(func.count())
        .select_from(ATTEMPT)
        .where(ATTEMPT.c.run_id == RUN.c.id)
        .scalar_subquery()
        .label("made"),
        JOB.c.state.label("job_state"),
        JOB.c.schedule,
        JOB.c.last_run_id,
        JOB.c.deleted_at,
    )
    .select_from(RUN.outerjoin(JOB, JOB.c.id == RUN.c.job_id))
    .where(RUN.c.id == bindparam("run"))
)
FINISH_RUN = (
    update(RUN)
    .where(RUN.c.id == bindparam("run"))
    .values(
        status=bindparam("status"),
        attempts=bindparam("attempts"),
        error=bindparam("error"),
        result=bindparam("result"),
        finished_at=bindparam("finished_at"),
        duration_ms=bindparam("duration_ms"),
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


def end_line(result: RunResult) -> str:
    if result.status == RunOutcome.SUCCEEDED:
        return f"run succeeded after {result.attempts} attempt(s)"
    if result.status == RunOutcome.CANCELLED:
        return "run cancelled"
    return f"run failed after {result.attempts} attempt(s): {result.error}"


@dataclass
class JobRow:
    """The columns of a job that its run rules (`Job.run_started`, `Job.run_ended`) read and write, outside
    any session: the rules stay in one place, and the mirror writes what they decide with one UPDATE. A
    plain object, as building a SQLModel `Job` for them (its every field validated) cost more CPU than the
    statements around it. The Core select reads `state` and `schedule` through their column types, so they
    come typed."""

    id: str
    state: JobState
    schedule: Schedule
    last_run_id: str | None

    def run_started(self, run_id: str) -> None:
        Job.run_started(cast(Job, self), run_id)

    def run_ended(self, status: RunOutcome, now: datetime) -> None:
        Job.run_ended(cast(Job, self), status, now)

    def state_after(self, status: RunOutcome, now: datetime) -> JobState:
        return Job.state_after(cast(Job, self), status, now)


def move_job(conn: Connection, job: JobRow, rule: Callable[[JobRow], None]) -> None:
    """Apply a run's `rule` to its job's row as read, and write the change only if the row is still so.
    The API's change to a job can commit between the two: a cancel cancels the job's runs, then commits
    while their ends are recorded here, and a state decided from the row before it (the run ended, so
    `scheduled`), written over it, made a cancelled job live again with no schedule. On PostgreSQL that
    write then matches no row (or waits for the cancel's commit, then matches none): the row is read
    again and the rule applied to it. (On SQLite the mirror reads under its write lock, so the row cannot
    change in between.)"""
    for _ in range(MOVES):
        was = (job.state, job.last_run_id)
        rule(job)
        if (job.state, job.last_run_id) == was:
            return
        values = {"job": job.id, "state": job.state, "last_run_id": job.last_run_id}
        if conn.execute(SET_JOB_STATE, {**values, "was": was[0], "was_last": was[1]}).rowcount:
            return
        row = conn.execute(JOB_STATE, {"job": job.id}).first()
        if row is None:
            return
        job = JobRow(job.id, row.state, row.schedule, row.last_run_id)
    raise RuntimeError(f"job {job.id} changed {MOVES} times while its run was recorded")  # retried


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
    """Writes runs, attempts and log lines into the mirror; every write is idempotent.

    Each write is one short transaction of Core statements built once, run in one call into the
    database's thread (`run_sync`): no ORM session, as this runs for every attempt. The job's state
    still follows the one rule in `Job.run_started` / `Job.run_ended`, applied to the columns it reads."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.engine: AsyncEngine = sessions.kw["bind"]
        self.away = False  # the last write failed or outlasted its wait, and none has landed since
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
        # An attempt with what is known of it; a row that already has its outcome keeps it (the write of
        # an attempt's start may land after the write of its end).
        attempt = self.insert(ATTEMPT).values(
            run_id=bindparam("run_id"),
            number=bindparam("number"),
            status=bindparam("status"),
            started_at=bindparam("started_at"),
            finished_at=bindparam("finished_at"),
            duration_ms=bindparam("duration_ms"),
            http_status=bindparam("http_status"),
            error=bindparam("error"),
        )
        self._attempt = attempt.on_conflict_do_update(
            index_elements=["run_id", "number"],
            set_={
                name: case((ATTEMPT.c.finished_at.is_(None), attempt.excluded[name]), else_=ATTEMPT.c[name])
                for name in ("status", "started_at", "finished_at", "duration_ms", "http_status", "error")
            },
        )
        run = self.insert(RUN).values(
            id=bindparam("id"),
            job_id=bindparam("job_id"),
            owner_id=bindparam("owner_id"),
            status=RunStatus.RUNNING,
            trigger=bindparam("trigger"),
            temporal_run_id=bindparam("temporal_run_id"),
            scheduled_at=bindparam("scheduled_at"),
            started_at=bindparam("started_at"),
            attempts=0,
            created_at=bindparam("created_at"),
        )
        # The API may have written the row already, for runs it starts itself: a finished run stays so. A
        # fire recorded as missed (reconciliation) that starts after all is running now.
        not_run = RUN.c.status.in_([status.value for status in NOT_RUN])
        self._upsert_run = run.on_conflict_do_update(
            index_elements=["id"],
            set_={
                "status": case(
                    (RUN.c.finished_at.is_(None) | not_run, RunStatus.RUNNING.value), else_=RUN.c.status
                ),
                "finished_at": case((not_run, None), else_=RUN.c.finished_at),
                "error": case((not_run, None), else_=RUN.c.error),
                "trigger": run.excluded.trigger,
                "temporal_run_id": run.excluded.temporal_run_id,
                "scheduled_at": run.excluded.scheduled_at,
                "started_at": run.excluded.started_at,
            },
        ).returning(RUN.c.finished_at)
        self._log_lines = self.insert(LOG).on_conflict_do_nothing(index_elements=["key"])
        self._dead_letter = self.insert(DEAD).on_conflict_do_nothing(index_elements=["run_id"])

    async def record(self, record: RunRecord) -> None:
        """A run's start, attempts and end, as far as the record has them, in one transaction."""
        try:
            async with self.engine.connect() as conn:
                await conn.run_sync(self._record, record)
        except Exception:
            self.away = True
            raise
        self.away = False

    @property
    def record_wait(self) -> float:
        """How long an attempt waits for its record to land: briefly while the database seems away."""
        return (AWAY_WAIT if self.away else RECORD_WAIT).total_seconds()

    def _record(self, conn: Connection, record: RunRecord) -> None:
        """A record that also ends the run (a quick call's one write) leaves the job's state and the
        attempts' count to the run's end, which writes both once, and its log lines go in one statement."""
        run_id = record.run_id()
        ends = record.finished is not None
        lines: list[LogLine] = []
        with conn.begin():
            started = record.started is not None and self.start_run(conn, record.started, job=not ends)
            for attempt in sorted(record.attempts, key=lambda a: a.number):
                self._write_attempt(conn, run_id, attempt, count=not ends)
                lines += [LogLine(line.key, line.level, line.message, line.ts) for line in attempt.lines]
            if record.finished is not None:
                lines.append(self.finish_run(conn, record.finished, started=started))
            self._log(conn, run_id, lines)

    def _write_attempt(self, conn: Connection, run_id: str, attempt: AttemptRecord, count: bool) -> None:
        conn.execute(
            self._attempt,
            {"run_id": run_id, **attempt.model_dump(include=ATTEMPT_COLUMNS)},
        )
        if count:  # else the run's end, in the same transaction, writes the count
            conn.execute(COUNT_ATTEMPT, {"run": run_id, "number": attempt.number})
        if attempt.number > 1:
            conn.execute(LOSE_EARLIER_ATTEMPTS, {"run": run_id, "below": attempt.number})

    def start_run(self, conn: Connection, event: RunStarted, job: bool = True) -> bool:
        """The run's row says running (unless it already ended) and its job names it as its last run; a
        scheduled fire inside a backfill range the user asked for is recorded as a backfill. True when the
        run had not ended; `job` False leaves the job's row to `finish_run(started=True)` in the same
        transaction."""
        trigger = event.trigger
        if (
            trigger == Trigger.SCHEDULE
            and conn.execute(
                BACKFILLED, {"job": event.job_id, "at": event.scheduled_at, "started": event.started_at}
            ).first()
        ):
            trigger = Trigger.BACKFILL
        params = {
            "id": event.run_id,
            "job_id": event.job_id,
            "owner_id": event.owner_id,
            "trigger": trigger,
            "temporal_run_id": event.temporal_run_id,
            "scheduled_at": event.scheduled_at,
            "started_at": event.started_at,
            "created_at": utcnow(),
        }
        finished_at = conn.execute(self._upsert_run, params).scalar_one()
        if finished_at is not None:
            return False
        if not job:
            return True
        row = conn.execute(JOB_STATE, {"job": event.job_id}).first()
        if row is not None:
            job_row = JobRow(event.job_id, row.state, row.schedule, row.last_run_id)
            move_job(conn, job_row, lambda job: job.run_started(event.run_id))
        return True

    def finish_run(self, conn: Connection, event: RunFinished, started: bool = False) -> LogLine:
        """Close the run, its attempts left open, and for a failed run write its dead letter (once); the
        run's end line is returned for the caller to write. `started`: the run's start, in the same
        transaction, left the job's row to this (its state follows both rules, written once)."""
        result = event.result
        open_status, open_error = (
            (AttemptStatus.CANCELLED, "run cancelled")
            if result.status == RunOutcome.CANCELLED
            else (AttemptStatus.UNKNOWN, "outcome unknown: no result from the worker")
        )
        # A write first, so that on SQLite what follows reads under the write lock.
        conn.execute(
            CLOSE_OPEN_ATTEMPTS,
            {
                "run": event.run_id,
                "status": open_status,
                "error": open_error,
                "finished_at": event.finished_at,
            },
        )
        run = conn.execute(RUN_AND_JOB, {"run": event.run_id}).first()
        if run is None:
            raise RuntimeError(f"run {event.run_id} has no started record yet")  # retried by Temporal
        attempts = max(result.attempts, int(run.made or 0))
        values: dict[str, Any] = {
            "run": event.run_id,
            "status": result.status,
            "attempts": attempts,
            "error": result.error,
            # Runs of the other actions keep the result's JSON as before: no `output` key.
            "result": result.model_dump(
                mode="json", exclude={"error", *(["output"] if result.output is None else [])}
            ),
            "finished_at": event.finished_at,
            "duration_ms": run.duration_ms,
        }
        if run.started_at is not None:
            # Never negative: the start is the workflow's clock, the end the worker's (a time-skipping test
            # server's clock runs ahead; a negative value also overflows PostgreSQL's integer column).
            values["duration_ms"] = max(0, int((event.finished_at - run.started_at).total_seconds() * 1000))
        conn.execute(FINISH_RUN, values)
        if run.job_state is not None:

            def ended(job: JobRow) -> None:
                if started:
                    job.run_started(event.run_id)
                # A newer run of the job speaks for it now, unless this is its last run.
                if job.last_run_id == event.run_id:
                    job.run_ended(result.status, event.finished_at)

            move_job(conn, JobRow(run.job_id, run.job_state, run.schedule, run.last_run_id), ended)
        level = {RunOutcome.SUCCEEDED: "info", RunOutcome.FAILED: "error"}.get(result.status, "warning")
        line = LogLine(f"{event.run_id}:run:finished", level, end_line(result), event.finished_at)
        if result.status == RunOutcome.FAILED and run.deleted_at is None:  # a deleted job's go with it
            request = masked_action(event.action) if event.action is not None else None
            conn.execute(
                self._dead_letter,
                {
                    "id": new_id(),
                    "job_id": run.job_id,
                    "run_id": event.run_id,
                    "owner_id": run.owner_id,
                    "error": result.error,
                    "attempts": attempts,
                    "request": request,
                    "created_at": utcnow(),
                },
            )
        return line

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
    attempt or the run's end closes it as unknown.

    An attempt given its run's start (`started`, runs since the workflow's RUN_RECORDS patch) never waits
    for the mirror before its call: it writes the run's start and its own beside the call (only if the call
    lasts OPEN_AFTER), then after the call one transaction with its outcome and, for the run's last attempt,
    the run's end. When that write does not land within RECORD_WAIT (the database is away; AWAY_WAIT after
    a write that did not land), the record is
    handed on with its true times: in `unrecorded` to the workflow, which writes it durably, and for an
    attempt that Temporal retries in its heartbeat details, which the next attempt writes with its own."""

    def __init__(
        self,
        recorder: RunRecorder,
        run_id: str,
        kind: str,
        attempts_made: int,
        what: str,
        started: RunStarted | None = None,
        action: Action | None = None,
        carried: list[AttemptRecord] | None = None,
    ) -> None:
        self.recorder = recorder
        self.run_id = run_id
        self.info = activity.info()
        self.number = attempts_made + self.info.attempt
        self.prefix = f"{run_id}:{kind}"
        self.what = what
        self.started = started
        self.action = action
        # What the body learnt, recorded with the outcome.
        self.lines: list[LogLine] = []
        self.http_status: int | None = None
        self.duration_ms = 0
        # What this attempt could not write (the run writes it later); None when it wrote all it knew.
        self.unrecorded: RunRecord | None = None
        self._began = utcnow()
        self._opening: asyncio.Task[None] | None = None
        self._writing_open = False
        self._carried = [*(carried or ()), *carried_attempts(self.info)] if started is not None else []

    def line(self, suffix: str, message: str) -> LogLine:
        """An info line of this attempt, keyed `<run>:<kind>:<number>:<suffix>`."""
        return LogLine(f"{self.prefix}:{self.number}:{suffix}", "info", message)

    async def __aenter__(self) -> ActionAttempt:
        started = self.line("started", f"attempt {self.number} started: {self.what}")
        if self.started is None:
            await heartbeating(self.recorder.attempt_started(self.run_id, self.number, started))
            return self
        self.lines.append(started)
        opening = self._record(AttemptStatus.RUNNING, None)
        self._opening = asyncio.create_task(self._open_later(opening))
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
        if self.started is None:
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
            return
        await self._settle(error)

    async def _settle(self, error: ApplicationError | None) -> None:
        """Write the outcome (and the run's end after its last attempt) without holding the run up."""
        if self._opening is not None and not self._writing_open:
            # Still waiting out OPEN_AFTER: the outcome's write says it all. A write under way is never
            # cancelled: cut mid-transaction, it could leave SQLite's write lock held.
            self._opening.cancel()
        retry = None if error is None else next_retry(self.info, error)
        final = retry is None
        record = self._record(AttemptStatus.FAILED if error else AttemptStatus.SUCCEEDED, error, final)
        try:
            # Shielded: a write past the wait goes on (and lands, or not) rather than being cut mid-way.
            write = asyncio.shield(self.recorder.record(record))
            await heartbeating(asyncio.wait_for(write, self.recorder.record_wait))
        except Exception as exc:  # the call was made: no failure to write it may have it made again
            self.recorder.away = True
            logger.warning(
                "attempt %s of %s not recorded yet (%s): its run records it when the database is back",
                self.number,
                self.run_id,
                exc.__class__.__name__,
                extra={"job_id": job_of_workflow(self.run_id), "run_id": self.run_id},
                # The database being away is expected; anything else is a bug to see.
                exc_info=not isinstance(exc, SQLAlchemyError | OSError | TimeoutError),
            )
            self.unrecorded = record
            if not final and not self.info.is_local:  # the next attempt writes this record with its own
                activity.heartbeat(CarriedAttempts(attempts=record.attempts).model_dump(mode="json"))
        if error is not None:
            details = error.details[0] if error.details else {}
            unrecorded = self.unrecorded.model_dump(mode="json") if self.unrecorded else None
            details = {**details, "recorded": self.unrecorded is None, "unrecorded": unrecorded}
            # A local first attempt is not retried where it ran: the run sleeps out `retry_in` and goes on
            # with activities, handing them what this one could not write.
            if retry is not None and self.info.is_local:
                details["retry_in"] = retry.total_seconds()
            handed_on = "retry_in" in details
            raise ApplicationError(
                error.message,
                details,
                type=error.type,
                non_retryable=error.non_retryable or handed_on,
                next_retry_delay=error.next_retry_delay,
            ) from None

    def _record(self, status: str, error: ApplicationError | None, final: bool = False) -> RunRecord:
        """This attempt (and those earlier attempts handed on to it) as the mirror keeps them."""
        assert self.started is not None
        now = utcnow()
        ended = status != AttemptStatus.RUNNING
        attempt = AttemptRecord(
            number=self.number,
            started_at=self._began,
            status=status,
            finished_at=now if ended else None,
            duration_ms=self.duration_ms if ended else None,
            http_status=self.http_status,
            error=error.message if error else None,
            lines=[RecordLine(key=x.key, level=x.level, message=x.message, ts=x.ts) for x in self.lines],
        )
        finished = None
        if final:
            result = RunResult(
                status=RunOutcome.FAILED if error else RunOutcome.SUCCEEDED,
                attempts=self.number,
                http_status=self.http_status,
                error=str(error) if error else None,  # as the workflow reads the error: with its type
            )
            finished = RunFinished(run_id=self.run_id, finished_at=now, result=result, action=self.action)
        return RunRecord(started=self.started, attempts=[*self._carried, attempt], finished=finished)

    async def _open_later(self, record: RunRecord) -> None:
        """The run and this attempt shown as running, for a call that lasts; a failure here only logs."""
        await asyncio.sleep(OPEN_AFTER.total_seconds())
        self._writing_open = True
        try:
            await self.recorder.record(record)
        except Exception as exc:  # the outcome's write, after the call, says it all
            logger.info("attempt %s of %s: start not recorded (%r)", self.number, self.run_id, exc)


def carried_attempts(info: activity.Info) -> list[AttemptRecord]:
    """Earlier attempts of this activity that could not write themselves (their heartbeat details)."""
    carried: list[AttemptRecord] = []
    for details in info.heartbeat_details:
        if isinstance(details, dict) and "attempts" in details:
            carried.extend(CarriedAttempts.model_validate(details).attempts)
    return carried
