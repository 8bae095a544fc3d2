"""Misfires: what happens to a fire its job could not run on time (Temporal down, no worker, a pause).

Temporal makes up a late fire only inside the schedule's catch-up window, and under the overlap policy
`skip` at most one of several (the first starts, the others find it running). So Chronos says the policy
itself: `run_all` backfills each missed fire of the window, `run_latest` only the latest, `skip` none;
reconciliation does it for fires Temporal dropped (activities/reconcile.py), resume for the fires of a
pause (core/jobs.py). Every fire that does not run gets a run row of status `missed` or `skipped`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

# Temporal's scheduler takes up a new or rewritten spec a moment after the call returns: a fire in that
# moment may pass unseen, and is not judged a misfire.
SCHEDULE_SETTLE = timedelta(seconds=2)
# Temporal's own floor on a schedule's catch-up window: a fire later than this is a misfire.
TEMPORAL_MIN_CATCHUP = timedelta(seconds=10)


class MisfirePolicy(StrEnum):
    RUN_ALL = "run_all"
    RUN_LATEST = "run_latest"
    SKIP = "skip"


class Misfire(BaseModel):
    """A job's misfire rule: fires at most `window_seconds` old are made up by `policy`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    window_seconds: int = Field(
        ge=10, le=366 * 24 * 3600, description="how old a missed fire may be and still be made up"
    )
    policy: MisfirePolicy

    def catchup_window(self) -> timedelta:
        """The Temporal schedule's catch-up window. Under `run_all` Temporal starts the late fires it can
        and Chronos backfills the ones its overlap policy dropped; `run_latest` and `skip` keep Temporal
        from making up old fires itself (it would start the earliest), so Chronos alone decides."""
        if self.policy == MisfirePolicy.RUN_ALL:
            return timedelta(seconds=self.window_seconds)
        return TEMPORAL_MIN_CATCHUP


@dataclass(frozen=True)
class Verdict:
    """What becomes of the missed fires of one job: those to backfill, and those recorded as missed."""

    backfill: list[datetime]
    missed: dict[datetime, str]


def judge(misfire: Misfire | None, fires: list[datetime], now: datetime, why: str) -> Verdict:
    """Apply the job's misfire rule to fires that did not run (oldest first); `why` says how they were
    lost ("the job was paused", ...). Without a rule, none is made up (Temporal's catch-up window, the
    default behaviour, already had its chance)."""
    if misfire is None or misfire.policy == MisfirePolicy.SKIP or not fires:
        policy = " (misfire policy skip)" if misfire else ""
        return Verdict([], {fire: f"missed: {why}{policy}" for fire in fires})
    oldest = now - timedelta(seconds=misfire.window_seconds)
    within = [fire for fire in fires if fire >= oldest]
    if misfire.policy == MisfirePolicy.RUN_LATEST:
        within = within[-1:]
    missed = {}
    for fire in fires:
        if fire in within:
            continue
        if fire < oldest:
            missed[fire] = f"missed: {why}, older than the misfire window of {misfire.window_seconds} s"
        else:
            missed[fire] = f"missed: {why} (misfire policy run_latest ran only the latest)"
    return Verdict(within, missed)
