"""`chronos dev` as a user runs it: a real process tree, used over HTTP, stopped by SIGTERM, restarted."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import httpx
import pytest
import yaml

from tests.api_client import expect
from tests.http_target import Answer, start_target
from tests.waiting import eventually


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_dev(
    data_dir: Path, port: int, ui_port: int, api_port: int, *extra: str, stderr: int | None = None
) -> subprocess.Popen[str]:
    env = {**os.environ, "CHRONOS_TASK_QUEUE": "chronos"}
    env.pop("CHRONOS_JWT_SECRET", None)  # tokens must survive the restart through the data dir's key
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "cli", "dev", "--data-dir", str(data_dir), "--port", str(api_port)),
            *("--temporal-port", str(port), "--temporal-ui-port", str(ui_port), *extra),
        ],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
        process_group=0,  # as a shell runs it: a foreground group of its own, which Ctrl-C signals
    )
    assert proc.stdout is not None
    printed = []
    for line in proc.stdout:  # the URLs are printed once Temporal and the API answer
        printed.append(line)
        if line.startswith("Data dir:"):
            text = "".join(printed)
            assert printed[0] == f"Dashboard:       http://127.0.0.1:{api_port}/\n", "the dashboard first"
            assert f"http://127.0.0.1:{api_port}/docs" in text
            assert f"Temporal Web UI: http://127.0.0.1:{api_port}/temporal/\n" in text
            return proc
    raise AssertionError(f"chronos dev exited ({proc.wait()}) before printing its URLs")


def start_worker(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """`chronos worker` as an operator starts one beside `chronos dev --no-worker`."""
    env = {
        **os.environ,
        "CHRONOS_DATA_DIR": str(data_dir),
        "CHRONOS_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "CHRONOS_TASK_QUEUE": "chronos",
    }
    return subprocess.Popen([sys.executable, "-m", "cli", "worker"], env=env)


def stop(proc: subprocess.Popen[str], *ports: int) -> None:
    """Ctrl-C in the terminal: SIGINT to the whole foreground process group. Its children have groups of
    their own, so `chronos dev` alone gets it and stops them in order."""
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    for port in ports:  # every child is gone too: its port is free again
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not a listener
            s.bind(("127.0.0.1", port))


async def test_dev_serves_the_api_stops_cleanly_and_keeps_everything(tmp_path: Path) -> None:
    port, ui_port, api_port = free_port(), free_port(), free_port()
    target = start_target()
    base = f"http://127.0.0.1:{api_port}/api/v1"
    proc = start_dev(tmp_path, port, ui_port, api_port)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            user = {"email": "dev@example.org", "password": "correct horse battery"}
            expect(await http.post("/auth/register", json=user), 201)
            token = expect(await http.post("/auth/login", json=user), 200)["access_token"]
            http.headers["Authorization"] = f"Bearer {token}"
            job = {
                "name": "every second",
                "schedule": {"type": "cron", "cron": "* * * * * *"},
                "action": {"type": "http", "url": target.url("/tick")},
            }
            job_id = expect(await http.post("/jobs", json=job), 201)["id"]
            # The API serves the Web UI under /temporal, to a dashboard session only.
            ui = await http.get(f"http://127.0.0.1:{api_port}/temporal/api/v1/settings")
            assert ui.status_code == 401, ui.text
            await eventually(lambda: len(target.requests["/tick"]) >= 2, "the job to fire twice")
            runs = expect(await http.get(f"/jobs/{job_id}/runs"), 200)
    finally:
        stop(proc, port, ui_port, api_port)
    assert (tmp_path / "temporal.db").exists() and (tmp_path / "chronos.db").exists()

    proc = start_dev(tmp_path, port, ui_port, api_port)
    try:
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            http.headers["Authorization"] = f"Bearer {token}"  # the signing key is kept in the data dir
            assert expect(await http.get(f"/jobs/{job_id}"), 200)["state"] in ("scheduled", "running")
            before = len(target.requests["/tick"])
            await eventually(
                lambda: len(target.requests["/tick"]) > before, "the job to fire after a restart"
            )
            known = {
                r["id"]
                for r in expect(await http.get(f"/jobs/{job_id}/runs", params={"limit": 100}), 200)["items"]
            }
            assert {r["id"] for r in runs["items"]} <= known
    finally:
        stop(proc, port, ui_port, api_port)
        target.server.shutdown()


async def test_dev_without_worker_is_ready_once_a_worker_joins(tmp_path: Path) -> None:
    """`chronos dev --no-worker` leaves the workers to you: /ready says so until `chronos worker` polls."""
    port, ui_port, api_port = free_port(), free_port(), free_port()
    proc = start_dev(tmp_path, port, ui_port, api_port, "--no-worker")
    worker: subprocess.Popen[bytes] | None = None
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as http:
            idle = await http.get("/ready")
            assert idle.status_code == 503
            assert idle.json()["detail"] == "no worker is polling the task queue 'chronos'"
            worker = start_worker(tmp_path, port)

            async def ready() -> bool:
                return (await http.get("/ready")).status_code == 200

            await eventually(ready, "the API to see the worker polling")
    finally:
        if worker is not None:
            worker.send_signal(signal.SIGTERM)
            assert worker.wait(timeout=30) == 0
        stop(proc, port, ui_port, api_port)


def child_pid(proc: subprocess.Popen[str], role: str) -> int | None:
    """The pid of the child of `chronos dev` whose command line has `role` (worker, api, start-dev)."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    for pid in children:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if role.encode() in argv:
            return int(pid)
    return None


