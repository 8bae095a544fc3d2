"""Lists through the API: job labels, filters by state, type, name and label, keyset paging of every list
to its end, and bulk pause and resume of one's own jobs by ids or by filter."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import timedelta
from typing import Any

import pytest

from core.db import Sessions
from core.models import DeadLetter, Run, RunStatus, utcnow
from core.payloads import Trigger
from tests.api_client import ApiClient, AuthedClient, expect
from tests.test_jobs_api import create, http_job

DAILY = {"type": "cron", "cron": "@daily"}
URL = "http://example.org/x"


def job(name: str, schedule: dict[str, Any] = DAILY, **extra: Any) -> dict[str, Any]:
    return {**http_job(URL, schedule), "name": name, **extra}


async def walk(user: AuthedClient, url: str, **params: Any) -> list[str]:
    """Every item's id, page by page by cursor to the last page."""
    ids: list[str] = []
    page = expect(await user.get(url, params=params), 200)
    while True:
        ids += [item["id"] for item in page["items"]]
        if page["next_cursor"] is None:
            return ids
        page = expect(await user.get(url, params={**params, "cursor": page["next_cursor"]}), 200)
        assert page["total"] is None and page["page"] is None  # a cursor page counts nothing


async def ids_of(user: AuthedClient, **params: Any) -> list[str]:
    return [j["id"] for j in expect(await user.get("/jobs", params={"limit": 100, **params}), 200)["items"]]


async def test_labels_are_kept_shown_changed_and_audited(api: ApiClient) -> None:
    alice = await api.authed_user()
    made = await create(alice, job("labelled", labels={"team": "billing", "example.com/tier": "gold"}))
    assert made["labels"] == {"team": "billing", "example.com/tier": "gold"}
    assert (await create(alice, job("plain")))["labels"] == {}
    patched = expect(await alice.patch(f"/jobs/{made['id']}", json={"labels": {"team": "ops"}}), 200)
    assert patched["labels"] == {"team": "ops"} and patched["version"] == made["version"] + 1
    assert expect(await alice.get(f"/jobs/{made['id']}"), 200)["labels"] == {"team": "ops"}
    [entry, *_] = expect(await alice.get(f"/jobs/{made['id']}/audit"), 200)["items"]
    assert entry["action"] == "job.update"
    assert entry["changes"]["labels"] == {
        "before": {"team": "billing", "example.com/tier": "gold"},
        "after": {"team": "ops"},
    }
    assert await ids_of(alice, label="team:ops") == [made["id"]]
    assert await ids_of(alice, label="team:billing") == []  # the old label no longer finds it


@pytest.mark.parametrize(
    ("labels", "words"),
    [
        ({"-team": "x"}, "key's name"),
        ({"team": "two words"}, "label value"),
        ({"t" * 64: "x"}, "key's name"),
        ({"team": "v" * 64}, "label value"),
        ({"Example.COM/team": "x"}, "prefix"),
        ({f"k{i}": "v" for i in range(33)}, "at most 32"),
        ({"team": 7}, "string"),
    ],
)
async def test_bad_labels_are_422_naming_the_field(api: ApiClient, labels: Any, words: str) -> None:
    alice = await api.authed_user()
    problem = expect(await alice.post("/jobs", json=job("bad", labels=labels)), 422)
    assert problem["errors"][0]["loc"][:2] == ["body", "labels"], problem
    assert words in problem["errors"][0]["msg"], problem


