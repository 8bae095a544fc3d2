"""What a new workflow run costs the worker before its first activation: the CPU time of one sandboxed
instance (the sandbox's set-up, the workflow module's import into it, the instance), for bare Temporal's
workflow and Chronos's, with the default sandbox and with the worker's own runner. In process, no server:
CPU time (`time.process_time`) holds up on a shared machine where wall time does not.

    python -m bench.sandbox [-n 300]
"""

from __future__ import annotations

import argparse
import asyncio
import time

import temporalio.converter
import temporalio.workflow
from temporalio.api.common.v1 import Payloads
from temporalio.api.failure.v1 import Failure
from temporalio.worker import WorkflowRunner
from temporalio.worker._workflow_instance import WorkflowInstanceDetails
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner
from temporalio.worker.workflow_sandbox._runner import _fake_info

from bench.bare import BareCallWorkflow
from bench.stack import machine, table
from worker import WORKFLOW_RUNNER
from workflows.run_job import JobRunWorkflow


def details(cls: type) -> WorkflowInstanceDetails:
    """What the worker hands the runner for a new run (the SDK's own validation info stands in for it)."""
    converter = temporalio.converter.DataConverter.default
    return WorkflowInstanceDetails(
        payload_converter_factory=converter._new_payload_converter,
        failure_converter_class=converter.failure_converter_class,
        interceptor_classes=[],
        defn=temporalio.workflow._Definition.must_from_class(cls),
        info=_fake_info,
        randomness_seed=-1,
        extern_functions={},
        disable_eager_activity_execution=False,
        worker_level_failure_exception_types=[],
        patch_activation_callback=None,
        last_completion_result=Payloads(),
        last_failure=Failure(),
    )


async def per_instance(runner: WorkflowRunner, cls: type, n: int) -> float:
    """Milliseconds of CPU per new instance, after a warm-up."""
    det = details(cls)
    for _ in range(20):
        runner.create_instance(det)
    started = time.process_time()
    for _ in range(n):
        runner.create_instance(det)
    return (time.process_time() - started) * 1000 / n


async def main(n: int) -> None:
    rows = []
    for name, runner in (
        ("default sandbox", SandboxedWorkflowRunner()),
        ("chronos worker's", WORKFLOW_RUNNER),
    ):
        bare = await per_instance(runner, BareCallWorkflow, n)
        chronos = await per_instance(runner, JobRunWorkflow, n)
        rows.append([name, bare, chronos])
    print(
        table(
            f"CPU ms per new workflow instance ({n} each) — {machine()}", ["runner", "bare", "Chronos"], rows
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-n", type=int, default=300, help="instances per measurement")
    asyncio.run(main(parser.parse_args().n))
