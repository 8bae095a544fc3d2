"""Job pages: the list, the new-job form with its live schedule preview, one job, its edit form and its
controls; each calls the service method the matching API route calls."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2_fragments import render_block
from pydantic import ValidationError
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.deps import AuditServiceDep, Cursor, JobServiceDep, RunServiceDep, parse_labels
from api.web import forms
from api.web.live import held
from api.web.render import page, templates
from api.web.session import Viewer
from core.auth import Principal
from core.errors import Conflict, Invalid, PreconditionFailed
from core.jobs import JobService, RowVersion
from core.models import (
    BackfillRequest,
    JobCreate,
    JobFilter,
    JobPublic,
    JobSelection,
    JobState,
    JobUpdate,
    OverlapPolicy,
    PreviewRequest,
)
from core.runs import RunService
from core.schedules import is_fixed_delay, known_zone

router = APIRouter()

# The outcome a control reports on the page it returns to (the redirect's `done`).
DONE = {
    "created": "Job created.",
    "saved": "Changes saved.",
    "paused": "Job paused.",
    "resumed": "Job resumed.",
    "triggered": "Run started.",
    "cancelled": "Job cancelled: no further runs.",
    "deleted": "Job deleted.",
}
RECENT_RUNS = 10
# The newest runs the job page shows (older ones by cursor).
JOB_RUNS = 20
PAGE_SIZE = 20
SCHEDULE_TYPES = ("cron", "interval", "once", "immediate")
BULK_VERBS = {"pause": "Pause", "resume": "Resume"}
# How often a live jobs list's stream reads its rows' versions, and the most rows one stream follows.
LIVE_SECONDS = 2.0
LIVE_ROWS = 100
LIVE_KEY = re.compile(r"[\w-]{1,64}:[0-9a-f]{12}:[0-9]{0,12}")


class Params(Protocol):
    """The query string or a posted form: both repeat a name for several values."""

    def getlist(self, key: Any) -> Sequence[object]: ...


def _one(params: Params, name: str) -> str:
    values = params.getlist(name)
    return values[0].strip() if values and isinstance(values[0], str) else ""


def _label_pairs(params: Params) -> list[str]:
    """`label=k:v`, repeated, or several in one field (`team:billing env:prod`)."""
    values = [v for v in params.getlist("label") if isinstance(v, str)]
    return [pair for value in values for pair in re.split(r"[\s,]+", value) if pair]


def _filter_of(params: Params) -> JobFilter:
    """The list filter of the address or form, by the API's rules; a bad value is an `Invalid` that says
    which filter and why."""
    labels = parse_labels(_label_pairs(params))
    fields = {"state": _one(params, "state"), "type": _one(params, "type"), "q": _one(params, "q")}
    try:
        return JobFilter.model_validate({**{k: v or None for k, v in fields.items()}, "labels": labels})
    except ValidationError as exc:
        error = exc.errors()[0]
        raise Invalid(f"{error['loc'][0]}: {error['msg']}", ("query", str(error["loc"][0]))) from None


def _filter_pairs(match: JobFilter) -> list[tuple[str, str]]:
    """The filter as the list's query fields, so links, forms and redirects keep it."""
    pairs = [(name, str(value)) for name, value in (("state", match.state), ("type", match.type)) if value]
    pairs += [("q", match.q)] if match.q else []
    return pairs + [("label", f"{key}:{value}") for key, value in match.labels.items()]


def _filter_fields(params: Params) -> dict[str, str]:
    """The filter form's fields as typed, to show them again (also when they are refused)."""
    return {
        "state": _one(params, "state"),
        "type": _one(params, "type"),
        "q": _one(params, "q"),
        "label": " ".join(_label_pairs(params)),
    }


async def _form_data(request: Request) -> dict[str, str]:
    return {k: v for k, v in (await request.form()).items() if isinstance(v, str)}


