"""``AsyncTaapit``: the client, its ``track`` namespace and the retry loop."""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Mapping
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import httpx

from ._config import DEFAULT_MAX_IN_FLIGHT, Settings, resolve_settings, user_agent
from ._errors import (
    APIError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    ClientClosedError,
    ClientStateError,
    ConfigurationError,
    DisabledError,
    ErrorCode,
    InternalError,
    InvalidRequestError,
    InvalidResponseError,
    RateLimitError,
    RejectedError,
    ServerError,
)
from ._models import (
    Customer,
    EventKind,
    LeadEvent,
    SaleEvent,
    TrackResult,
    check_idempotency_key,
)
from ._retry import (
    DEFAULT_BACKOFF_BASE,
    DEFAULT_BACKOFF_MAX,
    DEFAULT_DEADLINE,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_AFTER_MAX,
    DEFAULT_TIMEOUT,
    RetryPolicy,
    parse_retry_after,
)
from ._transport import HTTPReply, HttpxTransport, Transport
from ._wire import encode_event, parse_reply

if TYPE_CHECKING:
    from typing import Self

__all__ = ["AsyncTaapit", "Track"]

logger: Final = logging.getLogger("taapit_async")

# Server-provided text ends up in errors and logs: keep it short and free of e-mail addresses.
_EMAIL: Final = re.compile(r"[^\s@\"'<>]+@[^\s@\"'<>]+")
_MAX_SERVER_TEXT: Final = 200

# Indirection so tests can observe the waits between retries without sleeping.
_sleep = asyncio.sleep


