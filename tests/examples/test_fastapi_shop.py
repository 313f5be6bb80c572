"""examples/fastapi_shop: the whole journey in-process, and once through real uvicorn."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi_shop import ShopSettings, create_app
from fastapi_shop.fake_stripe import FakeStripe

from taapit_async.testing import FakeTaapit
from taapit_async.webhooks import sign_stripe_payload

from ._support import TID, eventually, shop_and_taapit

SECRET = "whsec_test_for_the_tests"


@contextlib.asynccontextmanager
async def shop(
    fake: FakeTaapit, outbox: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, FakeStripe]]:
    """The shop in-process, talking to ``fake``: a cookie-keeping "browser", and "Stripe"."""
    settings = ShopSettings(
        taapit_api_key=fake.api_key,
        taapit_base_url="http://taapit.localhost",
        outbox_path=outbox,
        webhook_secret=SECRET,
    )
    async with httpx.AsyncClient(transport=fake.transport()) as to_taapit:
        # The stand-in Stripe posts its webhook into the app in-process, through the
        # lifespan manager so that the request sees the app's state, as under a server.
        app = create_app(
            settings,
            http_client=to_taapit,
            webhook_transport=lambda: httpx.ASGITransport(app=manager.app),
        )
        manager = LifespanManager(app)
        async with (
            manager,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=manager.app),
                base_url="http://shop.test",
                follow_redirects=True,
            ) as browser,
        ):
            yield browser, app.state.stripe


async def buy(browser: httpx.AsyncClient) -> httpx.Response:
    """Check out and pay on the stand-in provider's page; return the confirmation page."""
    provider_page = await browser.post("/checkout")
    assert "Stripe Checkout" in provider_page.text
    return await browser.post(provider_page.url.path)


async def test_a_deeplink_visitor_who_signs_up_by_form_and_pays_is_attributed_twice(
    taapit_fake: FakeTaapit, tmp_path: Path
) -> None:
    async with shop(taapit_fake, tmp_path / "outbox.sqlite3") as (browser, _):
        landing = await browser.get(f"/?ta_tid={TID}")
        assert browser.cookies["ta_tid"] == TID
        assert f"ta_tid={TID}" in landing.text
        welcome = await browser.post("/signup", data={"email": "ada@example.com", "name": "Ada"})
        assert "Welcome, Ada!" in welcome.text
        assert "Signed up with the HTML form" in welcome.text
        confirmation = await buy(browser)
        assert "Payment confirmed by Stripe&#x27;s webhook." in confirmation.text
        assert "reported to Taapit (queued in the outbox)" in confirmation.text
        await eventually(lambda: len(taapit_fake.events) == 2, "a lead and a sale")

    lead, sale = taapit_fake.events
    order_id = confirmation.url.path.rpartition("/")[2]
    assert (lead.kind, lead.tracking_id, lead.customer.email) == ("lead", TID, "ada@example.com")
    assert lead.metadata == {"signedUpWith": "HTML form"}
    assert (sale.kind, sale.tracking_id) == ("sale", TID)
    assert sale.customer.external_id == lead.customer.external_id
    assert (sale.amount, sale.currency) == (Decimal("29.00"), "eur")  # 2900 cents at Stripe
    assert sale.idempotency_key == order_id
    assert sale.metadata == {"orderId": order_id}


async def test_the_json_signup_takes_the_id_from_the_body_when_there_is_no_cookie(
    taapit_fake: FakeTaapit, tmp_path: Path
) -> None:
    async with shop(taapit_fake, tmp_path / "outbox.sqlite3") as (browser, _):
        reply = await browser.post(
            "/api/signup", json={"email": "bo@example.com", "trackingId": TID}
        )
        assert "shop_user" in browser.cookies
        await eventually(lambda: len(taapit_fake.leads) == 1, "the lead")
    answer = reply.json()
    assert answer == {
        "user_id": answer["user_id"],
        "tracking_id": TID,
        "source": "body",
        "next": "/welcome",
    }
    assert taapit_fake.leads[0].customer.external_id == answer["user_id"]
    assert taapit_fake.leads[0].metadata == {"signedUpWith": "JSON API"}


async def test_a_visitor_without_a_tracking_id_is_not_attributed(
    taapit_fake: FakeTaapit, tmp_path: Path
) -> None:
    async with shop(taapit_fake, tmp_path / "outbox.sqlite3") as (browser, _):
        landing = await browser.get("/")
        assert "will not be attributed" in landing.text
        await browser.post("/signup", data={"email": "cy@example.com"})
        confirmation = await buy(browser)
        assert "Payment confirmed" in confirmation.text
        # The sale goes out without trackingId, for a customer no lead made known: refused.
        await eventually(lambda: len(taapit_fake.requests) == 1, "the sale's one attempt")
    assert [(r.path, r.status) for r in taapit_fake.requests] == [("/api/events/sale", 400)]
    assert taapit_fake.events == []


