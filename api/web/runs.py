"""The run page: its attempts, its log (tailed live over server-sent events while the run is in flight)
and its pause, resume and cancel controls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2_fragments import render_block
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.deps import RunServiceDep
from api.web.live import held
from api.web.render import page, templates
from api.web.session import Viewer
from core.auth import Principal
from core.models import FINISHED
from core.runs import RunCommand, RunService

router = APIRouter()

DONE = {
    "pause": "Pause sent: no further attempt starts until resumed.",
    "resume": "Resume sent.",
    "cancel": "Cancel sent.",
}
# How often a live page's stream looks for new log lines and attempts in the mirror.
TAIL_SECONDS = 1.0


@router.get("/runs/{run_id}", response_class=HTMLResponse)
async def run_page(
    request: Request, run_id: str, viewer: Viewer, runs: RunServiceDep, done: str | None = None
) -> Response:
    run = await runs.get(viewer, run_id)
    logs = await runs.logs(viewer, run_id)
    context = {
        "viewer": viewer,
        "nav": "jobs",
        "run": run,
        "logs": logs,
        "live": run.status not in FINISHED,
        "flash": DONE.get(done or ""),
    }
    return page(request, "run.html", context)


@router.get("/runs/{run_id}/events")
async def run_events(
    request: Request,
    run_id: str,
    viewer: Viewer,
    runs: RunServiceDep,
    after: Annotated[int, Query(ge=0, le=1_000_000, description="log lines the page already shows")] = 0,
) -> EventSourceResponse:
    """The run's new log lines (`log`), its status and attempts when they change (`status`), and `end`
    once it is over. The page closes the stream while its tab is hidden and reopens it with `after`."""
    await runs.get(viewer, run_id)  # a 404 before the stream starts, not inside it
    return EventSourceResponse(held(viewer.id, _tail(request, viewer, runs, run_id, after)), ping=15)


async def _tail(
    request: Request, viewer: Principal, runs: RunService, run_id: str, seen: int
) -> AsyncGenerator[ServerSentEvent, None]:
    shown = None
    while not await request.is_disconnected():
        run = await runs.get(viewer, run_id)
        logs = await runs.logs(viewer, run_id)
        for line in logs[seen:]:
            seen += 1
            html = render_block(templates.env, "run.html", "log_line", line=line)
            yield ServerSentEvent(data=html, event="log", id=str(seen))
        state = (run.status, run.attempts, tuple(a.status for a in run.attempt_history))
        if state != shown:
            shown = state
            html = render_block(templates.env, "run.html", "summary", run=run)
            yield ServerSentEvent(data=html, event="status")
        if run.status in FINISHED:
            yield ServerSentEvent(data=str(run.status), event="end")
            return
        await asyncio.sleep(TAIL_SECONDS)


async def _command(run_id: str, viewer: Principal, runs: RunService, command: RunCommand) -> Response:
    await runs.command(viewer, run_id, command)
    return RedirectResponse(f"/runs/{run_id}?done={command}", status_code=303)


@router.post("/runs/{run_id}/pause")
async def pause_run(run_id: str, viewer: Viewer, runs: RunServiceDep) -> Response:
    return await _command(run_id, viewer, runs, "pause")


@router.post("/runs/{run_id}/resume")
async def resume_run(run_id: str, viewer: Viewer, runs: RunServiceDep) -> Response:
    return await _command(run_id, viewer, runs, "resume")


@router.post("/runs/{run_id}/cancel")
async def cancel_run(run_id: str, viewer: Viewer, runs: RunServiceDep) -> Response:
    return await _command(run_id, viewer, runs, "cancel")