async def test_lists_filter_by_state_type_name_and_labels(api: ApiClient) -> None:
    alice, bob = await api.authed_user(), await api.authed_user()
    billing_cron = await create(alice, job("Billing 100%", labels={"team": "billing", "env": "prod"}))
    billing_interval = await create(
        alice, job("billing sync", {"type": "interval", "every_seconds": 3600}, labels={"team": "billing"})
    )
    ops = await create(alice, job("ops report", labels={"team": "ops", "env": "prod"}, paused=True))
    await create(bob, job("billing of bob", labels={"team": "billing"}))

    assert await ids_of(alice, state="paused") == [ops["id"]]
    assert await ids_of(alice, type="interval") == [billing_interval["id"]]
    assert await ids_of(alice, type="cron") == [ops["id"], billing_cron["id"]]
    assert await ids_of(alice, q="BILLING") == [billing_interval["id"], billing_cron["id"]]
    assert await ids_of(alice, q="100%") == [billing_cron["id"]]
    assert await ids_of(alice, q="1_0") == []  # LIKE wildcards are plain characters
    assert await ids_of(alice, label="team:billing") == [billing_interval["id"], billing_cron["id"]]
    assert await ids_of(alice, label=["team:billing", "env:prod"]) == [billing_cron["id"]]
    assert await ids_of(alice, label="env:prod", state="scheduled", type="cron") == [billing_cron["id"]]
    assert await ids_of(alice, label="team:nobody") == []

    for params, name in [
        ({"state": "sleeping"}, "state"),
        ({"type": "weekly"}, "type"),
        ({"label": "team"}, "label"),
        ({"label": "-bad:x"}, "label"),
        ({"label": ["team:a", "team:b"]}, "label"),
        ({"q": "x" * 201}, "q"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "WyJ4Il0"}, "cursor"),
        ({"limit": 0}, "limit"),
    ]:
        problem = expect(await alice.get("/jobs", params=params), 422)
        assert problem["errors"][0]["loc"] == ["query", name], (params, problem)


async def test_jobs_page_by_cursor_to_the_end_without_repeats_or_gaps(api: ApiClient) -> None:
    alice = await api.authed_user()
    made = [(await create(alice, job(f"job {i}", labels={"batch": "a"})))["id"] for i in range(7)]
    newest_first = list(reversed(made))
    assert await walk(alice, "/jobs", limit=3) == newest_first
    assert await walk(alice, "/jobs", limit=3, label="batch:a", type="cron") == newest_first
    assert await walk(alice, "/jobs", limit=7) == newest_first

    first = expect(await alice.get("/jobs", params={"limit": 3}), 200)
    assert (first["total"], first["page"], first["limit"]) == (7, 1, 3)  # by number: counted
    by_number = expect(await alice.get("/jobs", params={"limit": 3, "page": 2}), 200)
    assert [j["id"] for j in by_number["items"]] == newest_first[3:6]
    after = expect(await alice.get("/jobs", params={"limit": 3, "cursor": by_number["next_cursor"]}), 200)
    assert [j["id"] for j in after["items"]] == newest_first[6:]
    problem = expect(await alice.get("/jobs", params={"page": 2, "cursor": first["next_cursor"]}), 422)
    assert problem["errors"][0]["loc"] == ["query", "page"]


async def test_jobs_page_by_number_counts_only_what_the_filter_keeps(api: ApiClient) -> None:
    """A page by number is read by its ids first, without the join of each job's last run: the count and
    the offset still keep to the caller's live jobs that match, and a page past the end is empty."""
    alice, bob = await api.authed_user(), await api.authed_user()
    made = [
        (await create(alice, job(f"job {i}", labels={"batch": "a" if i % 2 else "b"})))["id"]
        for i in range(7)
    ]
    await create(bob, job("not alice's", labels={"batch": "a"}))
    expect(await alice.delete(f"/jobs/{made[1]}"), 204)
    kept = [made[5], made[3]]  # batch a, live, newest first
    for page, items in [(1, kept), (2, [])]:
        found = expect(await alice.get("/jobs", params={"limit": 2, "page": page, "label": "batch:a"}), 200)
        assert ([j["id"] for j in found["items"]], found["total"], found["next_cursor"]) == (items, 2, None)
    last = expect(await alice.get("/jobs", params={"limit": 4, "page": 2}), 200)
    oldest = [made[2], made[0]]
    assert ([j["id"] for j in last["items"]], last["total"], last["next_cursor"]) == (oldest, 6, None)
    past = expect(await alice.get("/jobs", params={"limit": 4, "page": 3}), 200)
    assert (past["items"], past["total"], past["next_cursor"]) == ([], 6, None)


