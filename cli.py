"""The `chronos` command: the server (`dev`, everything on one machine; `worker`; `api`; `users create`;
`reseal`) and a client of its API (`login`, `jobs`, `runs`, `dead-letters`, `preview`, `users`, `apply`,
`export`). The client's HTTP calls, stored logins and jobs files live in core/client.py and
core/jobfile.py; this module defines the commands and how their output looks."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from core.client import (
    EXIT_ERROR,
    MAX_PAGE,
    Client,
    ClientError,
    CredentialStore,
    invalid,
    pages,
    profile_name,
    server_url,
)

# The server's modules (database, Temporal, models) are imported by the commands that use them, so that
# the client commands start fast.
if TYPE_CHECKING:
    from core.config import Settings
    from core.jobfile import Step
    from core.models import User
    from core.reseal import Resealed

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
    """The dev server, its Web UI decoding payloads through the API's codec endpoint (`codec`), under the
    public path /temporal that the API proxies (api/web/temporal_ui.py)."""
    from core.temporal import SEARCH_ATTRIBUTES, temporal_binary

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
        "--ui-public-path",
        "/temporal",
        "--ui-codec-endpoint",
        codec,
        "--log-level",
        "warn",
    ]
    for key in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    return args


def dev(
    host: str,
    port: int,
    temporal_port: int,
    temporal_ui_port: int,
    data_dir: str,
    no_worker: bool,
    max_restarts: int,
) -> int:
    """Run the dev server, a worker (unless --no-worker) and the API until Ctrl-C or SIGTERM, as a
    supervisor: a child that dies is restarted, and shutdown goes in order. The API and worker are child
    processes, as in production, sharing the data dir."""
    folder = Path(data_dir).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    base = f"http://{_reachable(host)}:{port}"
    codec = f"{base}/api/v1/codec"
    # The Web UI is served from the API's origin, so its codec calls carry the dashboard's session cookie.
    env = {
        **os.environ,
        "CHRONOS_DATA_DIR": str(folder),
        "CHRONOS_TEMPORAL_ADDRESS": f"127.0.0.1:{temporal_port}",
        "CHRONOS_TEMPORAL_UI_URL": f"{base}/temporal",
        "CHRONOS_TEMPORAL_UI_UPSTREAM": f"http://127.0.0.1:{temporal_ui_port}",
        "CHRONOS_ALLOW_PRIVATE_TARGETS": os.environ.get("CHRONOS_ALLOW_PRIVATE_TARGETS", "true"),
    }
    children = [
        Child(
            "the Temporal dev server",
            _temporal_dev_server(folder, temporal_port, temporal_ui_port, codec),
            port=temporal_port,
            quiet_when_stopping=True,
        )
    ]
    if not no_worker:
        children.append(Child("the worker", [sys.executable, "-m", "cli", "worker"], env=env))
    api_argv = [sys.executable, "-m", "cli", "api", "--host", host, "--port", str(port)]
    children.append(Child("the API", api_argv, env=env, port=port, host=_reachable(host)))
    supervisor = Supervisor(children, max_restarts=max_restarts)
    signal.signal(signal.SIGTERM, supervisor.ask_to_stop)
    signal.signal(signal.SIGINT, supervisor.ask_to_stop)
    try:
        supervisor.start()
        if not supervisor.stopping:
            print(f"Dashboard:       {base}/", flush=True)
            print(f"API:             {base}/api/v1", flush=True)
            print(f"API docs:        {base}/docs", flush=True)
            print(f"Temporal:        127.0.0.1:{temporal_port}", flush=True)
            print(f"Temporal Web UI: {base}/temporal/", flush=True)
            print(f"Codec endpoint:  {codec}", flush=True)
            print(f"Data dir:        {folder}", flush=True)
        supervisor.watch()
    finally:
        supervisor.stop()
    return 0


def _reachable(host: str) -> str:
    """Where a local client connects when the API listens on every interface."""
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host


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
    from pydantic import ValidationError

    from core.errors import Conflict

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
    from core.auth import create_user
    from core.db import create_schema, make_engine, make_sessions

    engine = make_engine(settings)
    try:
        await create_schema(engine)
        return await create_user(make_sessions(engine), email, password, admin)
    finally:
        await engine.dispose()


async def _reseal(settings: Settings) -> Resealed:
    from core.db import create_schema, make_engine
    from core.reseal import reseal_jobs

    engine = make_engine(settings)
    try:
        await create_schema(engine)
        return await reseal_jobs(engine)
    finally:
        await engine.dispose()


# --- the command line ------------------------------------------------------------------------------------

app = typer.Typer(
    name="chronos",
    help="Chronos, durable job scheduling on Temporal: run the server (dev, api, worker) or use one "
    "(login, jobs, runs, apply …). Exit codes: 0 done, 1 error, 2 usage, 3 not found, 4 invalid, "
    "5 server unavailable, 6 not signed in or not allowed.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
jobs_app = typer.Typer(help="Your jobs (admins: every job).", no_args_is_help=True)
runs_app = typer.Typer(help="One run of a job: details, logs, signals.", no_args_is_help=True)
letters_app = typer.Typer(help="Runs that failed for good.", no_args_is_help=True)
users_app = typer.Typer(
    help="Accounts: create one on the server's database, or list and change them (admins)."
)
app.add_typer(jobs_app, name="jobs")
app.add_typer(runs_app, name="runs")
app.add_typer(letters_app, name="dead-letters")
app.add_typer(users_app, name="users", no_args_is_help=True)

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
DATA_DIR_HELP = "the data dir of the server (default: CHRONOS_DATA_DIR or .chronos)"
Json = Annotated[bool, typer.Option("--json", help="the API's answer as JSON, for scripts")]


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class FileFormat(StrEnum):
    YAML = "yaml"
    JSON = "json"


@app.callback()
def _options(
    ctx: typer.Context,
    log_format: Annotated[
        LogFormat | None,
        typer.Option(
            help="log lines as text (default) or one JSON object per line (CHRONOS_LOG_FORMAT)",
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option(envvar="CHRONOS_PROFILE", help="the stored login to use (default: the last signed in)"),
    ] = None,
) -> None:
    if log_format:  # children of `chronos dev` inherit it
        os.environ["CHRONOS_LOG_FORMAT"] = log_format
    ctx.obj = profile


# --- the server ------------------------------------------------------------------------------------------


@app.command("dev")
def dev_command(
    host: Annotated[str, typer.Option(help="the API's interface")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="the API's port")] = 8000,
    temporal_port: int = 7233,
    temporal_ui_port: int = 8233,
    data_dir: str = ".chronos",
    no_worker: Annotated[bool, typer.Option("--no-worker", help="start workers separately")] = False,
    max_restarts: Annotated[
        int, typer.Option(help="restarts of a child that dies, within 5 minutes, before chronos dev gives up")
    ] = 5,
) -> None:
    """Everything on one machine: Temporal, a worker and the API."""
    raise typer.Exit(dev(host, port, temporal_port, temporal_ui_port, data_dir, no_worker, max_restarts))


@app.command("worker")
def worker_command(
    concurrency: Annotated[int, typer.Option(help="activities run at once")] = 100,
    metrics_port: Annotated[
        int | None, typer.Option(help="serve the Temporal SDK's worker metrics on this port")
    ] = None,
) -> None:
    """One worker process on the task queue."""
    from core.config import Settings
    from core.logs import configure_logging
    from worker import serve

    settings = Settings(worker_metrics_port=metrics_port) if metrics_port else Settings()
    configure_logging(settings.log_format)
    serve(settings, concurrency=concurrency)


@app.command("api")
def api_command(host: str = "127.0.0.1", port: int = 8000) -> None:
    """The API alone (production: several behind a load balancer)."""
    import uvicorn

    from api.main import server_config
    from core.config import Settings
    from core.logs import configure_logging

    settings = Settings()
    configure_logging(settings.log_format)
    config = server_config(
        "api.main:create_app", host, port, settings, factory=True, log_level="info", log_config=None
    )
    uvicorn.Server(config).run()


@users_app.command("create")
def users_create(
    email: str,
    admin: Annotated[bool, typer.Option("--admin", help="give the admin role")] = False,
    data_dir: Annotated[str | None, typer.Option(help=DATA_DIR_HELP)] = None,
) -> None:
    """Create a user in the server's database; the password is read from stdin or prompted."""
    from core.config import Settings

    settings = Settings(data_dir=Path(data_dir)) if data_dir else Settings()
    database = (settings.data_dir / "chronos.db").resolve()
    if settings.database_url is None and not data_dir and not database.exists():
        # Run from another folder, it would make a new database that the running server never reads.
        print(
            f"chronos: no Chronos database at {database}; pass --data-dir (the folder `chronos dev` uses) "
            "or set CHRONOS_DATA_DIR or CHRONOS_DATABASE_URL",
            file=sys.stderr,
        )
        raise typer.Exit(2)
    raise typer.Exit(users_create_command(settings, email, admin=admin))


