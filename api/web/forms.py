"""The job form's fields as the API's JSON bodies: the dashboard builds the same JobCreate, JobUpdate and
PreviewRequest the API takes, so every rule stays in the models and services, and maps their errors back
to the fields that caused them."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from api.errors import user_loc
from core.errors import Invalid
from core.models import JobPublic
from core.payloads import MAX_BODY_DEPTH, HttpAction, masked_action, masked_notify
from core.schedules import CronSchedule, IntervalSchedule, OnceSchedule

Form = Mapping[str, str]
# The form's top-level names for the body's nested fields (`schedule.cron` is the field `cron`).
NESTED = ("schedule", "action", "retry_policy", "notify")


def _text(form: Form, name: str) -> str:
    return form.get(name, "").strip()


def schedule_of(form: Form) -> dict[str, Any]:
    kind = _text(form, "schedule_type") or "cron"
    timezone = _text(form, "timezone") or "UTC"
    if kind == "cron":
        schedule: dict[str, Any] = {"type": "cron", "cron": _text(form, "cron"), "timezone": timezone}
        if dialect := _text(form, "dialect"):
            schedule["dialect"] = dialect
        return schedule
    if kind == "interval":
        return {"type": "interval", "every_seconds": _text(form, "every_seconds") or None}
    if kind == "once":
        return {"type": "once", "run_at": local_time(_text(form, "run_at"), timezone)}
    return {"type": "immediate"}


def local_time(value: str, timezone: str) -> str:
    """A `datetime-local` value read on the clock of the form's time zone (validation reports the rest)."""
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=ZoneInfo(timezone))
    except (ValueError, ZoneInfoNotFoundError):
        return value
    return moment.isoformat()


def _body(value: str) -> Any:
    """The body textarea as JSON, or as the text it is when it is no JSON."""
    if not value:
        return None
    try:
        return json.loads(value)
    except ValueError:
        return value
    except RecursionError:  # deeper than the parser goes (the API's JSON answers it with a 400)
        raise Invalid(f"the body nests deeper than {MAX_BODY_DEPTH} levels", ("body",)) from None


def _headers(value: str) -> dict[str, str]:
    lines = (line.partition(":") for line in value.splitlines() if line.strip())
    return {name.strip(): val.strip() for name, _, val in lines}


def _emails(value: str) -> list[str]:
    return [part.strip() for part in value.replace("\n", ",").split(",") if part.strip()]


def labels_of(value: str) -> dict[str, str]:
    """The labels textarea, `key=value` a line; the keys and values are checked by the job models."""
    labels: dict[str, str] = {}
    for line in value.splitlines():
        if not line.strip():
            continue
        key, equals, val = line.partition("=")
        if not equals:
            raise Invalid(f"'{line.strip()}' is not key=value", ("labels",))
        if key.strip() in labels:
            raise Invalid(f"the key '{key.strip()}' is given twice", ("labels",))
        labels[key.strip()] = val.strip()
    return labels


def labels_text(labels: Mapping[str, str]) -> str:
    return "\n".join(f"{key}={value}" for key, value in labels.items())


def _retry(form: Form) -> dict[str, Any]:
    return {
        "max_attempts": _text(form, "max_attempts") or 3,
        "backoff": _text(form, "backoff") or "exponential",
        "initial_interval_seconds": _text(form, "initial_interval_seconds") or 1,
        "max_interval_seconds": _text(form, "max_interval_seconds") or 300,
    }


def _action(form: Form) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "http",
        "method": _text(form, "method") or "POST",
        "url": _text(form, "url"),
        "headers": _headers(form.get("headers", "")),
        "body": _body(_text(form, "body")),
    }
    if timeout := _text(form, "timeout_seconds"):
        body["timeout_seconds"] = timeout
    return body


def _notify(form: Form) -> dict[str, Any]:
    return {
        "on_failure": _emails(form.get("on_failure", "")),
        "on_success": _emails(form.get("on_success", "")),
        "webhook_url": _text(form, "webhook_url") or None,
        "on_missed": form.get("on_missed") == "on",
    }


def create_body(form: Form) -> dict[str, Any]:
    """The POST /jobs body of the new-job form (an HTTP action)."""
    return {
        "name": _text(form, "name"),
        "description": _text(form, "description") or None,
        "schedule": schedule_of(form),
        "action": _action(form),
        "retry_policy": _retry(form),
        "notify": _notify(form),
        "labels": labels_of(form.get("labels", "")),
        "paused": form.get("paused") == "on",
    }


def update_body(form: Form) -> dict[str, Any]:
    """The PATCH body of the edit form. Its HTTP request and notifications come as answers mask them (the
    service keeps a secret sent back as its mask); a form without them (an email or workflow action, which
    is changed through the API) leaves them as they are."""
    body = {
        "name": _text(form, "name"),
        "description": _text(form, "description") or None,
        "labels": labels_of(form.get("labels", "")),
        "schedule": schedule_of(form),
        "retry_policy": _retry(form),
    }
    if "url" in form:
        body["action"] = _action(form)
    if "webhook_url" in form:
        body["notify"] = _notify(form)
    return body


def field_errors(exc: ValidationError) -> dict[str, str]:
    """Each error under the form field it belongs to (`schedule.cron` → `cron`), first message kept."""
    found: dict[str, str] = {}
    for error in exc.errors():
        path = [str(p) for p in user_loc(error["loc"])]
        while path and path[0] in (*NESTED, "body"):
            path = path[1:]
        found.setdefault(path[0] if path else "form", error["msg"])
    return found


def values_of(job: JobPublic) -> dict[str, str]:
    """A job as the edit form's values, its secrets masked as answers mask them."""
    schedule = job.schedule
    values = {
        "name": job.name,
        "description": job.description or "",
        "labels": labels_text(job.labels),
        "schedule_type": schedule.type,
        "max_attempts": str(job.retry_policy.max_attempts),
        "backoff": job.retry_policy.backoff,
        "initial_interval_seconds": f"{job.retry_policy.initial_interval_seconds:g}",
        "max_interval_seconds": f"{job.retry_policy.max_interval_seconds:g}",
    }
    if isinstance(schedule, CronSchedule):
        values.update(cron=schedule.cron, timezone=schedule.timezone, dialect=schedule.dialect or "")
    elif isinstance(schedule, IntervalSchedule):
        values["every_seconds"] = str(schedule.every_seconds)
    elif isinstance(schedule, OnceSchedule):
        values.update(
            run_at=schedule.run_at.strftime("%Y-%m-%dT%H:%M:%S"), timezone=str(schedule.run_at.tzinfo)
        )
    action, notify = masked_action(job.action), masked_notify(job.notify)
    if isinstance(job.action, HttpAction):
        body = action["body"]
        values.update(
            method=action["method"],
            url=action["url"],
            headers="\n".join(f"{name}: {value}" for name, value in action["headers"].items()),
            body="" if body is None else body if isinstance(body, str) else json.dumps(body, indent=2),
            timeout_seconds=f"{action['timeout_seconds']:g}",
        )
    values.update(
        on_failure=", ".join(notify["on_failure"]),
        on_success=", ".join(notify["on_success"]),
        webhook_url=notify["webhook_url"] or "",
        on_missed="on" if notify.get("on_missed") else "",
    )
    return values