async def test_a_redelivered_webhook_counts_one_sale(
    taapit_fake: FakeTaapit, tmp_path: Path
) -> None:
    async with shop(taapit_fake, tmp_path / "outbox.sqlite3") as (browser, stripe):
        await browser.get(f"/?ta_tid={TID}")
        await browser.post("/signup", data={"email": "di@example.com"})
        await buy(browser)
        await eventually(lambda: len(taapit_fake.sales) == 1, "the sale")
        # Stripe delivers the same event again (it does, after a timeout or an error).
        (paid,) = stripe.sessions.values()
        event = {"type": "checkout.session.completed", "data": {"object": paid}}
        body = json.dumps(event).encode()
        again = await browser.post(
            "/webhooks/stripe",
            content=body,
            headers={"stripe-signature": sign_stripe_payload(body, SECRET)},
        )
        assert again.status_code == 200
        order_id = taapit_fake.sales[0].idempotency_key
        assert order_id is not None
        await eventually(lambda: taapit_fake.attempts(order_id) == 2, "the second delivery")
    assert len(taapit_fake.sales) == 1
    assert [r.replayed for r in taapit_fake.requests if r.path.endswith("sale")] == [False, True]


@pytest.mark.parametrize(
    "signature",
    [None, "t=1,v1=00", "made-up"],
    ids=["missing", "wrong", "malformed"],
)
async def test_a_webhook_without_a_valid_signature_is_refused_and_tracks_nothing(
    taapit_fake: FakeTaapit, tmp_path: Path, signature: str | None
) -> None:
    event = {"type": "checkout.session.completed", "data": {"object": {}}}
    headers = {} if signature is None else {"stripe-signature": signature}
    async with shop(taapit_fake, tmp_path / "outbox.sqlite3") as (browser, _):
        reply = await browser.post("/webhooks/stripe", json=event, headers=headers)
    assert reply.status_code == 400
    assert taapit_fake.requests == []


async def test_checkout_before_signing_up_leads_back_to_the_landing_page(
    taapit_fake: FakeTaapit, tmp_path: Path
) -> None:
    async with shop(taapit_fake, tmp_path / "outbox.sqlite3") as (browser, _):
        page = await browser.post("/checkout")
    assert page.url.path == "/"
    assert "Sign up" in page.text


async def test_an_address_without_an_at_sign_is_refused(
    taapit_fake: FakeTaapit, tmp_path: Path
) -> None:
    async with shop(taapit_fake, tmp_path / "outbox.sqlite3") as (browser, _):
        reply = await browser.post("/api/signup", json={"email": "nobody", "trackingId": TID})
    assert reply.status_code == 422
    assert taapit_fake.requests == []


def test_the_stand_in_stripe_keeps_stripe_shaped_sessions() -> None:
    stripe = FakeStripe(SECRET)
    session = stripe.create_checkout_session(
        amount_total=2900,
        currency="eur",
        client_reference_id="user_1",
        customer_email="e@example.com",
        metadata={"order_id": "ord_1", "ta_tid": TID},
        success_url="http://shop.test/orders/ord_1",
    )
    assert str(session["id"]).startswith("cs_test_")
    assert (session["object"], session["payment_status"]) == ("checkout.session", "unpaid")
    assert stripe.session(str(session["id"])) is session


@pytest.mark.server
async def test_the_shop_under_uvicorn_attributes_the_journey_to_the_deeplink(
    tmp_path: Path,
) -> None:
    """Both servers real: the webhook arrives over TCP, cookies travel as a browser's do."""
    with shop_and_taapit(tmp_path / "outbox.sqlite3", webhook_secret=SECRET) as (url, taapit):
        async with httpx.AsyncClient(base_url=url, follow_redirects=True) as browser:
            await browser.get(f"/?ta_tid={TID}")
            await browser.post("/signup", data={"email": "ed@example.com"})
            confirmation = await buy(browser)
            assert "Payment confirmed" in confirmation.text
            await eventually(lambda: len(taapit.fake.events) == 2, "a lead and a sale")
    assert [(e.kind, e.tracking_id) for e in taapit.fake.events] == [("lead", TID), ("sale", TID)]
    assert taapit.fake.sales[0].amount == Decimal("29.00")
