"""The worked example of docs/workflow-action.md, verbatim: a user's own worker running GenerateReport,
which a Chronos workflow action starts as a child. tests/test_workflow_action.py runs this very code."""

import asyncio
from typing import Any

from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

with workflow.unsafe.imports_passed_through():  # not workflow code: imported once, not per workflow run
    from core.config import get_settings
    from core.temporal import connect, data_converter


@workflow.defn(name="GenerateReport")
class GenerateReport:
    @workflow.run
    async def run(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"report": f"sales-{params['month']}.csv", "rows": 42}


def report_worker(client: Client, task_queue: str = "reports") -> Worker:
    return Worker(client, task_queue=task_queue, workflows=[GenerateReport])


async def main() -> None:
    # The same CHRONOS_* settings as `chronos dev`: its Temporal server, and its payload keys.
    settings = get_settings()
    client = await connect(settings.temporal_address, settings.temporal_namespace, data_converter(settings))
    async with report_worker(client):
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main())