@app.command("reseal")
def reseal_command(data_dir: Annotated[str | None, typer.Option(help=DATA_DIR_HELP)] = None) -> None:
    """Seal the secrets of every job row again with the newest encryption key.

    After a key rotation or an upgrade from before sealing, so older keys can be retired."""
    from core.codec import keyring
    from core.config import Settings

    settings = Settings(data_dir=Path(data_dir)) if data_dir else Settings()
    done = asyncio.run(_reseal(settings))
    print(f"sealed {done.rows} job rows with key {keyring(settings).newest!r}")
    if done.changed:
        print(f"{done.changed} rows changed while it ran and were left alone: run it again", file=sys.stderr)
        raise typer.Exit(1)


# --- signing in ------------------------------------------------------------------------------------------


@contextlib.contextmanager
def signed_in(ctx: typer.Context) -> Iterator[Client]:
    client = Client.signed_in(ctx.obj)
    try:
        yield client
    finally:
        client.close()


@app.command("login")
def login(
    ctx: typer.Context,
    url: Annotated[
        str | None, typer.Argument(help="the server (default: CHRONOS_URL, the last one, or :8000)")
    ] = None,
    email: Annotated[str | None, typer.Option("--email", "-e", help="prompted when not given")] = None,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from stdin")
    ] = False,
    profile: Annotated[str | None, typer.Option(help="name of the stored login (default: host:port)")] = None,
) -> None:
    """Sign in to a server with your email and password.

    The refresh token is stored (mode 0600) in $XDG_CONFIG_HOME/chronos/credentials.json, one profile per
    server; CHRONOS_URL and CHRONOS_TOKEN override it."""
    store = CredentialStore()
    name = profile or ctx.obj
    known = store.profile(name or store.current() or "")
    base = server_url(
        url or os.environ.get("CHRONOS_URL") or (known.url if known else "http://127.0.0.1:8000")
    )
    email = email or typer.prompt("Email", default=known.email if known else None)
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True)
    client = Client(base, store=store)
    try:
        client.login(email, password, name or profile_name(base))
    finally:
        client.close()
    err.print(f"signed in to {base} as {email} (profile {client.profile})")


