"""``python -m taapit_async outbox {status,list,retry,purge} FILE``: inspect and repair an outbox.

Bodies are never printed: they hold customers' e-mail addresses. Rows are shown by id, kind,
idempotency key, attempts and last error.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from ._outbox import OutboxError, open_outbox_file, read_status

__all__ = ["main"]


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{seconds:.0f}s"


def _status(db: sqlite3.Connection, out: TextIO) -> int:
    status = read_status(db)
    oldest = (
        "-" if status.oldest_pending_at is None else _age(time.time() - status.oldest_pending_at)
    )
    print(f"pending       {status.pending}", file=out)
    print(f"  leased now  {status.leased}", file=out)
    print(f"oldest        {oldest}", file=out)
    print(f"dead letters  {status.dead}", file=out)
    return 0


def _list(db: sqlite3.Connection, out: TextIO, *, dead: bool, limit: int) -> int:
    if dead:
        query = (
            "SELECT id, kind, idempotency_key, attempts, failed_at, last_error"
            " FROM dead_letters ORDER BY id LIMIT ?"
        )
        header = "id  kind  idempotency key  attempts  failed  last error"
    else:
        query = (
            "SELECT id, kind, idempotency_key, attempts, next_attempt_at, last_error"
            " FROM events ORDER BY id LIMIT ?"
        )
        header = "id  kind  idempotency key  attempts  next try  last error"
    print(header, file=out)
    now = time.time()
    for row_id, kind, key, attempts, when, error in db.execute(query, (limit,)):
        moment = _age(abs(now - when)) + (" ago" if when <= now else " from now")
        print(f"{row_id}  {kind}  {key}  {attempts}  {moment}  {error or '-'}", file=out)
    return 0


def _retry(db: sqlite3.Connection, out: TextIO) -> int:
    now = time.time()
    db.execute("BEGIN IMMEDIATE")
    moved = db.execute(
        "INSERT INTO events (id, kind, idempotency_key, body, created_at, attempts,"
        " next_attempt_at, last_error) SELECT id, kind, idempotency_key, body, ?, 0, ?,"
        " last_error FROM dead_letters",
        (now, now),
    ).rowcount
    db.execute("DELETE FROM dead_letters")
    db.execute("COMMIT")
    print(f"{moved} dead letter(s) queued again; they keep their idempotency keys", file=out)
    return 0


def _purge(db: sqlite3.Connection, out: TextIO, *, pending: bool) -> int:
    db.execute("BEGIN IMMEDIATE")
    removed = db.execute("DELETE FROM dead_letters").rowcount
    if pending:
        removed += db.execute("DELETE FROM events").rowcount
    db.execute("COMMIT")
    print(f"{removed} row(s) deleted", file=out)
    return 0


async def _send(path: str, out: TextIO) -> int:
    """Deliver what is pending now, with a progress bar (needs TAAPIT_API_KEY)."""
    from ._client import AsyncTaapit  # noqa: PLC0415  # only this command needs a client

    with open_outbox_file(path) as db:
        total = read_status(db).pending
    async with AsyncTaapit(outbox=path) as taapit:
        while True:
            with open_outbox_file(path) as db:
                status = read_status(db)
            done = total - status.pending
            width = 30
            filled = width if total == 0 else width * done // max(total, 1)
            print(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total}", end="", file=out)
            if status.pending == 0 or taapit.stats.dead_lettered + done >= total:
                break
            await asyncio.sleep(0.2)
        stats = taapit.stats
    print(f"\nsent {stats.sent}, dead letters {stats.dead_lettered}", file=out)
    return 0 if stats.dead_lettered == 0 else 1


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run an ``outbox`` command; return the exit status."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(
        prog="python -m taapit_async outbox", description="Inspect and repair an outbox file."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("status", help="counts: pending, leased, oldest, dead letters")
    listing = commands.add_parser("list", help="list pending rows (or --dead letters)")
    listing.add_argument("--dead", action="store_true", help="list the dead letters")
    listing.add_argument("--limit", type=int, default=50, help="rows to show (50)")
    retry = commands.add_parser("retry", help="queue every dead letter again")
    retry.add_argument("--send", action="store_true", help="then deliver now, with a progress bar")
    purge = commands.add_parser("purge", help="delete the dead letters")
    purge.add_argument("--pending", action="store_true", help="delete pending rows too")
    purge.add_argument("--yes", action="store_true", help="required: nothing is undone")
    for command in (commands.choices["status"], listing, retry, purge):
        command.add_argument("file", help="the outbox file")
    args = parser.parse_args(argv)

    try:
        with open_outbox_file(args.file) as db:
            if args.command == "status":
                return _status(db, out)
            if args.command == "list":
                return _list(db, out, dead=args.dead, limit=args.limit)
            if args.command == "purge":
                if not args.yes:
                    print("purge deletes rows for good: add --yes to confirm", file=sys.stderr)
                    return 2
                return _purge(db, out, pending=args.pending)
            _retry(db, out)
        return asyncio.run(_send(args.file, out)) if args.send else 0
    except (OutboxError, sqlite3.Error) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
