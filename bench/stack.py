"""What every benchmark starts: a Temporal dev server, the HTTP target, Chronos workers and API, the bare
worker, each a child process with its log in the run's scratch directory, all stopped on the way out.

Also the measuring tools they share: N requests from a fixed number of clients, requests at a fixed rate
(latency counted from when a request was due, so a slow answer cannot hide the queue behind it), tables.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine
from temporalio.client import Client

from bench.target import TargetClient
from core.config import Settings
from core.db import Sessions, create_schema, make_engine, make_sessions
from core.health import live_pollers
from core.models import Role, User
from core.temporal import SEARCH_ATTRIBUTES, temporal_binary

BIN = Path(sys.executable).parent
PASSWORD = "bench password 1234"
POSTGRES_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    now = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{now}, {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, load average {load}"


def proc_stat(pid: int | str) -> tuple[str, list[str]]:
    """A process's name and the fields of `/proc/<pid>/stat` after it (state first: field 3 of proc(5))."""
    name, _, rest = Path(f"/proc/{pid}/stat").read_text().partition(" (")[2].rpartition(")")
    return name, rest.split()


def process_cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, all its threads."""
    fields = proc_stat(pid)[1]
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu_seconds() -> float:
    """CPU time the local PostgreSQL server has used so far: every one of its processes, and those that
    have ended (a backend of a connection the pool closed), whose time its postmaster took in as it
    reaped them. The whole server, on the same cores: the benchmarks are its only clients here."""
    stats: dict[int, list[str]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                name, fields = proc_stat(entry.name)
                if name == "postgres":
                    stats[int(entry.name)] = fields
    used = 0
    for fields in stats.values():
        used += int(fields[11]) + int(fields[12])
        if int(fields[1]) not in stats:  # the postmaster: add its reaped children's time
            used += int(fields[13]) + int(fields[14])
    return used / os.sysconf("SC_CLK_TCK")


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A child with its output in `log`, so a failed benchmark can say why."""
    with log.open("wb") as out:
        return subprocess.Popen(args, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def verdict(what: str, value: float, bound: float, higher_is_better: bool) -> str:
    """The line that says whether a target is met, for the bottom of a benchmark's output."""
    met = value >= bound if higher_is_better else value <= bound
    sign = "≥" if higher_is_better else "≤"
    return f"{what} = {value:.2f}, target {sign} {bound:g}: {'met' if met else 'NOT met'}"


async def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with code {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise RuntimeError(f"{what} did not open port {port} within {within:g} s")


@dataclass
class Stack:
    """One benchmark's processes; `chronos_env` is what a Chronos worker or API process is configured with."""

    workdir: Path
    temporal_port: int
    temporal: Client
    target: TargetClient
    metrics_port: int  # the dev server's own metrics (`--metrics-port`)
    database_url: str | None = None
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.temporal_port}"

    @property
    def mirror_url(self) -> str:
        """A synchronous SQLAlchemy URL of the mirror, for seeding and checking it from the benchmark."""
        if self.database_url:
            return self.database_url.replace("postgresql://", "postgresql+psycopg://", 1)
        return f"sqlite:///{self.workdir / 'chronos.db'}"

    def chronos_env(self, task_queue: str = "chronos") -> dict[str, str]:
        env = {
            **os.environ,
            "CHRONOS_TEMPORAL_ADDRESS": self.address,
            "CHRONOS_TASK_QUEUE": task_queue,
            "CHRONOS_DATA_DIR": str(self.workdir),
            "CHRONOS_ALLOW_PRIVATE_TARGETS": "true",
            "CHRONOS_JWT_SECRET": "bench-secret-bench-secret-bench-secret",
            # The benchmarks' one user writes far more than a person would: lift the per-user limits.
            "CHRONOS_MAX_JOBS_PER_USER": "1000000",
            "CHRONOS_JOB_WRITES_PER_MINUTE": "1000000",
            "CHRONOS_RUNS_PER_MINUTE": "1000000",
            # One login serves a whole benchmark, which may take longer than an access token lives.
            "CHRONOS_ACCESS_TOKEN_TTL_SECONDS": "86400",
        }
        if self.database_url:
            env["CHRONOS_DATABASE_URL"] = self.database_url
        return env

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """With BENCH_PROFILE=<dir>, py-spy samples the child for its whole life into <dir>/<name>.txt
        (collapsed stacks: `py-spy` must be installed; it is not a dependency of the project)."""
        proc = spawn(args, self.workdir / f"{name}.log", env)
        self.children[name] = proc
        if profiles := os.environ.get("BENCH_PROFILE"):
            Path(profiles).mkdir(parents=True, exist_ok=True)
            out = str(Path(profiles) / f"{name}.txt")
            spy = [str(BIN / "py-spy"), "record", "--pid", str(proc.pid), "--format", "raw", "-o", out]
            self.children[f"{name}-py-spy"] = spawn(
                [*spy, "--rate", "200", "--gil"], self.workdir / f"{name}-py-spy.log"
            )
        return proc

    def stop(self, name: str, timeout: float = 20) -> None:
        proc = self.children.pop(name)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def start_chronos_worker(self, name: str = "chronos-worker", concurrency: int = 100) -> None:
        self.spawn(
            name, [str(BIN / "chronos"), "worker", "--concurrency", str(concurrency)], self.chronos_env()
        )

    def start_bare_worker(self, name: str = "bare-worker", concurrency: int = 100) -> None:
        args = [sys.executable, "-m", "bench.bare", "--address", self.address, "--task-queue", "bare"]
        self.spawn(name, [*args, "--concurrency", str(concurrency)])

    async def start_api(self) -> Api:
        port = free_port()
        proc = self.spawn("api", [str(BIN / "chronos"), "api", "--port", str(port)], self.chronos_env())
        await wait_port(port, proc, "the Chronos API")
        return await Api.login(f"http://127.0.0.1:{port}")

    async def wait_for_pollers(self, task_queue: str, within: float = 60) -> None:
        """Until a worker polls `task_queue`, so start-up time stays out of the measurement."""
        deadline = time.monotonic() + within
        while not await live_pollers(self.temporal, task_queue):
            if time.monotonic() > deadline:
                raise RuntimeError(f"no worker polls {task_queue} after {within:g} s; see {self.workdir}")
            await asyncio.sleep(0.2)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU time (user + system) each process has used so far, this benchmark's own included, and with
        a PostgreSQL mirror, the PostgreSQL server's (`postgres_cpu_seconds`)."""
        used = {"benchmark": sum(os.times()[:2])}
        for name, proc in self.children.items():
            with contextlib.suppress(OSError):
                used[name] = process_cpu_seconds(proc.pid)
        if self.database_url:
            used["PostgreSQL"] = postgres_cpu_seconds()
        return used

    def server_time(self, operation: str) -> tuple[float, int]:
        """Seconds the dev server's frontend has spent answering `operation` so far, and how many it
        answered (its own `service_latency` histogram): a call's time inside Temporal, whoever sent it."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        spent, answered = 0.0, 0
        for family in text_string_to_metric_families(httpx.get(url, timeout=10).text):
            for sample in family.samples:
                labels = sample.labels
                if labels.get("operation") != operation or labels.get("service_name") != "frontend":
                    continue
                if sample.name == "service_latency_sum":
                    spent += sample.value
                elif sample.name == "service_latency_count":
                    answered += int(sample.value)
        return spent, answered

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.workdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


def add_cpu(totals: dict[str, float], before: dict[str, float], after: dict[str, float]) -> None:
    """Add each process's CPU seconds between two `Stack.cpu_seconds()` readings to `totals` (a
    profiler's own left out)."""
    for name in after:
        if "py-spy" not in name:
            totals[name] = totals.get(name, 0.0) + after[name] - before.get(name, 0.0)


def cpu_table(
    what: str, cpu: dict[str, dict[str, float]], count: int, **columns: Mapping[str, object]
) -> str:
    """Each side's CPU seconds per 100 `what` by process, from its `add_cpu` totals over `count` of them;
    `columns` (header: value by side) come between the side and the processes."""
    names = sorted({name for used in cpu.values() for name in used})
    rows = [
        [
            side,
            *(column[side] for column in columns.values()),
            *(used.get(name, 0.0) * 100 / count for name in names),
        ]
        for side, used in cpu.items()
    ]
    return table(f"CPU seconds per 100 {what}, by process", ["side", *columns, *names], rows)


@asynccontextmanager
async def stack(
    *,
    in_memory: bool = False,
    postgres: bool = False,
    dynamic_config: dict[str, str] | None = None,
    sqlite_pragmas: Sequence[str] = (),
) -> AsyncIterator[Stack]:
    """A dev server (its file database unless `in_memory`) with Chronos's search attributes, and the target;
    with `postgres`, a fresh database on the local PostgreSQL for the mirror (dropped afterwards);
    `dynamic_config` values (JSON, as `--dynamic-config-value KEY=VALUE` takes them) and `sqlite_pragmas`
    (`journal_mode=wal`, `synchronous=normal`: the two it accepts) go to the dev server."""
    workdir = Path(tempfile.mkdtemp(prefix="chronos-bench-"))
    temporal_port, target_port, metrics_port = free_port(), free_port(), free_port()
    args = [temporal_binary(), "server", "start-dev", "--headless", "--port", str(temporal_port)]
    args += ["--log-level", "error", "--metrics-port", str(metrics_port)]
    if not in_memory:
        args += ["--db-filename", str(workdir / "temporal.db")]
        for pragma in sqlite_pragmas:
            args += ["--sqlite-pragma", pragma]
    for key in SEARCH_ATTRIBUTES:
        args += ["--search-attribute", f"{key.name}=Keyword"]
    for setting, value in (dynamic_config or {}).items():
        args += ["--dynamic-config-value", f"{setting}={value}"]
    children: dict[str, subprocess.Popen[bytes]] = {}
    db_name = f"chronos_bench_{os.getpid()}"
    s: Stack | None = None
    try:
        server = spawn(args, workdir / "temporal.log")
        children["temporal"] = server
        target_args = [sys.executable, "-m", "bench.target", "--port", str(target_port)]
        target = spawn(target_args, workdir / "target.log")
        children["target"] = target
        await wait_port(temporal_port, server, "the Temporal dev server")
        await wait_port(target_port, target, "the HTTP target")
        client = await connect_when_up(f"127.0.0.1:{temporal_port}")
        database_url = None
        if postgres:
            database_url = create_postgres_database(db_name)
        target_client = TargetClient(target_port)
        s = Stack(workdir, temporal_port, client, target_client, metrics_port, database_url, children)
        yield s
    finally:
        if s is not None:
            await s.target.aclose()
            for name in [n for n in list(children) if n not in ("temporal", "target")]:
                s.stop(name)
        for proc in children.values():
            proc.terminate()
        for proc in children.values():
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if postgres:
            drop_postgres_database(db_name)
        if os.environ.get("BENCH_KEEP") is None:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}")


