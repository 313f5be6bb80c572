"""A Starlette JSON API that tracks its sign-ups and upgrades with Taapit.

``TaapitMiddleware`` finds each visitor's ``ta_tid`` (cookie, JSON body, URL) and sets the
first-party cookie on deeplink clicks; ``taapit_lifespan`` owns the app's one client;
``get_tracker`` hands a route its request's tracker. Here the calls are awaited, so the
reply can say whether Taapit took the event (see the FastAPI shop for background delivery).

Run it against the fake Taapit API (``python -m taapit_async fake-server``)::

    TAAPIT_API_KEY=taapit_sk_test TAAPIT_BASE_URL=http://127.0.0.1:8787 \\
        uvicorn --app-dir examples starlette_app:app --port 8000

then open http://127.0.0.1:8000/?ta_tid=rLnWe1uz9t282v7g and, from that page's console,
``fetch("/api/signup", {method: "POST", body: JSON.stringify({email: "ada@example.com"})})``.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from decimal import Decimal
from html import escape

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from taapit_async import AsyncTaapit, TrackResult
from taapit_async.integrations.asgi import TaapitMiddleware
from taapit_async.integrations.starlette import get_tracker, taapit_lifespan

__all__ = ["app", "create_app", "user_id_for"]

logger = logging.getLogger(__name__)

PRO_PLAN = Decimal("49.00")


def user_id_for(email: str) -> str:
    """The app's user id for an e-mail address (a real app has a users table)."""
    return "user_" + hashlib.sha256(email.strip().lower().encode()).hexdigest()[:12]


def _reply(result: TrackResult) -> JSONResponse:
    if not result.success:
        # Tracking never fails the request: the sign-up went through all the same.
        logger.warning("not tracked: %s", result.error)
    code = result.error.code if result.error is not None else None
    return JSONResponse({"tracked": result.success, "error": code})


async def home(request: Request) -> HTMLResponse:
    """The landing page of a deeplink; the middleware sets the ta_tid cookie."""
    tracker = await get_tracker(request)
    seen = escape(tracker.tracking_id) if tracker.tracking_id else "none"
    return HTMLResponse(f"<!doctype html><title>Starlette app</title><p>ta_tid: {seen}</p>")


async def signup(request: Request) -> JSONResponse:
    """``POST /api/signup {"email": ...}``: a lead, with the id of the cookie or the body."""
    body = await request.json()
    email = str(body.get("email", ""))
    if "@" not in email:
        return JSONResponse({"error": "an e-mail address, please"}, status_code=422)
    tracker = await get_tracker(request)
    result = await tracker.lead(customer={"external_id": user_id_for(email), "email": email})
    return _reply(result)


async def upgrade(request: Request) -> JSONResponse:
    """``POST /api/upgrade {"email": ...}``: the saved card was charged, so a sale."""
    body = await request.json()
    order_id = "ord_" + secrets.token_hex(6)  # from your payment, in a real app
    tracker = await get_tracker(request)
    # Without a ta_tid the sale still goes out: Taapit links it through the external id.
    result = await tracker.sale(
        customer={"external_id": user_id_for(str(body.get("email", "")))},
        amount=PRO_PLAN,
        currency="eur",
        metadata={"orderId": order_id},
        idempotency_key=order_id,
    )
    return _reply(result)


def create_app(client: AsyncTaapit | None = None) -> Starlette:
    """Build the app.

    Args:
        client: The ``AsyncTaapit`` to track with (tests pass one wired to a fake); None
            builds one from ``TAAPIT_API_KEY`` and ``TAAPIT_BASE_URL`` at startup.
    """
    return Starlette(
        routes=[
            Route("/", home),
            Route("/api/signup", signup, methods=["POST"]),
            Route("/api/upgrade", upgrade, methods=["POST"]),
        ],
        middleware=[Middleware(TaapitMiddleware)],
        lifespan=taapit_lifespan(client=client),
    )


app = create_app()
