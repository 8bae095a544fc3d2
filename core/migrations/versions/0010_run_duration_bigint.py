"""run duration bigint: `run.duration_ms` holds 64 bits

A run's duration runs from its start to its end, through every backoff and pause: a month of daily retries,
or a run paused for a month, lasts more than 2**31 milliseconds (24.8 days). PostgreSQL's INTEGER refused
it ("integer out of range"), so such a run's end was never recorded. SQLite's INTEGER holds 64 bits
already, and changing its declared type would copy the table, which the rows that refer to runs (attempts,
log lines, dead letters) forbid while foreign keys are enforced: SQLite is left as it is.

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


def _duration_type(old: sa.types.TypeEngine[int], new: sa.types.TypeEngine[int]) -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("run", "duration_ms", existing_type=old, type_=new, existing_nullable=True)


def upgrade() -> None:
    _duration_type(sa.Integer(), sa.BigInteger())


def downgrade() -> None:
    _duration_type(sa.BigInteger(), sa.Integer())
