"""Dead letters and stats through the API: a run that fails for good is listed, replayed and discarded."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.api_client import ApiClient, AuthedClient, expect
from tests.http_target import Answer, HttpTarget
from tests.test_jobs_api import create, finished_runs, http_job, path
from tests.waiting import eventually


async def dead_letters(user: Any, **params: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = expect(await user.get("/dead-letters", params=params), 200)["items"]
    return items


async def dead_letter_of(
    api: ApiClient, target: HttpTarget, answers: list[int | Answer]
) -> tuple[AuthedClient, dict[str, Any], dict[str, Any]]:
    """A new user, their immediate job whose run the target answers with `answers` (its first fails for
    good), and that run's dead letter."""
    alice = await api.authed_user()
    route = path()
    target.script(route, answers)
    job = await create(alice, http_job(target.url(route), {"type": "immediate"}))
    [letter] = await eventually(lambda: dead_letters(alice, job_id=job["id"]), "the dead letter")
    return alice, job, letter


async def test_failed_run_becomes_a_dead_letter_that_replays(api: ApiClient, target: HttpTarget) -> None:
    alice, bob = await api.authed_user(), await api.authed_user()
    route = path()
    target.script(route, [404, 200])  # 404 is not retried: the run fails after one attempt
    job = await create(alice, http_job(target.url(route), {"type": "immediate"}))
    [run] = await finished_runs(alice, job["id"], 1)
    assert (run["status"], run["attempts"]) == ("failed", 1)
    assert "404" in run["error"]
    [attempt] = expect(await alice.get(f"/runs/{run['id']}"), 200)["attempt_history"]
    assert (attempt["number"], attempt["status"], attempt["http_status"]) == (1, "failed", 404)
    logs = [line["message"] for line in expect(await alice.get(f"/runs/{run['id']}/logs"), 200)["items"]]
    assert any("HTTP 404" in m for m in logs) and any("not retryable" in m for m in logs), logs
    expect(await bob.get(f"/runs/{run['id']}/logs"), 404)
    [letter] = await eventually(lambda: dead_letters(alice, job_id=job["id"]), "the dead letter")
    assert (letter["run_id"], letter["attempts"]) == (run["id"], 1)
    assert await dead_letters(bob) == []
    expect(await bob.post(f"/dead-letters/{letter['id']}/replay"), 404)

    replay = expect(await alice.post(f"/dead-letters/{letter['id']}/replay"), 202)
    assert replay["trigger"] == "replay" and replay["job_id"] == job["id"]
    runs = await finished_runs(alice, job["id"], 2)
    assert {r["id"]: r["status"] for r in runs}[replay["id"]] == "succeeded"
    assert await dead_letters(alice, job_id=job["id"]) == []

    admin = await api.authed_admin()
    stats = expect(await alice.get("/stats"), 200)
    assert stats["last_hour"]["runs"] == {"failed": 1, "succeeded": 1}
    assert stats["last_hour"]["success_rate"] == 0.5 and stats["dead_letters"] == 0
    assert stats["jobs"] == {"completed": 1}
    assert expect(await bob.get("/stats"), 200)["last_day"]["runs"] == {}
    everyone = expect(await admin.get("/stats"), 200)
    assert sum(everyone["last_day"]["runs"].values()) >= 2


async def test_a_deleted_jobs_dead_letters_go_with_it(api: ApiClient, target: HttpTarget) -> None:
    """Replaying a deleted job is impossible, so its dead letters are not left listed: they are discarded."""
    alice, job, letter = await dead_letter_of(api, target, [400])
    admin = await api.authed_admin()
    expect(await alice.delete(f"/jobs/{job['id']}"), 204)
    assert await dead_letters(alice, job_id=job["id"]) == []
    assert await dead_letters(admin, job_id=job["id"]) == []
    expect(await alice.post(f"/dead-letters/{letter['id']}/replay"), 404)


async def test_discarded_dead_letter_is_gone(api: ApiClient, target: HttpTarget) -> None:
    alice, _, letter = await dead_letter_of(api, target, [400])
    expect(await alice.delete(f"/dead-letters/{letter['id']}"), 204)
    assert await dead_letters(alice) == []
    expect(await alice.delete(f"/dead-letters/{letter['id']}"), 404)


async def test_a_dead_letter_replayed_twice_at_once_runs_once(api: ApiClient, target: HttpTarget) -> None:
    """A double click on Replay, or a client's retry: each request found the letter and started a run of
    its own. A letter's replay now has one run id, so the second is refused, and a letter is discarded
    once."""
    alice, job, letter = await dead_letter_of(api, target, [400, 200])
    at = f"/dead-letters/{letter['id']}"
    replays = await asyncio.gather(*(alice.post(f"{at}/replay") for _ in range(5)))
    discards = await asyncio.gather(*(alice.delete(at) for _ in range(2)))
    # The others are 409s, or 404s if they read the letter after the first had settled it.
    statuses = sorted(answer.status_code for answer in replays)
    assert statuses[0] == 202 and set(statuses[1:]) <= {404, 409}, [answer.text for answer in replays]
    assert sorted(answer.status_code for answer in discards) == [404, 404]
    runs = expect(await alice.get(f"/jobs/{job['id']}/runs"), 200)["items"]
    assert sorted(run["trigger"] for run in runs) == ["immediate", "replay"]


async def test_a_dead_letter_is_discarded_once(api: ApiClient, target: HttpTarget) -> None:
    alice, job, letter = await dead_letter_of(api, target, [400])
    discards = await asyncio.gather(*(alice.delete(f"/dead-letters/{letter['id']}") for _ in range(4)))
    assert sorted(answer.status_code for answer in discards) == [204, 404, 404, 404]
    trail = expect(await alice.get(f"/jobs/{job['id']}/audit"), 200)["items"]
    assert [entry["action"] for entry in trail].count("dead_letter.discard") == 1
