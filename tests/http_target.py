"""A real local HTTP server as the target of jobs and webhooks: records each request, answers as scripted."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# How long a hanging answer holds its request open unless the test releases it earlier.
HANG_SECONDS = 60


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: datetime = field(default_factory=lambda: datetime.now(UTC))  # when the request arrived


@dataclass(frozen=True)
class Answer:
    """One scripted answer: a status with headers, or a request held open (`hang`) until released."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False
    body: bytes = b'{"ok": true}'
    delay: float = 0  # seconds before answering: a call that is in flight for a while
    body_after: float = 0  # seconds between the status and headers and the body: a body that trickles
    until: threading.Event | None = None  # held open until the test sets it (or HANG_SECONDS pass)


HANG = Answer(hang=True)


@dataclass
class HttpTarget:
    """`script(path, [500, Answer(429, {"Retry-After": "1"}), HANG])` answers those in turn, then the last."""

    server: ThreadingHTTPServer
    requests: dict[str, list[Received]] = field(default_factory=lambda: defaultdict(list))
    scripts: dict[str, list[Answer]] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)
    released: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def script(self, path: str, answers: list[int | Answer]) -> None:
        self.scripts[path] = [a if isinstance(a, Answer) else Answer(a) for a in answers]

    def answer(self, received: Received) -> Answer:
        with self.changed:
            self.requests[received.path].append(received)
            self.changed.notify_all()
            answers = self.scripts.get(received.path, [Answer()])
            return answers.pop(0) if len(answers) > 1 else answers[0]

    async def wait_for(self, path: str, count: int = 1) -> list[Received]:
        """The requests to `path` once there are at least `count` of them (the test's timeout bounds it)."""

        def wait() -> list[Received]:
            with self.changed:
                if not self.changed.wait_for(lambda: len(self.requests[path]) >= count, HANG_SECONDS):
                    raise TimeoutError(f"{path} got {len(self.requests[path])} of {count} requests")
                return list(self.requests[path])

        return await asyncio.to_thread(wait)

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()


def start_target() -> HttpTarget:
    target: HttpTarget

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received = Received(self.command, self.path, dict(self.headers), self.rfile.read(length))
            answer = target.answer(received)
            if answer.hang:
                target.released.wait(HANG_SECONDS)
            elif answer.until is not None:
                answer.until.wait(HANG_SECONDS)
            elif answer.delay:
                target.released.wait(answer.delay)
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            if answer.body_after:
                self.wfile.flush()
                target.released.wait(answer.body_after)
            self.wfile.write(answer.body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, format: str, *args: object) -> None:
            pass

        def handle_one_request(self) -> None:
            # The worker that sent the request may have been killed or have timed out.
            with contextlib.suppress(ConnectionError):
                super().handle_one_request()

    class Server(ThreadingHTTPServer):
        # Room for a worker's burst of connections (socketserver listens with a backlog of 5).
        request_queue_size = 256

    server = Server(("127.0.0.1", 0), Handler)
    target = HttpTarget(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return target
