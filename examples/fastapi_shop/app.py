"""The shop: landing page, sign-up (form and JSON), checkout, Stripe webhook, confirmation.

And ``/healthz``, with the Taapit client's delivery counters.

``create_app(settings)`` builds the app; ``uvicorn --factory fastapi_shop.app:create_app``
runs it with settings from the environment (see `ShopSettings.from_env`).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

import attrs
import httpx
from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel

from taapit_async import AsyncTaapit, OutboxError
from taapit_async.integrations.asgi import CLIENT_STATE_KEY
from taapit_async.integrations.fastapi import (
    RequestTracker,
    TaapitClient,
    TaapitMiddleware,
    Tracker,
)
from taapit_async.webhooks import (
    WebhookSignatureError,
    stripe_checkout_sale,
    verify_stripe_signature,
    with_tracking_id,
)

from . import pages
from .fake_stripe import FakeStripe, Stripe, TransportFactory
from .fake_stripe import router as fake_stripe_router

__all__ = ["Order", "Shop", "ShopSettings", "User", "create_app"]

PRICE_CENTS = 2900  # Stripe counts in the currency's minor unit: EUR 29.00
CURRENCY = "eur"
USER_COOKIE = "shop_user"
DEFAULT_OUTBOX = "fastapi-shop-outbox.sqlite3"
# A test secret, as `stripe listen` prints one: the real one comes from the environment.
DEFAULT_WEBHOOK_SECRET = "whsec_test_fastapi_shop"  # noqa: S105


@dataclass(frozen=True, kw_only=True)
class ShopSettings:
    """What the shop is configured with.

    Attributes:
        taapit_api_key: Taapit's secret key; None reads ``TAAPIT_API_KEY``.
        taapit_base_url: Taapit's API root; None reads ``TAAPIT_BASE_URL`` (else Taapit's).
        outbox_path: The SQLite file of the durable outbox.
        webhook_secret: The Stripe webhook's signing secret.
    """

    taapit_api_key: str | None = None
    taapit_base_url: str | None = None
    outbox_path: Path = Path(DEFAULT_OUTBOX)
    webhook_secret: str = DEFAULT_WEBHOOK_SECRET

    @classmethod
    def from_env(cls) -> ShopSettings:
        """Read ``SHOP_OUTBOX`` and ``STRIPE_WEBHOOK_SECRET`` (the client reads TAAPIT_*)."""
        return cls(
            outbox_path=Path(os.environ.get("SHOP_OUTBOX", DEFAULT_OUTBOX)),
            webhook_secret=os.environ.get("STRIPE_WEBHOOK_SECRET", DEFAULT_WEBHOOK_SECRET),
        )


@dataclass
class User:
    """A customer of the shop."""

    id: str
    email: str
    name: str
    signed_up_with: str


@dataclass
class Order:
    """One checkout, and what its payment webhook did."""

    id: str
    user_id: str
    amount_cents: int
    currency: str
    paid: bool = False
    sale_queued: bool = False


@dataclass
class Shop:
    """The shop's state: a real shop keeps it in its database."""

    settings: ShopSettings
    users: dict[str, User] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)

    def sign_up(self, email: str, name: str, signed_up_with: str) -> User:
        """Create a user; the e-mail address must look like one."""
        if "@" not in email.strip(" @"):
            raise HTTPException(422, "an e-mail address, please")
        user = User("user_" + secrets.token_hex(6), email, name or email, signed_up_with)
        self.users[user.id] = user
        return user

    def current_user(self, request: Request) -> User | None:
        """The signed-up visitor; a real shop reads its login session instead."""
        return self.users.get(request.cookies.get(USER_COOKIE, ""))


def get_shop(request: Request) -> Shop:
    """The app's `Shop` (a dependency)."""
    shop: Shop = request.app.state.shop
    return shop


ShopDep = Annotated[Shop, Depends(get_shop)]
router = APIRouter()


@router.get("/", response_class=HTMLResponse)
async def landing(tracker: Tracker) -> str:
    """The page a Taapit deeplink opens; the middleware has set the ta_tid cookie."""
    return pages.landing(tracker.tracking_id)


async def _track_signup(tracker: RequestTracker, user: User) -> None:
    # Queued in the outbox, not awaited: the visitor never waits for Taapit. Without a
    # tracking id (a visitor who came another way) nothing is sent.
    await tracker.background.lead(
        customer={"external_id": user.id, "email": user.email},
        metadata={"signedUpWith": user.signed_up_with},
    )


def _signed_in(response: Response, user: User) -> None:
    response.set_cookie(USER_COOKIE, user.id, httponly=True, samesite="lax")


@router.post("/signup")
async def signup_form(
    email: Annotated[str, Form()],
    tracker: Tracker,
    shop: ShopDep,
    name: Annotated[str, Form()] = "",
) -> RedirectResponse:
    """Sign-up by plain HTML form: the ta_tid cookie carries the tracking id."""
    user = shop.sign_up(email, name, "HTML form")
    await _track_signup(tracker, user)
    response = RedirectResponse("/welcome", status_code=303)
    _signed_in(response, user)
    return response


class SignupRequest(BaseModel):
    """The JSON sign-up."""

    email: str
    name: str = ""
    # Read by TaapitMiddleware when there is no cookie; declared here to document it.
    trackingId: str | None = None


class SignupReply(BaseModel):
    """What the JSON sign-up answers."""

    user_id: str
    tracking_id: str | None
    source: Literal["cookie", "body", "query"] | None
    next: str


@router.post("/api/signup")
async def signup_api(
    body: SignupRequest, tracker: Tracker, shop: ShopDep, response: Response
) -> SignupReply:
    """Sign-up by JSON, as the landing page's script sends it."""
    user = shop.sign_up(body.email, body.name, "JSON API")
    await _track_signup(tracker, user)
    _signed_in(response, user)
    return SignupReply(
        user_id=user.id, tracking_id=tracker.tracking_id, source=tracker.source, next="/welcome"
    )


