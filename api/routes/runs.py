"""Run routes: history, attempts and logs from the mirror; pause, resume and cancel as signals."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Cursor, Limit, PageNo, Reader, RunServiceDep, Writer
from api.openapi import responses
from api.responses import ModelJSON
from core.models import LogPage, Page, RunDetail, RunPublic, RunStatus

router = APIRouter(tags=["runs"])


@router.get("/jobs/{job_id}/runs", response_model=Page[RunPublic], response_class=ModelJSON)
async def list_runs(
    job_id: str,
    user: Reader,
    runs: RunServiceDep,
    status: RunStatus | None = None,
    limit: Limit = 20,
    cursor: Cursor = None,
    page: PageNo = None,
) -> ModelJSON:
    """The job's runs, newest first."""
    return ModelJSON(await runs.for_job(user, job_id, status, limit, cursor, page))


@router.get("/runs/{run_id}", response_model=RunDetail)
async def get_run(run_id: str, user: Reader, runs: RunServiceDep) -> RunDetail:
    return await runs.get(user, run_id)


@router.get("/runs/{run_id}/logs", response_model=LogPage)
async def run_logs(run_id: str, user: Reader, runs: RunServiceDep) -> LogPage:
    return LogPage(items=await runs.logs(user, run_id))


@router.post("/runs/{run_id}/pause", status_code=202, response_model=RunPublic, responses=responses(409))
async def pause_run(run_id: str, user: Writer, runs: RunServiceDep) -> RunPublic:
    return await runs.command(user, run_id, "pause")


@router.post("/runs/{run_id}/resume", status_code=202, response_model=RunPublic, responses=responses(409))
async def resume_run(run_id: str, user: Writer, runs: RunServiceDep) -> RunPublic:
    return await runs.command(user, run_id, "resume")


@router.post("/runs/{run_id}/cancel", status_code=202, response_model=RunPublic, responses=responses(409))
async def cancel_run(run_id: str, user: Writer, runs: RunServiceDep) -> RunPublic:
    return await runs.command(user, run_id, "cancel")
