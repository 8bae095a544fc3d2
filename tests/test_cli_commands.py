"""The `chronos` client commands as a user runs them, each a new process, against `chronos dev`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml

from tests.api_client import expect
from tests.chronos_dev import free_port, start_dev, stop
from tests.http_target import start_target
from tests.waiting import eventually


def chronos(
    config: Path, *args: str, input: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The `chronos` client as a user runs it, its logins kept under `config` (XDG_CONFIG_HOME)."""
    base = {
        k: v for k, v in os.environ.items() if k not in ("CHRONOS_URL", "CHRONOS_TOKEN", "CHRONOS_PROFILE")
    }
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        env={**base, "XDG_CONFIG_HOME": str(config), "COLUMNS": "200", **(env or {})},
        input=input,
        text=True,
        capture_output=True,
        timeout=60,
    )


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, (result.args, result.returncode, result.stdout, result.stderr)
    return result.stdout


def jobs_file(path: Path, target_url: str, cron: str, *, with_ping: bool = True) -> Path:
    """Two jobs: a yearly call whose Authorization header comes from the environment, and a ping that
    runs once, now."""
    nightly = {
        "name": "nightly",
        "schedule": {"type": "cron", "cron": cron, "timezone": "Europe/Berlin"},
        "action": {
            "type": "http",
            "url": f"{target_url}/nightly",
            "headers": {"Authorization": "Bearer ${HOOK_TOKEN}", "Content-Type": "application/json"},
        },
    }
    ping = {
        "name": "ping",
        "schedule": {"type": "immediate"},
        "action": {"type": "http", "url": f"{target_url}/ping"},
    }
    path.write_text(yaml.safe_dump({"jobs": [nightly, ping] if with_ping else [nightly]}))
    return path


