"""name search: a trigram index for the job list's name filter (`q`) on PostgreSQL

`q` is `lower(name) LIKE '%…%'`, which no B-tree serves: without this index every search reads all of
the owner's jobs. The index needs the pg_trgm extension; creating it needs rights the database user may
lack (on PostgreSQL 13 and later, CREATE on the database is enough, as pg_trgm is a trusted extension).
If it cannot be created, the index is skipped and the filter still works, by reading the rows. SQLite has
no such index: there this migration does nothing.

Revision ID: 0006_name_search
Revises: 0005_misfire
Create Date: 2026-12-03 22:20:00
"""

import logging
from collections.abc import Sequence

from alembic import op
from sqlalchemy.exc import DBAPIError

revision: str = "0006_name_search"
down_revision: str | Sequence[str] | None = "0005_misfire"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger(__name__)


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return
    try:
        with bind.begin_nested():  # a savepoint: a refusal leaves the rest of the upgrade intact
            bind.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DBAPIError as exc:
        log.warning("pg_trgm cannot be created (%s): the job name filter runs without its index", exc.orig)
        return
    op.execute("CREATE INDEX ix_job_name_trgm ON job USING gin (lower(name) gin_trgm_ops)")


def downgrade() -> None:
    # The extension stays: it may have been there before, or serve something else.
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_job_name_trgm")
