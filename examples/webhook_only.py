"""A Stripe webhook endpoint that reports sales to Taapit: no middleware, no cookies.

The visitor's ``ta_tid`` reached Stripe inside the Checkout Session's metadata (put there
at checkout with ``with_tracking_id``) and comes back in the event. `handle_stripe_event`
needs no web framework: call it from any handler with the raw body and the
``Stripe-Signature`` header, and answer with the status it returns. `create_app` wraps it
in one Starlette route.

The call is awaited on purpose: when Taapit cannot be reached, the endpoint answers 503
and Stripe delivers the event again later (for up to three days); the session id as the
idempotency key makes the repeat count once.

Run it (``STRIPE_WEBHOOK_SECRET`` is the ``whsec_...`` of ``stripe listen`` or your
dashboard)::

    STRIPE_WEBHOOK_SECRET=whsec_... TAAPIT_API_KEY=taapit_sk_... \\
        uvicorn --app-dir examples webhook_only:app --port 8000
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from taapit_async import AsyncTaapit, ConfigurationError
from taapit_async.integrations.starlette import get_client, taapit_lifespan
from taapit_async.webhooks import (
    WebhookSignatureError,
    stripe_checkout_sale,
    verify_stripe_signature,
)

__all__ = ["app", "create_app", "handle_stripe_event"]

logger = logging.getLogger(__name__)

SALE_EVENTS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})


async def handle_stripe_event(
    payload: bytes, signature: str | None, *, taapit: AsyncTaapit, secret: str
) -> int:
    """Verify a Stripe event, report its sale to Taapit, and return the HTTP status to answer.

    Args:
        payload: The request's raw body, unparsed.
        signature: Its ``Stripe-Signature`` header, or None.
        taapit: The app's client.
        secret: The endpoint's signing secret.

    Returns:
        400 for a bad signature, 503 when Taapit could not be reached (Stripe will retry),
        else 200.
    """
    try:
        verify_stripe_signature(payload, signature, secret)
    except WebhookSignatureError:
        return 400  # not from Stripe, or a replay: act on nothing
    event = json.loads(payload)
    if event.get("type") not in SALE_EVENTS:
        return 200  # other events are acknowledged, so Stripe stops sending them
    # The customer id: client_reference_id, else the session metadata's "user_id".
    sale = stripe_checkout_sale(event, external_id_key="user_id")
    if sale is None:
        return 200  # not paid yet: checkout.session.async_payment_succeeded will follow
    if sale.external_id is None:
        logger.error(
            "checkout session %s has no customer id: sale not tracked", sale.idempotency_key
        )
        return 200
    result = await taapit.track.sale(
        tracking_id=sale.tracking_id,
        customer={"external_id": sale.external_id, "email": sale.email},
        amount=sale.amount,
        currency=sale.currency,
        idempotency_key=sale.idempotency_key,  # the session id: a redelivery counts once
    )
    if result.success:
        return 200
    if result.error is not None and result.error.retryable:
        return 503  # Taapit is down or slow: let Stripe deliver the event again later
    # Refused (a sale Taapit cannot attribute, say): a redelivery would be refused too.
    logger.error("sale %s not tracked: %s", sale.idempotency_key, result.error)
    return 200


def create_app(*, secret: str | None = None, client: AsyncTaapit | None = None) -> Starlette:
    """Build the webhook app.

    Args:
        secret: The signing secret; None reads ``STRIPE_WEBHOOK_SECRET`` at startup.
        client: The ``AsyncTaapit`` to use; None builds one from the environment.
    """

    @contextlib.asynccontextmanager
    async def settings(app: Starlette) -> AsyncIterator[dict[str, str]]:
        # Checked at startup: a webhook that cannot verify signatures must not serve.
        found = secret or os.environ.get("STRIPE_WEBHOOK_SECRET")
        if not found:
            raise ConfigurationError("set STRIPE_WEBHOOK_SECRET to the endpoint's whsec_...")
        yield {"stripe_secret": found}

    async def stripe_webhook(request: Request) -> Response:
        status = await handle_stripe_event(
            await request.body(),
            request.headers.get("stripe-signature"),
            taapit=get_client(request),
            secret=request.state.stripe_secret,
        )
        return Response(status_code=status)

    return Starlette(
        routes=[Route("/webhooks/stripe", stripe_webhook, methods=["POST"])],
        lifespan=taapit_lifespan(settings, client=client),  # the client, and our settings
    )


app = create_app()
