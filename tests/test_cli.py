"""`chronos dev` as a user runs it: a real process tree, stopped by SIGTERM, restarted on its data dir."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

from temporalio.api.enums.v1 import TaskQueueType
from temporalio.api.taskqueue.v1 import TaskQueue
from temporalio.api.workflowservice.v1 import DescribeTaskQueueRequest
from temporalio.client import Client

from core.config import Settings
from core.db import create_schema, make_engine, make_sessions
from core.models import Job
from core.temporal import connect
from tests.http_target import start_target
from tests.mirror_rows import add_job
from workflows.run_job import JobRunWorkflow
from workflows.specs import HttpAction, RunInput


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_dev(data_dir: Path, port: int, ui_port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "CHRONOS_TASK_QUEUE": "chronos"}
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "core.cli", "dev", "--data-dir", str(data_dir)),
            *("--temporal-port", str(port), "--temporal-ui-port", str(ui_port)),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # the URLs are printed once the server is up and the worker is started
        if line.startswith("Temporal Web UI:"):
            assert f":{ui_port}" in line
            return proc
    raise AssertionError(f"chronos dev exited ({proc.wait()}) before printing its URLs")


async def wait_for_poller(client: Client, queue: str) -> None:
    request = DescribeTaskQueueRequest(
        namespace=client.namespace,
        task_queue=TaskQueue(name=queue),
        task_queue_type=TaskQueueType.TASK_QUEUE_TYPE_WORKFLOW,
    )
    async with asyncio.timeout(60):
        # Another process's worker: Temporal offers no event for "a poller arrived", so ask until one has.
        while not (await client.workflow_service.describe_task_queue(request)).pollers:  # noqa: ASYNC110
            await asyncio.sleep(0.2)


def stop(proc: subprocess.Popen[str], port: int) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    with socket.socket() as s:  # the dev server child is gone too: its port is free again
        s.bind(("127.0.0.1", port))


async def job_in_mirror(data_dir: Path) -> Job:
    """The job rows in the dev mirror's own SQLite file."""
    engine = make_engine(Settings(data_dir=data_dir))
    await create_schema(engine)
    job = await add_job(make_sessions(engine))
    await engine.dispose()
    return job


async def test_dev_runs_jobs_stops_cleanly_and_keeps_history(tmp_path):
    port, ui_port = free_port(), free_port()
    target = start_target()
    run_id = f"job-cli-{uuid.uuid4().hex[:8]}"
    proc = start_dev(tmp_path, port, ui_port)
    try:
        client = await connect(f"127.0.0.1:{port}", "default")
        await wait_for_poller(client, "chronos")
        job = await job_in_mirror(tmp_path)
        spec = RunInput(job_id=job.id, owner_id=job.owner_id, action=HttpAction(url=target.url("/dev")))
        result = await client.execute_workflow(JobRunWorkflow.run, spec, id=run_id, task_queue="chronos")
        assert result.status == "succeeded"
        assert len(target.requests["/dev"]) == 1
    finally:
        stop(proc, port)
    assert (tmp_path / "temporal.db").exists()

    proc = start_dev(tmp_path, port, ui_port)
    try:
        client = await connect(f"127.0.0.1:{port}", "default")
        description = await client.get_workflow_handle(run_id).describe()
        assert description.status is not None and description.status.name == "COMPLETED"
    finally:
        stop(proc, port)
        target.server.shutdown()
