"""A small FastAPI shop that reports its sign-ups and sales to Taapit.

The journey, page by page:

1. A Taapit deeplink lands the visitor on ``/?ta_tid=...``; ``TaapitMiddleware`` sets the
   first-party ``ta_tid`` cookie.
2. The visitor signs up: a lead, tracked with the ``Tracker`` dependency. With JavaScript
   the page posts JSON to ``/api/signup`` (the id in the body); without it, the plain form
   posts to ``/signup`` and the cookie carries the id.
3. Checkout creates a (stand-in) Stripe Checkout Session with the tracking id in its
   metadata, and sends the visitor to the provider's page.
4. The visitor pays; "Stripe" sends a signed ``checkout.session.completed`` event to
   ``/webhooks/stripe``, which verifies it and queues the sale in the durable outbox.
5. A confirmation page.

Run it against the fake Taapit API, with no account and no network::

    python -m taapit_async fake-server &       # the fake API on http://127.0.0.1:8787
    TAAPIT_API_KEY=taapit_sk_test TAAPIT_BASE_URL=http://127.0.0.1:8787 \\
        uvicorn --app-dir examples --factory fastapi_shop.app:create_app --port 8000

then open http://127.0.0.1:8000/?ta_tid=rLnWe1uz9t282v7g, and
http://127.0.0.1:8787/_fake/ for what the fake recorded. It needs
``pip install 'taapit-async[fastapi,server]' python-multipart``.

Or both at once, on free ports, after the demo's visitor went through:
``python3 -m nox -s demo -- --keep-running`` (see ``examples/demo.py`` and ``servers.py``).
"""

from __future__ import annotations

from .app import ShopSettings, create_app

__all__ = ["ShopSettings", "create_app"]
