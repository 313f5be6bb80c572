"""Helpers for the example tests: real servers on 127.0.0.1, and waiting for delivery."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import uvicorn
from fastapi_shop import ShopSettings, create_app

from taapit_async.testing import FakeTaapitServer

TID = "rLnWe1uz9t282v7g"
WAIT = 10.0  # seconds background delivery may take before a test gives up


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run an ASGI app under uvicorn on 127.0.0.1 (a free port) in a thread; yield its URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="on", log_level="warning", log_config=None
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="example-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        assert server.started, "the example app did not start"
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(WAIT)


@contextlib.contextmanager
def shop_and_taapit(outbox: Path, **settings: Any) -> Iterator[tuple[str, FakeTaapitServer]]:
    """The fake Taapit API and the FastAPI shop, both under uvicorn: the shop's URL, the fake."""
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


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait until ``condition()`` holds (background delivery is not instantaneous)."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what} after {WAIT} s"
        await asyncio.sleep(0.01)


def eventually_sync(condition: Callable[[], bool], what: str) -> None:
    """`eventually` for synchronous tests."""
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"still waiting for {what} after {WAIT} s"
        time.sleep(0.02)
