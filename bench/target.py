"""The HTTP target every benchmark calls: a small asyncio server in its own process that records when each
request arrived, so the time a job's call lands is measured where the user would see it.

`POST /any/path?delay_ms=200` answers 200 after the delay; `GET /_stats?prefix=/p` returns the arrivals
under that prefix as `{"count", "arrivals": [[unix time, Idempotency-Key], ...]}` (`&full=0`: count only).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict
from urllib.parse import parse_qs, urlsplit

import httpx

Arrival = tuple[float, str]


class Recorder:
    def __init__(self) -> None:
        self.arrivals: dict[str, list[Arrival]] = defaultdict(list)

    def stats(self, prefix: str, full: bool) -> bytes:
        rows = [a for path, seen in self.arrivals.items() if path.startswith(prefix) for a in seen]
        return json.dumps({"count": len(rows), "arrivals": rows if full else []}).encode()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """HTTP/1.1 with keep-alive, just enough for httpx: a pooled client reuses its connections."""
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                now = time.time()
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)
                }
                length = int(headers.get("content-length") or 0)
                if length:
                    await reader.readexactly(length)
                url = urlsplit(target)
                query = parse_qs(url.query)
                if method == "GET" and url.path == "/_stats":
                    body = self.stats(query.get("prefix", ["/"])[0], query.get("full", ["1"])[0] == "1")
                else:
                    self.arrivals[url.path].append((now, headers.get("idempotency-key", "")))
                    delay = float(query.get("delay_ms", ["0"])[0]) / 1000
                    if delay:
                        await asyncio.sleep(delay)
                    body = b"{}"
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                    % (len(body), body)
                )
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            writer.close()


async def serve(port: int) -> None:
    server = await asyncio.start_server(Recorder().handle, "127.0.0.1", port, backlog=1024)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


class TargetClient:
    """The benchmark's view of the target: how many calls arrived under a prefix, and when."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.http = httpx.AsyncClient(timeout=30)

    def url(self, path: str) -> str:
        return f"{self.base}{path}"

    async def count(self, prefix: str) -> int:
        answer = await self.http.get(f"{self.base}/_stats", params={"prefix": prefix, "full": "0"})
        return int(answer.json()["count"])

    async def arrivals(self, prefix: str) -> list[Arrival]:
        answer = await self.http.get(f"{self.base}/_stats", params={"prefix": prefix})
        return [(float(t), str(k)) for t, k in answer.json()["arrivals"]]

    async def wait_for(self, prefix: str, count: int, within: float) -> list[Arrival]:
        """All arrivals under `prefix` once there are `count`; raises TimeoutError with how many came."""
        deadline = time.monotonic() + within
        while (seen := await self.count(prefix)) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{prefix}: {seen} of {count} calls arrived within {within:g} s")
            await asyncio.sleep(0.05)
        return await self.arrivals(prefix)

    async def aclose(self) -> None:
        await self.http.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))
