"""`chronos dev` started and stopped as a user does, for the tests that drive it as a real process tree."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path


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


def stop(proc: subprocess.Popen[str], *ports: int) -> None:
    """Ctrl-C in the terminal: SIGINT to the whole foreground process group. Its children have groups of
    their own, so `chronos dev` alone gets it and stops them in order."""
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=30) == 0
    for port in ports:  # every child is gone too: its port is free again
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is not a listener
            s.bind(("127.0.0.1", port))
