"""The durable outbox: background events committed to a SQLite file before the call returns.

Every SQL statement runs on one dedicated thread, so the event loop never blocks on disk.
Concurrent ``background`` calls are written together in one transaction (group commit):
while one batch is being committed, the next one gathers.

A row is claimed with a lease before it is sent, so several processes can share one file:
a claim is a single ``UPDATE ... RETURNING`` in a write transaction, and the lease of a
holder that died expires, after which another process sends the row again. The row's
``Idempotency-Key`` makes that re-send harmless. A delivered row is deleted; a failed one is
rescheduled with backoff (or its ``Retry-After``), and moved to the ``dead_letters`` table
once its attempt or age budget is spent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, TypeVar

import attrs

from ._errors import ConfigurationError, ErrorCode, TaapitError

__all__ = [
    "DEFAULT_OUTBOX_LEASE",
    "DEFAULT_OUTBOX_MAX_AGE",
    "DEFAULT_OUTBOX_MAX_ATTEMPTS",
    "ClaimedRow",
    "Outbox",
    "OutboxError",
    "OutboxStatus",
]

#: Seconds a process holds a claimed row before others may take it over.
DEFAULT_OUTBOX_LEASE: Final = 30.0
#: Attempts (over all processes) before a row is moved to the dead letters.
DEFAULT_OUTBOX_MAX_ATTEMPTS: Final = 20
#: Seconds after which an undelivered row is moved to the dead letters (7 days).
DEFAULT_OUTBOX_MAX_AGE: Final = 7 * 24 * 3600.0

#: Seconds a write waits for another process's lock before it fails with ``OutboxError``.
BUSY_TIMEOUT = 10.0

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_owner TEXT,
    lease_until REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS events_due ON events (next_attempt_at);
CREATE TABLE IF NOT EXISTS dead_letters (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    body BLOB NOT NULL,
    created_at REAL NOT NULL,
    attempts INTEGER NOT NULL,
    failed_at REAL NOT NULL,
    last_error TEXT
);
"""

T = TypeVar("T")

# Held while SQL runs on an outbox thread, and taken by os.fork() before it forks: a fork
# in the middle of a SQLite call would leave SQLite's own mutexes locked forever in the
# child, whose first outbox call would then hang. One lock for every outbox of the process
# (they rarely number more than one); uncontended, it costs nothing next to a statement.
_SQL_GUARD: Final = threading.Lock()


def _release_sql_guard() -> None:
    if _SQL_GUARD.locked():
        _SQL_GUARD.release()


os.register_at_fork(
    before=_SQL_GUARD.acquire,
    after_in_parent=_release_sql_guard,
    after_in_child=_release_sql_guard,
)

logger: Final = logging.getLogger("taapit_async")


class OutboxError(TaapitError, OSError):
    """The outbox file cannot be used: unwritable, corrupt, locked or out of space."""

    default_code = ErrorCode.OUTBOX_ERROR


@attrs.frozen
class ClaimedRow:
    """A row this process leased and is about to send."""

    id: int
    kind: str
    idempotency_key: str
    body: bytes
    attempts: int
    created_at: float


@attrs.frozen
class OutboxStatus:
    """Counts of an outbox file (``python -m taapit_async outbox status``)."""

    pending: int
    leased: int
    dead: int
    oldest_pending_at: float | None


@attrs.frozen
class Settle:
    """What became of a claimed row after one attempt."""

    row: ClaimedRow
    delivered: bool
    error: str | None = None
    retry_at: float | None = None  # None with delivered=False: dead letter


def _hint(exc: sqlite3.Error) -> str:
    text = str(exc).lower()
    if "full" in text or "disk i/o" in text:
        return (
            " (the disk refused a write: out of space, a file size limit or a failing disk;"
            " events already committed stay in the file)"
        )
    if "locked" in text or "busy" in text:
        return " (another process holds the file's write lock for too long)"
    if "readonly" in text or "read-only" in text:
        return " (the file or its directory is not writable by this process)"
    return ""


def _connect(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT
        )
        # WAL lets readers (other processes, the CLI) run beside the writer; FULL makes a
        # commit durable across a power cut, not only a process crash.
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.executescript(_SCHEMA)
    except sqlite3.DatabaseError as exc:
        raise OutboxError(
            f"cannot use the outbox file {str(path)!r}: {exc} (is it a taapit-async outbox, "
            "and is its directory writable?)"
        ) from exc
    return db


