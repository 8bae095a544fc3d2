"""`chronos dev` as a user runs it: a real process tree, used over HTTP, stopped by SIGTERM, restarted."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.api_client import expect
from tests.http_target import start_target
from tests.waiting import eventually


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_dev(data_dir: Path, port: int, ui_port: int, api_port: int, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "CHRONOS_TASK_QUEUE": "chronos"}
    env.pop("CHRONOS_JWT_SECRET", None)  # tokens must survive the restart through the data dir's key
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "cli", "dev", "--data-dir", str(data_dir), "--port", str(api_port)),
            *("--temporal-port", str(port), "--temporal-ui-port", str(ui_port), *extra),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    printed = []
    for line in proc.stdout:  # the URLs are printed once Temporal and the API answer
        printed.append(line)
        if line.startswith("Data dir:"):
            text = "".join(printed)
            assert f"http://127.0.0.1:{api_port}/docs" in text and f"http://127.0.0.1:{ui_port}" in text
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
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    for port in ports:  # every child is gone too: its port is free again
        with socket.socket() as s:
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