@pytest.mark.timeout(400)  # some 40 runs of the command, each a new Python process
async def test_client_commands_as_a_user_runs_them(tmp_path: Path) -> None:
    """login, apply (twice: the second changes nothing), --dry-run, jobs list, runs logs --follow, export,
    apply --prune and logout, against `chronos dev`, with the exit codes scripts rely on."""
    port, ui_port, api_port = free_port(), free_port(), free_port()
    target = start_target()
    config = tmp_path / "config"
    url = f"http://127.0.0.1:{api_port}"
    secret = {"HOOK_TOKEN": "s3cret-token-of-the-nightly-hook"}
    proc = start_dev(tmp_path / "data", port, ui_port, api_port)
    try:
        async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http:
            user = {"email": "cli@example.org", "password": "correct horse battery"}
            expect(await http.post("/auth/register", json=user), 201)
        assert chronos(config, "jobs", "list").returncode == 6  # not signed in yet
        login = chronos(
            config, "login", url, "--email", user["email"], "--password-stdin", input=user["password"]
        )
        assert f"signed in to {url}" in ok(login) + login.stderr
        credentials = config / "chronos" / "credentials.json"
        assert credentials.stat().st_mode & 0o777 == 0o600
        assert (config / "chronos").stat().st_mode & 0o777 == 0o700

        file = jobs_file(tmp_path / "jobs.yaml", target.url("").rstrip("/"), "0 3 1 1 *")
        missing = chronos(config, "apply", "-f", str(file))
        assert missing.returncode == 4 and "HOOK_TOKEN" in missing.stderr
        first = chronos(config, "apply", "-f", str(file), env=secret)
        assert "+ create nightly" in ok(first) and "+ create ping" in first.stdout
        again = chronos(config, "apply", "-f", str(file), env=secret)
        assert ok(again) == "" and "no changes: 2 job(s) match the file" in again.stderr

        listed = json.loads(ok(chronos(config, "jobs", "list", "--json")))["items"]
        jobs = {job["name"]: job for job in listed}
        assert set(jobs) == {"nightly", "ping"}
        assert "s3cret" not in json.dumps(listed)
        table = ok(chronos(config, "jobs", "list"))
        assert "nightly" in table and "cron 0 3 1 1 * (Europe/Berlin)" in table

        # The ping's run, followed until it ends.
        async def ping_run() -> str | None:
            runs = json.loads(ok(chronos(config, "jobs", "runs", jobs["ping"]["id"], "--json")))["items"]
            return runs[0]["id"] if runs else None

        run_id = await eventually(ping_run, "the ping's run")
        followed = chronos(config, "runs", "logs", run_id, "--follow", "--interval", "0.2")
        assert f"run {run_id} succeeded" in followed.stderr
        assert "/ping" in ok(followed)

        # A new schedule: --dry-run shows it and changes nothing; apply changes it, keeping the secret.
        changed = jobs_file(tmp_path / "jobs.yaml", target.url("").rstrip("/"), "0 4 1 1 *")
        dry = chronos(config, "apply", "-f", str(changed), "--dry-run", env=secret)
        assert f"~ update nightly ({jobs['nightly']['id']})" in ok(dry)
        assert '- schedule.cron: "0 3 1 1 *"' in dry.stdout and '+ schedule.cron: "0 4 1 1 *"' in dry.stdout
        assert "ping" not in dry.stdout and "would make 1 change(s)" in dry.stderr
        nightly = json.loads(ok(chronos(config, "jobs", "get", jobs["nightly"]["id"], "--json")))
        assert nightly["schedule"]["cron"] == "0 3 1 1 *"
        assert "~ update nightly" in ok(chronos(config, "apply", "-f", str(changed), env=secret))
        nightly = json.loads(ok(chronos(config, "jobs", "get", jobs["nightly"]["id"], "--json")))
        assert (nightly["schedule"]["cron"], nightly["version"]) == ("0 4 1 1 *", 2)
        ok(chronos(config, "jobs", "trigger", nightly["id"]))
        (call,) = await target.wait_for("/nightly")
        assert call.headers["Authorization"] == "Bearer " + secret["HOOK_TOKEN"]

        # export: the secret stays out of the file; applied back with it in the environment, no change.
        exported = tmp_path / "exported.yaml"
        ok(chronos(config, "export", "-o", str(exported)))
        text = exported.read_text()
        assert "${NIGHTLY_AUTHORIZATION}" in text and "s3cret" not in text
        back = chronos(
            config,
            "apply",
            "-f",
            str(exported),
            env={"NIGHTLY_AUTHORIZATION": "Bearer " + secret["HOOK_TOKEN"]},
        )
        assert "no changes: 2 job(s) match the file" in back.stderr, back.stdout + back.stderr

        # --prune deletes the jobs the file leaves out.
        only = jobs_file(tmp_path / "only.yaml", target.url("").rstrip("/"), "0 4 1 1 *", with_ping=False)
        pruned = chronos(config, "apply", "-f", str(only), "--prune", env=secret)
        assert f"- delete ping ({jobs['ping']['id']})" in ok(pruned)
        assert [j["name"] for j in json.loads(ok(chronos(config, "jobs", "list", "--json")))["items"]] == [
            "nightly"
        ]

        # An expired access token is refreshed, and the rotated refresh token is stored.
        stored = json.loads(credentials.read_text())
        profile = stored["profiles"][stored["current"]]
        credentials.write_text(
            json.dumps(stored | {"profiles": {stored["current"]: profile | {"expires_at": 0}}})
        )
        ok(chronos(config, "whoami"))
        assert (
            json.loads(credentials.read_text())["profiles"][stored["current"]]["refresh_token"]
            != profile["refresh_token"]
        )

        # Exit codes, and problem details printed with their field errors.
        assert chronos(config, "jobs", "get", "no-such-job").returncode == 3
        invalid = chronos(config, "preview", "61 * * * *")
        assert (
            invalid.returncode == 4 and "Invalid request" in invalid.stderr and "schedule" in invalid.stderr
        )
        assert "Monday" in ok(chronos(config, "preview", "0 9 * * MON", "--count", "2"))
        assert chronos(config, "jobs", "list", env={"CHRONOS_TOKEN": "not-a-token"}).returncode == 6
        down = chronos(
            config,
            "jobs",
            "list",
            env={"CHRONOS_URL": f"http://127.0.0.1:{free_port()}", "CHRONOS_TOKEN": "x"},
        )
        assert down.returncode == 5 and "Server unavailable" in down.stderr

        # logout revokes the session: the stored refresh token no longer works anywhere.
        refresh = json.loads(credentials.read_text())["profiles"][stored["current"]]["refresh_token"]
        ok(chronos(config, "logout"))
        assert chronos(config, "jobs", "list").returncode == 6
        async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http:
            form = {"grant_type": "refresh_token", "refresh_token": refresh}
            assert (await http.post("/auth/token", data=form)).status_code in (400, 401)
    finally:
        stop(proc, port, ui_port, api_port)
        target.close()


