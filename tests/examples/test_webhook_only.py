"""examples/webhook_only.py: a bare Stripe webhook handler with the client, no middleware."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import pytest
import webhook_only
from asgi_lifespan import LifespanManager
from starlette.applications import Starlette

from taapit_async import AsyncTaapit, ConfigurationError
from taapit_async.testing import FakeTaapit
from taapit_async.webhooks import sign_stripe_payload

from ._support import TID

SECRET = "whsec_test_webhook_only"


def checkout_event(
    *, payment_status: str = "paid", event_type: str = "checkout.session.completed", **session: Any
) -> bytes:
    """A Stripe Checkout event, as its webhook body."""
    body = {
        "id": "cs_test_1",
        "object": "checkout.session",
        "payment_status": payment_status,
        "amount_total": 4900,
        "currency": "eur",
        "client_reference_id": "user_1",
        "customer_details": {"email": "ada@example.com"},
        "metadata": {"ta_tid": TID},
        **session,
    }
    return json.dumps({"type": event_type, "data": {"object": body}}).encode()


async def handle(body: bytes, taapit: AsyncTaapit, signature: str | None = "sign") -> int:
    header = sign_stripe_payload(body, SECRET) if signature == "sign" else signature
    return await webhook_only.handle_stripe_event(body, header, taapit=taapit, secret=SECRET)


async def test_a_paid_checkout_is_tracked_once_in_currency_units(
    taapit_fake: FakeTaapit, taapit_client: AsyncTaapit
) -> None:
    body = checkout_event()
    assert await handle(body, taapit_client) == 200
    assert await handle(body, taapit_client) == 200  # Stripe redelivers: still one sale
    (sale,) = taapit_fake.sales
    assert (sale.tracking_id, sale.customer.external_id) == (TID, "user_1")
    assert (sale.amount, sale.currency) == (Decimal("49.00"), "eur")
    assert sale.idempotency_key == "cs_test_1"
    assert taapit_fake.attempts("cs_test_1") == 2


async def test_the_customer_id_may_come_from_the_metadata(
    taapit_fake: FakeTaapit, taapit_client: AsyncTaapit
) -> None:
    body = checkout_event(client_reference_id=None, metadata={"ta_tid": TID, "user_id": "u_9"})
    assert await handle(body, taapit_client) == 200
    assert [sale.customer.external_id for sale in taapit_fake.sales] == ["u_9"]


@pytest.mark.parametrize("signature", [None, "t=1,v1=00"], ids=["missing", "wrong"])
async def test_an_unsigned_or_missigned_event_is_refused(
    taapit_fake: FakeTaapit, taapit_client: AsyncTaapit, signature: str | None
) -> None:
    assert await handle(checkout_event(), taapit_client, signature) == 400
    assert taapit_fake.requests == []


@pytest.mark.parametrize(
    "body",
    [
        checkout_event(payment_status="unpaid"),
        checkout_event(event_type="invoice.paid"),
        checkout_event(client_reference_id=None),
    ],
    ids=["unpaid", "another-event", "no-customer-id"],
)
async def test_events_that_are_not_trackable_sales_are_acknowledged_without_tracking(
    taapit_fake: FakeTaapit, taapit_client: AsyncTaapit, body: bytes
) -> None:
    assert await handle(body, taapit_client) == 200
    assert taapit_fake.requests == []


async def test_taapit_being_down_answers_503_so_stripe_delivers_again(
    taapit_fake: FakeTaapit, taapit_client: AsyncTaapit
) -> None:
    taapit_fake.fail_next(3, status=503)  # the first try and both retries
    assert await handle(checkout_event(), taapit_client) == 503
    assert taapit_fake.sales == []
    assert await handle(checkout_event(), taapit_client) == 200  # the redelivery
    assert len(taapit_fake.sales) == 1


async def test_a_sale_taapit_refuses_is_acknowledged_and_logged(
    taapit_fake: FakeTaapit, taapit_client: AsyncTaapit, caplog: pytest.LogCaptureFixture
) -> None:
    """No ta_tid and no earlier lead: Taapit refuses, and a redelivery would not help."""
    assert await handle(checkout_event(metadata={}), taapit_client) == 200
    assert [r.status for r in taapit_fake.requests] == [400]
    assert "sale cs_test_1 not tracked" in caplog.text


async def deliver(app: Starlette, body: bytes, *signed: bool) -> list[int]:
    """Start the app, post ``body`` once per flag (signed or not); return the statuses."""
    async with (
        LifespanManager(app) as manager,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://hooks.test"
        ) as stripe,
    ):
        replies = [
            await stripe.post(
                "/webhooks/stripe",
                content=body,
                headers={"stripe-signature": sign_stripe_payload(body, SECRET)} if sign else {},
            )
            for sign in signed
        ]
    return [reply.status_code for reply in replies]


async def test_the_app_routes_stripe_events_to_the_handler(
    taapit_fake: FakeTaapit, taapit_client: AsyncTaapit
) -> None:
    app = webhook_only.create_app(secret=SECRET, client=taapit_client)
    assert await deliver(app, checkout_event(), True, False) == [200, 400]
    assert len(taapit_fake.sales) == 1


async def test_the_app_does_not_start_without_a_signing_secret(
    taapit_client: AsyncTaapit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("STRIPE_WEBHOOK_SECRET", raising=False)
    app = webhook_only.create_app(client=taapit_client)
    with pytest.raises(ConfigurationError, match="STRIPE_WEBHOOK_SECRET"):
        await deliver(app, checkout_event())


async def test_the_app_reads_the_secret_from_the_environment(
    taapit_fake: FakeTaapit, taapit_client: AsyncTaapit, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", SECRET)
    app = webhook_only.create_app(client=taapit_client)
    assert await deliver(app, checkout_event(), True) == [200]
    assert len(taapit_fake.sales) == 1