@router.get("/jobs", response_class=HTMLResponse)
async def jobs_list(
    request: Request,
    viewer: Viewer,
    jobs: JobServiceDep,
    runs: RunServiceDep,
    cursor: Cursor = None,
    done: str | None = None,
    count: Annotated[int | None, Query(ge=0)] = None,
) -> Response:
    """Newest first, a keyset page at a time (`cursor`); the filters live in the address. A filter or
    cursor the API would refuse shows its reason on the page (a 422), not a list."""
    params = request.query_params
    context = {
        "viewer": viewer,
        "nav": "jobs",
        "states": list(JobState),
        "types": SCHEDULE_TYPES,
        "filters": _filter_fields(params),
        "flash": _done(done, count),
    }
    try:
        match = _filter_of(params)
        found = await jobs.find(viewer, match, PAGE_SIZE, cursor=cursor or None)
    except Invalid as exc:
        context.update(jobs=None, recent={}, error=exc.detail, query="", filter_pairs=[])
        status = 422
    else:
        recent = await runs.recent(viewer, [job.id for job in found.items], RECENT_RUNS)
        pairs = _filter_pairs(match)
        context.update(jobs=found, recent=recent, query=urlencode(pairs), filter_pairs=pairs, error=None)
        context["live_keys"] = {job.id: _live_key(job) for job in found.items}
        status = 200
    block = "results" if request.headers.get("HX-Request") else None
    return page(request, "jobs.html", context, block=block, status=status)


def _digest(version: RowVersion) -> str:
    return hashlib.blake2s("|".join(map(str, version)).encode(), digest_size=6).hexdigest()


def _live_key(job: JobPublic) -> str:
    """What a live list's row says it shows: `id:digest:next fire` (the digest of its RowVersion, the
    next fire in Unix seconds), sent back by the page when it opens its stream."""
    next_at = str(int(job.next_run_at.timestamp())) if job.next_run_at else ""
    return f"{job.id}:{_digest(RowVersion.of(job))}:{next_at}"


@dataclass
class _Shown:
    digest: str
    next_at: float | None


def _shown(key: str) -> tuple[str, _Shown]:
    job_id, digest, next_at = key.split(":")
    return job_id, _Shown(digest, float(next_at) if next_at else None)


def _keys(row: list[str], most: int) -> dict[str, _Shown]:
    if not 0 < len(row) <= most or not all(LIVE_KEY.fullmatch(key) for key in row):
        raise Invalid(f"row: 1 to {most} values of the form id:digest:time", ("query", "row"))
    return dict(map(_shown, row))


Rows = Annotated[list[str], Query(description="the rows the page shows (`_live_key`)")]
# A stream's drawing of jobs whose rows changed: each job as now read, and the events that show it.
Drawn = list[tuple[JobPublic, list[ServerSentEvent]]]
Draw = Callable[[list[str]], Awaitable[Drawn]]


@router.get("/jobs/events")
async def jobs_events(
    request: Request,
    viewer: Viewer,
    jobs: JobServiceDep,
    runs: RunServiceDep,
    row: Rows = [],  # noqa: B006
) -> EventSourceResponse:
    """The listed jobs' rows again when what they show changes (`job_row`, to swap in), `gone` when one is
    deleted, `end` when none is left. The page closes the stream while its tab is hidden or live
    updates are paused, and reopens it with the rows as it shows them."""
    shown = _keys(row, LIVE_ROWS)
    events = _watch(request, viewer, jobs, shown, _rows(viewer, jobs, runs))
    return EventSourceResponse(held(viewer.id, events), ping=15)


def _rows(viewer: Principal, jobs: JobService, runs: RunService) -> Draw:
    """The jobs list's rows of the changed jobs, read as the list reads them."""

    async def draw(changed: list[str]) -> Drawn:
        recent = await runs.recent(viewer, changed, RECENT_RUNS)
        drawn: Drawn = []
        for job in await jobs.listed(viewer, changed):
            context = {"job": job, "recent": recent, "live_keys": {job.id: _live_key(job)}}
            drawn.append((job, [_block("jobs.html", "job_row", context)]))
        return drawn

    return draw


@router.get("/jobs/{job_id}/events")
async def job_events(
    request: Request,
    job_id: str,
    viewer: Viewer,
    jobs: JobServiceDep,
    runs: RunServiceDep,
    row: Rows = [],  # noqa: B006
) -> EventSourceResponse:
    """The job page's state, next runs and newest runs again (`job_state`, `job_next`, `job_runs`) when
    the job's version, state or last run changes or its next fire passes; `gone` and `end` once it is
    deleted. Opened, closed and reopened as the jobs list's stream is."""
    shown = _keys(row, 1)
    if list(shown) != [job_id]:
        raise Invalid("row: the key of this job", ("query", "row"))
    await jobs.get(viewer, job_id)  # a 404 before the stream starts, not inside it
    events = _watch(request, viewer, jobs, shown, _job_parts(viewer, jobs, runs))
    return EventSourceResponse(held(viewer.id, events), ping=15)


