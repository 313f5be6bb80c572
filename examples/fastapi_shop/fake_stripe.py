"""A stand-in for Stripe Checkout, served by the shop itself: no account, no network.

With real Stripe, the shop creates a Checkout Session (``stripe.checkout.Session.create``)
and redirects the visitor to ``session.url``; once they paid, Stripe POSTs a signed
``checkout.session.completed`` event to the webhook endpoint registered in its dashboard
and sends the visitor to the session's ``success_url``. `FakeStripe` plays that part:
`FakeStripe.create_checkout_session` keeps a Stripe-shaped session, the page at
``/fake-stripe/checkout/{id}`` takes the "payment", and paying signs the event with
``sign_stripe_payload`` and posts it over HTTP to the shop's own webhook.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from taapit_async.webhooks import sign_stripe_payload

from . import pages

__all__ = ["FakeStripe", "router"]

logger = logging.getLogger(__name__)

TransportFactory = Callable[[], httpx.AsyncBaseTransport]


class FakeStripe:
    """Stripe Checkout's part of the journey, in test mode, inside the shop.

    Args:
        webhook_secret: The signing secret the webhook verifies with (``whsec_...``).
        webhook_route: The name of the shop's webhook route: the endpoint one registers
            in Stripe's dashboard.
        transport: Builds the transport events are posted with; None for the network, to
            the app's own URL. Tests pass one that calls the app in-process.
    """

    def __init__(
        self,
        webhook_secret: str,
        *,
        webhook_route: str = "stripe_webhook",
        transport: TransportFactory | None = None,
    ) -> None:
        self.webhook_secret = webhook_secret
        self.webhook_route = webhook_route
        self._transport = transport
        self.sessions: dict[str, dict[str, Any]] = {}

    def create_checkout_session(
        self,
        *,
        amount_total: int,
        currency: str,
        client_reference_id: str,
        customer_email: str,
        metadata: dict[str, str],
        success_url: str,
    ) -> dict[str, Any]:
        """Create a Checkout Session, shaped as ``stripe.checkout.Session.create`` returns it."""
        session_id = "cs_test_" + secrets.token_hex(12)
        self.sessions[session_id] = {
            "id": session_id,
            "object": "checkout.session",
            "mode": "payment",
            "status": "open",
            "payment_status": "unpaid",
            "amount_total": amount_total,  # in cents: Stripe counts in the minor unit
            "currency": currency,
            "client_reference_id": client_reference_id,
            "customer_email": customer_email,
            "metadata": metadata,
            "success_url": success_url,
        }
        return self.sessions[session_id]

    def session(self, session_id: str) -> dict[str, Any]:
        """Return a session by id.

        Raises:
            HTTPException: 404 for an unknown id.
        """
        session = self.sessions.get(session_id)
        if session is None:
            raise HTTPException(404, "no such checkout session")
        return session

    async def pay(self, session_id: str, webhook_url: str) -> dict[str, Any]:
        """Mark the session paid and post its signed event to the webhook, as Stripe does.

        Real Stripe redirects the visitor without waiting for the webhook; this stand-in
        waits, so that the confirmation page always knows the outcome.
        """
        session = self.session(session_id)
        if session["payment_status"] == "paid":
            return session  # paid already: a reloaded page does not pay twice
        session.update(status="complete", payment_status="paid")
        event = {
            "id": "evt_" + secrets.token_hex(12),
            "object": "event",
            "type": "checkout.session.completed",
            "created": int(time.time()),
            "data": {"object": session},
        }
        body = json.dumps(event).encode()
        headers = {
            "Content-Type": "application/json",
            "Stripe-Signature": sign_stripe_payload(body, self.webhook_secret),
        }
        transport = self._transport() if self._transport is not None else None
        async with httpx.AsyncClient(transport=transport, timeout=10) as http:
            try:
                reply = await http.post(webhook_url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                logger.warning("fake Stripe: the webhook could not be reached: %r", exc)
                return session
        if reply.is_error:
            logger.warning("fake Stripe: the webhook answered %d", reply.status_code)
        return session


def get_stripe(request: Request) -> FakeStripe:
    """The app's `FakeStripe` (a dependency)."""
    stripe: FakeStripe = request.app.state.stripe
    return stripe


Stripe = Annotated[FakeStripe, Depends(get_stripe)]

router = APIRouter(prefix="/fake-stripe")


@router.get("/checkout/{session_id}", name="fake_stripe_checkout", response_class=HTMLResponse)
async def checkout_page(session_id: str, request: Request, stripe: Stripe) -> str:
    """Stripe's hosted checkout page, where the visitor pays."""
    session = stripe.session(session_id)
    return pages.provider_checkout(
        session_id=session_id,
        email=session["customer_email"],
        price=pages.money(session["amount_total"], session["currency"]),
        pay_url=request.url.path,
    )


@router.post("/checkout/{session_id}", name="fake_stripe_pay")
async def pay(session_id: str, request: Request, stripe: Stripe) -> RedirectResponse:
    """The visitor paid: Stripe calls the webhook, then sends them to the success URL."""
    session = await stripe.pay(session_id, str(request.url_for(stripe.webhook_route)))
    return RedirectResponse(session["success_url"], status_code=303)
