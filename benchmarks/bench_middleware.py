"""TaapitMiddleware's cost: a bare Starlette app against the same app behind the middleware.

Three cases, each with a target from the integrations issue:

- (a) a GET with a ``ta_tid`` cookie (target: at most 3 % fewer requests/s);
- (b) a POST with a 1 KiB JSON body carrying ``trackingId`` (target: at most 10 %);
- (c) a POST of a 1 MiB JSON upload in 64 KiB chunks with no declared length, so the
  middleware peeks up to its cap and then streams the rest through (target: no memory
  beyond the 64 KiB cap).

Two modes:

- ``--mode served`` (the default): the bare and the wrapped app each run under uvicorn
  (httptools, one worker, access log off) in their own process on 127.0.0.1, and a
  separate load-generator process (raw asyncio sockets, HTTP/1.1 keep-alive,
  ``--connections`` connections per server, one request in flight on each) loads them. On
  two or more cores both servers are pinned to one core and the load generator to another.
  Per case it measures twice:

  1. alternating: short slices with one server loaded at a time, bare and wrapped in
     turn (the order swapped every pair); req/s, the loss as the median of the per-pair
     losses, and the server's CPU time per request (``/proc/<pid>/task/*/schedstat``);
  2. side by side: both servers loaded at once, sharing their core, so both see the same
     moments of the machine; the loss a CPU-bound server sees is 1 - bare/wrapped CPU per
     request. On a shared VM the speed of the same code swings by tens of percent within
     a second, which alternation cannot cancel; side by side can (an A/A run of two bare
     servers reads within about 1.5 %). The targets are checked against this figure.

- ``--mode in-process``: ASGI calls, no server, no sockets, no HTTP parsing. Nothing dilutes
  the middleware's share; a bound, not a deployment.

(c)'s extra memory per upload is measured in-process with tracemalloc in both modes (each
chunk allocated as it arrives, as a server does); the served mode adds the servers' peak
RSS growth over the upload case.

Run: ``python benchmarks/bench_middleware.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, MutableMapping, Sequence
from pathlib import Path
from typing import Any, Final

from bench_transport import (
    BUSY_PCT,
    FakeServer,
    free_port,
    machine_busy,
    print_table,
    process_cpu,
)
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from taapit_async import AsyncTaapit
from taapit_async.integrations.asgi import TaapitMiddleware

Message = MutableMapping[str, Any]
App = Callable[[MutableMapping[str, Any], Any, Any], Awaitable[None]]
TID: Final = "rLnWe1uz9t282v7g"
CAP: Final = 64 * 1024  # the middleware's default body_limit
COOKIE: Final = f"session=abc; ta_tid={TID}"
SIGNUP_BODY: Final = json.dumps(
    {"email": "a@example.com", "trackingId": TID, "pad": "x" * 950}
).encode()
UPLOAD: Final = [b"u" * CAP] * 16  # 1 MiB in 64 KiB chunks
CASE_A: Final = "(a) GET with ta_tid cookie"
CASE_B: Final = "(b) POST 1 KiB JSON body"
CASE_C: Final = "(c) POST 1 MiB upload, 64 KiB chunks"
TARGETS: Final = {CASE_A: 0.03, CASE_B: 0.10}


# -- the app, bare or wrapped --------------------------------------------------------------


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


# -- in-process mode -----------------------------------------------------------------------


def scope(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method,
        "scheme": "http", "path": path, "raw_path": path.encode(), "query_string": b"",
        "root_path": "", "headers": headers, "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip


async def one(app: App, request: dict[str, Any], chunks: list[bytes]) -> None:
    last = max(len(chunks), 1) - 1
    index = 0

    async def receive() -> Message:
        nonlocal index
        if index > last:
            return {"type": "http.disconnect"}  # pragma: no cover
        # A fresh copy per message, as a server allocates each chunk when it arrives: a bare
        # app that streams then holds one chunk at a time, and tracemalloc sees what the
        # middleware keeps alive beyond that.
        body = memoryview(chunks[index]).tobytes() if chunks else b""
        index += 1
        return {"type": "http.request", "body": body, "more_body": index <= last}

    async def send(message: Message) -> None:
        pass

    await app(dict(request), receive, send)


def cases() -> dict[str, tuple[dict[str, Any], list[bytes]]]:
    json_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(SIGNUP_BODY)).encode()),
    ]
    return {
        CASE_A: (scope("GET", "/", [(b"cookie", COOKIE.encode())]), []),
        CASE_B: (scope("POST", "/signup", json_headers), [SIGNUP_BODY]),
        CASE_C: (scope("POST", "/signup", [(b"content-type", b"application/json")]), UPLOAD),
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


async def upload_extra_memory() -> int:
    """Bytes the middleware adds to the peak allocation of one 1 MiB upload (tracemalloc)."""
    request, chunks = cases()[CASE_C]
    wrapped = await peak_memory(build(middleware=True), request, chunks)
    return wrapped - await peak_memory(build(middleware=False), request, chunks)


async def run_in_process(args: argparse.Namespace) -> dict[str, float]:
    bare, wrapped = build(middleware=False), build(middleware=True)
    print("Mode: in-process ASGI, no server: the middleware's share is as large as it can be.\n")
    rows, losses = [], {}
    for name, (request, chunks) in cases().items():
        n = args.requests if len(chunks) < 2 else max(args.requests // 20, 50)
        for app in (bare, wrapped):
            await rate(app, request, chunks, n // 5)  # warm up
        bare_rates, wrapped_rates = [], []
        for _ in range(args.rounds):
            bare_rates.append(await rate(bare, request, chunks, n))
            wrapped_rates.append(await rate(wrapped, request, chunks, n))
        b, w = statistics.median(bare_rates), statistics.median(wrapped_rates)
        losses[name] = 1 - w / b
        rows.append([name, f"{b:,.0f}", f"{w:,.0f}", f"{losses[name]:.1%}"])
    print_table(["case", "bare req/s", "with req/s", "loss"], rows)
    return losses


# -- served mode: the servers --------------------------------------------------------------


def serve(kind: str, port: int, cpu: int | None) -> None:
    """Run one app under uvicorn in this process (``--serve``)."""
    import uvicorn  # noqa: PLC0415 - only the server processes need it

    if cpu is not None:
        os.sched_setaffinity(0, {cpu})  # before uvicorn starts any thread
    uvicorn.run(
        build(middleware=kind == "wrapped"),
        host="127.0.0.1",
        port=port,
        http="httptools",
        access_log=False,
        log_level="warning",
    )


class Server(FakeServer):
    """One app under uvicorn in a child process of its own.

    Shares ``log()`` and ``stop()`` with bench_transport's server; it starts its own app.
    """

    def __init__(self, kind: str, cpu: int | None) -> None:  # not FakeServer.__init__: other app
        self.kind = kind
        self.port = free_port()
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        command = [sys.executable, os.path.abspath(__file__), "--serve", kind]
        command += ["--port", str(self.port)] + (["--cpu", str(cpu)] if cpu is not None else [])
        # One hash seed for both: dict and set layouts then differ only by the middleware.
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=self._log, env=env
        )
        self.pid = self.process.pid
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=1) as r:
                    if r.read() == b"welcome":
                        return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    msg = f"the {kind} server did not start: {self.log()}"
                    raise RuntimeError(msg) from None
                time.sleep(0.1)

    def reset_peak_rss(self) -> bool:
        """Restart the kernel's peak-RSS count (``VmHWM``); False where that is refused."""
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def rss_kib(self) -> dict[str, int]:
        """``VmRSS`` and ``VmHWM`` (peak) in KiB."""
        fields = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in {"VmRSS", "VmHWM"}:
                fields[name] = int(value.split()[0])
        return fields