def restarted(proc: subprocess.Popen[str], role: str, killed: int) -> bool:
    return child_pid(proc, role) not in (None, killed)


async def test_dev_restarts_a_child_that_dies_and_stops_in_order(tmp_path: Path) -> None:
    """Each child killed is started again; SIGTERM drains the worker before Temporal stops, so a call that
    finishes during the drain is reported and never made a second time after the restart."""
    port, ui_port, api_port = free_port(), free_port(), free_port()
    target = start_target()
    target.script("/slow", [Answer(delay=3)])
    proc = start_dev(tmp_path, port, ui_port, api_port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}", timeout=30) as http:

            async def ready() -> bool:
                with contextlib.suppress(httpx.HTTPError):
                    return (await http.get("/ready")).status_code == 200
                return False

            await eventually(ready, "chronos dev to be ready", within=60)
            for role in ("worker", "api", "start-dev"):
                killed = child_pid(proc, role)
                assert killed is not None, role
                os.kill(killed, signal.SIGKILL)
                await eventually(partial(restarted, proc, role, killed), f"the {role} to be restarted")
                await eventually(ready, f"chronos dev to be ready after the {role} was restarted", within=90)
            user = {"email": "sup@example.org", "password": "correct horse battery"}
            expect(await http.post("/api/v1/auth/register", json=user), 201)
            token = expect(await http.post("/api/v1/auth/login", json=user), 200)["access_token"]
            http.headers["Authorization"] = f"Bearer {token}"
            job = {
                "name": "slow call",
                "schedule": {"type": "immediate"},
                "action": {"type": "http", "url": target.url("/slow")},
            }
            job_id = expect(await http.post("/api/v1/jobs", json=job), 201)["id"]
            await target.wait_for("/slow")  # the call is in flight: stop everything now
    finally:
        stop(proc, port, ui_port, api_port)

    proc = start_dev(tmp_path, port, ui_port, api_port)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api_port}/api/v1", timeout=30) as http:
            http.headers["Authorization"] = f"Bearer {token}"

            async def ended() -> str | None:
                status = expect(await http.get(f"/jobs/{job_id}/runs"), 200)["items"][0]["status"]
                return status if status in ("succeeded", "failed") else None

            assert await eventually(ended, "the run to end", within=60) == "succeeded"
        assert len(target.requests["/slow"]) == 1
    finally:
        stop(proc, port, ui_port, api_port)
        target.close()


def test_dev_exits_non_zero_naming_a_child_it_cannot_keep(tmp_path: Path) -> None:
    port, ui_port, api_port = free_port(), free_port(), free_port()
    proc = start_dev(tmp_path, port, ui_port, api_port, "--max-restarts", "0", stderr=subprocess.PIPE)
    worker = child_pid(proc, "worker")
    assert worker is not None
    os.kill(worker, signal.SIGKILL)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert "the worker exited with code -9" in stderr
    for free in (port, ui_port, api_port):  # everything else was stopped
        with socket.socket() as s:
            s.bind(("127.0.0.1", free))


def test_users_create_refuses_a_folder_without_a_server(tmp_path: Path) -> None:
    """Run from another folder, `chronos users create` would make a database nobody reads: it says so."""
    env = {k: v for k, v in os.environ.items() if k not in ("CHRONOS_DATA_DIR", "CHRONOS_DATABASE_URL")}
    command = [sys.executable, "-m", "cli", "users", "create", "ada@example.org"]
    refused = subprocess.run(
        command, cwd=tmp_path, env=env, input="correct horse battery\n", text=True, capture_output=True
    )
    assert refused.returncode == 2
    assert "--data-dir" in refused.stderr and not (tmp_path / ".chronos").exists()
    made = subprocess.run(
        [*command, "--data-dir", str(tmp_path / "server")],
        cwd=tmp_path,
        env=env,
        input="correct horse battery\n",
        text=True,
        capture_output=True,
    )
    assert made.returncode == 0, made.stderr
    assert (tmp_path / "server" / "chronos.db").exists()


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
