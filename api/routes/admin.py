"""Admin routes: the accounts, their roles, whether they may log in, and their quotas."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import Admin, Cursor, Limit, PageNo, UserServiceDep
from core.models import Page, UserAccount, UserPatch

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/users", response_model=Page[UserAccount])
async def list_users(
    admin: Admin,
    users: UserServiceDep,
    q: Annotated[str | None, Query(max_length=320, description="part of the email")] = None,
    limit: Limit = 20,
    cursor: Cursor = None,
    page: PageNo = None,
) -> Page[UserAccount]:
    """Every account, newest first, with its quotas and the limits in force."""
    return await users.find(q, limit, cursor, page)


@router.patch(
    "/users/{user_id}",
    response_model=UserAccount,
    responses={409: {"description": "An admin tried to disable or demote themself"}},
)
async def update_user(user_id: str, body: UserPatch, admin: Admin, users: UserServiceDep) -> UserAccount:
    """Change a user's role, disable or enable them, set or clear (null) their quota overrides.

    Disabling refuses their tokens and logins at once and pauses their live jobs with the note "paused:
    the account was disabled by an admin". Enabling lets them log in again; it resumes no job."""
    return await users.update(admin, user_id, body)
