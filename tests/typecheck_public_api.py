"""Type-checked only (mypy --strict), never run: every public signature used as documented.

If a public signature changes by accident, mypy fails here before a user's code does.
"""

from __future__ import annotations

from decimal import Decimal
from typing import assert_type

import httpx

from taapit_async import (
    AsyncTaapit,
    Background,
    Customer,
    Delivery,
    DeliveryStats,
    TaapitError,
    Track,
    TrackResult,
)
from taapit_async.integrations.asgi import CookieOptions, TaapitMiddleware, current_tracker
from taapit_async.integrations.fastapi import TaapitClient, Tracker, taapit_lifespan
from taapit_async.integrations.starlette import get_client, get_tracker
from taapit_async.testing import FakeTaapit, FakeTaapitServer, RecordedEvent
from taapit_async.webhooks import (
    StripeSale,
    stripe_amount_to_units,
    stripe_checkout_sale,
    tracking_id_from,
    with_tracking_id,
)


async def client_calls() -> None:
    async with AsyncTaapit("taapit_sk_x", base_url="https://track.taap.it", timeout=5) as t:
        assert_type(t, AsyncTaapit)
        assert_type(t.track, Track)
        assert_type(t.background, Background)
        lead = await t.track.lead(
            tracking_id="t", customer=Customer(external_id="u"), metadata={"a": 1}
        )
        assert_type(lead, TrackResult)
        sale = await t.track.sale(
            customer={"external_id": "u"}, amount=Decimal("1.00"), currency="eur"
        )
        assert_type(sale.raise_for_error(), TrackResult)
        error = sale.error
        if error is not None:
            assert_type(error, TaapitError)
            assert_type(error.code, str)
            assert_type(error.status_code, int | None)
        delivery = await t.background.sale(
            customer={"external_id": "u"}, amount=10, currency="eur", idempotency_key="o1"
        )
        assert_type(delivery, Delivery)
        assert_type(await delivery.result(), TrackResult)
        assert_type(await t.flush(timeout=1.0), bool)
        assert_type(t.stats, DeliveryStats)
    AsyncTaapit(enabled=False, http_client=httpx.AsyncClient(), on_result=lambda d, r: None)


async def integration_calls() -> None:
    tracker = current_tracker()
    assert_type(tracker.tracking_id, str | None)
    assert_type(await tracker.lead(customer={"external_id": "u"}), TrackResult)
    assert_type(await tracker.background.lead(customer={"external_id": "u"}), Delivery)
    TaapitMiddleware(FakeTaapit(), cookie=CookieOptions(max_age=60), consent=lambda scope: True)
    _ = (Tracker, TaapitClient, taapit_lifespan(), get_client, get_tracker)


def testing_and_webhooks() -> None:
    fake = FakeTaapit(api_key="taapit_sk_test")
    fake.fail_next(2, status=503)
    events: list[RecordedEvent] = fake.events
    assert events == fake.leads + fake.sales
    with FakeTaapitServer(fake) as server:
        assert_type(server.url, str)
    assert_type(stripe_amount_to_units(2999, "eur"), Decimal)
    assert_type(with_tracking_id({"a": "b"}, "t"), dict[str, str])
    assert_type(tracking_id_from({"ta_tid": "t"}), str | None)
    assert_type(stripe_checkout_sale({}), StripeSale | None)
