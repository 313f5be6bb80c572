"""Throughput and CPU per event: the SDK on each transport against raw aiohttp, raw httpx and
the ``requests.post`` pattern.

One run does everything:

1. starts the fake Taapit API under uvicorn in its own process on 127.0.0.1 and samples
   that process's CPU time (``/proc/<pid>/stat``) around every measured phase, so the
   tables show whether the server was the limit;
2. for each concurrency, runs each client in a fresh subprocess against it: N lead events
   after a warm-up, every one a real JSON POST with a unique ``Idempotency-Key``, and checks
   afterwards that the fake recorded every event;
3. runs a latency-bound round against a second fake that waits 20 ms per request, at 32 in
   flight, and reports events/s as a share of the ceiling (in flight / latency);
4. measures the client CPU per event with no network at all (``httpx.MockTransport``), raw
   httpx against the SDK, which is the SDK's own overhead;
5. prints one table per concurrency, the latency-run table, the null-transport table, the
   targets and the machine facts (``--json PATH`` writes all of it to a file, which
   ``benchmarks/plot_transport.py`` draws).

``--tls`` serves the fake over HTTPS instead (hypercorn, HTTP/1.1 or HTTP/2 by ALPN, a
throwaway CA) and adds the SDK with ``http2=True``: what TLS costs each client, and whether
HTTP/2 pays. The targets are judged on plain HTTP only.

Run it with ``python benchmarks/bench_transport.py`` (``--help`` for the options), or
``nox -s bench``. See ``benchmarks/README.md`` for how to read the tables.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import dataclasses
import gc
import importlib.metadata
import importlib.util
import json
import os
import platform
import shlex
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, Self

import httpx
import requests

from taapit_async import DEFAULT_MAX_IN_FLIGHT, AsyncTaapit

API_KEY: Final = "taapit_sk_test"  # the fake's default key
LEAD_PATH: Final = "/api/events/lead"
TRACKING_ID: Final = "rLnWe1uz9t282v7g"
METADATA: Final = {"plan": "pro", "source": "benchmark", "campaign": "spring"}
USER_AGENT: Final = "bench-raw/1.0"
REQUEST_TIMEOUT: Final = 30.0
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
BUSY_PCT: Final = 20.0  # others' CPU share (% of one core) above which a run is flagged

CLIENT_LABELS: Final = {
    "requests": "requests.post pattern",
    "httpx": "raw httpx",
    "aiohttp": "raw aiohttp",
    "httpx-aiohttp": "raw httpx over aiohttp",
    "sdk": "SDK",
    "sdk-aiohttp": 'SDK, transport="aiohttp"',
    "sdk-httpx-aiohttp": "SDK, http_client=httpx over aiohttp",
    "sdk-http2": "SDK, http2=True",
}
#: Clients that need the fake served over TLS (httpx negotiates HTTP/2 only by ALPN).
TLS_ONLY: Final = frozenset({"sdk-http2"})
# The raw clients the ratio columns divide by: LiveResult attribute, client key, header.
BASELINES: Final = (
    ("vs_requests", "requests", "÷ requests.post"),
    ("vs_raw_httpx", "httpx", "÷ raw httpx"),
    ("vs_raw_aiohttp", "aiohttp", "÷ raw aiohttp"),
)
# The latency-bound run: the SDK on each transport, and raw aiohttp as the reference.
LATENCY_CLIENTS: Final = ("aiohttp", "sdk", "sdk-httpx-aiohttp", "sdk-aiohttp", "sdk-http2")
NULL_LABELS: Final = {
    "raw": "raw httpx (per-request headers)",
    "raw-client-headers": "raw httpx (headers on the client)",
    "sdk": "SDK track.lead",
}


# -- what every client sends -------------------------------------------------------------


def lead_body(i: int) -> dict[str, Any]:
    """The JSON body of the i-th lead, as the vendor reference shapes it."""
    return {
        "trackingId": TRACKING_ID,
        "customer": {
            "externalId": f"user_{i}",
            "email": f"user{i}@example.com",
            "firstname": "John",
            "lastname": "Doe",
        },
        "metadata": METADATA,
    }


def lead_customer(i: int) -> dict[str, str]:
    """The same customer, as the SDK's ``customer=`` mapping."""
    return {
        "external_id": f"user_{i}",
        "email": f"user{i}@example.com",
        "firstname": "John",
        "lastname": "Doe",
    }


def raw_headers(key: str) -> dict[str, str]:
    """The headers the SDK sends, for a raw httpx client to send the same."""
    return {
        "Authorization": f"Bearer {API_KEY}",
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        "Idempotency-Key": key,
    }


def new_key() -> str:
    """A fresh idempotency key, made as the SDK makes its default ones."""
    return str(uuid.uuid4())


# -- CPU accounting ----------------------------------------------------------------------


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) a process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces and parentheses: the fields start after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return (utime + stime) / CLK_TCK


def machine_busy() -> float:
    """CPU seconds all cores have spent busy (not idle) since boot, from ``/proc/stat``."""
    with Path("/proc/stat").open() as stat:
        fields = stat.readline().split()  # "cpu user nice system idle iowait irq softirq ..."
    user, nice, system, _idle, _iowait, irq, softirq = (int(f) for f in fields[1:8])
    return (user + nice + system + irq + softirq) / CLK_TCK


@dataclasses.dataclass
class Stamp:
    """Clocks read at one instant: wall, this process's CPU, the server's, the machine's."""

    wall: float
    cpu: float
    server_cpu: float
    busy: float

    @classmethod
    def now(cls, server_pid: int | None) -> Stamp:
        """Read the clocks."""
        server = process_cpu(server_pid) if server_pid is not None else 0.0
        return cls(time.perf_counter(), time.process_time(), server, machine_busy())


@dataclasses.dataclass
class Measured:
    """One measured phase: its clocks and the failures the client saw."""

    wall: float
    cpu: float
    server_cpu: float
    other_cpu: float  # CPU used by every other process of the machine meanwhile
    failures: int
    warmup_failures: int = 0

    @classmethod
    def between(cls, start: Stamp, end: Stamp, failures: int, warmup_failures: int) -> Measured:
        """The deltas of two stamps."""
        cpu = end.cpu - start.cpu
        server_cpu = end.server_cpu - start.server_cpu
        return cls(
            wall=end.wall - start.wall,
            cpu=cpu,
            server_cpu=server_cpu,
            other_cpu=max(0.0, end.busy - start.busy - cpu - server_cpu),
            failures=failures,
            warmup_failures=warmup_failures,
        )


