"""A real local HTTP server as the target of HTTP jobs: records every request, answers as scripted."""

from __future__ import annotations

import threading
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class HttpTarget:
    """`script(path, [500, 500, 200])` makes `path` answer those statuses in turn (then the last one)."""

    server: ThreadingHTTPServer
    requests: dict[str, list[Received]] = field(default_factory=lambda: defaultdict(list))
    scripts: dict[str, list[int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    def script(self, path: str, statuses: list[int]) -> None:
        self.scripts[path] = list(statuses)

    def answer(self, received: Received) -> int:
        with self.lock:
            self.requests[received.path].append(received)
            statuses = self.scripts.get(received.path, [200])
            return statuses.pop(0) if len(statuses) > 1 else statuses[0]


def start_target() -> HttpTarget:
    target: HttpTarget

    class Handler(BaseHTTPRequestHandler):
        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            received = Received(self.command, self.path, dict(self.headers), self.rfile.read(length))
            status = target.answer(received)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(b'{"ok": true}')

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    target = HttpTarget(server)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return target
