"""TaapitMiddleware's cost: a bare Starlette app against the same app behind the middleware.

Driven in-process at the ASGI level (no sockets, no HTTP parsing), which is the harshest
setting for the middleware: everything a real server adds would dilute its share. For each
case the two apps alternate in rounds and the median round counts:

- (a) a GET with a ``ta_tid`` cookie (target: at most 3 % fewer requests/s);
- (b) a POST with a 1 KiB JSON body carrying ``trackingId`` (target: at most 10 %);
- (c) a POST of a 1 MiB upload in 64 KiB chunks, streamed through (target: no memory beyond
  the 64 KiB cap; the peak extra allocation is measured with tracemalloc).

Run: ``python benchmarks/bench_middleware.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import tracemalloc
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from taapit_async import AsyncTaapit
from taapit_async.integrations.asgi import TaapitMiddleware

Message = MutableMapping[str, Any]
App = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]
TID = "rLnWe1uz9t282v7g"


async def landing(request: Request) -> PlainTextResponse:
    return PlainTextResponse("welcome")


async def signup(request: Request) -> PlainTextResponse:
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
    return PlainTextResponse(str(size))


def build(middleware: bool) -> App:
    app = Starlette(routes=[Route("/", landing), Route("/signup", signup, methods=["POST"])])
    if not middleware:
        return app
    return TaapitMiddleware(app, client=AsyncTaapit(enabled=False))


def scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip


async def one(app: App, request: dict[str, Any], chunks: list[bytes]) -> None:
    pending = [
        {"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
        for i, c in enumerate(chunks)
    ] or [{"type": "http.request", "body": b"", "more_body": False}]
    index = 0

    async def receive() -> Message:
        nonlocal index
        if index < len(pending):
            index += 1
            return pending[index - 1]
        return {"type": "http.disconnect"}  # pragma: no cover

    async def send(message: Message) -> None:
        pass

    await app(dict(request), receive, send)


CASES: dict[str, tuple[dict[str, Any], list[bytes]]] = {}


def cases() -> dict[str, tuple[dict[str, Any], list[bytes]]]:
    body = json.dumps({"email": "a@example.com", "trackingId": TID, "pad": "x" * 950}).encode()
    upload = [b"u" * 65536] * 16
    json_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    return {
        "(a) GET with ta_tid cookie": (
            scope("GET", "/", [(b"cookie", f"session=abc; ta_tid={TID}".encode())]),
            [],
        ),
        "(b) POST 1 KiB JSON body": (
            scope("POST", "/signup", json_headers),
            [body],
        ),
        "(c) POST 1 MiB upload, 64 KiB chunks": (
            scope("POST", "/signup", [(b"content-type", b"application/json")]),
            upload,
        ),
    }


async def rate(app: App, request: dict[str, Any], chunks: list[bytes], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        await one(app, request, chunks)
    return n / (time.perf_counter() - started)


async def peak_memory(app: App, request: dict[str, Any], chunks: list[bytes]) -> int:
    await one(app, request, chunks)  # warm caches first
    tracemalloc.start()
    tracemalloc.reset_peak()
    await one(app, request, chunks)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


async def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=7, help="alternating rounds per app")
    args = parser.parse_args(argv)
    bare, wrapped = build(middleware=False), build(middleware=True)
    print(f"Command: {' '.join([sys.executable, *sys.argv])}")
    print("In-process ASGI, no server: the middleware's share is as large as it can be.\n")
    print(f"{'case':<40}{'bare req/s':>12}{'with req/s':>12}{'loss':>8}")
    results = []
    for name, (request, chunks) in cases().items():
        n = args.requests if len(chunks) < 2 else max(args.requests // 20, 50)
        for app in (bare, wrapped):
            await rate(app, request, chunks, n // 5)  # warm up
        bare_rates, wrapped_rates = [], []
        for _ in range(args.rounds):
            bare_rates.append(await rate(bare, request, chunks, n))
            wrapped_rates.append(await rate(wrapped, request, chunks, n))
        b, w = statistics.median(bare_rates), statistics.median(wrapped_rates)
        loss = 1 - w / b
        results.append((name, b, w, loss))
        print(f"{name:<40}{b:>12,.0f}{w:>12,.0f}{loss:>8.1%}")
    request, chunks = cases()["(c) POST 1 MiB upload, 64 KiB chunks"]
    extra = await peak_memory(wrapped, request, chunks) - await peak_memory(bare, request, chunks)
    print(f"\n(c) peak extra memory with the middleware: {extra:,} bytes (cap 65,536)")
    print("\nTargets: (a) loss <= 3 %, (b) loss <= 10 %, (c) extra memory <= the 64 KiB cap")
    ok = results[0][3] <= 0.03 and results[1][3] <= 0.10 and extra <= 65536
    print("all met" if ok else "NOT all met")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
