"""Run the shop and the fake Taapit API for real: uvicorn on 127.0.0.1, free ports, threads.

The demo (``examples/demo.py``) and the example tests use this; it needs
``pip install 'taapit-async[server]'`` on top of the shop's own requirements.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import uvicorn

from taapit_async.testing import FakeTaapitServer

from .app import ShopSettings, create_app

__all__ = ["serve", "shop_and_taapit"]

STARTUP_TIMEOUT = 10.0  # seconds a server may take to listen (it takes milliseconds)


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run an ASGI app under uvicorn on 127.0.0.1 (a free port) in a thread; yield its URL.

    The app's lifespan runs (startup before the URL is yielded, shutdown on exit), as it
    would under ``uvicorn`` on the command line.

    Raises:
        RuntimeError: The server did not start within ``STARTUP_TIMEOUT``.
    """
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="on", log_level="warning", log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="example-server", daemon=True)
    thread.start()
    # uvicorn has no startup callback; its `started` flag is set once it listens.
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        if not server.started:
            msg = "the example app did not start (see uvicorn's messages above)"
            raise RuntimeError(msg)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(STARTUP_TIMEOUT)


@contextlib.contextmanager
def shop_and_taapit(outbox: Path, **settings: Any) -> Iterator[tuple[str, FakeTaapitServer]]:
    """The fake Taapit API and the shop, both under uvicorn: yield the shop's URL and the fake.

    Args:
        outbox: The shop's outbox file; a fresh path gives a fresh outbox (an existing file
            is resumed, events left in it included).
        **settings: More `ShopSettings` fields, such as ``webhook_secret``.
    """
    with FakeTaapitServer() as taapit:
        shop = create_app(
            ShopSettings(
                taapit_api_key=taapit.fake.api_key,
                taapit_base_url=taapit.url,
                outbox_path=outbox,
                **settings,
            )
        )
        with serve(shop) as url:
            yield url, taapit