# -- the clients, run inside a worker subprocess -----------------------------------------


@dataclasses.dataclass
class LiveSpec:
    """What one worker subprocess runs against the served fake."""

    client: str  # a key of CLIENT_LABELS
    concurrency: int
    events: int
    warmup: int
    url: str
    server_pid: int
    max_in_flight: int | None = None  # SDK only; None for the SDK's default


async def drive(send: Callable[[int], Awaitable[bool]], first: int, n: int, workers: int) -> int:
    """Send events first..first+n-1 from ``workers`` tasks; return how many failed."""
    numbers = iter(range(first, first + n))  # shared: each task takes the next number
    failures = 0

    async def worker() -> None:
        nonlocal failures
        for i in numbers:
            try:
                ok = await send(i)
            except Exception as exc:
                print(f"event {i} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                ok = False
            failures += not ok

    await asyncio.gather(*(worker() for _ in range(workers)))
    return failures


async def measure_async(send: Callable[[int], Awaitable[bool]], spec: LiveSpec) -> Measured:
    """Warm up, then time ``spec.events`` sends at ``spec.concurrency``."""
    warmup_failures = await drive(send, 0, spec.warmup, spec.concurrency)
    gc.collect()
    start = Stamp.now(spec.server_pid)
    failures = await drive(send, spec.warmup, spec.events, spec.concurrency)
    end = Stamp.now(spec.server_pid)
    return Measured.between(start, end, failures, warmup_failures)


def httpx_limits(concurrency: int) -> httpx.Limits:
    """A pool of ``concurrency`` connections, all kept alive."""
    return httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)


