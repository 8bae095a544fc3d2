"""list reads: a user's live jobs as an index of their own, and a trigram index for the job list's name
filter (`q`) on PostgreSQL

`ix_job_owner_created` becomes `ix_job_owner_live`, partial on `deleted_at IS NULL` (every read by owner
asks for live jobs only), so counting a user's jobs (`total` of a page by number, the dashboard's first
page) reads the index alone on PostgreSQL once the table is vacuumed, not every row.

`q` is `lower(name) LIKE '%…%'`, which no B-tree serves: without the trigram index every search reads all
of the owner's jobs. It needs the pg_trgm extension; creating that needs rights the database user may lack
(on PostgreSQL 13 and later, CREATE on the database is enough, as pg_trgm is a trusted extension). If it
cannot be created, the index is skipped and the filter still works, by reading the rows. SQLite gets no
trigram index.

Revision ID: 0006_list_reads
Revises: 0005_misfire
Create Date: 2026-12-03 22:20:00
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.exc import DBAPIError

revision: str = "0006_list_reads"
down_revision: str | Sequence[str] | None = "0005_misfire"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger(__name__)
LIVE = sa.text("deleted_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_owner_created")
        batch_op.create_index(
            "ix_job_owner_live",
            ["owner_id", "created_at", "id"],
            unique=False,
            postgresql_where=LIVE,
            sqlite_where=LIVE,
        )
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
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_owner_live")
        batch_op.create_index("ix_job_owner_created", ["owner_id", "created_at", "id"], unique=False)