@contextlib.contextmanager
def servers(cpu: int | None) -> Iterator[dict[str, Server]]:
    started: dict[str, Server] = {}
    try:
        for kind in ("bare", "wrapped"):
            started[kind] = Server(kind, cpu)
        yield started
    finally:
        for server in started.values():
            server.stop()


def server_cpu(pid: int) -> float:
    """CPU seconds of every thread of ``pid``, to the nanosecond where schedstat exists."""
    try:
        return (
            sum(
                int(Path(task, "schedstat").read_text().split()[0])
                for task in Path(f"/proc/{pid}/task").iterdir()
            )
            / 1e9
        )
    except (OSError, ValueError, IndexError):  # no schedstat: clock ticks from /proc/pid/stat
        return process_cpu(pid)


# -- served mode: the load generator -------------------------------------------------------


def wire_request(case: str, port: int) -> tuple[bytes, bytes]:
    """The raw HTTP/1.1 request of a case, and the response body it must get."""
    start = (
        f"{'GET /' if case == CASE_A else 'POST /signup'} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
    )
    if case == CASE_A:
        return f"{start}Cookie: {COOKIE}\r\n\r\n".encode(), b"welcome"
    start += "Content-Type: application/json\r\n"
    if case == CASE_B:
        head = f"{start}Content-Length: {len(SIGNUP_BODY)}\r\n\r\n"
        return head.encode() + SIGNUP_BODY, str(len(SIGNUP_BODY)).encode()
    # Chunked, so no Content-Length tells the middleware to skip the peek: the worst case.
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in UPLOAD)
    body = f"{start}Transfer-Encoding: chunked\r\n\r\n".encode() + chunks + b"0\r\n\r\n"
    return body, str(sum(map(len, UPLOAD))).encode()


