"""The workflow action end to end: jobs through the API start the user's own workflows as children, on the
session's Temporal dev server, with the user's worker running the docs' example (tests/report_worker.py)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio import workflow
from temporalio.api.common.v1 import Payload
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError
from temporalio.worker import Replayer, Worker

from api.main import create_app
from core.codec import keyring
from core.config import Settings
from core.db import Sessions
from core.temporal import TemporalGateway
from tests.api_client import (
    ENCRYPTION_KEYS,
    ApiClient,
    AuthedClient,
    app_settings,
    expect,
    serve,
    session_converter,
)
from tests.histories import keep
from tests.report_worker import report_worker
from tests.test_jobs_api import FAST_RETRY, create, finished_runs, runs_of
from tests.waiting import eventually
from worker import WORKFLOWS, build_worker

DOC = Path(__file__).parents[1] / "docs" / "workflow-action.md"
# A payload as a Go or Java workflow may send one: a protobuf message of a type Chronos does not know.
UNKNOWN_PROTOBUF = {"encoding": b"json/protobuf", "messageType": b"acme.reports.v1.Report"}
ONE_TRY = {**FAST_RETRY, "max_attempts": 1}


def first_attempt() -> bool:
    """Whether this child is a run's first attempt: later ones carry their number in their id."""
    return workflow.info().workflow_id.endswith("-child")


@workflow.defn(name="FlakyReport", sandboxed=False)  # this module imports the whole app
class FlakyReport:
    """Fails its run's first attempt, succeeds the next."""

    @workflow.run
    async def run(self) -> str:
        if first_attempt():
            raise ApplicationError("the warehouse is not ready")
        return "done"


@workflow.defn(name="HeldReport", sandboxed=False)
class HeldReport:
    """Runs until released; released, it fails its run's first attempt and succeeds the next."""

    def __init__(self) -> None:
        self.released = False

    @workflow.signal
    def release(self) -> None:
        self.released = True

    @workflow.run
    async def run(self) -> str:
        await workflow.wait_condition(lambda: self.released)
        if first_attempt():
            raise ApplicationError("released to fail")
        return "released"


@workflow.defn(name="BytesReport", sandboxed=False)
class BytesReport:
    """Returns bytes that are not UTF-8: they decode, but are no JSON."""

    @workflow.run
    async def run(self) -> bytes:
        return b"\xff\x00report"


@workflow.defn(name="ProtobufReport", sandboxed=False)
class ProtobufReport:
    """Returns a protobuf message of a type Chronos does not know, as a Go or Java workflow may."""

    @workflow.run
    async def run(self) -> RawValue:
        return RawValue(Payload(metadata=UNKNOWN_PROTOBUF, data=b'{"rows": 42}'))


@workflow.defn(name="ProtobufFailure", sandboxed=False)
class ProtobufFailure:
    """Fails with a detail of a protobuf type Chronos does not know."""

    @workflow.run
    async def run(self) -> None:
        detail = RawValue(Payload(metadata=UNKNOWN_PROTOBUF, data=b'{"code": 7}'))
        raise ApplicationError("the warehouse said no", detail, non_retryable=True)


@pytest.fixture(scope="module")
def queues() -> dict[str, str]:
    """The user's task queues an operator allowed: the example's, the test workflows', and one no worker
    polls."""
    return {name: f"{name}-{uuid.uuid4().hex[:8]}" for name in ("reports", "tests", "idle")}


@pytest.fixture(scope="module")
async def wf_api(
    db_engine: AsyncEngine,
    sessions: Sessions,
    temporal_client: Client,
    tmp_path_factory: pytest.TempPathFactory,
    queues: dict[str, str],
) -> AsyncIterator[ApiClient]:
    """The API and a Chronos worker allowing the queues, and the user's workers on theirs."""
    queue = f"wfa-{uuid.uuid4().hex[:8]}"
    settings = app_settings(
        db_engine,
        tmp_path_factory.mktemp("wfa"),
        task_queue=queue,
        workflow_task_queues=list(queues.values()),
    )
    app = create_app(settings, TemporalGateway.of(temporal_client))
    async with (
        build_worker(temporal_client, sessions, queue, settings=settings) as worker,
        worker,
        report_worker(temporal_client, queues["reports"]),
        Worker(
            temporal_client,
            task_queue=queues["tests"],
            workflows=[FlakyReport, HeldReport, BytesReport, ProtobufReport, ProtobufFailure],
        ),
        serve(app) as client,
    ):
        yield client


def workflow_job(
    workflow_type: str, queue: str, retry: dict[str, Any] = FAST_RETRY, **action: Any
) -> dict[str, Any]:
    return {
        "name": "report",
        "schedule": {"type": "immediate"},
        "action": {"type": "workflow", "workflow_type": workflow_type, "task_queue": queue, **action},
        "retry_policy": retry,
    }