@app.command("logout")
def logout(ctx: typer.Context) -> None:
    """Revoke this login's session on the server and forget it here."""
    with signed_in(ctx) as client:
        client.logout()
    err.print(f"signed out of {client.url}")


@app.command("whoami")
def whoami(ctx: typer.Context, as_json: Json = False) -> None:
    """Who the stored login (or CHRONOS_TOKEN) is, on which server."""
    with signed_in(ctx) as client:
        me = client.json("GET", "/auth/me")
    if as_json:
        emit(me)
    else:
        out.print(f"{me['email']} ({me['role']}) on {client.url}")


# --- output ----------------------------------------------------------------------------------------------


def emit(data: Any) -> None:
    """JSON for scripts: plain text on stdout, never wrapped or coloured."""
    print(json.dumps(data, indent=2))


def table(columns: list[str], rows: list[list[Any]]) -> None:
    """A table for people; the first column (the id, to copy) is never cut, the others fold."""
    grid = Table(box=None, header_style="bold")
    for i, column in enumerate(columns):
        grid.add_column(column, no_wrap=i == 0, overflow="fold")
    for row in rows:
        grid.add_row(*("" if cell is None else str(cell) for cell in row))
    out.print(grid)


def details(pairs: list[tuple[str, Any]]) -> None:
    grid = Table.grid(padding=(0, 2))
    for key, value in pairs:
        grid.add_row(f"[bold]{key}[/bold]", "" if value is None else escape(str(value)))
    out.print(grid)


def when(value: str | None) -> str:
    """A timestamp shortened for a table: to the second, in UTC."""
    return value.replace("T", " ")[:19] if value else ""


def schedule_text(schedule: dict[str, Any]) -> str:
    kind = schedule.get("type")
    if kind == "cron":
        return f"cron {schedule['cron']} ({schedule.get('timezone') or 'UTC'})"
    if kind == "interval":
        return f"every {schedule['every_seconds']}s"
    if kind == "once":
        return f"once at {when(schedule.get('run_at'))}"
    return str(kind)


def job_rows(jobs: list[dict[str, Any]]) -> None:
    table(
        ["ID", "NAME", "STATE", "SCHEDULE", "NEXT RUN", "LAST RUN", "LABELS"],
        [
            [
                job["id"],
                job["name"],
                job["state"],
                schedule_text(job["schedule"]),
                when(job.get("next_run_at")),
                (job.get("last_run") or {}).get("status"),
                labels_text(job.get("labels")),
            ]
            for job in jobs
        ],
    )


def job_details(job: dict[str, Any]) -> None:
    details(
        [
            ("id", job["id"]),
            ("name", job["name"]),
            ("description", job.get("description")),
            ("state", job["state"] + (f" ({job['pause_note']})" if job.get("pause_note") else "")),
            ("schedule", schedule_text(job["schedule"])),
            ("action", action_text(job["action"])),
            ("labels", labels_text(job.get("labels")) or None),
            ("next runs", ", ".join(when(t) for t in job.get("next_runs") or [])),
            ("last run", _run_text(job.get("last_run"))),
            ("version", job.get("version")),
            ("temporal", (job.get("temporal") or {}).get("ui_url")),
            *(("warning", w) for w in job.get("warnings") or []),
        ]
    )


def labels_text(labels: dict[str, str] | None) -> str:
    """Labels as `--label` takes them: `team:ops env:prod`."""
    return " ".join(f"{key}:{value}" for key, value in (labels or {}).items())


def action_text(action: dict[str, Any]) -> str:
    if action.get("type") == "http":
        return f"{action['method']} {action['url']}"
    if action.get("type") == "email":
        return f"email to {', '.join(action['to'])}: {action['subject']}"
    return f"{action.get('type')} {action.get('workflow_type', '')}".strip()


def _run_text(run: dict[str, Any] | None) -> str | None:
    return f"{run['id']} {run['status']} {when(run.get('scheduled_at'))}" if run else None