async def test_a_labels_only_page_keeps_to_live_jobs_with_every_label(api: ApiClient) -> None:
    """A page of a filter of labels only is counted, skipped or sought by cursor in the label rows alone
    (core/jobs.py `_label_index`): it still sees a label changed and a job deleted, keeps to every label
    asked for and to the caller's jobs, and shows an admin everyone's."""
    alice, bob, admin = await api.authed_user(), await api.authed_user(), await api.authed_admin()
    team = f"t{uuid.uuid4().hex[:8]}"  # the admin's list holds other tests' jobs too
    made = [
        (await create(alice, job(f"job {i}", labels={"team": team, "env": "prod" if i % 2 else "dev"})))["id"]
        for i in range(6)
    ]
    bobs = (await create(bob, job("bob's", labels={"team": team, "env": "prod"})))["id"]
    expect(await alice.delete(f"/jobs/{made[1]}"), 204)
    expect(await alice.patch(f"/jobs/{made[3]}", json={"labels": {"team": "other", "env": "prod"}}), 200)

    async def by_number(user: AuthedClient, page: int, labels: list[str]) -> tuple[list[str], int]:
        found = expect(await user.get("/jobs", params={"limit": 3, "page": page, "label": labels}), 200)
        return [j["id"] for j in found["items"]], found["total"]

    mine = [made[5], made[4], made[2], made[0]]
    assert await by_number(alice, 1, [f"team:{team}"]) == (mine[:3], 4)
    assert await by_number(alice, 2, [f"team:{team}"]) == (mine[3:], 4)
    assert await by_number(alice, 1, [f"team:{team}", "env:prod"]) == ([made[5]], 1)
    assert await by_number(alice, 1, ["env:prod", f"team:{team}"]) == ([made[5]], 1)
    assert (await by_number(alice, 1, ["team:other"]))[0] == [made[3]]
    assert await by_number(admin, 1, [f"team:{team}"]) == ([bobs, *mine[:2]], 5)
    assert await by_number(admin, 2, [f"team:{team}"]) == (mine[2:], 5)
    # and by cursor, which seeks in the same rows
    assert await walk(alice, "/jobs", limit=3, label=f"team:{team}") == mine
    assert await walk(alice, "/jobs", limit=1, label=[f"team:{team}", "env:dev"]) == mine[1:]
    assert await walk(admin, "/jobs", limit=2, label=f"team:{team}") == [bobs, *mine]