async def run_of(user: AuthedClient, job_id: str) -> str:
    [run] = await eventually(lambda: runs_of(user, job_id), f"the run of job {job_id}")
    return str(run["id"])


async def logs(user: AuthedClient, run_id: str) -> list[str]:
    return [line["message"] for line in expect(await user.get(f"/runs/{run_id}/logs"), 200)["items"]]


async def attempts(user: AuthedClient, run_id: str) -> list[str]:
    return [a["status"] for a in expect(await user.get(f"/runs/{run_id}"), 200)["attempt_history"]]


async def running(client: Client, workflow_id: str) -> bool:
    try:
        described = await client.get_workflow_handle(workflow_id).describe()
    except RPCError:  # not started yet
        return False
    return described.status == WorkflowExecutionStatus.RUNNING


async def test_the_child_result_is_the_run_result(wf_api, queues):
    """The docs' example: GenerateReport on the user's worker; its result is the run's."""
    alice = await wf_api.authed_user()
    job = await create(alice, workflow_job("GenerateReport", queues["reports"], input={"month": "2026-11"}))
    [run] = await finished_runs(alice, job["id"], 1)
    assert (run["status"], run["attempts"]) == ("succeeded", 1)
    assert run["result"]["output"] == {"report": "sales-2026-11.csv", "rows": 42}
    assert run["temporal"]["workflow_id"] == run["id"]  # the link stays the run's; the log names the child
    assert any(f"as child workflow {run['id']}-child" in line for line in await logs(alice, run["id"]))
    assert await attempts(alice, run["id"]) == ["succeeded"]


@pytest.mark.parametrize(
    ("workflow_type", "encoding"), [("BytesReport", "binary/plain"), ("ProtobufReport", "json/protobuf")]
)
async def test_a_child_result_chronos_cannot_read_is_a_note(wf_api, queues, workflow_type, encoding):
    """Converting it failed the run's workflow task over and over: the run never ended. Now the child's
    success is the run's, and the log says why its result is not kept."""
    alice = await wf_api.authed_user()
    job = await create(alice, workflow_job(workflow_type, queues["tests"]))
    [run] = await finished_runs(alice, job["id"], 1)
    assert (run["status"], run["attempts"], run["result"].get("output")) == ("succeeded", 1, None), run
    note = f"its result ({encoding}) cannot be kept as JSON"
    assert any(note in line for line in await logs(alice, run["id"])), await logs(alice, run["id"])


async def test_a_child_failure_whose_details_chronos_cannot_read_fails_the_run(wf_api, queues):
    """Decoding the failure's details failed the run's workflow task over and over; now only the message
    counts, as it did before, and the run fails as its child did."""
    alice = await wf_api.authed_user()
    job = await create(alice, workflow_job("ProtobufFailure", queues["tests"]))
    [run] = await finished_runs(alice, job["id"], 1)
    assert (run["status"], run["attempts"]) == ("failed", 1), run
    assert "the warehouse said no" in run["error"]


async def test_a_job_every_few_seconds_runs_the_example_worker(wf_api, queues):
    """The docs' example on a schedule: each fire runs GenerateReport, and each run shows its report."""
    alice = await wf_api.authed_user()
    body = workflow_job("GenerateReport", queues["reports"], input={"month": "2026-12"})
    job = await create(alice, {**body, "schedule": {"type": "interval", "every_seconds": 2}})
    try:
        runs = await finished_runs(alice, job["id"], 2)
    finally:
        expect(await alice.post(f"/jobs/{job['id']}/cancel"), 200)
    assert {run["status"] for run in runs} == {"succeeded"}
    assert all(run["result"]["output"]["report"] == "sales-2026-12.csv" for run in runs)


async def test_a_failed_child_is_retried_as_a_new_child(wf_api, queues, temporal_client):
    alice = await wf_api.authed_user()
    job = await create(alice, workflow_job("FlakyReport", queues["tests"]))
    [run] = await finished_runs(alice, job["id"], 1)
    assert (run["status"], run["attempts"], run["result"]["output"]) == ("succeeded", 2, "done")
    assert await attempts(alice, run["id"]) == ["failed", "succeeded"]
    lines = await logs(alice, run["id"])
    failed = f"attempt 1 failed: child workflow {run['id']}-child failed: the warehouse is not ready"
    assert any(line.startswith(failed) and "next attempt in 0.1 s" in line for line in lines), lines
    assert any(f"as child workflow {run['id']}-child-2" in line for line in lines), lines
    handle = temporal_client.get_workflow_handle(run["id"])
    await keep("local_workflow_action_retry", handle, keyring(Settings(encryption_keys=ENCRYPTION_KEYS)))
    replayer = Replayer(workflows=WORKFLOWS, data_converter=session_converter())
    await replayer.replay_workflow(await handle.fetch_history())