class KeepAlive(asyncio.Protocol):
    """One keep-alive connection: while the load is on, send, read the whole reply, repeat."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def fire(self) -> None:
        assert self.transport is not None
        self.busy = True
        self.transport.write(self.load.request)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buffer[:end]).lower()
        at = head.find(b"\r\ncontent-length:")
        stop = head.find(b"\r\n", at + 2)
        length = int(head[at + 17 : stop if stop >= 0 else None]) if at >= 0 else 0
        if len(self.buffer) < end + 4 + length:
            return
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        self.load.count(ok=head.startswith(b"http/1.1 200") and body == self.load.expected)
        if self.load.running:
            self.fire()
        else:
            self.busy = False
            self.load.settled()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.load.running or self.busy:
            self.load.count(ok=False)
            self.busy = False
            self.load.settled()


class Load:
    """The connections to one server, switched on and off as a whole."""

    def __init__(self, case: str, server: dict[str, Any]) -> None:
        self.kind: str = server["kind"]
        self.port: int = server["port"]
        self.pid: int = server["pid"]
        self.request, self.expected = wire_request(case, self.port)
        self.connections: list[KeepAlive] = []
        self.running = False
        self.ok = 0
        self.failed = 0
        self._idle = asyncio.Event()

    async def connect(self, n: int) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(n):
            _, protocol = await loop.create_connection(
                lambda: KeepAlive(self), "127.0.0.1", self.port
            )
            self.connections.append(protocol)

    def count(self, *, ok: bool) -> None:
        if ok:
            self.ok += 1
        else:
            self.failed += 1

    def settled(self) -> None:
        if not any(c.busy for c in self.connections):
            self._idle.set()

    def start(self) -> None:
        self.running = True
        self._idle.clear()
        for connection in self.connections:
            connection.fire()

    async def stop(self) -> None:
        """Stop sending and wait for the replies in flight, so the next slice starts clean."""
        self.running = False
        await asyncio.wait_for(self._idle.wait(), timeout=60)

    def clocks(self) -> tuple[float, ...]:
        """Replies so far, and the clocks: wall, server CPU, own CPU, the machine's busy CPU."""
        return (self.ok, self.failed, time.perf_counter(), server_cpu(self.pid),
                time.process_time(), machine_busy())  # fmt: skip

    async def measure(self, seconds: float) -> dict[str, float]:
        """Load the server alone for ``seconds`` and return that window's deltas."""
        self.start()
        await asyncio.sleep(min(seconds / 10, 0.05))  # every connection busy before timing
        before = self.clocks()
        await asyncio.sleep(seconds)
        after = self.clocks()
        await self.stop()
        return dict(
            zip(WINDOW_KEYS, (b - a for a, b in zip(before, after, strict=True)), strict=True)
        )


WINDOW_KEYS: Final = ("ok", "failed", "wall", "server_cpu", "load_cpu", "busy")


