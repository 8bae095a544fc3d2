"""FixedDelayWorkflow's logic on the time-skipping test server, with a stand-in JobRunWorkflow whose runs
take as long as the test says: minutes of runs and delays pass in milliseconds. The end-to-end tier (API,
real worker, mirror) is test_fixed_delay.py."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

import pytest
from temporalio import workflow
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import CancelledError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from core.payloads import FixedDelayInput, HttpAction, RunInput, RunOutcome, RunResult
from tests.waiting import eventually
from workflows.fixed_delay import RUNS_PER_HISTORY, FixedDelayWorkflow

# Each stand-in run by its workflow id: (started, ended), on the test server's clock.
RUNS: dict[str, tuple[datetime, datetime | None]] = {}


@workflow.defn(name="JobRunWorkflow", sandboxed=False)  # writes RUNS
class TimedRun:
    """A run that takes `job_name` seconds (the loop passes its RunInput through as it is)."""

    @workflow.run
    async def run(self, spec: RunInput) -> RunResult:
        run_id, started = workflow.info().workflow_id, workflow.now()
        RUNS[run_id] = (started, None)
        await workflow.sleep(float(spec.job_name))
        RUNS[run_id] = (started, workflow.now())
        return RunResult(status=RunOutcome.SUCCEEDED, attempts=1)


def runs_of(loop_id: str) -> list[tuple[datetime, datetime | None]]:
    return sorted(times for run_id, times in RUNS.items() if run_id.startswith(f"{loop_id}-schedule-"))


def gaps(loop_id: str) -> list[float]:
    """Seconds from each run's end to the next run's start."""
    runs = runs_of(loop_id)
    return [(nxt[0] - end).total_seconds() for (_, end), nxt in itertools.pairwise(runs) if end is not None]


def loop_input(every: int, run_seconds: float, **extra: Any) -> FixedDelayInput:
    run = RunInput(
        job_id="j1", owner_id="u1", job_name=str(run_seconds), action=HttpAction(url="https://t.example/")
    )
    return FixedDelayInput(run=run, every_seconds=every, **extra)


@asynccontextmanager
async def loop(env: WorkflowEnvironment, spec: FixedDelayInput) -> AsyncIterator[WorkflowHandle[Any, Any]]:
    queue = f"fast-delay-{uuid.uuid4().hex[:8]}"
    async with Worker(env.client, task_queue=queue, workflows=[FixedDelayWorkflow, TimedRun]):
        loop_id = f"job-{uuid.uuid4().hex[:12]}"
        yield await env.client.start_workflow(FixedDelayWorkflow.run, spec, id=loop_id, task_queue=queue)


async def run_count(env: WorkflowEnvironment, loop_id: str, count: int, step: float = 10) -> None:
    """Move the clock on until the loop has started `count` runs."""

    async def started() -> bool:
        if len(runs_of(loop_id)) >= count:
            return True
        await env.sleep(step)
        return False

    await eventually(started, f"{count} runs of {loop_id}")


async def test_runs_longer_than_the_delay_start_the_delay_after_each_end(time_skipping_env):
    async with loop(time_skipping_env, loop_input(every=60, run_seconds=90)) as handle:
        await run_count(time_skipping_env, handle.id, 4)
        await handle.signal(FixedDelayWorkflow.stop)
        await handle.result()
    runs = runs_of(handle.id)
    assert all(gap >= 60 for gap in gaps(handle.id)), gaps(handle.id)
    starts = [start for start, _ in runs]
    # Fixed rate would start every 60 s; each start here waits for the previous 90 s run and 60 s more.
    assert all((b - a).total_seconds() >= 150 for a, b in itertools.pairwise(starts))


async def test_pause_holds_the_next_run_and_resume_starts_it_when_due(time_skipping_env):
    async with loop(time_skipping_env, loop_input(every=60, run_seconds=5)) as handle:
        await run_count(time_skipping_env, handle.id, 1)
        await handle.signal(FixedDelayWorkflow.pause)
        await time_skipping_env.sleep(600)
        assert len(runs_of(handle.id)) == 1, "no run starts while paused"
        paused_for = await handle.query(FixedDelayWorkflow.next_run_at)
        await handle.signal(FixedDelayWorkflow.resume)
        await run_count(time_skipping_env, handle.id, 2, step=0.5)
        await handle.signal(FixedDelayWorkflow.stop)
        await handle.result()
    (_, first_end), (second_start, _) = runs_of(handle.id)
    assert first_end is not None and paused_for is not None
    # Due 60 s after the first run ended; resumed long after, it started then, not another 60 s later.
    assert second_start - first_end >= timedelta(seconds=600)
    assert second_start - paused_for >= timedelta(seconds=540)


async def test_an_update_counts_from_the_next_run(time_skipping_env):
    async with loop(time_skipping_env, loop_input(every=60, run_seconds=5)) as handle:
        await run_count(time_skipping_env, handle.id, 2)
        await handle.signal(FixedDelayWorkflow.update, loop_input(every=600, run_seconds=5))
        await run_count(time_skipping_env, handle.id, 4, step=60)
        await handle.signal(FixedDelayWorkflow.stop)
        await handle.result()
    assert gaps(handle.id)[0] < 600 <= min(gaps(handle.id)[1:]), gaps(handle.id)


async def test_the_window_bounds_the_runs(time_skipping_env):
    now = await time_skipping_env.get_current_time()
    start_at, end_at = now + timedelta(hours=1), now + timedelta(hours=1, seconds=150)
    spec = loop_input(every=60, run_seconds=5, start_at=start_at, end_at=end_at)
    async with loop(time_skipping_env, spec) as handle:
        await handle.result()  # ends by itself: the next run would start after end_at
    starts = [start for start, _ in runs_of(handle.id)]
    assert starts and starts[0] >= start_at and all(s <= end_at for s in starts)
    assert len(starts) == 3  # at start_at, +65 s, +130 s; +195 s is past end_at


async def test_cancel_cancels_the_run_in_flight_and_ends_the_loop(time_skipping_env):
    async with loop(time_skipping_env, loop_input(every=60, run_seconds=3600)) as handle:
        await run_count(time_skipping_env, handle.id, 1)
        await handle.cancel()
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()
        assert isinstance(failure.value.cause, CancelledError)
        ((run_id, _),) = [(r, t) for r, t in RUNS.items() if r.startswith(f"{handle.id}-schedule-")]
        child = time_skipping_env.client.get_workflow_handle(run_id)
        assert (await child.describe()).status == WorkflowExecutionStatus.CANCELED


async def test_the_loop_continues_as_new_and_keeps_counting_from_the_last_end(time_skipping_env):
    async with loop(time_skipping_env, loop_input(every=30, run_seconds=1)) as handle:
        first_run_id = (await handle.describe()).run_id
        await run_count(time_skipping_env, handle.id, RUNS_PER_HISTORY + 2, step=30)
        latest = time_skipping_env.client.get_workflow_handle(handle.id)
        assert (await latest.describe()).run_id != first_run_id, "continued as new"
        await latest.signal(FixedDelayWorkflow.stop)
        await latest.result()
    assert len(gaps(handle.id)) > RUNS_PER_HISTORY and min(gaps(handle.id)) >= 30


async def test_started_again_after_an_outage_the_due_run_starts_at_once(time_skipping_env):
    """Reconciliation restarts a lost loop with its last run's end: a delay that passed meanwhile is not
    waited again, one that has not is."""
    now = await time_skipping_env.get_current_time()
    overdue = loop_input(every=60, run_seconds=5, last_end=now - timedelta(hours=1))
    async with loop(time_skipping_env, overdue) as handle:
        await run_count(time_skipping_env, handle.id, 1, step=1)
        await handle.signal(FixedDelayWorkflow.stop)
        await handle.result()
    [(started, _)] = runs_of(handle.id)
    assert started < now + timedelta(seconds=60), "an overdue run does not wait a delay from the restart"
    waiting = loop_input(every=600, run_seconds=5, last_end=now)
    async with loop(time_skipping_env, waiting) as handle:
        await run_count(time_skipping_env, handle.id, 1, step=60)
        await handle.signal(FixedDelayWorkflow.stop)
        await handle.result()
    [(started, _)] = runs_of(handle.id)
    assert started >= now + timedelta(seconds=600)
