"""Log lines a person can read and a machine can parse: one line per event, a traceback only for a bug.

`text` (the default) for a terminal, `json` (one object per line) for production log collectors. Fields
that a log call passes in `extra` (job_id, run_id, attempt, …) become key=value pairs or JSON keys.
"""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal

from temporalio.exceptions import ApplicationError

from core.payloads import ErrorType

LogFormat = Literal["text", "json"]
EXPECTED = frozenset(ErrorType)

# Attributes every LogRecord has: what is left over came from `extra` and is the event's context.
# (uvicorn also passes `color_message`, a colored copy of its message: not context either.)
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
    "color_message",
}


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        context = _context(record)
        if context:
            first, _, rest = line.partition("\n")
            pairs = " ".join(f"{k}={v}" for k, v in context.items())
            line = f"{first} [{pairs}]" + (f"\n{rest}" if rest else "")
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


class ExpectedFailures(logging.Filter):
    """Drops the Temporal SDK's "Completing activity as failed" record, with its traceback, when the
    failure is one of Chronos's own error types (a target's 500, a timeout, a refused address): the
    attempt logs one line of its own for those. Any other exception in an activity is a bug and stays."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not (isinstance(error, ApplicationError) and error.type in EXPECTED)


def configure_logging(fmt: LogFormat = "text", level: int = logging.INFO) -> None:
    """One handler on the root logger, on stderr; uvicorn's and Temporal's loggers propagate to it."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ExpectedFailures())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):  # whatever uvicorn's own config set
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate, uvicorn_logger.disabled = True, False
        uvicorn_logger.setLevel(logging.NOTSET)
    # httpx logs every request at INFO: the worker's calls are in the run logs already.
    logging.getLogger("httpx").setLevel(logging.WARNING)