async def generate_load(spec: dict[str, Any]) -> dict[str, Any]:
    """Load the two servers of one case: first in alternation, then side by side.

    Alternation: ``pairs`` slices of ``seconds`` on each server alone, the order swapped every
    pair. Side by side: both at once for ``windows`` windows of ``seconds`` (the servers
    share one core, so they see the same machine at the same moment).
    """
    loads = [Load(spec["case"], server) for server in spec["servers"]]
    for load in loads:
        await load.connect(spec["connections"])
        await load.measure(spec["warmup"])  # not counted
    alternate: dict[str, list[dict[str, float]]] = {load.kind: [] for load in loads}
    for i in range(spec["pairs"]):
        for load in loads if i % 2 == 0 else loads[::-1]:
            alternate[load.kind].append(await load.measure(spec["seconds"]))
    together: list[dict[str, dict[str, float]]] = []
    if spec["windows"]:
        for load in loads:
            load.start()
        await asyncio.sleep(spec["warmup"])
        before = {load.kind: load.clocks() for load in loads}
        for _ in range(spec["windows"]):
            await asyncio.sleep(spec["seconds"])
            after = {load.kind: load.clocks() for load in loads}
            together.append({
                kind: dict(zip(WINDOW_KEYS, (b - a for a, b in zip(before[kind], after[kind],
                                                                  strict=True)), strict=True))
                for kind in after
            })  # fmt: skip
            before = after
        for load in loads:
            await load.stop()
    for load in loads:
        for connection in load.connections:
            assert connection.transport is not None
            connection.transport.close()
    return {"alternate": alternate, "together": together}


def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the load generator in a fresh process (``--load``) and return what it measured."""
    command = [sys.executable, os.path.abspath(__file__), "--load", json.dumps(spec)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600, check=False)
    if done.returncode != 0:
        msg = f"the load generator failed ({done.returncode}):\n{done.stderr[-4000:]}"
        raise RuntimeError(msg)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- served mode: summaries and tables -------------------------------------------------------


def quartiles(values: Sequence[float]) -> tuple[float, float, float]:
    """Lower quartile, median, upper quartile."""
    low, mid, high = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return low, mid, high


def summarize_alternate(runs: dict[str, list[dict[str, float]]]) -> dict[str, float]:
    """Medians over slices; the loss as the median of the per-pair losses."""

    def each(kind: str, key: str) -> list[float]:
        def value(r: dict[str, float]) -> float:
            return {
                "rps": r["ok"] / r["wall"],
                "cpu_us": r["server_cpu"] / max(r["ok"], 1) * 1e6,
                "server_pct": r["server_cpu"] / r["wall"] * 100,
                "load_pct": r["load_cpu"] / r["wall"] * 100,
                "others_pct": max(0.0, r["busy"] - r["server_cpu"] - r["load_cpu"])
                / r["wall"] * 100,
            }[key]  # fmt: skip

        return [value(r) for r in runs[kind]]

    keys = ("rps", "cpu_us", "server_pct", "load_pct", "others_pct")
    out = {f"{kind}_{key}": statistics.median(each(kind, key)) for kind in runs for key in keys}
    losses = [1 - w / b for b, w in zip(each("bare", "rps"), each("wrapped", "rps"), strict=True)]
    out["loss_q1"], out["loss"], out["loss_q3"] = quartiles(losses)
    cpu = zip(each("bare", "cpu_us"), each("wrapped", "cpu_us"), strict=True)
    out["cpu_extra"] = statistics.median(w / b - 1 for b, w in cpu)
    out["others_max"] = max(each("bare", "others_pct") + each("wrapped", "others_pct"))
    out["failed"] = sum(r["failed"] for kind in runs for r in runs[kind])
    return out


def summarize_together(windows: list[dict[str, dict[str, float]]]) -> dict[str, float]:
    """Per window: each server's CPU per request; the loss a CPU-bound server would see."""
    bare = [w["bare"]["server_cpu"] / max(w["bare"]["ok"], 1) * 1e6 for w in windows]
    wrapped = [w["wrapped"]["server_cpu"] / max(w["wrapped"]["ok"], 1) * 1e6 for w in windows]
    # A server that is the limit serves 1/cost requests per CPU second.
    losses = [1 - b / w for b, w in zip(bare, wrapped, strict=True)]
    out = {"bare_cpu_us": statistics.median(bare), "wrapped_cpu_us": statistics.median(wrapped)}
    out["loss_q1"], out["loss"], out["loss_q3"] = quartiles(losses)
    out["rps_ratio"] = statistics.median(
        w["wrapped"]["ok"] / max(w["bare"]["ok"], 1) for w in windows
    )
    out["failed"] = sum(w[kind]["failed"] for w in windows for kind in w)
    return out


