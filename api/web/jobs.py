"""Job pages: the list, the new-job form with its live schedule preview, one job, its edit form and its
controls; each calls the service method the matching API route calls."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from api.deps import AuditServiceDep, JobServiceDep, PageNo, RunServiceDep
from api.web import forms
from api.web.render import page
from api.web.session import Viewer
from core.errors import Invalid, PreconditionFailed
from core.models import JobCreate, JobFilter, JobState, JobUpdate, PreviewRequest

router = APIRouter()

# The outcome a control reports on the page it returns to (the redirect's `done`).
DONE = {
    "created": "Job created.",
    "saved": "Changes saved.",
    "paused": "Job paused.",
    "resumed": "Job resumed.",
    "triggered": "Run started.",
    "cancelled": "Job cancelled: no further runs.",
}
RECENT_RUNS = 10


async def _form_data(request: Request) -> dict[str, str]:
    return {k: v for k, v in (await request.form()).items() if isinstance(v, str)}


@router.get("/jobs", response_class=HTMLResponse)
async def jobs_list(
    request: Request,
    viewer: Viewer,
    jobs: JobServiceDep,
    runs: RunServiceDep,
    state: JobState | None = None,
    q: Annotated[str | None, Query(max_length=200)] = None,
    page_no: Annotated[PageNo, Query(alias="page")] = 1,
) -> Response:
    found = await jobs.find(viewer, JobFilter(state=state, q=q or None), 20, page=page_no)
    recent = await runs.recent(viewer, [job.id for job in found.items], RECENT_RUNS)
    context = {
        "viewer": viewer,
        "nav": "jobs",
        "jobs": found,
        "recent": recent,
        "states": list(JobState),
        "filters": {"state": state or "", "q": q or ""},
    }
    block = "results" if request.headers.get("HX-Request") else None
    return page(request, "jobs.html", context, block=block)


@router.get("/jobs/new", response_class=HTMLResponse)
async def new_job(request: Request, viewer: Viewer) -> Response:
    values = {"schedule_type": "cron", "cron": "*/5 * * * *", "timezone": "UTC", "method": "POST"}
    return page(request, "job_form.html", {"viewer": viewer, "nav": "jobs", "values": values, "errors": {}})


@router.get("/jobs/preview", response_class=HTMLResponse)
async def preview(request: Request, viewer: Viewer, jobs: JobServiceDep) -> Response:
    """The live preview: the same service as POST /schedules/preview, on the form's schedule fields."""
    form = dict(request.query_params)
    try:
        body = PreviewRequest.model_validate({"schedule": forms.schedule_of(form), "count": 5})
        result = await jobs.preview(body)
    except ValidationError as exc:
        return page(request, "preview.html", {"errors": forms.field_errors(exc)})
    except Invalid as exc:
        return page(request, "preview.html", {"errors": {"schedule": exc.detail}})
    return page(request, "preview.html", {"preview": result, "errors": {}})


@router.post("/jobs", response_class=HTMLResponse)
async def create_job(request: Request, viewer: Viewer, jobs: JobServiceDep) -> Response:
    form = await _form_data(request)
    try:
        job = await jobs.create(viewer, JobCreate.model_validate(forms.create_body(form)))
    except ValidationError as exc:
        errors = forms.field_errors(exc)
    except Invalid as exc:
        errors = {str(exc.loc[-1]) if exc.loc else "form": exc.detail}
    else:
        return RedirectResponse(f"/jobs/{job.id}?done=created", status_code=303)
    context = {"viewer": viewer, "nav": "jobs", "values": form, "errors": errors}
    return page(request, "job_form.html", context, status=422)


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(
    request: Request,
    job_id: str,
    viewer: Viewer,
    jobs: JobServiceDep,
    runs: RunServiceDep,
    trail: AuditServiceDep,
    done: str | None = None,
    page_no: Annotated[PageNo, Query(alias="page")] = 1,
) -> Response:
    job = await jobs.get(viewer, job_id)
    context = {
        "viewer": viewer,
        "nav": "jobs",
        "job": job,
        "runs": await runs.for_job(viewer, job_id, None, 20, page=page_no),
        "audit": await trail.for_job(viewer, job_id, None, 20),
        "flash": DONE.get(done or ""),
    }
    return page(request, "job.html", context)


@router.get("/jobs/{job_id}/edit", response_class=HTMLResponse)
async def edit_job(request: Request, job_id: str, viewer: Viewer, jobs: JobServiceDep) -> Response:
    job = await jobs.get(viewer, job_id)
    context = {"viewer": viewer, "nav": "jobs", "job": job, "values": forms.values_of(job), "errors": {}}
    return page(request, "job_form.html", context)


@router.post("/jobs/{job_id}/edit", response_class=HTMLResponse)
async def save_job(
    request: Request,
    job_id: str,
    viewer: Viewer,
    jobs: JobServiceDep,
    version: Annotated[int, Form(ge=1)],
) -> Response:
    """A save carries the version the form was opened at: if the job changed since, it is refused (as a
    PATCH with a stale If-Match) and the form says so."""
    form = await _form_data(request)
    errors: dict[str, str]
    try:
        await jobs.update(
            viewer, job_id, JobUpdate.model_validate(forms.update_body(form)), frozenset({version})
        )
    except ValidationError as exc:
        errors = forms.field_errors(exc)
    except Invalid as exc:
        errors = {str(exc.loc[-1]) if exc.loc else "form": exc.detail}
    except PreconditionFailed:
        errors = {"form": "This job was changed by someone else since you opened it. Reload to see it."}
    else:
        return RedirectResponse(f"/jobs/{job_id}?done=saved", status_code=303)
    job = await jobs.get(viewer, job_id)
    context = {
        "viewer": viewer,
        "nav": "jobs",
        "job": job,
        "values": form,
        "errors": errors,
        "version": version,
    }
    return page(request, "job_form.html", context, status=409 if "form" in errors else 422)


@router.post("/jobs/{job_id}/pause")
async def pause_job(
    job_id: str, viewer: Viewer, jobs: JobServiceDep, note: Annotated[str, Form(max_length=500)] = ""
) -> Response:
    await jobs.pause(viewer, job_id, note.strip() or None)
    return RedirectResponse(f"/jobs/{job_id}?done=paused", status_code=303)


@router.post("/jobs/{job_id}/resume")
async def resume_job(job_id: str, viewer: Viewer, jobs: JobServiceDep) -> Response:
    await jobs.resume(viewer, job_id)
    return RedirectResponse(f"/jobs/{job_id}?done=resumed", status_code=303)


@router.post("/jobs/{job_id}/trigger")
async def trigger_job(job_id: str, viewer: Viewer, jobs: JobServiceDep) -> Response:
    run = await jobs.trigger(viewer, job_id)
    return RedirectResponse(f"/runs/{run.id}", status_code=303)


@router.post("/jobs/{job_id}/cancel")
async def cancel_job(job_id: str, viewer: Viewer, jobs: JobServiceDep) -> Response:
    await jobs.cancel(viewer, job_id)
    return RedirectResponse(f"/jobs/{job_id}?done=cancelled", status_code=303)


@router.post("/jobs/{job_id}/delete")
async def delete_job(job_id: str, viewer: Viewer, jobs: JobServiceDep) -> Response:
    await jobs.delete(viewer, job_id)
    return RedirectResponse("/jobs?done=deleted", status_code=303)
