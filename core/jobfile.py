"""Jobs as code: the files `chronos apply` reads and `chronos export` writes, and the plan that makes a
server's jobs match a file.

A file is YAML or JSON `{"jobs": [<POST /jobs bodies>]}`; the name is the key (unique per owner). Secrets
stay out of files: `${VAR}` in any string is the environment variable VAR, read at apply time.

Answers mask secrets (header values, URL userinfo: core/payloads.py), so a plan cannot compare them in
clear. It compares the file's job masked by the same rule with the server's answer: a secret changed in
the file is seen when its masked form changes (a long header value shows its last 4 characters), and
`resend_secrets` sends the action and notify of every job that holds a secret, to rotate any of them."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from core.client import ClientError, invalid
from core.models import JobCreate, JobUpdate
from core.payloads import PLAIN_HEADERS, masked_action, masked_notify

# `${VAR}` is the variable; `$${VAR}` is a literal `${VAR}`.
VARIABLE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
SUFFIXES = (".yaml", ".yml", ".json")
# What a plan compares and a PATCH may send: every field of an update but the name, which is the key.
COMPARED = tuple(name for name in JobUpdate.model_fields if name != "name")
SECRET_FIELDS = ("action", "notify")


def read_jobs(path: Path, environ: Mapping[str, str]) -> list[dict[str, Any]]:
    """The jobs of a file, or of every .yaml/.yml/.json file of a folder (not its subfolders), with
    `${VAR}` replaced; a missing variable, a name given twice or a file of another shape is an error."""
    files = sorted(p for p in path.iterdir() if p.suffix in SUFFIXES) if path.is_dir() else [path]
    jobs: list[dict[str, Any]] = []
    missing: set[str] = set()
    seen: dict[str, Path] = {}
    for file in files:
        try:
            data = yaml.safe_load(file.read_text())  # JSON is YAML
        except (OSError, yaml.YAMLError) as exc:
            raise invalid("Unreadable jobs file", f"{file}: {exc}") from exc
        listed = data.get("jobs") if isinstance(data, dict) else None
        if not isinstance(listed, list) or not all(isinstance(job, dict) for job in listed):
            raise invalid("Not a jobs file", f'{file}: expected {{"jobs": [<job>, ...]}}')
        for job in listed:
            name = job.get("name")
            if not isinstance(name, str) or not name:
                raise invalid("Job without a name", f"{file}: every job needs a name: it is the key")
            if name in seen:
                raise invalid("Name given twice", f"{name!r} in {seen[name]} and {file}")
            seen[name] = file
            jobs.append(expand(job, environ, missing))
    if missing:
        raise invalid("Missing environment variables", ", ".join(sorted(missing)))
    return jobs


def expand(value: Any, environ: Mapping[str, str], missing: set[str]) -> Any:
    """`value` with `${VAR}` replaced in every string; the names not set are added to `missing`."""
    if isinstance(value, str):

        def variable(match: re.Match[str]) -> str:
            if match[1]:
                return "${" + match[2] + "}"
            if match[2] not in environ:
                missing.add(match[2])
                return ""
            return environ[match[2]]

        return VARIABLE.sub(variable, value)
    if isinstance(value, list):
        return [expand(item, environ, missing) for item in value]
    if isinstance(value, dict):
        return {key: expand(item, environ, missing) for key, item in value.items()}
    return value


def validated(body: Mapping[str, Any], where: str) -> JobCreate:
    """A job as the server reads it (defaults filled in), by the same model; the file's errors as a 422
    would name them."""
    try:
        return JobCreate.model_validate(body)
    except ValidationError as exc:
        errors = [{"loc": list(e["loc"]), "msg": e["msg"]} for e in exc.errors()]
        raise invalid("Invalid job", where, errors) from exc


def comparable(job: JobCreate) -> dict[str, Any]:
    """A job's fields as a plan compares them: JSON, times in UTC (the server may keep another offset),
    secrets masked as answers mask them."""
    data = _utc(job.model_dump(include=set(COMPARED)), job.model_dump(mode="json", include=set(COMPARED)))
    data["action"], data["notify"] = masked_action(job.action), masked_notify(job.notify)
    return data


def _utc(python: Any, data: Any) -> Any:
    """`data` (a JSON dump) with each aware datetime of `python` (the same dump in Python) in UTC."""
    if isinstance(python, datetime) and python.tzinfo is not None:
        return python.astimezone(UTC).isoformat()
    if isinstance(python, dict) and isinstance(data, dict):
        return {key: _utc(python.get(key), value) for key, value in data.items()}
    if isinstance(python, list | tuple) and isinstance(data, list) and len(python) == len(data):
        return [_utc(p, d) for p, d in zip(python, data, strict=True)]
    return data


def leaves(path: str, before: Any, after: Any) -> list[tuple[str, Any, Any]]:
    """The values that differ, by their dotted path into nested objects (`schedule.cron`)."""
    if isinstance(before, dict) and isinstance(after, dict):
        keys = [*before, *(key for key in after if key not in before)]
        return [d for key in keys for d in leaves(f"{path}.{key}", before.get(key), after.get(key))]
    return [] if before == after else [(path, before, after)]


def served(answer: Mapping[str, Any]) -> dict[str, Any]:
    """The server's answer in the same form: read by the same model, so that equal values written
    differently (a timestamp's offset, a default) compare equal; the masked fields as answered."""
    fields = {key: answer[key] for key in JobCreate.model_fields if key in answer}
    data = comparable(validated(fields, f"the server's job {answer.get('id')}"))
    data["action"], data["notify"] = answer["action"], answer["notify"]
    return data


def holds_secrets(job: JobCreate) -> bool:
    data = job.model_dump(mode="json")
    return masked_action(job.action) != data["action"] or masked_notify(job.notify) != data["notify"]


@dataclass
class Step:
    """One change of a plan: `create`, `update` (PATCH `changes` with If-Match `version`), `replace`
    (delete and create: a cancelled job, or one turning immediate or timed, cannot be changed),
    `pause`/`resume`, or `delete` (with prune). `diff`: (path, server's value, file's value)."""

    kind: str
    name: str
    job_id: str | None = None
    version: int | None = None
    body: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, Any] = field(default_factory=dict)
    diff: list[tuple[str, Any, Any]] = field(default_factory=list)


