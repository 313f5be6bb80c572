"""One timer for the deadlines of all calls: each call still ends at its own deadline."""

from __future__ import annotations

import asyncio

import httpx
import pytest
import respx

from taapit_async import APITimeoutError
from taapit_async._deadlines import Deadlines

from ._support import make_client

HANG_SECONDS = 30


async def hang(request: httpx.Request) -> httpx.Response:
    await asyncio.sleep(HANG_SECONDS)
    return httpx.Response(200)  # pragma: no cover


async def test_calls_with_different_deadlines_each_end_at_their_own(
    api: respx.MockRouter,
) -> None:
    api.post("/api/events/lead").mock(side_effect=hang)
    loop = asyncio.get_running_loop()
    ended: dict[str, float] = {}

    async def call(name: str, taapit_deadline: float) -> None:
        async with make_client(deadline=taapit_deadline) as taapit:
            started = loop.time()
            result = await taapit.track.lead(tracking_id="t1", customer={"external_id": name})
            ended[name] = loop.time() - started
            assert isinstance(result.error, APITimeoutError)

    await asyncio.gather(call("late", 0.6), call("early", 0.15), call("middle", 0.3))
    assert 0.15 <= ended["early"] < 0.3
    assert 0.3 <= ended["middle"] < 0.6
    assert 0.6 <= ended["late"] < 1.5


async def test_calls_of_one_client_each_end_at_their_deadline(api: respx.MockRouter) -> None:
    api.post("/api/events/lead").mock(side_effect=hang)
    loop = asyncio.get_running_loop()
    async with make_client(deadline=0.2) as taapit:

        async def call(delay: float) -> float:
            await asyncio.sleep(delay)
            started = loop.time()
            result = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
            assert isinstance(result.error, APITimeoutError)
            return loop.time() - started

        took = await asyncio.gather(*(call(i * 0.05) for i in range(6)))
    assert all(0.2 <= t < 0.6 for t in took), took


async def test_a_call_that_ends_in_time_leaves_its_task_alone(api: respx.MockRouter) -> None:
    api.post("/api/events/lead").respond(200, json={"success": True})
    async with make_client(deadline=0.1) as taapit:
        result = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
        assert result.success
        await asyncio.sleep(0.3)  # past the deadline the call had: no stray cancellation
        again = await taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
    assert again.success


async def test_a_caller_cancelled_as_the_deadline_passes_stays_cancelled(
    api: respx.MockRouter,
) -> None:
    api.post("/api/events/lead").mock(side_effect=hang)
    async with make_client(deadline=0.1) as taapit:
        task = asyncio.create_task(
            taapit.track.lead(tracking_id="t1", customer={"external_id": "u"})
        )
        loop = asyncio.get_running_loop()
        # Lands in the same loop iteration as the deadline's own cancellation.
        loop.call_at(loop.time() + 0.1, task.cancel)
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_deadline_is_only_armed_once_for_later_calls() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines()
    first = asyncio.create_task(asyncio.sleep(HANG_SECONDS))
    second = asyncio.create_task(asyncio.sleep(HANG_SECONDS))
    deadlines.add(first, loop.time() + 0.05, loop)
    deadlines.add(second, loop.time() + 0.1, loop)
    with pytest.raises(asyncio.CancelledError):
        await first
    assert deadlines.expired(first)
    assert not deadlines.expired(second)
    deadlines.discard(first)
    with pytest.raises(asyncio.CancelledError):
        await second
    assert deadlines.expired(second)
    deadlines.discard(second)
    assert not deadlines.expired(second)
