"""The `chronos` command: `dev` (everything on one machine), `worker`, `api`, `users create` and `reseal`."""

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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from core.auth import create_user
from core.codec import keyring
from core.config import Settings
from core.db import create_schema, make_engine, make_sessions
from core.errors import Conflict
from core.logs import configure_logging
from core.models import User
from core.reseal import Resealed, reseal_jobs
from core.temporal import SEARCH_ATTRIBUTES, temporal_binary

# How long each child may take to stop after SIGTERM: the worker drains its attempts in progress (10 s).
STOP_TIMEOUT = {"the API": 15.0, "the worker": 30.0, "the Temporal dev server": 15.0}
# A child that dies unasked is restarted after 1, 2, 4 … s; more than `--max-restarts` deaths within
# RESTART_WINDOW stop everything, so a crash loop ends with its name instead of spinning.
RESTART_WINDOW = 300.0
MAX_BACKOFF = 30.0


class ChildDied(Exception):
    """A child exited while `chronos dev` still needed it."""

    def __init__(self, child: Child) -> None:
        super().__init__(f"{child.name} exited with code {child.exit_code}")


@dataclass
class Child:
    """One process `chronos dev` runs, how to start it, and the port that says it is up."""

    name: str
    argv: list[str]
    env: dict[str, str] | None = None
    port: int | None = None
    host: str = "127.0.0.1"
    # Output dropped once `chronos dev` is stopping: the Temporal server's shutdown warnings are noise.
    quiet_when_stopping: bool = False
    proc: subprocess.Popen[bytes] | None = None
    deaths: list[float] = field(default_factory=list)

    @property
    def exit_code(self) -> int | None:
        return self.proc.poll() if self.proc is not None else None

    def start(self, stopping: Callable[[], bool], timeout: float = 60.0) -> None:
        """Start it and wait until its port answers (or it dies, or `chronos dev` is asked to stop)."""
        if self.quiet_when_stopping:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                process_group=0,  # see below
            )
            threading.Thread(target=self._forward, args=(self.proc, stopping), daemon=True).start()
        else:
            # A process group of its own: Ctrl-C in a terminal reaches `chronos dev` alone, which stops the
            # children in order (the terminal would send SIGINT to all of them at once).
            self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, process_group=0)
        if self.port is None:
            return
        deadline = time.monotonic() + timeout
        while not stopping():
            if self.proc.poll() is not None:
                raise ChildDied(self)
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=1):
                return
            if time.monotonic() > deadline:
                raise SystemExit(f"chronos: {self.name} did not open port {self.port} within {timeout:g} s")
            time.sleep(0.1)

    @staticmethod
    def _forward(proc: subprocess.Popen[bytes], stopping: Callable[[], bool]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            if not stopping():
                sys.stderr.buffer.write(line)
                sys.stderr.flush()

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it does not stop within its time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=STOP_TIMEOUT.get(self.name, 15.0))
        except subprocess.TimeoutExpired:
            print(f"chronos: {self.name} did not stop in time: killed", file=sys.stderr, flush=True)
            self.proc.kill()
            self.proc.wait()


class Supervisor:
    """Starts the children in order, restarts one that dies unasked (with backoff), and stops them in
    reverse order: the API stops taking requests, the worker drains, and only then Temporal stops, so a
    call that finished during the drain is still reported (stopping Temporal first made it run twice)."""

    def __init__(self, children: list[Child], max_restarts: int) -> None:
        self.children = children
        self.max_restarts = max_restarts
        self.stopping = False

    def ask_to_stop(self, _signum: int = 0, _frame: object = None) -> None:
        self.stopping = True

    def start(self) -> None:
        for child in self.children:
            self._start(child)

    def watch(self) -> None:
        """Until asked to stop: restart any child that died, within the restart budget."""
        while not self.stopping:
            for child in self.children:
                if child.exit_code is not None and not self.stopping:
                    self._restart(child)
            time.sleep(0.2)

    def stop(self) -> None:
        for child in reversed(self.children):
            child.stop()

    def _start(self, child: Child) -> None:
        while not self.stopping:
            try:
                child.start(lambda: self.stopping)
                return
            except ChildDied:
                self._record_death(child)

    def _restart(self, child: Child) -> None:
        self._record_death(child)
        self._start(child)
        if not self.stopping:
            print(f"chronos: restarted {child.name}", file=sys.stderr, flush=True)

    def _record_death(self, child: Child) -> None:
        """Count the death; wait the backoff, or end `chronos dev` when the budget is spent."""
        now = time.monotonic()
        child.deaths = [t for t in child.deaths if now - t < RESTART_WINDOW] + [now]
        code = child.exit_code
        if len(child.deaths) > self.max_restarts:
            raise SystemExit(
                f"chronos: {child.name} exited with code {code}, "
                f"{len(child.deaths)} time(s) within {RESTART_WINDOW:g} s: stopping"
            )
        delay = min(2.0 ** (len(child.deaths) - 1), MAX_BACKOFF)
        print(f"chronos: {child.name} exited with code {code}; restarting in {delay:g} s", file=sys.stderr)
        deadline = time.monotonic() + delay
        while not self.stopping and time.monotonic() < deadline:
            time.sleep(0.1)


def _temporal_dev_server(data_dir: Path, port: int, ui_port: int, codec: str) -> list[str]:
    """The dev server, its Web UI decoding payloads through the API's codec endpoint (`codec`)."""
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
        "--ui-codec-endpoint",
        codec,
        "--log-level",
        "warn",
    ]
    for key in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return args