def run_rows(runs: list[dict[str, Any]]) -> None:
    table(
        ["ID", "STATUS", "TRIGGER", "SCHEDULED", "STARTED", "MS", "ATTEMPTS", "ERROR"],
        [
            [
                r["id"],
                r["status"],
                r["trigger"],
                when(r.get("scheduled_at")),
                when(r.get("started_at")),
                r.get("duration_ms"),
                r.get("attempts"),
                r.get("error"),
            ]
            for r in runs
        ],
    )


def log_line(line: dict[str, Any]) -> None:
    out.print(f"{when(line['ts'])} {line['level'].upper():<7} {escape(line['message'])}", highlight=False)


def listing(
    client: Client, path: str, params: dict[str, Any], limit: int, size: int = MAX_PAGE
) -> list[dict[str, Any]]:
    return list(pages(client, path, params, limit or None, size))


Limit = Annotated[int, typer.Option(help="at most this many (0: all)")]


# --- jobs ------------------------------------------------------------------------------------------------


@jobs_app.command("list")
def jobs_list(
    ctx: typer.Context,
    state: Annotated[
        str | None, typer.Option(help="scheduled, running, paused, completed, failed, cancelled")
    ] = None,
    kind: Annotated[
        str | None, typer.Option("--type", help="schedule type: cron, interval, once, immediate")
    ] = None,
    q: Annotated[str | None, typer.Option("-q", help="part of the name")] = None,
    label: Annotated[list[str] | None, typer.Option(help="k:v, repeatable (all must hold)")] = None,
    limit: Limit = 100,
    page_size: Annotated[
        int, typer.Option(min=1, max=MAX_PAGE, help="jobs per request; the next page by its cursor")
    ] = MAX_PAGE,
    as_json: Json = False,
) -> None:
    """Your jobs, newest first, page after page (by cursor) up to --limit."""
    with signed_in(ctx) as client:
        params = {"state": state, "type": kind, "q": q, "label": label or []}
        jobs = listing(client, "/jobs", params, limit, page_size)
    if as_json:
        emit({"items": jobs})
    else:
        job_rows(jobs)


@jobs_app.command("get")
def jobs_get(ctx: typer.Context, job_id: str, as_json: Json = False) -> None:
    """One job, with its next fire times and last run."""
    with signed_in(ctx) as client:
        job = client.json("GET", f"/jobs/{job_id}")
    emit(job) if as_json else job_details(job)


def job_body(
    file: Path | None,
    name: str | None = None,
    description: str | None = None,
    cron: str | None = None,
    tz: str | None = None,
    every: int | None = None,
    at: str | None = None,
    now: bool = False,
    url: str | None = None,
    method: str | None = None,
    header: list[str] | None = None,
    body: str | None = None,
) -> dict[str, Any]:
    """A job body from a file (YAML or JSON, `${VAR}` from the environment) and flags, flags winning."""
    from core.jobfile import expand

    data: dict[str, Any] = {}
    if file is not None:
        missing: set[str] = set()
        loaded = expand(yaml.safe_load(file.read_text()), os.environ, missing)
        if missing:
            raise invalid("Missing environment variables", ", ".join(sorted(missing)))
        if not isinstance(loaded, dict):
            raise invalid("Not a job", f"{file}: expected a job body (a mapping)")
        data = loaded
    for key, value in (("name", name), ("description", description)):
        if value is not None:
            data[key] = value
    schedules = [s for s in (cron and "cron", every and "interval", at and "once", now and "immediate") if s]
    if len(schedules) > 1:
        raise invalid("Invalid flags", "give one of --cron, --every, --at and --now")
    if schedules:
        fields = {"cron": cron, "every_seconds": every, "run_at": at}
        data["schedule"] = {"type": schedules[0]} | {k: v for k, v in fields.items() if v is not None}
    if tz is not None:
        data.setdefault("schedule", {})["timezone"] = tz
    http: dict[str, Any] = {"url": url, "method": method and method.upper()}
    if header:
        http["headers"] = dict(_header(h) for h in header)
    if body is not None:
        try:
            http["body"] = json.loads(body)
        except ValueError as exc:
            raise invalid("Invalid --body", f"not JSON: {exc}") from exc
    if any(v is not None for v in http.values()):
        data["action"] = {"type": "http"} | {k: v for k, v in http.items() if v is not None}
    return data


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise invalid("Invalid --header", f"{text!r}: expected 'Name: value'")
    return name.strip(), value.strip()


