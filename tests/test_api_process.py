"""`api/main.py`'s lifespan: while the API runs, what it loaded at start is out of the garbage collector's
sight and the youngest generation is collected less often; both are undone when it stops."""

from __future__ import annotations

import gc
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncEngine

from api.main import YOUNG_OBJECTS, create_app
from tests.api_client import app_settings, expect, serve


async def test_the_api_collects_less_often_while_it_runs_and_not_after(
    db_engine: AsyncEngine, tmp_path: Path
) -> None:
    kept = gc.get_threshold()  # another app of this test process may be running: its setting, put back
    gc.set_threshold(701, 11, 12)
    try:
        async with serve(create_app(app_settings(db_engine, tmp_path))) as api:
            assert gc.get_threshold() == (YOUNG_OBJECTS, 11, 12)
            assert gc.get_freeze_count() > 0
            expect(await api.get("http://chronos.test/health"), 200)
        assert gc.get_threshold() == (701, 11, 12)
        assert gc.get_freeze_count() == 0
    finally:
        gc.set_threshold(*kept)
