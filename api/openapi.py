"""The OpenAPI document as the API answers: each error status an operation can return, as problem+json.

FastAPI documents errors as its own `{detail}` JSON and only its 422; Chronos answers RFC 9457 problems
(api/errors.py). Statuses that follow from an operation's shape are derived here, once, for every
operation; statuses that follow from what a service does (409, 429, 503) are declared on the routes.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field

PROBLEM = "application/problem+json"


class FieldError(BaseModel):
    loc: list[str | int] = Field(
        description="Where the fault is: `body`, `query`, `path` or `header`, then the field's path",
        examples=[["body", "action", "url"]],
    )
    msg: str


class Problem(BaseModel):
    """An RFC 9457 problem document: the body of every error answer, as application/problem+json.
    Extension members beyond these are allowed, as the RFC allows them."""

    model_config = ConfigDict(extra="allow")

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    instance: str | None = None
    errors: list[FieldError] | None = Field(default=None, description="The fields at fault (422)")
    error: str | None = Field(default=None, description="The RFC 6749 error code (token endpoint)")
    error_description: str | None = None


ERROR_DESCRIPTIONS = {
    400: "Malformed request: the body is not JSON, or nests too deep to parse",
    401: "No valid bearer token",
    403: "The token lacks a scope this operation needs, or (a new job) the account's job quota is used up",
    404: "Not found, or not yours",
    409: "The request conflicts with the current state",
    412: "If-Match names a version the job no longer has: fetch it again",
    413: "The body is over CHRONOS_MAX_BODY_BYTES",
    422: "Invalid input: `errors` names each field at fault",
    429: "Too many requests (credential attempts from this address, or the account's job writes or runs "
    "per minute); retry after `Retry-After` seconds",
    503: "A dependency (the database or Temporal) is unreachable; try again shortly",
}
PROBLEM_REF = {"$ref": "#/components/schemas/Problem"}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for statuses a route's service may answer; the content is filled in by `openapi`."""
    return {status: {"description": ERROR_DESCRIPTIONS[status]} for status in statuses}


def openapi(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document, built once."""
    if app.openapi_schema is None:
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        _document_errors(schema)
        _require_discriminators(schema)
        app.openapi_schema = schema
    return app.openapi_schema


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    """The methods the document lists for a concrete path: what a 405's Allow header must say. Of the
    templates that match, those with the fewest parameters name it (`/jobs/pause`, not `/jobs/{job_id}`),
    as a literal segment names a resource of its own."""
    matches: list[tuple[int, list[str]]] = []
    for template, operations in openapi(app)["paths"].items():
        if re.fullmatch(re.sub(r"\\\{[^/]*?\\\}", "[^/]+", re.escape(template)), path):
            methods = [method.upper() for method in operations if method in HTTP_METHODS]
            matches.append((template.count("{"), methods))
    fewest = min((params for params, _ in matches), default=0)
    return [method for params, methods in matches if params == fewest for method in methods]


def _document_errors(schema: dict[str, Any]) -> None:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    problem = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(problem.pop("$defs", {}))
    components["Problem"] = problem
    for path in schema["paths"].values():
        for method, operation in path.items():
            if method in HTTP_METHODS:
                _document_operation(operation)
    # FastAPI's own error shapes: no answer has them.
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def _document_operation(operation: dict[str, Any]) -> None:
    answers = operation["responses"]
    for status in _derived_statuses(operation):
        answers.setdefault(str(status), {"description": ERROR_DESCRIPTIONS[status]})
    for status, answer in answers.items():
        if status.isdigit() and int(status) >= 400:
            answer.setdefault("description", ERROR_DESCRIPTIONS.get(int(status), "Error"))
            answer["content"] = {PROBLEM: {"schema": PROBLEM_REF}}
        if status == "429":
            answer["headers"] = {
                "Retry-After": {
                    "description": "Seconds to wait",
                    "required": True,
                    "schema": {"type": "integer"},
                }
            }
        if status == "401":
            answer["headers"] = {
                "WWW-Authenticate": {"required": True, "schema": {"type": "string", "const": "Bearer"}}
            }


def _derived_statuses(operation: dict[str, Any]) -> Iterator[int]:
    """What any operation of this shape can answer: a body can be malformed or too large, any input
    invalid, a token missing or short of scopes, a resource named in the path absent."""
    parameters = operation.get("parameters", [])
    if "requestBody" in operation:
        yield from (400, 413)
    if parameters or "requestBody" in operation:
        yield 422
    security = operation.get("security", [])
    if security:
        yield 401
    if any(scopes for requirement in security for scopes in requirement.values()):
        yield 403
    if any(parameter["in"] == "path" for parameter in parameters):
        yield 404


def _require_discriminators(schema: dict[str, Any]) -> None:
    """A tagged union's members require their tag: `{}` is no schedule, though each member's `type` has a
    default for code that builds one."""
    components = schema["components"]["schemas"]
    unions = [node["discriminator"] for node in _walk(schema) if isinstance(node.get("discriminator"), dict)]
    for discriminator in unions:
        tag = discriminator["propertyName"]
        for ref in discriminator.get("mapping", {}).values():
            member = components[ref.rsplit("/", 1)[-1]]
            if tag not in member.setdefault("required", []):
                member["required"].insert(0, tag)


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)