class Track:
    """``taapit.track``: send an event now and await its result (retries included).

    Obtained as ``AsyncTaapit(...).track``; not built directly.
    """

    __slots__ = ("_client",)

    def __init__(self, client: AsyncTaapit) -> None:
        self._client = client

    async def lead(
        self,
        *,
        tracking_id: str,
        customer: Customer | Mapping[str, Any],
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> TrackResult:
        """Report a lead: a visitor who arrived through a Taapit link signed up.

        Args:
            tracking_id: The visitor's ``ta_tid`` (cookie, request body or URL parameter).
            customer: A ``Customer``, or a mapping of its field names; ``external_id`` is
                required.
            metadata: Your own JSON object, sent exactly as given.
            idempotency_key: Makes a repeated call (a redelivered webhook) count once; a
                random key per call by default. Every retry reuses it.

        Returns:
            The outcome; delivery failures are in ``result.error``, never raised.

        Raises:
            ValidationError: An argument is invalid (the message names it); nothing is sent.
            ClientClosedError: The client was closed.

        Example:
            >>> await taapit.track.lead(
            ...     tracking_id="rLnWe1uz9t282v7g",
            ...     customer=Customer(external_id="user_123", email="john@example.com"),
            ... )
        """
        event = LeadEvent.build(tracking_id=tracking_id, customer=customer, metadata=metadata)
        return await self._client._deliver("lead", event, idempotency_key)

    async def sale(
        self,
        *,
        customer: Customer | Mapping[str, Any],
        amount: Decimal | int | float,
        currency: str,
        tracking_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> TrackResult:
        """Report a sale: a customer paid (track it after the payment is confirmed).

        Args:
            customer: A ``Customer``, or a mapping of its field names; ``external_id`` is
                required and links the sale to the customer's earlier lead.
            amount: The amount in currency units (``Decimal("29.99")`` for 29.99, never
                cents), zero or more, with no more decimals than the currency has.
            currency: An ISO 4217 code in any case (``"eur"``); sent lowercase.
            tracking_id: The visitor's ``ta_tid``; optional when a lead already tracked this
                customer, required by Taapit for a new customer.
            metadata: Your own JSON object, sent exactly as given.
            idempotency_key: Your order or payment id, so that a redelivered webhook does
                not count as a second sale; a random key per call by default.

        Returns:
            The outcome; delivery failures are in ``result.error``, never raised.

        Raises:
            ValidationError: An argument is invalid (the message names it); nothing is sent.
            ClientClosedError: The client was closed.

        Example:
            >>> await taapit.track.sale(
            ...     customer={"external_id": "user_123"},
            ...     amount=Decimal("99.99"),
            ...     currency="eur",
            ...     idempotency_key="order_456",
            ... )
        """
        event = SaleEvent.build(
            tracking_id=tracking_id,
            customer=customer,
            amount=amount,
            currency=currency,
            metadata=metadata,
        )
        return await self._client._deliver("sale", event, idempotency_key)


class AsyncTaapit:
    """The Taapit client: one connection pool shared by every call.

    Create one per process (in your app's lifespan) and close it on shutdown, or use it as
    an async context manager. Calls must all run on the event loop of the first call.

    Args:
        api_key: Your secret key (``taapit_sk_...``); ``TAAPIT_API_KEY`` when None.
        base_url: The API root; ``TAAPIT_BASE_URL`` when None, else ``DEFAULT_BASE_URL``.
            Plain ``http://`` is refused except to loopback hosts.
        timeout: Seconds for each of connect, write and read of one attempt.
        max_retries: Retries after the first attempt, for connection errors, timeouts, 408,
            429 and 5xx.
        deadline: Seconds one awaited call may take in total, waits and retries included.
        backoff_base: Upper bound of the first retry's random wait; doubles each retry.
        backoff_max: Largest upper bound of a retry's random wait.
        retry_after_max: Longest ``Retry-After`` honoured; a longer one ends the retries.
        max_in_flight: Requests in flight at once; more calls queue in order.
        enabled: False turns tracking off: calls validate, send nothing and return a
            ``disabled`` result. None reads ``TAAPIT_ENABLED`` (on unless 0/false/no/off).
        http_client: Your own ``httpx.AsyncClient`` (proxies, custom transports, tests);
            used as is and never closed by ``aclose()``.
        http2: Negotiate HTTP/2 on the client built here (``taapit-async[http2]``).

    Raises:
        ConfigurationError: No API key, a bad URL or a bad option; the message says how
            to fix it.

    Example:
        >>> async with AsyncTaapit() as taapit:  # key from TAAPIT_API_KEY
        ...     result = await taapit.track.lead(tracking_id=tid, customer={"external_id": "u1"})
    """

    track: Track
    """Send events now and await their results: ``lead(...)`` and ``sale(...)``."""

    def __init__(
        self,
        api_key: str | None = None,
        *,
        base_url: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        deadline: float = DEFAULT_DEADLINE,
        backoff_base: float = DEFAULT_BACKOFF_BASE,
        backoff_max: float = DEFAULT_BACKOFF_MAX,
        retry_after_max: float = DEFAULT_RETRY_AFTER_MAX,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        enabled: bool | None = None,
        http_client: httpx.AsyncClient | None = None,
        http2: bool = False,
    ) -> None:
        if http_client is not None and not isinstance(http_client, httpx.AsyncClient):
            raise ConfigurationError(
                f"http_client must be an httpx.AsyncClient, not {type(http_client).__name__}"
            )
        self._settings: Settings = resolve_settings(
            api_key=api_key,
            base_url=base_url,
            enabled=enabled,
            timeout=timeout,
            retry=RetryPolicy(
                max_retries=max_retries,
                backoff_base=backoff_base,
                backoff_max=backoff_max,
                retry_after_max=retry_after_max,
                deadline=deadline,
            ),
            max_in_flight=max_in_flight,
        )
        self._transport: Transport = HttpxTransport(
            http_client,
            timeout=self._settings.timeout,
            max_connections=self._settings.max_in_flight,
            http2=http2,
        )
        # Our own gate in front of the pool: waiting here is O(1), while httpcore's pool
        # rescans every queued request each time a connection frees up.
        self._gate = asyncio.Semaphore(self._settings.max_in_flight)
        self._headers: Final = {
            "Authorization": f"Bearer {self._settings.api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": user_agent(),
        }
        self._urls: Final[dict[EventKind, str]] = {
            "lead": self._settings.lead_url,
            "sale": self._settings.sale_url,
        }
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.track = Track(self)

    def __repr__(self) -> str:
        # The key is never shown, not even in part.
        state = "closed" if self._closed else "open"
        enabled = "" if self._settings.enabled else ", enabled=False"
        return f"<AsyncTaapit {state} base_url={self._settings.base_url!r}{enabled}>"

    @property
    def base_url(self) -> str:
        """The API root events are sent to."""
        return self._settings.base_url

    @property
    def enabled(self) -> bool:
        """False when tracking is turned off (``enabled=False`` or ``TAAPIT_ENABLED=0``)."""
        return self._settings.enabled

    @property
    def closed(self) -> bool:
        """True once ``aclose()`` was called."""
        return self._closed

    async def __aenter__(self) -> Self:
        self._check_usable()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (not a user's own ``http_client``). Safe to repeat."""
        if self._closed:
            return
        self._closed = True
        await self._transport.aclose()

    def _check_usable(self) -> None:
        if self._closed:
            raise ClientClosedError(
                "this AsyncTaapit client is closed: create a new one, or keep one open for "
                "the life of your app (e.g. in its lifespan)"
            )
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
        elif loop is not self._loop:
            # Pooled connections belong to the loop that opened them; using them from another
            # loop hangs or fails at random, so say so plainly instead.
            raise ClientStateError(
                "this AsyncTaapit client was first used on another event loop: create one "
                "client per event loop (in your app's lifespan, or per test)",
                code=ErrorCode.WRONG_EVENT_LOOP,
            )

    async def _deliver(
        self, kind: EventKind, event: LeadEvent | SaleEvent, idempotency_key: str | None
    ) -> TrackResult:
        key = (
            new_idempotency_key()
            if idempotency_key is None
            else check_idempotency_key(idempotency_key)
        )
        self._check_usable()
        if not self._settings.enabled:
            return TrackResult(
                success=False,
                error=DisabledError(
                    f"{kind} not sent: tracking is disabled (enabled=False or TAAPIT_ENABLED=0)"
                ),
                idempotency_key=key,
            )
        return await self._send(kind, encode_event(event), key)

    async def _send(self, kind: EventKind, body: bytes, key: str) -> TrackResult:
        retry = self._settings.retry
        url = self._urls[kind]
        headers = {**self._headers, "Idempotency-Key": key}
        loop = asyncio.get_running_loop()
        deadline_at = loop.time() + retry.deadline
        attempts = 0
        status: int | None = None
        error: APIError
        try:
            async with asyncio.timeout_at(deadline_at):
                while True:
                    attempts += 1
                    retry_after: float | None = None
                    try:
                        async with self._gate:
                            reply = await self._transport.post(url, headers, body)
                    except APIError as exc:
                        error, status = exc, None
                    except Exception as exc:  # never raise into the caller
                        logger.exception("taapit %s: unexpected error while sending", kind)
                        error = InternalError(f"unexpected {type(exc).__name__} while sending")
                        status = None
                    else:
                        status = reply.status
                        outcome = _read_reply(reply)
                        if isinstance(outcome, str | None):
                            logger.debug(
                                "taapit %s accepted (HTTP %d, attempt %d, idempotency key %s)",
                                kind, status, attempts, key,
                            )  # fmt: skip
                            return TrackResult(
                                success=True,
                                status_code=status,
                                attempts=attempts,
                                idempotency_key=key,
                                event_id=outcome,
                            )
                        error = outcome
                        retry_after = parse_retry_after(reply.retry_after)
                    if not error.retryable or attempts > retry.max_retries:
                        break
                    if retry_after is None:
                        wait = retry.backoff(attempts)
                    elif retry_after <= retry.retry_after_max:
                        wait = retry_after
                    else:
                        break  # the server asks for a longer pause than an awaited call allows
                    if loop.time() + wait >= deadline_at:
                        break
                    logger.debug(
                        "taapit %s attempt %d failed (%s); retrying in %.3fs",
                        kind, attempts, error, wait,
                    )  # fmt: skip
                    await _sleep(wait)
        except TimeoutError:
            error = APITimeoutError(
                f"no reply within the call's deadline of {retry.deadline:g}s "
                f"({attempts} attempt(s)); raise deadline= if Taapit is known to be slow",
                status_code=None,
            )
            status = None
        logger.warning(
            "taapit %s not tracked after %d attempt(s): %s (idempotency key %s)",
            kind, attempts, error, key,
        )  # fmt: skip
        return TrackResult(
            success=False,
            error=error,
            status_code=status,
            attempts=attempts,
            idempotency_key=key,
        )


def new_idempotency_key() -> str:
    """Return a fresh random idempotency key."""
    return str(uuid.uuid4())


def _scrub(text: str) -> str:
    text = _EMAIL.sub("<email>", text)
    return text if len(text) <= _MAX_SERVER_TEXT else text[: _MAX_SERVER_TEXT - 1] + "…"


def _read_reply(reply: HTTPReply) -> str | APIError | None:
    """Return the event id (or None) of an accepted reply, or the error it stands for."""
    status = reply.status
    if 200 <= status < 300:
        parsed = parse_reply(reply.body)
        if parsed.success is False:
            code = parsed.error.code if parsed.error else None
            message = parsed.error.message if parsed.error else None
            return RejectedError(
                _scrub(message or "Taapit answered success: false without a reason"),
                code=code or ErrorCode.REJECTED,
                status_code=status,
            )
        return parsed.event_id or parsed.id
    if status < 400:
        return InvalidResponseError(
            f"unexpected HTTP {status} reply: check base_url (a redirect or a proxy page?)",
            status_code=status,
        )
    detail = _server_detail(reply.body)
    if status in {401, 403}:
        return AuthenticationError(
            "Taapit refused the API key: check TAAPIT_API_KEY / api_key (Settings > "
            f"Conversion in the dashboard){detail}",
            status_code=status,
        )
    if status == 408:
        return APIStatusError(
            f"Taapit timed out reading the request{detail}",
            code=ErrorCode.TIMEOUT,
            status_code=status,
            retryable=True,
        )
    if status == 429:
        return RateLimitError(f"Taapit asked to slow down{detail}", status_code=status)
    if status < 500:
        return InvalidRequestError(f"Taapit refused the event{detail}", status_code=status)
    return ServerError(f"Taapit failed on its side{detail}", status_code=status)


def _server_detail(body: bytes) -> str:
    error = parse_reply(body).error
    if error is None:
        return ""
    parts = [p for p in (error.code, error.message) if p]
    return f": {_scrub(': '.join(parts))}" if parts else ""
