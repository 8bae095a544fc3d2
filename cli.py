"""The `chronos` command: `dev` (everything on one machine), `worker`, `api` and `users create`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from pydantic import ValidationError

from core.auth import create_user
from core.config import Settings
from core.db import create_schema, make_engine, make_sessions
from core.errors import Conflict
from core.models import User
from core.temporal import SEARCH_ATTRIBUTES, temporal_binary


def _wait_for_port(
    what: str, host: str, port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0
) -> None:
    """Block until a child accepts connections, or fail with its exit code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with code {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
            return
        time.sleep(0.2)
    raise SystemExit(f"{what} did not open port {port} within {timeout:g} s")


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
    """Run the dev server, a worker (unless --no-worker) and the API until Ctrl-C or SIGTERM, then stop
    them all. The API and worker are child processes, as in production, sharing the data dir."""
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
        _wait_for_port("the Temporal dev server", "127.0.0.1", args.temporal_port, children[0])
        if not args.no_worker:
            children.append(subprocess.Popen([sys.executable, "-m", "cli", "worker"], env=env))
        api = [sys.executable, "-m", "cli", "api", "--host", args.host, "--port", str(args.port)]
        children.append(subprocess.Popen(api, env=env))
        _wait_for_port("the API", _reachable(args.host), args.port, children[-1])
        base = f"http://{_reachable(args.host)}:{args.port}"
        print(f"API:             {base}/api/v1", flush=True)
        print(f"API docs:        {base}/docs", flush=True)
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


def _reachable(host: str) -> str:
    """Where a local client connects when the API listens on every interface."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def api(args: argparse.Namespace) -> int:
    import uvicorn

    from api.main import server_config

    config = server_config("api.main:create_app", args.host, args.port, factory=True, log_level="info")
    uvicorn.Server(config).run()
    return 0


def worker(args: argparse.Namespace) -> int:
    from worker import run_worker

    overrides = {"worker_metrics_port": args.metrics_port} if args.metrics_port else {}
    asyncio.run(run_worker(Settings(**overrides), concurrency=args.concurrency))
    return 0


def users_create(args: argparse.Namespace) -> int:
    return users_create_command(Settings(), args.email, admin=args.admin)


def read_password() -> str:
    """The new password: piped on stdin (scripts), or typed twice at a prompt."""
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    password = getpass.getpass("Password: ")
    if getpass.getpass("Repeat it: ") != password:
        raise SystemExit("chronos: the passwords differ")
    return password


def users_create_command(settings: Settings, email: str, *, admin: bool, password: str | None = None) -> int:
    """`chronos users create EMAIL [--admin]`: prints the account and its webhook secret, shown only now."""
    try:
        user = asyncio.run(_create_user(settings, email, password or read_password(), admin))
    except ValidationError as exc:
        error = exc.errors()[0]
        print(f"chronos: {error['loc'][0]}: {error['msg']}", file=sys.stderr)
        return 2
    except Conflict as exc:
        print(f"chronos: {exc.detail}", file=sys.stderr)
        return 1
    print(f"created {user.role} {user.email} (id {user.id})")
    print(f"webhook secret (shown only now): {user.webhook_secret}")
    return 0


async def _create_user(settings: Settings, email: str, password: str, admin: bool) -> User:
    engine = make_engine(settings)
    try:
        await create_schema(engine)
        return await create_user(make_sessions(engine), email, password, admin)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chronos", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    p_dev = commands.add_parser("dev", help="everything on one machine: Temporal, a worker and the API")
    p_dev.add_argument("--host", default="127.0.0.1", help="the API's interface")
    p_dev.add_argument("--port", type=int, default=8000, help="the API's port")
    p_dev.add_argument("--temporal-port", type=int, default=7233)
    p_dev.add_argument("--temporal-ui-port", type=int, default=8233)
    p_dev.add_argument("--data-dir", default=".chronos")
    p_dev.add_argument("--no-worker", action="store_true", help="start workers separately")
    p_dev.set_defaults(func=dev)
    p_worker = commands.add_parser("worker", help="one worker process on the task queue")
    p_worker.add_argument("--concurrency", type=int, default=100, help="activities run at once")
    p_worker.add_argument(
        "--metrics-port", type=int, default=None, help="serve the Temporal SDK's worker metrics on this port"
    )
    p_worker.set_defaults(func=worker)
    p_api = commands.add_parser("api", help="the API alone (production: several behind a load balancer)")
    p_api.add_argument("--host", default="127.0.0.1")
    p_api.add_argument("--port", type=int, default=8000)
    p_api.set_defaults(func=api)
    p_users = commands.add_parser("users", help="manage users").add_subparsers(dest="action", required=True)
    p_create = p_users.add_parser("create", help="create a user; the password is read from stdin or prompted")
    p_create.add_argument("email")
    p_create.add_argument("--admin", action="store_true", help="give the admin role")
    p_create.set_defaults(func=users_create)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