def httpx_over_aiohttp(concurrency: int, **options: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose transport is aiohttp's pool (httpx-aiohttp)."""
    import httpx_aiohttp  # noqa: PLC0415 - the bench group's; only these clients need it

    transport = httpx_aiohttp.AiohttpTransport(limits=httpx_limits(concurrency))
    return httpx.AsyncClient(transport=transport, **options)


def raw_httpx_send(client: httpx.AsyncClient, url: str) -> Callable[[int], Awaitable[bool]]:
    """Post the i-th lead as JSON with the SDK's headers through a raw httpx client."""

    async def send(i: int) -> bool:
        response = await client.post(url, json=lead_body(i), headers=raw_headers(new_key()))
        return response.status_code == 200

    return send


async def live_httpx(spec: LiveSpec) -> Measured:
    """One ``httpx.AsyncClient`` with a pool sized to the concurrency."""
    client = httpx.AsyncClient(limits=httpx_limits(spec.concurrency), timeout=REQUEST_TIMEOUT)
    async with client:
        return await measure_async(raw_httpx_send(client, spec.url + LEAD_PATH), spec)


async def live_httpx_aiohttp(spec: LiveSpec) -> Measured:
    """Raw httpx over aiohttp's pool (httpx-aiohttp), sized to the concurrency."""
    async with httpx_over_aiohttp(spec.concurrency, timeout=REQUEST_TIMEOUT) as client:
        return await measure_async(raw_httpx_send(client, spec.url + LEAD_PATH), spec)


async def live_aiohttp(spec: LiveSpec) -> Measured:
    """One ``aiohttp.ClientSession``, ``TCPConnector(limit=concurrency)``, JSON pre-serialized.

    Per-request headers and a ``str`` URL, as a caller would write it: session-level
    headers and a pre-parsed ``yarl.URL`` took about 7 % less CPU per event in one A/B run.
    """
    import aiohttp  # noqa: PLC0415 - the bench group's; only these clients need it

    url = spec.url + LEAD_PATH
    connector = aiohttp.TCPConnector(limit=spec.concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def send(i: int) -> bool:
            body = json.dumps(lead_body(i), separators=(",", ":")).encode()  # httpx's bytes
            async with session.post(url, data=body, headers=raw_headers(new_key())) as response:
                await response.read()
                return response.status == 200

        return await measure_async(send, spec)


async def measure_sdk(
    taapit: AsyncTaapit, spec: LiveSpec, check: Callable[[AsyncTaapit], None] | None = None
) -> Measured:
    """Time ``track.lead`` calls; an event counts only if it succeeded at the first attempt.

    ``check`` looks at the client after the run, before it is closed.
    """
    async with taapit:

        async def send(i: int) -> bool:
            result = await taapit.track.lead(
                tracking_id=TRACKING_ID, customer=lead_customer(i), metadata=METADATA
            )
            if result.error is not None:
                print(f"event {i}: {result.error}", file=sys.stderr)
            return result.success and result.attempts == 1

        measured = await measure_async(send, spec)
        if check is not None:
            check(taapit)
        return measured


async def live_sdk(spec: LiveSpec) -> Measured:
    """``AsyncTaapit`` with default settings, or with ``max_in_flight`` set."""
    if spec.max_in_flight is None:
        taapit = AsyncTaapit(API_KEY, base_url=spec.url)
    else:
        taapit = AsyncTaapit(API_KEY, base_url=spec.url, max_in_flight=spec.max_in_flight)
    return await measure_sdk(taapit, spec)


async def live_sdk_aiohttp(spec: LiveSpec) -> Measured:
    """``AsyncTaapit(transport="aiohttp")``, max_in_flight = the concurrency."""
    mif = spec.max_in_flight or spec.concurrency
    taapit = AsyncTaapit(API_KEY, base_url=spec.url, max_in_flight=mif, transport="aiohttp")
    return await measure_sdk(taapit, spec)


async def live_sdk_httpx_aiohttp(spec: LiveSpec) -> Measured:
    """``AsyncTaapit`` on a user's httpx client over aiohttp, max_in_flight = the concurrency.

    Everything but the transport as in ``sdk-aiohttp``: this pair of rows decides native
    aiohttp against httpx over aiohttp. The SDK never closes a user's client: we do.
    """
    mif = spec.max_in_flight or spec.concurrency
    async with httpx_over_aiohttp(mif) as client:
        taapit = AsyncTaapit(API_KEY, base_url=spec.url, max_in_flight=mif, http_client=client)
        return await measure_sdk(taapit, spec)


async def live_sdk_http2(spec: LiveSpec) -> Measured:
    """``AsyncTaapit(http2=True)`` over TLS, max_in_flight = the concurrency."""
    mif = spec.max_in_flight or spec.concurrency
    taapit = AsyncTaapit(API_KEY, base_url=spec.url, max_in_flight=mif, http2=True)
    return await measure_sdk(taapit, spec, check=spoke_http2)


def spoke_http2(taapit: AsyncTaapit) -> None:
    """Fail the run unless its connections are HTTP/2 (no ALPN agreement falls back to 1.1).

    Reads httpcore's pool through private attributes: a benchmark's check, not an API.
    """
    pool = taapit._transport.client._transport._pool  # type: ignore[attr-defined]
    # info() reads "'https://host:port', HTTP/2, IDLE, Request Count: 9"
    kinds = {connection.info().split(", ")[1] for connection in pool.connections}
    if kinds != {"HTTP/2"}:
        msg = f"expected HTTP/2 connections only, found {sorted(kinds)}"
        raise RuntimeError(msg)


def live_requests(spec: LiveSpec) -> Measured:
    """The vendor's snippet: ``requests.post`` per event (no Session), from a thread pool."""
    url = spec.url + LEAD_PATH

    def send(i: int) -> bool:
        try:
            response = requests.post(
                url,
                headers={
                    "Authorization": f"Bearer {API_KEY}",
                    "Content-Type": "application/json",
                    "Idempotency-Key": new_key(),
                },
                json=lead_body(i),
                timeout=REQUEST_TIMEOUT,
            )
        except requests.RequestException as exc:
            print(f"event {i} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return False
        return response.status_code == 200

    with concurrent.futures.ThreadPoolExecutor(max_workers=spec.concurrency) as pool:
        warmup_failures = sum(not ok for ok in pool.map(send, range(spec.warmup)))
        gc.collect()
        start = Stamp.now(spec.server_pid)
        results = pool.map(send, range(spec.warmup, spec.warmup + spec.events))
        failures = sum(not ok for ok in results)
        end = Stamp.now(spec.server_pid)
    return Measured.between(start, end, failures, warmup_failures)


ASYNC_CLIENTS: Final[dict[str, Callable[[LiveSpec], Coroutine[Any, Any, Measured]]]] = {
    "httpx": live_httpx,
    "aiohttp": live_aiohttp,
    "httpx-aiohttp": live_httpx_aiohttp,
    "sdk": live_sdk,
    "sdk-aiohttp": live_sdk_aiohttp,
    "sdk-httpx-aiohttp": live_sdk_httpx_aiohttp,
    "sdk-http2": live_sdk_http2,
}


def run_live_worker(spec: LiveSpec) -> Measured:
    """Run one client as the spec says (inside the worker subprocess)."""
    if spec.client == "requests":
        return live_requests(spec)
    run = ASYNC_CLIENTS.get(spec.client)
    if run is None:
        msg = f"unknown client {spec.client!r}"
        raise ValueError(msg)
    return asyncio.run(run(spec))


# -- the null transport: client CPU with no network --------------------------------------


@dataclasses.dataclass
class NullSpec:
    """What the null-transport worker subprocess runs."""

    iterations: int
    repeats: int
    in_flight: list[int]
    kinds: list[str]  # keys of NULL_LABELS


REPLY: Final = b'{"success":true}'


async def null_reply(request: httpx.Request) -> httpx.Response:
    """Answer 200 at once; the one yield lets concurrent callers really interleave."""
    await asyncio.sleep(0)
    return httpx.Response(200, content=REPLY, headers={"Content-Type": "application/json"})


def null_client(
    kind: str, mock: httpx.MockTransport
) -> tuple[Callable[[int], Awaitable[bool]], Callable[[], Awaitable[None]]]:
    """A fresh client of one kind on the mock transport: its send and its aclose."""
    url = "http://127.0.0.1" + LEAD_PATH
    if kind == "sdk":
        http_client = httpx.AsyncClient(transport=mock)
        taapit = AsyncTaapit(API_KEY, base_url="http://127.0.0.1", http_client=http_client)

        async def send_sdk(i: int) -> bool:
            result = await taapit.track.lead(
                tracking_id=TRACKING_ID, customer=lead_customer(i), metadata=METADATA
            )
            return result.success

        return send_sdk, http_client.aclose
    if kind == "raw":
        client = httpx.AsyncClient(transport=mock)

        async def send_raw(i: int) -> bool:
            response = await client.post(url, json=lead_body(i), headers=raw_headers(new_key()))
            return response.status_code == 200

        return send_raw, client.aclose
    if kind == "raw-client-headers":
        static = raw_headers("")
        del static["Idempotency-Key"]
        client = httpx.AsyncClient(transport=mock, headers=static)

        async def send_raw_defaults(i: int) -> bool:
            response = await client.post(
                url, json=lead_body(i), headers={"Idempotency-Key": new_key()}
            )
            return response.status_code == 200

        return send_raw_defaults, client.aclose
    msg = f"unknown null-transport client {kind!r}"
    raise ValueError(msg)


async def null_repeat(
    kinds: Sequence[str], iterations: int, in_flight: int
) -> tuple[dict[str, float], float]:
    """One repeat: fresh clients, then ``iterations`` events each in interleaved blocks.

    On a shared or throttled machine the CPU cost of the same code drifts by tens of percent
    within seconds; alternating short blocks (in rotating order) gives every client the
    same conditions, so the ratios hold even when the absolute figures move. Returns CPU
    µs per event by client, and the CPU share (% of one core) of other processes meanwhile.
    """
    mock = httpx.MockTransport(null_reply)
    clients = {kind: null_client(kind, mock) for kind in kinds}
    block = max(in_flight * 16, 400)
    warmup = max(block, 300)
    cpu = dict.fromkeys(kinds, 0.0)
    wall = other = 0.0
    failures = 0
    try:
        for send, _ in clients.values():
            failures += await drive(send, 0, warmup, in_flight)
        done = 0
        rounds = 0
        while done < iterations:
            n = min(block, iterations - done)
            order = list(kinds[rounds % len(kinds) :]) + list(kinds[: rounds % len(kinds)])
            for kind in order:
                gc.collect()
                start = Stamp.now(None)
                failures += await drive(clients[kind][0], warmup + done, n, in_flight)
                m = Measured.between(start, Stamp.now(None), 0, 0)
                cpu[kind] += m.cpu
                wall += m.wall
                other += m.other_cpu
            done += n
            rounds += 1
    finally:
        for _, aclose in clients.values():
            await aclose()
    if failures:
        msg = f"{failures} events failed on the null transport"
        raise RuntimeError(msg)
    return {kind: seconds / iterations * 1e6 for kind, seconds in cpu.items()}, 100 * other / wall


def run_null_worker(spec: NullSpec) -> dict[str, Any]:
    """Every repeat at every in-flight count, each repeat in a fresh event loop."""
    samples: dict[str, dict[str, list[float]]] = {
        str(n): {kind: [] for kind in spec.kinds} for n in spec.in_flight
    }
    others: list[float] = []
    for n in spec.in_flight:
        for _ in range(spec.repeats):
            us, other = asyncio.run(null_repeat(spec.kinds, spec.iterations, n))
            for kind, value in us.items():
                samples[str(n)][kind].append(value)
            others.append(other)
    return {"samples": samples, "others_cpu_pct": others}


# -- the parent: server, workers, tables -------------------------------------------------


@dataclasses.dataclass
class LiveResult:
    """One client at one concurrency, with what the fake recorded."""

    label: str
    client: str
    concurrency: int
    max_in_flight: int | None
    events: int
    warmup: int
    wall_s: float
    events_per_s: float
    client_cpu_us_per_event: float
    client_cpu_pct: float
    server_cpu_pct: float
    other_cpu_pct: float
    failures: int
    warmup_failures: int
    recorded: int  # events the fake recorded, warm-up included
    requests_seen: int  # requests the fake received, warm-up included
    ok: bool
    latency_s: float = 0.0  # what the fake added per request
    vs_requests: float | None = None
    vs_raw_httpx: float | None = None
    vs_raw_aiohttp: float | None = None
    events_per_s_samples: list[float] = dataclasses.field(default_factory=list)

    @property
    def ceiling(self) -> float | None:
        """The most events/s a latency-bound run can reach: in flight / latency."""
        return self.concurrency / self.latency_s if self.latency_s > 0 else None

    @property
    def ceiling_pct(self) -> float | None:
        """events/s as a share of the ceiling, or None with no latency."""
        ceiling = self.ceiling
        return 100 * self.events_per_s / ceiling if ceiling is not None else None

    def as_json(self) -> dict[str, Any]:
        """Every field, and the ceiling figures of a latency-bound run."""
        return {
            **dataclasses.asdict(self),
            "ceiling": self.ceiling,
            "ceiling_pct": self.ceiling_pct,
        }


@dataclasses.dataclass
class TLSFiles:
    """A throwaway CA and a certificate for 127.0.0.1 that it signed, as PEM files."""

    ca: str
    cert: str
    key: str

    @classmethod
    def create(cls, directory: Path) -> TLSFiles:
        """Write a new CA and server certificate under ``directory``."""
        import trustme  # noqa: PLC0415 - the bench group's; only --tls needs it

        ca = trustme.CA()
        issued = ca.issue_cert("127.0.0.1")
        files = cls(*(str(directory / name) for name in ("ca.pem", "cert.pem", "key.pem")))
        ca.cert_pem.write_to_path(files.ca)
        issued.private_key_pem.write_to_path(files.key)
        for i, pem in enumerate(issued.cert_chain_pems):
            pem.write_to_path(files.cert, append=i > 0)
        return files

    def trust(self) -> None:
        """Make this process and its children trust the CA (httpx, aiohttp, ssl, requests)."""
        os.environ["SSL_CERT_FILE"] = os.environ["REQUESTS_CA_BUNDLE"] = self.ca


def serve_tls(port: int, latency: float, cert: str, key: str) -> None:
    """The fake under hypercorn over TLS, HTTP/2 or HTTP/1.1 by ALPN (``--serve-tls``)."""
    from hypercorn.asyncio import serve  # noqa: PLC0415 - the bench group's; only --tls
    from hypercorn.config import Config  # noqa: PLC0415

    from taapit_async.testing import FakeTaapit  # noqa: PLC0415

    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.certfile, config.keyfile = cert, key
    config.alpn_protocols = ["h2", "http/1.1"]
    config.accesslog = None
    # Hypercorn closes a connection after 1,000 requests by default; over HTTP/2 that GOAWAY
    # fails every stream in flight (httpcore raises WriteError, the SDK retries them). Like
    # uvicorn, keep connections for the whole run so the table compares clients, not that.
    config.keep_alive_max_requests = 2**31
    app = FakeTaapit(api_key=API_KEY, latency=latency)
    asyncio.run(serve(app, config))  # type: ignore[arg-type]


class FakeServer:
    """The fake Taapit API in its own process: ``python -m taapit_async fake-server``.

    With ``tls``, hypercorn serves it over HTTPS instead (uvicorn speaks no HTTP/2).
    """

    def __init__(
        self, http: str, latency: float, tls: TLSFiles | None = None, loop: str = "auto"
    ) -> None:
        self.http = http
        self.latency = latency
        self.port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.kind = "hypercorn over TLS" if tls else f"uvicorn/{http}/{server_loop(loop)}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in stop()
        command = [
            sys.executable, "-m", "taapit_async", "fake-server", "--port", str(self.port),
            "--http", http, "--loop", loop, "--latency", str(latency),
        ]  # fmt: skip
        if tls is not None:
            command = [
                sys.executable, os.path.abspath(__file__), "--serve-tls", "--spec",
                json.dumps([self.port, latency, tls.cert, tls.key]),
            ]  # fmt: skip
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            preexec_fn=pinned("server"),  # noqa: PLW1509 - no threads in this parent yet
        )  # fmt: skip
        self.pid = self.process.pid
        try:
            self._wait_until_listening()
        except BaseException:
            self.stop()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _wait_until_listening(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                msg = f"the fake server exited ({self.process.returncode}): {self.log()}"
                raise RuntimeError(msg)
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                time.sleep(0.05)
                continue
            self.control("GET", "stats")
            return
        msg = f"the fake server did not listen on port {self.port} within {timeout:g}s"
        raise RuntimeError(msg)

    def log(self) -> str:
        """What the server wrote to stderr."""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def control(self, method: str, name: str) -> Any:
        """Call one of the fake's ``/_fake/`` control endpoints and return its JSON."""
        request = urllib.request.Request(f"{self.url}/_fake/{name}", method=method, data=None)
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        """SIGTERM (a clean uvicorn shutdown), then SIGKILL if it hangs."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: CPU per role ("server", "client") when pinning; empty to let the kernel place processes.
PINNED: dict[str, int] = {}


def pin_cores() -> None:
    """Pin the fake server to the first usable core and every client to the second.

    So a client and the server never take turns on one core: every client gets a core of
    its own and the server the other, as in ``bench_middleware.py``.
    """
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) >= 2:
        PINNED.update(server=cores[0], client=cores[1])


def pinned(role: str) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins the child to ``role``'s core, or None when not pinning."""
    cpu = PINNED.get(role)
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def run_worker(kind: str, spec: LiveSpec | NullSpec, timeout: float) -> Any:
    """Run ``--worker`` in a fresh interpreter and return the JSON it prints last."""
    command = [
        sys.executable, os.path.abspath(__file__),
        "--worker", kind, "--spec", json.dumps(dataclasses.asdict(spec)),
    ]  # fmt: skip
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=pinned("client"),
    )
    if done.returncode != 0:
        msg = f"worker {kind} failed ({done.returncode}):\n{done.stderr[-4000:]}"
        raise RuntimeError(msg)
    if done.stderr.strip():
        print(done.stderr.rstrip()[-2000:], file=sys.stderr)
    return json.loads(done.stdout.strip().splitlines()[-1])


Variant = tuple[str, str, int | None]  # label, client key, max_in_flight (None: default)


def live_variants(concurrency: int, sweep: Sequence[int], clients: Sequence[str]) -> list[Variant]:
    """Every client run at this concurrency, in CLIENT_LABELS order."""
    variants: list[Variant] = []
    for client in CLIENT_LABELS:
        if client not in clients:
            continue
        if client == "sdk":
            variants.extend(sdk_variants(concurrency, sweep))
        elif client.startswith("sdk-"):
            variants.append((sdk_label(client, concurrency), client, concurrency))
        else:
            variants.append((CLIENT_LABELS[client], client, None))
    return variants


def sdk_label(client: str, max_in_flight: int | None) -> str:
    """An SDK row's label, with the max_in_flight it ran with."""
    if max_in_flight is None:
        return f"SDK (default, max_in_flight={DEFAULT_MAX_IN_FLIGHT})"
    return f"{CLIENT_LABELS[client]} (max_in_flight={max_in_flight})"


def sdk_variants(concurrency: int, sweep: Sequence[int]) -> Iterator[Variant]:
    """The SDK's default, then the swept max_in_flight values (the concurrency by default)."""
    yield sdk_label("sdk", None), "sdk", None
    for mif in sweep or [concurrency]:
        if mif != DEFAULT_MAX_IN_FLIGHT:
            yield sdk_label("sdk", mif), "sdk", mif


def latency_variants(concurrency: int, clients: Sequence[str]) -> list[Variant]:
    """The latency-bound run: the SDK on each transport and raw aiohttp, as selected."""
    return [
        variant
        for variant in live_variants(concurrency, [DEFAULT_MAX_IN_FLIGHT], clients)
        if variant[1] in LATENCY_CLIENTS
    ]


def one_live_run(
    server: FakeServer, args: argparse.Namespace, concurrency: int, events: int, variant: Variant
) -> LiveResult:
    """One client run in a fresh subprocess, checked against what the fake recorded."""
    label, client, mif = variant
    print(f"  {label} at {concurrency} in flight ...", file=sys.stderr, flush=True)
    server.control("POST", "reset")
    spec = LiveSpec(
        client=client,
        concurrency=concurrency,
        events=events,
        warmup=args.warmup,
        url=server.url,
        server_pid=server.pid,
        max_in_flight=mif,
    )
    m = Measured(**run_worker("live", spec, timeout=600))
    stats = server.control("GET", "stats")
    expected = args.warmup + events
    recorded, seen = int(stats["events"]), int(stats["requests"])
    return LiveResult(
        label=label,
        client=client,
        concurrency=concurrency,
        max_in_flight=mif,
        events=events,
        warmup=args.warmup,
        wall_s=m.wall,
        events_per_s=events / m.wall,
        client_cpu_us_per_event=m.cpu / events * 1e6,
        client_cpu_pct=100 * m.cpu / m.wall,
        server_cpu_pct=100 * m.server_cpu / m.wall,
        other_cpu_pct=100 * m.other_cpu / m.wall,
        failures=m.failures,
        warmup_failures=m.warmup_failures,
        recorded=recorded,
        requests_seen=seen,
        ok=m.failures == 0 and m.warmup_failures == 0 and recorded == expected == seen,
        latency_s=server.latency,
    )


def run_live(
    server: FakeServer,
    args: argparse.Namespace,
    concurrency: int,
    variants: Sequence[Variant],
    events: int,
) -> list[LiveResult]:
    """Every variant at one concurrency, ``--repeats`` times in turn; medians per variant.

    Ratios are medians of the per-repeat ratios: runs of one repeat are minutes apart at
    most, so they share the machine's conditions better than runs of different repeats.
    """
    runs: list[list[LiveResult]] = [
        [one_live_run(server, args, concurrency, events, variant) for variant in variants]
        for _ in range(args.repeats)
    ]
    results: list[LiveResult] = []
    for i, _variant in enumerate(variants):
        samples = [repeat[i] for repeat in runs]
        first = samples[0]
        merged = dataclasses.replace(
            first,
            wall_s=sum(r.wall_s for r in samples),
            events_per_s=statistics.median(r.events_per_s for r in samples),
            client_cpu_us_per_event=statistics.median(r.client_cpu_us_per_event for r in samples),
            client_cpu_pct=statistics.median(r.client_cpu_pct for r in samples),
            server_cpu_pct=statistics.median(r.server_cpu_pct for r in samples),
            other_cpu_pct=max(r.other_cpu_pct for r in samples),
            failures=sum(r.failures for r in samples),
            warmup_failures=sum(r.warmup_failures for r in samples),
            recorded=min(r.recorded for r in samples),
            requests_seen=max(r.requests_seen for r in samples),
            ok=all(r.ok for r in samples),
            events_per_s_samples=[r.events_per_s for r in samples],
        )
        for attr, name, _ in BASELINES:
            base = next((j for j, v in enumerate(variants) if v[1] == name and v[2] is None), None)
            if base is not None:
                ratios = [repeat[i].events_per_s / repeat[base].events_per_s for repeat in runs]
                setattr(merged, attr, statistics.median(ratios))
        results.append(merged)
    return results


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))])

    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))


