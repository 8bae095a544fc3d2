"""Who calls and what they may do: the scopes of each role, and the caller an access token names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, true
from sqlmodel import col

from core.models import Me, Role

SCOPES = {
    "jobs:read": "See your jobs, runs, logs and dead letters",
    "jobs:write": "Create, change, pause, trigger and delete your jobs",
    "admin": "See and manage every user's jobs, dead letters and users",
}
ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.USER: frozenset({"jobs:read", "jobs:write"}),
    Role.ADMIN: frozenset(SCOPES),
}


@dataclass(frozen=True)
class AccessToken:
    """What identifies one access token: its `jti`, and its `iat` and `exp` in epoch seconds."""

    jti: str
    issued_at: int
    expires_at: int


@dataclass(frozen=True)
class Principal:
    """The caller, as its access token describes it; the API then checks it against the user row
    (`core.auth.authorize`): one indexed read per request."""

    id: str
    email: str
    role: Role
    scopes: frozenset[str]
    token: AccessToken | None = None

    @property
    def is_admin(self) -> bool:
        """Admin powers need the role and the `admin` scope, so a narrowed admin token acts as a user's."""
        return self.role == Role.ADMIN and "admin" in self.scopes

    def sees(self, owner_id: str) -> bool:
        """Users see their own jobs, runs and dead letters; admins see everyone's (others' are a 404)."""
        return self.is_admin or owner_id == self.id

    def sees_rows(self, owner_id: Any) -> ColumnElement[bool]:
        """`sees` as a query filter on a table's owner_id column."""
        return true() if self.is_admin else col(owner_id) == self.id

    def me(self) -> Me:
        return Me(id=self.id, email=self.email, role=self.role, scopes=sorted(self.scopes))