class Outbox:
    """A SQLite outbox file, with every call executed on one private thread.

    Args:
        path: The file (created with its tables if missing).
        lease_seconds: How long a claim lasts before another process may take it over.
        max_attempts: Attempts before a row becomes a dead letter.
        max_age: Seconds before an undelivered row becomes a dead letter.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        lease_seconds: float = DEFAULT_OUTBOX_LEASE,
        max_attempts: int = DEFAULT_OUTBOX_MAX_ATTEMPTS,
        max_age: float = DEFAULT_OUTBOX_MAX_AGE,
    ) -> None:
        raw: object = path
        if not isinstance(raw, str | os.PathLike) or not str(raw):
            raise ConfigurationError(f"outbox must be a file path, not {path!r}")
        self.path = Path(path)
        if self.path.is_dir():
            raise ConfigurationError(f"outbox must be a file, and {str(path)!r} is a directory")
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.max_age = max_age
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="taapit-outbox")
        self._db: sqlite3.Connection | None = None
        self._pending: list[tuple[str, str, bytes, asyncio.Future[int]]] = []
        self._writing = False

    def reopened(self) -> Outbox:
        """A new handle on the same file with the same options (for a forked child)."""
        return Outbox(
            self.path,
            lease_seconds=self.lease_seconds,
            max_attempts=self.max_attempts,
            max_age=self.max_age,
        )

    # --- running SQL on the outbox thread ------------------------------------------------

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, work)

    def _call(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            with _SQL_GUARD:
                if self._db is None:
                    self._db = _connect(self.path)
                return work(self._db)
        except sqlite3.Error as exc:
            # Locked past the busy timeout, disk full, read-only: say what, where, and what to do.
            raise OutboxError(f"outbox {str(self.path)!r}: {exc}{_hint(exc)}") from exc

    async def open(self) -> None:
        """Open (or create) the file now, so that a bad path fails at startup."""
        await self._run(lambda db: None)

    async def close(self) -> None:
        """Release this process's leases and close the file."""
        owner = self.owner

        def release(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "UPDATE events SET lease_owner = NULL, lease_until = NULL"
                    " WHERE lease_owner = ?",
                    (owner,),
                )
            finally:
                db.close()

        try:
            if self._db is not None:
                await self._run(release)
        except OutboxError as exc:
            # Closing must not fail a shutdown: unreleased leases simply expire.
            logger.warning("taapit: %s; its leases expire in %gs", exc, self.lease_seconds)
        finally:
            self._db = None
            self._executor.shutdown(wait=True)

    # --- group commit ----------------------------------------------------------------------

    async def add(self, kind: str, idempotency_key: str, body: bytes) -> int:
        """Commit one event to disk and return its row id (batched with concurrent calls)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((kind, idempotency_key, body, future))
        if not self._writing:
            self._writing = True
            asyncio.get_running_loop().create_task(self._write_batches())
        return await future

    async def _write_batches(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                rows = [(kind, key, body) for kind, key, body, _ in batch]

                def insert(
                    db: sqlite3.Connection, rows: list[tuple[str, str, bytes]] = rows
                ) -> list[int]:
                    return _insert(db, rows)

                try:
                    ids = await self._run(insert)
                except OutboxError as exc:  # every waiter learns why; the batch rolled back
                    for *_, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (*_, future), row_id in zip(batch, ids, strict=True):
                    if not future.done():
                        future.set_result(row_id)
        finally:
            self._writing = False

    # --- claiming and settling ---------------------------------------------------------------

    async def claim(self, limit: int) -> list[ClaimedRow]:
        """Lease up to ``limit`` due rows for this process."""
        owner, lease = self.owner, self.lease_seconds
        return await self._run(lambda db: _claim(db, owner, lease, limit))

    async def settle(self, outcomes: Sequence[Settle]) -> None:
        """Delete delivered rows, reschedule or dead-letter the others, in one transaction."""
        await self._run(lambda db: _settle(db, outcomes))

    async def settled_elsewhere(self, ids: Sequence[int]) -> dict[int, str | None]:
        """Which of these rows another process settled: None if sent, else the dead letter's error.

        Rows still in the queue are left out of the answer.
        """
        wanted = list(ids)
        return await self._run(lambda db: _settled_elsewhere(db, wanted))

    async def next_due(self) -> float | None:
        """When the soonest unleased row is due (epoch seconds), or None if none is."""
        return await self._run(_next_due)

    async def status(self) -> OutboxStatus:
        """Counts of pending, leased and dead rows."""
        return await self._run(read_status)


@contextlib.contextmanager
def _write_transaction(db: sqlite3.Connection) -> Iterator[None]:
    """BEGIN IMMEDIATE ... COMMIT, rolled back on error unless SQLite already did.

    After a full disk or an I/O error SQLite may roll back by itself; a second ROLLBACK
    would then replace the real error with "no transaction is active".
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def _insert(db: sqlite3.Connection, rows: list[tuple[str, str, bytes]]) -> list[int]:
    now = time.time()
    ids: list[int] = []
    with _write_transaction(db):
        for kind, key, body in rows:
            cursor = db.execute(
                "INSERT INTO events (kind, idempotency_key, body, created_at, next_attempt_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (kind, key, body, now, now),
            )
            ids.append(int(cursor.lastrowid or 0))
    return ids


