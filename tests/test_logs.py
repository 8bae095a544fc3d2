"""Log lines: one per event, its context as fields, and `--log-format json` parseable line by line."""

from __future__ import annotations

import json
import logging

import pytest

from core.logs import JsonFormatter, TextFormatter, configure_logging


def record(message: str, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("chronos.test", logging.WARNING, __file__, 1, message, (), None)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_carry_the_event_context() -> None:
    line = JsonFormatter().format(record("attempt 2 failed: HTTP 500", job_id="j1", run_id="r1", attempt=2))
    data = json.loads(line)
    assert "\n" not in line
    assert data["message"] == "attempt 2 failed: HTTP 500"
    assert (data["level"], data["job_id"], data["run_id"], data["attempt"]) == ("warning", "j1", "r1", 2)


def test_text_lines_name_the_context_after_the_message() -> None:
    line = TextFormatter().format(record("attempt 2 failed", run_id="r1", attempt=2))
    assert line.endswith("chronos.test: attempt 2 failed [run_id=r1 attempt=2]")


def test_configure_sends_everything_through_one_handler(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure_logging("json")
        logging.getLogger("uvicorn.error").info("Started server process", extra={"pid": 1})
        [line] = capsys.readouterr().err.strip().splitlines()
        assert json.loads(line)["logger"] == "uvicorn.error"
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
