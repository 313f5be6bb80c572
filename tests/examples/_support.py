"""Helpers for the example tests: real servers on 127.0.0.1, and waiting for delivery."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

# The servers live with the shop, so that the demo (examples/demo.py) runs them the same way.
from fastapi_shop.servers import shop_and_taapit

__all__ = ["TID", "WAIT", "eventually", "eventually_sync", "shop_and_taapit"]

TID = "rLnWe1uz9t282v7g"
WAIT = 10.0  # seconds background delivery may take before a test gives up


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
