"""Committed workflow histories: the replay test proves the current code still replays each of them.

Run the suite with `CHRONOS_RECORD_HISTORIES=1` to (re)write them after a deliberate, patched change.
"""

from __future__ import annotations

import os
from pathlib import Path

from temporalio.client import WorkflowHandle

HERE = Path(__file__).parent


async def keep(name: str, handle: WorkflowHandle) -> None:
    """Write the finished workflow's history as `<name>.json` when recording is switched on."""
    if os.environ.get("CHRONOS_RECORD_HISTORIES") != "1":
        return
    history = await handle.fetch_history()
    (HERE / f"{name}.json").write_text(history.to_json())


def committed() -> list[Path]:
    return sorted(HERE.glob("*.json"))
