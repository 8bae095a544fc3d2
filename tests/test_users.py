"""Stopping users through the HTTP app: admin routes, roles, disabling (tokens refused, jobs paused)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from typing import Any

from joserfc import jwt
from temporalio.client import Client

from core.auth import signing_key
from tests.api_client import PASSWORD, ApiClient, AuthedClient, expect
from tests.http_target import HttpTarget
from tests.waiting import eventually
from workflows.run_job import JobRunWorkflow

DISABLED_NOTE = "paused: the account was disabled by an admin"


def cron_job(url: str = "http://example.org/x") -> dict[str, Any]:
    return {
        "name": "yearly",
        "schedule": {"type": "cron", "cron": "0 0 1 1 *"},
        "action": {"type": "http", "method": "POST", "url": url},
    }


async def patch_user(admin: AuthedClient, user_id: str, body: dict[str, Any], status: int = 200) -> Any:
    return expect(await admin.patch(f"/admin/users/{user_id}", json=body), status)


def token_issued_at(api: ApiClient, user: AuthedClient, iat: int) -> str:
    """An access token of `user` issued at `iat`, signed with the app's key."""
    claims = {
        "iss": api.settings.jwt_issuer,
        "aud": api.settings.jwt_audience,
        "sub": user.id,
        "email": user.email,
        "role": "user",
        "scope": "jobs:read jobs:write",
        "iat": iat,
        "exp": int(time.time()) + 600,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode({"alg": "HS256"}, claims, signing_key(api.settings), algorithms=["HS256"])


async def test_admin_lists_users_filtered_by_email(api: ApiClient) -> None:
    admin = await api.authed_admin()
    alice = await api.authed_user()
    page = expect(await admin.get("/admin/users", params={"q": alice.email.upper(), "limit": 5}), 200)
    assert (page["total"], page["page"], page["limit"]) == (1, 1, 5)
    [listed] = page["items"]
    assert listed["id"] == alice.id and listed["email"] == alice.email and listed["role"] == "user"
    assert listed["disabled"] is False and listed["disabled_at"] is None
    assert listed["quotas"] == {
        "max_jobs": None,
        "job_writes_per_minute": None,
        "runs_per_minute": None,
        "workflow_task_queues": None,
    }
    settings = api.settings
    assert listed["limits"] == {
        "max_jobs": settings.max_jobs_per_user,
        "job_writes_per_minute": settings.job_writes_per_minute,
        "runs_per_minute": settings.runs_per_minute,
    }
    everyone = expect(await admin.get("/admin/users", params={"limit": 100}), 200)
    assert everyone["total"] >= 2
    assert expect(await admin.get("/admin/users", params={"limit": 101}), 422)["errors"][0]["loc"] == [
        "query",
        "limit",
    ]


async def test_an_admin_changes_a_role_and_a_demotion_takes_effect_at_once(api: ApiClient) -> None:
    admin = await api.authed_admin()
    bob = await api.authed_user()
    promoted = await patch_user(admin, bob.id, {"role": "admin"})
    assert promoted["role"] == "admin"
    # A token carries the scopes of its login: the admin scope comes with the next one.
    expect(await bob.get("/admin/users"), 403)
    bob_admin = api.with_token((await api.login(bob.email))["access_token"])
    expect(await bob_admin.get("/admin/users"), 200)
    assert (await patch_user(admin, bob.id, {"role": "user"}))["role"] == "user"
    # The role is read from the account on every request, so the admin token loses its powers now.
    expect(await bob_admin.get("/admin/users"), 403)
    me = expect(await bob_admin.get("/auth/me"), 200)
    assert me["role"] == "user" and me["scopes"] == ["jobs:read", "jobs:write"]


async def test_admin_routes_are_closed_to_users_and_narrowed_admin_tokens(api: ApiClient) -> None:
    alice = await api.authed_user()
    narrowed = await api.authed_admin(scope="jobs:read jobs:write")
    for client in (alice, narrowed):
        expect(await client.get("/admin/users"), 403)
        expect(await client.patch(f"/admin/users/{alice.id}", json={"disabled": True}), 403)
    expect(await api.get("/admin/users"), 401)
    expect(await alice.get("/auth/me"), 200)  # nothing changed


async def test_an_admin_cannot_disable_or_demote_themself(api: ApiClient) -> None:
    admin = await api.authed_admin()
    for body in ({"disabled": True}, {"role": "user"}, {"role": "user", "disabled": False}):
        problem = await patch_user(admin, admin.id, body, 409)
        assert problem["detail"] == "an admin cannot disable or demote themself; ask another admin"
    mine = await patch_user(admin, admin.id, {"role": "admin", "quotas": {"max_jobs": 5}})
    assert mine["limits"]["max_jobs"] == 5
    expect(await admin.get("/admin/users"), 200)


async def test_two_admins_demoting_each_other_at_once_leave_one_admin(api: ApiClient) -> None:
    """Each checked only that it was not demoting itself, so both lost the role and no admin was left.
    Now the second waits for the first, then finds it is no admin any more."""
    for _ in range(3):
        ada, bob = await api.authed_admin(), await api.authed_admin()
        answers = await asyncio.gather(
            ada.patch(f"/admin/users/{bob.id}", json={"role": "user"}),
            bob.patch(f"/admin/users/{ada.id}", json={"role": "user"}),
        )
        assert sorted(answer.status_code for answer in answers) == [200, 403], [a.text for a in answers]
        roles = {
            (await ada.get("/auth/me")).json().get("role"),
            (await bob.get("/auth/me")).json().get("role"),
        }
        assert roles == {"admin", "user"}


async def test_quota_changes_sent_at_once_each_stand(api: ApiClient) -> None:
    """Each read the user's overrides and wrote them back with its own: the second undid the first."""
    admin, alice = await api.authed_admin(), await api.authed_user()
    keys = ("max_jobs", "job_writes_per_minute", "runs_per_minute")
    await asyncio.gather(
        *(admin.patch(f"/admin/users/{alice.id}", json={"quotas": {key: 7}}) for key in keys)
    )
    account = await patch_user(admin, alice.id, {})
    assert {key: account["quotas"][key] for key in keys} == dict.fromkeys(keys, 7)


async def test_bad_patches_name_the_field(api: ApiClient) -> None:
    admin = await api.authed_admin()
    alice = await api.authed_user()
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"role": None}, ["body", "role"]),
        ({"disabled": None}, ["body", "disabled"]),
        ({"role": "root"}, ["body", "role"]),
        ({"quotas": {"max_jobs": -1}}, ["body", "quotas", "max_jobs"]),
        ({"quotas": {"jobs": 5}}, ["body", "quotas", "jobs"]),
        ({"disable": True}, ["body", "disable"]),
    ]
    for body, loc in cases:
        problem = await patch_user(admin, alice.id, body, 422)
        assert problem["errors"][0]["loc"] == loc, body
    expect(await admin.patch("/admin/users/nobody", json={"disabled": True}), 404)


