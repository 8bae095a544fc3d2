"""Dead-letter and stats routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.deps import Cursor, DeadLetterServiceDep, Limit, PageNo, Reader, SessionsDep, Writer
from api.openapi import responses
from api.responses import ModelJSON
from core.models import DeadLetterPublic, Page, RunPublic, Stats
from core.stats import stats

router = APIRouter(tags=["dead letters and stats"])


@router.get("/dead-letters", response_model=Page[DeadLetterPublic], response_class=ModelJSON)
async def list_dead_letters(
    user: Reader,
    letters: DeadLetterServiceDep,
    job_id: Annotated[str | None, Query(max_length=200)] = None,
    limit: Limit = 20,
    cursor: Cursor = None,
    page: PageNo = None,
) -> ModelJSON:
    """Runs that failed for good, newest first: yours, or everyone's for admins."""
    return ModelJSON(await letters.find(user, job_id, limit, cursor, page))


@router.post(
    "/dead-letters/{letter_id}/replay",
    status_code=202,
    response_model=RunPublic,
    responses=responses(409, 429),
)
async def replay_dead_letter(letter_id: str, user: Writer, letters: DeadLetterServiceDep) -> RunPublic:
    """Start a new run of the job (trigger `replay`) and settle the dead letter."""
    return await letters.replay(user, letter_id)


@router.delete("/dead-letters/{letter_id}", status_code=204, response_class=Response)
async def discard_dead_letter(letter_id: str, user: Writer, letters: DeadLetterServiceDep) -> None:
    await letters.discard(user, letter_id)


@router.get("/stats", response_model=Stats)
async def get_stats(user: Reader, sessions: SessionsDep) -> Stats:
    """Jobs by state; runs by status, success rate, duration p50/p95 and retries, last hour and day."""
    return await stats(sessions, user)
