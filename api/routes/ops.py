"""Operations endpoints: the API's index, liveness and readiness."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import SessionsDep, SettingsDep, TemporalDep
from api.errors import problem
from api.openapi import responses
from core.health import readiness

router = APIRouter(tags=["operations"])


@router.get("/api/v1")
async def index() -> dict[str, str]:
    """Where things are: the printed API address answers with this map instead of a 404."""
    return {
        "name": "Chronos",
        "docs": "/docs",
        "openapi": "/openapi.json",
        "jobs": "/api/v1/jobs",
        "dead_letters": "/api/v1/dead-letters",
        "stats": "/api/v1/stats",
        "health": "/health",
        "ready": "/ready",
        "metrics": "/metrics",
    }


@router.get("/health")
async def health() -> dict[str, str]:
    """The process is up (no dependency is checked)."""
    return {"status": "ok"}


@router.get("/ready", response_model=None, responses=responses(503))
async def ready(
    settings: SettingsDep, sessions: SessionsDep, temporal: TemporalDep
) -> JSONResponse | dict[str, str]:
    """Database and Temporal reachable and a worker polling the task queue; 503 with the reason otherwise."""
    reason = await readiness(settings, sessions, temporal)
    if reason:
        return problem(503, "Not ready", reason)
    return {"status": "ready"}
