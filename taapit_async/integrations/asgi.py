"""``TaapitMiddleware``: a pure ASGI middleware that gives every request its tracker.

For each HTTP request it finds the visitor's ``ta_tid`` (cookie, then a small JSON or form
body, then the URL; a GET whose URL carries an id is a fresh click and that id wins), and
stores a ``RequestTracker`` in ``scope["state"]["taapit"]`` (``request.state.taapit`` in
Starlette and FastAPI) and in a context variable (``current_tracker()``). Responses to URLs
carrying a new ``?ta_tid=`` set the first-party ``ta_tid`` cookie. Websocket traffic passes
through untouched; lifespan traffic passes through unaltered.

Example:
    >>> app = TaapitMiddleware(app)  # any ASGI app; or app.add_middleware(TaapitMiddleware)
"""

from __future__ import annotations

import contextvars
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, MutableMapping
from typing import Any, Final, Literal

import attrs

from taapit_async._client import AsyncTaapit
from taapit_async._errors import ConfigurationError

from ._extract import (
    COOKIE_NAME,
    DEFAULT_BODY_LIMIT,
    Source,
    body_kind,
    from_body,
    from_cookie_header,
    from_query,
)
from ._tracker import RequestTracker

__all__ = [
    "CLIENT_STATE_KEY",
    "TRACKER_STATE_KEY",
    "CookieOptions",
    "RequestTracker",
    "TaapitMiddleware",
    "current_tracker",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
Consent = Callable[[Scope], bool]

#: Lifespan-state key under which the app's ``AsyncTaapit`` lives.
CLIENT_STATE_KEY: Final = "taapit_client"
#: Request-state key under which the request's ``RequestTracker`` lives.
TRACKER_STATE_KEY: Final = "taapit"

_NINETY_DAYS: Final = 90 * 24 * 60 * 60
_CLICK_METHODS: Final = frozenset({"GET", "HEAD"})
logger: Final = logging.getLogger("taapit_async")

_current: contextvars.ContextVar[RequestTracker] = contextvars.ContextVar("taapit_tracker")


def current_tracker() -> RequestTracker:
    """Return the ``RequestTracker`` of the request being handled.

    For code deep in a call stack that has no ``request`` at hand.

    Raises:
        LookupError: Called outside a request handled by ``TaapitMiddleware``.
    """
    try:
        return _current.get()
    except LookupError:
        raise LookupError(
            "no Taapit tracker here: current_tracker() works inside a request handled by "
            "TaapitMiddleware (add it with app.add_middleware(TaapitMiddleware))"
        ) from None


def _check_samesite(_instance: object, _attribute: object, value: str) -> None:
    if value not in {"lax", "strict", "none"}:
        raise ConfigurationError(f"samesite must be 'lax', 'strict' or 'none', not {value!r}")


@attrs.frozen
class CookieOptions:
    """How the middleware sets the first-party ``ta_tid`` cookie.

    Args:
        max_age: Lifetime in seconds (90 days by default). A server-set cookie is not
            subject to the 7-day cap Safari puts on cookies written by JavaScript.
        path: The cookie's ``Path``.
        domain: The cookie's ``Domain`` (e.g. ``"example.com"`` to share it with
            subdomains); None for a host-only cookie.
        samesite: ``"lax"``, ``"strict"`` or ``"none"``.
        secure: True or False to force ``Secure``; None sets it when the request's scheme is
            https (behind a proxy, enable your server's proxy-headers option).
        httponly: Hide the cookie from JavaScript. Off by default because Taapit's
            browser script reads it.
    """

    max_age: int = _NINETY_DAYS
    path: str = "/"
    domain: str | None = None
    samesite: Literal["lax", "strict", "none"] = attrs.field(
        default="lax", validator=_check_samesite
    )
    secure: bool | None = None
    httponly: bool = False

    def header(self, tracking_id: str, *, https: bool) -> bytes:
        """Return the ``Set-Cookie`` value for ``tracking_id``."""
        parts = [f"{COOKIE_NAME}={tracking_id}", f"Path={self.path}", f"Max-Age={self.max_age}"]
        if self.domain:
            parts.append(f"Domain={self.domain}")
        parts.append(f"SameSite={self.samesite.capitalize()}")
        if self.secure or (self.secure is None and https) or self.samesite == "none":
            parts.append("Secure")  # browsers drop SameSite=None cookies that are not Secure
        if self.httponly:
            parts.append("HttpOnly")
        return "; ".join(parts).encode("latin-1")


def _private_cache_control(values: Iterable[bytes]) -> bytes:
    """Merge Cache-Control values so that no shared cache stores the response."""
    kept: list[str] = []
    for value in values:
        for directive in value.decode("latin-1").split(","):
            text = directive.strip()
            name = text.partition("=")[0].strip().lower()
            if text and name not in {"public", "s-maxage", "private"}:
                kept.append(text)
    return ", ".join(["private", *kept]).encode("latin-1")


class TaapitMiddleware:
    """Pure ASGI middleware: finds ``ta_tid`` and hands each request a ``RequestTracker``.

    Args:
        app: The ASGI app to wrap.
        client: The client trackers send with. When None, the middleware uses the one in
            lifespan state (``"taapit_client"``, put there by ``taapit_lifespan``), else it
            creates one from the environment at lifespan startup and closes it at shutdown.
        body_limit: Largest JSON or url-encoded body read to look for an id (64 KiB);
            larger bodies, and every other type, stream through unread.
        set_cookie: Set the first-party ``ta_tid`` cookie on responses to URLs that carry a
            new ``?ta_tid=``.
        cookie: Options of that cookie.
        consent: Called with the request's scope before the cookie is set; returning False
            vetoes it (for consent banners). Errors count as a veto and are logged.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        client: AsyncTaapit | None = None,
        body_limit: int = DEFAULT_BODY_LIMIT,
        set_cookie: bool = True,
        cookie: CookieOptions | None = None,
        consent: Consent | None = None,
    ) -> None:
        raw_limit: object = body_limit
        if isinstance(raw_limit, bool) or not isinstance(raw_limit, int) or raw_limit < 0:
            raise ConfigurationError(f"body_limit must be an int >= 0, not {body_limit!r}")
        if client is not None and not isinstance(client, AsyncTaapit):
            raise ConfigurationError(f"client must be an AsyncTaapit, not {type(client).__name__}")
        self.app = app
        self._client = client
        self._owned: AsyncTaapit | None = None
        self._body_limit = body_limit
        self._set_cookie = set_cookie
        self._cookie = cookie or CookieOptions()
        self._consent = consent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection: HTTP gets a tracker, the rest passes through."""
        if scope["type"] != "http":
            if scope["type"] == "lifespan" and self._client is None:
                await self.app(scope, receive, self._lifespan_send(scope, send))
            else:
                await self.app(scope, receive, send)
            return
        # The HTTP path lives here, not in a method of its own: one coroutine frame less per
        # request, a measurable share of what the middleware costs.
        cookie_id, content_type, declared_length = _scan_headers(scope["headers"])
        query_string = scope.get("query_string")
        query_id = from_query(query_string) if query_string else None
        method = scope["method"]

        tracking_id: str | None
        source: Source | None
        if query_id is not None and method in _CLICK_METHODS:
            tracking_id, source = query_id, "query"  # a fresh click: the newest id wins
        elif cookie_id is not None:
            tracking_id, source = cookie_id, "cookie"
        else:
            tracking_id, receive = await self._peek_body(receive, content_type, declared_length)
            if tracking_id is not None:
                source = "body"
            elif query_id is not None:
                tracking_id, source = query_id, "query"
            else:
                source = None

        tracker = RequestTracker(tracking_id, source, self._find_client(scope))
        # A copy per request: some servers (and asgi-lifespan in tests) hand every request
        # the lifespan's own state dict, where concurrent requests would swap trackers.
        state = scope.get("state")
        scope["state"] = (
            {**state, TRACKER_STATE_KEY: tracker} if state else {TRACKER_STATE_KEY: tracker}
        )

        if (
            self._set_cookie
            and query_id is not None
            and query_id != cookie_id
            and (method in _CLICK_METHODS or cookie_id is None)
            and self._consents(scope)
        ):
            send = self._cookie_send(send, query_id, https=scope.get("scheme") == "https")

        token = _current.set(tracker)
        try:
            await self.app(scope, receive, send)
        finally:
            _current.reset(token)

    def _find_client(self, scope: Scope) -> AsyncTaapit | None:
        if self._client is not None:
            return self._client
        state = scope.get("state")
        found = state.get(CLIENT_STATE_KEY) if state is not None else None
        return found if isinstance(found, AsyncTaapit) else self._owned

    def _lifespan_send(self, scope: Scope, send: Send) -> Send:
        """Wrap ``send`` to open a client at startup and close it at shutdown, if ours."""

        async def wrapped(message: Message) -> None:
            kind = message["type"]
            if kind == "lifespan.startup.complete" and self._find_client(scope) is None:
                # A ConfigurationError (no key) propagates into the app's startup, which
                # fails loudly: better than serving requests that cannot track.
                self._owned = AsyncTaapit()
                state = scope.get("state")
                if state is not None:
                    state[CLIENT_STATE_KEY] = self._owned
            elif kind == "lifespan.shutdown.complete" and self._owned is not None:
                owned, self._owned = self._owned, None
                await owned.aclose()
            await send(message)

        return wrapped

    async def _peek_body(
        self, receive: Receive, content_type: bytes | None, declared_length: int | None
    ) -> tuple[str | None, Receive]:
        """Read a small JSON or form body for an id; return it and a replaying ``receive``.

        At most ``body_limit`` bytes (plus the one chunk that crossed it) are held, and
        every message read is handed to the app unchanged, in order, chunk for chunk.
        """
        kind = body_kind(content_type)
        if kind is None or (declared_length is not None and declared_length > self._body_limit):
            return None, receive
        buffered: list[Message] = []
        chunks: list[bytes] = []
        size = 0
        complete = False
        while True:
            message = await receive()
            buffered.append(message)
            if message["type"] != "http.request":  # http.disconnect: stop, and replay it
                break
            chunk = message.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            if size > self._body_limit:
                break
            if not message.get("more_body", False):
                complete = True
                break
        found = from_body(kind, b"".join(chunks)) if complete else None
        pending = deque(buffered)

        async def replay() -> Message:
            if pending:
                return pending.popleft()
            return await receive()

        return found, replay

    def _consents(self, scope: Scope) -> bool:
        if self._consent is None:
            return True
        try:
            return bool(self._consent(scope))
        except Exception:  # a broken hook must not break the request: no consent, no cookie
            logger.exception("taapit: the cookie consent hook failed; the cookie is not set")
            return False

    def _cookie_send(self, send: Send, tracking_id: str, *, https: bool) -> Send:
        set_cookie = self._cookie.header(tracking_id, https=https)

        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = []
                cache_control: list[bytes] = []
                for name, value in message.get("headers", ()):
                    if name.lower() == b"cache-control":
                        cache_control.append(value)
                    else:
                        headers.append((name, value))
                # A shared cache must never hand one visitor's id to another.
                headers.append((b"cache-control", _private_cache_control(cache_control)))
                headers.append((b"set-cookie", set_cookie))
                message = {**message, "headers": headers}
            await send(message)

        return wrapped


def _scan_headers(
    headers: Iterable[tuple[bytes, bytes]],
) -> tuple[str | None, bytes | None, int | None]:
    """Return the cookie's id, the content type and the declared length, in one pass."""
    cookie_id: str | None = None
    content_type: bytes | None = None
    declared_length: int | None = None
    for name, value in headers:
        if name == b"cookie":
            if cookie_id is None:
                cookie_id = from_cookie_header(value)
        elif name == b"content-type":
            content_type = value
        elif name == b"content-length":
            declared_length = int(value) if value.isdigit() else None
    return cookie_id, content_type, declared_length


def tracker_from_state(state: Mapping[str, Any] | None) -> RequestTracker | None:
    """Return the tracker the middleware stored in a request's state, if any."""
    found = state.get(TRACKER_STATE_KEY) if state is not None else None
    return found if isinstance(found, RequestTracker) else None
