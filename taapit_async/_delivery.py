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
from collections.abc import Awaitable, Callable
from typing import Final

import attrs

from ._errors import APIError, QueueFullError, ShutdownError
from ._models import EventKind, TrackResult

__all__ = [
    "DEFAULT_BACKGROUND_DEADLINE",
    "DEFAULT_BACKGROUND_MAX_RETRIES",
    "DEFAULT_DRAIN_TIMEOUT",
    "DEFAULT_MAX_QUEUE",
    "BackgroundQueue",
    "Delivery",
    "DeliveryStats",
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
        dropped: Background events refused (queue full) or abandoned at close.
        in_queue: Background events waiting or being sent right now.
    """

    queued: int = 0
    sent: int = 0
    retried: int = 0
    failed: int = 0
    dropped: int = 0
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
