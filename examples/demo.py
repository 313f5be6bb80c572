"""The taapit-async demo: no account, no network, a few seconds.

It starts the fake Taapit API as a real HTTP server on 127.0.0.1, points an ``AsyncTaapit``
at it, and walks one visitor through a lead and a sale. Then it sends a second sale while
the fake misbehaves (a 503, then a reply lost after the event was recorded) to show the
retries and the idempotency key at work, and prints what the fake recorded.

Run it with ``python3 -m nox -s demo`` (or ``python examples/demo.py`` in a venv that has
``taapit-async[server]``). It exits with status 1 if anything was not tracked as expected.
"""

from __future__ import annotations

import asyncio
import sys
from decimal import Decimal

from taapit_async import AsyncTaapit, Customer, TrackResult
from taapit_async.testing import FakeTaapit, FakeTaapitServer, RecordedEvent

# The id a Taapit deeplink gives a visitor (normally read from the ta_tid cookie).
TRACKING_ID = "rLnWe1uz9t282v7g"


def show_step(title: str, result: TrackResult) -> None:
    """Print one line per track call: what it was, and what became of it."""
    outcome = "tracked" if result.success else f"NOT tracked: {result.error}"
    print(f"  {title:<38} {outcome} (HTTP {result.status_code}, {result.attempts} attempt(s))")


def show_events(fake: FakeTaapit, events: list[RecordedEvent]) -> None:
    """Print the fake's records as a table."""
    header = ("event", "tracking id", "customer", "amount", "idempotency key", "attempts")
    rows = [
        (
            event.kind,
            event.tracking_id or "-",
            event.customer.external_id,
            f"{event.amount} {(event.currency or '').upper()}" if event.amount is not None else "-",
            event.idempotency_key or "-",
            str(fake.attempts(event.idempotency_key)) if event.idempotency_key else "1",
        )
        for event in events
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("  " + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


async def journey(server: FakeTaapitServer) -> list[TrackResult]:
    """Send the demo's events through a real client to the fake over HTTP."""
    fake = server.fake
    # backoff_base is lowered so that the demo's retries take a fraction of a second.
    async with AsyncTaapit(fake.api_key, base_url=server.url, backoff_base=0.2) as taapit:
        print(f"Fake Taapit API listening on {server.url} (key {fake.api_key!r})\n")
        print("A visitor arrives through a Taapit link with ta_tid=" + TRACKING_ID)
        lead = await taapit.track.lead(
            tracking_id=TRACKING_ID,
            customer=Customer(external_id="user_123", email="john@example.com"),
            metadata={"source": "demo-signup"},
        )
        show_step("signs up -> lead", lead)
        sale = await taapit.track.sale(
            customer={"external_id": "user_123"},
            amount=Decimal("99.99"),
            currency="eur",
            metadata={"orderId": "order_456"},
            idempotency_key="order_456",
        )
        show_step("pays EUR 99.99 -> sale", sale)

        print("\nThe fake now fails once with 503, then loses its reply after recording:")
        fake.fail_next(1, status=503)
        fake.drop_next(1, after_record=True)
        retried = await taapit.track.sale(
            customer={"external_id": "user_123"},
            amount=Decimal("19.00"),
            currency="eur",
            metadata={"orderId": "order_457"},
            idempotency_key="order_457",
        )
        show_step("pays EUR 19.00 -> sale (retried)", retried)
    return [lead, sale, retried]


def main() -> int:
    """Run the demo; return the process exit status."""
    with FakeTaapitServer() as server:
        results = asyncio.run(journey(server))
        fake = server.fake
        print("\nWhat the fake Taapit API recorded:")
        show_events(fake, fake.events)
        print("\nEvery request it received:")
        for request in fake.requests:
            fault = f"  <- injected {request.fault}" if request.fault else ""
            replay = "  (replayed the first reply)" if request.replayed else ""
            status = request.status if request.status is not None else "no reply"
            print(f"  {request.method} {request.path}  key={request.idempotency_key}  "
                  f"-> {status}{fault}{replay}")  # fmt: skip
        expected = [("lead", None), ("sale", Decimal("99.99")), ("sale", Decimal("19.00"))]
        recorded = [(e.kind, e.amount) for e in fake.events]
        attributed = all(e.tracking_id == TRACKING_ID for e in fake.leads)
    if all(r.success for r in results) and recorded == expected and attributed:
        print("\nOK: one lead and two sales, each recorded exactly once, despite the faults.")
        return 0
    print("\nFAILED: the fake did not record what the demo sent.", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
