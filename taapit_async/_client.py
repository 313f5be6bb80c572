"""``AsyncTaapit``: the client, its ``track`` namespace and the retry loop."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

import httpx

from ._breaker import (
    DEFAULT_BREAKER_COOLDOWN,
    DEFAULT_BREAKER_THRESHOLD,
    DEFAULT_RECOVERY_RATE,
    CircuitBreaker,
)
from ._config import DEFAULT_MAX_IN_FLIGHT, Settings, resolve_settings, user_agent
from ._deadlines import Deadlines
from ._delivery import (
    DEFAULT_BACKGROUND_DEADLINE,
    DEFAULT_BACKGROUND_MAX_RETRIES,
    DEFAULT_DRAIN_TIMEOUT,
    DEFAULT_MAX_QUEUE,
    BackgroundQueue,
    Delivery,
    DeliveryStats,
    OutboxQueue,
)
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
    TaapitError,
    traceback_text,
    without_frames,
)
from ._models import (
    Customer,
    EventKind,
    LeadEvent,
    SaleEvent,
    TrackResult,
    check_idempotency_key,
)
from ._outbox import (
    DEFAULT_OUTBOX_LEASE,
    DEFAULT_OUTBOX_MAX_AGE,
    DEFAULT_OUTBOX_MAX_ATTEMPTS,
    Outbox,
    Settle,
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

__all__ = ["AsyncTaapit", "Background", "Track"]

logger: Final = logging.getLogger("taapit_async")

# Server-provided text ends up in errors and logs: keep it short and free of e-mail addresses.
_EMAIL: Final = re.compile(r"[^\s@\"'<>]+@[^\s@\"'<>]+")
_MAX_SERVER_TEXT: Final = 200

# Indirection so tests can observe the waits between retries without sleeping.
_sleep = asyncio.sleep


class _ForkState:
    """Counts the forks this process came out of as a child (see ``AsyncTaapit``)."""

    generation = 0
    # What a client left behind at a fork: the parent still uses these sockets, SQLite
    # connection and tasks, so the child must neither use nor close nor collect them
    # (collecting a SQLite connection closes it, which may checkpoint the parent's WAL).
    inherited: ClassVar[list[object]] = []


def _after_fork_in_child() -> None:
    _ForkState.generation += 1


os.register_at_fork(after_in_child=_after_fork_in_child)


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


class Background:
    """``taapit.background``: queue an event and return at once; delivery happens later.

    The same arguments as ``taapit.track``. Awaiting a call returns a ``Delivery`` as soon
    as the event is queued in memory (microseconds, no network); the client's worker tasks
    send it with retries (``background_max_retries``, ``background_deadline``).
    ``await delivery.result()`` gives the ``TrackResult`` while the process lives;
    ``on_result=`` sees every outcome. A full queue or a close before delivery gives a
    failed result (``queue_full``, ``shutdown``), logged and counted, never a silent drop.
    Queued events live in memory: a crash loses them (the durable outbox will not).

    Obtained as ``AsyncTaapit(...).background``; not built directly.
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
    ) -> Delivery:
        """Queue a lead; see ``track.lead`` for the arguments.

        Raises:
            ValidationError: An argument is invalid; nothing is queued.
            ClientClosedError: The client was closed.
        """
        event = LeadEvent.build(tracking_id=tracking_id, customer=customer, metadata=metadata)
        return await self._client._enqueue("lead", event, idempotency_key)

    async def sale(
        self,
        *,
        customer: Customer | Mapping[str, Any],
        amount: Decimal | int | float,
        currency: str,
        tracking_id: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Delivery:
        """Queue a sale; see ``track.sale`` for the arguments.

        Raises:
            ValidationError: An argument is invalid; nothing is queued.
            ClientClosedError: The client was closed.
        """
        event = SaleEvent.build(
            tracking_id=tracking_id,
            customer=customer,
            amount=amount,
            currency=currency,
            metadata=metadata,
        )
        return await self._client._enqueue("sale", event, idempotency_key)


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
        transport: What carries the requests: ``"httpx"`` (the default) or ``"aiohttp"``,
            several times faster per request when you send many events
            (``taapit-async[aiohttp]``; HTTP/1.1 only, no ``http_client``). Retries,
            timeouts, errors and idempotency keys behave the same on both.
        max_queue: Background events held in memory at most; beyond, ``queue_full``.
        background_max_retries: Retries of a background event after its first attempt.
        background_deadline: Seconds a background event may take from its first attempt,
            retries included.
        drain_timeout: Seconds ``aclose()`` waits for queued events before giving up on them.
        on_result: Called with each background ``Delivery`` and its ``TrackResult`` when
            it is done; exceptions it raises are logged and ignored.
        outbox: A SQLite file for durable background delivery: each background event is
            committed to it before the call returns, survives crashes and restarts, and is
            retried until delivered or dead-lettered. Several processes may share one file.
        outbox_max_attempts: Attempts (all processes together) before an outbox event is
            moved to the file's dead letters.
        outbox_max_age: Seconds after which an undelivered outbox event is dead-lettered.
        outbox_lease: Seconds a process holds an outbox row it is sending; a crashed
            holder's rows are taken over by others after it.
        breaker_threshold: Failures in a row (no connection, timeouts, 5xx, 429) after which
            background delivery pauses and probes Taapit before resuming; 0 turns it off.
            Awaited calls are never held back.
        breaker_cooldown: Seconds of the first pause; doubles per failed probe, up to 60.
        recovery_rate: Background attempts per second right after a pause ends, doubling
            every second for 8 seconds, so a backlog does not hammer a recovering API;
            None for no ramp.

    Raises:
        ConfigurationError: No API key, a bad URL or a bad option; the message says how
            to fix it.

    Example:
        >>> async with AsyncTaapit() as taapit:  # key from TAAPIT_API_KEY
        ...     result = await taapit.track.lead(tracking_id=tid, customer={"external_id": "u1"})
    """

    track: Track
    """Send events now and await their results: ``lead(...)`` and ``sale(...)``."""

    background: Background
    """Queue events and return at once: ``lead(...)`` and ``sale(...)`` give a ``Delivery``."""

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
        transport: Literal["httpx", "aiohttp"] = "httpx",
        max_queue: int = DEFAULT_MAX_QUEUE,
        background_max_retries: int = DEFAULT_BACKGROUND_MAX_RETRIES,
        background_deadline: float = DEFAULT_BACKGROUND_DEADLINE,
        drain_timeout: float = DEFAULT_DRAIN_TIMEOUT,
        on_result: Callable[[Delivery, TrackResult], object] | None = None,
        outbox: str | os.PathLike[str] | None = None,
        outbox_max_attempts: int = DEFAULT_OUTBOX_MAX_ATTEMPTS,
        outbox_max_age: float = DEFAULT_OUTBOX_MAX_AGE,
        outbox_lease: float = DEFAULT_OUTBOX_LEASE,
        breaker_threshold: int = DEFAULT_BREAKER_THRESHOLD,
        breaker_cooldown: float = DEFAULT_BREAKER_COOLDOWN,
        recovery_rate: float | None = DEFAULT_RECOVERY_RATE,
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
        self._user_client = http_client
        self._http2 = http2
        self._transport_name = _transport_name(transport, http_client=http_client, http2=http2)
        self._transport: Transport = self._new_transport()
        # Our own gate in front of the pool: waiting here is O(1), while httpcore's pool
        # rescans every queued request each time a connection frees up.
        self._gate = asyncio.Semaphore(self._settings.max_in_flight)
        self._deadlines = Deadlines()
        self._fork_generation = _ForkState.generation
        # Set in a forked child when the connections are a user's (not ours to rebuild):
        # from then on, every call there is refused, not only the first.
        self._inherited_user_client = False
        self._urls: Final[dict[EventKind, str]] = {
            "lead": self._settings.lead_url,
            "sale": self._settings.sale_url,
        }
        self._background_retry = RetryPolicy(
            max_retries=background_max_retries,
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            retry_after_max=retry_after_max,
            deadline=background_deadline,
        )
        self._max_queue = _positive_int("max_queue", max_queue)
        self._drain_timeout = _seconds("drain_timeout", drain_timeout)
        self._single_attempt = RetryPolicy(max_retries=0, deadline=self._settings.timeout * 2)
        self._on_result = on_result
        self._queue: BackgroundQueue | OutboxQueue | None = None
        self._outbox = (
            None
            if outbox is None
            else Outbox(
                outbox,
                lease_seconds=_positive_seconds("outbox_lease", outbox_lease),
                max_attempts=_positive_int("outbox_max_attempts", outbox_max_attempts),
                max_age=_positive_seconds("outbox_max_age", outbox_max_age),
            )
        )
        self._breaker = CircuitBreaker(
            threshold=breaker_threshold, cooldown=breaker_cooldown, recovery_rate=recovery_rate
        )
        self._counts = _Counts()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self.track = Track(self)
        self.background = Background(self)

    def _new_transport(self) -> Transport:
        try:
            return self._open_transport()
        except Exception as exc:  # noqa: BLE001 - raised again, without its frames
            # Raised from here on: the frames below hold the headers (the API key) and
            # maybe a proxy URL with its password, for error trackers to record. A bad
            # setting or a missing extra says all in its message; anything else is a bug,
            # whose place stays readable as text (file and line, no variables).
            if not isinstance(exc, TaapitError | ImportError):
                exc.add_note(f"Raised at (frames dropped):\n{traceback_text(exc)}")
            raise without_frames(exc)  # noqa: B904 - the same error, its chain kept

    def _open_transport(self) -> Transport:
        headers = {
            "Authorization": f"Bearer {self._settings.api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": user_agent(),
        }
        if self._transport_name == "aiohttp":
            # aiohttp is an optional extra: imported only by those who chose it.
            from ._aiohttp import AiohttpTransport  # noqa: PLC0415

            return AiohttpTransport(
                headers=headers,
                timeout=self._settings.timeout,
                max_connections=self._settings.max_in_flight,
            )
        return HttpxTransport(
            self._user_client,
            headers=headers,
            timeout=self._settings.timeout,
            max_connections=self._settings.max_in_flight,
            http2=self._http2,
        )

    def _forked(self) -> bool:
        """True in a child process of a fork made after this client was created.

        The first time, the client leaves the parent's connections, queue and outbox
        connection alone (the parent still uses them; events the parent queued are the
        parent's to send) and builds fresh ones for this process.
        """
        if self._fork_generation == _ForkState.generation:
            return False
        self._fork_generation = _ForkState.generation
        _ForkState.inherited.append((self._transport, self._queue, self._outbox))
        self._counts = _Counts()  # the parent's counters describe the parent's events
        if self._user_client is not None:
            self._inherited_user_client = True  # not ours to rebuild: _check_usable says so
            return True
        self._transport = self._new_transport()
        self._gate = asyncio.Semaphore(self._settings.max_in_flight)
        self._deadlines = Deadlines()
        self._queue = None
        if self._outbox is not None:
            self._outbox = self._outbox.reopened()
        breaker = self._breaker
        self._breaker = CircuitBreaker(
            threshold=breaker.threshold,
            cooldown=breaker.cooldown,
            recovery_rate=breaker.recovery_rate,
        )
        self._loop = None
        logger.info(
            "taapit: process %d was forked from its parent after this client was created; "
            "it now has its own connections (create clients in each worker's lifespan to "
            "avoid this)",
            os.getpid(),
        )
        return True

    def __repr__(self) -> str:
        # The key is never shown, not even in part.
        settings = getattr(self, "_settings", None)
        if settings is None or not hasattr(self, "_closed"):
            # Half built: error trackers repr the locals of a constructor that raised.
            return "<AsyncTaapit not constructed>"
        state = "closed" if self._closed else "open"
        enabled = "" if settings.enabled else ", enabled=False"
        return f"<AsyncTaapit {state} base_url={settings.base_url!r}{enabled}>"

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
        await self.start()
        return self

    async def start(self) -> None:
        """Get ready now rather than on the first call (``async with`` does this).

        With an ``outbox``, the file is opened (a bad path fails here, at startup) and the
        events it holds from earlier runs start going out. Safe to repeat.

        Raises:
            OutboxError: The outbox file cannot be opened or created.
            ClientClosedError: The client is closed.
        """
        self._check_usable()
        if self._outbox is not None:
            await self._background_queue().start()  # type: ignore[union-attr]

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def stats(self) -> DeliveryStats:
        """A snapshot of this client's delivery counters (in a forked child, the child's)."""
        self._forked()
        counts = self._counts
        queue = None if self._inherited_user_client else self._queue
        return DeliveryStats(
            queued=counts.queued,
            sent=counts.sent,
            retried=counts.retried,
            failed=counts.failed,
            dropped=counts.dropped,
            dead_lettered=counts.dead_lettered,
            in_queue=len(queue) if queue is not None else 0,
        )

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every background event queued so far is delivered or has failed.

        Args:
            timeout: Seconds to wait at most; None waits as long as it takes.

        Returns:
            True when the queue drained, False when the timeout came first.
        """
        self._forked()
        if self._queue is None or self._inherited_user_client:
            return True  # (a parent's queue is the parent's to drain: nothing of this process)
        return await self._queue.flush(timeout)

    async def aclose(self) -> None:
        """Drain the background queue (up to ``drain_timeout``), then close the pool.

        Events still queued after the drain deadline resolve with a ``shutdown`` failure,
        and are logged and counted as dropped. A user's own ``http_client`` is not closed.
        Safe to repeat.
        """
        if self._closed:
            return
        self._closed = True
        self._forked()
        if self._inherited_user_client:
            return  # the parent's connections: not this process's to close
        if self._queue is not None:
            abandoned = await self._queue.aclose(self._drain_timeout)
            if abandoned:
                logger.error(
                    "taapit: %d background event(s) not delivered: the client closed before "
                    "the drain deadline of %gs",
                    abandoned, self._drain_timeout,
                )  # fmt: skip
        await self._transport.aclose()

    def _check_usable(self) -> None:
        self._forked()
        if self._inherited_user_client:
            raise ClientStateError(
                "this AsyncTaapit client was created before the process forked, with your own "
                "http_client, whose connections the parent still uses: create the client (and "
                "its http_client) in each worker process, e.g. in the app's lifespan",
                code=ErrorCode.FORKED,
            )
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

    def _key_for_call(self, idempotency_key: str | None) -> str:
        """Check the key and the client's state; both are programming errors, so raise."""
        key = (
            new_idempotency_key()
            if idempotency_key is None
            else check_idempotency_key(idempotency_key)
        )
        self._check_usable()
        return key

    async def _deliver(
        self, kind: EventKind, event: LeadEvent | SaleEvent, idempotency_key: str | None
    ) -> TrackResult:
        key = self._key_for_call(idempotency_key)
        if not self._settings.enabled:
            return self._disabled(kind, key)
        return await self._send(kind, encode_event(event), key)

    async def _enqueue(
        self, kind: EventKind, event: LeadEvent | SaleEvent, idempotency_key: str | None
    ) -> Delivery:
        key = self._key_for_call(idempotency_key)
        if not self._settings.enabled:
            return Delivery.resolved(kind, key, self._disabled(kind, key))
        queue = self._background_queue()
        body = encode_event(event)
        if isinstance(queue, OutboxQueue):
            delivery, accepted = await queue.submit(kind, body, key)
        else:
            delivery, accepted = queue.submit(kind, body, key)
        if accepted:
            self._counts.queued += 1
        return delivery

    def _background_queue(self) -> BackgroundQueue | OutboxQueue:
        if self._queue is None:
            if self._outbox is not None:
                retry = self._background_retry
                self._queue = OutboxQueue(
                    self._outbox,
                    self._send_once,
                    breaker=self._breaker,
                    concurrency=self._settings.max_in_flight,
                    backoff=retry.backoff,
                    retry_after_max=retry.retry_after_max,
                    send_grace=self._single_attempt.deadline,
                    on_result=self._background_done,
                    on_settled=self._outbox_settled,
                )
            else:
                self._queue = BackgroundQueue(
                    self._send_in_background,
                    workers=self._settings.max_in_flight,
                    max_queue=self._max_queue,
                    on_result=self._background_done,
                )
        return self._queue

    async def _send_once(self, kind: EventKind, body: bytes, key: str, probe: bool) -> TrackResult:
        # One attempt per claim: the outbox reschedules, so retries survive restarts. Its
        # pump asked the breaker before claiming the row (``probe``), so no gating here.
        return await self._send(kind, body, key, self._single_attempt, count=False, probe=probe)

    def _outbox_settled(self, outcome: Settle) -> None:
        if outcome.delivered:
            self._counts.sent += 1
        elif outcome.retry_at is not None:
            self._counts.retried += 1
        else:
            self._counts.failed += 1
            self._counts.dead_lettered += 1
            logger.error(
                "taapit %s moved to the outbox's dead letters: %s (idempotency key %s)",
                outcome.row.kind, outcome.error, outcome.row.idempotency_key,
            )  # fmt: skip

    async def _send_in_background(self, kind: EventKind, body: bytes, key: str) -> TrackResult:
        return await self._send(kind, body, key, self._background_retry, gated=True)

    def _background_done(self, delivery: Delivery, result: TrackResult) -> None:
        code = result.error.code if result.error is not None else None
        if code in {ErrorCode.QUEUE_FULL, ErrorCode.SHUTDOWN, ErrorCode.OUTBOX_ERROR}:
            self._counts.dropped += 1
            logger.warning("taapit %s dropped: %s", delivery.kind, result.error)
        if self._on_result is not None:
            try:
                self._on_result(delivery, result)
            except Exception:  # a user's hook must not stop the workers
                logger.exception("taapit: the on_result hook raised; ignored")

    def _disabled(self, kind: EventKind, key: str) -> TrackResult:
        return TrackResult(
            success=False,
            error=DisabledError(
                f"{kind} not sent: tracking is disabled (enabled=False or TAAPIT_ENABLED=0)"
            ),
            idempotency_key=key,
        )

    async def _send(
        self,
        kind: EventKind,
        body: bytes,
        key: str,
        retry: RetryPolicy | None = None,
        *,
        count: bool = True,
        gated: bool = False,
        probe: bool = False,
    ) -> TrackResult:
        """Send with retries; ``gated`` (background) attempts wait for the breaker.

        A background event's deadline starts with its first attempt: while the breaker holds
        delivery back, queued events wait rather than expire. ``probe`` says the caller
        already holds the breaker's probe for the first attempt.
        """
        retry = retry or self._settings.retry
        url = self._urls[kind]
        headers = {"Idempotency-Key": key}
        loop = asyncio.get_running_loop()
        if gated:
            probe = await self._breaker.admit()
        deadline_at = loop.time() + retry.deadline
        attempts = 0
        status: int | None = None
        error: APIError
        task = asyncio.current_task()
        assert task is not None  # a coroutine awaited on a loop runs in a task
        cancelling = task.cancelling()
        self._deadlines.add(task, deadline_at, loop)
        try:
            while True:
                attempts += 1
                status, outcome = await self._attempt(kind, url, headers, body, probe)
                if not isinstance(outcome, APIError):
                    logger.debug(
                        "taapit %s accepted (HTTP %s, attempt %d, idempotency key %s)",
                        kind, status, attempts, key,
                    )  # fmt: skip
                    result = TrackResult(
                        success=True,
                        status_code=status,
                        attempts=attempts,
                        idempotency_key=key,
                        event_id=outcome,
                    )
                    break
                error = outcome
                wait = _wait_before_retry(error, attempts, retry)
                if wait is None or loop.time() + wait >= deadline_at:
                    result = _failure(error, status, attempts, key)
                    break
                logger.debug(
                    "taapit %s attempt %d failed (%s); retrying in %.3fs",
                    kind, attempts, error, wait,
                )  # fmt: skip
                await _sleep(wait)
                probe = await self._breaker.admit() if gated else False
        except asyncio.CancelledError:
            # Ours only if the deadline cancelled the task and nobody else did too.
            if not self._deadlines.expired(task) or task.uncancel() > cancelling:
                raise
            error = APITimeoutError(
                f"no reply within the call's deadline of {retry.deadline:g}s "
                f"({attempts} attempt(s)); raise deadline= if Taapit is known to be slow"
            )
            result = _failure(error, None, attempts, key)
        finally:
            self._deadlines.discard(task)
        if count:
            self._counts.sent += result.success
            self._counts.failed += not result.success
            self._counts.retried += attempts - 1
        if not result.success:
            # An outbox attempt (count=False) is not the end of its event: keep it quiet.
            logger.log(
                logging.WARNING if count else logging.DEBUG,
                "taapit %s not tracked after %d attempt(s): %s (idempotency key %s)",
                kind, attempts, result.error, key,
            )  # fmt: skip
        return result

    async def _attempt(
        self, kind: EventKind, url: str, headers: dict[str, str], body: bytes, probe: bool
    ) -> tuple[int | None, str | APIError | None]:
        """Make one HTTP attempt: the status and the event id, or the error it stands for.

        Its outcome goes to the breaker; ``probe`` says the breaker let it out as its probe.
        """
        try:
            async with self._gate:
                reply = await self._transport.post(url, headers, body)
        except APIError as exc:
            self._breaker.record(healthy=not exc.retryable, probe=probe)
            return None, exc
        except Exception as exc:  # noqa: BLE001 - never raise into the caller; logged
            self._breaker.release(probe)  # our bug says nothing about Taapit's health
            # As text, not exc_info: the frames hold the headers (API key) and the body.
            logger.error(
                "taapit %s: unexpected error while sending (please report it)\n%s",
                kind, traceback_text(exc),
            )  # fmt: skip
            return None, InternalError(f"unexpected {type(exc).__name__} while sending")
        except BaseException as exc:  # noqa: BLE001 - cancelled: no outcome to learn from
            self._breaker.release(probe)
            # On its way through the caller's code (their own timeout): the frames below
            # hold the headers, the API key among them, for error trackers to record.
            raise exc.with_traceback(None)  # noqa: B904 - the same exception
        outcome = _read_reply(reply)
        if isinstance(outcome, APIError):
            # Only a refusal (4xx, 5xx) can ask for a pause.
            if reply.status >= 400:
                outcome.retry_after = parse_retry_after(reply.retry_after)
            self._breaker.record(
                healthy=not outcome.retryable, probe=probe, pause=outcome.retry_after
            )
        else:
            self._breaker.record(healthy=True, probe=probe)
        return reply.status, outcome


def _wait_before_retry(error: APIError, attempts: int, retry: RetryPolicy) -> float | None:
    """Seconds to wait before the next attempt, or None when there must be none."""
    if not error.retryable or attempts > retry.max_retries:
        return None
    if error.retry_after is None:
        return retry.backoff(attempts)
    if error.retry_after <= retry.retry_after_max:
        return error.retry_after
    return None  # the server asks for a longer pause than an awaited call allows


def _failure(error: APIError, status: int | None, attempts: int, key: str) -> TrackResult:
    return TrackResult(
        success=False, error=error, status_code=status, attempts=attempts, idempotency_key=key
    )


class _Counts:
    """Mutable counters behind ``AsyncTaapit.stats``."""

    __slots__ = ("dead_lettered", "dropped", "failed", "queued", "retried", "sent")

    def __init__(self) -> None:
        self.queued = self.sent = self.retried = self.failed = self.dropped = 0
        self.dead_lettered = 0


def _transport_name(transport: object, *, http_client: object, http2: bool) -> str:
    if transport == "httpx":
        if http2 and http_client is not None:
            raise ConfigurationError(
                "http2=True configures the client the SDK builds, and http_client is your own: "
                "drop http2=True and build yours with httpx.AsyncClient(http2=True)"
            )
        if http2:
            try:
                import h2  # noqa: F401, PLC0415 (an optional extra)
            except ImportError:
                raise ConfigurationError(
                    "http2=True needs the h2 package: pip install 'taapit-async[http2]'"
                ) from None
        return transport
    if transport != "aiohttp":
        raise ConfigurationError(
            f"transport must be 'httpx' (the default) or 'aiohttp', not {transport!r}"
        )
    if http_client is not None:
        raise ConfigurationError(
            "http_client is an httpx client, so it needs transport='httpx' (the default): "
            "drop one of the two"
        )
    if http2:
        raise ConfigurationError(
            "transport='aiohttp' speaks HTTP/1.1 only: drop http2=True, or use the default "
            "transport='httpx' with taapit-async[http2]"
        )
    try:
        import aiohttp  # noqa: F401, PLC0415 (an optional extra)
    except ImportError:
        raise ConfigurationError(
            "transport='aiohttp' needs aiohttp: pip install 'taapit-async[aiohttp]'"
        ) from None
    return transport


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(f"{name} must be an int >= 1, not {value!r}")
    return value


def _positive_seconds(name: str, value: object) -> float:
    seconds = _seconds(name, value)
    if seconds == 0:
        raise ConfigurationError(f"{name} must be more than 0 seconds, not {value!r}")
    return seconds


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
        raise ConfigurationError(f"{name} must be a finite number of seconds >= 0, not {value!r}")
    return float(value)


def new_idempotency_key() -> str:
    """Return a fresh random idempotency key: 128 random bits as 32 hex digits."""
    return os.urandom(16).hex()  # as random as uuid4, a third of its cost


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
