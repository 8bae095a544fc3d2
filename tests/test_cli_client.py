"""The `chronos` client's parts without a server: exit codes, problem details, the credentials file, jobs
files and apply plans. tests/test_cli_commands.py drives the whole command against `chronos dev`."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

import cli
from core.client import (
    EXIT_AUTH,
    EXIT_ERROR,
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_UNAVAILABLE,
    Client,
    ClientError,
    CredentialStore,
    Profile,
    exit_code_for,
    server_url,
)
from core.jobfile import exported, plan, read_jobs
from core.models import JobCreate
from core.payloads import masked_action, masked_notify
from tests.http_target import Answer, start_target

SECRET = "Bearer a-long-secret-token-1234"


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (404, EXIT_NOT_FOUND),
        (422, EXIT_INVALID),
        (400, EXIT_INVALID),
        (413, EXIT_INVALID),
        (503, EXIT_UNAVAILABLE),
        (429, EXIT_UNAVAILABLE),
        (401, EXIT_AUTH),
        (403, EXIT_AUTH),
        (409, EXIT_ERROR),
        (412, EXIT_ERROR),
        (500, EXIT_ERROR),
    ],
)
def test_each_kind_of_failure_has_its_exit_code(status: int, code: int) -> None:
    assert exit_code_for(status) == code


def test_a_problem_is_printed_with_each_field_error(capsys: pytest.CaptureFixture[str]) -> None:
    problem = {
        "type": "about:blank",
        "title": "Invalid request",
        "status": 422,
        "detail": "schedule.cron: minute 61 is out of range (and 1 more)",
        "errors": [
            {"loc": ["body", "schedule", "cron"], "msg": "minute 61 is out of range"},
            {"loc": ["body", "name"], "msg": "Field required"},
        ],
    }
    response = httpx.Response(422, json=problem, headers={"Content-Type": "application/problem+json"})
    error = ClientError.from_response(response)
    assert (error.exit_code, error.status, error.title) == (EXIT_INVALID, 422, "Invalid request")
    cli.report(error)
    printed = capsys.readouterr().err.splitlines()
    assert printed == [
        "chronos: Invalid request: schedule.cron: minute 61 is out of range (and 1 more)",
        "  schedule.cron: minute 61 is out of range",
        "  name: Field required",
    ]


def test_an_answer_that_is_not_a_problem_still_reads() -> None:
    error = ClientError.from_response(httpx.Response(502, text="Bad gateway from the proxy"))
    assert (error.exit_code, error.title, error.detail) == (
        EXIT_UNAVAILABLE,
        "Bad Gateway",
        "Bad gateway from the proxy",
    )


def test_credentials_are_kept_readable_by_their_owner_alone(tmp_path: Path) -> None:
    folder = tmp_path / "chronos"
    store = CredentialStore(folder)
    store.save("one", Profile("http://a:8000", "ada@example.org", "refresh-1"), make_current=True)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    os.chmod(store.path, 0o644)  # loosened by hand: the next write makes it private again
    store.save("two", Profile("http://b:8000", "ada@example.org", "refresh-2"), make_current=True)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert store.current() == "two" and store.named_for("http://a:8000") == "one"
    store.remove("two")
    assert store.current() == "one" and store.profile("two") is None
    assert json.loads(store.path.read_text())["profiles"]["one"]["refresh_token"] == "refresh-1"


def test_the_environment_overrides_the_stored_login(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = CredentialStore(tmp_path)
    monkeypatch.delenv("CHRONOS_URL", raising=False)
    monkeypatch.delenv("CHRONOS_TOKEN", raising=False)
    with pytest.raises(ClientError) as none:
        Client.signed_in(store=store)
    assert none.value.exit_code == EXIT_AUTH
    store.save("a:8000", Profile("http://a:8000", "ada@example.org", "refresh"))
    assert Client.signed_in(store=store).url == "http://a:8000"
    with pytest.raises(ClientError) as unknown:
        Client.signed_in("staging", store=store)
    assert unknown.value.exit_code == EXIT_AUTH
    monkeypatch.setenv("CHRONOS_URL", "b:9000/api/v1/")
    monkeypatch.setenv("CHRONOS_TOKEN", "a-token")
    client = Client.signed_in(store=store)
    assert (client.url, client.token, client.profile) == ("http://b:9000", "a-token", None)


def test_no_server_is_exit_code_5(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once the socket is closed
    client = Client(server_url(f"127.0.0.1:{port}"), token="t", store=CredentialStore(tmp_path))
    with pytest.raises(ClientError) as down:
        client.request("GET", "/jobs")
    assert down.value.exit_code == EXIT_UNAVAILABLE


def job(name: str = "nightly", cron: str = "0 3 * * *", **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "schedule": {"type": "cron", "cron": cron, "timezone": "Europe/Berlin"},
        "action": {"type": "http", "url": "https://example.org/hook", "headers": {"Authorization": SECRET}},
        **extra,
    }


def answer(body: dict[str, Any], job_id: str = "j1", **extra: Any) -> dict[str, Any]:
    """A job as the API answers it: defaults filled in, secrets masked."""
    model = JobCreate.model_validate(body)
    data = model.model_dump(mode="json")
    data |= {"action": masked_action(model.action), "notify": masked_notify(model.notify)}
    return data | {"id": job_id, "version": 3, "state": "scheduled", "owner_id": "u"} | extra


def test_a_file_matching_the_server_changes_nothing_though_its_secrets_are_masked() -> None:
    steps = plan([job()], [answer(job())])
    assert steps.steps == [] and steps.unchanged == ["nightly"]


def test_only_the_differences_are_sent_with_the_version() -> None:
    (step,) = plan([job(cron="0 4 * * *")], [answer(job())]).steps
    assert (step.kind, step.job_id, step.version) == ("update", "j1", 3)
    assert step.changes == {
        "schedule": JobCreate.model_validate(job(cron="0 4 * * *")).model_dump(mode="json")["schedule"]
    }
    assert step.diff == [("schedule.cron", "0 3 * * *", "0 4 * * *")]


def test_a_changed_secret_is_seen_through_its_mask_and_can_be_resent() -> None:
    rotated = job()
    rotated["action"]["headers"] = {"Authorization": "Bearer a-long-secret-token-9999"}
    (step,) = plan([rotated], [answer(job())]).steps
    assert step.kind == "update" and step.changes["action"]["headers"] == {
        "Authorization": "Bearer a-long-secret-token-9999"
    }
    assert plan([job()], [answer(job())], resend_secrets=True).steps[0].changes["action"]["headers"] == {
        "Authorization": SECRET
    }


def test_create_prune_pause_and_replace() -> None:
    server = [answer(job("old"), "j0"), answer(job(), "j1"), answer(job("gone"), "j2", state="cancelled")]
    steps = plan([job(paused=True), job("new"), job("gone", cron="0 5 * * *")], server, prune=True).steps
    assert [(s.kind, s.name, s.job_id) for s in steps] == [
        ("pause", "nightly", "j1"),
        ("create", "new", None),
        ("replace", "gone", "j2"),
        ("delete", "old", "j0"),
    ]
    assert [s.kind for s in plan([job()], server).steps] == []  # no prune, no change: the others stay


def test_labels_are_compared_and_sent_whole_like_any_field() -> None:
    labeled = job() | {"labels": {"team": "x", "example.com/tier": "gold"}}
    assert plan([labeled], [answer(labeled)]).unchanged == ["nightly"]
    (step,) = plan([labeled | {"labels": {"team": "y"}}], [answer(labeled)]).steps
    assert step.kind == "update" and step.changes == {"labels": {"team": "y"}}  # PATCH replaces the set
    assert step.diff == [("labels.team", "x", "y"), ("labels.example.com/tier", "gold", None)]
    (cleared,) = plan([job()], [answer(labeled)]).steps  # a file without labels: the job has none
    assert cleared.changes == {"labels": {}}
    (added,) = plan([labeled], [answer(job())]).steps
    assert added.diff == [("labels.team", None, "x"), ("labels.example.com/tier", None, "gold")]


def test_a_time_given_with_another_offset_is_the_same_time() -> None:
    once = {
        "name": "once",
        "schedule": {"type": "once", "run_at": "2030-01-01T10:00:00+01:00"},
        "action": job()["action"],
    }
    served = answer(once)
    served["schedule"]["run_at"] = "2030-01-01T09:00:00Z"
    assert plan([once], [served]).unchanged == ["once"]


def test_jobs_files_take_secrets_from_the_environment(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "jobs:\n- name: a\n  description: costs $${PRICE}\n  action: {headers: {X-Key: '${KEY}'}}\n"
    )
    (tmp_path / "b.json").write_text(json.dumps({"jobs": [{"name": "b", "url": "${URL}"}]}))
    (tmp_path / "notes.txt").write_text("not read")
    with pytest.raises(ClientError) as missing:
        read_jobs(tmp_path, {"KEY": "k"})
    assert (missing.value.exit_code, missing.value.detail) == (EXIT_INVALID, "URL")
    jobs = read_jobs(tmp_path, {"KEY": "k", "URL": "https://x"})
    assert jobs == [
        {"name": "a", "description": "costs ${PRICE}", "action": {"headers": {"X-Key": "k"}}},
        {"name": "b", "url": "https://x"},
    ]
    (tmp_path / "c.yaml").write_text("jobs:\n- name: a\n")
    with pytest.raises(ClientError, match="Name given twice"):
        read_jobs(tmp_path, {"KEY": "k", "URL": "https://x"})
    (tmp_path / "c.yaml").write_text("- name: c\n")
    with pytest.raises(ClientError, match="Not a jobs file"):
        read_jobs(tmp_path / "c.yaml", {})


def test_export_leaves_placeholders_where_secrets_were() -> None:
    body = job("Daily report")
    body["action"] |= {
        "url": "https://user:pw@example.org/hook",
        "headers": {"Authorization": SECRET, "Accept": "text/plain"},
    }
    body["notify"] = {"webhook_url": "https://token@hooks.example.org/x"}
    (written,) = exported([answer(body)])["jobs"]
    assert written["action"]["headers"] == {
        "Authorization": "${DAILY_REPORT_AUTHORIZATION}",
        "Accept": "text/plain",
    }
    assert written["action"]["url"] == "https://${DAILY_REPORT_URL_USERINFO}@example.org/hook"
    assert written["notify"]["webhook_url"] == "https://${DAILY_REPORT_WEBHOOK_USERINFO}@hooks.example.org/x"
    assert "id" not in written and written["name"] == "Daily report"


def test_the_shell_completes_commands() -> None:
    """What the installed completion script asks the command for (bash's protocol)."""
    env = {
        **os.environ,
        "_CHRONOS_COMPLETE": "complete_bash",
        "COMP_WORDS": "chronos jobs l",
        "COMP_CWORD": "2",
    }
    done = subprocess.run([sys.executable, "-m", "cli"], env=env, capture_output=True, text=True, timeout=60)
    assert done.stdout.split() == ["list"], done.stderr


def test_bulk_backfill_and_keyset_pages_are_sent_as_the_contract_says(tmp_path: Path) -> None:
    """Against a recording stand-in for a server: the requests of the commands for the bulk, backfill and
    keyset-paged list endpoints (the full round trip against `chronos dev` is in test_cli_commands.py)."""
    target = start_target()
    env = {
        **os.environ,
        "CHRONOS_URL": target.url(""),
        "CHRONOS_TOKEN": "t",
        "XDG_CONFIG_HOME": str(tmp_path),
    }

    def chronos(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "cli", *args], env=env, capture_output=True, text=True, timeout=60
        )

    try:
        target.script("/api/v1/jobs/pause", [Answer(body=b'{"count": 2}')])
        paused = chronos("jobs", "pause", "--label", "team:ops", "--note", "deploy")
        assert paused.returncode == 0 and "paused 2 job(s)" in paused.stderr, paused.stderr
        (request,) = target.requests["/api/v1/jobs/pause"]
        assert json.loads(request.body) == {"filter": {"labels": {"team": "ops"}}, "note": "deploy"}
        assert request.headers["Authorization"] == "Bearer t"
        assert chronos("jobs", "resume", "a", "--label", "team:ops").returncode == EXIT_INVALID
        target.script("/api/v1/jobs/resume", [Answer(body=b'{"count": 1}')])
        resumed = chronos("jobs", "resume", "a", "--note", "done", "--json")  # the job's own takes no note
        assert resumed.returncode == 0 and json.loads(resumed.stdout) == {"count": 1}, resumed.stderr
        assert json.loads(target.requests["/api/v1/jobs/resume"][0].body) == {"ids": ["a"], "note": "done"}

        target.script("/api/v1/jobs/j1/backfill", [Answer(202, body=b'{"count": 24}')])
        backfill = chronos(
            "jobs", "backfill", "j1", "--start", "2027-01-01T00:00:00Z", "--end", "2027-01-02T00:00:00Z"
        )
        assert backfill.returncode == 0 and "24 run(s) started" in backfill.stderr
        assert json.loads(target.requests["/api/v1/jobs/j1/backfill"][0].body) == {
            "start": "2027-01-01T00:00:00Z",
            "end": "2027-01-02T00:00:00Z",
        }

        first = "/api/v1/jobs?label=team%3Aops&label=env%3Aprod&limit=100"
        target.script(
            first, [Answer(body=json.dumps({"items": [{"id": "j1"}], "next_cursor": "c2"}).encode())]
        )
        target.script(
            f"{first}&cursor=c2",
            [Answer(body=json.dumps({"items": [{"id": "j2"}], "next_cursor": None}).encode())],
        )
        listed = chronos("jobs", "list", "--label", "team:ops", "--label", "env:prod", "--json")
        assert [job["id"] for job in json.loads(listed.stdout)["items"]] == ["j1", "j2"], listed.stderr
        small = "/api/v1/jobs?limit=1"
        target.script(
            small, [Answer(body=json.dumps({"items": [{"id": "j1"}], "next_cursor": "c"}).encode())]
        )
        target.script(f"{small}&cursor=c", [Answer(body=b'{"items": [{"id": "j2"}], "next_cursor": null}')])
        paged = chronos("jobs", "list", "--page-size", "1", "--json")
        assert [job["id"] for job in json.loads(paged.stdout)["items"]] == ["j1", "j2"], paged.stderr
    finally:
        target.close()
