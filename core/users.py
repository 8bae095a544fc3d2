"""User administration: the one service behind the admin routes, so every admin action on an account
(role, disable, quotas) passes through here."""

from __future__ import annotations

from typing import Any

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from core import audit
from core.auth import Principal, end_sessions
from core.config import Settings
from core.db import Sessions, lock_for_change, paginate
from core.errors import Conflict, Forbidden, Invalid, NotFound
from core.jobs import JobService
from core.limits import limits_of
from core.models import AuditAction, Page, Quotas, Role, User, UserAccount, UserPatch, utcnow

DISABLED_NOTE = "paused: the account was disabled by an admin"


class UserService:
    def __init__(self, settings: Settings, sessions: Sessions, jobs: JobService) -> None:
        self.settings = settings
        self.sessions = sessions
        self.jobs = jobs

    async def find(
        self, q: str | None, limit: int, cursor: str | None = None, page: int | None = None
    ) -> Page[UserAccount]:
        """Every account, newest first; `q` is part of the email."""
        async with self.sessions() as session:
            query = select(User)
            if q:
                query = query.where(col(User.email).contains(q.strip().lower()))
            users = await paginate(session, query, col(User.created_at), col(User.id), limit, cursor, page)
            return users.with_items([self.account(user) for user in users.items])

    async def update(self, admin: Principal, user_id: str, body: UserPatch) -> UserAccount:
        """Change role, disabled and quotas as sent. Disabling ends the user's sessions at once, then
        pauses their live jobs (after the commit, so the user can no longer resume one meanwhile); if
        Temporal fails part way, sending `disabled: true` again pauses the rest. Enabling resumes nothing."""
        sent = body.model_fields_set
        for field in ("role", "disabled"):
            if field in sent and getattr(body, field) is None:
                raise Invalid(f"{field} cannot be null", ("body", field))
        if user_id == admin.id and (body.disabled or body.role == Role.USER):
            raise Conflict("an admin cannot disable or demote themself; ask another admin")
        async with self.sessions() as session:
            await _lock_users(session, {admin.id, user_id})
            acting = await session.get(User, admin.id, populate_existing=True)
            if acting is None or acting.role != Role.ADMIN or acting.disabled:
                raise Forbidden("this account is no longer an admin")
            user = await session.get(User, user_id, populate_existing=True)
            if user is None:
                raise NotFound(f"user {user_id} not found")
            before = _audited(user)
            if body.role is not None:
                user.role = body.role
            if "quotas" in sent:
                user.quotas = _merged(user.quotas, body.quotas)
            if body.disabled and not user.disabled:
                user.disabled_at = utcnow()
                await end_sessions(session, user)
            elif body.disabled is False:
                user.disabled_at = None
            session.add(user)
            if changes := audit.changed(before, _audited(user)):
                session.add(
                    audit.entry(admin, AuditAction.USER_UPDATE, target_user_id=user.id, changes=changes)
                )
            await session.commit()
        if body.disabled:
            await self.jobs.pause_all_of(user.id, DISABLED_NOTE, admin)
        return self.account(user)

    def account(self, user: User) -> UserAccount:
        return UserAccount(
            id=user.id,
            email=user.email,
            role=user.role,
            created_at=user.created_at,
            disabled=user.disabled,
            disabled_at=user.disabled_at,
            quotas=user.quotas or Quotas(),
            limits=limits_of(self.settings, user.quotas),
        )


async def _lock_users(session: AsyncSession, user_ids: set[str]) -> None:
    """Take the accounts' change locks (`lock_for_change`) in the order of their ids, so two admins' changes
    never wait for each other in a circle. Two admins demoting each other at once each checked only that
    they were not demoting themself, and both lost the role; two quota changes read the same overrides
    and the second undid the first. Now the second change waits, then finds what the first did."""
    for user_id in sorted(user_ids):
        await lock_for_change(session, f"user:{user_id}")


def _merged(current: Quotas | None, sent: Quotas | None) -> Quotas | None:
    """The overrides after a PATCH: the ones sent replace (null clears), the others stay; `null` for the
    whole object clears them all."""
    if sent is None:
        return None
    kept = (current or Quotas()).model_dump()
    return Quotas.model_validate({**kept, **sent.model_dump(exclude_unset=True)})


def _audited(user: User) -> dict[str, Any]:
    """What a `user.update` entry compares: the fields an admin changes."""
    return {"role": user.role, "disabled": user.disabled, "quotas": user.quotas}
