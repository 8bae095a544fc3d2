"""The FastAPI app factory: one engine, one session factory and one Temporal gateway per process."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from api import errors
from api.cors import CodecCors
from api.routes import audit, auth, codec, dead_letters, docs, jobs, metrics, ops, runs
from api.throttle import Throttle
from core.config import Settings, get_settings
from core.db import create_schema, make_engine, make_sessions
from core.temporal import TemporalGateway, data_converter


def create_app(settings: Settings | None = None, temporal: TemporalGateway | None = None) -> FastAPI:
    """`temporal` lets tests hand in a connected client; by default the gateway connects on first use."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings)
        await create_schema(engine)
        app.state.settings = settings
        app.state.sessions = make_sessions(engine)
        app.state.temporal = temporal or TemporalGateway(
            settings.temporal_address, settings.temporal_namespace, data_converter(settings)
        )
        try:
            yield
        finally:
            await engine.dispose()

    app = FastAPI(
        title="Chronos",
        version="0.1.0",
        description="Durable job scheduling on Temporal: HTTP and email jobs, now, once or on a schedule.",
        lifespan=lifespan,
        docs_url=None,  # served by api/routes/docs.py from vendored assets
        redoc_url=None,
    )
    app.state.throttle = Throttle(settings.auth_attempts_per_minute)
    errors.install(app)
    app.add_middleware(errors.BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(CodecCors, prefix=f"/api/v1{codec.PREFIX}/", ui_url=settings.temporal_ui_url)
    for router in (auth.router, jobs.router, runs.router, dead_letters.router, codec.router, audit.router):
        app.include_router(router, prefix="/api/v1")
    app.include_router(ops.router)
    app.include_router(docs.router)
    app.mount("/static", StaticFiles(packages=[("api", "static")]), name="static")
    app.include_router(metrics.router)
    return app