@pytest.mark.timeout(400)
async def test_job_run_and_admin_commands(tmp_path: Path) -> None:
    """jobs create/edit/pause/resume/trigger/delete, runs get, and an admin's users list/update in a second
    profile, against `chronos dev`."""
    port, ui_port, api_port = free_port(), free_port(), free_port()
    target = start_target()
    config, data = tmp_path / "config", tmp_path / "data"
    url = f"http://127.0.0.1:{api_port}"
    proc = start_dev(data, port, ui_port, api_port)
    try:
        password = "correct horse battery"
        async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http:
            ada = expect(
                await http.post("/auth/register", json={"email": "ada@example.org", "password": password}),
                201,
            )
        root = chronos(
            config, "users", "create", "root@example.org", "--admin", "--data-dir", str(data), input=password
        )
        assert "created admin root@example.org" in ok(root)
        ok(
            chronos(
                config,
                "login",
                url,
                "-e",
                "root@example.org",
                "--password-stdin",
                "--profile",
                "admin",
                input=password,
            )
        )
        wrong = chronos(config, "login", url, "-e", "ada@example.org", "--password-stdin", input="not it")
        assert wrong.returncode == 6 and "OAuth2 error" in wrong.stderr
        ok(chronos(config, "login", url, "-e", "ada@example.org", "--password-stdin", input=password))
        assert "ada@example.org (user)" in ok(chronos(config, "whoami"))

        made = chronos(
            config,
            *("jobs", "create", "--name", "tick", "--every", "3600", "--url", target.url("/tick")),
            *("--header", "X-Env: test", "--json"),
        )
        job = json.loads(ok(made))
        assert (job["schedule"]["every_seconds"], job["action"]["headers"]) == (3600, {"X-Env": "****"})
        edited = json.loads(ok(chronos(config, "jobs", "edit", job["id"], "--every", "7200", "--json")))
        assert (edited["schedule"]["every_seconds"], edited["version"]) == (7200, 2)
        refused = chronos(config, "jobs", "edit", job["id"], "--url", target.url("/other"))
        assert refused.returncode == 4 and "Secrets in the action" in refused.stderr  # X-Env is masked

        assert (
            f"tick ({job['id']}): paused"
            in chronos(config, "jobs", "pause", job["id"], "--note", "deploy").stderr
        )
        held = json.loads(ok(chronos(config, "jobs", "get", job["id"], "--json")))
        assert (held["paused"], held["pause_note"]) == (True, "deploy")
        ok(chronos(config, "jobs", "resume", job["id"]))
        run_id = ok(chronos(config, "jobs", "trigger", job["id"])).strip()

        def run_status() -> str | None:
            status = json.loads(ok(chronos(config, "runs", "get", run_id, "--json")))["status"]
            return status if status in ("succeeded", "failed") else None

        assert await eventually(run_status, "the triggered run to end") == "succeeded"
        assert "ATTEMPT" in ok(chronos(config, "runs", "get", run_id))
        assert chronos(config, "runs", "cancel", run_id).returncode == 1  # 409: it has ended
        assert json.loads(ok(chronos(config, "dead-letters", "list", "--json"))) == {"items": []}
        assert chronos(config, "users", "list").returncode == 6  # 403: not an admin

        users = json.loads(ok(chronos(config, "--profile", "admin", "users", "list", "--json")))["items"]
        assert {u["email"] for u in users} == {"ada@example.org", "root@example.org"}
        disabled = chronos(config, "--profile", "admin", "users", "update", ada["id"], "--disable", "--json")
        assert json.loads(ok(disabled))["disabled"] is True
        assert chronos(config, "jobs", "list").returncode == 6  # her tokens are refused now
        ok(chronos(config, "--profile", "admin", "users", "update", ada["id"], "--enable"))

        ok(chronos(config, "--profile", "admin", "jobs", "delete", job["id"], "--yes"))
        assert chronos(config, "--profile", "admin", "jobs", "get", job["id"]).returncode == 3
    finally:
        stop(proc, port, ui_port, api_port)
        target.close()