def describe_setup(args: argparse.Namespace, pin: bool, cores: Sequence[int]) -> None:
    uvloop = importlib.util.find_spec("uvloop") is not None
    print(
        f"Mode: served. uvicorn {importlib.metadata.version('uvicorn')} (httptools, one "
        f"worker, access log off, {'uvloop' if uvloop else 'asyncio'} loop, "
        "PYTHONHASHSEED=0), one process per app on 127.0.0.1; a separate load-generator "
        f"process, {args.connections} keep-alive connections per server, one request in "
        "flight on each."
    )
    if pin:
        print(
            f"{len(cores)} usable cores: both servers pinned to CPU {cores[0]}, the load "
            f"generator to CPU {cores[1]}, so server and load generator do not take turns "
            "on one core; whatever else runs on the machine can land on either (others' CPU)."
        )
    else:
        print(
            f"{len(cores)} usable core(s), not pinned: the servers and the load generator "
            "compete for them with each other and with everything else on the machine."
        )
    print(
        f"Per case: {args.pairs} alternating pairs of {args.seconds:g} s slices (one server "
        f"loaded at a time, order swapped every pair), then {args.windows} windows of "
        f"{args.seconds:g} s with both servers loaded at once on the same core.\n"
    )


def run_served(args: argparse.Namespace) -> tuple[dict[str, float], bool]:
    cores = sorted(os.sched_getaffinity(0))
    pin = args.pin and len(cores) >= 2
    describe_setup(args, pin, cores)
    alternate: dict[str, dict[str, float]] = {}
    together: dict[str, dict[str, float]] = {}
    rss: dict[str, int] = {}
    with servers(cores[0] if pin else None) as started:
        for case in (CASE_A, CASE_B, CASE_C):
            if case == CASE_C:
                reset = all(s.reset_peak_rss() for s in started.values())
                before = {kind: s.rss_kib()["VmRSS"] for kind, s in started.items()}
            print(f"  {case} ...", file=sys.stderr, flush=True)
            spec = {
                "case": case, "connections": args.connections, "warmup": args.warmup,
                "seconds": args.seconds, "pairs": args.pairs, "windows": args.windows,
                "servers": [{"kind": k, "port": s.port, "pid": s.pid} for k, s in started.items()],
            }  # fmt: skip
            if pin:
                spec["cpu"] = cores[1]
            measured = run_load(spec)
            alternate[case] = summarize_alternate(measured["alternate"])
            if measured["together"]:
                together[case] = summarize_together(measured["together"])
            if case == CASE_C and reset:
                rss = {kind: s.rss_kib()["VmHWM"] - before[kind] for kind, s in started.items()}

    print("Alternating (one server loaded at a time):")
    print_table(
        ["case", "bare req/s", "with req/s", "loss", "loss IQR", "bare CPU µs/req",
         "with CPU µs/req", "CPU/req", "server CPU %", "loadgen CPU %", "others' CPU %"],
        [[case, f"{a['bare_rps']:,.0f}", f"{a['wrapped_rps']:,.0f}", f"{a['loss']:.1%}",
          f"{a['loss_q1']:.1%}..{a['loss_q3']:.1%}", f"{a['bare_cpu_us']:.1f}",
          f"{a['wrapped_cpu_us']:.1f}", f"{a['cpu_extra']:+.1%}",
          f"{a['bare_server_pct']:.0f}/{a['wrapped_server_pct']:.0f}",
          f"{a['bare_load_pct']:.0f}/{a['wrapped_load_pct']:.0f}",
          f"{a['bare_others_pct']:.0f}/{a['wrapped_others_pct']:.0f}"]
         for case, a in alternate.items()],
    )  # fmt: skip
    print(
        "loss: median of the per-pair losses of req/s, IQR their interquartile range; "
        "CPU µs/req: the server process's CPU time per request (CPU/req: median of the "
        "per-pair ratios); CPU %: bare/wrapped, medians, % of one core."
    )
    if together:
        print("\nSide by side (both loaded at once, sharing one core):")
        print_table(
            ["case", "bare CPU µs/req", "with CPU µs/req", "extra µs/req", "loss", "loss IQR",
             "with/bare req/s"],
            [[case, f"{t['bare_cpu_us']:.1f}", f"{t['wrapped_cpu_us']:.1f}",
              f"{t['wrapped_cpu_us'] - t['bare_cpu_us']:+.1f}", f"{t['loss']:.1%}",
              f"{t['loss_q1']:.1%}..{t['loss_q3']:.1%}", f"{t['rps_ratio']:.3f}"]
             for case, t in together.items()],
        )  # fmt: skip
        print(
            "loss: 1 - bare/wrapped CPU per request, per window, median: the throughput a "
            "CPU-bound server loses. Both servers see the same moments of a noisy machine, "
            "so this is the steadier figure; the targets are checked against it."
        )
    if rss:
        print(
            f"\n(c) server peak RSS growth over the upload case: bare {rss['bare']:,} KiB, "
            f"wrapped {rss['wrapped']:,} KiB ({rss['wrapped'] - rss['bare']:+,} KiB with up to "
            f"{args.connections} uploads in flight; the cap allows "
            f"{args.connections} x 64 KiB = {args.connections * 64:,} KiB). Coarse: the "
            "allocator moves RSS by as much between two identical servers."
        )
    busy = max(a["others_max"] for a in alternate.values())
    if busy > BUSY_PCT:
        print(
            f"WARNING: other processes used up to {busy:.0f}% of a core during a slice: "
            "the alternating figures are noisier than usual"
        )
    limit = min(min(a["bare_server_pct"], a["wrapped_server_pct"]) for a in alternate.values())
    if limit < 90:
        print(
            f"NOTE: a server used only {limit:.0f}% of a core in some case: it was not the "
            "limit there, so the req/s loss understates the middleware's cost"
        )
    failed = sum(int(x["failed"]) for x in [*alternate.values(), *together.values()])
    if failed:
        print(f"WARNING: {failed} response(s) were not 200 with the expected body")
    losses = {case: (together.get(case) or a)["loss"] for case, a in alternate.items()}
    return losses, failed == 0