async def test_a_child_no_worker_runs_fails_by_its_timeout(wf_api, queues):
    alice = await wf_api.authed_user()
    idle = queues["idle"]
    body = workflow_job("GenerateReport", idle, retry=ONE_TRY, input={"month": "x"}, timeout_seconds=1)
    job = await create(alice, body)
    [run] = await finished_runs(alice, job["id"], 1)
    assert (run["status"], run["attempts"]) == ("failed", 1)
    assert run["error"] == f"no worker on task queue {idle} ran GenerateReport within 1 s"


async def test_cancelling_the_run_cancels_its_child(wf_api, queues, temporal_client):
    alice = await wf_api.authed_user()
    job = await create(alice, workflow_job("HeldReport", queues["tests"]))
    run_id = await run_of(alice, job["id"])
    child = f"{run_id}-child"
    await eventually(lambda: running(temporal_client, child), "the child to run")
    expect(await alice.post(f"/runs/{run_id}/cancel"), 202)
    [run] = await finished_runs(alice, job["id"], 1)
    assert run["status"] == "cancelled"

    async def cancelled() -> bool:
        described = await temporal_client.get_workflow_handle(child).describe()
        return described.status == WorkflowExecutionStatus.CANCELED

    await eventually(cancelled, "the child to be cancelled")


async def test_pause_holds_the_next_child_until_resume(wf_api, queues, temporal_client):
    """Paused while attempt 1 runs: it finishes (failed), its backoff passes, and no attempt 2 starts
    until the run resumes."""
    alice = await wf_api.authed_user()
    job = await create(alice, workflow_job("HeldReport", queues["tests"]))
    run_id = await run_of(alice, job["id"])
    await eventually(lambda: running(temporal_client, f"{run_id}-child"), "attempt 1 to run")
    expect(await alice.post(f"/runs/{run_id}/pause"), 202)
    await temporal_client.get_workflow_handle(f"{run_id}-child").signal(HeldReport.release)
    parent = temporal_client.get_workflow_handle(run_id)

    async def held() -> list[EventType.ValueType] | None:
        """The run's events once the backoff timer fired and the run decided what to do after it."""
        events = [event.event_type async for event in parent.fetch_history_events()]
        if EventType.EVENT_TYPE_TIMER_FIRED not in events:
            return None
        after = events[events.index(EventType.EVENT_TYPE_TIMER_FIRED) :]
        return events if EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED in after else None

    events = await eventually(held, "attempt 1 to fail and its backoff to pass")
    assert events.count(EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED) == 1
    assert await attempts(alice, run_id) == ["failed"]
    expect(await alice.post(f"/runs/{run_id}/resume"), 202)
    await eventually(lambda: running(temporal_client, f"{run_id}-child-2"), "attempt 2 to run")
    await temporal_client.get_workflow_handle(f"{run_id}-child-2").signal(HeldReport.release)
    [run] = await finished_runs(alice, job["id"], 1)
    assert (run["status"], run["attempts"], run["result"]["output"]) == ("succeeded", 2, "released")


async def test_a_queue_not_allowed_is_refused(wf_api):
    alice = await wf_api.authed_user()
    problem = expect(await alice.post("/jobs", json=workflow_job("GenerateReport", "someone-elses")), 422)
    assert problem["errors"][0]["loc"] == ["body", "action", "task_queue"]
    assert "someone-elses" in problem["detail"]


async def test_an_admin_allows_a_queue_for_one_user(wf_api):
    """A queue in one user's quotas is theirs to use; others still get the 422."""
    admin, alice, bob = await wf_api.authed_admin(), await wf_api.authed_user(), await wf_api.authed_user()
    queue = f"alice-{uuid.uuid4().hex[:8]}"
    quotas = {"quotas": {"workflow_task_queues": [queue]}}
    expect(await admin.patch(f"/admin/users/{alice.id}", json=quotas), 200)
    # Created, not run: a fire far ahead (no worker polls the queue).
    body = {
        **workflow_job("GenerateReport", queue),
        "schedule": {"type": "once", "run_at": "2099-01-01T00:00:00Z"},
    }
    job = await create(alice, body)
    expect(await bob.post("/jobs", json=body), 422)
    expect(await alice.delete(f"/jobs/{job['id']}"), 204)


def test_the_docs_show_the_tested_worker():
    """docs/workflow-action.md quotes tests/report_worker.py whole, so the example cannot drift."""
    example = (Path(__file__).parent / "report_worker.py").read_text()
    assert example in DOC.read_text()