def print_live(results: Sequence[LiveResult], server: FakeServer, title: str = "") -> None:
    """The table of one concurrency; with latency, events/s as a share of the ceiling too."""
    first = results[0]
    n = len(first.events_per_s_samples)
    repeats = f"; medians of {n} repeats" if n > 1 else ""
    ceiling = first.ceiling
    print()
    print(
        f"== {title}{first.concurrency} in flight: {first.events:,} lead events per client "
        f"(after {first.warmup} warm-up), fake API on {server.kind}, "
        f"latency {server.latency:g}s{repeats} =="
    )
    if ceiling is not None:
        print(f"(ceiling: {first.concurrency} in flight / {server.latency:g}s = {ceiling:,.0f}/s)")
    # A ratio column only where its baseline ran.
    shown = [b for b in BASELINES if any(r.client == b[1] for r in results)]
    rows = []
    for r in results:
        recorded = f"{r.recorded - r.warmup}/{r.events}"
        if not r.ok:
            recorded += (
                f" LOST/FAILED (failures {r.failures}+{r.warmup_failures} warm-up, "
                f"requests {r.requests_seen})"
            )
        rows.append(
            [
                r.label,
                f"{r.events_per_s:,.0f}",
                *([f"{r.ceiling_pct:.1f}%"] if r.ceiling_pct is not None else []),
                f"{r.client_cpu_us_per_event:,.0f}",
                f"{r.client_cpu_pct:.0f}%",
                f"{r.server_cpu_pct:.0f}%",
                f"{r.other_cpu_pct:.0f}%",
                *(ratio_cell(getattr(r, attr)) for attr, _, _ in shown),
                recorded,
                *([" ".join(f"{v:.0f}" for v in r.events_per_s_samples)] if n > 1 else []),
            ]
        )
    print_table(
        [
            "client",
            "events/s",
            *(["% of ceiling"] if ceiling is not None else []),
            "client CPU µs/event",
            "client CPU %",
            "server CPU %",
            "others' CPU %",
            *(header for _, _, header in shown),
            "recorded",
            *(["events/s samples"] if n > 1 else []),
        ],
        rows,
    )