JobFile = Annotated[
    Path | None, typer.Option("-f", "--file", exists=True, dir_okay=False, help="YAML or JSON job body")
]
Name = Annotated[str | None, typer.Option(help="the job's name (unique among yours)")]
Description = Annotated[str | None, typer.Option()]
Cron = Annotated[str | None, typer.Option(help="a cron schedule (5, 6 or 7 fields, or a @macro)")]
Tz = Annotated[str | None, typer.Option("--tz", help="IANA time zone of the schedule")]
Every = Annotated[int | None, typer.Option(help="an interval schedule: every N seconds")]
At = Annotated[str | None, typer.Option(help="run once at this ISO-8601 time (with an offset)")]
Now = Annotated[bool, typer.Option("--now", help="run once, now")]
Url = Annotated[str | None, typer.Option(help="an HTTP action: the URL to call")]
Method = Annotated[str | None, typer.Option(help="the HTTP method (default POST)")]
Header = Annotated[
    list[str] | None, typer.Option(help="'Name: value', repeatable; use ${VAR} in a file for secrets")
]
Body = Annotated[str | None, typer.Option(help="the HTTP body, JSON")]


@jobs_app.command("create")
def jobs_create(
    ctx: typer.Context,
    file: JobFile = None,
    name: Name = None,
    description: Description = None,
    cron: Cron = None,
    tz: Tz = None,
    every: Every = None,
    at: At = None,
    now: Now = False,
    url: Url = None,
    method: Method = None,
    header: Header = None,
    body: Body = None,
    paused: Annotated[bool, typer.Option("--paused", help="created paused")] = False,
    as_json: Json = False,
) -> None:
    """Create a job from -f FILE and/or flags, e.g. --name tick --cron '*/5 * * * *' --url https://…"""
    data = job_body(file, name, description, cron, tz, every, at, now, url, method, header, body)
    if paused:
        data["paused"] = True
    with signed_in(ctx) as client:
        job = client.json("POST", "/jobs", json=data)
    emit(job) if as_json else job_details(job)


@jobs_app.command("edit")
def jobs_edit(
    ctx: typer.Context,
    job_id: str,
    file: JobFile = None,
    name: Name = None,
    description: Description = None,
    cron: Cron = None,
    tz: Tz = None,
    every: Every = None,
    at: At = None,
    url: Url = None,
    method: Method = None,
    header: Header = None,
    body: Body = None,
    as_json: Json = False,
) -> None:
    """Change fields of a job (PATCH with If-Match: a job changed meanwhile is refused).

    Schedule flags change the current schedule of the same type; action flags need an action without
    secrets (its headers are masked in answers): give a whole action with -f otherwise."""
    changes = job_body(file, name, description, cron, tz, every, at, False, url, method, header, body)
    if not changes:
        raise invalid("Nothing to change", "give -f FILE or flags")
    with signed_in(ctx) as client:
        current = client.json("GET", f"/jobs/{job_id}")
        file_keys = set(yaml.safe_load(file.read_text()) or {}) if file else set()
        schedule = changes.get("schedule")
        if (
            schedule
            and "schedule" not in file_keys
            and schedule.get("type", current["schedule"]["type"]) == current["schedule"]["type"]
        ):
            changes["schedule"] = current["schedule"] | schedule
        action = changes.get("action")
        if action and "action" not in file_keys and current["action"].get("type") == "http":
            from core.jobfile import masked_in

            if masked_in(current["action"]):
                raise invalid(
                    "Secrets in the action", "its headers are masked in answers: give the action with -f"
                )
            changes["action"] = current["action"] | action
        job = client.json(
            "PATCH", f"/jobs/{job_id}", json=changes, headers={"If-Match": f'"{current["version"]}"'}
        )
    emit(job) if as_json else job_details(job)


def bulk(
    client: Client,
    verb: str,
    ids: list[str],
    label: list[str] | None,
    conditions: dict[str, str | None],
    note: str | None,
    as_json: bool,
) -> None:
    """One job by its id, or many at once through the bulk endpoint (ids, or a filter), which answers how
    many it changed. A note on a single resume goes by the bulk endpoint: the job's own takes none."""
    filtered = bool(label) or any(conditions.values())
    if len(ids) == 1 and not filtered and not (note and verb == "resume"):
        job = client.json("POST", f"/jobs/{ids[0]}/{verb}", json={"note": note} if note else None)
        emit(job) if as_json else err.print(f"{job['name']} ({job['id']}): {job['state']}")
        return
    if ids and filtered:
        raise invalid(
            "Invalid arguments", "give job ids or a filter (--label, --state, --type, -q), not both"
        )
    if not ids and not filtered:
        raise invalid("Nothing to do", "give job ids or a filter (--label, --state, --type, -q)")
    labels = dict(_label(text) for text in label or [])
    match = {k: v for k, v in conditions.items() if v} | ({"labels": labels} if labels else {})
    selector: dict[str, Any] = {"ids": ids} if ids else {"filter": match}
    answer = client.json("POST", f"/jobs/{verb}", json=selector | ({"note": note} if note else {}))
    emit(answer) if as_json else err.print(f"{verb}d {answer['count']} job(s)")


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition(":")
    if not sep:
        raise invalid("Invalid --label", f"{text!r}: expected key:value")
    return key, value


Ids = Annotated[list[str] | None, typer.Argument(help="job ids; or none, with a filter")]
Label = Annotated[list[str] | None, typer.Option(help="jobs with this label, k:v, repeatable")]
State = Annotated[str | None, typer.Option(help="jobs in this state")]
Kind = Annotated[str | None, typer.Option("--type", help="jobs with this schedule type")]
Query = Annotated[str | None, typer.Option("-q", help="jobs whose name has this")]


