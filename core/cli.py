"""The `chronos` command: `chronos worker`, and `chronos dev` (embedded Temporal dev server and a worker)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from core.config import Settings
from core.temporal import SEARCH_ATTRIBUTES, temporal_binary


def _wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Block until the dev server accepts connections, or fail with its exit code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the Temporal dev server exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        time.sleep(0.2)
    raise SystemExit(f"the Temporal dev server did not open port {port} within {timeout:g} s")


def _temporal_dev_server(data_dir: Path, port: int, ui_port: int) -> subprocess.Popen[bytes]:
    args = [
        temporal_binary(),
        "server",
        "start-dev",
        "--db-filename",
        str(data_dir / "temporal.db"),
        "--port",
        str(port),
        "--ui-port",
        str(ui_port),
        "--log-level",
        "warn",
    ]
    for key in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return subprocess.Popen(args, stdin=subprocess.DEVNULL)


def dev(args: argparse.Namespace) -> int:
    """Run the dev server and (unless --no-worker) a worker until Ctrl-C or SIGTERM, then stop them all."""
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "CHRONOS_DATA_DIR": str(data_dir),
        "CHRONOS_TEMPORAL_ADDRESS": f"127.0.0.1:{args.temporal_port}",
        "CHRONOS_TEMPORAL_UI_URL": f"http://127.0.0.1:{args.temporal_ui_port}",
        "CHRONOS_ALLOW_PRIVATE_TARGETS": os.environ.get("CHRONOS_ALLOW_PRIVATE_TARGETS", "true"),
    }
    children = [_temporal_dev_server(data_dir, args.temporal_port, args.temporal_ui_port)]
    stop = False

    def _stop(_signum: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        _wait_for_port(args.temporal_port, children[0])
        if not args.no_worker:
            children.append(subprocess.Popen([sys.executable, "-m", "core.cli", "worker"], env=env))
        print(f"Temporal:        127.0.0.1:{args.temporal_port}", flush=True)
        print(f"Temporal Web UI: http://127.0.0.1:{args.temporal_ui_port}", flush=True)
        print(f"Data dir:        {data_dir}", flush=True)
        while not stop and all(child.poll() is None for child in children):
            time.sleep(0.2)
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in reversed(children):
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.kill()
    return 0


def worker(args: argparse.Namespace) -> int:
    from worker import run_worker

    asyncio.run(run_worker(Settings(), concurrency=args.concurrency))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chronos", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p_dev = commands.add_parser("dev", help="everything on one machine: Temporal dev server and a worker")
    p_dev.add_argument("--temporal-port", type=int, default=7233)
    p_dev.add_argument("--temporal-ui-port", type=int, default=8233)
    p_dev.add_argument("--data-dir", default=".chronos")
    p_dev.add_argument("--no-worker", action="store_true", help="start workers separately")
    p_dev.set_defaults(func=dev)
    p_worker = commands.add_parser("worker", help="one worker process on the task queue")
    p_worker.add_argument("--concurrency", type=int, default=100, help="activities run at once")
    p_worker.set_defaults(func=worker)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