def ratio_cell(ratio: float | None) -> str:
    """``1.23x``, or ``-`` where the baseline did not run."""
    return f"{ratio:.2f}x" if ratio is not None else "-"


def summarize_null(samples: dict[str, dict[str, list[float]]]) -> list[dict[str, Any]]:
    """Median per client and in-flight count; SDK/raw as the median of per-repeat ratios."""
    rows: list[dict[str, Any]] = []
    for n, by_kind in samples.items():
        raw = by_kind.get("raw")
        for kind, values in by_kind.items():
            ratios = [v / r for v, r in zip(values, raw, strict=True)] if raw else []
            rows.append(
                {
                    "in_flight": int(n),
                    "client": kind,
                    "label": NULL_LABELS[kind],
                    "cpu_us_per_event_median": statistics.median(values),
                    "samples": values,
                    "vs_raw": statistics.median(ratios) if ratios else None,
                    "vs_raw_samples": ratios,
                }
            )
    return rows


def print_null(
    rows: Sequence[dict[str, Any]], iterations: int, repeats: int, others: Sequence[float]
) -> None:
    """The null-transport table."""
    print()
    print(
        f"== Null transport (httpx.MockTransport, 200 at once): client CPU per event, "
        f"{repeats} repeats x {iterations:,} events, in interleaved blocks; medians =="
    )
    print(
        f"(other processes used {statistics.median(others):.0f}% of a core meanwhile, "
        f"median; max {max(others):.0f}%)"
    )
    table = []
    for row in rows:
        ratios = row["vs_raw_samples"]
        table.append(
            [
                row["label"],
                str(row["in_flight"]),
                f"{row['cpu_us_per_event_median']:.1f}",
                f"{row['vs_raw']:.3f}x" if row["vs_raw"] is not None else "-",
                f"{min(ratios):.3f}-{max(ratios):.3f}" if ratios else "-",
                " ".join(f"{v:.0f}" for v in row["samples"]),
            ]
        )
    print_table(
        ["client", "in flight", "CPU µs/event", "÷ raw httpx", "ratio range", "samples (µs)"],
        table,
    )