@dataclass
class Plan:
    steps: list[Step]
    unchanged: list[str]


def plan(
    desired: list[dict[str, Any]],
    current: list[dict[str, Any]],
    *,
    prune: bool = False,
    resend_secrets: bool = False,
) -> Plan:
    """The steps that make `current` (the owner's jobs as answered) match `desired` (the file's bodies)."""
    by_name: dict[str, dict[str, Any]] = {}
    for job in current:
        if job["name"] in by_name:
            raise ClientError(
                "Ambiguous name", f"two jobs on the server are named {job['name']!r}: delete or rename one"
            )
        by_name[job["name"]] = job
    steps: list[Step] = []
    unchanged: list[str] = []
    for body in desired:
        name = body["name"]
        wanted = validated(body, f"job {name!r}")
        answer = by_name.pop(name, None)
        if answer is None:
            steps.append(Step("create", name, body=body))
            continue
        want, have = comparable(wanted), served(answer)
        diff = [d for key in COMPARED for d in leaves(key, have[key], want[key])]
        if resend_secrets and holds_secrets(wanted):  # shown as a change whose values look the same
            diff += [(key, have[key], want[key]) for key in SECRET_FIELDS if want[key] == have[key]]
        immediate = {have["schedule"]["type"], want["schedule"]["type"]} & {"immediate"}
        if diff and (answer["state"] == "cancelled" or (immediate and want["schedule"] != have["schedule"])):
            steps.append(Step("replace", name, job_id=answer["id"], body=body, diff=diff))
            continue
        if diff:
            update = wanted.model_dump(mode="json")
            changes = {key: update[key] for key in dict.fromkeys(path.split(".")[0] for path, _, _ in diff)}
            steps.append(Step("update", name, answer["id"], answer["version"], changes=changes, diff=diff))
        if "paused" in body and bool(body["paused"]) != answer["paused"]:
            kind = "pause" if body["paused"] else "resume"
            steps.append(Step(kind, name, answer["id"], diff=[("paused", answer["paused"], body["paused"])]))
        elif not diff:
            unchanged.append(name)
    if prune:
        steps += [Step("delete", name, job_id=job["id"]) for name, job in by_name.items()]
    return Plan(steps, unchanged)


def exported(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """The jobs as an apply file: each masked secret becomes a `${VAR}` placeholder named after the job
    and where it sits (a header, a URL's userinfo), to be set in the environment of the next apply."""
    jobs = []
    for answer in answers:
        body = {key: answer[key] for key in JobCreate.model_fields if key in answer}
        prefix = _slug(answer["name"]) or "JOB"
        action = dict(body["action"])
        if action.get("type") == "http":
            action["headers"] = {
                key: value if key.lower() in PLAIN_HEADERS else f"${{{prefix}_{_slug(key)}}}"
                for key, value in action["headers"].items()
            }
            action["url"] = _placeholder_userinfo(action["url"], f"{prefix}_URL_USERINFO")
        body["action"] = action
        notify = dict(body["notify"])
        if notify.get("webhook_url"):
            notify["webhook_url"] = _placeholder_userinfo(notify["webhook_url"], f"{prefix}_WEBHOOK_USERINFO")
        body["notify"] = notify
        jobs.append(body)
    return {"jobs": jobs}


def _slug(text: str) -> str:
    return re.sub(r"[^A-Z0-9]+", "_", text.upper()).strip("_")


def _placeholder_userinfo(url: str, variable: str) -> str:
    return url.replace("****@", f"${{{variable}}}@", 1) if "://****@" in url else url


def dumped(data: Any, fmt: str) -> str:
    """A file's text: YAML (keys in the order given) or JSON."""
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    return str(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))


def masked_in(action: Mapping[str, Any]) -> bool:
    """Whether an action as answered hides a secret (a masked header value or URL userinfo), so it
    cannot be sent back as it is."""
    headers: Mapping[str, str] = action.get("headers") or {}
    url = str(action.get("url") or "")
    return any(name.lower() not in PLAIN_HEADERS for name in headers) or "://****@" in url
