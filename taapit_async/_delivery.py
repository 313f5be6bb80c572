"""Background delivery: a bounded in-memory queue drained by worker tasks the client owns.

A background call returns as soon as its event is queued. Nothing is ever dropped
silently: a full queue resolves the event's ``Delivery`` at once with a ``queue_full``
failure (logged and counted), and events still queued when the client closes past its
drain deadline resolve with a ``shutdown`` failure, also logged and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

import attrs

from ._breaker import CircuitBreaker
from ._errors import (
    APIError,
    ErrorCode,
    InOutboxError,
    QueueFullError,
    ShutdownError,
    traceback_text,
)
from ._models import EventKind, TrackResult
from ._outbox import ClaimedRow, Outbox, OutboxError, Settle

__all__ = [
    "DEFAULT_BACKGROUND_DEADLINE",
    "DEFAULT_BACKGROUND_MAX_RETRIES",
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_MAX_QUEUE",
    "BackgroundQueue",
    "Delivery",
    "DeliveryStats",
    "OutboxQueue",
]

logger: Final = logging.getLogger("taapit_async")

#: Background events held in memory at most; beyond that, calls get ``queue_full``.
DEFAULT_MAX_QUEUE: Final = 10_000
#: Retries of a background event after its first attempt.
DEFAULT_BACKGROUND_MAX_RETRIES: Final = 5
#: Seconds a background event may take in total, retries and waits included.
DEFAULT_BACKGROUND_DEADLINE: Final = 60.0
#: Seconds ``aclose()`` waits for queued events before giving up on them.
DEFAULT_DRAIN_TIMEOUT: Final = 5.0

Deliver = Callable[[EventKind, bytes, str], Awaitable[TrackResult]]


@attrs.frozen
class DeliveryStats:
    """Counters of one client since it was created (a snapshot; read ``taapit.stats``).

    Attributes:
        queued: Events accepted by ``background.lead/sale``.
        sent: Events Taapit accepted (awaited and background).
        retried: Retries made (attempts after the first), all events together.
        failed: Events that ended in failure after their attempts (awaited and background).
        dropped: Background events refused (queue full, outbox unwritable) or abandoned
            at close.
        dead_lettered: Outbox events moved to the dead letters after their budget.
        in_queue: Background events of this process waiting or being sent right now.
    """

    queued: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    dropped: int = 0
    dead_lettered: int = 0
    in_queue: int = 0


class Delivery:
    """The handle of one background event: ``await delivery.result()`` for its outcome.

    Attributes:
        kind: ``"lead"`` or ``"sale"``.
        idempotency_key: The key every attempt of this event carries.

    Example:
        >>> delivery = await taapit.background.sale(customer=..., amount=10, currency="eur")
        >>> result = await delivery.result()  # later, if you care
    """

    __slots__ = ("_future", "idempotency_key", "kind")

    def __init__(self, kind: EventKind, idempotency_key: str, future: asyncio.Future[TrackResult]):
        self.kind = kind
        self.idempotency_key = idempotency_key
        self._future = future

    def __repr__(self) -> str:
        state = "done" if self._future.done() else "pending"
        return f"<Delivery {self.kind} {self.idempotency_key!r} {state}>"

    @classmethod
    def resolved(cls, kind: EventKind, idempotency_key: str, result: TrackResult) -> Delivery:
        """A handle whose outcome is already known (disabled mode, say)."""
        future: asyncio.Future[TrackResult] = asyncio.get_running_loop().create_future()
        future.set_result(result)
        return cls(kind, idempotency_key, future)

    def done(self) -> bool:
        """True once the event was delivered or has finally failed."""
        return self._future.done()

    async def result(self) -> TrackResult:
        """Wait for the event's outcome; failures are in the result, never raised.

        Cancelling the wait does not cancel the delivery.
        """
        return await asyncio.shield(self._future)


@attrs.frozen(eq=False)
class _Item:
    body: bytes
    delivery: Delivery


class BackgroundQueue:
    """The queue and its workers; one per client, created on the first background call."""

    def __init__(
        self,
        deliver: Deliver,
        *,
        workers: int,
        max_queue: int,
        on_result: Callable[[Delivery, TrackResult], None],
    ) -> None:
        self._deliver = deliver
        self._queue: asyncio.Queue[_Item] = asyncio.Queue(max_queue)
        self._worker_count = workers
        self._workers: list[asyncio.Task[None]] = []
        self._on_result = on_result
        self._in_flight: set[_Item] = set()

    def __len__(self) -> int:
        return self._queue.qsize() + len(self._in_flight)

    def submit(self, kind: EventKind, body: bytes, key: str) -> tuple[Delivery, bool]:
        """Queue an event; return its handle and whether it was accepted."""
        loop = asyncio.get_running_loop()
        delivery = Delivery(kind, key, loop.create_future())
        item = _Item(body, delivery)
        try:
            self._queue.put_nowait(item)
        except asyncio.QueueFull:
            self._finish(
                delivery,
                QueueFullError(
                    f"{kind} not queued: the background queue is full "
                    f"({self._queue.maxsize} events); Taapit may be down or slow, or raise "
                    "max_queue="
                ),
            )
            return delivery, False
        if not self._workers:
            self._workers = [
                loop.create_task(self._work(), name=f"taapit-worker-{i}")
                for i in range(self._worker_count)
            ]
        return delivery, True

    async def _work(self) -> None:
        while True:
            item = await self._queue.get()
            self._in_flight.add(item)
            try:
                delivery = item.delivery
                result = await self._deliver(delivery.kind, item.body, delivery.idempotency_key)
                self._resolve(delivery, result)
            finally:
                self._in_flight.discard(item)
                self._queue.task_done()

    def _resolve(self, delivery: Delivery, result: TrackResult) -> None:
        if not delivery._future.done():
            delivery._future.set_result(result)
            self._on_result(delivery, result)

    def _finish(self, delivery: Delivery, error: APIError) -> None:
        self._resolve(
            delivery,
            TrackResult(success=False, error=error, idempotency_key=delivery.idempotency_key),
        )

    async def flush(self, timeout: float | None) -> bool:
        """Wait until everything queued so far is delivered or failed; False on timeout."""
        try:
            async with asyncio.timeout(timeout):
                await self._queue.join()
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float) -> int:
        """Drain for up to ``timeout`` seconds, then stop; return how many were abandoned."""
        drained = await self.flush(timeout)
        # Snapshot what is being sent before cancelling: a cancelled worker forgets its item.
        left = [*self._in_flight]
        for task in self._workers:
            task.cancel()
        for task in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._workers = []
        if drained:
            return 0
        while not self._queue.empty():
            left.append(self._queue.get_nowait())
            self._queue.task_done()
        self._in_flight.clear()
        for item in left:
            self._finish(
                item.delivery,
                ShutdownError(
                    f"{item.delivery.kind} not delivered: the client closed before Taapit could be "
                    f"reached within the drain deadline of {timeout:g}s"
                ),
            )
        return len(left)


#: Seconds between two looks at the outbox when nothing is due (other processes may add).
OUTBOX_POLL_SECONDS: Final = 1.0

# kind, body, idempotency key, and whether the attempt is the breaker's probe.
SendOnce = Callable[[EventKind, bytes, str, bool], Awaitable[TrackResult]]


class OutboxQueue:
    """Background delivery through the durable outbox: commit, then a pump delivers.

    Deliveries made by this process resolve when their row is delivered or dead-lettered;
    rows left when the client closes stay in the file for the next start.
    """

    def __init__(
        self,
        outbox: Outbox,
        send_once: SendOnce,
        *,
        breaker: CircuitBreaker,
        concurrency: int,
        backoff: Callable[[int], float],
        retry_after_max: float,
        send_grace: float,
        on_result: Callable[[Delivery, TrackResult], None],
        on_settled: Callable[[Settle], None],
    ) -> None:
        self.outbox = outbox
        self._send_once = send_once
        self._breaker = breaker
        self._concurrency = concurrency
        self._backoff = backoff
        self._retry_after_max = retry_after_max
        self._send_grace = send_grace
        self._stopping = False
        self._sending = False
        self._on_result = on_result
        self._on_settled = on_settled
        self._local: dict[int, Delivery] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._pump_task: asyncio.Task[None] | None = None
        self._starting: asyncio.Lock | None = None

    def __len__(self) -> int:
        return len(self._local)

    async def start(self) -> None:
        """Open the file and start delivering whatever is pending in it."""
        if self._pump_task is not None:
            return
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:  # concurrent first calls start one pump, not several
            if self._pump_task is None:
                await self.outbox.open()
                self._pump_task = asyncio.get_running_loop().create_task(
                    self._pump(), name="taapit-outbox-pump"
                )

    async def submit(self, kind: EventKind, body: bytes, key: str) -> tuple[Delivery, bool]:
        """Commit an event to the file; return its handle and whether it was committed."""
        await self.start()
        future: asyncio.Future[TrackResult] = asyncio.get_running_loop().create_future()
        delivery = Delivery(kind, key, future)
        try:
            row_id = await self.outbox.add(kind, key, body)
        except OutboxError as exc:
            result = TrackResult(success=False, error=exc, idempotency_key=key)
            future.set_result(result)
            self._on_result(delivery, result)
            return delivery, False
        self._local[row_id] = delivery
        self._idle.clear()
        self._wake.set()
        return delivery, True

    async def _pump(self) -> None:
        while not self._stopping:
            # The breaker is consulted before claiming, never after: no lease is held while
            # delivery is paused. One row goes as the probe; after an outage the ramp sets
            # how many rows a second go out.
            breaker = self._breaker
            try:
                async with asyncio.timeout(OUTBOX_POLL_SECONDS):
                    await breaker.wait_ready()
            except TimeoutError:  # paused: meanwhile, learn what other processes sent
                await self._resolve_settled_elsewhere()
                continue
            probe = breaker.take_probe()
            limit = 1 if probe else breaker.ramp_allowance(self._concurrency * 4)
            try:
                rows = await self.outbox.claim(limit)
                if rows:
                    pace = 0.0 if probe else breaker.ramp_take(len(rows))
                    sends_probe, probe = probe, False  # the send records the probe's outcome
                    self._sending = True
                    try:
                        await self._deliver(rows, probe=sends_probe)
                    finally:
                        self._sending = False
                    if pace > 0:
                        await asyncio.sleep(pace)
                    continue
                await self._resolve_settled_elsewhere()
                due = await self.outbox.next_due()
            except OutboxError as exc:
                logger.error(
                    "taapit: the outbox failed; retrying in %gs\n%s",
                    OUTBOX_POLL_SECONDS, traceback_text(exc),
                )  # fmt: skip
                due = None
            finally:
                breaker.release(probe)  # a probe with no row to send
            wait = OUTBOX_POLL_SECONDS if due is None else due - time.time()
            self._wake.clear()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(wait, OUTBOX_POLL_SECONDS)):
                        await self._wake.wait()

    async def _resolve_settled_elsewhere(self) -> None:
        # Another process sharing the file may have sent (or dead-lettered) rows this one
        # committed; their handles must still resolve.
        if not self._local:
            return
        try:
            gone = await self.outbox.settled_elsewhere(list(self._local))
        except OutboxError as exc:
            logger.error("taapit: cannot read the outbox; will look again\n%s", traceback_text(exc))
            return
        for row_id, dead_reason in gone.items():
            delivery = self._local.pop(row_id)
            error = None
            if dead_reason is not None:
                error = APIError(
                    f"{delivery.kind} dead-lettered by another process sharing the outbox: "
                    f"{dead_reason}",
                    code=ErrorCode.DEAD_LETTER,
                )
            self._settle_delivery(
                delivery,
                TrackResult(
                    success=error is None, error=error, idempotency_key=delivery.idempotency_key
                ),
            )
        if not self._local:
            self._idle.set()

    def _settle_delivery(self, delivery: Delivery, result: TrackResult) -> None:
        if not delivery.done():
            delivery._future.set_result(result)
            self._on_result(delivery, result)

    async def _deliver(self, rows: list[ClaimedRow], *, probe: bool) -> None:
        results = await asyncio.gather(
            *(self._send_once(row.kind, row.body, row.idempotency_key, probe) for row in rows)  # type: ignore[arg-type]
        )
        outcomes = [self._decide(row, result) for row, result in zip(rows, results, strict=True)]
        await self.outbox.settle(outcomes)
        for outcome, result in zip(outcomes, results, strict=True):
            self._on_settled(outcome)
            final = outcome.delivered or outcome.retry_at is None
            delivery = self._local.pop(outcome.row.id, None) if final else None
            if delivery is not None:
                self._settle_delivery(delivery, result)
        if not self._local:
            self._idle.set()

    def _decide(self, row: ClaimedRow, result: TrackResult) -> Settle:
        if result.success:
            return Settle(row, delivered=True)
        error = result.error
        text = str(error) if error is not None else "unknown failure"
        attempts = row.attempts + 1
        too_old = time.time() - row.created_at >= self.outbox.max_age
        if error is None or not error.retryable or attempts >= self.outbox.max_attempts or too_old:
            return Settle(row, delivered=False, error=text)
        wait = error.retry_after
        if wait is None or wait > self._retry_after_max:
            # Background delivery honours even a long Retry-After by rescheduling.
            wait = self._backoff(attempts) if wait is None else wait
        return Settle(row, delivered=False, error=text, retry_at=time.time() + wait)

    async def flush(self, timeout: float | None) -> bool:
        """Wait until every event this process committed is delivered or dead-lettered."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def aclose(self, timeout: float) -> int:
        """Deliver for up to ``timeout`` seconds, then hand the rest over to the file.

        Returns 0: no event is abandoned, the rest waits in the file.
        """
        await self.flush(timeout)
        self._stopping = True
        pump = self._pump_task
        if pump is not None:
            if self._sending:
                # Let the batch on the wire finish and settle: cancelling it would release
                # rows Taapit may have recorded, and another process would send them again.
                await asyncio.wait({pump}, timeout=self._send_grace)
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
        left = list(self._local.values())
        self._local.clear()
        for delivery in left:
            result = TrackResult(
                success=False,
                error=InOutboxError(
                    f"{delivery.kind} not delivered yet: it stays in the outbox file and is "
                    "sent when a client opens the file again"
                ),
                idempotency_key=delivery.idempotency_key,
            )
            self._settle_delivery(delivery, result)
        await self.outbox.close()
        if left:
            logger.info(
                "taapit: %d background event(s) left in the outbox %s for the next start",
                len(left), str(self.outbox.path),
            )  # fmt: skip
        return 0  # nothing abandoned: the rows wait on disk
