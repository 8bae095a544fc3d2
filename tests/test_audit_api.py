"""The audit trail and job versions through the API: every change is recorded with its actor and its
changed fields (secrets masked), readable per job by its owner and in full by admins, paged by cursor;
versions count changes, and a PATCH with a stale If-Match is refused."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from tests.api_client import ApiClient, AuthedClient, expect
from tests.http_target import HttpTarget
from tests.test_dead_letters_api import dead_letters
from tests.test_jobs_api import create, http_job, path
from tests.waiting import eventually

HOURLY = {"type": "cron", "cron": "@hourly"}


async def trail(user: AuthedClient, job_id: str, **params: Any) -> list[dict[str, Any]]:
    """The job's whole trail, newest first, walked page by page."""
    entries: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        page = expect(await user.get(f"/jobs/{job_id}/audit", params=query), 200)
        entries += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return entries


def secret_http(url: str) -> tuple[dict[str, Any], list[str]]:
    """An HTTP action with a secret header and a password in its URL."""
    token, password = f"t0ken{secrets.token_hex(12)}", f"pw{secrets.token_hex(12)}"
    action = {
        "type": "http",
        "url": url.replace("http://", f"http://robot:{password}@", 1),
        "headers": {"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    }
    return action, [token, password]


async def test_every_job_action_is_recorded_with_its_actor_and_changes(
    api: ApiClient, target: HttpTarget
) -> None:
    alice = await api.authed_user()
    action, old_secrets = secret_http(target.url(path()))
    job = await create(alice, {**http_job("", HOURLY), "name": "nightly", "action": action})
    new_action, new_secrets = secret_http(target.url(path()))
    expect(await alice.patch(f"/jobs/{job['id']}", json={"name": "nightly v2", "action": new_action}), 200)
    expect(await alice.post(f"/jobs/{job['id']}/pause", json={"note": "maintenance"}), 200)
    expect(await alice.post(f"/jobs/{job['id']}/resume"), 200)
    run = expect(await alice.post(f"/jobs/{job['id']}/trigger"), 202)
    expect(await alice.post(f"/jobs/{job['id']}/cancel"), 200)

    entries = await trail(alice, job["id"])
    assert [e["action"] for e in entries] == [
        "job.cancel",
        "job.trigger",
        "job.resume",
        "job.pause",
        "job.update",
        "job.create",
    ]
    assert all(e["actor"] == {"id": alice.id, "email": alice.email} for e in entries)
    assert all(e["job_id"] == job["id"] and e["target_user_id"] is None for e in entries)
    cancel, trigger, resume, pause, patch, created = (e["changes"] for e in entries)
    assert created["name"] == "nightly" and created["schedule"]["cron"] == "@hourly"
    assert created["action"]["url"].startswith("http://****@127.0.0.1:")
    assert created["action"]["headers"]["Content-Type"] == "application/json"
    assert patch["name"] == {"before": "nightly", "after": "nightly v2"}
    assert patch["version"] == {"before": 1, "after": 2}
    assert patch["action"]["after"]["headers"]["Authorization"].startswith("****")
    assert set(patch) == {"name", "action", "version"}
    assert pause["paused"] == {"before": False, "after": True}
    assert pause["pause_note"] == {"before": None, "after": "maintenance"}
    assert pause["state"] == {"before": "scheduled", "after": "paused"}
    assert resume["paused"] == {"before": True, "after": False} and resume["version"]["after"] == 4
    assert trigger == {"trigger": "manual", "run_id": run["id"]}
    assert cancel["state"]["after"] == "cancelled" and cancel["version"] == {"before": 4, "after": 5}
    assert [e["at"] for e in entries] == sorted((e["at"] for e in entries), reverse=True)

    expect(await alice.delete(f"/jobs/{job['id']}"), 204)
    admin = await api.authed_admin()
    [deleted, *_] = await trail(admin, job["id"])
    assert deleted["action"] == "job.delete" and deleted["changes"]["deleted_at"]["before"] is None
    seen = repr([entries, await trail(admin, job["id"])])
    for secret in old_secrets + new_secrets:
        assert secret not in seen


async def test_dead_letter_replay_and_discard_are_recorded(api: ApiClient, target: HttpTarget) -> None:
    alice = await api.authed_user()
    route = path()
    target.script(route, [404, 404])  # not retried: each run fails at once and leaves a dead letter
    job = await create(alice, http_job(target.url(route), {"type": "immediate"}))
    [first] = await eventually(lambda: dead_letters(alice, job_id=job["id"]), "the first dead letter")
    replay = expect(await alice.post(f"/dead-letters/{first['id']}/replay"), 202)

    async def second_letter() -> list[dict[str, Any]] | None:
        letters = [d for d in await dead_letters(alice, job_id=job["id"]) if d["id"] != first["id"]]
        return letters or None

    [second] = await eventually(second_letter, "the replayed run's dead letter")
    expect(await alice.delete(f"/dead-letters/{second['id']}"), 204)

    entries = await trail(alice, job["id"])
    assert [e["action"] for e in entries] == [
        "dead_letter.discard",
        "dead_letter.replay",
        "job.trigger",
        "job.create",
    ]
    discard, settled, trigger, _ = (e["changes"] for e in entries)
    assert trigger == {"trigger": "replay", "run_id": replay["id"]}
    assert settled == {
        "dead_letter_id": first["id"],
        "failed_run_id": first["run_id"],
        "run_id": replay["id"],
    }
    assert discard == {"dead_letter_id": second["id"], "failed_run_id": second["run_id"]}
    assert all(e["actor"]["id"] == alice.id for e in entries)


async def test_owner_reads_the_job_trail_others_get_404_admins_read_everything(api: ApiClient) -> None:
    alice, bob, admin = await api.authed_user(), await api.authed_user(), await api.authed_admin()
    job = await create(alice, http_job("http://example.org/a", HOURLY))
    other = await create(bob, http_job("http://example.org/b", HOURLY))
    expect(await alice.patch(f"/jobs/{job['id']}", json={"name": "renamed"}), 200)
    expect(await admin.post(f"/jobs/{other['id']}/pause"), 200)

    assert len(await trail(alice, job["id"])) == 2
    expect(await bob.get(f"/jobs/{job['id']}/audit"), 404)
    expect(await alice.get("/jobs/nope/audit"), 404)
    expect(await alice.get("/admin/audit"), 403)

    everything = expect(await admin.get("/admin/audit", params={"limit": 100}), 200)["items"]
    assert {job["id"], other["id"]} <= {e["job_id"] for e in everything}
    by_job = expect(await admin.get("/admin/audit", params={"job_id": other["id"]}), 200)
    assert [(e["action"], e["actor"]["id"]) for e in by_job["items"]] == [
        ("job.pause", admin.id),
        ("job.create", bob.id),
    ]
    by_actor = expect(await admin.get("/admin/audit", params={"actor": alice.id}), 200)["items"]
    assert [e["action"] for e in by_actor] == ["job.update", "job.create"]
    updates = expect(await admin.get("/admin/audit", params={"actor": alice.id, "action": "job.update"}), 200)
    assert [e["changes"]["name"]["after"] for e in updates["items"]] == ["renamed"]
    bad = expect(await admin.get("/admin/audit", params={"action": "job.explode"}), 422)
    assert bad["errors"][0]["loc"] == ["query", "action"]
    # An admin's change to bob's job is in the job's trail as bob reads it.
    assert [e["actor"]["id"] for e in await trail(bob, other["id"])] == [admin.id, bob.id]


async def test_cursor_walks_every_entry_exactly_once_while_entries_are_added(api: ApiClient) -> None:
    alice = await api.authed_user()
    job = await create(alice, http_job("http://example.org/x", HOURLY))
    for n in range(6):
        expect(await alice.patch(f"/jobs/{job['id']}", json={"name": f"name {n}"}), 200)
    everything = await trail(alice, job["id"], limit=100)
    assert len(everything) == 7

    walked: list[dict[str, Any]] = []
    page = expect(await alice.get(f"/jobs/{job['id']}/audit", params={"limit": 3}), 200)
    while True:
        walked += page["items"]
        # A change made mid-walk is newer than the cursor: it never shifts or repeats a later page.
        expect(await alice.patch(f"/jobs/{job['id']}", json={"description": f"after {len(walked)}"}), 200)
        if page["next_cursor"] is None:
            break
        params = {"limit": 3, "cursor": page["next_cursor"]}
        page = expect(await alice.get(f"/jobs/{job['id']}/audit", params=params), 200)
    assert [e["id"] for e in walked] == [e["id"] for e in everything]

    for cursor in ("not-a-cursor", "WyJ4Il0", "!!!"):
        problem = expect(await alice.get(f"/jobs/{job['id']}/audit", params={"cursor": cursor}), 422)
        assert problem["errors"][0]["loc"] == ["query", "cursor"]


async def test_versions_count_changes_and_answers_carry_them_as_etags(
    api: ApiClient, target: HttpTarget
) -> None:
    alice = await api.authed_user()
    created = await alice.post("/jobs", json=http_job(target.url(path()), HOURLY))
    job = expect(created, 201)
    assert (job["version"], created.headers["etag"]) == (1, '"1"')
    steps = [
        ("get", f"/jobs/{job['id']}", 1),
        ("patch", f"/jobs/{job['id']}", 2),
        ("post", f"/jobs/{job['id']}/pause", 3),
        ("post", f"/jobs/{job['id']}/resume", 4),
        ("post", f"/jobs/{job['id']}/cancel", 5),
    ]
    for method, where, version in steps:
        kwargs = {"json": {"description": "new"}} if method == "patch" else {}
        answer = await alice.request(method.upper(), where, **kwargs)
        assert (expect(answer, 200)["version"], answer.headers["etag"]) == (version, f'"{version}"')
        if where.endswith("/pause"):  # a run now is not a change to the job
            expect(await alice.post(f"/jobs/{job['id']}/trigger"), 202)
    listed = expect(await alice.get("/jobs"), 200)["items"]
    assert [j["version"] for j in listed if j["id"] == job["id"]] == [5]


async def test_stale_if_match_is_412_and_changes_nothing(api: ApiClient) -> None:
    alice = await api.authed_user()
    job = await create(alice, http_job("http://example.org/s", HOURLY))
    url = f"/jobs/{job['id']}"
    fresh = await alice.patch(url, json={"name": "mine"}, headers={"If-Match": '"1"'})
    assert expect(fresh, 200)["version"] == 2
    before = expect(await alice.get(url), 200)

    stale = await alice.patch(url, json={"name": "lost"}, headers={"If-Match": '"1"'})
    problem = expect(stale, 412)
    assert stale.headers["content-type"] == "application/problem+json"
    assert "changed since version 1" in problem["detail"] and "fetch it again" in problem["detail"]
    expect(await alice.patch(url, json={"name": "lost"}, headers={"If-Match": 'W/"2"'}), 412)
    # Tags that are no version: a superscript two (isdigit, but no int), past any version, too long for int.
    for tag in (b'"\xb2"', b'"99999999999"', b'"' + b"9" * 5000 + b'"'):
        expect(await alice.patch(url, json={"name": "lost"}, headers={b"If-Match": tag}), 412)
    assert expect(await alice.get(url), 200) == before
    assert len(await trail(alice, job["id"])) == 2

    malformed = expect(await alice.patch(url, json={"name": "x"}, headers={"If-Match": "2"}), 422)
    assert malformed["errors"][0]["loc"] == ["header", "if-match"]
    either = await alice.patch(url, json={"name": "listed"}, headers={"If-Match": '"1", "2"'})
    assert expect(either, 200)["version"] == 3
    anything = await alice.patch(url, json={"name": "any"}, headers={"If-Match": "*"})
    assert expect(anything, 200)["version"] == 4


async def test_a_patch_that_changes_nothing_makes_no_version(api: ApiClient) -> None:
    """An empty PATCH, or the dashboard's form saved as it was, took a new version and left an entry that
    changed nothing but the version. It answers the job as it is now; a stale If-Match is still a 412."""
    alice = await api.authed_user()
    job = await create(alice, http_job("http://example.org/s", HOURLY))
    url = f"/jobs/{job['id']}"
    for body in ({}, {"name": job["name"]}, {"description": None}, {"retry_policy": job["retry_policy"]}):
        answer = await alice.patch(url, json=body, headers={"If-Match": '"1"'})
        assert (expect(answer, 200)["version"], answer.headers["etag"]) == (1, '"1"'), body
    assert expect(await alice.patch(url, json={"description": "new"}), 200)["version"] == 2
    expect(await alice.patch(url, json={}, headers={"If-Match": '"1"'}), 412)
    assert [entry["action"] for entry in await trail(alice, job["id"])] == ["job.update", "job.create"]


async def test_concurrent_patches_from_one_version_give_one_200_and_one_412(api: ApiClient) -> None:
    alice = await api.authed_user()
    job = await create(alice, http_job("http://example.org/c", HOURLY))
    url = f"/jobs/{job['id']}"
    schedules = [{"type": "cron", "cron": f"0 {hour} * * *"} for hour in (3, 4)]
    answers = await asyncio.gather(
        *(alice.patch(url, json={"schedule": s}, headers={"If-Match": '"1"'}) for s in schedules)
    )
    assert sorted(a.status_code for a in answers) == [200, 412], [a.text for a in answers]
    [won] = [a.json() for a in answers if a.status_code == 200]
    now = expect(await alice.get(url), 200)
    assert now["version"] == 2 and now["schedule"] == won["schedule"]
    # Temporal's schedule is the winner's too: the next runs are read back from it.
    assert {t[11:13] for t in now["next_runs"]} == {won["schedule"]["cron"].split()[1].zfill(2)}
    assert [e["action"] for e in await trail(alice, job["id"])] == ["job.update", "job.create"]
