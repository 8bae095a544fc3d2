"""Job service: the rules behind every job route; core/job_schedules.py says what they decide to Temporal.

No transaction stays open across a call to Temporal (on SQLite it would hold the one write lock that
every other request and worker waits on). A timed job's schedule (`job-<id>`) is created first and its
row committed after, so a Temporal failure leaves nothing behind (an orphan schedule from a failed
commit is removed by reconciliation); a run the API starts is committed first and the workflow started
after, and a failed start removes the row again.

Each change commits with its audit entry (core/audit.py) and, for patch, pause, resume and cancel, +1 on
the job's version. A PATCH takes its version first, in one statement with the If-Match check, and holds
it across the Temporal call (a row lock on PostgreSQL; on SQLite the write lock, for at most the
gateway's timeout): so two PATCHes from one version give one 200 and one 412, and concurrent PATCHes
reach Temporal in the order they commit.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

from sqlalchemy import ColumnElement, delete, func, update
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import SQLModel, col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar
from temporalio.client import Client, ScheduleAlreadyRunningError
from temporalio.exceptions import WorkflowAlreadyStartedError

from core import audit
from core.auth import Principal
from core.config import Settings
from core.cron import FIRST_YEAR
from core.db import RowIndex, Sessions, insert_rows, keyset, lock_for_change, paginate, writing
from core.errors import (
    ChronosError,
    Conflict,
    Invalid,
    NotFound,
    PreconditionFailed,
    QuotaExceeded,
    Unavailable,
)
from core.job_schedules import (
    backfill_fires,
    backfill_overdue,
    cancel_runs,
    create_schedule,
    described_next_runs,
    drop_schedule,
    fire_started,
    fixed_delay_next,
    jittered,
    run_workflow_id,
    set_paused,
    start_run_workflow,
    upcoming_local,
    update_schedule,
)
from core.limits import Limits
from core.links import Links
from core.misfire import SCHEDULE_SETTLE, judge
from core.missed import fires_with_runs, record_not_run
from core.models import (
    ACTIVE_RUNS,
    AuditAction,
    AuditEntry,
    Backfill,
    BackfillCount,
    BackfillRequest,
    DeadLetter,
    IdempotencyKey,
    Job,
    JobCreate,
    JobFilter,
    JobLabel,
    JobPublic,
    JobState,
    JobUpdate,
    Limit,
    OverlapPolicy,
    Page,
    Preview,
    PreviewRequest,
    Run,
    RunPublic,
    RunStatus,
    User,
    new_id,
    utcnow,
)
from core.payloads import Action, HttpAction, NotifySpec, RunOutcome, Trigger, WorkflowAction, unmasked
from core.runs import last_scheduled_runs
from core.schedules import (
    ImmediateSchedule,
    IntervalSchedule,
    OnceSchedule,
    calendar_notes,
    check_submitted,
    fire_times,
    fixed_delay_due,
    is_fixed_delay,
    schedule_warnings,
    skipped_days,
)
from core.targets import check_url
from core.temporal import TemporalGateway

# Fields a PATCH may set to null: a description, and a misfire rule (back to Temporal's catch-up window).
NULLABLE = ("description", "misfire")
# fire_times counts fires after an instant: just before `start`, so a fire at `start` counts.
EPSILON = timedelta(microseconds=1)
# Idempotency keys are honoured for at least this long (API.md asks for 24 hours).
IDEMPOTENCY_TTL = timedelta(hours=48)


# A bulk pause or resume reads the jobs it changes this many at a time.
BULK_BATCH = 100
# What a job's answer says of its next runs when Temporal's schedule could not be read.
COMPUTED_NOTE = "Temporal did not answer: next_runs are computed by Chronos from the schedule's rules"
JITTER_LEFT_OUT = ", without the jitter Temporal adds"


def body_hash(body: JobCreate) -> str:
    return hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def matching(match: JobFilter) -> list[ColumnElement[bool]]:
    """A filter's conditions on jobs; each label is an index lookup in `job_label`."""
    conditions: list[ColumnElement[bool]] = []
    if match.state is not None:
        conditions.append(col(Job.state) == match.state)
    if match.type is not None:
        conditions.append(col(Job.schedule_type) == match.type)
    if match.q:
        conditions.append(func.lower(Job.name).contains(match.q.lower(), autoescape=True))
    conditions += [col(Job.id).in_(_labelled(key, value)) for key, value in match.labels.items()]
    return conditions


def _labelled(key: str, value: str) -> SelectOfScalar[str]:
    """The ids of the live jobs with this label: an index lookup in `job_label`."""
    return select(JobLabel.job_id).where(col(JobLabel.key) == key, col(JobLabel.value) == value)


def _label_index(user: Principal, match: JobFilter) -> RowIndex | None:
    """A filter of labels only: its jobs as the `job_label` rows of its first label, one per live job, so
    a page counts, skips or seeks in a range of one index instead of joining all the user's live jobs
    with the label's rows (2 ms a count on PostgreSQL, for 1,000 of a user's 10,000 jobs)."""
    if not match.labels or match.state is not None or match.type is not None or match.q:
        return None
    (key, value), *others = match.labels.items()
    ids = _labelled(key, value).where(
        user.sees_rows(JobLabel.owner_id), *(col(JobLabel.job_id).in_(_labelled(k, v)) for k, v in others)
    )
    return RowIndex(ids, col(JobLabel.created_at), col(JobLabel.job_id))


