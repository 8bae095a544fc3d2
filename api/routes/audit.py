"""Audit routes: one job's trail for whoever may see the job, and the whole trail for admins."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import Admin, AuditServiceDep, Cursor, Limit, Reader
from core.models import AuditAction, AuditEntryPublic, CursorPage

router = APIRouter(tags=["audit"])


@router.get("/jobs/{job_id}/audit", response_model=CursorPage[AuditEntryPublic])
async def job_audit(
    job_id: str, user: Reader, trail: AuditServiceDep, cursor: Cursor = None, limit: Limit = 20
) -> CursorPage[AuditEntryPublic]:
    """Who changed the job, when and how, newest first."""
    return await trail.for_job(user, job_id, cursor, limit)


@router.get("/admin/audit", response_model=CursorPage[AuditEntryPublic])
async def admin_audit(
    admin: Admin,
    trail: AuditServiceDep,
    actor: Annotated[str | None, Query(description="the acting user's id")] = None,
    job_id: Annotated[str | None, Query(description="the job changed")] = None,
    action: AuditAction | None = None,
    cursor: Cursor = None,
    limit: Limit = 20,
) -> CursorPage[AuditEntryPublic]:
    """Every change by every user, newest first."""
    return await trail.find(actor, job_id, action, cursor, limit)
