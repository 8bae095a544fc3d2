"""The dead-letter family: runs that failed for good, kept with the request they made (secrets masked)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Index
from sqlmodel import Field, SQLModel

from core.models._common import OutsideText, UTCDateTime, created, new_id


class DeadLetterBase(SQLModel):
    id: str = Field(primary_key=True)
    job_id: str = Field(foreign_key="job.id", index=True)
    run_id: str = Field(foreign_key="run.id", unique=True)
    error: str | None
    attempts: int
    request: dict[str, Any] | None = Field(sa_type=JSON)
    created_at: datetime = Field(sa_type=UTCDateTime, nullable=False)


class DeadLetter(DeadLetterBase, table=True):
    # A user's dead letters newest first (keyset on created_at, id); everyone's for admins.
    __table_args__ = (
        Index("ix_deadletter_owner_created", "owner_id", "created_at", "id"),
        Index("ix_deadletter_created", "created_at", "id"),
    )

    id: str = Field(default_factory=new_id, primary_key=True)
    owner_id: str
    error: str | None = Field(default=None, sa_type=OutsideText)
    attempts: int = 0
    request: dict[str, Any] | None = Field(default=None, sa_type=JSON)
    created_at: datetime = created()


class DeadLetterPublic(DeadLetterBase):
    pass
