"""Committed workflow histories: the replay test proves the current code still replays each of them.

Run the suite with `CHRONOS_RECORD_HISTORIES=1` to (re)write them after a deliberate, patched change.
Each is named after the layout that wrote it (ERA), so a new layout's histories sit beside the old ones.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHandle, WorkflowHistory

from core.codec import ENCODING, Keyring, keyring
from core.config import Settings
from tests.api_client import ENCRYPTION_KEYS

HERE = Path(__file__).parent
WORKFLOW_ID = "chronosWorkflowId"
_ENCRYPTED = base64.b64encode(ENCODING).decode()
# The runs' layout the tests record now (RunInput.layout LOCAL_FIRST).
ERA = "local_first"


async def keep(name: str, handle: WorkflowHandle, keys: Keyring | None = None) -> None:
    """Write the finished workflow's history as `<name>.json` when recording is switched on; with the
    session's keys (`keys`, else those of tests/api_client) its payloads are written decrypted (the
    session's key is gone after it), as the codec passes plain payloads through on replay."""
    if os.environ.get("CHRONOS_RECORD_HISTORIES") != "1":
        return
    history = json.loads((await handle.fetch_history()).to_json())
    history = _decrypted(history, keys or keyring(Settings(encryption_keys=ENCRYPTION_KEYS)))
    # The run's id too: a run derives ids from it (its child workflows'), so it replays under it.
    (HERE / f"{ERA}_{name}.json").write_text(json.dumps({WORKFLOW_ID: handle.id, **history}))


def _decrypted(value: Any, keys: Keyring) -> Any:
    """The history's JSON with every encrypted payload in it replaced by the payload it seals."""
    if isinstance(value, list):
        return [_decrypted(item, keys) for item in value]
    if not isinstance(value, dict):
        return value
    if value.get("metadata", {}).get("encoding") == _ENCRYPTED:
        sealed = json_format.ParseDict(value, Payload())
        return json_format.MessageToDict(keys.decrypt(sealed))
    return {key: _decrypted(item, keys) for key, item in value.items()}


def committed() -> list[Path]:
    return sorted(HERE.glob("*.json"))


def load(path: Path) -> WorkflowHistory:
    """A committed history, under the workflow id it was recorded with (older files: their name)."""
    history = json.loads(path.read_text())
    return WorkflowHistory.from_json(history.pop(WORKFLOW_ID, path.stem), history)
