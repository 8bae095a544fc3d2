"""Excluded days and DST rules through the API: the preview, job answers read back from Temporal, and
the 422s that name the field."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from temporalio.client import Client, ScheduleActionStartWorkflow

from core.payloads import FixedCron, RunInput
from tests.api_client import ApiClient, expect
from tests.conftest import sqlite_only
from tests.test_jobs_api import create, http_job


@sqlite_only
async def test_preview_skips_and_names_holidays(api: ApiClient) -> None:
    alice = await api.authed_user()
    schedule = {
        "type": "cron",
        "cron": "0 9 * * MON-FRI",
        "timezone": "America/New_York",
        "exclude": {"holidays": "us", "dates": ["2027-12-28"]},
    }
    body = {"schedule": schedule, "after": "2027-12-20T00:00:00Z", "count": 6}
    preview = expect(await alice.post("/schedules/preview", json=body), 200)
    assert preview["next_runs"] == [
        "2027-12-20T14:00:00Z",
        "2027-12-21T14:00:00Z",
        "2027-12-22T14:00:00Z",
        "2027-12-23T14:00:00Z",
        "2027-12-27T14:00:00Z",
        "2027-12-29T14:00:00Z",
    ]
    assert preview["skipped"] == ["2027-12-24 Christmas Day (observed)", "2027-12-28 excluded date"]
    assert preview["description"] == (
        "at 09:00 on Monday through Friday, America/New_York, except on US public holidays and 1 date "
        "(America/New_York days)"
    )
    # Christmas Day itself is a Saturday: no fire was skipped, so it is not named.
    assert not any("12-25" in day for day in preview["skipped"])


@sqlite_only
async def test_preview_shows_the_dst_rule_and_its_limits(api: ApiClient) -> None:
    alice = await api.authed_user()
    schedule = {"type": "cron", "cron": "30 1 * * *", "timezone": "America/New_York"}
    after = "2027-11-06T12:00:00Z"
    both = {"schedule": {**schedule, "dst": {"repeat": "both"}}, "after": after, "count": 3}
    preview = expect(await alice.post("/schedules/preview", json=both), 200)
    assert preview["next_runs"] == ["2027-11-07T05:30:00Z", "2027-11-07T06:30:00Z", "2027-11-08T06:30:00Z"]
    assert preview["description"].endswith(
        "; times in a DST gap run right after it, repeated times run at both occurrences"
    )
    second = {"schedule": {**schedule, "dst": {"repeat": "second"}}, "after": after, "count": 2}
    assert expect(await alice.post("/schedules/preview", json=second), 200)["next_runs"] == [
        "2027-11-07T06:30:00Z",
        "2027-11-08T06:30:00Z",
    ]
    spring = {"type": "cron", "cron": "30 2 * * *", "timezone": "America/New_York", "dst": {"gap": "skip"}}
    skipped = {"schedule": spring, "after": "2027-03-13T00:00:00Z", "count": 2}
    assert expect(await alice.post("/schedules/preview", json=skipped), 200)["next_runs"] == [
        "2027-03-13T07:30:00Z",
        "2027-03-15T06:30:00Z",  # none on the 14th: 02:30 does not exist
    ]
    # East of UTC Temporal fires only one occurrence of a repeated time: the answer says which is lost.
    berlin = {"type": "cron", "cron": "30 2 * * *", "timezone": "Europe/Berlin", "dst": {"repeat": "both"}}
    warned = expect(await alice.post("/schedules/preview", json={"schedule": berlin}), 200)
    assert any("happens twice in Europe/Berlin" in w and "first occurrence" in w for w in warned["warnings"])
    elapsed = {"type": "cron", "cron": "*/30 * * * *", "dst": {"gap": "skip"}}
    warned = expect(await alice.post("/schedules/preview", json={"schedule": elapsed}), 200)
    assert [w.split(";")[0] for w in warned["warnings"]] == [
        "dst applies to fixed times (single hours, minutes and seconds, or lists of them)"
    ]


@sqlite_only
@pytest.mark.parametrize(
    ("exclude", "loc", "words"),
    [
        ({"holidays": "XX"}, ["holidays"], "unknown country 'XX'"),
        ({"holidays": "DE-ZZ"}, ["holidays"], "unknown subdivision 'ZZ' of DE"),
        ({"dates": ["2027-02-30"]}, ["dates", 0], "date"),
        ({"dates": ["1999-12-31"]}, ["dates"], "years 2000 to 2100"),
        ({"days": ["2027-12-24"]}, ["days"], "extra"),
    ],
)
async def test_bad_exclusions_name_the_field(
    api: ApiClient, exclude: dict[str, Any], loc: list[Any], words: str
) -> None:
    alice = await api.authed_user()
    for schedule in (
        {"type": "cron", "cron": "@daily", "exclude": exclude},
        {"type": "interval", "every_seconds": 3600, "exclude": exclude},
    ):
        problem = expect(await alice.post("/schedules/preview", json={"schedule": schedule}), 422)
        where = ["body", "schedule", "exclude", *loc]
        assert problem["errors"][0]["loc"] == where, problem
        assert words.lower() in problem["errors"][0]["msg"].lower(), problem


@sqlite_only
@pytest.mark.parametrize(
    ("schedule", "loc"),
    [
        ({"type": "cron", "cron": "@daily", "dst": {"gap": "later"}}, ["dst", "gap"]),
        ({"type": "cron", "cron": "@daily", "dst": {"repeat": "twice"}}, ["dst", "repeat"]),
        ({"type": "interval", "every_seconds": 60, "dst": {}}, ["dst"]),  # intervals run by elapsed time
        ({"type": "interval", "every_seconds": 60, "timezone": "Mars/Base"}, ["timezone"]),
    ],
)
async def test_bad_dst_rules_name_the_field(api: ApiClient, schedule: dict[str, Any], loc: list[str]) -> None:
    alice = await api.authed_user()
    problem = expect(await alice.post("/jobs", json=http_job("http://example.org/x", schedule)), 422)
    assert problem["errors"][0]["loc"] == ["body", "schedule", *loc], problem


async def test_a_job_skips_its_excluded_days_in_temporal(api: ApiClient, temporal_client: Client) -> None:
    """Noon UTC daily, excluding the next two days: Temporal's own next runs pass over them, and the
    answer names them; the dst rule reaches the runs' input."""
    alice = await api.authed_user()
    today = datetime.now(UTC).date()
    excluded = [(today + timedelta(days=n)).isoformat() for n in (1, 2)]
    schedule = {
        "type": "cron",
        "cron": "0 0 12 * * ?",
        "exclude": {"dates": excluded},
        "dst": {"gap": "skip", "repeat": "both"},
    }
    job = await create(alice, http_job("http://example.org/x", schedule))
    assert job["schedule"]["exclude"] == {"dates": excluded}
    assert job["schedule"]["dst"] == {"gap": "skip", "repeat": "both"}
    days = {datetime.fromisoformat(t).date().isoformat() for t in job["next_runs"]}
    assert len(job["next_runs"]) == 5 and not days & set(excluded)
    assert job["skipped"] == [f"{day} excluded date" for day in excluded]

    handle = temporal_client.get_schedule_handle(job["temporal"]["schedule_id"])
    described = await handle.describe()
    assert [c.comment for c in described.schedule.spec.skip] == ["excluded dates"] * len(
        {d[:7] for d in excluded}
    )
    action = described.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    [spec_input] = await temporal_client.data_converter.decode(action.args, [RunInput])
    assert spec_input.fixed_cron == FixedCron(cron="0 0 12 * * ?", timezone="UTC", gap="skip", repeat="both")

    listed = {j["id"]: j for j in expect(await alice.get("/jobs"), 200)["items"]}
    assert (
        listed[job["id"]]["next_runs"] == job["next_runs"] and listed[job["id"]]["skipped"] == job["skipped"]
    )
    plain = expect(
        await alice.patch(f"/jobs/{job['id']}", json={"schedule": {"type": "cron", "cron": "@daily"}}), 200
    )
    assert plain["skipped"] == [] and "exclude" not in plain["schedule"] and "dst" not in plain["schedule"]
    assert (await handle.describe()).schedule.spec.skip == []