@jobs_app.command("pause")
def jobs_pause(
    ctx: typer.Context,
    ids: Ids = None,
    label: Label = None,
    state: State = None,
    kind: Kind = None,
    q: Query = None,
    note: Annotated[str | None, typer.Option(help="why, shown with the job and in the audit trail")] = None,
    as_json: Json = False,
) -> None:
    """Pause jobs: no run starts, runs in flight wait before their next attempt. Prints how many were
    paused (those already paused, finished or cancelled are not counted)."""
    with signed_in(ctx) as client:
        bulk(client, "pause", ids or [], label, {"state": state, "type": kind, "q": q}, note, as_json)


@jobs_app.command("resume")
def jobs_resume(
    ctx: typer.Context,
    ids: Ids = None,
    label: Label = None,
    state: State = None,
    kind: Kind = None,
    q: Query = None,
    note: Annotated[str | None, typer.Option(help="why, in the audit trail")] = None,
    as_json: Json = False,
) -> None:
    """Resume paused jobs; prints how many were resumed.

    Fires missed while paused are made up by each job's misfire rule (none without one)."""
    with signed_in(ctx) as client:
        bulk(client, "resume", ids or [], label, {"state": state, "type": kind, "q": q}, note, as_json)


@jobs_app.command("trigger")
def jobs_trigger(ctx: typer.Context, job_id: str, as_json: Json = False) -> None:
    """Run a job now, whatever its schedule (also while paused); prints the run."""
    with signed_in(ctx) as client:
        run = client.json("POST", f"/jobs/{job_id}/trigger")
    emit(run) if as_json else out.print(run["id"])


@jobs_app.command("cancel")
def jobs_cancel(ctx: typer.Context, job_id: str) -> None:
    """No further runs; runs in flight are cancelled."""
    with signed_in(ctx) as client:
        job = client.json("POST", f"/jobs/{job_id}/cancel")
    err.print(f"{job['name']} ({job['id']}): {job['state']}")


@jobs_app.command("delete")
def jobs_delete(
    ctx: typer.Context,
    job_id: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
) -> None:
    """Delete a job: its schedule is gone; its run history stays readable by admins."""
    if not yes:
        typer.confirm(f"Delete job {job_id}?", abort=True)
    with signed_in(ctx) as client:
        client.request("DELETE", f"/jobs/{job_id}")
    err.print(f"deleted {job_id}")


@jobs_app.command("runs")
def jobs_runs(
    ctx: typer.Context,
    job_id: str,
    status: Annotated[str | None, typer.Option(help="runs with this status")] = None,
    limit: Limit = 20,
    as_json: Json = False,
) -> None:
    """A job's runs, newest first."""
    with signed_in(ctx) as client:
        runs = listing(client, f"/jobs/{job_id}/runs", {"status": status}, limit)
    emit({"items": runs}) if as_json else run_rows(runs)


@jobs_app.command("backfill")
def jobs_backfill(
    ctx: typer.Context,
    job_id: str,
    start: Annotated[str, typer.Option(help="ISO-8601, with an offset")],
    end: Annotated[str, typer.Option(help="ISO-8601, with an offset")],
    overlap_policy: Annotated[
        str | None, typer.Option(help="for these runs (default buffer_all: one after another)")
    ] = None,
    as_json: Json = False,
) -> None:
    """Start the runs the schedule would have started from --start to --end (both included, in the
    past); prints how many."""
    body = {"start": start, "end": end} | ({"overlap_policy": overlap_policy} if overlap_policy else {})
    with signed_in(ctx) as client:
        answer = client.json("POST", f"/jobs/{job_id}/backfill", json=body)
    emit(answer) if as_json else err.print(f"{answer['count']} run(s) started")


# --- runs ------------------------------------------------------------------------------------------------


@runs_app.command("get")
def runs_get(ctx: typer.Context, run_id: str, as_json: Json = False) -> None:
    """One run, with each attempt."""
    with signed_in(ctx) as client:
        run = client.json("GET", f"/runs/{run_id}")
    if as_json:
        emit(run)
        return
    details(
        [
            ("id", run["id"]),
            ("job", run["job_id"]),
            ("status", run["status"]),
            ("trigger", run["trigger"]),
            ("scheduled", when(run.get("scheduled_at"))),
            ("started", when(run.get("started_at"))),
            ("finished", when(run.get("finished_at"))),
            ("duration ms", run.get("duration_ms")),
            ("error", run.get("error")),
            ("temporal", (run.get("temporal") or {}).get("ui_url")),
        ]
    )
    attempts = run.get("attempt_history") or []
    if attempts:
        table(
            ["ATTEMPT", "STATUS", "HTTP", "STARTED", "MS", "ERROR"],
            [
                [
                    a["number"],
                    a["status"],
                    a.get("http_status"),
                    when(a.get("started_at")),
                    a.get("duration_ms"),
                    a.get("error"),
                ]
                for a in attempts
            ],
        )


