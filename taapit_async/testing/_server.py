"""Serve a `FakeTaapit` for real: uvicorn on loopback, in a background thread or the CLI.

Dropped connections are real here: the HTTP protocol classes below give each connection
an ASGI callable bound to that connection's transport, and abort the transport when the
fake signals a drop, so the client sees the connection die without any reply.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import signal
import threading
import time
from typing import TYPE_CHECKING, Any, Final, Literal

try:
    import uvicorn
    from uvicorn.protocols.http.h11_impl import H11Protocol
except ImportError as exc:  # pragma: no cover - exercised by a test that hides uvicorn
    msg = "the fake Taapit server needs uvicorn: pip install 'taapit-async[server]'"
    raise ImportError(msg) from exc

from ._fake import DEFAULT_API_KEY, FakeTaapit, _DroppedConnection

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import FrameType, TracebackType
    from typing import Self

    from ._fake import Receive, Scope, Send

__all__ = ["FakeTaapitServer", "main"]

HttpImplementation = Literal["auto", "h11", "httptools"]
LoopImplementation = Literal["auto", "asyncio", "uvloop"]

_POLL: Final = 0.005


class _ConnectionApp:
    """The ASGI app as one connection sees it: a drop aborts that connection's socket."""

    __slots__ = ("app", "transport")

    def __init__(self, app: Any, transport: asyncio.Transport) -> None:
        self.app = app
        self.transport = transport

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.app(scope, receive, send)
        except _DroppedConnection:
            # abort() closes the socket at once, unsent data and all (a RST, not a FIN after
            # a reply). Waiting for the server to notice tells uvicorn the client is gone, so
            # it neither logs an error nor tries to write a 500 on the dead connection.
            self.transport.abort()
            while (await receive())["type"] != "http.disconnect":
                pass


class _H11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # uvicorn reads self.app for each request it parses, so binding it here, per
        # connection, needs no registry to find the transport again (a registry keyed by
        # the peer address would break when proxy headers rewrite scope["client"]).
        self.app = _ConnectionApp(self.app, transport)


_PROTOCOLS: dict[str, type[asyncio.Protocol]] = {"h11": _H11Protocol}

try:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
except ImportError:  # httptools is optional: h11 is slower but always there
    pass
else:

    class _HttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self.app = _ConnectionApp(self.app, transport)

    _PROTOCOLS["httptools"] = _HttpToolsProtocol


def _loop(loop: LoopImplementation) -> LoopImplementation:
    if loop == "uvloop" and importlib.util.find_spec("uvloop") is None:
        msg = "the uvloop event loop is not installed: pip install uvloop"
        raise ImportError(msg)
    if loop not in {"auto", "asyncio", "uvloop"}:
        msg = f"loop must be 'auto', 'asyncio' or 'uvloop', not {loop!r}"
        raise ValueError(msg)
    return loop


def _protocol(http: HttpImplementation) -> type[asyncio.Protocol]:
    if http == "auto":
        # httptools parses several times faster than h11, which matters to benchmarks.
        return _PROTOCOLS.get("httptools", _H11Protocol)
    try:
        return _PROTOCOLS[http]
    except KeyError:
        msg = f"the {http} HTTP implementation is not installed: pip install {http}"
        raise ImportError(msg) from None


