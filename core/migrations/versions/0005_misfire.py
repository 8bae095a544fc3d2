"""misfire: job.misfire, job.paused_at, job.fires_checked_at, and the backfill table

Revision ID: 0005_misfire
Revises: 0004_lists
Create Date: 2026-12-03 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_misfire"
down_revision: str | Sequence[str] | None = "0004_lists"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "backfill",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], name=op.f("fk_backfill_job_id_job")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backfill")),
    )
    with op.batch_alter_table("backfill", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_backfill_job_id"), ["job_id"], unique=False)
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("misfire", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("paused_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("fires_checked_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_column("fires_checked_at")
        batch_op.drop_column("paused_at")
        batch_op.drop_column("misfire")
    with op.batch_alter_table("backfill", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_backfill_job_id"))
    op.drop_table("backfill")