async def connect_when_up(address: str, within: float = 30) -> Client:
    """A plain client, as bare Temporal's user has: it starts the bare workflows and reads Chronos's
    histories raw (their payloads encrypted; `data_converter` of the stack's data dir reads them)."""
    deadline = time.monotonic() + within
    while True:
        try:
            client = await Client.connect(address)
            await client.count_workflows()
            return client
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


def postgres_reachable() -> bool:
    import psycopg

    try:
        psycopg.connect(POSTGRES_ADMIN, connect_timeout=2).close()
    except psycopg.OperationalError:
        return False
    return True


def create_postgres_database(name: str) -> str:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
        admin.execute(f'CREATE DATABASE "{name}"')
    return POSTGRES_ADMIN.rsplit("/", 1)[0] + f"/{name}"


def drop_postgres_database(name: str) -> None:
    import psycopg

    with psycopg.connect(POSTGRES_ADMIN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def reachable(dbs: Sequence[str]) -> list[str]:
    """The mirrors asked for that this machine has: PostgreSQL only when it answers on 127.0.0.1:5432."""
    if "postgresql" in dbs and not postgres_reachable():
        print("PostgreSQL is not reachable on 127.0.0.1:5432: skipped")
        return [db for db in dbs if db != "postgresql"]
    return list(dbs)


@dataclass
class ScratchMirror:
    """A new, empty mirror with its schema, for the benchmarks that call Chronos's services in process."""

    name: str
    workdir: Path
    url: str
    settings: Settings
    engine: AsyncEngine
    sessions: Sessions

    async def add_user(self, role: Role) -> User:
        async with self.sessions() as session:
            user = User(email=f"{self.name}@example.org", password_hash="-", role=role)
            session.add(user)
            await session.commit()
        return user


@asynccontextmanager
async def scratch_mirror(kind: str, db: str, **settings: Any) -> AsyncIterator[ScratchMirror]:
    """A mirror of its own on `db` (SQLite in a scratch directory, or a new PostgreSQL database, dropped
    on the way out), with `settings` over the defaults."""
    workdir = Path(tempfile.mkdtemp(prefix=f"chronos-{kind}-"))
    name = f"chronos_{kind}_{uuid.uuid4().hex[:8]}"
    if db == "postgresql":
        url = create_postgres_database(name).replace("postgresql://", "postgresql+psycopg://", 1)
    else:
        url = f"sqlite:///{workdir / 'chronos.db'}"
    config = Settings(data_dir=workdir, database_url=url, **settings)
    engine = make_engine(config)
    try:
        await create_schema(engine)
        yield ScratchMirror(name, workdir, url, config, engine, make_sessions(engine))
    finally:
        await engine.dispose()
        if db == "postgresql":
            drop_postgres_database(name)


class LeanClient:
    """HTTP/1.1 over kept-alive connections and nothing more, for the requests a benchmark counts.

    The client is the user's, not Chronos's, yet it runs on the two cores the server and Chronos share:
    httpx cost the benchmark's process about 1.2 ms of CPU a job, twice what the SDK's `start_workflow`
    costs it on bare's side (0.55 ms), CPU then missing from the server and, for a timed request, time
    added to its latency. This one costs about 0.17 ms (docs/bench.md)."""

    # Uvicorn closes a connection idle for 5 s; one idle for longer than this is not reused.
    IDLE_SECONDS = 2.0

    def __init__(self, base: str) -> None:
        parts = urlsplit(base)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.prefix = parts.path.rstrip("/")
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []

    async def request(
        self,
        method: str,
        path: str,
        authorization: str | None = None,
        query: Mapping[str, Any] | None = None,
        body: Mapping[str, Any] | None = None,
    ) -> tuple[int, bytes]:
        """The answer's status and body; `body` goes as JSON."""
        target = f"{self.prefix}{path}" + (f"?{urlencode(query)}" if query else "")
        data = b"" if body is None else json.dumps(body).encode()
        kind = "" if body is None else "Content-Type: application/json\r\n"
        auth = "" if authorization is None else f"Authorization: {authorization}\r\n"
        head = (
            f"{method} {target} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n"
            f"{auth}{kind}Content-Length: {len(data)}\r\n\r\n"
        ).encode()
        reader, writer = await self._connection()
        writer.write(head + data)
        answer = await reader.readuntil(b"\r\n\r\n")
        status = int(answer[9:12])
        length = re.search(rb"(?im)^content-length:\s*(\d+)", answer)
        if length is None:
            writer.close()
            raise RuntimeError(f"{method} {path}: an answer without Content-Length: {answer[:200]!r}")
        content = await reader.readexactly(int(length.group(1)))
        if re.search(rb"(?im)^connection:\s*close", answer):
            writer.close()
        else:
            self.idle.append((reader, writer, time.monotonic()))
        return status, content

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        while self.idle:
            reader, writer, since = self.idle.pop()
            if time.monotonic() - since < self.IDLE_SECONDS and not reader.at_eof():
                return reader, writer
            writer.close()
        return await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()
        self.idle.clear()


class Api:
    """A logged-in user of the Chronos API: httpx, one pooled client shared by the benchmark's concurrent
    callers, and `LeanClient` for the requests a benchmark counts (`create_job`, `get`)."""

    def __init__(self, base: str, http: httpx.AsyncClient, user_id: str, email: str) -> None:
        self.base = base
        self.http = http
        self.lean = LeanClient(f"{base}/api/v1")
        self.user_id = user_id
        self.email = email

    @classmethod
    async def login(cls, base: str) -> Api:
        http = httpx.AsyncClient(
            base_url=f"{base}/api/v1", timeout=60, limits=httpx.Limits(max_connections=64)
        )
        email = f"bench-{time.time_ns()}@example.org"
        answer = await http.post("/auth/register", json={"email": email, "password": PASSWORD})
        answer.raise_for_status()
        api = cls(base, http, "", email)
        await api.login_again()
        api.user_id = (await http.get("/auth/me")).json()["id"]
        return api

    async def login_again(self) -> None:
        """A new access token, with the scopes of the account's role as it is now."""
        answer = await self.http.post("/auth/login", json={"email": self.email, "password": PASSWORD})
        answer.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    @property
    def authorization(self) -> str:
        """The `Authorization` header of the current login."""
        return str(self.http.headers["Authorization"])

    async def create_job(self, name: str, schedule: dict[str, Any], url: str) -> dict[str, Any]:
        body = {"name": name, "schedule": schedule, "action": {"type": "http", "method": "POST", "url": url}}
        status, content = await self.lean.request("POST", "/jobs", self.authorization, body=body)
        if status != 201:
            raise RuntimeError(f"POST /jobs answered {status}: {content[:500].decode(errors='replace')}")
        job: dict[str, Any] = json.loads(content)
        return job

    async def get(self, path: str, query: Mapping[str, Any]) -> int:
        """A timed GET's status (its body is read and dropped)."""
        status, _ = await self.lean.request("GET", path, self.authorization, query=query)
        return status

    async def post(self, path: str, body: Mapping[str, Any]) -> int:
        """A timed POST's status (its body is read and dropped)."""
        status, _ = await self.lean.request("POST", path, self.authorization, body=body)
        return status

    async def aclose(self) -> None:
        self.lean.close()
        await self.http.aclose()


async def with_clients(count: int, clients: int, call: Callable[[int], Awaitable[Any]]) -> list[float]:
    """`call(i)` for i in range(count), from `clients` concurrent callers; the latency of each call."""
    queue = iter(range(count))
    latencies: list[float] = []

    async def caller() -> None:
        for i in queue:
            started = time.perf_counter()
            await call(i)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(caller() for _ in range(clients)))
    return latencies


async def at_fixed_rate(rate: float, seconds: float, call: Callable[[int], Awaitable[Any]]) -> list[float]:
    """Open loop: request i is due at start + i/rate whatever came before; latency is counted from then."""
    count = int(rate * seconds)
    start = time.perf_counter() + 0.05
    latencies: list[float] = []

    async def one(i: int) -> None:
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        await call(i)
        latencies.append(time.perf_counter() - due)

    tasks = []
    for i in range(count):
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter() - 0.01))
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    return latencies


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(p / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table, so a run's output pastes straight into docs/bench.md."""
    cells = [[str(c) for c in header], *[[_cell(c) for c in row] for row in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [f"### {title}", ""]
    for n, row in enumerate(cells):
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)