class FakeTaapitServer:
    """Run a `FakeTaapit` under uvicorn in a background thread, for tests and demos.

    The server listens on loopback (port 0 picks a free port; `url` tells which), answers
    with the fake's state, which the calling thread may inspect at any time, and drops TCP
    connections for real when a drop fault fires.

    Args:
        fake: The fake to serve; a new one when None.
        host: The address to listen on.
        port: The port; 0 for any free port.
        http: The HTTP implementation: ``"httptools"`` (fast, optional), ``"h11"``, or
            ``"auto"`` for httptools when it is installed.
        loop: The event loop: ``"asyncio"``, ``"uvloop"`` (optional), or ``"auto"`` for
            uvloop when it is installed (uvicorn's choice).
        log_level: uvicorn's log level.
        startup_timeout: Seconds `start` waits for the server to listen.

    Example:
        From a synchronous test or a demo script::

            with FakeTaapitServer() as server:
                httpx.post(f"{server.url}/api/events/lead", json=..., headers=...)
                assert server.fake.leads
    """

    def __init__(
        self,
        fake: FakeTaapit | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        http: HttpImplementation = "auto",
        loop: LoopImplementation = "auto",
        log_level: str = "warning",
        startup_timeout: float = 10.0,
    ) -> None:
        self._fake = fake if fake is not None else FakeTaapit()
        self._host = host
        self._config = uvicorn.Config(
            self._fake,
            host=host,
            port=port,
            http=_protocol(http),
            loop=_loop(loop),
            lifespan="on",
            log_level=log_level,
            # None leaves the embedding process's logging alone (no dictConfig).
            log_config=None,
            access_log=False,
            # The fake is the origin: a forwarded-for header must not rewrite the client.
            proxy_headers=False,
            timeout_graceful_shutdown=5,
        )
        self._startup_timeout = startup_timeout
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None
        self._port: int | None = None

    def __repr__(self) -> str:
        where = self.url if self._port is not None else "stopped"
        return f"FakeTaapitServer({where})"

    @property
    def fake(self) -> FakeTaapit:
        """The fake being served."""
        return self._fake

    @property
    def url(self) -> str:
        """The base URL, such as ``http://127.0.0.1:54321``.

        Raises:
            RuntimeError: The server is not running.
        """
        if self._port is None:
            msg = "the fake Taapit server is not running: call start() or use it in a with block"
            raise RuntimeError(msg)
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    @property
    def port(self) -> int:
        """The port the server listens on (the real one when 0 was asked for).

        Raises:
            RuntimeError: The server is not running.
        """
        if self._port is None:
            msg = "the fake Taapit server is not running"
            raise RuntimeError(msg)
        return self._port

    def start(self) -> None:
        """Start serving in a background thread and return once the socket listens.

        Raises:
            RuntimeError: The server is already running, or did not start (the port is
                taken, say) within ``startup_timeout``.
        """
        if self._thread is not None:
            msg = "the fake Taapit server is already running"
            raise RuntimeError(msg)
        server = uvicorn.Server(self._config)
        self._server, self._failure = server, None
        self._thread = threading.Thread(target=self._run, name="fake-taapit-server", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        # uvicorn offers no startup callback; its `started` flag is set once it listens.
        while not server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(_POLL)
        if not server.started:
            self.stop()
            msg = f"the fake Taapit server did not start on {self._host}:{self._config.port}"
            raise RuntimeError(msg) from self._failure
        sockets = server.servers[0].sockets
        self._port = int(sockets[0].getsockname()[1])

    def stop(self) -> None:
        """Stop the server, close its connections and wait for its thread to end.

        Does nothing when it is not running.
        """
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join()
        self._server = self._thread = None
        self._port = None

    def _run(self) -> None:
        assert self._server is not None
        try:
            self._server.run()
        # A failed startup ends in sys.exit() inside uvicorn: keep it for start() to report
        # instead of letting it vanish with the thread.
        except BaseException as exc:  # noqa: BLE001
            self._failure = exc

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake Taapit API until Ctrl-C or SIGTERM (the ``fake-server`` command).

    Args:
        argv: The command-line arguments after the command name; `sys.argv` when None.

    Returns:
        The exit status: 0 after a clean shutdown.
    """
    parser = argparse.ArgumentParser(
        prog="taapit-async fake-server",
        description="Serve a fake Taapit conversion-tracking API for local demos and tests.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8787, help="port (0 for any free port)")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY, help="the secret key to accept")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added per request")
    parser.add_argument("--error-rate", type=float, default=0.0, help="share answered 503")
    parser.add_argument("--drop-rate", type=float, default=0.0, help="share of dropped connections")
    parser.add_argument("--seed", type=int, default=None, help="seed of the random faults")
    parser.add_argument(
        "--http", choices=("auto", "h11", "httptools"), default="auto", help="HTTP parser"
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio", "uvloop"),
        default="auto",
        help="event loop (auto: uvloop when installed)",
    )
    args = parser.parse_args(argv)

    try:
        fake = FakeTaapit(api_key=args.api_key, latency=args.latency)
        if args.error_rate or args.drop_rate:
            fake.set_fault_rates(
                error_rate=args.error_rate, drop_rate=args.drop_rate, seed=args.seed
            )
    except ValueError as exc:
        parser.error(str(exc))
    try:
        server = FakeTaapitServer(
            fake, host=args.host, port=args.port, http=args.http, loop=args.loop
        )
    except ImportError as exc:
        parser.error(str(exc))

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with server:
            print(f"Fake Taapit API on {server.url}", flush=True)
            print(f"API key: {fake.api_key}", flush=True)
            print("Press Ctrl-C to stop.", flush=True)
            stop.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
