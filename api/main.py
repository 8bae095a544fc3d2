"""The FastAPI app factory: one engine, one session factory and one Temporal gateway per process."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from api import errors, openapi
from api.connections import guarded_protocol
from api.cors import CodecCors
from api.deps import refuse_nul
from api.headers import HeadAsGet, SecurityHeaders
from api.routes import admin, audit, auth, codec, dead_letters, docs, jobs, metrics, ops, runs
from api.throttle import Throttle
from api.web import install as install_dashboard
from api.web import temporal_ui
from api.web.render import templates
from core.config import Settings, get_settings
from core.db import create_schema, make_engine, make_sessions
from core.temporal import TemporalGateway, data_converter

# New objects between two collections of the youngest generation (Python's default is 700; the worker
# keeps it: its CPU per run did not move with 7,000).
YOUNG_OBJECTS = 7000


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
        # Everything loaded so far (modules, routes, schemas, templates) lives as long as the process:
        # out of the collector's sight, a full collection no longer walks those ~200,000 objects each
        # time (100+ ms of CPU, the dashboard's slowest requests). And a request makes thousands of
        # objects that die with it: collected every 700 new ones, they cost a list request 3-15 % of its
        # CPU, and with the rest frozen a full collection came every second, 12-18 ms each time
        # (docs/bench.md, "The API's garbage collector"). Both undone at shutdown.
        for name in templates.env.list_templates():
            templates.env.get_template(name)
        gc.collect()
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(YOUNG_OBJECTS, *thresholds[1:])
        try:
            if settings.temporal_ui_upstream:
                async with temporal_ui.upstream_client(app, settings.temporal_ui_upstream):
                    yield
            else:
                yield
        finally:
            gc.set_threshold(*thresholds)
            gc.unfreeze()
            await engine.dispose()

    app = FastAPI(
        title="Chronos",
        version="0.1.0",
        description="Durable job scheduling on Temporal: HTTP and email jobs, now, once or on a schedule.",
        lifespan=lifespan,
        docs_url=None,  # served by api/routes/docs.py from vendored assets
        redoc_url=None,
        dependencies=[Depends(refuse_nul)],
    )
    app.state.throttle = Throttle(settings.auth_attempts_per_minute, settings.trusted_proxies)
    errors.install(app)
    app.add_middleware(errors.BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(CodecCors, prefix=f"/api/v1{codec.PREFIX}/", ui_url=settings.temporal_ui_url)
    app.add_middleware(HeadAsGet)
    app.include_router(auth.router, prefix="/api/v1")
    for router in (jobs.router, runs.router, dead_letters.router, codec.router, admin.router, audit.router):
        app.include_router(router, prefix="/api/v1", responses=openapi.responses(503))
    app.include_router(ops.router)
    app.include_router(docs.router)
    app.mount("/static", StaticFiles(packages=[("api", "static")]), name="static")
    app.include_router(metrics.router)
    install_dashboard(app)
    if settings.temporal_ui_upstream:
        app.include_router(temporal_ui.router)
    app.openapi = lambda: openapi.openapi(app)  # type: ignore[method-assign]
    return app


def server_config(app: Any, host: str, port: int, settings: Settings, **options: Any) -> uvicorn.Config:
    """How every process serves the API: no `server` header naming uvicorn, and the client address left
    as the TCP peer's (uvicorn would take X-Forwarded-For from any local peer; api/throttle.py decides
    which proxies to believe). The event loop is uvloop's and the HTTP parser httptools' (both C): with
    asyncio's own loop and the pure-Python h11 parser they were a large share of each request's CPU
    (docs/bench.md). The protocol is httptools' with a deadline for each request and a cap on open
    connections, so no client can hold connections for nothing (api/connections.py)."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        server_header=False,
        proxy_headers=False,
        loop="uvloop",
        http=guarded_protocol(settings),
        ws="none",  # no route is a WebSocket; an upgrade would take its connection out of the guard
        **options,
    )
