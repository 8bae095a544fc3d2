"""`GET /metrics`: Prometheus text, outside /api/v1 and without a token, as scrapers expect.

It shows only totals over every user (no names, ids or targets); restrict it at the network edge.
"""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import SessionsDep, SettingsDep, TemporalDep
from api.openapi import responses
from core.metrics import read_snapshot, render

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, responses=responses(503))
async def metrics(settings: SettingsDep, sessions: SessionsDep, temporal: TemporalDep) -> Response:
    """Jobs by state, runs by status, run durations, retries and queue depth, read at scrape time."""
    snapshot = await read_snapshot(sessions, temporal, settings.task_queue)
    return Response(render(snapshot), media_type=CONTENT_TYPE_LATEST)
