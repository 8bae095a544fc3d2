"""Answers serialised once. A route that returns a model has FastAPI dump it, validate the dump against the
response model and serialise it again; for a page of 100 jobs that was a quarter of the request. The
service's models are already the response model, so list routes hand them over as JSON directly (the
`response_model` still documents them)."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel


class ModelJSON(JSONResponse):
    """A JSONResponse, so the OpenAPI document shows the route's response model for it."""

    def render(self, content: Any) -> bytes:
        assert isinstance(content, BaseModel), "ModelJSON answers a pydantic model"
        return content.model_dump_json().encode()
