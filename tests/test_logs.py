"""Log lines: one per event, its context as fields, and `--log-format json` parseable line by line."""

from __future__ import annotations

import json
import logging
import sys

import pytest
from temporalio.exceptions import ApplicationError

from core.logs import ExpectedFailures, JsonFormatter, TextFormatter, configure_logging
from core.payloads import ErrorType
from tests.api_client import ApiClient, expect
from tests.http_target import HttpTarget
from tests.waiting import eventually


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


def failed_activity(error: BaseException) -> logging.LogRecord:
    try:
        raise error
    except BaseException:
        rec = logging.LogRecord("temporalio.activity", logging.WARNING, __file__, 1, "x", (), sys.exc_info())
    rec.msg = "Completing activity as failed"
    return rec


def test_an_expected_failure_loses_the_sdk_traceback_and_a_bug_keeps_it() -> None:
    expected = ApplicationError("HTTP 500 from POST …", type=ErrorType.HTTP_SERVER_ERROR)
    assert not ExpectedFailures().filter(failed_activity(expected))
    assert ExpectedFailures().filter(failed_activity(ValueError("a bug")))


async def test_a_failed_attempt_is_one_line_with_its_job_run_and_attempt(
    api: ApiClient, target: HttpTarget, caplog: pytest.LogCaptureFixture
) -> None:
    alice = await api.authed_user()
    target.script("/flaky-log", [500, 200])
    action = {"type": "http", "url": target.url("/flaky-log")}
    retry = {"initial_interval_seconds": 0.1}
    body = {"name": "logs", "schedule": {"type": "immediate"}, "action": action, "retry_policy": retry}
    with caplog.at_level(logging.INFO, logger="chronos.attempts"):
        job = expect(await alice.post("/jobs", json=body), 201)
        await target.wait_for("/flaky-log", count=2)
        [line] = await eventually(
            lambda: [r for r in caplog.records if getattr(r, "job_id", None) == job["id"]],
            "the attempt's line",
        )
    assert (line.attempt, line.error_type, line.levelname) == (1, "HttpServerError", "WARNING")  # type: ignore[attr-defined]
    assert line.getMessage().startswith("attempt 1 failed: HTTP 500") and not line.exc_info
