"""`chronos dev` as a user runs it: a real process tree, used over HTTP, stopped by SIGTERM, restarted.
The client commands against it are in test_cli_commands.py (a file of their own, so the two xdist workers
share the suite's longest tests)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from functools import partial
from pathlib import Path

import httpx

from tests.api_client import expect
from tests.chronos_dev import free_port, start_dev, stop
from tests.http_target import Answer, start_target
from tests.waiting import eventually


def start_worker(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """`chronos worker` as an operator starts one beside `chronos dev --no-worker`."""
    env = {
        **os.environ,
        "CHRONOS_DATA_DIR": str(data_dir),
        "CHRONOS_TEMPORAL_ADDRESS": f"127.0.0.1:{port}",
        "CHRONOS_TASK_QUEUE": "chronos",
    }
    return subprocess.Popen([sys.executable, "-m", "cli", "worker"], env=env)


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
