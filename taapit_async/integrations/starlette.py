"""Starlette helpers: the request's tracker, the app's client, and the lifespan.

Example:
    >>> from starlette.applications import Starlette
    >>> from taapit_async.integrations.starlette import get_tracker, taapit_lifespan
    >>> app = Starlette(routes=[...], lifespan=taapit_lifespan())
    >>> async def signup(request):
    ...     tracker = await get_tracker(request)
    ...     await tracker.lead(customer={"external_id": "user_123"})
"""

from __future__ import annotations

try:
    from starlette.requests import HTTPConnection, Request
except ImportError as exc:  # pragma: no cover  # exercised in a venv without the extra
    raise ImportError(
        "taapit_async.integrations.starlette needs Starlette: pip install 'taapit-async[starlette]'"
    ) from exc

from taapit_async._client import AsyncTaapit
from taapit_async._errors import ConfigurationError
from taapit_async._models import is_valid_tracking_id

from ._extract import (
    DEFAULT_BODY_LIMIT,
    Source,
    body_kind,
    from_cookie_header,
    from_form,
    from_json,
    from_query,
)
from ._lifespan import taapit_lifespan
from ._tracker import RequestTracker
from .asgi import CLIENT_STATE_KEY, tracker_from_state

__all__ = ["RequestTracker", "get_client", "get_tracker", "taapit_lifespan"]


def get_client(connection: HTTPConnection) -> AsyncTaapit:
    """Return the app's ``AsyncTaapit`` (from lifespan state, or the middleware's).

    Raises:
        ConfigurationError: No client was set up: use ``taapit_lifespan()``.
    """
    state = connection.scope.get("state") or {}
    client = state.get(CLIENT_STATE_KEY)
    if isinstance(client, AsyncTaapit):
        return client
    tracker = tracker_from_state(state)
    if tracker is not None:
        return tracker.client
    raise ConfigurationError(
        "no Taapit client in the app's lifespan state: create the app with "
        "lifespan=taapit_lifespan() (it can wrap your own lifespan)"
    )


async def get_tracker(request: Request) -> RequestTracker:
    """Return the request's ``RequestTracker``.

    With ``TaapitMiddleware`` installed this is the tracker it made. Without it, the id
    is read from the request itself, in the same order (a GET's URL id, cookie, body up to
    64 KiB with a declared length, URL), sharing the body Starlette or FastAPI cached.
    """
    state = request.scope.get("state")
    found = tracker_from_state(state)
    if found is not None:
        return found
    client = (state or {}).get(CLIENT_STATE_KEY)
    tracker_id, source = await _resolve(request)
    return RequestTracker(tracker_id, source, client if isinstance(client, AsyncTaapit) else None)


async def _resolve(request: Request) -> tuple[str | None, Source | None]:
    query_id = from_query(request.scope.get("query_string", b""))
    if query_id is not None and request.method in {"GET", "HEAD"}:
        return query_id, "query"
    cookie_id = next(
        (from_cookie_header(v) for k, v in request.scope["headers"] if k == b"cookie"), None
    )
    if cookie_id is not None:
        return cookie_id, "cookie"
    body_id = await _from_body(request)
    if body_id is not None:
        return body_id, "body"
    if query_id is not None:
        return query_id, "query"
    return None, None


async def _from_body(request: Request) -> str | None:
    kind = body_kind(request.headers.get("content-type"))
    length = request.headers.get("content-length", "")
    # Only bodies of a declared, small size: a dependency must not buffer an upload.
    if kind is None or not length.isdigit() or int(length) > DEFAULT_BODY_LIMIT:
        return None
    try:
        body = await request.body()  # cached by Starlette: the endpoint reads the same bytes
    except RuntimeError:
        # The stream was consumed by form parsing (FastAPI Form fields): use that result.
        values = (await request.form()).getlist("ta_tid")
        first = values[0] if values else None
        return first if is_valid_tracking_id(first) else None  # type: ignore[return-value]
    return from_json(body) if kind == "json" else from_form(body)
