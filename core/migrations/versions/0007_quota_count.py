"""quota count: a user's jobs that count against their quota as an index of their own

Every job create counts the owner's live, not cancelled jobs (`core/limits.py`), up to one past the quota,
in its write transaction. `ix_job_owner_live` does not hold `state`, so the count read every job's row:
at 3,000 jobs of one user that was about as much as the rest of a create (docs/bench.md). This partial
index holds exactly the counted jobs, and the count reads it alone.

Revision ID: 0007_quota_count
Revises: 0006_list_reads
Create Date: 2026-12-04 19:40:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_quota_count"
down_revision: str | Sequence[str] | None = "0006_list_reads"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTED = sa.text("deleted_at IS NULL AND state != 'cancelled'")


def upgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.create_index(
            "ix_job_owner_counted", ["owner_id"], unique=False, postgresql_where=COUNTED, sqlite_where=COUNTED
        )


def downgrade() -> None:
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_owner_counted")
