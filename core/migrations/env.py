"""Alembic environment of the SQL mirror: every process runs it at start (`core.db.create_schema`).

`create_schema` hands in its connection, already holding the schema lock. Alembic's command line (for
writing migrations, see alembic.ini) connects to CHRONOS_DATABASE_URL itself. Regenerate the initial
migration from the current models with (details in docs/operations.md):

    rm core/migrations/versions/0001_*.py
    CHRONOS_DATABASE_URL=sqlite:///$(mktemp -d)/empty.db .venv/bin/alembic revision --autogenerate \
        --rev-id 0001 -m "initial schema"
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any, Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection, TypeDecorator
from sqlmodel import SQLModel

from core import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from core.config import Settings
from core.db import include_object, make_engine

config = context.config


def render_item(type_: str, obj: Any, autogen_context: AutogenContext) -> str | Literal[False]:
    """Write our column types (UTCDateTime, sqlmodel's AutoString) as the plain SQL type they store.

    So a migration never imports application code, which may change or vanish after it was written.
    """
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return f"sa.{obj.impl!r}"
    return False


def run_migrations(connection: Connection) -> None:
    """Batch mode makes ALTERs work on SQLite too (it copies the table), so one migration fits both."""
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=True,
        render_item=render_item,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_from_command_line() -> None:
    engine = make_engine(Settings())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


if config.attributes.get("connection") is not None:
    run_migrations(config.attributes["connection"])
else:
    if config.config_file_name is not None:
        fileConfig(config.config_file_name)
    asyncio.run(run_from_command_line())