async def test_quota_overrides_are_set_kept_and_cleared(api: ApiClient) -> None:
    admin = await api.authed_admin()
    alice = await api.authed_user()
    first = await patch_user(admin, alice.id, {"quotas": {"max_jobs": 5, "runs_per_minute": 7}})
    assert first["quotas"] == {
        "max_jobs": 5,
        "job_writes_per_minute": None,
        "runs_per_minute": 7,
        "workflow_task_queues": None,
    }
    second = await patch_user(
        admin, alice.id, {"quotas": {"runs_per_minute": None, "job_writes_per_minute": 9}}
    )
    assert second["quotas"] == {
        "max_jobs": 5,
        "job_writes_per_minute": 9,
        "runs_per_minute": None,
        "workflow_task_queues": None,
    }
    assert second["limits"] == {
        "max_jobs": 5,
        "job_writes_per_minute": 9,
        "runs_per_minute": api.settings.runs_per_minute,
    }
    cleared = await patch_user(admin, alice.id, {"quotas": None})
    assert set(cleared["quotas"].values()) == {None}
    assert cleared["limits"]["max_jobs"] == api.settings.max_jobs_per_user


async def held(client: Client, run_id: str) -> bool:
    """Whether the run is paused with no attempt pending: none can start until it resumes."""
    handle = client.get_workflow_handle(run_id)
    pending = (await handle.describe()).raw_description.pending_activities
    return not pending and await handle.query(JobRunWorkflow.paused)