def _own_selected(user: Principal, selector: JobFilter | Sequence[str]) -> list[ColumnElement[bool]]:
    """A bulk call's jobs: the caller's own (admins' too), named by id or matching a filter."""
    chosen = matching(selector) if isinstance(selector, JobFilter) else [col(Job.id).in_(selector)]
    return [col(Job.owner_id) == user.id, *chosen]


def _moving(where: Sequence[ColumnElement[bool]], paused: bool) -> SelectOfScalar[Job]:
    """The jobs that match and that a pause (or resume) moves: live, not cancelled, and unpaused and
    waiting or running (or paused)."""
    moves = (
        [col(Job.paused).is_(False), col(Job.state).in_([JobState.SCHEDULED, JobState.RUNNING])]
        if paused
        else [col(Job.paused).is_(True), col(Job.state) != JobState.CANCELLED]
    )
    return select(Job).where(col(Job.deleted_at).is_(None), *moves, *where)


async def _claimed(
    session: AsyncSession, job_id: str, among: SelectOfScalar[Job] | None = None
) -> Job | None:
    """The job, read after taking its change lock until the session's transaction ends (`lock_for_change`).
    Two changes sent to one job at once each read it, acted on Temporal, then committed: a pause after a
    delete found the schedule gone (a 500), and a resume that committed after a cancel left the job
    `scheduled` with no schedule. Now the second waits for the first to commit and then reads the job as
    it left it. `among`: a query the job must still match then (a bulk change's)."""
    await lock_for_change(session, f"job:{job_id}")
    query = (select(Job) if among is None else among).where(col(Job.id) == job_id)
    return (await session.exec(query.execution_options(populate_existing=True))).first()


async def _index_labels(session: AsyncSession, job: Job) -> None:
    """The job's `job_label` rows, made to hold its labels."""
    await session.exec(delete(JobLabel).where(col(JobLabel.job_id) == job.id))
    session.add_all(JobLabel.of(job))


class RowVersion(NamedTuple):
    """A job's version and state and its last run's id and status: any change to what a list row shows
    moves one of them (but the next fire, which time moves)."""

    version: int
    state: JobState
    last_run_id: str | None
    last_run_status: RunStatus | None

    @classmethod
    def of(cls, job: JobPublic) -> RowVersion:
        last = job.last_run
        return cls(job.version, job.state, last.id if last else None, last.status if last else None)


