"""How jobs and runs appear in answers: their deep links into the Temporal Web UI, and their Public models."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from urllib.parse import quote

from core.config import Settings
from core.models import Job, JobPublic, JobState, Run, RunPublic, TemporalLinks, utcnow
from core.payloads import schedule_id
from core.schedules import is_fixed_delay, schedule_warnings, skipped_days

# The row's fields an answer shows. Answers are built from them as they are, not from a `model_dump` of the
# row: the dump turned the typed columns (schedule, action, ...) back into dicts for the answer model to
# validate again, half the cost of a jobs page's answers (docs/bench.md). Nor are they validated again
# (`model_construct`): a row's values were validated into their types as the row was read (`TypedJSON`,
# `EnumText`, `UTCDateTime`), and what is added here is built by this module.
JOB_FIELDS = tuple(name for name in JobPublic.model_fields if name in Job.model_fields)
RUN_FIELDS = tuple(name for name in RunPublic.model_fields if name in Run.model_fields)


def fields_of(row: object, names: tuple[str, ...]) -> dict[str, Any]:
    """These fields of a row, as they are (for its answer model to take)."""
    return {name: getattr(row, name) for name in names}


class Links:
    """Deep links into the Temporal Web UI for jobs and runs, and the answers that carry them."""

    def __init__(self, settings: Settings) -> None:
        self.base = f"{settings.temporal_ui_url.rstrip('/')}/namespaces/{quote(settings.temporal_namespace)}"

    def job(self, job: Job) -> TemporalLinks:
        """A timed job's schedule; the runs of an immediate job, or of one whose schedule is gone."""
        if job.immediate or job.state == JobState.CANCELLED or job.deleted_at is not None:
            query = quote(f'ChronosJobId="{job.id}"')
            return TemporalLinks(workflow_id=f"job-{job.id}", ui_url=f"{self.base}/workflows?query={query}")
        sid = schedule_id(job.id)
        if is_fixed_delay(job.schedule):  # its FixedDelayWorkflow, of the same id, starts the runs
            return TemporalLinks(workflow_id=sid, ui_url=f"{self.base}/workflows/{sid}")
        return TemporalLinks(schedule_id=sid, workflow_id=sid, ui_url=f"{self.base}/schedules/{sid}")

    def run(self, run: Run) -> TemporalLinks:
        url = f"{self.base}/workflows/{quote(run.id)}"
        if run.temporal_run_id:
            url += f"/{run.temporal_run_id}/history"
        return TemporalLinks(workflow_id=run.id, run_id=run.temporal_run_id, ui_url=url)

    def run_public(self, run: Run) -> RunPublic:
        return RunPublic.model_construct(**fields_of(run, RUN_FIELDS), temporal=self.run(run))

    def job_public(
        self, job: Job, upcoming: list[datetime], last: Run | None, note: str | None = None
    ) -> JobPublic:
        """One job as answers show it, with its coming fires (and a note on them) and its last run."""
        return JobPublic.model_construct(
            **fields_of(job, JOB_FIELDS),
            next_runs=upcoming,
            next_run_at=upcoming[0] if upcoming else None,
            next_run_note=note,
            last_run=self.run_public(last) if last else None,
            temporal=self.job(job),
            warnings=schedule_warnings(job.schedule),
            skipped=skipped_days(job.schedule, utcnow(), upcoming[-1] if upcoming else None),
        )
