"""A fake Taapit conversion-tracking API: a pure ASGI app that records what it accepted.

It validates request bodies on its own reading of the vendor reference and never imports
the SDK's client modules, so that a bug shared by the client's encoder and the fake's
validator cannot make the two agree by accident.
"""

from __future__ import annotations

import asyncio
import collections
import hmac
import html
import json
import math
import os
import random
import threading
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple, NoReturn

import attrs
import httpx

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
    from typing import TypeAlias

    Scope: TypeAlias = MutableMapping[str, Any]
    Message: TypeAlias = MutableMapping[str, Any]
    Receive: TypeAlias = Callable[[], Awaitable[Message]]
    Send: TypeAlias = Callable[[Message], Awaitable[None]]

__all__ = [
    "DEFAULT_API_KEY",
    "FakeTaapit",
    "FaultKind",
    "RecordedCustomer",
    "RecordedEvent",
    "RecordedRequest",
]

DEFAULT_API_KEY: Final = "taapit_sk_test"
"""The secret key a `FakeTaapit` accepts unless it is given another."""

EventKind = Literal["lead", "sale"]
FaultKind = Literal["error", "rate_limit", "delay", "drop", "drop_after_record"]

_ROUTES: Final[dict[str, EventKind]] = {
    "/api/events/lead": "lead",
    "/api/events/sale": "sale",
}
_CONTROL_PREFIX: Final = "/_fake/"
_CONTROL_ROOT: Final = "/_fake"
_MAX_BODY: Final = 1024 * 1024
_MAX_IDEMPOTENCY_KEY: Final = 255

# Header values are precomputed: benchmarks drive this app as fast as its server goes, and
# the ASGI server wants bytes anyway.
_JSON: Final = (b"content-type", b"application/json")
_REPLAYED: Final = (b"idempotent-replayed", b"true")
_WWW_AUTHENTICATE: Final = (b"www-authenticate", b'Bearer realm="taapit"')
_ALLOW_POST: Final = (b"allow", b"POST")
_ALLOW_GET: Final = (b"allow", b"GET")

_CUSTOMER_FIELDS: Final = frozenset(
    {"externalId", "email", "firstname", "lastname", "phoneNumber", "avatarUrl"}
)
_LEAD_FIELDS: Final = frozenset({"trackingId", "customer", "metadata"})
_SALE_FIELDS: Final = _LEAD_FIELDS | {"amount", "currency"}


class _DroppedConnection(Exception):
    """Raised by the app to make its server drop the connection without any reply.

    ``FakeTaapit.transport()`` turns it into the ``httpx.RemoteProtocolError`` a real drop
    gives, and ``FakeTaapitServer`` aborts the TCP connection when it sees it.
    """


class _Rejected(Exception):
    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


@attrs.frozen
class RecordedCustomer:
    """The ``customer`` object of an accepted event, in snake_case.

    Attributes:
        external_id: ``customer.externalId``.
        email: ``customer.email``, or None when absent or null.
        firstname: ``customer.firstname``, or None.
        lastname: ``customer.lastname``, or None.
        phone_number: ``customer.phoneNumber``, or None.
        avatar_url: ``customer.avatarUrl``, or None.
    """

    external_id: str
    email: str | None = None
    firstname: str | None = None
    lastname: str | None = None
    phone_number: str | None = None
    avatar_url: str | None = None


@attrs.frozen
class RecordedEvent:
    """An event the fake accepted (answered 200), in the order it was accepted.

    Attributes:
        kind: ``"lead"`` or ``"sale"``.
        event_id: The ``eventId`` the fake answered with.
        tracking_id: ``trackingId``, or None when absent or null (a sale for a known customer).
        customer: The customer, parsed.
        amount: The sale's amount exactly as sent (JSON numbers are read as `Decimal`);
            None for a lead.
        currency: The sale's currency, lowercased; None for a lead.
        metadata: ``metadata`` as sent, or None.
        idempotency_key: The ``Idempotency-Key`` header, or None.
        body: The whole parsed JSON body (numbers with a fraction as `Decimal`).
        headers: The request headers, names lowercased, with the ``authorization`` value
            replaced by ``"<redacted>"``.
    """

    kind: EventKind
    event_id: str
    tracking_id: str | None
    customer: RecordedCustomer
    amount: Decimal | None
    currency: str | None
    metadata: dict[str, Any] | None = attrs.field(hash=False)
    idempotency_key: str | None
    body: dict[str, Any] = attrs.field(hash=False)
    headers: dict[str, str] = attrs.field(hash=False)


@attrs.frozen
class RecordedRequest:
    """One request that reached the fake's API routes, whatever it was answered.

    Attributes:
        method: The HTTP method.
        path: The request path.
        idempotency_key: The ``Idempotency-Key`` header, or None.
        status: The status answered, or None when the connection was dropped.
        fault: The injected fault, or None when the request was handled normally.
        replayed: True when the answer was a stored idempotent reply.
        received_at: When the request arrived, in `time.monotonic` seconds (gaps between
            a client's retries are differences of these).
    """

    method: str
    path: str
    idempotency_key: str | None
    status: int | None
    fault: FaultKind | None
    replayed: bool
    received_at: float


