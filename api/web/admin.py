"""The admin page: accounts (role, disabled, quota overrides), the whole audit trail and readiness, over
the services of the API's admin routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from api.deps import AuditServiceDep, Cursor, SessionsDep, SettingsDep, TemporalDep, UserServiceDep
from api.web.render import page
from api.web.session import AdminViewer
from core.errors import Invalid
from core.health import readiness
from core.models import Role, UserPatch

router = APIRouter()

QUOTAS = ("max_jobs", "job_writes_per_minute", "runs_per_minute")


@router.get("/admin", response_class=HTMLResponse)
async def admin_page(
    request: Request,
    viewer: AdminViewer,
    users: UserServiceDep,
    trail: AuditServiceDep,
    settings: SettingsDep,
    sessions: SessionsDep,
    temporal: TemporalDep,
    q: Annotated[str | None, Query(max_length=320)] = None,
    users_cursor: Annotated[str | None, Query(max_length=500)] = None,
    cursor: Cursor = None,
    done: str | None = None,
) -> Response:
    context = {
        "viewer": viewer,
        "nav": "admin",
        "users": await users.find(q or None, 20, cursor=users_cursor or None),
        "audit": await trail.find(None, None, None, cursor, 20),
        "not_ready": await readiness(settings, sessions, temporal),
        "q": q or "",
        "roles": list(Role),
        "flash": "User saved." if done == "saved" else None,
    }
    return page(request, "admin.html", context)


@router.post("/admin/users/{user_id}")
async def save_user(
    request: Request,
    user_id: str,
    viewer: AdminViewer,
    users: UserServiceDep,
    role: Annotated[Role, Form()],
    disabled: Annotated[str | None, Form()] = None,
) -> Response:
    form = await request.form()
    quotas = {name: value for name in QUOTAS if isinstance(value := form.get(name), str) and value.strip()}
    body = {"role": role, "disabled": disabled == "on", **({"quotas": quotas} if quotas else {})}
    try:
        patch = UserPatch.model_validate(body)
    except ValidationError as exc:
        raise Invalid(f"quotas: {exc.errors()[0]['msg']}") from None
    await users.update(viewer, user_id, patch)
    return RedirectResponse("/admin?done=saved", status_code=303)
