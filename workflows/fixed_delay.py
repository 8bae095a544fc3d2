"""FixedDelayWorkflow: a fixed-delay interval job (`job-<id>`), which a Temporal Schedule cannot express.

Each run is a JobRunWorkflow child like any scheduled run (trigger `schedule`); the loop waits for it to
end, then waits `every_seconds` on a durable timer, so worker and server restarts lose nothing. After an
outage the timer has passed and the next run starts at once. The loop continues as new every
RUNS_PER_HISTORY runs, so its history stays small whatever the job's age.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timedelta

from temporalio import workflow
from temporalio.common import SearchAttributePair
from temporalio.exceptions import ChildWorkflowError
from temporalio.workflow import ParentClosePolicy

with workflow.unsafe.imports_passed_through():
    from core.payloads import FIXED_DELAY_WORKFLOW, RUN_WORKFLOW, FixedDelayInput, Trigger
    from core.temporal import TRIGGER

RUNS_PER_HISTORY = 50


@workflow.defn(name=FIXED_DELAY_WORKFLOW)
class FixedDelayWorkflow:
    def __init__(self) -> None:
        self._spec: FixedDelayInput | None = None
        self._paused = False
        self._stopping = False
        # Set by every signal: a wait in progress looks again at what it waits for.
        self._woken = False
        self._running = False
        self._due: datetime | None = None

    @workflow.run
    async def run(self, spec: FixedDelayInput) -> None:
        self._spec = spec
        self._paused = spec.paused
        last_end = spec.last_end
        for _ in range(RUNS_PER_HISTORY):
            if not await self._wait_until_due(last_end):
                return
            await self._run_once()
            last_end = workflow.now()
            if self._stopping:
                return
            if workflow.info().is_continue_as_new_suggested():
                break
        workflow.continue_as_new(self.spec.model_copy(update={"paused": self._paused, "last_end": last_end}))

    @property
    def spec(self) -> FixedDelayInput:
        assert self._spec is not None, "set when the run begins"
        return self._spec

    async def _wait_until_due(self, last_end: datetime | None) -> bool:
        """Wait until the next run is due and the job is not paused; False when no run is to come (stopped,
        or the next one would start after end_at). A signal (update, pause, resume, stop) wakes the wait,
        so a new every_seconds counts from the same last end."""
        jitter = workflow.random().random()  # one draw per run, scaled by the jitter of the moment
        while not self._stopping:
            spec = self.spec
            due = workflow.now() if last_end is None else last_end + timedelta(seconds=spec.every_seconds)
            due += timedelta(seconds=jitter * spec.jitter_seconds) if last_end is not None else timedelta()
            if spec.start_at is not None and due < spec.start_at:
                due = spec.start_at
            if spec.end_at is not None and due > spec.end_at:
                return False
            self._due = due
            wait = (due - workflow.now()).total_seconds()
            if wait <= 0 and not self._paused:
                return True
            self._woken = False
            with contextlib.suppress(asyncio.TimeoutError):
                await workflow.wait_condition(lambda: self._woken, timeout=wait if wait > 0 else None)
        return False

    async def _run_once(self) -> None:
        """One run as a child, waited for to its end; a cancelled loop cancels its run and lets it record
        that before ending (a child left running would be terminated with the loop)."""
        run = self.spec.run
        info = workflow.info()
        child_id = f"{info.workflow_id}-{Trigger.SCHEDULE}-{workflow.uuid4().hex[:8]}"
        # The loop's own search attributes (the job's and owner's ids, given by the job service), with the
        # trigger: the run is found in the Web UI, and by pause and cancel, as a scheduled run is.
        attributes = info.typed_search_attributes
        if attributes.search_attributes:
            attributes = attributes.updated(SearchAttributePair(TRIGGER, str(Trigger.SCHEDULE)))
        self._running, self._due = True, None
        handle = await workflow.start_child_workflow(
            RUN_WORKFLOW,
            run,
            id=child_id,
            search_attributes=attributes,
            memo={"job_name": run.job_name},
            parent_close_policy=ParentClosePolicy.TERMINATE,
        )
        try:
            await workflow.wait([handle])
        except asyncio.CancelledError:
            handle.cancel()
            await workflow.wait([handle])
            raise
        finally:
            self._running = False
        with contextlib.suppress(ChildWorkflowError):  # failed or cancelled on its own: the mirror says so
            handle.result()

    @workflow.signal
    def update(self, spec: FixedDelayInput) -> None:
        """A PATCH: the new definition counts from the next run (the one in flight keeps its own)."""
        self._spec = spec.model_copy(update={"paused": self._paused, "last_end": None})
        self._woken = True

    @workflow.signal
    def pause(self) -> None:
        """No run starts while paused; the run in flight gets the job's pause signal from the API."""
        self._paused = self._woken = True

    @workflow.signal
    def resume(self) -> None:
        """The next run starts when it is due, or at once if that time passed while paused."""
        self._paused, self._woken = False, True

    @workflow.signal
    def stop(self) -> None:
        """The job was deleted or moved to a Temporal Schedule: no further run; the one in flight ends."""
        self._stopping = self._woken = True

    @workflow.query
    def next_run_at(self) -> datetime | None:
        """When the next run is due; None while a run is in flight (it counts from that run's end)."""
        return None if self._running else self._due


FIXED_DELAY_WORKFLOWS = [FixedDelayWorkflow]
