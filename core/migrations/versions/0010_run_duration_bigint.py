"""run duration bigint: `run.duration_ms` holds 64 bits

A run's duration runs from its start to its end, through every backoff and pause: a month of daily retries,
or a run paused for a month, lasts more than 2**31 milliseconds (24.8 days). PostgreSQL's INTEGER refused
it ("integer out of range"), so such a run's end was never recorded. SQLite rebuilds the table for the
new declared type; its integers were 64 bits already.

Revision ID: 0010_run_duration_bigint
Revises: 0009_live_jobs_covering
Create Date: 2026-12-05 18:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010_run_duration_bigint"
down_revision: str | Sequence[str] | None = "0009_live_jobs_covering"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.alter_column("duration_ms", existing_type=sa.Integer(), type_=sa.BigInteger())


def downgrade() -> None:
    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.alter_column("duration_ms", existing_type=sa.BigInteger(), type_=sa.Integer())