def _job_parts(viewer: Principal, jobs: JobService, runs: RunService) -> Draw:
    """The job page's parts that runs and changes move, read as the page reads them."""

    async def draw(changed: list[str]) -> Drawn:
        job = await jobs.get(viewer, changed[0])
        found = await runs.for_job(viewer, job.id, None, JOB_RUNS)
        context = {"job": job, "runs": found, "live_key": _live_key(job)}
        return [(job, [_block("job.html", name, context) for name in ("job_state", "job_next", "job_runs")])]

    return draw


def _block(template: str, name: str, context: dict[str, Any]) -> ServerSentEvent:
    """One block of a page as an event of its name, for the page to swap in."""
    return ServerSentEvent(data=render_block(templates.env, template, name, **context), event=name)


async def _watch(
    request: Request, viewer: Principal, jobs: JobService, shown: dict[str, _Shown], draw: Draw
) -> AsyncGenerator[ServerSentEvent, None]:
    """Each tick, one read of the shown jobs' versions; a job whose version moved, or whose next fire
    has passed, is read and drawn again (once: a next fire still past is not looked at again)."""
    while shown and not await request.is_disconnected():
        now = time.time()
        versions = await jobs.row_versions(viewer, list(shown))
        for job_id in [job_id for job_id in shown if job_id not in versions]:
            del shown[job_id]
            yield ServerSentEvent(data=job_id, event="gone")
        changed = [
            job_id
            for job_id, seen in shown.items()
            if seen.digest != _digest(versions[job_id]) or (seen.next_at is not None and seen.next_at <= now)
        ]
        if changed:
            for job, events in await draw(changed):
                job_id, seen = _shown(_live_key(job))
                shown[job_id] = _Shown(seen.digest, seen.next_at if (seen.next_at or 0) > now else None)
                for sent in events:
                    yield sent
        if not shown:
            yield ServerSentEvent(data="", event="end")
            return
        await asyncio.sleep(LIVE_SECONDS)


def _done(done: str | None, count: int | None) -> str | None:
    if done == "backfilled" and count is not None:
        return f"Backfilled {count} fire{'' if count == 1 else 's'}."
    if done in ("bulk-paused", "bulk-resumed") and count is not None:
        verb = "Paused" if done == "bulk-paused" else "Resumed"
        return f"{verb} {count} job{'' if count == 1 else 's'}."
    return DONE.get(done or "")