@runs_app.command("logs")
def runs_logs(
    ctx: typer.Context,
    run_id: str,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="print new lines until the run ends")
    ] = False,
    interval: Annotated[float, typer.Option(help="seconds between polls with --follow")] = 1.0,
    as_json: Json = False,
) -> None:
    """A run's log lines; with --follow, until the run ends.

    With --follow the exit code is the run's: 0 if it succeeded, 1 otherwise."""
    from core.models import ACTIVE_RUNS

    with signed_in(ctx) as client:
        if not follow:
            logs = client.json("GET", f"/runs/{run_id}/logs")
            if as_json:
                emit(logs)
            else:
                for line in logs["items"]:
                    log_line(line)
            return
        shown = 0
        while True:
            status = client.json("GET", f"/runs/{run_id}")["status"]  # before the logs: none is missed
            lines = client.json("GET", f"/runs/{run_id}/logs")["items"]
            for line in lines[shown:]:
                print(json.dumps(line), flush=True) if as_json else log_line(line)
            shown = len(lines)
            if status not in ACTIVE_RUNS:
                break
            time.sleep(interval)
    err.print(f"run {run_id} {status}")
    raise typer.Exit(0 if status == "succeeded" else EXIT_ERROR)


def run_signal(verb: str) -> Callable[[typer.Context, str], None]:
    def command(ctx: typer.Context, run_id: str) -> None:
        with signed_in(ctx) as client:
            run = client.json("POST", f"/runs/{run_id}/{verb}")
        err.print(f"run {run['id']}: {run['status']} ({verb} sent)")

    command.__doc__ = {
        "pause": "Pause one run: it makes no further attempt until resumed.",
        "resume": "Resume a paused run.",
        "cancel": "Cancel one run.",
    }[verb]
    return command


for _verb in ("pause", "resume", "cancel"):
    runs_app.command(_verb)(run_signal(_verb))


# --- dead letters, preview, users --------------------------------------------------------------------------


@letters_app.command("list")
def letters_list(ctx: typer.Context, limit: Limit = 100, as_json: Json = False) -> None:
    """Runs that failed for good, newest first."""
    with signed_in(ctx) as client:
        letters = listing(client, "/dead-letters", {}, limit)
    if as_json:
        emit({"items": letters})
        return
    table(
        ["ID", "JOB", "RUN", "ATTEMPTS", "CREATED", "ERROR"],
        [
            [d["id"], d["job_id"], d["run_id"], d["attempts"], when(d["created_at"]), d["error"]]
            for d in letters
        ],
    )


@letters_app.command("replay")
def letters_replay(ctx: typer.Context, letter_id: str, as_json: Json = False) -> None:
    """Start a new run of the dead letter's job; prints the run."""
    with signed_in(ctx) as client:
        run = client.json("POST", f"/dead-letters/{letter_id}/replay")
    emit(run) if as_json else out.print(run["id"])


@letters_app.command("discard")
def letters_discard(ctx: typer.Context, letter_id: str) -> None:
    """Forget a dead letter."""
    with signed_in(ctx) as client:
        client.request("DELETE", f"/dead-letters/{letter_id}")
    err.print(f"discarded {letter_id}")


@app.command("preview")
def preview(
    ctx: typer.Context,
    cron: Annotated[str, typer.Argument(help="the cron expression, quoted")],
    tz: Annotated[str | None, typer.Option("--tz", help="IANA time zone (default UTC)")] = None,
    count: Annotated[int, typer.Option(help="how many fire times")] = 10,
    dialect: Annotated[str | None, typer.Option(help="posix, spring or quartz")] = None,
    as_json: Json = False,
) -> None:
    """Validate a cron schedule and see its next fire times, without saving anything."""
    schedule = (
        {"type": "cron", "cron": cron}
        | ({"timezone": tz} if tz else {})
        | ({"dialect": dialect} if dialect else {})
    )
    with signed_in(ctx) as client:
        answer = client.json("POST", "/schedules/preview", json={"schedule": schedule, "count": count})
    if as_json:
        emit(answer)
        return
    out.print(answer["description"] + (f" ({answer['dialect']})" if answer.get("dialect") else ""))
    for fire in answer["next_runs"]:
        out.print(f"  {fire}")
    for warning in answer.get("warnings") or []:
        err.print(f"warning: {warning}")


@users_app.command("list")
def users_list(
    ctx: typer.Context,
    q: Annotated[str | None, typer.Option("-q", help="part of the email")] = None,
    limit: Limit = 100,
    as_json: Json = False,
) -> None:
    """Every account (admins)."""
    with signed_in(ctx) as client:
        users = listing(client, "/admin/users", {"q": q}, limit)
    if as_json:
        emit({"items": users})
        return
    table(
        ["ID", "EMAIL", "ROLE", "DISABLED", "CREATED"],
        [
            [u["id"], u["email"], u["role"], "yes" if u.get("disabled") else "", when(u.get("created_at"))]
            for u in users
        ],
    )


