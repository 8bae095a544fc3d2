"""Sealing the mirror's job rows again with the newest key: rows of an older key (after a rotation, so the
old key can be retired) and rows from before sealing (secrets still in clear) are only rewritten when
their action or notify changes, so `chronos reseal` rewrites them all."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from core.models import Job

JOB: Table = Job.__table__  # type: ignore[attr-defined]
# Rows read and written per transaction: short transactions, so the API and workers are not held up.
BATCH = 500


@dataclass
class Resealed:
    rows: int = 0
    # Rows changed while the pass ran: the write that changed them sealed what it wrote, not the rest.
    changed: int = 0


async def reseal_jobs(engine: AsyncEngine) -> Resealed:
    """Every job row's action and notify, read (opened with any key the engine holds) and written back
    (sealed with its newest key). A row whose `updated_at` moved meanwhile is left alone and counted:
    writing back what was read would undo that change."""
    done, after = Resealed(), ""
    while True:
        async with engine.begin() as conn:
            rows = (
                await conn.execute(
                    select(JOB.c.id, JOB.c.action, JOB.c.notify, JOB.c.updated_at)
                    .where(JOB.c.id > after)
                    .order_by(JOB.c.id)
                    .limit(BATCH)
                )
            ).all()
            for row in rows:
                written = await conn.execute(
                    update(JOB)
                    .where(JOB.c.id == row.id, JOB.c.updated_at == row.updated_at)
                    .values(action=row.action, notify=row.notify)
                )
                done.rows += written.rowcount
                done.changed += 1 - written.rowcount
        if len(rows) < BATCH:
            return done
        after = rows[-1].id