async def test_runs_and_dead_letters_page_by_cursor(api: ApiClient, sessions: Sessions) -> None:
    alice = await api.authed_user()
    made = await create(alice, job("with history"))
    now = utcnow()
    runs = [
        Run(
            id=f"{made['id']}-run-{i:02}",
            job_id=made["id"],
            owner_id=alice.id,
            status=RunStatus.FAILED if i % 3 == 0 else RunStatus.SUCCEEDED,
            trigger=Trigger.SCHEDULE,
            # Pairs of runs share a time: the id orders them.
            created_at=now - timedelta(minutes=i // 2),
        )
        for i in range(11)
    ]
    async with sessions() as session:
        session.add_all(runs)
        await session.flush()
        session.add_all(
            DeadLetter(
                job_id=made["id"], owner_id=alice.id, run_id=run.id, created_at=run.created_at, error="x"
            )
            for run in runs
            if run.status == RunStatus.FAILED
        )
        await session.commit()
    newest_first = [r.id for r in sorted(runs, key=lambda r: (r.created_at, r.id), reverse=True)]

    url = f"/jobs/{made['id']}/runs"
    assert await walk(alice, url, limit=4) == newest_first
    failed = [r for r in newest_first if r in {r.id for r in runs if r.status == RunStatus.FAILED}]
    assert await walk(alice, url, limit=2, status="failed") == failed
    letters = expect(await alice.get("/dead-letters", params={"limit": 100}), 200)["items"]
    assert [d["run_id"] for d in letters] == failed
    assert await walk(alice, "/dead-letters", limit=1) == [d["id"] for d in letters]
    for list_url in (url, "/dead-letters"):
        problem = expect(await alice.get(list_url, params={"cursor": "!!!"}), 422)
        assert problem["errors"][0]["loc"] == ["query", "cursor"]


def forged(at: str, row_id: str) -> str:
    """A cursor as the API writes one (base64url of [at, id]), of the client's own making."""
    return base64.urlsafe_b64encode(json.dumps([at, row_id]).encode()).decode().rstrip("=")


async def test_a_forged_cursor_is_a_422(api: ApiClient) -> None:
    """A cursor is the client's text: an id holding NUL or a lone surrogate failed the query on PostgreSQL,
    and a time with no UTC one (year 1 at +14:00) failed on SQLite, both as 500s."""
    alice = await api.authed_user()
    job = await create(alice, http_job("http://example.org/x", {"type": "cron", "cron": "0 3 * * *"}))
    cursors = [
        forged("2026-01-01T00:00:00+00:00", "a\x00b"),
        forged("2026-01-01T00:00:00+00:00", "\ud800"),
        forged("0001-01-01T00:00:00+14:00", "abc"),
        forged("2026-01-01T00:00:00", "abc"),  # no offset
    ]
    for url in ("/jobs", "/dead-letters", f"/jobs/{job['id']}/runs"):
        for cursor in cursors:
            problem = expect(await alice.get(url, params={"cursor": cursor}), 422)
            assert problem["errors"][0]["loc"] == ["query", "cursor"], (url, cursor)
    # One the API could have written is read: no job is older than it.
    older = forged("2026-01-01T00:00:00+02:00", "abc")
    assert expect(await alice.get("/jobs", params={"cursor": older}), 200)["items"] == []


async def test_admin_lists_page_by_cursor(api: ApiClient) -> None:
    admin = await api.authed_admin()
    users = await walk(admin, "/admin/users", limit=5)
    assert len(users) == len(set(users)) and admin.id in users
    counted = expect(await admin.get("/admin/users", params={"limit": 5}), 200)["total"]
    assert len(users) >= counted  # users registered meanwhile by tests running beside this one


async def test_bulk_pause_and_resume_by_ids_and_by_label(api: ApiClient) -> None:
    alice, bob = await api.authed_user(), await api.authed_user()
    billing = [(await create(alice, job(f"b{i}", labels={"team": "billing"})))["id"] for i in range(3)]
    ops = (await create(alice, job("ops", labels={"team": "ops"})))["id"]
    bobs = (await create(bob, job("bob's", labels={"team": "billing"})))["id"]

    body = {"filter": {"labels": {"team": "billing"}}, "note": "billing freeze"}
    assert expect(await alice.post("/jobs/pause", json=body), 200) == {"count": 3}
    for job_id in billing:
        paused = expect(await alice.get(f"/jobs/{job_id}"), 200)
        assert (paused["paused"], paused["state"], paused["pause_note"]) == (True, "paused", "billing freeze")
        assert paused["version"] == 2
        [entry, *_] = expect(await alice.get(f"/jobs/{job_id}/audit"), 200)["items"]
        assert entry["action"] == "job.pause"
        assert entry["changes"]["pause_note"] == {"before": None, "after": "billing freeze"}
    assert expect(await alice.get(f"/jobs/{ops}"), 200)["paused"] is False
    assert expect(await bob.get(f"/jobs/{bobs}"), 200)["paused"] is False  # another user's: untouched
    assert expect(await alice.post("/jobs/pause", json=body), 200) == {"count": 0}  # already paused

    # By ids: another user's id and an unknown one are ignored, as is a job that is not paused.
    ids = [billing[0], billing[1], ops, bobs, "nosuchjob"]
    resumed = expect(await alice.post("/jobs/resume", json={"ids": ids, "note": "thawed"}), 200)
    assert resumed == {"count": 2}
    assert [expect(await alice.get(f"/jobs/{i}"), 200)["paused"] for i in billing] == [False, False, True]
    [entry, *_] = expect(await alice.get(f"/jobs/{billing[0]}/audit"), 200)["items"]
    assert entry["action"] == "job.resume" and entry["changes"]["note"] == "thawed"
    assert expect(await bob.get(f"/jobs/{bobs}"), 200)["version"] == 1

    admin = await api.authed_admin()  # an admin's bulk call, too, acts on their own jobs only
    assert expect(await admin.post("/jobs/pause", json={"ids": [bobs]}), 200) == {"count": 0}
    assert expect(await admin.post("/jobs/pause", json={"filter": {}}), 200)["count"] >= 0
    assert expect(await bob.get(f"/jobs/{bobs}"), 200)["paused"] is False


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body"]),
        ({"ids": ["a"], "filter": {}}, ["body"]),
        ({"ids": []}, ["body", "ids"]),
        ({"filter": {"labels": {"-x": "y"}}}, ["body", "filter", "labels"]),
        ({"filter": {"type": "weekly"}}, ["body", "filter", "type"]),
        ({"filter": {"owner_id": "x"}}, ["body", "filter", "owner_id"]),
        ({"ids": ["a"], "note": "n" * 501}, ["body", "note"]),
    ],
)
async def test_bad_bulk_bodies_are_422(api: ApiClient, body: dict[str, Any], loc: list[str]) -> None:
    alice = await api.authed_user()
    problem = expect(await alice.post("/jobs/pause", json=body), 422)
    assert problem["errors"][0]["loc"][: len(loc)] == loc, problem