@users_app.command("update")
def users_update(
    ctx: typer.Context,
    user_id: str,
    role: Annotated[str | None, typer.Option(help="user or admin")] = None,
    disabled: Annotated[
        bool | None,
        typer.Option("--disable/--enable", help="disable: ends their sessions, pauses their jobs"),
    ] = None,
    as_json: Json = False,
) -> None:
    """Change a user's role, or disable or enable them (admins)."""
    change = {k: v for k, v in (("role", role), ("disabled", disabled)) if v is not None}
    if not change:
        raise invalid("Nothing to change", "give --role, --disable or --enable")
    with signed_in(ctx) as client:
        user = client.json("PATCH", f"/admin/users/{user_id}", json=change)
    emit(user) if as_json else out.print(
        f"{user['email']}: {user['role']}{', disabled' if user['disabled'] else ''}"
    )


# --- jobs as code ----------------------------------------------------------------------------------------


def own_jobs(client: Client) -> list[dict[str, Any]]:
    """The signed-in user's jobs (an admin's listing has everyone's)."""
    me = client.json("GET", "/auth/me")
    return [job for job in pages(client, "/jobs", {}) if job["owner_id"] == me["id"]]


@app.command("apply")
def apply(
    ctx: typer.Context,
    file: Annotated[Path, typer.Option("-f", "--file", exists=True, help="a jobs file, or a folder of them")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="print what would change, change nothing")
    ] = False,
    prune: Annotated[
        bool, typer.Option("--prune", help="delete your jobs that the file does not name")
    ] = False,
    resend_secrets: Annotated[
        bool,
        typer.Option(
            "--resend-secrets", help="send the action and notify of jobs holding secrets, to rotate them"
        ),
    ] = False,
) -> None:
    """Make your jobs on the server match a jobs file (or a folder of them).

    The file is YAML or JSON {"jobs": [<POST /jobs bodies>]}, matched by name: create, update in place
    (only the fields that differ, with If-Match), and with --prune delete the others. ${VAR} in the file
    is the environment variable VAR."""
    from core.jobfile import plan, read_jobs

    desired = read_jobs(file, os.environ)
    with signed_in(ctx) as client:
        steps = plan(desired, own_jobs(client), prune=prune, resend_secrets=resend_secrets)
        for step in steps.steps:
            show_step(step)
            if not dry_run:
                carry_out(client, step)
    changed = len(steps.steps)
    if not changed:
        err.print(f"no changes: {len(steps.unchanged)} job(s) match the file")
    else:
        done = "would make" if dry_run else "made"
        err.print(f"{done} {changed} change(s); {len(steps.unchanged)} job(s) unchanged")


SIGNS = {"create": "+", "delete": "-", "update": "~", "replace": "!", "pause": "~", "resume": "~"}


def show_step(step: Step) -> None:
    where = f" ({step.job_id})" if step.job_id else ""
    out.print(f"{SIGNS[step.kind]} {step.kind} {escape(step.name)}{where}", highlight=False)
    for key, before, after in step.diff:
        if before == after:
            out.print(f"    ~ {key}: sent again (it holds secrets)", highlight=False)
            continue
        out.print(f"    - {key}: {escape(json.dumps(before))}", style="red", highlight=False)
        out.print(f"    + {key}: {escape(json.dumps(after))}", style="green", highlight=False)


def carry_out(client: Client, step: Step) -> None:
    if step.kind in ("delete", "replace"):
        client.request("DELETE", f"/jobs/{step.job_id}")
    if step.kind in ("create", "replace"):
        client.json("POST", "/jobs", json=step.body)
    elif step.kind == "update":
        client.json(
            "PATCH", f"/jobs/{step.job_id}", json=step.changes, headers={"If-Match": f'"{step.version}"'}
        )
    elif step.kind in ("pause", "resume"):
        client.json("POST", f"/jobs/{step.job_id}/{step.kind}")


@app.command("export")
def export(
    ctx: typer.Context,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="write here (default: stdout)")
    ] = None,
    fmt: Annotated[FileFormat, typer.Option("--format")] = FileFormat.YAML,
) -> None:
    """Write your jobs as a file for `chronos apply`.

    Secrets the API masks become ${VAR} placeholders, named after the job and the header (or URL
    userinfo), to be set when the file is applied."""
    from core.jobfile import dumped, exported

    with signed_in(ctx) as client:
        text = dumped(exported(own_jobs(client)), fmt)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)


def report(error: ClientError) -> None:
    """An error as people read it: the problem's title and detail, then each field error."""
    err.print(
        f"[bold red]chronos: {escape(error.title)}[/bold red]"
        + (f": {escape(error.detail)}" if error.detail else "")
    )
    for item in error.errors:
        where = ".".join(str(p) for p in item.get("loc") or [] if p != "body") or "body"
        err.print(f"  {escape(where)}: {escape(str(item.get('msg')))}")


def main(argv: list[str] | None = None) -> None:
    try:
        app(args=argv, prog_name="chronos")
    except ClientError as error:
        report(error)
        sys.exit(error.exit_code)


if __name__ == "__main__":
    main()