VERSIONS_SHOWN: Final = (
    "taapit-async", "httpx", "httpcore", "anyio", "h11", "aiohttp", "httpx-aiohttp", "yarl",
    "multidict", "uvicorn", "requests", "urllib3",
)  # fmt: skip


def server_loop(loop: str) -> str:
    """The event loop uvicorn runs for ``--loop loop`` ("auto": uvloop when installed)."""
    if loop == "auto":
        return "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    return loop


def machine_facts(server_http: str, loop: str = "auto") -> dict[str, Any]:
    """CPU, cores and the versions that decide the figures."""
    model = "unknown"
    with Path("/proc/cpuinfo").open() as cpuinfo:
        for entry in cpuinfo:
            if entry.startswith("model name"):
                model = entry.split(":", 1)[1].strip()
                break

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "versions": {name: version(name) for name in VERSIONS_SHOWN},
        "installed": {
            name: importlib.util.find_spec(name) is not None
            for name in ("sniffio", "httptools", "uvloop", "h2", "aiodns")
        },
        "aiohttp_c_parser": aiohttp_c_parser(),
        "server_http": server_http,
        "server": f"uvicorn with {server_http}, {server_loop(loop)} loop",
        "loadavg_at_start": os.getloadavg(),
    }


def aiohttp_c_parser() -> bool | None:
    """Whether aiohttp parses HTTP with its C extension (None: aiohttp not installed)."""
    if importlib.util.find_spec("aiohttp") is None:
        return None
    from aiohttp import http_parser  # noqa: PLC0415 - optional

    return "_http_parser" in http_parser.HttpResponseParser.__module__


def print_facts(facts: dict[str, Any]) -> None:
    """The machine facts."""
    print()
    print("== Machine ==")
    print(f"CPU: {facts['cpu']}, {facts['cores']} cores ({facts['usable_cores']} usable)")
    print(f"OS: {facts['platform']}; load average at start {facts['loadavg_at_start']}")
    print(f"Python: {facts['python']}")
    print("Versions: " + ", ".join(f"{k} {v}" for k, v in facts["versions"].items()))
    print(
        "Installed: "
        + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in facts["installed"].items())
    )
    pins = facts.get("pinned") or {}
    print(
        f"Pinned: fake server to CPU {pins['server']}, each client to CPU {pins['client']}"
        if pins
        else "Pinned: no (the kernel placed the server and the clients)"
    )
    c_parser = facts.get("aiohttp_c_parser")
    if c_parser is not None:
        print(f"aiohttp's HTTP parser: {'C extension' if c_parser else 'pure Python'}")
    print(f"Fake server: {facts['server']}, one process")