def _selection(params: Params) -> JobSelection:
    """The jobs a bulk pause or resume acts on: the rows ticked (`id`), or all of the caller's jobs that
    match the filter (`all`), as the API's JobSelection with its rules."""
    ids = [value for value in params.getlist("id") if isinstance(value, str) and value]
    note = _one(params, "note") or None
    if _one(params, "all") == "on":
        body: dict[str, object] = {"filter": _filter_of(params), "note": note}
    elif ids:
        body = {"ids": ids, "note": note}
    else:
        raise Invalid("select some jobs, or all jobs matching the filter", ("query", "id"))
    try:
        return JobSelection.model_validate(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise Invalid(f"{error['loc'][0]}: {error['msg']}", ("query", str(error["loc"][0]))) from None


@router.get("/jobs/bulk", response_class=HTMLResponse)
async def bulk_confirm(
    request: Request, viewer: Viewer, jobs: JobServiceDep, action: Literal["pause", "resume"]
) -> Response:
    """The confirmation step: how many jobs the bulk change would move, counted by the service that
    makes it, with the same selection; nothing changes yet."""
    params = request.query_params
    selection = _selection(params)
    count = await jobs.count_paused_matching(viewer, selection.selector, action == "pause")
    listed = _filter_pairs(_filter_of(params))
    chosen = [("all", "on")] if selection.filter else [("id", job_id) for job_id in selection.ids or []]
    context = {
        "viewer": viewer,
        "nav": "jobs",
        "action": action,
        "verb": BULK_VERBS[action],
        "count": count,
        "selection": selection,
        "hidden": listed + chosen,
        "note": selection.note or "",
        "back": f"/jobs?{urlencode(listed)}",
    }
    return page(request, "jobs_bulk.html", context)


@router.post("/jobs/bulk")
async def bulk_pause(
    request: Request,
    viewer: Viewer,
    jobs: JobServiceDep,
    action: Annotated[Literal["pause", "resume"], Form()],
) -> Response:
    """The confirmed bulk change (the same selection the confirmation counted); back to the filtered
    list, which says how many jobs changed."""
    form = await request.form()
    selection = _selection(form)
    count = await jobs.set_paused_matching(viewer, selection.selector, action == "pause", selection.note)
    done = [("done", f"bulk-{action}d"), ("count", str(count))]
    return RedirectResponse(f"/jobs?{urlencode(_filter_pairs(_filter_of(form)) + done)}", status_code=303)


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


def _backfillable(job: JobPublic) -> bool:
    """Immediate and fixed-delay jobs have no fire times: the service refuses their backfills."""
    return job.schedule.type != "immediate" and not is_fixed_delay(job.schedule)


async def _job_context(
    viewer: Viewer,
    job_id: str,
    jobs: JobServiceDep,
    runs: RunServiceDep,
    trail: AuditServiceDep,
    cursor: str | None = None,
) -> dict[str, Any]:
    job = await jobs.get(viewer, job_id)
    zone = job.schedule.timezone if job.schedule.type == "cron" else "UTC"
    return {
        "viewer": viewer,
        "nav": "jobs",
        "job": job,
        "runs": await runs.for_job(viewer, job_id, None, JOB_RUNS, cursor=cursor or None),
        "live_key": _live_key(job),
        "live": not cursor,  # the newest runs follow the job; an older page stays as it is
        "audit": await trail.for_job(viewer, job_id, None, 20),
        "backfillable": _backfillable(job),
        "overlap_policies": list(OverlapPolicy),
        "backfill": {"timezone": zone, "overlap_policy": OverlapPolicy.BUFFER_ALL.value},
        "backfill_errors": {},
    }


@router.get("/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(
    request: Request,
    job_id: str,
    viewer: Viewer,
    jobs: JobServiceDep,
    runs: RunServiceDep,
    trail: AuditServiceDep,
    done: str | None = None,
    count: Annotated[int | None, Query(ge=0)] = None,
    cursor: Cursor = None,
) -> Response:
    context = await _job_context(viewer, job_id, jobs, runs, trail, cursor)
    return page(request, "job.html", {**context, "flash": _done(done, count)})


@router.post("/jobs/{job_id}/backfill", response_class=HTMLResponse)
async def backfill_job(
    request: Request,
    job_id: str,
    viewer: Viewer,
    jobs: JobServiceDep,
    runs: RunServiceDep,
    trail: AuditServiceDep,
) -> Response:
    """The past fires from start to end, as POST /api/v1/jobs/{id}/backfill runs them; the times are read
    on the clock of the form's time zone. A refusal is shown beside the form (422, or 409 for a job with
    no fire times), never as an error page."""
    form = await _form_data(request)
    zone = form.get("timezone", "").strip() or "UTC"
    errors: dict[str, str]
    try:
        if not known_zone(zone):
            raise Invalid(f"unknown time zone {zone!r}", ("body", "timezone"))
        body = {
            "start": forms.local_time(form.get("start", "").strip(), zone),
            "end": forms.local_time(form.get("end", "").strip(), zone),
            "overlap_policy": form.get("overlap_policy") or OverlapPolicy.BUFFER_ALL,
        }
        fired = await jobs.backfill(viewer, job_id, BackfillRequest.model_validate(body))
    except ValidationError as exc:
        errors, status = forms.field_errors(exc), 422
    except Invalid as exc:
        errors, status = {str(exc.loc[-1]) if exc.loc else "backfill": exc.detail}, 422
    except Conflict as exc:
        errors, status = {"backfill": exc.detail}, 409
    else:
        return RedirectResponse(f"/jobs/{job_id}?done=backfilled&count={fired.count}", status_code=303)
    context = await _job_context(viewer, job_id, jobs, runs, trail)
    context.update(backfill={**context["backfill"], **form}, backfill_errors=errors)
    return page(request, "job.html", context, status=status)


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
        body = JobUpdate.model_validate(forms.update_body(form))
        await jobs.update(viewer, job_id, body, frozenset({version}), keep_masked=True)
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