@router.get("/welcome", response_class=HTMLResponse, response_model=None)
async def welcome(request: Request, shop: ShopDep) -> str | RedirectResponse:
    """The product, with its checkout button."""
    user = shop.current_user(request)
    if user is None:
        return RedirectResponse("/", status_code=303)
    price = pages.money(PRICE_CENTS, CURRENCY)
    return pages.welcome(name=user.name, via=user.signed_up_with, price=price)


@router.post("/checkout")
async def checkout(
    request: Request, tracker: Tracker, shop: ShopDep, stripe: Stripe
) -> RedirectResponse:
    """Create the order and its Checkout Session, then send the visitor to pay."""
    user = shop.current_user(request)
    if user is None:
        return RedirectResponse("/", status_code=303)
    order = Order("ord_" + secrets.token_hex(6), user.id, PRICE_CENTS, CURRENCY)
    shop.orders[order.id] = order
    # With real Stripe: stripe.checkout.Session.create(...), then redirect to session.url.
    session = stripe.create_checkout_session(
        amount_total=order.amount_cents,
        currency=order.currency,
        client_reference_id=user.id,  # comes back as the sale's customer external_id
        customer_email=user.email,
        # The visitor's ta_tid rides along in the payment: the webhook has no cookie.
        metadata=with_tracking_id({"order_id": order.id}, tracker.tracking_id),
        success_url=str(request.url_for("confirmation", order_id=order.id)),
    )
    page = request.url_for("fake_stripe_checkout", session_id=session["id"])
    return RedirectResponse(str(page), status_code=303)


@router.post("/webhooks/stripe", name="stripe_webhook")
async def stripe_webhook(request: Request, taapit: TaapitClient, shop: ShopDep) -> Response:
    """Stripe's webhook: verify the event, then report the sale to Taapit once."""
    body = await request.body()  # the raw bytes: re-encoded JSON would fail the signature
    try:
        signature = request.headers.get("stripe-signature")
        verify_stripe_signature(body, signature, shop.settings.webhook_secret)
    except WebhookSignatureError:
        return Response(status_code=400)  # not from Stripe, or replayed: ignore the body
    event: dict[str, Any] = json.loads(body)
    if event.get("type") != "checkout.session.completed":
        return Response(status_code=200)  # acknowledged; this shop needs no other event
    sale = stripe_checkout_sale(event)  # None when the session is not paid yet
    metadata = event["data"]["object"].get("metadata") or {}
    order = shop.orders.get(metadata.get("order_id", ""))
    if sale is None or sale.external_id is None or order is None:
        return Response(status_code=200)
    order.paid = True
    delivery = await taapit.background.sale(
        tracking_id=sale.tracking_id,  # from the session's metadata
        customer={"external_id": sale.external_id, "email": sale.email},
        amount=sale.amount,  # Decimal("29.00"): currency units, from Stripe's cents
        currency=sale.currency,
        metadata={"orderId": order.id},
        idempotency_key=order.id,  # a redelivered event is not a second sale
    )
    if delivery.done() and isinstance((await delivery.result()).error, OutboxError):
        # The sale is not on disk: a 5xx makes Stripe deliver the event again later.
        return Response(status_code=503)
    order.sale_queued = True
    return Response(status_code=200)


@router.get("/orders/{order_id}", name="confirmation", response_class=HTMLResponse)
async def confirmation(order_id: str, shop: ShopDep) -> str:
    """The page Stripe sends the visitor back to."""
    order = shop.orders.get(order_id)
    if order is None:
        raise HTTPException(404, "no such order")
    return pages.confirmation(
        order_id=order.id,
        price=pages.money(order.amount_cents, order.currency),
        paid=order.paid,
        sale_queued=order.sale_queued,
    )


@router.get("/healthz")
async def healthz(taapit: TaapitClient) -> dict[str, Any]:
    """Liveness, with the Taapit client's delivery counters.

    ``in_queue`` counts this process's background events not yet delivered or given up:
    an outbox that backs up (Taapit down, say) shows here. The demo waits on it.
    """
    return {"status": "ok", "taapit": attrs.asdict(taapit.stats)}


def create_app(
    settings: ShopSettings | None = None,
    *,
    http_client: httpx.AsyncClient | None = None,
    webhook_transport: TransportFactory | None = None,
) -> FastAPI:
    """Build the shop.

    Args:
        settings: The configuration; `ShopSettings.from_env` when None.
        http_client: The httpx client Taapit events go out with (tests route it to a
            fake); the client builds its own when None.
        webhook_transport: How the stand-in Stripe reaches the webhook: the network when
            None; tests route it in-process.

    Returns:
        The FastAPI app.
    """
    settings = settings if settings is not None else ShopSettings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        # One client for the app, with the durable outbox: a queued event is on disk before
        # the call returns. `async with` starts the outbox at once, so events a crash left
        # in the file go out at startup. The middleware and TaapitClient find it here.
        async with AsyncTaapit(
            settings.taapit_api_key,
            base_url=settings.taapit_base_url,
            outbox=settings.outbox_path,
            http_client=http_client,
        ) as taapit:
            yield {CLIENT_STATE_KEY: taapit}

    app = FastAPI(title="Taapit Shop", lifespan=lifespan)
    app.add_middleware(TaapitMiddleware)  # sets the first-party ta_tid cookie on clicks
    app.state.shop = Shop(settings)
    app.state.stripe = FakeStripe(settings.webhook_secret, transport=webhook_transport)
    app.include_router(router)
    app.include_router(fake_stripe_router)
    return app
