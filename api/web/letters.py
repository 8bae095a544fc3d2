"""Dead letters: runs that failed for good, with the request they made (secrets masked), replayed or
discarded through the dead-letter service."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.deps import Cursor, DeadLetterServiceDep
from api.web.render import page
from api.web.session import Viewer

router = APIRouter()

DONE = {"discarded": "Dead letter discarded."}


@router.get("/dead-letters", response_class=HTMLResponse)
async def dead_letters(
    request: Request,
    viewer: Viewer,
    letters: DeadLetterServiceDep,
    job_id: Annotated[str | None, Query(max_length=200)] = None,
    cursor: Cursor = None,
    done: str | None = None,
) -> Response:
    found = await letters.find(viewer, job_id or None, 20, cursor=cursor or None)
    context = {
        "viewer": viewer,
        "nav": "letters",
        "letters": found,
        "job_id": job_id or "",
        "flash": DONE.get(done or ""),
    }
    return page(request, "dead_letters.html", context)


@router.post("/dead-letters/{letter_id}/replay")
async def replay(letter_id: str, viewer: Viewer, letters: DeadLetterServiceDep) -> Response:
    run = await letters.replay(viewer, letter_id)
    return RedirectResponse(f"/runs/{run.id}", status_code=303)


@router.post("/dead-letters/{letter_id}/discard")
async def discard(letter_id: str, viewer: Viewer, letters: DeadLetterServiceDep) -> Response:
    await letters.discard(viewer, letter_id)
    return RedirectResponse("/dead-letters?done=discarded", status_code=303)