class JobService:
    def __init__(self, settings: Settings, sessions: Sessions, temporal: TemporalGateway) -> None:
        self.settings = settings
        self.sessions = sessions
        self.temporal = temporal
        self.links = Links(settings)
        self.limits = Limits(settings, sessions)

    # -- definitions -----------------------------------------------------------------------------

    async def create(self, user: Principal, body: JobCreate, idempotency_key: str | None = None) -> JobPublic:
        self._check_targets(body.action, body.notify)
        immediate = isinstance(body.schedule, ImmediateSchedule)
        check_submitted(body.schedule, self.settings)
        await self.limits.spend(user.id, Limit.JOB_WRITES, *([Limit.RUNS] if immediate else []))
        async with self.sessions() as session:
            await self._check_queue(session, user.id, body.action)
            if idempotency_key is not None:
                replay = await self._idempotent(session, user, idempotency_key, body)
                if replay is not None:
                    return await self._public(session, replay, local=True)
            job = Job.model_validate(body, update={"id": new_id(), "owner_id": user.id})
            job.state = job.waiting_state()
            if not job.immediate:
                await self.temporal.call(lambda c: self._create_schedule(c, job))
                job.fires_checked_at = utcnow() + SCHEDULE_SETTLE  # its fires begin once the schedule runs
            # CPU work, done before this process's turn to write.
            rows: list[SQLModel] = [job]
            rows += JobLabel.of(job)
            if idempotency_key is not None:
                hashed = body_hash(body)
                rows.append(
                    IdempotencyKey(owner_id=user.id, key=idempotency_key, body_hash=hashed, job_id=job.id)
                )
            changes = audit.definition(job)
            rows.append(audit.entry(user, AuditAction.JOB_CREATE, job_id=job.id, changes=changes))
            # The job is its one run: inserted already running it, with the run's row.
            run = self._new_run(job, Trigger.IMMEDIATE) if job.immediate else None
            rows += [run] if run else []
            try:
                async with writing(session):  # until the commit
                    await session.run_sync(lambda sync: insert_rows(sync.connection(), rows))
                    await self._within_quota(session, job)
                    await session.commit()
            except IntegrityError:
                replay = await self._second_with_key(session, user, idempotency_key, body, job)
                if replay is None:
                    raise
                return await self._public(session, replay, local=True)
            if run is not None:
                await self._start_workflow(job, run, partial(self._unmake, session, job.id))
            return await self._public(session, job, local=True, run=run)

    async def _second_with_key(
        self, session: AsyncSession, user: Principal, key: str | None, body: JobCreate, job: Job
    ) -> Job | None:
        """A create whose insert failed: its schedule goes again. When it came with an Idempotency-Key that
        a request sent while it was in flight committed first (a client's retry after a timeout), the
        other's job, as a replay gives it (a 409 for another body); else None. The loser of that race was
        a 500, and its schedule an orphan."""
        await self._take_back(session, job)
        return None if key is None else await self._idempotent(session, user, key, body)

    async def _idempotent(
        self, session: AsyncSession, user: Principal, key: str, body: JobCreate
    ) -> Job | None:
        """The job a used key made, if the body matches; a used key with another body is a conflict."""
        found = await session.get(IdempotencyKey, (user.id, key))
        if found is None:
            return None
        if found.created_at < utcnow() - IDEMPOTENCY_TTL:
            await session.delete(found)
            await session.commit()
            return None
        if found.body_hash != body_hash(body):
            raise Conflict(f"Idempotency-Key '{key}' was used with a different body")
        return await session.get(Job, found.job_id)

    async def find(
        self,
        user: Principal,
        match: JobFilter,
        limit: int,
        cursor: str | None = None,
        page: int | None = None,
    ) -> Page[JobPublic]:
        """The caller's live jobs (admins: everyone's) that match, newest first (`core.db.paginate`)."""
        async with self.sessions() as session:
            # Each job with its last run, in the page's one read (a count ignores the outer join).
            query = (
                select(Job, Run)
                .outerjoin(Run, col(Run.id) == col(Job.last_run_id))
                .where(col(Job.deleted_at).is_(None), user.sees_rows(Job.owner_id), *matching(match))
            )
            at, id_ = col(Job.created_at), col(Job.id)
            rows = await paginate(session, query, at, id_, limit, cursor, page, _label_index(user, match))
            jobs = [job for job, _ in rows.items]
            scheduled = await last_scheduled_runs(session, jobs)
        # Fire times and answer models are CPU work: in a thread, so the event loop (and /health) is never
        # held for a whole page (the loaded rows need no session any more).
        items = await asyncio.to_thread(self._page_items, rows.items, scheduled)
        return rows.with_items(items)

    async def listed(self, user: Principal, job_ids: Sequence[str]) -> list[JobPublic]:
        """These of the caller's live jobs, as `find` shows them (a live list's changed rows)."""
        async with self.sessions() as session:
            query = (
                select(Job, Run)
                .outerjoin(Run, col(Run.id) == col(Job.last_run_id))
                .where(col(Job.id).in_(job_ids), col(Job.deleted_at).is_(None), user.sees_rows(Job.owner_id))
            )
            rows = list(await session.exec(query))
            scheduled = await last_scheduled_runs(session, [job for job, _ in rows])
        return await asyncio.to_thread(self._page_items, rows, scheduled)

    async def row_versions(self, user: Principal, job_ids: Sequence[str]) -> dict[str, RowVersion]:
        """What a listed job's row shows that runs and changes move, for these of the caller's live jobs,
        in one read: a live list compares it to tell which rows changed."""
        query = (
            sa_select(col(Job.id), col(Job.version), col(Job.state), col(Run.id), col(Run.status))
            .outerjoin(Run, col(Run.id) == col(Job.last_run_id))
            .where(col(Job.id).in_(job_ids), col(Job.deleted_at).is_(None), user.sees_rows(Job.owner_id))
        )
        async with self.sessions() as session:
            rows = await (await session.connection()).execute(query)
            return {
                job_id: RowVersion(version, state, run_id, status)
                for job_id, version, state, run_id, status in rows
            }

    def _page_items(
        self, rows: Sequence[tuple[Job, Run | None]], scheduled: dict[str, Run]
    ) -> list[JobPublic]:
        now = datetime.now(UTC)
        items = []
        for job, last in rows:
            if is_fixed_delay(job.schedule):
                upcoming, note = fixed_delay_next(job, scheduled.get(job.id), now)
                items.append(self.links.job_public(job, upcoming, last, note))
            else:
                items.append(self.links.job_public(job, upcoming_local(job, now), last))
        return items

    async def get(self, user: Principal, job_id: str) -> JobPublic:
        async with self.sessions() as session:
            return await self._public(session, await self._owned(session, user, job_id))

    async def update(
        self,
        user: Principal,
        job_id: str,
        body: JobUpdate,
        expected: frozenset[int] | None = None,
        *,
        keep_masked: bool = False,
    ) -> JobPublic:
        """`expected`: the versions If-Match accepts (None: no If-Match, the last write wins).
        `keep_masked` (the dashboard's edit form, which shows the action and notify as answers mask them): a
        secret sent back as its mask keeps the stored value (`payloads.unmasked`)."""
        changes = body.model_dump(exclude_unset=True)
        check_submitted(body.schedule, self.settings)
        await self.limits.spend(user.id, Limit.JOB_WRITES)
        async with self.sessions() as session:
            job = await self._owned(session, user, job_id, change=True)
            if job.state == JobState.CANCELLED:
                raise Conflict("a cancelled job cannot be changed; create a new one")
            new_schedule = body.schedule if "schedule" in changes else None
            if new_schedule is not None and isinstance(new_schedule, ImmediateSchedule) != job.immediate:
                raise Invalid(
                    "schedule.type cannot change between immediate and a timed schedule; create a new job",
                    ("body", "schedule", "type"),
                )
            if keep_masked:
                kept: dict[str, Any] = {}
                if body.action is not None:
                    kept["action"] = unmasked(body.action, job.action)
                if body.notify is not None:
                    kept["notify"] = unmasked(body.notify, job.notify)
                body = body.model_copy(update=kept)
            if body.action is not None or body.notify is not None:
                self._check_targets(body.action, body.notify)
                await self._check_queue(session, job.owner_id, body.action)
            before = audit.snapshot(job)
            was_fixed_delay = is_fixed_delay(job.schedule)
            scheduled = await last_scheduled_runs(session, [job])  # a restarted loop counts from it
            for field in changes:
                value = getattr(body, field)
                if value is None and field not in NULLABLE:
                    raise Invalid(f"{field} cannot be null", ("body", field))
                setattr(job, field, value)
            if not audit.changed(before, audit.snapshot(job)):
                # Nothing changes (an empty PATCH, a form saved as it was): no new version, no entry in
                # the trail, no rewrite of the schedule; a stale If-Match is still a 412.
                if expected is not None and job.version not in expected:
                    await self._next_version(session, job, expected)
                return await self._public(session, job)
            await self._next_version(session, job, expected)
            job.updated_at = utcnow()
            if new_schedule is not None:  # fires of the old schedule are not judged by the new one
                job.fires_checked_at = utcnow() + SCHEDULE_SETTLE
            if job.state == JobState.COMPLETED and new_schedule is not None:
                job.state = job.waiting_state()
            session.add(job)
            if "labels" in changes:
                await _index_labels(session, job)
            if not job.immediate:
                await self.temporal.call(
                    lambda c: update_schedule(c, self.settings, job, was_fixed_delay, scheduled.get(job.id))
                )
                if new_schedule is not None:
                    await self.temporal.call(lambda c: backfill_overdue(c, job))
            self._audit(session, user, AuditAction.JOB_UPDATE, job, before)
            await session.commit()
            return await self._public(session, job)

    async def delete(self, user: Principal, job_id: str) -> None:
        await self.limits.spend(user.id, Limit.JOB_WRITES)
        async with self.sessions() as session:
            job = await self._owned(session, user, job_id, change=True)
            before = audit.snapshot(job)
            await self.temporal.call(lambda c: drop_schedule(c, job))
            job.deleted_at = utcnow()
            session.add(job)
            await session.exec(delete(JobLabel).where(col(JobLabel.job_id) == job.id))  # they index live jobs
            # Its dead letters go with it: a deleted job cannot be replayed (nor can a later failure of a run
            # in flight leave one: the mirror writes none for a deleted job).
            await session.exec(delete(DeadLetter).where(col(DeadLetter.job_id) == job.id))
            self._audit(session, user, AuditAction.JOB_DELETE, job, before)
            await session.commit()

    # -- control ---------------------------------------------------------------------------------

    async def pause(self, user: Principal, job_id: str, note: str | None) -> JobPublic:
        await self.limits.spend(user.id, Limit.JOB_WRITES)
        async with self.sessions() as session:
            job = await self._owned(session, user, job_id, change=True)
            await self._pause(session, job, note, user)
            return await self._public(session, job)

    async def pause_all_of(self, owner_id: str, note: str, actor: Principal) -> int:
        """Pause every live, unpaused job of one user (an admin disabled the account), each as the pause
        route does; how many were paused."""
        return await self._set_paused_where([col(Job.owner_id) == owner_id], True, note, actor)

    async def set_paused_matching(
        self, user: Principal, selector: JobFilter | Sequence[str], paused: bool, note: str | None
    ) -> int:
        """Bulk pause or resume of the caller's own jobs (admins' too: a bulk call never reaches another
        user's job) named by id or matching a filter; ids of jobs the caller does not own are ignored.
        One job write for the call; how many jobs it changed."""
        await self.limits.spend(user.id, Limit.JOB_WRITES)
        return await self._set_paused_where(_own_selected(user, selector), paused, note, user)

    async def count_paused_matching(
        self, user: Principal, selector: JobFilter | Sequence[str], paused: bool
    ) -> int:
        """How many jobs `set_paused_matching` with the same selector would change now (the dashboard
        asks "Pause N jobs?" before it does); spends no job write."""
        query = _moving(_own_selected(user, selector), paused)
        async with self.sessions() as session:
            return (await session.exec(select(func.count()).select_from(query.subquery()))).one()

    async def _set_paused_where(
        self, where: Sequence[ColumnElement[bool]], paused: bool, note: str | None, actor: Principal
    ) -> int:
        """Pause (or resume) each job that matches and that the change moves (`_moving`), each as the
        single route does, with its own version and audit entry and commit. Jobs are read a batch at a
        time; if Temporal fails part way, the error says how many were changed, and the same call again
        changes the rest."""
        query = _moving(where, paused)
        done, cursor = 0, None
        while True:
            async with self.sessions() as session:
                batch = await keyset(session, query, col(Job.created_at), col(Job.id), cursor, BULK_BATCH)
                for found in batch.items:
                    job = await _claimed(session, found.id, query)
                    if job is None:  # changed since the batch was read, by a change sent at the same time
                        await session.commit()  # its lock, which changed nothing
                        continue
                    try:
                        if paused:
                            await self._pause(session, job, note, actor)
                        else:
                            await self._resume(session, job, actor, note)
                    except ChronosError as exc:
                        exc.detail = (
                            f"{exc.detail} ({done} jobs were changed before this; send it again for the rest)"
                        )
                        raise
                    done += 1
            if batch.next_cursor is None:
                return done
            cursor = batch.next_cursor

    async def _pause(self, session: AsyncSession, job: Job, note: str | None, actor: Principal) -> None:
        """The one pause: the row says so, the schedule pauses, runs in flight get the pause signal; a new
        version and an audit entry in the same commit."""
        self._refuse_cancelled(job)
        if note is None and job.paused:  # pausing again without a word keeps the note it has
            note = job.pause_note
        await self._set_paused(session, job, actor, True, note)

    async def resume(self, user: Principal, job_id: str) -> JobPublic:
        await self.limits.spend(user.id, Limit.JOB_WRITES)
        async with self.sessions() as session:
            job = await self._owned(session, user, job_id, change=True)
            await self._resume(session, job, user)
            return await self._public(session, job)

    async def _resume(
        self, session: AsyncSession, job: Job, actor: Principal, why: str | None = None
    ) -> None:
        """The one resume: the fires of the pause judged by the job's misfire rule (`_catch_up`; a bulk
        resume skipped it, so those fires were neither made up nor recorded as missed), then the row, the
        schedule and the runs in flight (`_set_paused`)."""
        self._refuse_cancelled(job)
        await self._catch_up(session, job)
        await self._set_paused(session, job, actor, False, None, why)

    async def _set_paused(
        self,
        session: AsyncSession,
        job: Job,
        actor: Principal,
        paused: bool,
        note: str | None,
        why: str | None = None,
    ) -> None:
        """Pause (with its note) or resume: the row, the schedule and the signals to runs in flight, then a
        new version and an audit entry, one commit. `why`: a resume's note, which the audit entry keeps (a
        pause's note is the job's `pause_note`). A resumed job's state (waiting, or running its last run)
        is judged last, under the row's lock that the version's UPDATE takes: a run that ended while
        Temporal was called left it `running`, and the worker's next write follows this one."""
        before = audit.snapshot(job)
        if paused != job.paused:
            job.paused_at = utcnow() if paused else None
        job.paused, job.pause_note = paused, note
        if paused:
            job.state = JobState.PAUSED
        job.updated_at = utcnow()
        session.add(job)
        known = await self._runs_in_flight(session, job)
        await self.temporal.call(lambda c: set_paused(c, job, note, known))
        await self._next_version(session, job)
        if not paused:
            job.state = await self._resumed_state(session, job)
        action = AuditAction.JOB_PAUSE if paused else AuditAction.JOB_RESUME
        self._audit(session, actor, action, job, before, **({"note": why} if why else {}))
        await session.commit()

    async def _catch_up(self, session: AsyncSession, job: Job) -> None:
        """Before a paused job resumes: its misfire rule applied to the fires of the pause (core/misfire.py).
        Those to make up are backfilled while the schedule is still paused, so no fire runs twice; the others
        are recorded as missed. A fire between this and the unpause is left to reconciliation."""
        if job.immediate or is_fixed_delay(job.schedule) or not job.paused or job.paused_at is None:
            return  # a fixed-delay job has no fire times: its next run simply starts when due
        now = utcnow()
        # A fire just before the pause may have been dropped by it (reconciliation leaves those to resume);
        # those after the mark were not judged yet, and every fire of the pause is.
        since = job.paused_at - SCHEDULE_SETTLE
        since = min(max(since, job.fires_checked_at or since), job.paused_at)
        cap = self.settings.max_backfill_fires
        fires = fire_times(job.timed, since, cap + 1, now)
        if len(fires) > cap:  # a long pause of a frequent job: the latest fires, within the window, count
            window = job.misfire.window_seconds if job.misfire else self.settings.catchup_window_seconds
            since = max(since, now - timedelta(seconds=window))
            fires = fire_times(job.timed, since, cap, now)
        ran = await fires_with_runs(session, job.id, since, now)
        unrecorded = [f for f in fires if f not in ran]
        before = [f for f in unrecorded if f <= job.paused_at]  # ran before the pause, maybe not recorded
        for fire in before:
            if await self.temporal.call(partial(fire_started, job_id=job.id, at=fire)) is not None:
                unrecorded.remove(fire)
        verdict = judge(job.misfire, unrecorded, now, "the job was paused")
        await record_not_run(session, job, verdict.missed, RunStatus.MISSED, now)
        job.fires_checked_at = now
        if verdict.backfill:
            ranges = [(fire, fire) for fire in verdict.backfill]
            await self.temporal.call(lambda c: backfill_fires(c, job, ranges, OverlapPolicy.BUFFER_ALL))

    async def trigger(
        self, user: Principal, job_id: str, trigger: Trigger = Trigger.MANUAL, key: str | None = None
    ) -> RunPublic:
        """A run now, whatever the schedule says (`manual`), or of a dead letter's job (`replay`, `key` the
        letter's id: one run per letter). Not a change to the job's definition: its version stays."""
        await self.limits.spend(user.id, Limit.RUNS)
        async with self.sessions() as session:
            job = await self._owned(session, user, job_id, change=True)
            self._refuse_cancelled(job)
            # The run's rows are committed apart, so the job's change lock stays held until the run's
            # workflow has started: a cancel sent at the same time listed the runs in flight before this
            # one had started, and the run went on after the job was cancelled.
            session.expunge(job)
            async with self.sessions() as writes:
                run = await self.start_run(writes, job, trigger, user, key)
            return self.links.run_public(run)

    async def backfill(self, user: Principal, job_id: str, body: BackfillRequest) -> BackfillCount:
        """Run the fires of a past range through the job's Temporal schedule (its runs carry trigger
        `backfill`). The range is recorded before Temporal hears of it, so the mirror knows the runs."""
        await self.limits.spend(user.id, Limit.JOB_WRITES)
        now = utcnow()
        if body.start.astimezone(UTC).year < FIRST_YEAR:
            raise Invalid(f"start must lie in {FIRST_YEAR} or later: no fire is earlier", ("body", "start"))
        if body.end <= body.start:
            raise Invalid("end must be after start", ("body", "end"))
        if body.end > now:
            raise Invalid("end is in the future; a backfill runs past fires only", ("body", "end"))
        async with self.sessions() as session:
            job = await self._owned(session, user, job_id, change=True)
            self._refuse_cancelled(job)
            if job.immediate or is_fixed_delay(job.schedule):
                kind = "immediate" if job.immediate else "a fixed-delay job"
                raise Conflict(f"job {job.id} is {kind}: it has no fire times to backfill")
            cap = self.settings.max_backfill_fires
            fires = fire_times(job.timed, body.start - EPSILON, cap + 1, body.end)
            if len(fires) > cap:
                raise Invalid(
                    f"the range holds more than {cap} fires (CHRONOS_MAX_BACKFILL_FIRES); backfill a shorter "
                    "range",
                    ("body", "end"),
                )
            if not fires:
                return BackfillCount(count=0)
            row = Backfill(job_id=job.id, start_at=body.start, end_at=body.end, count=len(fires))
            changes = {**body.model_dump(mode="json"), "count": len(fires)}
            entry = audit.entry(user, AuditAction.JOB_BACKFILL, job_id=job.id, changes=changes)
            session.add_all([entry, row])
            await session.commit()
            try:
                await self.temporal.call(
                    lambda c: backfill_fires(c, job, [(body.start, body.end)], body.overlap_policy)
                )
            except Exception:
                await session.delete(row)
                await session.delete(entry)
                await session.commit()
                # A delete or cancel sent meanwhile took the schedule away: that is the answer, not a 500.
                self._refuse_cancelled(await self._owned(session, user, job_id, change=True))
                raise
            return BackfillCount(count=len(fires))

    async def cancel(self, user: Principal, job_id: str) -> JobPublic:
        await self.limits.spend(user.id, Limit.JOB_WRITES)
        async with self.sessions() as session:
            job = await self._owned(session, user, job_id, change=True)
            before = audit.snapshot(job)
            job.state, job.updated_at = JobState.CANCELLED, utcnow()
            session.add(job)
            await self.temporal.call(lambda c: drop_schedule(c, job))
            known = await self._runs_in_flight(session, job)
            await self.temporal.call(lambda c: cancel_runs(c, job, known))
            await self._next_version(session, job)
            self._audit(session, user, AuditAction.JOB_CANCEL, job, before)
            await session.commit()
            return await self._public(session, job)

    async def preview(self, body: PreviewRequest) -> Preview:
        """Fire times computed by a scratch Temporal schedule would cost a write; compute them locally."""
        schedule = body.schedule
        check_submitted(schedule, self.settings)
        after = body.after or datetime.now(UTC)
        if isinstance(schedule, ImmediateSchedule):
            return Preview(next_runs=[after], description="once, as soon as it is submitted", dialect=None)
        upcoming = fire_times(schedule, after, body.count)
        if isinstance(schedule, OnceSchedule):
            description = f"once at {schedule.fire_at.isoformat()}"
            return Preview(next_runs=upcoming, description=description, dialect=None)
        if isinstance(schedule, IntervalSchedule) and schedule.fixed_delay:
            # Each run counts from the previous one's end: only the first start is known in advance.
            description = (
                f"{schedule.every_seconds} s after each run ends (fixed delay){calendar_notes(schedule)}"
            )
            first = fixed_delay_due(schedule, None, after)
            return Preview(next_runs=[first] if first else [], description=description, dialect=None)
        skipped = skipped_days(schedule, after, upcoming[-1] if upcoming else None)
        if isinstance(schedule, IntervalSchedule):
            description = f"every {schedule.every_seconds} s{calendar_notes(schedule)}"
            return Preview(next_runs=upcoming, description=description, dialect=None, skipped=skipped)
        expr = schedule.expression
        description = f"{expr.describe()}, {schedule.timezone}{calendar_notes(schedule)}"
        return Preview(
            next_runs=upcoming,
            description=description,
            dialect=expr.dialect,
            warnings=schedule_warnings(schedule),
            skipped=skipped,
        )

    # -- runs ------------------------------------------------------------------------------------

    async def start_run(
        self,
        session: AsyncSession,
        job: Job,
        trigger: Trigger,
        actor: Principal | None = None,
        key: str | None = None,
    ) -> Run:
        """A run a user asks for (manual, replay), audited as `actor`'s: its row is committed first (the
        caller reads it at once, the worker finds it), then the workflow starts (`_start_workflow`); if
        Temporal refuses, the rows are put back as they were. A run whose `key` made its id already has a
        row (a dead letter replayed twice at once) is a conflict."""
        previous = (job.state, job.last_run_id)
        run = self._new_run(job, trigger, key)
        session.add_all([job, run])
        entry = None
        if actor is not None:
            changes = {"trigger": trigger, "run_id": run.id}
            entry = audit.entry(actor, AuditAction.JOB_TRIGGER, job_id=job.id, changes=changes)
            session.add(entry)
        try:
            await session.commit()
        except IntegrityError:
            raise Conflict(f"run {run.id} has been started already") from None

        async def undo() -> None:
            await session.delete(run)
            if entry:
                await session.delete(entry)
            job.state, job.last_run_id = previous
            await session.commit()

        await self._start_workflow(job, run, undo)
        return run

    @staticmethod
    def _new_run(job: Job, trigger: Trigger, key: str | None = None) -> Run:
        """A run the API starts, and its job now running it."""
        run_id = run_workflow_id(job.id, trigger, key)
        job.run_started(run_id, trigger)
        return Run(
            id=run_id,
            job_id=job.id,
            owner_id=job.owner_id,
            status=RunStatus.SCHEDULED,
            trigger=trigger,
            scheduled_at=utcnow(),
        )

    async def _start_workflow(self, job: Job, run: Run, undo: Callable[[], Awaitable[None]]) -> None:
        """Start the committed run's workflow; if Temporal refuses (or cannot be reached), `undo` takes its
        rows back before the error goes on to the caller."""
        try:
            handle = await self.temporal.call(
                lambda c: start_run_workflow(c, self.settings, job, run.id, run.trigger)
            )
        except Exception:
            await undo()
            raise
        run.temporal_run_id = handle.first_execution_run_id or handle.result_run_id

    async def _unmake(self, session: AsyncSession, job_id: str) -> None:
        """Take back every row a create wrote for a job whose run Temporal refused: nothing of it remains."""
        async with writing(session):
            for model in (Run, AuditEntry, IdempotencyKey, JobLabel):
                await session.exec(delete(model).where(col(model.job_id) == job_id))
            await session.exec(delete(Job).where(col(Job.id) == job_id))
            await session.commit()

    async def _within_quota(self, session: AsyncSession, job: Job) -> None:
        """The owner's job quota, checked at the insert under their lock (core/limits.py); a refused job's
        new schedule is removed again, after the rollback has released the lock."""
        try:
            await self.limits.hold_jobs(session, job.owner_id)
        except QuotaExceeded:
            await self._take_back(session, job)
            raise

    async def _take_back(self, session: AsyncSession, job: Job) -> None:
        """A create that does not stand: its rows rolled back (which also ends its turn to write and its
        quota lock), then the schedule made for it removed again (none for an immediate job)."""
        await session.rollback()
        await self.temporal.call(lambda c: drop_schedule(c, job, at_once=True))

    # -- Temporal --------------------------------------------------------------------------------

    async def _create_schedule(self, client: Client, job: Job) -> None:
        try:
            await create_schedule(client, self.settings, job)
        except (ScheduleAlreadyRunningError, WorkflowAlreadyStartedError) as exc:  # ids are fresh: a replay
            raise Conflict(f"job {job.id} already has a schedule") from exc

    # -- mirror ----------------------------------------------------------------------------------

    async def _owned(
        self, session: AsyncSession, user: Principal, job_id: str, *, change: bool = False
    ) -> Job:
        """The job if the caller may see it: another user's job is 404, so its existence never leaks.
        `change`: the caller is about to change it, so the job is read under its lock (`_claimed`)."""
        job = await _claimed(session, job_id) if change else await session.get(Job, job_id)
        if job is None or job.deleted_at is not None or not user.sees(job.owner_id):
            raise NotFound(f"job {job_id} not found")
        return job

    @staticmethod
    async def _runs_in_flight(session: AsyncSession, job: Job) -> list[str]:
        """The job's runs the mirror has not seen end (`job_schedules.runs_in_flight`). Read without
        flushing the change under way: its write would hold the job's row (on SQLite, the database)
        while Temporal is called, and a run in flight writes its record there."""
        query = select(Run.id).where(col(Run.job_id) == job.id, col(Run.status).in_(ACTIVE_RUNS))
        with session.no_autoflush:
            return list(await session.exec(query))

    async def _resumed_state(self, session: AsyncSession, job: Job) -> JobState:
        """What a resumed job waits for, from its last run as the database has it now."""
        await session.refresh(job, ["last_run_id"])
        last = await session.get(Run, job.last_run_id, populate_existing=True) if job.last_run_id else None
        one_shot = isinstance(job.schedule, ImmediateSchedule | OnceSchedule)
        if one_shot and last and last.status in (RunStatus.SUCCEEDED, RunStatus.FAILED):
            return job.state_after(RunOutcome(last.status), utcnow())
        return JobState.RUNNING if last is not None and last.status in ACTIVE_RUNS else JobState.SCHEDULED

    async def _public(
        self, session: AsyncSession, job: Job, *, local: bool = False, run: Run | None = None
    ) -> JobPublic:
        """One job as answers show it, its next runs read back from the Temporal schedule (a fixed-delay
        job's from its last scheduled run: they depend on when that run ends). `local` (the answer to a
        create): computed here instead, by the rules its schedule was just made from, which spares
        Temporal a second call per create (docs/bench.md); not for a jittered schedule, whose times are
        Temporal's random draw. Computed here too, with a note, when Temporal does not answer.
        `run`: the job's last run, when the caller holds it."""
        last = run or (await session.get(Run, job.last_run_id) if job.last_run_id else None)
        if is_fixed_delay(job.schedule):
            scheduled = await last_scheduled_runs(session, [job])
            upcoming, note = fixed_delay_next(job, scheduled.get(job.id), datetime.now(UTC))
            return self.links.job_public(job, upcoming, last, note)
        if local and not jittered(job):
            return self.links.job_public(job, upcoming_local(job, datetime.now(UTC)), last)
        try:
            upcoming = await self.temporal.call(lambda c: described_next_runs(c, job))
        except Unavailable:
            # A change is committed by now, and a read needs only the mirror: neither is a 503, which
            # says nothing was changed. The times come from the rules the schedule was made from.
            note = COMPUTED_NOTE + (JITTER_LEFT_OUT if jittered(job) else "")
            return self.links.job_public(job, upcoming_local(job, datetime.now(UTC)), last, note)
        return self.links.job_public(job, upcoming, last)

    async def _next_version(
        self, session: AsyncSession, job: Job, expected: frozenset[int] | None = None
    ) -> None:
        """+1 on the job's version in one statement with the If-Match check (`expected`), so of two
        changes made from one version only the first passes: a stale version is a 412."""
        query = update(Job).where(col(Job.id) == job.id)
        if expected is not None:
            query = query.where(col(Job.version).in_(expected))
        claimed = await session.exec(
            query.values(version=col(Job.version) + 1)
            .returning(col(Job.version))
            .execution_options(synchronize_session=False)
        )
        version = claimed.scalar_one_or_none()
        if version is None:
            if not expected:
                raise PreconditionFailed(f"If-Match names no version of job {job.id}; fetch it again")
            sent = " or ".join(str(v) for v in sorted(expected))
            raise PreconditionFailed(f"job {job.id} changed since version {sent}; fetch it again")
        set_committed_value(job, "version", version)

    def _audit(
        self,
        session: AsyncSession,
        user: Principal,
        action: AuditAction,
        job: Job,
        before: dict[str, Any],
        **extra: Any,
    ) -> None:
        """The change from `before` to the job as it is now, in the trail (and any `extra` said about it)."""
        changes = {**audit.changed(before, audit.snapshot(job)), **extra}
        session.add(audit.entry(user, action, job_id=job.id, changes=changes))

    def _refuse_cancelled(self, job: Job) -> None:
        if job.state == JobState.CANCELLED:
            raise Conflict(f"job {job.id} is cancelled")

    def _check_targets(self, action: Action | None, notify: NotifySpec | None) -> None:
        """Refuse private and metadata targets at submit time (the worker checks again after DNS)."""
        allow = self.settings.allow_private_targets
        if isinstance(action, HttpAction) and (reason := check_url(str(action.url), allow)):
            raise Invalid(reason, ("body", "action", "url"))
        if (
            notify is not None
            and notify.webhook_url
            and (reason := check_url(str(notify.webhook_url), allow))
        ):
            raise Invalid(reason, ("body", "notify", "webhook_url"))

    async def _check_queue(self, session: AsyncSession, owner_id: str, action: Action | None) -> None:
        """A workflow action's child may run only on a task queue an operator allowed: for everyone
        (CHRONOS_WORKFLOW_TASK_QUEUES) or for the job's owner (their `quotas.workflow_task_queues`)."""
        if not isinstance(action, WorkflowAction) or action.task_queue in self.settings.workflow_task_queues:
            return
        quotas = await session.scalar(select(col(User.quotas)).where(col(User.id) == owner_id))
        if quotas is not None and action.task_queue in (quotas.workflow_task_queues or ()):
            return
        raise Invalid(
            f"task queue '{action.task_queue}' is not allowed for workflow actions (an operator allows "
            "queues with CHRONOS_WORKFLOW_TASK_QUEUES, or for one user with quotas.workflow_task_queues)",
            ("body", "action", "task_queue"),
        )
