"""Constants and builders shared by the test modules."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
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


_TESTS = Path(__file__).parent


def error_chain(error: BaseException) -> Iterator[BaseException]:
    """``error`` and every exception it leads to: causes, contexts, members of groups."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [e for e in (current.__cause__, current.__context__) if e is not None]
        if isinstance(current, BaseExceptionGroup):
            todo += current.exceptions


def frame_locals(error: BaseException) -> Iterator[str]:
    """What an error tracker recording local variables would see of ``error``.

    Every local variable of every frame the chain of ``error`` went through, as its repr
    and, for mappings, item by item (a repr may hide what a tracker serializes). The
    frames of the tests themselves are left out: they hold what the test fed in.
    """
    for current in error_chain(error):
        tb = current.__traceback__
        while tb is not None:
            if Path(tb.tb_frame.f_code.co_filename).is_relative_to(_TESTS):
                tb = tb.tb_next
                continue
            for name, value in tb.tb_frame.f_locals.items():
                yield f"{name}={value!r}"
                if isinstance(value, Mapping):
                    yield from (f"{name}[{k!r}]={v!r}" for k, v in value.items())
            tb = tb.tb_next
