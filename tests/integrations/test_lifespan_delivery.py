"""App shutdown with background events in flight: delivered, or kept on disk; never both lost
and reported sent."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from taapit_async import Delivery, ErrorCode, TrackResult
from taapit_async.integrations.fastapi import Tracker, taapit_lifespan
from taapit_async.testing import FakeTaapit
from tests._support import fake_client, served_in_process

TID = "rLnWe1uz9t282v7g"


def shop(fake: FakeTaapit, deliveries: list[Delivery], **options: Any) -> FastAPI:
    """An app whose sign-up queues a background lead and keeps the handle for the test."""
    app = FastAPI(lifespan=taapit_lifespan(client=lambda: fake_client(fake, **options)))

    @app.post("/signup/{user}")
    async def signup(user: str, tracker: Tracker) -> dict[str, str]:
        delivery = await tracker.background.lead(
            customer={"external_id": user}, idempotency_key=f"signup-{user}"
        )
        deliveries.append(delivery)
        return {"queued": delivery.idempotency_key}

    return app


@contextlib.asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app in-process, for a visitor who came through a Taapit link (the cookie)."""
    async with served_in_process(app) as http:
        http.cookies.set("ta_tid", TID)
        yield http


async def sign_up(http: httpx.AsyncClient, users: range) -> None:
    for i in users:
        response = await http.post(f"/signup/u{i}")
        assert response.status_code == 200


def pending_rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM events").fetchone()
    return int(count)


def results_of(deliveries: list[Delivery]) -> list[TrackResult]:
    assert all(delivery.done() for delivery in deliveries)  # every handle has its answer
    return [delivery._future.result() for delivery in deliveries]


def assert_sent_means_recorded(fake: FakeTaapit, results: list[TrackResult]) -> None:
    recorded = {event.idempotency_key for event in fake.leads}
    for result in results:
        assert result.success == (result.idempotency_key in recorded), result


async def test_shutdown_delivers_what_the_memory_queue_holds() -> None:
    fake = FakeTaapit()
    fake.latency = 0.02  # still queued when shutdown begins
    deliveries: list[Delivery] = []
    async with serving(shop(fake, deliveries, max_in_flight=2)) as http:
        await sign_up(http, range(20))
        assert not all(delivery.done() for delivery in deliveries)
    results = results_of(deliveries)
    assert all(result.success for result in results)
    assert len(fake.leads) == 20
    assert_sent_means_recorded(fake, results)


async def test_past_the_drain_deadline_the_rest_is_reported_not_sent() -> None:
    fake = FakeTaapit()
    fake.latency = 0.2
    deliveries: list[Delivery] = []
    app = shop(fake, deliveries, max_in_flight=1, drain_timeout=0.3)
    async with serving(app) as http:
        await sign_up(http, range(10))
    results = results_of(deliveries)
    codes = {result.error.code for result in results if result.error is not None}
    assert codes == {ErrorCode.SHUTDOWN}
    assert 0 < sum(result.success for result in results) < 10
    assert_sent_means_recorded(fake, results)


async def test_with_an_outbox_shutdown_leaves_the_rest_on_disk_for_the_next_start(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite3"
    down = FakeTaapit()
    down.set_fault_rates(error_rate=1.0)  # Taapit is down during this run
    deliveries: list[Delivery] = []
    app = shop(down, deliveries, outbox=path, drain_timeout=0.2, breaker_cooldown=60)
    async with serving(app) as http:
        await sign_up(http, range(15))
    results = results_of(deliveries)
    assert {result.error.code for result in results if result.error} == {ErrorCode.IN_OUTBOX}
    assert down.leads == []
    assert pending_rows(path) == 15

    # The next start resumes the file at startup, before any new event arrives.
    up = FakeTaapit()
    again: list[Delivery] = []
    async with serving(shop(up, again, outbox=path)):
        for _ in range(300):
            if len(up.leads) == 15:
                break
            await asyncio.sleep(0.01)
    assert sorted(event.idempotency_key or "" for event in up.leads) == sorted(
        f"signup-u{i}" for i in range(15)
    )
    assert pending_rows(path) == 0


async def test_a_bad_outbox_path_fails_the_app_at_startup(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    app = shop(FakeTaapit(), [], outbox=blocker / "outbox.sqlite3")
    failed = None
    try:
        async with LifespanManager(app):
            pass  # pragma: no cover - startup must fail
    except Exception as exc:
        failed = exc
    assert failed is not None
    assert "outbox" in str(failed)