@pytest.mark.timeout(300)
async def test_labels_filters_pages_bulk_and_backfill_against_the_api(tmp_path: Path) -> None:
    """apply with labels (twice: no change; a label change in the dry run), jobs list by label and page by
    page, bulk pause by label and resume by ids with notes, and a backfill, against `chronos dev`."""
    port, ui_port, api_port = free_port(), free_port(), free_port()
    target = start_target()
    config = tmp_path / "config"
    url = f"http://127.0.0.1:{api_port}"
    proc = start_dev(tmp_path / "data", port, ui_port, api_port)
    try:
        async with httpx.AsyncClient(base_url=f"{url}/api/v1", timeout=30) as http:
            user = {"email": "labels@example.org", "password": "correct horse battery"}
            expect(await http.post("/auth/register", json=user), 201)
        ok(chronos(config, "login", url, "-e", user["email"], "--password-stdin", input=user["password"]))

        def labeled(name: str, team: str, schedule: dict[str, object]) -> dict[str, object]:
            action = {"type": "http", "url": target.url(f"/{name}")}
            return {
                "name": name,
                "schedule": schedule,
                "action": action,
                "labels": {"team": team, "env": "t"},
            }

        def write(c_team: str) -> Path:
            jobs = [
                labeled("quarterly", "x", {"type": "cron", "cron": "*/15 * * * *"}),
                labeled("hourly", "x", {"type": "interval", "every_seconds": 3600}),
                labeled("yearly", c_team, {"type": "cron", "cron": "0 3 1 1 *"}),
            ]
            file = tmp_path / "jobs.yaml"
            file.write_text(yaml.safe_dump({"jobs": jobs}))
            return file

        file = write("y")
        created = ok(chronos(config, "apply", "-f", str(file)))
        assert created.count("+ create") == 3
        again = chronos(config, "apply", "-f", str(file))
        assert ok(again) == "" and "no changes: 3 job(s) match the file" in again.stderr

        def listed(*args: str) -> list[dict[str, object]]:
            items: list[dict[str, object]] = json.loads(ok(chronos(config, "jobs", "list", *args, "--json")))[
                "items"
            ]
            return items

        team_x = listed("--label", "team:x")
        assert sorted(str(j["name"]) for j in team_x) == ["hourly", "quarterly"]
        assert all(j["labels"] == {"team": "x", "env": "t"} for j in team_x)
        assert [j["name"] for j in listed("--label", "team:x", "--label", "env:t", "--type", "cron")] == [
            "quarterly"
        ]
        assert [j["name"] for j in listed("-q", "YEAR")] == ["yearly"]
        everyone = listed()
        paged = listed("--page-size", "1", "--limit", "0")  # three requests, each after the last cursor
        assert [j["id"] for j in paged] == [j["id"] for j in everyone] and len({j["id"] for j in paged}) == 3
        assert len(listed("--page-size", "2", "--limit", "2")) == 2
        ids = {str(j["name"]): str(j["id"]) for j in everyone}

        paused = chronos(config, "jobs", "pause", "--label", "team:x", "--note", "freeze")
        assert "paused 2 job(s)" in paused.stderr, paused.stdout + paused.stderr
        assert {(j["name"], j["paused"], j["pause_note"]) for j in listed("--state", "paused")} == {
            ("quarterly", True, "freeze"),
            ("hourly", True, "freeze"),
        }
        again_paused = json.loads(ok(chronos(config, "jobs", "pause", "--label", "team:x", "--json")))
        assert again_paused == {"count": 0}  # already paused: not counted
        resumed = chronos(config, "jobs", "resume", ids["quarterly"], ids["hourly"], "--note", "thaw")
        assert "resumed 2 job(s)" in resumed.stderr, resumed.stdout + resumed.stderr
        assert listed("--state", "paused") == []

        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
        backfill = chronos(
            config,
            *("jobs", "backfill", ids["quarterly"]),
            *("--start", hour.isoformat(), "--end", (hour + timedelta(minutes=59)).isoformat()),
        )
        assert "4 run(s) started" in backfill.stderr, backfill.stdout + backfill.stderr

        def backfilled() -> list[object] | None:
            runs = json.loads(ok(chronos(config, "jobs", "runs", ids["quarterly"], "--json")))["items"]
            done = [r for r in runs if r["trigger"] == "backfill" and r["status"] == "succeeded"]
            return done if len(done) == 4 else None

        await eventually(backfilled, "the four backfilled runs to succeed", within=60)

        # A label changed in the file: the dry run shows it, apply sends it, and then nothing differs.
        changed = write("z")
        dry = chronos(config, "apply", "-f", str(changed), "--dry-run")
        assert f"~ update yearly ({ids['yearly']})" in ok(dry)
        assert '- labels.team: "y"' in dry.stdout and '+ labels.team: "z"' in dry.stdout
        assert "would make 1 change(s); 2 job(s) unchanged" in dry.stderr
        ok(chronos(config, "apply", "-f", str(changed)))
        assert [j["name"] for j in listed("--label", "team:z")] == ["yearly"]
        again = chronos(config, "apply", "-f", str(changed))
        assert ok(again) == "" and "no changes: 3 job(s) match the file" in again.stderr
    finally:
        stop(proc, port, ui_port, api_port)
        target.close()
