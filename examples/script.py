"""Backfill past conversions into Taapit from a CSV file: plain asyncio, no web framework.

    TAAPIT_API_KEY=taapit_sk_... python examples/script.py conversions.csv \
        [--concurrency 32] [--transport aiohttp]

The CSV has a header row and the columns ``kind`` (``lead`` or ``sale``), ``tracking_id``,
``external_id``, ``email``, ``amount``, ``currency`` and ``order_id`` (empty cells are
absent values; ``amount`` is in currency units, ``29.99``). From Python, `backfill` takes
any iterable of `Conversion`, a list included.

- Leads go first: a sale without ``tracking_id`` needs its customer known from a lead.
- At most ``--concurrency`` events are in flight; the rest wait their turn.
- ``--transport aiohttp`` (``pip install 'taapit-async[aiohttp]'``) sends a large file
  with several times less CPU per event than the default httpx.
- Each row's idempotency key comes from its content, so running the script again after a
  failure does not count anything twice.
- Taapit's API has no event time: backfilled events count from when they are sent.

A progress bar goes to stderr, the failed rows to stdout; the exit status is 1 when a row
failed, 2 when the file cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import hashlib
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Literal, TextIO

from taapit_async import AsyncTaapit, TaapitError, TrackResult

__all__ = ["Conversion", "Progress", "backfill", "main", "read_csv"]

COLUMNS = ("kind", "tracking_id", "external_id", "email", "amount", "currency", "order_id")


@dataclass(frozen=True)
class Conversion:
    """One past lead or sale."""

    kind: Literal["lead", "sale"]
    external_id: str
    tracking_id: str | None = None
    email: str | None = None
    amount: Decimal | None = None
    currency: str | None = None
    order_id: str | None = None
    line: int = 0  # where it came from, for error messages

    @property
    def idempotency_key(self) -> str:
        """The same for the same row on every run: a re-run counts nothing twice."""
        fields = (self.kind, self.external_id, self.order_id or "", str(self.amount))
        return "backfill-" + hashlib.sha256("\0".join(fields).encode()).hexdigest()[:40]


def read_csv(lines: Iterable[str]) -> list[Conversion]:
    """Parse the CSV (header row first).

    Raises:
        ValueError: A missing column or a malformed row; the message names its line.
    """
    reader = csv.DictReader(lines)
    missing = set(COLUMNS) - set(reader.fieldnames or ())
    if missing:
        raise ValueError(f"the CSV lacks the column(s) {', '.join(sorted(missing))}")
    conversions = []
    for row in reader:
        cell = {name: (row[name] or "").strip() or None for name in COLUMNS}
        external_id = cell["external_id"]
        if cell["kind"] not in ("lead", "sale") or external_id is None:
            raise ValueError(f"line {reader.line_num}: needs kind lead or sale, and external_id")
        kind: Literal["lead", "sale"] = "lead" if cell["kind"] == "lead" else "sale"
        try:
            amount = Decimal(cell["amount"]) if cell["amount"] is not None else None
        except InvalidOperation:
            raise ValueError(f"line {reader.line_num}: amount is not a number") from None
        conversions.append(
            Conversion(
                kind=kind,
                external_id=external_id,
                tracking_id=cell["tracking_id"],
                email=cell["email"],
                amount=amount,
                currency=cell["currency"],
                order_id=cell["order_id"],
                line=reader.line_num,
            )
        )
    return conversions


class Progress:
    """A one-line progress bar: ``[########------------]  40%  4/10  failed 1``.

    Redrawn in place with a carriage return, at most ten times a second (a terminal
    cannot show more, and a redirected stderr should not fill up with frames).
    """

    def __init__(self, total: int, stream: TextIO | None = None, width: int = 30) -> None:
        self.total, self.done, self.failed = total, 0, 0
        self._stream = stream if stream is not None else sys.stderr
        self._width = width
        self._drawn_at = 0.0

    def advance(self, *, ok: bool) -> None:
        """Count one finished event."""
        self.done += 1
        self.failed += not ok
        now = time.monotonic()
        if now - self._drawn_at >= 0.1 or self.done == self.total:
            self._drawn_at = now
            self._draw()

    def close(self) -> None:
        """Draw the final state and end the line."""
        self._draw()
        self._stream.write("\n")
        self._stream.flush()

    def _draw(self) -> None:
        share = self.done / self.total if self.total else 1.0
        filled = round(share * self._width)
        bar = "#" * filled + "-" * (self._width - filled)
        self._stream.write(
            f"\r[{bar}] {share:4.0%}  {self.done}/{self.total}  failed {self.failed}"
        )
        self._stream.flush()


async def _send(taapit: AsyncTaapit, conversion: Conversion) -> TrackResult | str:
    """Send one conversion; a row that cannot be sent gives the reason instead."""
    customer = {"external_id": conversion.external_id, "email": conversion.email}
    try:
        if conversion.kind == "lead":
            if conversion.tracking_id is None:
                return "a lead needs its tracking_id"
            return await taapit.track.lead(
                tracking_id=conversion.tracking_id,
                customer=customer,
                idempotency_key=conversion.idempotency_key,
            )
        if conversion.amount is None or conversion.currency is None:
            return "a sale needs its amount and currency"
        return await taapit.track.sale(
            tracking_id=conversion.tracking_id,
            customer=customer,
            amount=conversion.amount,
            currency=conversion.currency,
            metadata={"orderId": conversion.order_id} if conversion.order_id else None,
            idempotency_key=conversion.idempotency_key,
        )
    except TaapitError as exc:
        # The client refuses bad data (an unknown currency, say) before sending anything:
        # one bad row must not stop the others.
        return str(exc)


async def backfill(
    conversions: Iterable[Conversion],
    taapit: AsyncTaapit,
    *,
    concurrency: int = 8,
    progress: Progress | None = None,
) -> list[tuple[Conversion, str]]:
    """Send every conversion, leads first, at most ``concurrency`` at a time.

    Returns:
        The rows that failed, each with the reason.
    """
    rows = list(conversions)
    failures: list[tuple[Conversion, str]] = []

    async def worker(queue: Iterator[Conversion]) -> None:
        # Workers share one iterator, so at most `concurrency` rows are in flight and
        # no task is created per row (a file may hold millions).
        for conversion in queue:
            outcome = await _send(taapit, conversion)
            if isinstance(outcome, str) or not outcome.success:
                reason = outcome if isinstance(outcome, str) else str(outcome.error)
                failures.append((conversion, reason))
            if progress is not None:
                progress.advance(ok=not isinstance(outcome, str) and outcome.success)

    for kind in ("lead", "sale"):
        queue = iter([row for row in rows if row.kind == kind])
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker(queue))
    return failures


async def _run(
    conversions: list[Conversion], concurrency: int, transport: Literal["httpx", "aiohttp"]
) -> int:
    progress = Progress(len(conversions))
    # The key and URL from TAAPIT_API_KEY and TAAPIT_BASE_URL.
    async with AsyncTaapit(transport=transport, max_in_flight=concurrency) as taapit:
        failures = await backfill(conversions, taapit, concurrency=concurrency, progress=progress)
    progress.close()
    print(f"sent {len(conversions) - len(failures)} of {len(conversions)} conversions")
    for conversion, reason in failures:
        print(f"  line {conversion.line}: {conversion.kind} {conversion.external_id}: {reason}")
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the backfill; return the exit status."""
    parser = argparse.ArgumentParser(description="Backfill past conversions into Taapit.")
    parser.add_argument("csv", help="the CSV file, or - for standard input")
    parser.add_argument("--concurrency", type=int, default=32, help="events in flight at most")
    parser.add_argument(
        "--transport",
        choices=("httpx", "aiohttp"),
        default="httpx",
        help="aiohttp is faster for large files (pip install 'taapit-async[aiohttp]')",
    )
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be 1 or more")
    try:
        if args.csv == "-":
            conversions = read_csv(sys.stdin)
        else:
            with open(args.csv, newline="", encoding="utf-8") as file:
                conversions = read_csv(file)
    except (OSError, ValueError) as exc:
        print(f"cannot read {args.csv}: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_run(conversions, args.concurrency, args.transport))
    except TaapitError as exc:  # e.g. no TAAPIT_API_KEY, or aiohttp not installed
        print(f"cannot start: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
