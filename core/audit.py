"""The audit trail: who changed which job (or user), when and how, recorded in the change's own transaction.

Services call `record` before they commit a change, so the entry commits or rolls back with it. Values
are stored as answers show them: the action through `masked_action` and notify through `masked_notify`, the
one masking rule of core/payloads.py, so the trail never holds a secret in clear.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic_core import to_jsonable_python
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession
from sqlmodel.sql.expression import SelectOfScalar

from core.auth import Principal
from core.db import Sessions, keyset
from core.errors import NotFound
from core.links import fields_of
from core.models import (
    Actor,
    AuditAction,
    AuditEntry,
    AuditEntryPublic,
    CursorPage,
    Job,
    JobCreate,
)
from core.payloads import EmailAction, HttpAction, NotifySpec, WorkflowAction, masked_action, masked_notify
from core.runs import job_owner, sees_history_of

# A job's fields whose changes the trail shows: its definition and its state (not run bookkeeping).
JOB_FIELDS = (*JobCreate.model_fields, "state", "pause_note", "version", "deleted_at")


def entry(
    actor: Principal,
    action: AuditAction,
    *,
    job_id: str | None = None,
    target_user_id: str | None = None,
    changes: Mapping[str, Any] | None = None,
) -> AuditEntry:
    """One entry, for the caller to add to the session that commits the change it records (or to write
    with the create's rows, `core.db.insert_rows`). Job and dead-letter actions name `job_id`; user-admin
    actions (`user.update`) name `target_user_id` and pass `changed(...)`."""
    return AuditEntry(
        actor_id=actor.id,
        actor_email=actor.email,
        action=action,
        job_id=job_id,
        target_user_id=target_user_id,
        changes=to_jsonable_python(changes or {}),
    )


def snapshot(job: Job) -> dict[str, Any]:
    """The job's audited fields as they are now, unmasked: `changed` compares them before masking, so a
    new secret shows as a change even when both masks look alike."""
    return {field: getattr(job, field) for field in JOB_FIELDS}


def changed(before: Mapping[str, Any], after: Mapping[str, Any]) -> dict[str, Any]:
    """`{field: {"before", "after"}}` for each field whose value differs, shown as answers show them."""
    return {
        field: {"before": shown(before.get(field)), "after": shown(value)}
        for field, value in after.items()
        if before.get(field) != value
    }


def definition(job: Job) -> dict[str, Any]:
    """What `job.create` records: the definition as submitted, defaults filled in."""
    return {field: shown(getattr(job, field)) for field in JobCreate.model_fields}


def shown(value: Any) -> Any:
    """A value as JSON, with an action's and a notify webhook's secrets masked."""
    if isinstance(value, HttpAction | EmailAction | WorkflowAction):
        return masked_action(value)
    if isinstance(value, NotifySpec):
        return masked_notify(value)
    return to_jsonable_python(value)


ENTRY_FIELDS = tuple(name for name in AuditEntryPublic.model_fields if name in AuditEntry.model_fields)


class AuditService:
    """Reading the trail: one job's entries for whoever may see the job, everything for admins."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions

    async def for_job(
        self, user: Principal, job_id: str, cursor: str | None, limit: int
    ) -> CursorPage[AuditEntryPublic]:
        """As with runs, admins also read the trail of deleted jobs; owners only of live ones."""
        async with self.sessions() as session:
            if not sees_history_of(user, await job_owner(session, job_id)):
                raise NotFound(f"job {job_id} not found")
            query = select(AuditEntry).where(AuditEntry.job_id == job_id)
            return await self._page(session, query, cursor, limit)

    async def find(
        self,
        actor: str | None,
        job_id: str | None,
        action: AuditAction | None,
        cursor: str | None,
        limit: int,
    ) -> CursorPage[AuditEntryPublic]:
        """Every entry (the route lets admins only), filtered by actor id, job and action."""
        async with self.sessions() as session:
            query = select(AuditEntry)
            if actor is not None:
                query = query.where(AuditEntry.actor_id == actor)
            if job_id is not None:
                query = query.where(AuditEntry.job_id == job_id)
            if action is not None:
                query = query.where(AuditEntry.action == action)
            return await self._page(session, query, cursor, limit)

    async def _page(
        self, session: AsyncSession, query: SelectOfScalar[AuditEntry], cursor: str | None, limit: int
    ) -> CursorPage[AuditEntryPublic]:
        page = await keyset(session, query, col(AuditEntry.at), col(AuditEntry.id), cursor, limit)
        return CursorPage(
            items=[
                AuditEntryPublic.model_validate(
                    {
                        **fields_of(entry, ENTRY_FIELDS),
                        "actor": Actor(id=entry.actor_id, email=entry.actor_email),
                    }
                )
                for entry in page.items
            ],
            next_cursor=page.next_cursor,
        )
