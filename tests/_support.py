"""Constants and builders shared by the test modules."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from taapit_async import AsyncTaapit
from taapit_async.testing import FakeTaapit

API_KEY = "taapit_sk_test_0123456789abcdef"
BASE_URL = "https://track.taap.it"
LEAD_URL = f"{BASE_URL}/api/events/lead"
SALE_URL = f"{BASE_URL}/api/events/sale"


def make_client(**options: Any) -> AsyncTaapit:
    """A client with tiny backoff so that retry tests take milliseconds."""
    options.setdefault("backoff_base", 0.001)
    options.setdefault("backoff_max", 0.002)
    return AsyncTaapit(API_KEY, **options)


def fake_client(fake: FakeTaapit, **options: Any) -> AsyncTaapit:
    """A client talking to an in-process fake, with tiny backoff (override with options)."""
    options.setdefault("backoff_base", 0.001)
    options.setdefault("backoff_max", 0.002)
    return AsyncTaapit(
        fake.api_key,
        base_url="http://taapit.localhost",
        http_client=httpx.AsyncClient(transport=fake.transport()),
        **options,
    )


@contextlib.asynccontextmanager
async def served_in_process(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    """Run an ASGI app's lifespan and yield an httpx client that calls it in-process."""
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://shop.test") as http:
            yield http