@attrs.frozen
class _Fault:
    kind: FaultKind
    status: int = 0
    retry_after: str | None = None
    seconds: float = 0.0


@attrs.frozen
class _FaultPlan:
    error_rate: float
    drop_rate: float
    drop_after_record_share: float
    rate_limit_rate: float
    retry_after: str | None
    latency: float
    error_status: int
    rng: random.Random = attrs.field(eq=False)

    def draw(self) -> tuple[_Fault | None, float]:
        # Always three draws per request, so the fault given to the n-th request depends on
        # the seed and n alone, not on which faults came before it.
        pick, share, jitter = self.rng.random(), self.rng.random(), self.rng.random()
        fault: _Fault | None = None
        if pick < self.error_rate:
            fault = _Fault("error", status=self.error_status)
        elif pick < self.error_rate + self.drop_rate:
            after = share < self.drop_after_record_share
            fault = _Fault("drop_after_record" if after else "drop")
        elif pick < self.error_rate + self.drop_rate + self.rate_limit_rate:
            fault = _Fault("rate_limit", status=429, retry_after=self.retry_after)
        return fault, jitter * self.latency


class _Request:
    """The facts of one API request that handling needs, read from its scope once."""

    __slots__ = (
        "authorization",
        "content_type",
        "headers",
        "idempotency_key",
        "method",
        "path",
        "received_at",
    )

    def __init__(self, scope: Scope) -> None:
        self.received_at = time.monotonic()
        self.method: str = scope["method"]
        self.path: str = scope["path"]
        self.headers: Sequence[tuple[bytes, bytes]] = scope["headers"]
        self.authorization = self.content_type = b""
        self.idempotency_key: str | None = None
        for name, value in self.headers:
            if name == b"authorization":
                self.authorization = value
            elif name == b"content-type":
                self.content_type = value
            elif name == b"idempotency-key" and self.idempotency_key is None:
                self.idempotency_key = value.decode("latin-1")


class _Valid(NamedTuple):
    parsed: dict[str, Any]
    tracking_id: str | None
    customer: RecordedCustomer
    amount: Decimal | None
    currency: str | None
    metadata: dict[str, Any] | None


@attrs.frozen
class _StoredReply:
    path: str
    request_body: bytes
    status: int
    body: bytes