AIOHTTP_VS_RAW: Final = 0.8  # sdk-aiohttp events/s at least this share of raw aiohttp's
SDK_VS_REQUESTS: Final = 1.0  # the SDK's default at least this share of requests.post's
CEILING_PCT: Final = 90.0  # sdk-aiohttp's latency run at least this share of the ceiling
NULL_VS_RAW: Final = 1.15  # SDK null-transport CPU per event at most this share of raw httpx's


def target(
    name: str,
    value: float | None,
    bound: float,
    *,
    most: bool = False,
    pct: bool = False,
    detail: str = "",
    missing: str,
) -> dict[str, Any]:
    """One target: ``value`` at least ``bound`` (at most, with ``most``).

    ``met`` is None, and the line says what it ``missing``, when the run left it out.
    """
    if value is None:
        return {"target": name, "value": None, "met": None, "shown": f"not checked: {missing}"}
    shown = (f"{value:.1f}%" if pct else f"{value:.2f}x") + detail
    met = value <= bound if most else value >= bound
    return {"target": name, "value": value, "bound": bound, "met": met, "shown": shown}


def check_targets(
    live: Sequence[LiveResult], latency_run: Sequence[LiveResult], null: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The issue's targets, at 32 in flight; one that could not be checked says why."""
    at32 = [r for r in live if r.concurrency == 32]
    fast = next((r for r in at32 if r.client == "sdk-aiohttp"), None)
    sdk = next((r for r in at32 if r.client == "sdk" and r.max_in_flight is None), None)
    slow = next((r for r in latency_run if r.client == "sdk-aiohttp"), None)
    targets = [
        target(
            f"SDK transport=aiohttp events/s >= {AIOHTTP_VS_RAW}x raw aiohttp at 32 in flight",
            fast.vs_raw_aiohttp if fast is not None else None,
            AIOHTTP_VS_RAW,
            missing="needs the sdk-aiohttp and aiohttp clients at 32 in flight",
        ),
        target(
            f"SDK (default) events/s >= {SDK_VS_REQUESTS}x requests.post at 32 in flight",
            sdk.vs_requests if sdk is not None else None,
            SDK_VS_REQUESTS,
            missing="needs the sdk and requests clients at 32 in flight",
        ),
        target(
            f"SDK transport=aiohttp latency run >= {CEILING_PCT:g}% of the ceiling",
            slow.ceiling_pct if slow is not None else None,
            CEILING_PCT,
            pct=True,
            detail=f" ({slow.events_per_s:,.0f} of {slow.ceiling or 0:,.0f} events/s)"
            if slow is not None
            else "",
            missing="needs the latency run with the sdk-aiohttp client",
        ),
    ]
    for n in (1, 32):
        row = next((r for r in null if r["client"] == "sdk" and r["in_flight"] == n), None)
        targets.append(
            target(
                f"SDK null-transport CPU/event <= {NULL_VS_RAW}x raw httpx ({n} in flight)",
                row["vs_raw"] if row is not None else None,
                NULL_VS_RAW,
                most=True,
                missing=f"needs the null transport at {n} in flight",
            )
        )
    return targets


def print_targets(targets: Sequence[dict[str, Any]]) -> None:
    """MET, MISSED or NOT RUN, with the figure."""
    print()
    print("== Targets ==")
    for t in targets:
        verdict = {True: "MET", False: "MISSED", None: "NOT RUN"}[t["met"]]
        print(f"{verdict:<7}  {t['target']}: {t['shown']}")


def int_list(text: str) -> list[int]:
    """Parse ``1,8,32``."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        msg = f"expected comma-separated integers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not values or min(values) < 1:
        msg = f"expected integers >= 1, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return values


def client_list(text: str) -> list[str]:
    """Parse ``httpx,sdk``."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = sorted(set(names) - set(CLIENT_LABELS))
    if not names or unknown:
        msg = f"expected some of {','.join(CLIENT_LABELS)}, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        description="Throughput and CPU per event of the SDK on each transport, raw aiohttp, "
        "raw httpx and requests.post against the fake Taapit API served by uvicorn on "
        "127.0.0.1, a latency-bound run, and the SDK's CPU overhead on a null transport.",
    )
    parser.add_argument(
        "--concurrency", type=int_list, default=[1, 8, 32], help="in-flight counts (1,8,32)"
    )
    parser.add_argument("--events", type=int, default=3000, help="events per client run")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up events, not timed")
    parser.add_argument(
        "--repeats", type=int, default=1, help="live runs per client, in turn (medians shown)"
    )
    parser.add_argument(
        "--max-in-flight",
        type=int_list,
        default=[],
        help="extra SDK runs with these max_in_flight values at every concurrency "
        f"(default: one run with max_in_flight = the concurrency, when that is not the "
        f"default, {DEFAULT_MAX_IN_FLIGHT})",
    )
    parser.add_argument(
        "--clients",
        type=client_list,
        default=None,
        help=f"live clients to run, of {','.join(CLIENT_LABELS)} (default: all; "
        f"{','.join(sorted(TLS_ONLY))} only with --tls)",
    )
    parser.add_argument(
        "--http",
        choices=("auto", "httptools", "h11"),
        default="auto",
        help="the fake server's HTTP parser (auto: httptools when installed)",
    )
    parser.add_argument(
        "--server-loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="the fake server's event loop (auto: uvloop when installed); the clients "
        "always run on asyncio's own",
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, help="seconds the fake adds, at --concurrency"
    )
    parser.add_argument(
        "--latency-run",
        action="store_true",
        help="only the latency-bound run (as --skip-live --skip-null; it is part of a full run)",
    )
    parser.add_argument("--skip-latency", action="store_true", help="no latency-bound run")
    parser.add_argument(
        "--latency-run-delay",
        type=float,
        default=0.02,
        help="seconds the fake adds per request in the latency-bound run (0.02)",
    )
    parser.add_argument(
        "--latency-run-in-flight", type=int, default=32, help="its concurrency (32)"
    )
    parser.add_argument(
        "--latency-run-events", type=int, default=3000, help="its events per client (3000)"
    )
    parser.add_argument(
        "--null-iterations", type=int, default=4000, help="events per null-transport repeat"
    )
    parser.add_argument("--null-repeats", type=int, default=5, help="null-transport repeats")
    parser.add_argument(
        "--null-in-flight", type=int_list, default=[1, 32], help="null-transport concurrency"
    )
    parser.add_argument("--skip-live", action="store_true", help="no live runs at --concurrency")
    parser.add_argument("--skip-null", action="store_true", help="no null-transport runs")
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the server and the clients to separate cores",
    )
    parser.add_argument(
        "--tls",
        action="store_true",
        help="serve the fake over HTTPS (hypercorn: HTTP/1.1 or HTTP/2 by ALPN) with a "
        "throwaway CA, and add the sdk-http2 client; no targets are judged",
    )
    parser.add_argument("--json", type=Path, default=None, help="write all figures here")
    parser.add_argument("--serve-tls", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", choices=("live", "null"), help=argparse.SUPPRESS)
    parser.add_argument("--spec", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.latency_run:
        if args.skip_latency:
            parser.error("--latency-run and --skip-latency exclude each other")
        args.skip_live = args.skip_null = True
    if args.latency_run_delay <= 0:
        parser.error("--latency-run-delay must be > 0")
    if args.clients is None:
        args.clients = [c for c in CLIENT_LABELS if args.tls or c not in TLS_ONLY]
    elif not args.tls and TLS_ONLY & set(args.clients):
        parser.error(f"{','.join(sorted(TLS_ONLY & set(args.clients)))} needs --tls")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, or one worker of it."""
    args = parse_args(argv)
    if args.worker == "live":
        measured = run_live_worker(LiveSpec(**json.loads(args.spec)))
        print(json.dumps(dataclasses.asdict(measured)))
        return 0
    if args.worker == "null":
        print(json.dumps(run_null_worker(NullSpec(**json.loads(args.spec)))))
        return 0
    if args.serve_tls:
        serve_tls(*json.loads(args.spec))
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        tls = TLSFiles.create(Path(scratch)) if args.tls else None
        if tls is not None:
            tls.trust()
        return run(args, tls)


def run(args: argparse.Namespace, tls: TLSFiles | None) -> int:
    """The whole benchmark: live runs, the latency run, the null transport, the report."""

    command = shlex.join([sys.executable, *sys.argv])
    print(f"Command: {command}")
    http = args.http
    if http == "auto":
        http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    if not args.no_pin:
        pin_cores()
    facts = machine_facts(http, args.server_loop)
    facts["pinned"] = dict(PINNED)
    if tls is not None:
        facts["server"] = "hypercorn over TLS (HTTP/2 or HTTP/1.1 by ALPN), asyncio loop"
        facts["versions"]["hypercorn"] = importlib.metadata.version("hypercorn")
    report: dict[str, Any] = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": facts,
        "client_labels": {**CLIENT_LABELS, "sdk": sdk_label("sdk", None)},
        "live": [],
        "latency_run": None,
        "null": [],
    }
    started = time.monotonic()
    live: list[LiveResult] = []
    if not args.skip_live:
        with FakeServer(http, args.latency, tls, args.server_loop) as server:
            print(f"Fake Taapit API: {server.url} (pid {server.pid}, {facts['server']})")
            for concurrency in args.concurrency:
                variants = live_variants(concurrency, args.max_in_flight, args.clients)
                results = run_live(server, args, concurrency, variants, args.events)
                print_live(results, server)
                sys.stdout.flush()
                live.extend(results)
        report["live"] = [r.as_json() for r in live]
    latency_run: list[LiveResult] = []
    variants = latency_variants(args.latency_run_in_flight, args.clients)
    if not args.skip_latency and variants:
        with FakeServer(http, args.latency_run_delay, tls, args.server_loop) as server:
            print(f"Fake Taapit API: {server.url} (pid {server.pid}, latency {server.latency:g}s)")
            latency_run = run_live(
                server, args, args.latency_run_in_flight, variants, args.latency_run_events
            )
            print_live(latency_run, server, title="Latency run, ")
            sys.stdout.flush()
        report["latency_run"] = {
            "latency_s": args.latency_run_delay,
            "in_flight": args.latency_run_in_flight,
            "ceiling": args.latency_run_in_flight / args.latency_run_delay,
            "events": args.latency_run_events,
            "rows": [r.as_json() for r in latency_run],
        }
    null_rows: list[dict[str, Any]] = []
    if not args.skip_null:
        print("  null transport ...", file=sys.stderr, flush=True)
        spec = NullSpec(
            iterations=args.null_iterations,
            repeats=args.null_repeats,
            in_flight=args.null_in_flight,
            kinds=list(NULL_LABELS),
        )
        null_raw = run_worker("null", spec, timeout=1800)
        null_rows = summarize_null(null_raw["samples"])
        print_null(null_rows, args.null_iterations, args.null_repeats, null_raw["others_cpu_pct"])
        report["null"] = null_rows
        report["null_others_cpu_pct"] = null_raw["others_cpu_pct"]
    if tls is None:
        targets = check_targets(live, latency_run, null_rows)
        report["targets"] = targets
        print_targets(targets)
    else:
        print("\n(Targets are judged on plain HTTP: run without --tls.)")
    busy = [r for r in [*live, *latency_run] if r.other_cpu_pct > BUSY_PCT]
    busy_null = [v for v in report.get("null_others_cpu_pct", []) if v > BUSY_PCT]
    if busy or busy_null:
        print()
        print(
            f"WARNING: other processes used more than {BUSY_PCT:g}% of a core during "
            f"{len(busy)} live run(s) and {len(busy_null)} null-transport repeat(s): "
            "on a 2-core machine that slows the client; rerun on a quiet machine"
        )
    lost = [r for r in [*live, *latency_run] if not r.ok]
    if lost:
        print()
        print(f"WARNING: {len(lost)} run(s) lost or failed events: see 'recorded' above")
    print_facts(facts)
    elapsed = time.monotonic() - started
    report["elapsed_s"] = elapsed
    report["loadavg_at_end"] = os.getloadavg()
    print(f"\nTotal time: {elapsed:.0f}s; load average at the end {report['loadavg_at_end']}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"Figures written to {args.json}")
    return 1 if lost else 0


if __name__ == "__main__":
    sys.exit(main())
