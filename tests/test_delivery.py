"""Background delivery: queued at once, delivered by the client's workers, never lost silently."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from taapit_async import (
    AsyncTaapit,
    ClientClosedError,
    ConfigurationError,
    Delivery,
    DeliveryStats,
    ErrorCode,
    TrackResult,
    ValidationError,
)
from taapit_async.testing import FakeTaapit

from ._support import fake_client

TID = "rLnWe1uz9t282v7g"


def client_for(fake: FakeTaapit, **options: Any) -> AsyncTaapit:
    options.setdefault("backoff_base", 0)
    return fake_client(fake, **options)


async def test_a_background_lead_is_queued_then_delivered() -> None:
    fake = FakeTaapit()
    async with client_for(fake) as taapit:
        delivery = await taapit.background.lead(
            tracking_id=TID, customer={"external_id": "u1"}, idempotency_key="signup-1"
        )
        assert isinstance(delivery, Delivery)
        assert delivery.kind == "lead"
        assert delivery.idempotency_key == "signup-1"
        result = await delivery.result()
    assert delivery.done()
    assert result.success
    assert [e.idempotency_key for e in fake.leads] == ["signup-1"]


async def test_the_call_returns_before_the_event_is_sent() -> None:
    fake = FakeTaapit()
    fake.delay_next(1, seconds=0.2)
    async with client_for(fake) as taapit:
        delivery = await taapit.background.sale(
            tracking_id=TID, customer={"external_id": "u1"}, amount=5, currency="eur"
        )
        assert not delivery.done()
        assert fake.sales == []
        assert (await delivery.result()).success
    assert len(fake.sales) == 1


async def test_background_events_are_retried_with_their_own_budget() -> None:
    fake = FakeTaapit()
    fake.fail_next(4, status=503)
    async with client_for(fake, max_retries=0, background_max_retries=5) as taapit:
        delivery = await taapit.background.lead(tracking_id=TID, customer={"external_id": "u"})
        result = await delivery.result()
    assert result.success
    assert result.attempts == 5
    assert len(fake.leads) == 1


async def test_flush_waits_for_everything_queued() -> None:
    fake = FakeTaapit()
    async with client_for(fake) as taapit:
        deliveries = [
            await taapit.background.lead(tracking_id=TID, customer={"external_id": f"u{i}"})
            for i in range(50)
        ]
        assert await taapit.flush(timeout=10)
        assert all(d.done() for d in deliveries)
        assert len(fake.leads) == 50
        assert taapit.stats == DeliveryStats(queued=50, sent=50, in_queue=0)


async def test_flush_with_nothing_queued_returns_at_once() -> None:
    async with client_for(FakeTaapit()) as taapit:
        assert await taapit.flush(timeout=0)


async def test_flush_reports_a_timeout() -> None:
    fake = FakeTaapit()
    fake.delay_next(1, seconds=1)
    async with client_for(fake) as taapit:
        await taapit.background.lead(tracking_id=TID, customer={"external_id": "u"})
        assert not await taapit.flush(timeout=0.01)
        assert taapit.stats.in_queue == 1


async def test_a_full_queue_fails_the_event_loudly_and_counts_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeTaapit()
    fake.delay_next(10, seconds=0.05)
    async with client_for(fake, max_queue=2, max_in_flight=1) as taapit:
        deliveries = [
            await taapit.background.lead(tracking_id=TID, customer={"external_id": f"u{i}"})
            for i in range(5)
        ]
        # The first is taken by the worker only when it runs; the queue holds two more.
        refused = [d for d in deliveries if d.done()]
        assert refused
        for delivery in refused:
            result = await delivery.result()
            assert result.error is not None
            assert result.error.code == ErrorCode.QUEUE_FULL
        await taapit.flush()
        stats = taapit.stats
    assert stats.dropped == len(refused)
    assert stats.queued + stats.dropped == 5
    assert len(fake.leads) == stats.queued
    assert "dropped: queue_full" in caplog.text


async def test_close_drains_the_queue_before_closing() -> None:
    fake = FakeTaapit()
    taapit = client_for(fake)
    deliveries = [
        await taapit.background.lead(tracking_id=TID, customer={"external_id": f"u{i}"})
        for i in range(20)
    ]
    await taapit.aclose()
    assert all([(await d.result()).success for d in deliveries])
    assert len(fake.leads) == 20


async def test_events_left_after_the_drain_deadline_fail_as_shutdown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake = FakeTaapit()
    fake.delay_next(5, seconds=5)
    taapit = client_for(fake, drain_timeout=0.05, max_in_flight=2)
    deliveries = [
        await taapit.background.lead(tracking_id=TID, customer={"external_id": f"u{i}"})
        for i in range(5)
    ]
    await taapit.aclose()
    results = [await d.result() for d in deliveries]
    assert all(r.error is not None and r.error.code == ErrorCode.SHUTDOWN for r in results)
    assert taapit.stats.dropped == 5
    assert "5 background event(s) not delivered" in caplog.text
    assert fake.leads == []  # none was both lost and reported sent


async def test_on_result_sees_every_outcome_and_its_errors_are_contained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[tuple[str, bool]] = []

    def hook(delivery: Delivery, result: TrackResult) -> None:
        seen.append((delivery.idempotency_key, result.success))
        raise RuntimeError("a bug in the hook")

    fake = FakeTaapit()
    fake.fail_next(1, status=400)
    async with client_for(fake, on_result=hook) as taapit:
        await taapit.background.lead(
            tracking_id=TID, customer={"external_id": "u"}, idempotency_key="a"
        )
        await taapit.background.lead(
            tracking_id=TID, customer={"external_id": "u"}, idempotency_key="b"
        )
        await taapit.flush()
    assert sorted(seen) == [("a", False), ("b", True)]
    assert "the on_result hook raised" in caplog.text


async def test_bad_input_raises_at_the_call_and_queues_nothing() -> None:
    async with client_for(FakeTaapit()) as taapit:
        with pytest.raises(ValidationError, match="amount"):
            await taapit.background.sale(customer={"external_id": "u"}, amount=-1, currency="eur")
        assert taapit.stats.queued == 0


async def test_disabled_mode_gives_a_done_handle_that_says_disabled() -> None:
    async with AsyncTaapit(enabled=False) as taapit:
        delivery = await taapit.background.lead(tracking_id=TID, customer={"external_id": "u"})
        assert delivery.done()
        result = await delivery.result()
    assert result.error is not None
    assert result.error.code == ErrorCode.DISABLED


async def test_a_background_call_after_close_raises() -> None:
    taapit = client_for(FakeTaapit())
    await taapit.aclose()
    with pytest.raises(ClientClosedError):
        await taapit.background.lead(tracking_id=TID, customer={"external_id": "u"})


async def test_cancelling_a_wait_for_the_result_does_not_cancel_the_delivery() -> None:
    fake = FakeTaapit()
    fake.delay_next(1, seconds=0.05)
    async with client_for(fake) as taapit:
        delivery = await taapit.background.lead(tracking_id=TID, customer={"external_id": "u"})
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.001):
                await delivery.result()
        assert (await delivery.result()).success
    assert len(fake.leads) == 1


async def test_stats_count_awaited_calls_too() -> None:
    fake = FakeTaapit()
    fake.fail_next(1, status=503)
    async with client_for(fake) as taapit:
        await taapit.track.lead(tracking_id=TID, customer={"external_id": "u"})
        fake.fail_next(1, status=401)
        await taapit.track.lead(tracking_id=TID, customer={"external_id": "u"})
        assert taapit.stats == DeliveryStats(sent=1, retried=1, failed=1)
    assert "pending" not in repr(taapit)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_queue": 0}, "max_queue must be an int >= 1"),
        ({"drain_timeout": -1}, "drain_timeout must be a finite number"),
        ({"background_deadline": 0}, "deadline must be"),
        ({"background_max_retries": -1}, "max_retries must be"),
    ],
)
def test_bad_background_options_are_configuration_errors(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        AsyncTaapit("taapit_sk_x", **options)


async def test_a_delivery_repr_shows_its_state() -> None:
    async with AsyncTaapit(enabled=False) as taapit:
        delivery = await taapit.background.lead(
            tracking_id=TID, customer={"external_id": "u"}, idempotency_key="k1"
        )
    assert repr(delivery) == "<Delivery lead 'k1' done>"
