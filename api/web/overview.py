"""The overview at `/`: the last day of runs per hour as a chart, success rate, durations, the jobs
failing most and the dead letters waiting."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from api.deps import SessionsDep
from api.web.render import chart, page
from api.web.session import Viewer
from core.stats import overview

router = APIRouter()


@router.get("/", response_class=HTMLResponse)
async def overview_page(request: Request, viewer: Viewer, sessions: SessionsDep) -> Response:
    found = await overview(sessions, viewer)
    context = {
        "viewer": viewer,
        "nav": "overview",
        "o": found,
        "chart": chart([hour.model_dump() for hour in found.hours]),
    }
    return page(request, "overview.html", context)
