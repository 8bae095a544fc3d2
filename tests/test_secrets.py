"""An action's secrets never reach Temporal in clear, and answers, run logs and dead letters mask them.

The proof reads what anyone with the Temporal Web UI could read: histories and schedules fetched with a
plain client (no codec) from the session's dev server, searched byte by byte for each secret.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, ScheduleActionStartWorkflow

from core.codec import JOB_ID, is_encrypted
from core.payloads import RunInput
from tests.api_client import ApiClient, AuthedClient, expect
from tests.http_target import HttpTarget
from tests.test_dead_letters_api import dead_letters
from tests.test_jobs_api import create, finished_runs, http_job, path
from tests.waiting import eventually


def secret_action(target: HttpTarget, route: str) -> tuple[dict[str, Any], list[str]]:
    """An HTTP action with a secret in each place one hides: two headers, the URL's password, the body."""
    token, api_key, password, in_body = (f"s3cret{secrets.token_hex(12)}" for _ in range(4))
    url = target.url(route).replace("http://", f"http://robot:{password}@", 1)
    action = {
        "type": "http",
        "method": "POST",
        "url": url,
        "headers": {"Authorization": f"Bearer {token}", "X-Api-Key": api_key},
        "body": {"token": in_body},
    }
    return action, [token, api_key, password, in_body]


# Where the SDK and the server keep payloads of their own, never encoded by a codec: search attributes
# (ids only) and markers' bookkeeping (patch ids, local activity timings).
NOT_CHRONOS_DATA = frozenset({"search_attributes", "marker_recorded_event_attributes"})


def payloads_in(message: Message) -> Iterator[Payload]:
    """Every Payload of Chronos data inside a protobuf message: inputs, results, memos, failures."""
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.message_type is None or field.name in NOT_CHRONOS_DATA:
            continue
        if field.message_type.GetOptions().map_entry:
            values = value.values() if field.message_type.fields_by_name["value"].message_type else []
        elif field.is_repeated:
            values = value
        else:
            values = [value]
        for item in values:
            yield from payloads_in(item)


def plain_client(temporal_client: Client) -> Client:
    """What a Web UI user sees: the same server, no codec."""
    return Client(temporal_client.service_client, namespace=temporal_client.namespace)


async def test_no_secret_reaches_temporal_in_clear(
    api: ApiClient, temporal_client: Client, target: HttpTarget
) -> None:
    alice = await api.authed_user()
    cron_action, cron_secrets = secret_action(target, path())
    now_action, now_secrets = secret_action(target, path())
    cron = await create(
        alice, {**http_job("", {"type": "cron", "cron": "*/1 * * * * *"}), "action": cron_action}
    )
    now = await create(alice, {**http_job("", {"type": "immediate"}), "action": now_action})
    [run] = await finished_runs(alice, now["id"], 1)
    [scheduled, *_] = await finished_runs(alice, cron["id"], 1)
    assert (run["status"], scheduled["status"]) == ("succeeded", "succeeded")

    plain = plain_client(temporal_client)
    schedule = (await plain.get_schedule_handle(f"job-{cron['id']}").describe()).raw_description
    stored = {"schedule": schedule.SerializeToString()}
    payloads = list(payloads_in(schedule))
    for job_id, run_id in [(now["id"], run["id"]), (cron["id"], scheduled["id"])]:
        history = await plain.get_workflow_handle(run_id).fetch_history()
        stored[run_id] = b"".join(event.SerializeToString() for event in history.events)
        run_payloads = [p for event in history.events for p in payloads_in(event)]
        assert run_payloads and all(is_encrypted(p) for p in run_payloads)
        assert {p.metadata[JOB_ID] for p in run_payloads} == {job_id.encode()}, "the codec endpoint needs it"
        payloads += run_payloads
    for name, raw in stored.items():
        for secret in cron_secrets + now_secrets:
            assert secret.encode() not in raw, f"a secret is in clear in {name}"
    assert all(is_encrypted(p) for p in payloads)

    # Not vacuous: the codec's client reads the secrets back from the very same schedule.
    description = await temporal_client.get_schedule_handle(f"job-{cron['id']}").describe()
    action = description.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    [spec] = await temporal_client.data_converter.decode(action.args, [RunInput])
    assert spec.action.headers["X-Api-Key"] == cron_secrets[1]
    expect(await alice.delete(f"/jobs/{cron['id']}"), 204)


async def failed_run(user: AuthedClient, target: HttpTarget) -> tuple[dict[str, Any], dict[str, Any], str]:
    """A job whose URL has a password and whose target answers 500 until the attempts run out."""
    route = path()
    target.script(route, [500, 500, 500])
    action, [_, _, password, _] = secret_action(target, route)
    job = await create(user, {**http_job("", {"type": "immediate"}), "action": action})
    [run] = await finished_runs(user, job["id"], 1)
    assert (run["status"], run["attempts"]) == ("failed", 3)
    return job, run, password


async def test_the_url_password_is_masked_in_answers_logs_and_dead_letters(
    api: ApiClient, temporal_client: Client, target: HttpTarget
) -> None:
    alice = await api.authed_user()
    job, run, password = await failed_run(alice, target)
    for answer in (job, expect(await alice.get(f"/jobs/{job['id']}"), 200)):
        assert answer["action"]["url"].startswith("http://****@127.0.0.1:")
    logs = [line["message"] for line in expect(await alice.get(f"/runs/{run['id']}/logs"), 200)["items"]]
    assert any(m.startswith("attempt 1 started: POST http://****@127.0.0.1:") for m in logs), logs
    assert any("HTTP 500 from POST http://****@127.0.0.1:" in m for m in logs), logs
    assert "HTTP 500 from POST http://****@" in run["error"]
    [letter] = await eventually(lambda: dead_letters(alice, job_id=job["id"]), "the dead letter")
    assert letter["request"]["url"].startswith("http://****@127.0.0.1:")
    seen = [job, run, logs, letter, expect(await alice.get(f"/runs/{run['id']}"), 200)]
    assert password not in repr(seen)
    # In Temporal the failures are encrypted too: their messages may quote what a target answered.
    history = await plain_client(temporal_client).get_workflow_handle(run["id"]).fetch_history()
    raw = b"".join(event.SerializeToString() for event in history.events)
    assert b"HTTP 500" not in raw and password.encode() not in raw