def _claim(db: sqlite3.Connection, owner: str, lease: float, limit: int) -> list[ClaimedRow]:
    now = time.time()
    with _write_transaction(db):
        rows = db.execute(
            "UPDATE events SET lease_owner = ?, lease_until = ? WHERE id IN ("
            " SELECT id FROM events WHERE next_attempt_at <= ?"
            " AND (lease_until IS NULL OR lease_until < ?) ORDER BY id LIMIT ?)"
            " RETURNING id, kind, idempotency_key, body, attempts, created_at",
            (owner, now + lease, now, now, limit),
        ).fetchall()
    return sorted((ClaimedRow(*row) for row in rows), key=lambda r: r.id)


def _settle(db: sqlite3.Connection, outcomes: Sequence[Settle]) -> None:
    now = time.time()
    with _write_transaction(db):
        for outcome in outcomes:
            row = outcome.row
            if outcome.delivered:
                db.execute("DELETE FROM events WHERE id = ?", (row.id,))
            elif outcome.retry_at is not None:
                db.execute(
                    "UPDATE events SET attempts = attempts + 1, next_attempt_at = ?,"
                    " lease_owner = NULL, lease_until = NULL, last_error = ? WHERE id = ?",
                    (outcome.retry_at, outcome.error, row.id),
                )
            else:
                db.execute(
                    "INSERT OR REPLACE INTO dead_letters (id, kind, idempotency_key, body,"
                    " created_at, attempts, failed_at, last_error)"
                    " SELECT id, kind, idempotency_key, body, created_at, attempts + 1, ?, ?"
                    " FROM events WHERE id = ?",
                    (now, outcome.error, row.id),
                )
                db.execute("DELETE FROM events WHERE id = ?", (row.id,))


def _settled_elsewhere(db: sqlite3.Connection, ids: list[int]) -> dict[int, str | None]:
    gone: dict[int, str | None] = {}
    for start in range(0, len(ids), 500):  # SQLite caps the number of parameters
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))  # placeholders only: the ids are bound
        in_events = f"SELECT id FROM events WHERE id IN ({marks})"  # noqa: S608
        in_dead = f"SELECT id, last_error FROM dead_letters WHERE id IN ({marks})"  # noqa: S608
        pending = {row_id for (row_id,) in db.execute(in_events, chunk)}
        dead = dict(db.execute(in_dead, chunk))
        for row_id in chunk:
            if row_id in dead:
                gone[row_id] = dead[row_id] or "dead-lettered"
            elif row_id not in pending:
                gone[row_id] = None
    return gone


def _next_due(db: sqlite3.Connection) -> float | None:
    now = time.time()
    row = db.execute(
        "SELECT MIN(CASE WHEN lease_until IS NOT NULL AND lease_until >= ? THEN lease_until"
        " ELSE next_attempt_at END) FROM events",
        (now,),
    ).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def read_status(db: sqlite3.Connection) -> OutboxStatus:
    """Read the counts of an open outbox database."""
    now = time.time()
    pending, leased, oldest = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(lease_until IS NOT NULL AND lease_until >= ?), 0),"
        " MIN(created_at) FROM events",
        (now,),
    ).fetchone()
    (dead,) = db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()
    return OutboxStatus(
        pending=int(pending), leased=int(leased), dead=int(dead), oldest_pending_at=oldest
    )


@contextlib.contextmanager
def open_outbox_file(path: str | os.PathLike[str]) -> Any:
    """Open an existing outbox file for the command line; raise ``OutboxError`` if unusable."""
    target = Path(path)
    if not target.is_file():
        raise OutboxError(f"no outbox file at {str(target)!r}")
    db = _connect(target)
    try:
        yield db
    finally:
        db.close()
