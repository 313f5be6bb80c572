"""Fault soak: thousands of events through faults, every one delivered once, none re-sent.

The fake API runs under uvicorn on 127.0.0.1, so dropped connections are real TCP drops.
Backoff and cooldowns are scaled down so the soak takes seconds. Its size is
``TAAPIT_SOAK_EVENTS``: 2,000 in the test suite (about 20 s per mode here, where the fake
server shares the test's process), 10,000 with ``nox -s soak``.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from taapit_async import AsyncTaapit, Delivery
from taapit_async.testing import FakeTaapitServer

EVENTS = int(os.environ.get("TAAPIT_SOAK_EVENTS", "2000"))
BURSTS = 4  # bursts of 429 with Retry-After, spread over the run
BURST_SIZE = 10  # fewer than the requests in flight: one wave meets the burst


@pytest.fixture
def server() -> Iterator[FakeTaapitServer]:
    with FakeTaapitServer() as running:
        yield running


async def _bursts_of_429(server: FakeTaapitServer) -> None:
    # Spread over the run by progress, each burst met by one wave of requests in flight.
    for k in range(1, BURSTS + 1):
        for _ in range(60_000):  # ten minutes at most
            if server.fake.stats()["events"] >= k * EVENTS // (BURSTS + 1):
                break
            await asyncio.sleep(0.01)
        server.fake.rate_limit_next(BURST_SIZE, retry_after="1")


async def _enqueue_all(taapit: AsyncTaapit) -> list[Delivery]:
    deliveries = []
    for i in range(EVENTS):
        customer = {"external_id": f"user-{i}"}
        if i % 3:
            delivery = await taapit.background.lead(
                tracking_id=f"t{i}", customer=customer, idempotency_key=f"event-{i}"
            )
        else:
            delivery = await taapit.background.sale(
                tracking_id=f"t{i}",
                customer=customer,
                amount=i % 500 + 0.5,
                currency="eur",
                idempotency_key=f"event-{i}",
            )
        deliveries.append(delivery)
        if i % 100 == 99:
            await asyncio.sleep(0)  # a producer that yields, as request handlers do
    return deliveries


@pytest.mark.server
@pytest.mark.parametrize("durable", [False, True], ids=["in-memory", "outbox"])
async def test_every_event_is_recorded_once_and_only_faults_cost_requests(
    server: FakeTaapitServer, tmp_path: Path, durable: bool
) -> None:
    server.fake.set_fault_rates(
        error_rate=0.20, drop_rate=0.05, drop_after_record_share=0.5, seed=20261128
    )
    async with AsyncTaapit(
        server.fake.api_key,
        base_url=server.url,
        max_in_flight=32,
        max_queue=EVENTS,
        background_max_retries=100,
        background_deadline=600,
        backoff_base=0.005,
        backoff_max=0.05,
        breaker_cooldown=0.05,
        recovery_rate=2_000,
        drain_timeout=120,
        outbox=tmp_path / "outbox.sqlite3" if durable else None,
        outbox_max_attempts=100,
    ) as taapit:
        bursts = asyncio.ensure_future(_bursts_of_429(server))
        deliveries = await _enqueue_all(taapit)
        results = await asyncio.gather(*(delivery.result() for delivery in deliveries))
        stats = taapit.stats
        await bursts

    assert all(result.success for result in results)
    events = server.fake.events
    keys = Counter(event.idempotency_key for event in events)
    assert len(events) == EVENTS  # none lost
    assert set(keys) == {f"event-{i}" for i in range(EVENTS)}
    assert max(keys.values()) == 1  # none recorded twice

    requests = server.fake.requests
    faulted = Counter(r.idempotency_key for r in requests if r.fault is not None)
    clean = Counter(r.idempotency_key for r in requests if r.fault is None)
    # Exactly one request per event was not faulted: no needless re-send, so the requests
    # an event cost are 1 + the faults it met.
    assert clean == Counter(keys)
    assert len(requests) == EVENTS + sum(faulted.values())
    # The faults really happened, in the proportions asked for.
    kinds = Counter(r.fault for r in requests if r.fault is not None)
    assert kinds["error"] > 0.15 * EVENTS
    assert kinds["drop"] > 0
    assert kinds["drop_after_record"] > 0
    assert kinds["rate_limit"] >= BURSTS * BURST_SIZE
    # A replay answers a retry whose first reply was lost after the fake recorded it.
    replayed = sum(1 for r in requests if r.replayed)
    assert replayed == kinds["drop_after_record"]
    assert stats.sent == EVENTS
    assert stats.failed == stats.dropped == 0
    assert taapit._breaker.trips >= BURSTS  # each 429 burst paused delivery as a whole
