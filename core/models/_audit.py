"""The audit family: one entry per change a user made to a job (or an admin to a user), and its answer."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from sqlalchemy import JSON, Index
from sqlmodel import Field, SQLModel

from core.models._common import created, enum_of, new_id


class AuditAction(StrEnum):
    """What was done: `<what it was done to>.<verb>`. Values are stored as text, so new ones need no
    migration."""

    JOB_CREATE = "job.create"
    JOB_UPDATE = "job.update"
    JOB_PAUSE = "job.pause"
    JOB_RESUME = "job.resume"
    JOB_TRIGGER = "job.trigger"
    JOB_BACKFILL = "job.backfill"
    JOB_CANCEL = "job.cancel"
    JOB_DELETE = "job.delete"
    DEAD_LETTER_REPLAY = "dead_letter.replay"
    DEAD_LETTER_DISCARD = "dead_letter.discard"
    USER_UPDATE = "user.update"


class Actor(BaseModel):
    """Who did it: the user's id, and the email they had then."""

    id: str
    email: str


class AuditEntryBase(SQLModel):
    at: datetime
    action: AuditAction
    job_id: str | None = Field(default=None, description="The job it changed (job and dead-letter actions)")
    target_user_id: str | None = Field(default=None, description="The user it changed (user actions)")
    changes: dict[str, Any] = Field(
        default_factory=dict,
        description="`{field: {before, after}}` for what changed, the definition for `job.create`, the "
        "runs and dead letters for triggers and dead-letter actions; secrets masked as in job answers",
    )


class AuditEntry(AuditEntryBase, table=True):
    """No foreign keys: the trail outlives what it records and never holds up a change."""

    # Newest first: everything (admins), one job's entries, one actor's entries.
    __table_args__ = (
        Index("ix_auditentry_at", "at", "id"),
        Index("ix_auditentry_job_at", "job_id", "at", "id"),
        Index("ix_auditentry_actor_at", "actor_id", "at", "id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True)
    at: datetime = created()
    actor_id: str
    actor_email: str = Field(max_length=320)
    action: AuditAction = enum_of(AuditAction, length=32)
    changes: dict[str, Any] = Field(default_factory=dict, sa_type=JSON, nullable=False)


class AuditEntryPublic(AuditEntryBase):
    id: str
    actor: Actor