def dev(args: argparse.Namespace) -> int:
    """Run the dev server, a worker (unless --no-worker) and the API until Ctrl-C or SIGTERM, as a
    supervisor: a child that dies is restarted, and shutdown goes in order. The API and worker are child
    processes, as in production, sharing the data dir."""
    data_dir = Path(args.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "CHRONOS_DATA_DIR": str(data_dir),
        "CHRONOS_TEMPORAL_ADDRESS": f"127.0.0.1:{args.temporal_port}",
        "CHRONOS_TEMPORAL_UI_URL": f"http://127.0.0.1:{args.temporal_ui_port}",
        "CHRONOS_ALLOW_PRIVATE_TARGETS": os.environ.get("CHRONOS_ALLOW_PRIVATE_TARGETS", "true"),
    }
    base = f"http://{_reachable(args.host)}:{args.port}"
    codec = f"{base}/api/v1/codec"
    children = [
        Child(
            "the Temporal dev server",
            _temporal_dev_server(data_dir, args.temporal_port, args.temporal_ui_port, codec),
            port=args.temporal_port,
            quiet_when_stopping=True,
        )
    ]
    if not args.no_worker:
        children.append(Child("the worker", [sys.executable, "-m", "cli", "worker"], env=env))
    api = [sys.executable, "-m", "cli", "api", "--host", args.host, "--port", str(args.port)]
    children.append(Child("the API", api, env=env, port=args.port, host=_reachable(args.host)))
    supervisor = Supervisor(children, max_restarts=args.max_restarts)
    signal.signal(signal.SIGTERM, supervisor.ask_to_stop)
    signal.signal(signal.SIGINT, supervisor.ask_to_stop)
    try:
        supervisor.start()
        if not supervisor.stopping:
            print(f"Dashboard:       {base}/", flush=True)
            print(f"API:             {base}/api/v1", flush=True)
            print(f"API docs:        {base}/docs", flush=True)
            print(f"Temporal:        127.0.0.1:{args.temporal_port}", flush=True)
            print(f"Temporal Web UI: http://127.0.0.1:{args.temporal_ui_port}", flush=True)
            print(f"Codec endpoint:  {codec}", flush=True)
            print(f"Data dir:        {data_dir}", flush=True)
        supervisor.watch()
    finally:
        supervisor.stop()
    return 0


def _reachable(host: str) -> str:
    """Where a local client connects when the API listens on every interface."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


def api(args: argparse.Namespace) -> int:
    import uvicorn

    from api.main import server_config

    configure_logging(Settings().log_format)
    config = server_config(
        "api.main:create_app", args.host, args.port, factory=True, log_level="info", log_config=None
    )
    uvicorn.Server(config).run()
    return 0


def worker(args: argparse.Namespace) -> int:
    from worker import run_worker

    overrides = {"worker_metrics_port": args.metrics_port} if args.metrics_port else {}
    settings = Settings(**overrides)
    configure_logging(settings.log_format)
    asyncio.run(run_worker(settings, concurrency=args.concurrency))
    return 0


def users_create(args: argparse.Namespace) -> int:
    settings = Settings(data_dir=Path(args.data_dir)) if args.data_dir else Settings()
    database = (settings.data_dir / "chronos.db").resolve()
    if settings.database_url is None and not args.data_dir and not database.exists():
        # Run from another folder, it would make a new database that the running server never reads.
        print(
            f"chronos: no Chronos database at {database}; pass --data-dir (the folder `chronos dev` uses) "
            "or set CHRONOS_DATA_DIR or CHRONOS_DATABASE_URL",
            file=sys.stderr,
        )
        return 2
    return users_create_command(settings, args.email, admin=args.admin)


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


def reseal(args: argparse.Namespace) -> int:
    """`chronos reseal`: after a key rotation or an upgrade from before sealing, every job row sealed with
    the newest key, so older keys can be retired."""
    settings = Settings(data_dir=Path(args.data_dir)) if args.data_dir else Settings()
    done = asyncio.run(_reseal(settings))
    print(f"sealed {done.rows} job rows with key {keyring(settings).newest!r}")
    if done.changed:
        print(f"{done.changed} rows changed while it ran and were left alone: run it again", file=sys.stderr)
        return 1
    return 0


async def _reseal(settings: Settings) -> Resealed:
    engine = make_engine(settings)
    try:
        await create_schema(engine)
        return await reseal_jobs(engine)
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="chronos", description=__doc__)
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="log lines as text (default) or one JSON object per line (CHRONOS_LOG_FORMAT)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    p_dev = commands.add_parser("dev", help="everything on one machine: Temporal, a worker and the API")
    p_dev.add_argument("--host", default="127.0.0.1", help="the API's interface")
    p_dev.add_argument("--port", type=int, default=8000, help="the API's port")
    p_dev.add_argument("--temporal-port", type=int, default=7233)
    p_dev.add_argument("--temporal-ui-port", type=int, default=8233)
    p_dev.add_argument("--data-dir", default=".chronos")
    p_dev.add_argument("--no-worker", action="store_true", help="start workers separately")
    p_dev.add_argument(
        "--max-restarts",
        type=int,
        default=5,
        help="restarts of a child that dies, within 5 minutes, before chronos dev gives up (0: never)",
    )
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
    p_create.add_argument(
        "--data-dir", default=None, help="the data dir of the server (default: CHRONOS_DATA_DIR or .chronos)"
    )
    p_create.set_defaults(func=users_create)
    p_reseal = commands.add_parser(
        "reseal", help="seal the secrets of every job row again with the newest encryption key"
    )
    p_reseal.add_argument(
        "--data-dir", default=None, help="the data dir of the server (default: CHRONOS_DATA_DIR or .chronos)"
    )
    p_reseal.set_defaults(func=reseal)
    args = parser.parse_args(argv)
    if args.log_format:  # children of `chronos dev` inherit it
        os.environ["CHRONOS_LOG_FORMAT"] = args.log_format
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