async def test_disabling_a_user_stops_their_tokens_and_pauses_their_jobs(
    api: ApiClient, target: HttpTarget, temporal_client: Client
) -> None:
    admin = await api.authed_admin()
    alice = await api.authed_user()
    scheduled = expect(await alice.post("/jobs", json=cron_job()), 201)
    mine = expect(await alice.post("/jobs", json={**cron_job(), "paused": True}), 201)
    expect(await alice.post(f"/jobs/{mine['id']}/pause", json={"note": "my own pause"}), 200)
    # A run in flight: its first attempt fails, the retry comes after 2 s unless the run is paused.
    route = f"/{uuid.uuid4().hex[:10]}"
    target.script(route, [500, 200])
    retry = {"max_attempts": 3, "backoff": "fixed", "initial_interval_seconds": 2, "max_interval_seconds": 2}
    flying = {**cron_job(target.url(route)), "schedule": {"type": "immediate"}, "retry_policy": retry}
    running = expect(await alice.post("/jobs", json=flying), 201)
    await target.wait_for(route, 1)

    disabled = await patch_user(admin, alice.id, {"disabled": True})
    assert disabled["disabled"] is True and disabled["disabled_at"]

    problem = expect(await alice.get("/auth/me"), 401)
    assert problem["detail"] == "the account is disabled; an admin can enable it again"
    refused = expect(await api.refresh(alice.tokens["refresh_token"]), 400)
    assert (refused["error"], refused["detail"]) == ("invalid_grant", problem["detail"])
    login = await api.token(grant_type="password", username=alice.email, password=PASSWORD)
    assert expect(login, 400)["detail"] == problem["detail"]

    for job in (scheduled, running):
        seen = expect(await admin.get(f"/jobs/{job['id']}"), 200)
        assert (seen["state"], seen["paused"], seen["pause_note"]) == ("paused", True, DISABLED_NOTE)
    state = (await temporal_client.get_schedule_handle(f"job-{scheduled['id']}").describe()).schedule.state
    assert state.paused and state.note == DISABLED_NOTE
    assert expect(await admin.get(f"/jobs/{mine['id']}"), 200)["pause_note"] == "my own pause"
    await eventually(lambda: held(temporal_client, running["last_run"]["id"]), "the run in flight to hold")
    assert len(target.requests[route]) == 1


async def test_enabling_lets_the_user_log_in_again_and_resumes_nothing(
    api: ApiClient, temporal_client: Client
) -> None:
    admin = await api.authed_admin()
    alice = await api.authed_user()
    job = expect(await alice.post("/jobs", json=cron_job()), 201)
    disabled = await patch_user(admin, alice.id, {"disabled": True})
    enabled = await patch_user(admin, alice.id, {"disabled": False})
    assert (enabled["disabled"], enabled["disabled_at"]) == (False, None)

    fresh = api.with_token((await api.login(alice.email))["access_token"])
    seen = expect(await fresh.get(f"/jobs/{job['id']}"), 200)
    assert (seen["state"], seen["pause_note"]) == ("paused", DISABLED_NOTE)
    state = (await temporal_client.get_schedule_handle(f"job-{job['id']}").describe()).schedule.state
    assert state.paused
    expect(await fresh.post(f"/jobs/{job['id']}/resume"), 200)
    # The access tokens issued before the disable stay dead after the enable.
    before = int(datetime.fromisoformat(disabled["disabled_at"]).timestamp()) - 1
    problem = expect(await api.with_token(token_issued_at(api, alice, before)).get("/auth/me"), 401)
    assert "disabled" in problem["detail"]
    assert expect(await api.refresh(alice.tokens["refresh_token"]), 400)["error"] == "invalid_grant"


async def test_disabling_again_pauses_what_was_left_running(api: ApiClient) -> None:
    """If Temporal failed part way through a disable, repeating it pauses the rest."""
    admin = await api.authed_admin()
    alice = await api.authed_user()
    job = expect(await alice.post("/jobs", json=cron_job()), 201)
    await patch_user(admin, alice.id, {"disabled": True})
    expect(await admin.post(f"/jobs/{job['id']}/resume"), 200)  # as if the pause had not happened
    await patch_user(admin, alice.id, {"disabled": True})
    assert expect(await admin.get(f"/jobs/{job['id']}"), 200)["pause_note"] == DISABLED_NOTE
