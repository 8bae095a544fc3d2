"""Job routes: each one names its inputs and hands them to the job service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Response

from api.deps import Cursor, JobFilterDep, JobServiceDep, Limit, PageNo, Reader, Writer
from api.etags import IfMatch, tagged
from api.openapi import responses
from api.responses import ModelJSON
from core.models import (
    BackfillCount,
    BackfillRequest,
    BulkResult,
    JobCreate,
    JobPublic,
    JobSelection,
    JobUpdate,
    Page,
    PauseRequest,
    Preview,
    PreviewRequest,
    RunPublic,
)

router = APIRouter(tags=["jobs"])


@router.post("/jobs", status_code=201, response_model=JobPublic, responses=responses(409, 429))
async def create_job(
    body: JobCreate,
    user: Writer,
    jobs: JobServiceDep,
    response: Response,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> JobPublic:
    """Create a job; an `Idempotency-Key` makes a retried submit return the first answer."""
    return tagged(response, await jobs.create(user, body, idempotency_key))


@router.get("/jobs", response_model=Page[JobPublic], response_class=ModelJSON)
async def list_jobs(
    user: Reader,
    jobs: JobServiceDep,
    match: JobFilterDep,
    limit: Limit = 20,
    cursor: Cursor = None,
    page: PageNo = None,
) -> ModelJSON:
    """Your jobs (admins: everyone's) that match every filter given, newest first."""
    return ModelJSON(await jobs.find(user, match, limit, cursor, page))


# Declared before `/jobs/{job_id}/…`: the literal paths are not job ids.
@router.post("/jobs/pause", response_model=BulkResult, responses=responses(429))
async def pause_jobs(body: JobSelection, user: Writer, jobs: JobServiceDep) -> BulkResult:
    """Pause your own jobs named by `ids` or matching `filter` (an admin's too: never another user's);
    jobs already paused, finished or cancelled are left as they are and not counted."""
    return BulkResult(count=await jobs.set_paused_matching(user, body.selector, True, body.note))


@router.post("/jobs/resume", response_model=BulkResult, responses=responses(429))
async def resume_jobs(body: JobSelection, user: Writer, jobs: JobServiceDep) -> BulkResult:
    """Resume your own paused jobs named by `ids` or matching `filter`; the note goes to the audit trail."""
    return BulkResult(count=await jobs.set_paused_matching(user, body.selector, False, body.note))


@router.get("/jobs/{job_id}", response_model=JobPublic)
async def get_job(job_id: str, user: Reader, jobs: JobServiceDep, response: Response) -> JobPublic:
    """The job; its `ETag` is its version, for the If-Match of a PATCH."""
    return tagged(response, await jobs.get(user, job_id))


@router.patch("/jobs/{job_id}", response_model=JobPublic, responses=responses(409, 412, 429))
async def update_job(
    job_id: str, body: JobUpdate, user: Writer, jobs: JobServiceDep, response: Response, expected: IfMatch
) -> JobPublic:
    """Change fields in place; a new schedule rewrites the Temporal schedule without losing its state.
    With `If-Match`, a job that changed since that version is a 412 and stays as it is."""
    return tagged(response, await jobs.update(user, job_id, body, expected))


@router.delete("/jobs/{job_id}", status_code=204, response_class=Response, responses=responses(429))
async def delete_job(job_id: str, user: Writer, jobs: JobServiceDep) -> None:
    await jobs.delete(user, job_id)


@router.post("/jobs/{job_id}/pause", response_model=JobPublic, responses=responses(409, 429))
async def pause_job(
    job_id: str, user: Writer, jobs: JobServiceDep, response: Response, body: PauseRequest | None = None
) -> JobPublic:
    """No run starts while paused; runs in flight make no further attempt until resumed."""
    return tagged(response, await jobs.pause(user, job_id, body.note if body else None))


@router.post("/jobs/{job_id}/resume", response_model=JobPublic, responses=responses(409, 429))
async def resume_job(job_id: str, user: Writer, jobs: JobServiceDep, response: Response) -> JobPublic:
    """Paused runs continue; fires missed while paused are made up by the job's misfire rule (none
    without one)."""
    return tagged(response, await jobs.resume(user, job_id))


@router.post(
    "/jobs/{job_id}/trigger", status_code=202, response_model=RunPublic, responses=responses(409, 429)
)
async def trigger_job(job_id: str, user: Writer, jobs: JobServiceDep) -> RunPublic:
    """Run now, whatever the schedule says, also while paused."""
    return await jobs.trigger(user, job_id)


@router.post("/jobs/{job_id}/cancel", response_model=JobPublic, responses=responses(429))
async def cancel_job(job_id: str, user: Writer, jobs: JobServiceDep, response: Response) -> JobPublic:
    """No further runs; runs in flight are cancelled."""
    return tagged(response, await jobs.cancel(user, job_id))


@router.post("/schedules/preview", response_model=Preview)
async def preview_schedule(body: PreviewRequest, user: Reader, jobs: JobServiceDep) -> Preview:
    """Validate a schedule and see its next fire times and description without saving anything."""
    return await jobs.preview(body)


@router.post(
    "/jobs/{job_id}/backfill", status_code=202, response_model=BackfillCount, responses=responses(409, 429)
)
async def backfill_job(
    job_id: str, body: BackfillRequest, user: Writer, jobs: JobServiceDep
) -> BackfillCount:
    """Run every fire of the schedule from `start` to `end` (both included, in the past) now, as the schedule
    would have; the runs carry trigger `backfill`. Answers how many fires that is."""
    return await jobs.backfill(user, job_id, body)