class FakeTaapit:
    """A fake Taapit API for tests, demos and benchmarks: a pure ASGI application.

    It answers ``POST /api/events/lead`` and ``POST /api/events/sale`` as the reference
    describes them: Bearer authentication, JSON bodies validated field by field (400 with
    ``{"success": false, "error": {"code", "message", "field"}}`` naming the field), a lead
    needs ``trackingId``, and so does a sale unless an accepted lead already made its
    ``customer.externalId`` known. It honours the ``Idempotency-Key`` header: a repeat gets
    the first reply again, byte for byte, and is not recorded twice. Other paths answer 404,
    other methods 405.

    Mount it in-process with `transport`, or serve it for real with `FakeTaapitServer`.
    All state is guarded by a lock, so a test thread may inspect a fake that a server
    thread is driving.

    Faults are injected on demand, before normal handling, and only on the two API routes:
    `fail_next`, `rate_limit_next`, `delay_next`, `drop_next`, a seeded random plan with
    `set_fault_rates`, and a constant added `latency`. A dropped connection raises a private
    exception that `transport` and `FakeTaapitServer` turn into a real drop; another ASGI
    server would answer it with a 500.

    Control endpoints, without authentication, let another process drive a served fake;
    their own traffic is neither faulted nor logged:

    - ``GET /_fake/``: a read-only HTML page of what it recorded (events, tracking ids,
      amounts, attempts, the request log with the faults injected), for people.
    - ``GET /_fake/events``: the accepted events as a JSON list (snake_case fields, amounts
      as JSON numbers, and ``attempts`` for the event's idempotency key).
    - ``GET /_fake/requests``: the request log.
    - ``GET /_fake/stats``: counts, cheap enough to poll during a benchmark.
    - ``POST /_fake/faults`` with one of ``{"fail": 2, "status": 503}``,
      ``{"rate_limit": 1, "retry_after": "1"}``, ``{"drop": 1, "after_record": true}``,
      ``{"delay": 1, "seconds": 0.5}``, ``{"error_rate": 0.2, "drop_rate": 0.05, "seed": 7}``
      (any `set_fault_rates` argument) or ``{"clear": true}``.
    - ``POST /_fake/reset``: forget everything, as `reset`.

    Args:
        api_key: The only secret key accepted.
        latency: Seconds added to every API request (see `latency`).

    Example:
        In a test, with any client that takes an httpx transport::

            fake = FakeTaapit()
            fake.fail_next(status=503)  # the first try fails, the retry goes through
            async with httpx.AsyncClient(
                transport=fake.transport(), base_url="http://taapit.test"
            ) as http:
                ...
            assert fake.attempts("order_456") == 2
            assert [sale.amount for sale in fake.sales] == [Decimal("99.99")]
    """

    def __init__(self, *, api_key: str = DEFAULT_API_KEY, latency: float = 0.0) -> None:
        if not api_key:
            msg = "api_key must be a non-empty string"
            raise ValueError(msg)
        self._api_key = api_key
        self._bearer = b"Bearer " + api_key.encode("latin-1")
        self._lock = threading.Lock()
        self._latency = 0.0
        self.latency = latency
        self._events: list[RecordedEvent] = []
        self._requests: list[RecordedRequest] = []
        self._replies: dict[str, _StoredReply] = {}
        self._attempts: collections.Counter[str] = collections.Counter()
        self._customers: set[str] = set()
        self._faults: collections.deque[_Fault] = collections.deque()
        self._plan: _FaultPlan | None = None
        # Running counts, so that `stats` stays cheap when a benchmark polls it.
        self._lead_count = self._replayed_count = self._fault_count = 0

    def __repr__(self) -> str:
        # The key is left out on purpose: reprs end up in logs and CI output.
        with self._lock:
            return f"FakeTaapit(events={len(self._events)}, requests={len(self._requests)})"

    # -- configuration and inspection -------------------------------------------------

    @property
    def api_key(self) -> str:
        """The secret key this fake accepts."""
        return self._api_key

    @property
    def latency(self) -> float:
        """Seconds slept before handling each API request, faulted or not (0 for none)."""
        return self._latency

    @latency.setter
    def latency(self, seconds: float) -> None:
        self._latency = _seconds("latency", seconds)

    @property
    def events(self) -> list[RecordedEvent]:
        """A copy of the accepted events, in the order they were accepted."""
        with self._lock:
            return list(self._events)

    @property
    def leads(self) -> list[RecordedEvent]:
        """A copy of the accepted lead events, in order."""
        with self._lock:
            return [event for event in self._events if event.kind == "lead"]

    @property
    def sales(self) -> list[RecordedEvent]:
        """A copy of the accepted sale events, in order."""
        with self._lock:
            return [event for event in self._events if event.kind == "sale"]

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of the log of requests to the API routes, in arrival order."""
        with self._lock:
            return list(self._requests)

    def attempts(self, idempotency_key: str) -> int:
        """Count the requests to the API routes that carried this ``Idempotency-Key``.

        Every attempt counts, faulted, rejected or replayed alike, so a client that retried a
        lost reply twice shows 3 attempts for one recorded event.

        Args:
            idempotency_key: The header value.

        Returns:
            The number of attempts, 0 for a key never seen.
        """
        with self._lock:
            return self._attempts[idempotency_key]

    def stats(self) -> dict[str, int]:
        """Count what the fake has seen, without copying its records.

        Returns:
            ``events``, ``leads``, ``sales``, ``requests``, ``replayed`` and ``faults``.
        """
        with self._lock:
            return {
                "events": len(self._events),
                "leads": self._lead_count,
                "sales": len(self._events) - self._lead_count,
                "requests": len(self._requests),
                "replayed": self._replayed_count,
                "faults": self._fault_count,
            }

    def add_customer(self, external_id: str) -> None:
        """Make a customer known, as an accepted lead would, so sales need no ``trackingId``.

        Args:
            external_id: The customer's ``externalId``.
        """
        with self._lock:
            self._customers.add(external_id)

    def reset(self) -> None:
        """Forget events, requests, idempotent replies, attempts, customers and faults.

        The API key and `latency` are configuration and stay as they are.
        """
        with self._lock:
            self._events.clear()
            self._requests.clear()
            self._replies.clear()
            self._attempts.clear()
            self._customers.clear()
            self._faults.clear()
            self._plan = None
            self._lead_count = self._replayed_count = self._fault_count = 0

    # -- faults -----------------------------------------------------------------------

    def fail_next(self, n: int = 1, status: int = 503) -> None:
        """Answer the next ``n`` API requests with an error status instead of handling them.

        Args:
            n: How many requests.
            status: Any 4xx or 5xx status; the JSON body's code follows it (``server_error``
                for 5xx, ``rate_limited`` for 429, ``unauthorized`` for 401/403, ``timeout``
                for 408, ``invalid_request`` otherwise).

        Raises:
            ValueError: ``n`` is below 1 or ``status`` is not an error status.
        """
        self._queue(n, _Fault("error", status=_error_status("status", status)))

    def rate_limit_next(self, n: int = 1, retry_after: str | int | None = "1") -> None:
        """Answer the next ``n`` API requests with 429 and a ``Retry-After`` header.

        Args:
            n: How many requests.
            retry_after: The header value as sent: seconds (``"2"`` or ``2``) or an HTTP
                date; None sends no header.

        Raises:
            ValueError: ``n`` is below 1.
        """
        self._queue(n, _Fault("rate_limit", status=429, retry_after=_retry_after(retry_after)))

    def delay_next(self, n: int = 1, *, seconds: float) -> None:
        """Sleep before handling each of the next ``n`` API requests, which then go on normally.

        Args:
            n: How many requests.
            seconds: How long each one waits (with `asyncio.sleep`), on top of `latency`.

        Raises:
            ValueError: ``n`` is below 1 or ``seconds`` is negative or not finite.
        """
        self._queue(n, _Fault("delay", seconds=_seconds("seconds", seconds)))

    def drop_next(self, n: int = 1, *, after_record: bool = False) -> None:
        """Drop the connection of the next ``n`` API requests without any reply.

        Args:
            n: How many requests.
            after_record: Handle the request first (record the event and store its
                idempotent reply), then drop: a reply lost on the way back, which a client
                can only recover from by retrying with the same idempotency key.

        Raises:
            ValueError: ``n`` is below 1.
        """
        self._queue(n, _Fault("drop_after_record" if after_record else "drop"))

    def set_fault_rates(
        self,
        *,
        error_rate: float = 0.0,
        drop_rate: float = 0.0,
        drop_after_record_share: float = 0.5,
        rate_limit_rate: float = 0.0,
        retry_after: str | int | None = "0",
        latency: float = 0.0,
        error_status: int = 503,
        seed: int | None = None,
    ) -> None:
        """Fault API requests at random, reproducibly, for soak tests.

        Each request that finds no fault queued by the ``*_next`` methods draws from a
        `random.Random` seeded with ``seed``: the same seed and the same sequence of
        requests give the same faults.

        Args:
            error_rate: Share of requests answered ``error_status``.
            drop_rate: Share of requests whose connection is dropped.
            drop_after_record_share: Share of those drops that happen after the event was
                recorded (a lost reply).
            rate_limit_rate: Share of requests answered 429 with ``retry_after``.
            retry_after: The ``Retry-After`` value of those 429 replies (None for none).
            latency: Each request also sleeps a uniform random time up to this many
                seconds, on top of `latency`.
            error_status: The status of the injected errors.
            seed: The seed; None seeds from the system.

        Raises:
            ValueError: A rate is outside [0, 1], the three rates add up to more than 1, or
                ``error_status`` is not an error status.
        """
        rates = {
            "error_rate": error_rate,
            "drop_rate": drop_rate,
            "drop_after_record_share": drop_after_record_share,
            "rate_limit_rate": rate_limit_rate,
        }
        for name, rate in rates.items():
            if not _is_number(rate) or not 0 <= rate <= 1:
                msg = f"{name} must be a number between 0 and 1, got {rate!r}"
                raise ValueError(msg)
        if error_rate + drop_rate + rate_limit_rate > 1:
            msg = "error_rate + drop_rate + rate_limit_rate must not exceed 1"
            raise ValueError(msg)
        plan = _FaultPlan(
            error_rate=float(error_rate),
            drop_rate=float(drop_rate),
            drop_after_record_share=float(drop_after_record_share),
            rate_limit_rate=float(rate_limit_rate),
            retry_after=_retry_after(retry_after),
            latency=_seconds("latency", latency),
            error_status=_error_status("error_status", error_status),
            # Not for security: a seeded generator is the point, so a soak run can be replayed.
            rng=random.Random(seed),  # noqa: S311
        )
        with self._lock:
            self._plan = plan

    def clear_faults(self) -> None:
        """Cancel the queued faults and the random plan (`latency` stays)."""
        with self._lock:
            self._faults.clear()
            self._plan = None

    def _queue(self, n: int, fault: _Fault) -> None:
        if not _is_int(n) or n < 1:
            msg = f"n must be a positive integer, got {n!r}"
            raise ValueError(msg)
        with self._lock:
            self._faults.extend([fault] * n)

    # -- in-process transport ---------------------------------------------------------

    def transport(self) -> httpx.AsyncBaseTransport:
        """Return an httpx transport that sends requests to this fake in-process.

        A dropped connection surfaces as the ``httpx.RemoteProtocolError`` that httpx raises
        when a real server disconnects without answering.

        Returns:
            A new transport; pass it to ``httpx.AsyncClient(transport=...)``.
        """
        return _FakeTransport(self)

    # -- ASGI -------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve one ASGI connection (http and lifespan; websockets are refused).

        Args:
            scope: The ASGI connection scope.
            receive: The ASGI receive callable.
            send: The ASGI send callable.
        """
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "websocket":
            # Closing before accepting makes the server refuse the handshake (HTTP 403).
            await receive()
            await send({"type": "websocket.close", "code": 1008})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        event_kind = _ROUTES.get(path)
        if event_kind is None and (path.startswith(_CONTROL_PREFIX) or path == _CONTROL_ROOT):
            await self._control(scope, receive, send)
            return
        request = _Request(scope)
        if event_kind is None:
            await self._refuse(request, 404, _error("not_found", f"no route for {path}"), send)
            return
        if request.method != "POST":
            body = _error("method_not_allowed", f"{path} accepts POST only")
            await self._refuse(request, 405, body, send, _ALLOW_POST)
            return

        request_body = await _read_body(receive)
        key = request.idempotency_key
        with self._lock:
            if key is not None:
                self._attempts[key] += 1
            fault = self._faults.popleft() if self._faults else None
            jitter = 0.0
            if fault is None and self._plan is not None:
                fault, jitter = self._plan.draw()

        pause = self._latency + jitter + (fault.seconds if fault is not None else 0.0)
        if pause:
            await asyncio.sleep(pause)

        if fault is not None and fault.kind in ("error", "rate_limit", "drop"):
            await self._inject(fault, request, send)
            return
        if request_body is None:
            # The client hung up while sending the body: there is nobody left to answer.
            return

        status, body, replayed = self._handle(event_kind, request, request_body)
        fault_kind = fault.kind if fault is not None else None
        if fault_kind == "drop_after_record":
            self._log(request, None, fault_kind, replayed=replayed)
            raise _DroppedConnection
        self._log(request, status, fault_kind, replayed=replayed)
        extra = _REPLAYED if replayed else _WWW_AUTHENTICATE if status == 401 else None
        await _respond(send, status, body, extra)

    async def _refuse(
        self,
        request: _Request,
        status: int,
        body: bytes,
        send: Send,
        extra: tuple[bytes, bytes] | None = None,
    ) -> None:
        self._log(request, status, None, replayed=False)
        await _respond(send, status, body, extra)

    async def _inject(self, fault: _Fault, request: _Request, send: Send) -> None:
        if fault.kind == "drop":
            self._log(request, None, "drop", replayed=False)
            raise _DroppedConnection
        self._log(request, fault.status, fault.kind, replayed=False)
        extra = None
        if fault.retry_after is not None:
            extra = (b"retry-after", fault.retry_after.encode("latin-1"))
        body = _error(_code_for_status(fault.status), f"injected fault: HTTP {fault.status}")
        await _respond(send, fault.status, body, extra)

    def _log(
        self, request: _Request, status: int | None, fault: FaultKind | None, *, replayed: bool
    ) -> None:
        record = RecordedRequest(
            method=request.method,
            path=request.path,
            idempotency_key=request.idempotency_key,
            status=status,
            fault=fault,
            replayed=replayed,
            received_at=request.received_at,
        )
        with self._lock:
            self._requests.append(record)
            self._replayed_count += replayed
            self._fault_count += fault is not None

    def _handle(
        self, kind: EventKind, request: _Request, request_body: bytes
    ) -> tuple[int, bytes, bool]:
        """Authenticate, dedupe, validate and record; returns (status, body, replayed)."""
        if not self._authorized(request.authorization):
            # The message never repeats what was received: it may be a real key sent here
            # by mistake, and test output is often public.
            message = "missing or invalid API key: send Authorization: Bearer <secret key>"
            return 401, _error("unauthorized", message), False
        key = request.idempotency_key
        if key is not None and not 0 < len(key) <= _MAX_IDEMPOTENCY_KEY:
            message = f"Idempotency-Key must be 1 to {_MAX_IDEMPOTENCY_KEY} characters long"
            return 400, _error("invalid_request", message, "Idempotency-Key"), False

        # Parsing and validating touch no shared state, so they run outside the lock.
        outcome: _Valid | _Rejected
        try:
            outcome = _validate(kind, request.content_type, request_body)
        except _Rejected as rejected:
            outcome = rejected

        with self._lock:
            if key is not None:
                stored = self._replies.get(key)
                if stored is not None:
                    if stored.path == request.path and stored.request_body == request_body:
                        return stored.status, stored.body, True
                    message = (
                        "this Idempotency-Key was already used with a different request; "
                        "use a new key for a new event"
                    )
                    return 422, _error("idempotency_key_reused", message, "Idempotency-Key"), False
            status, body = self._accept(kind, outcome, request)
            if key is not None:
                self._replies[key] = _StoredReply(request.path, request_body, status, body)
        return status, body, False

    def _accept(
        self, kind: EventKind, outcome: _Valid | _Rejected, request: _Request
    ) -> tuple[int, bytes]:
        # Called with the lock held: the known-customer check and the recording are one step.
        if isinstance(outcome, _Rejected):
            return 400, _error(outcome.code, outcome.message, outcome.field)
        customer = outcome.customer
        if outcome.tracking_id is None and (
            kind == "lead" or customer.external_id not in self._customers
        ):
            message = (
                "trackingId is required for a lead"
                if kind == "lead"
                else "trackingId is required for a new customer: no lead was tracked for "
                "this customer.externalId yet"
            )
            return 400, _error("missing_tracking_id", message, "trackingId")
        event_id = "evt_" + os.urandom(12).hex()
        self._events.append(
            RecordedEvent(
                kind=kind,
                event_id=event_id,
                tracking_id=outcome.tracking_id,
                customer=customer,
                amount=outcome.amount,
                currency=outcome.currency,
                metadata=outcome.metadata,
                idempotency_key=request.idempotency_key,
                body=outcome.parsed,
                headers=_header_dict(request.headers),
            )
        )
        if kind == "lead":
            self._customers.add(customer.external_id)
            self._lead_count += 1
        return 200, b'{"success":true,"eventId":"' + event_id.encode() + b'"}'

    def _authorized(self, authorization: bytes) -> bool:
        if hmac.compare_digest(authorization, self._bearer):
            return True
        # The scheme is case-insensitive (RFC 9110); the exact form above is the fast path.
        scheme, _, credentials = authorization.partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(
            credentials.strip(), self._bearer[7:]
        )

    # -- control endpoints ------------------------------------------------------------

    async def _control(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        name = path[len(_CONTROL_PREFIX) :]
        if name == "":
            if method != "GET":
                await _respond(send, 405, _error("method_not_allowed", "use GET"), _ALLOW_GET)
                return
            await _respond_html(send, self._html_page().encode())
            return
        if name in ("events", "requests", "stats"):
            if method != "GET":
                await _respond(send, 405, _error("method_not_allowed", "use GET"), _ALLOW_GET)
                return
            await _respond(send, 200, self._inspect(name).encode())
            return
        if name not in ("faults", "reset"):
            await _respond(send, 404, _error("not_found", f"no control endpoint {path}"))
            return
        if method != "POST":
            await _respond(send, 405, _error("method_not_allowed", "use POST"), _ALLOW_POST)
            return
        body = await _read_body(receive)
        if name == "reset":
            self.reset()
        else:
            try:
                self._apply_fault_spec(json.loads(body or b"null"))
            except (ValueError, TypeError) as exc:
                await _respond(send, 400, _error("invalid_request", str(exc)))
                return
        await _respond(send, 200, b'{"success":true}')

    def _inspect(self, name: str) -> str:
        if name == "stats":
            return json.dumps(self.stats())
        if name == "requests":
            return _to_json([attrs.asdict(request) for request in self.requests])
        with self._lock:
            events = list(self._events)
            attempts = dict(self._attempts)
        items = []
        for event in events:
            item = attrs.asdict(event, recurse=True)
            key = event.idempotency_key
            item["attempts"] = attempts.get(key, 0) if key is not None else None
            items.append(item)
        return _to_json(items)

    def _html_page(self) -> str:
        with self._lock:
            events = list(self._events)
            requests = list(self._requests)
            attempts = dict(self._attempts)
            pending = list(self._faults)
            plan = self._plan
        # Counted from the one snapshot, so the summary always agrees with the tables.
        leads = sum(event.kind == "lead" for event in events)
        stats = {
            "events": len(events),
            "leads": leads,
            "sales": len(events) - leads,
            "requests": len(requests),
            "replayed": sum(request.replayed for request in requests),
            "faults": sum(request.fault is not None for request in requests),
        }
        return _render_page(
            stats,
            _table(_EVENT_COLUMNS, _event_rows(events, attempts), "No event recorded yet."),
            _table(_REQUEST_COLUMNS, _request_rows(requests), "No request yet."),
            _fault_lines(pending, plan),
        )

    def _apply_fault_spec(self, spec: object) -> None:
        if not isinstance(spec, dict):
            msg = "the body must be a JSON object"
            raise TypeError(msg)
        spec = dict(spec)
        if spec.pop("clear", None) is True and not spec:
            self.clear_faults()
        elif "fail" in spec:
            _only(spec, {"fail", "status"})
            self.fail_next(spec["fail"], spec.get("status", 503))
        elif "rate_limit" in spec:
            _only(spec, {"rate_limit", "retry_after"})
            self.rate_limit_next(spec["rate_limit"], spec.get("retry_after", "1"))
        elif "drop" in spec:
            _only(spec, {"drop", "after_record"})
            self.drop_next(spec["drop"], after_record=spec.get("after_record", False) is True)
        elif "delay" in spec:
            _only(spec, {"delay", "seconds"})
            self.delay_next(spec["delay"], seconds=spec.get("seconds", 1.0))
        elif spec.keys() & {"error_rate", "drop_rate", "rate_limit_rate"}:
            self.set_fault_rates(**spec)
        else:
            msg = (
                "expected one of fail, rate_limit, drop, delay, clear, "
                "or error_rate/drop_rate/rate_limit_rate"
            )
            raise ValueError(msg)


class _FakeTransport(httpx.AsyncBaseTransport):
    """`httpx.ASGITransport` to a fake, with its dropped connections made real."""

    def __init__(self, fake: FakeTaapit) -> None:
        self._inner = httpx.ASGITransport(app=fake)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await self._inner.handle_async_request(request)
        except _DroppedConnection:
            # Exactly what httpx raises when a real server hangs up without answering, so a
            # client's error handling is exercised as it will be in production.
            message = "Server disconnected without sending a response."
            raise httpx.RemoteProtocolError(message, request=request) from None

    async def aclose(self) -> None:
        await self._inner.aclose()


# -- validation ----------------------------------------------------------------------


def _reject_constant(name: str) -> NoReturn:
    # Python's json accepts NaN and Infinity, which are not JSON; a real server refuses them.
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


# Built once: json.loads() with options builds a new decoder, and its scanner, on every call.
_DECODER: Final = json.JSONDecoder(parse_float=Decimal, parse_constant=_reject_constant)
_ENCODER: Final = json.JSONEncoder(separators=(",", ":"))


def _is_json(content_type: bytes) -> bool:
    media = content_type.partition(b";")[0].strip().lower()
    return media == b"application/json" or (
        media.startswith(b"application/") and media.endswith(b"+json")
    )


def _validate(kind: EventKind, content_type: bytes, request_body: bytes) -> _Valid:
    """Check a body against the reference; raise `_Rejected` naming the field at fault."""
    if not _is_json(content_type):
        raise _Rejected("invalid_request", "Content-Type must be application/json", "Content-Type")
    if len(request_body) > _MAX_BODY:
        raise _Rejected("invalid_request", f"the body is over {_MAX_BODY} bytes")
    try:
        parsed = _DECODER.decode(request_body.decode())
    except ValueError as exc:
        raise _Rejected("invalid_request", f"the body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise _Rejected("invalid_request", "the body must be a JSON object")

    allowed = _LEAD_FIELDS if kind == "lead" else _SALE_FIELDS
    for key in parsed:
        if key not in allowed:
            if key in ("amount", "currency") and parsed[key] is None:
                continue  # null means absent, on a lead too
            if key in ("amount", "currency"):
                raise _Rejected("invalid_request", f"{key} is only accepted on a sale", key)
            raise _Rejected("invalid_request", f"unknown field {key!r}", key)

    tracking_id = parsed.get("trackingId")
    if tracking_id is not None and (not isinstance(tracking_id, str) or not tracking_id):
        raise _Rejected("invalid_request", "trackingId must be a non-empty string", "trackingId")
    customer = _customer(parsed.get("customer"))
    metadata = parsed.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise _Rejected("invalid_request", "metadata must be a JSON object", "metadata")

    amount: Decimal | None = None
    currency: str | None = None
    if kind == "sale":
        amount = _amount(parsed.get("amount"))
        currency = _currency(parsed.get("currency"))
    return _Valid(parsed, tracking_id, customer, amount, currency, metadata)


def _customer(value: object) -> RecordedCustomer:
    if value is None:
        raise _Rejected("invalid_request", "customer is required", "customer")
    if not isinstance(value, dict):
        raise _Rejected("invalid_request", "customer must be a JSON object", "customer")
    for key, item in value.items():
        if key not in _CUSTOMER_FIELDS:
            raise _Rejected("invalid_request", f"unknown field 'customer.{key}'", f"customer.{key}")
        if item is not None and not isinstance(item, str):
            message = f"customer.{key} must be a string"
            raise _Rejected("invalid_request", message, f"customer.{key}")
    get = value.get
    external_id = get("externalId")
    if external_id is None or not external_id.strip():
        message = "customer.externalId is required and must be a non-empty string"
        raise _Rejected("invalid_request", message, "customer.externalId")
    return RecordedCustomer(
        external_id,
        get("email"),
        get("firstname"),
        get("lastname"),
        get("phoneNumber"),
        get("avatarUrl"),
    )


def _amount(value: object) -> Decimal:
    if value is None:
        raise _Rejected("invalid_request", "amount is required for a sale", "amount")
    # bool is an int in Python but not a number in JSON; "12.5" is a string, not a number.
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        message = "amount must be a JSON number in currency units"
        raise _Rejected("invalid_request", message, "amount")
    amount = Decimal(value)
    if not amount.is_finite() or amount < 0:
        raise _Rejected("invalid_request", "amount must be zero or more", "amount")
    return amount


def _currency(value: object) -> str:
    if value is None:
        raise _Rejected("invalid_request", "currency is required for a sale", "currency")
    if not isinstance(value, str) or len(value) != 3 or not (value.isascii() and value.isalpha()):
        message = "currency must be a 3-letter ISO 4217 code such as eur"
        raise _Rejected("invalid_request", message, "currency")
    return value.lower()


# -- small helpers -------------------------------------------------------------------


def _header_dict(raw_headers: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    # ASGI servers lowercase header names, so the fast path only decodes; a repeated header
    # (fewer keys than headers) takes the slow path and is joined with commas.
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in raw_headers}
    if len(headers) != len(raw_headers):
        headers = {}
        for raw_name, raw_value in raw_headers:
            name, value = raw_name.decode("latin-1"), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    if "authorization" in headers:
        headers["authorization"] = "<redacted>"
    return headers


def _is_int(value: object) -> bool:
    # bool is an int in Python, never what a caller meant by a count or a status.
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _error_status(name: str, value: int) -> int:
    if not _is_int(value) or not 400 <= value <= 599:
        msg = f"{name} must be an HTTP error status (400-599), got {value!r}"
        raise ValueError(msg)
    return value


def _code_for_status(status: int) -> str:
    if status >= 500:
        return "server_error"
    return {429: "rate_limited", 401: "unauthorized", 403: "unauthorized", 408: "timeout"}.get(
        status, "invalid_request"
    )


def _error(code: str, message: str, field: str | None = None) -> bytes:
    error: dict[str, str] = {"code": code, "message": message}
    if field is not None:
        error["field"] = field
    return _ENCODER.encode({"success": False, "error": error}).encode()


def _seconds(name: str, value: float) -> float:
    if not _is_number(value) or not math.isfinite(value):
        msg = f"{name} must be a finite number of seconds, got {value!r}"
        raise ValueError(msg)
    if value < 0:
        msg = f"{name} must not be negative, got {value!r}"
        raise ValueError(msg)
    return float(value)


def _retry_after(value: str | int | None) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        msg = f"retry_after must be a str, an int or None, got {value!r}"
        raise TypeError(msg)
    return str(value)


def _only(spec: Mapping[str, object], allowed: set[str]) -> None:
    unknown = sorted(spec.keys() - allowed)
    if unknown:
        msg = f"unexpected keys {unknown} with {sorted(allowed)}"
        raise ValueError(msg)


def _to_json(value: object) -> str:
    """Serialize like `json.dumps`, but write a `Decimal` as the exact JSON number it was."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dict):
        items = (f"{json.dumps(str(key))}:{_to_json(item)}" for key, item in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_to_json(item) for item in value) + "]"
    return json.dumps(value)


# -- the HTML page -------------------------------------------------------------------

# Everything recorded came from a client and is escaped; the policy forbids scripts anyway.
_HTML_HEADERS: Final = (
    (b"content-type", b"text/html; charset=utf-8"),
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'none'; style-src 'unsafe-inline'"),
    (b"x-content-type-options", b"nosniff"),
)
_PAGE_STYLE: Final = (
    "body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem}"
    "table{border-collapse:collapse;margin:.5rem 0 1.5rem}"
    "th,td{border:1px solid #ccc;padding:.25rem .5rem;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3}td.fault{color:#a00}"
)
_FAULT_LABELS: Final[dict[FaultKind, str]] = {
    "error": "error status",
    "rate_limit": "rate limited",
    "delay": "delayed",
    "drop": "connection dropped",
    "drop_after_record": "reply lost after recording",
}


def _escape(value: object) -> str:
    return html.escape("-" if value is None else str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]], empty: str) -> str:
    if not rows:
        return f"<p>{_escape(empty)}</p>"
    head = "".join(f"<th>{_escape(name)}</th>" for name in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{_escape(cell)}</td>" for cell in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _describe_fault(fault: _Fault) -> str:
    if fault.kind == "error":
        return f"HTTP {fault.status}"
    if fault.kind == "rate_limit":
        return f"HTTP 429, Retry-After {fault.retry_after or 'absent'}"
    if fault.kind == "delay":
        return f"delay {fault.seconds:g} s"
    return _FAULT_LABELS[fault.kind]


_EVENT_COLUMNS: Final = (
    "#", "kind", "tracking id", "customer", "email", "amount", "idempotency key", "attempts",
    "metadata", "event id",
)  # fmt: skip
_REQUEST_COLUMNS: Final = (
    "received", "method", "path", "idempotency key", "status", "fault", "replayed",
)  # fmt: skip


def _event_rows(
    events: Sequence[RecordedEvent], attempts: Mapping[str, int]
) -> list[tuple[object, ...]]:
    return [
        (
            number,
            event.kind,
            event.tracking_id,
            event.customer.external_id,
            event.customer.email,
            None if event.amount is None else f"{event.amount} {(event.currency or '').upper()}",
            event.idempotency_key,
            attempts.get(event.idempotency_key, 0) if event.idempotency_key else None,
            None if event.metadata is None else _to_json(event.metadata),
            event.event_id,
        )
        for number, event in enumerate(events, 1)
    ]


def _request_rows(requests: Sequence[RecordedRequest]) -> list[tuple[object, ...]]:
    start = requests[0].received_at if requests else 0.0
    return [
        (
            f"+{request.received_at - start:.3f} s",
            request.method,
            request.path,
            request.idempotency_key,
            "no reply" if request.status is None else request.status,
            None if request.fault is None else _FAULT_LABELS[request.fault],
            "yes" if request.replayed else "",
        )
        for request in requests
    ]


def _fault_lines(pending: Sequence[_Fault], plan: _FaultPlan | None) -> list[str]:
    lines = ["no fault queued"]
    if pending:
        lines = [f"next {len(pending)} requests: " + ", ".join(map(_describe_fault, pending))]
    if plan is not None:
        lines.append(
            f"random faults: error rate {plan.error_rate:g} (HTTP {plan.error_status}), "
            f"drop rate {plan.drop_rate:g}, rate-limit rate {plan.rate_limit_rate:g}, "
            f"latency up to {plan.latency:g} s"
        )
    return lines


def _render_page(
    stats: Mapping[str, int], events_table: str, requests_table: str, faults: Sequence[str]
) -> str:
    """The ``GET /_fake/`` page: every value escaped, nothing but HTML and a little CSS."""
    summary = (
        f"{stats['events']} events ({stats['leads']} leads, {stats['sales']} sales) "
        f"from {stats['requests']} requests; {stats['replayed']} replayed, "
        f"{stats['faults']} faults injected"
    )
    fault_items = "".join(f"<li>{_escape(line)}</li>" for line in faults)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>Fake Taapit API</title><style>{_PAGE_STYLE}</style></head><body>"
        f'<h1>Fake Taapit API</h1><p id="summary">{_escape(summary)}</p>'
        f"<h2>Events recorded</h2>{events_table}<h2>Requests</h2>{requests_table}"
        f"<h2>Faults</h2><ul>{fault_items}</ul>"
        "<p>Read-only. JSON: <code>/_fake/events</code>, <code>/_fake/requests</code>, "
        "<code>/_fake/stats</code>.</p></body></html>"
    )


async def _respond_html(send: Send, body: bytes) -> None:
    headers = [*_HTML_HEADERS, (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Receive) -> bytes | None:
    """Read the whole request body; None when the client disconnected first."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk: bytes = message.get("body", b"")
        if not message.get("more_body", False):
            # The common case is one chunk: no join, no copy.
            return b"".join((*chunks, chunk)) if chunks else chunk
        chunks.append(chunk)


async def _respond(
    send: Send, status: int, body: bytes, extra: tuple[bytes, bytes] | None = None
) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    if extra is not None:
        headers.append(extra)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
