"""lists: job labels (the job's `labels` column and the `joblabel` rows filters look up), the job's
schedule type as a column, and indexes ending with each list's keyset sort key (created_at, id)

Revision ID: 0004_lists
Revises: 0003
Create Date: 2026-12-03 19:05:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_lists"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "joblabel",
        sa.Column("job_id", sa.String(), nullable=False),
        sa.Column("key", sa.String(length=317), nullable=False),
        sa.Column("value", sa.String(length=63), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["job.id"], name=op.f("fk_joblabel_job_id_job")),
        sa.PrimaryKeyConstraint("job_id", "key", name=op.f("pk_joblabel")),
    )
    with op.batch_alter_table("joblabel", schema=None) as batch_op:
        batch_op.create_index("ix_joblabel_key_value", ["key", "value", "job_id"], unique=False)

    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.add_column(sa.Column("labels", sa.JSON(), server_default="{}", nullable=True))
        batch_op.add_column(
            sa.Column("schedule_type", sa.String(length=16), server_default="", nullable=False)
        )
    _fill_schedule_types()
    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.create_index(
            "ix_job_owner_type_created", ["owner_id", "schedule_type", "created_at", "id"], unique=False
        )
        batch_op.create_index("ix_job_created", ["created_at", "id"], unique=False)

    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_index("ix_run_job_created")
        batch_op.create_index("ix_run_job_created", ["job_id", "created_at", "id"], unique=False)
        batch_op.create_index(
            "ix_run_job_status_created", ["job_id", "status", "created_at", "id"], unique=False
        )

    with op.batch_alter_table("deadletter", schema=None) as batch_op:
        batch_op.drop_index("ix_deadletter_owner_created")
        batch_op.create_index("ix_deadletter_owner_created", ["owner_id", "created_at", "id"], unique=False)
        batch_op.create_index("ix_deadletter_created", ["created_at", "id"], unique=False)

    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.create_index("ix_user_created", ["created_at", "id"], unique=False)


def _fill_schedule_types() -> None:
    """Existing jobs: the type read from their schedule's JSON (in Python: the same on both databases)."""
    job = sa.table("job", sa.column("id", sa.String()), sa.column("schedule", sa.JSON()))
    typed = sa.table("job", sa.column("id", sa.String()), sa.column("schedule_type", sa.String()))
    bind = op.get_bind()
    for row in bind.execute(sa.select(job.c.id, job.c.schedule)).all():
        kind = (row.schedule or {}).get("type", "")
        bind.execute(sa.update(typed).where(typed.c.id == row.id).values(schedule_type=kind))


def downgrade() -> None:
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.drop_index("ix_user_created")

    with op.batch_alter_table("deadletter", schema=None) as batch_op:
        batch_op.drop_index("ix_deadletter_created")
        batch_op.drop_index("ix_deadletter_owner_created")
        batch_op.create_index("ix_deadletter_owner_created", ["owner_id", "created_at"], unique=False)

    with op.batch_alter_table("run", schema=None) as batch_op:
        batch_op.drop_index("ix_run_job_status_created")
        batch_op.drop_index("ix_run_job_created")
        batch_op.create_index("ix_run_job_created", ["job_id", "created_at"], unique=False)

    with op.batch_alter_table("job", schema=None) as batch_op:
        batch_op.drop_index("ix_job_created")
        batch_op.drop_index("ix_job_owner_type_created")
        batch_op.drop_column("schedule_type")
        batch_op.drop_column("labels")

    with op.batch_alter_table("joblabel", schema=None) as batch_op:
        batch_op.drop_index("ix_joblabel_key_value")

    op.drop_table("joblabel")
