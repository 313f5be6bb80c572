"""FastAPI integration: ``Tracker`` and ``TaapitClient`` dependencies, and the lifespan.

Setup takes three lines, and the middleware is optional (without it, ``Tracker`` reads the
id from the request itself)::

    app = FastAPI(lifespan=taapit_lifespan())
    app.add_middleware(TaapitMiddleware)  # optional: sets the ta_tid cookie on clicks

    @app.post("/signup")
    async def signup(body: Signup, tracker: Tracker) -> dict[str, str]:
        user = await create_user(body)
        await tracker.lead(customer={"external_id": user.id, "email": user.email})
        return {"id": user.id}
"""

from __future__ import annotations

from typing import Annotated

try:
    from fastapi import Depends
except ImportError as exc:  # pragma: no cover  # exercised in a venv without the extra
    raise ImportError(
        "taapit_async.integrations.fastapi needs FastAPI: pip install 'taapit-async[fastapi]'"
    ) from exc

from taapit_async._client import AsyncTaapit

from ._lifespan import taapit_lifespan
from ._tracker import RequestTracker
from .asgi import TaapitMiddleware, current_tracker
from .starlette import get_client, get_tracker

__all__ = [
    "RequestTracker",
    "TaapitClient",
    "TaapitMiddleware",
    "Tracker",
    "current_tracker",
    "get_client",
    "get_tracker",
    "taapit_lifespan",
]

Tracker = Annotated[RequestTracker, Depends(get_tracker)]
"""The request's ``RequestTracker``: ``async def signup(body: Signup, tracker: Tracker)``."""

TaapitClient = Annotated[AsyncTaapit, Depends(get_client)]
"""The app's ``AsyncTaapit`` from lifespan state: ``async def webhook(taapit: TaapitClient)``.

Override ``get_client`` in tests with ``app.dependency_overrides[get_client] = ...``.
"""