# -- the command line ------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--mode",
        choices=("served", "in-process"),
        default="served",
        help="served by uvicorn with a separate load generator (default), or ASGI in-process",
    )
    parser.add_argument("--rounds", type=int, default=7, help="in-process: rounds per case")
    parser.add_argument(
        "--pairs", type=int, default=20, help="served: alternating pairs of slices per case"
    )
    parser.add_argument(
        "--windows", type=int, default=20, help="served: side-by-side windows per case (0: none)"
    )
    parser.add_argument(
        "--seconds", type=float, default=0.5, help="served: seconds per slice or window"
    )
    parser.add_argument("--warmup", type=float, default=0.5, help="served: warm-up seconds")
    parser.add_argument(
        "--connections", type=int, default=16, help="served: keep-alive connections"
    )
    parser.add_argument(
        "--no-pin", dest="pin", action="store_false", help="served: do not pin to cores"
    )
    parser.add_argument("--requests", type=int, default=3000, help="in-process: requests per round")
    parser.add_argument("--serve", choices=("bare", "wrapped"), help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    if args.serve:
        serve(args.serve, args.port, args.cpu)
        return 0
    if args.load:
        spec = json.loads(args.load)
        if "cpu" in spec:
            os.sched_setaffinity(0, {spec["cpu"]})
        print(json.dumps(asyncio.run(generate_load(spec))))
        return 0

    print(f"Command: {shlex.join([sys.executable, *sys.argv])}")
    print(f"Load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    ok = True
    if args.mode == "served":
        losses, ok = run_served(args)
    else:
        losses = asyncio.run(run_in_process(args))
    extra = asyncio.run(upload_extra_memory())
    print(
        f"\n(c) peak extra memory per upload with the middleware (in-process, tracemalloc): "
        f"{extra:,} bytes (cap {CAP:,})"
    )
    print(f"Load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print("\nTargets:")
    for case, target in TARGETS.items():
        met = losses[case] <= target
        print(f"  {'met   ' if met else 'MISSED'} {case}: loss {losses[case]:.1%} <= {target:.0%}")
    print(f"  {'met   ' if extra <= CAP else 'MISSED'} {CASE_C}: extra {extra:,} B <= {CAP:,} B")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
