"""The durable outbox: real SQLite files, real processes, the fake as a real server."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from taapit_async import AsyncTaapit, ErrorCode, _outbox
from taapit_async._outbox import OutboxError
from taapit_async.testing import FakeTaapit, FakeTaapitServer

from ._support import fake_client

TID = "rLnWe1uz9t282v7g"


def client_for(fake: FakeTaapit, outbox: Path, **options: Any) -> AsyncTaapit:
    return fake_client(fake, outbox=outbox, **options)


async def wait_until(condition: Callable[[], bool], *, seconds: float) -> None:
    """Poll a condition on a file that other processes write (no event to wait on)."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)


def rows(path: Path, table: str = "events") -> int:
    with sqlite3.connect(path) as db:
        (count,) = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()
    return int(count)


async def test_an_event_is_on_disk_before_the_call_returns(tmp_path: Path) -> None:
    fake = FakeTaapit()
    fake.delay_next(1, seconds=0.3)
    path = tmp_path / "outbox.sqlite3"
    async with client_for(fake, path) as taapit:
        delivery = await taapit.background.lead(tracking_id=TID, customer={"external_id": "u"})
        assert rows(path) == 1  # committed, readable by another connection
        assert (await delivery.result()).success
        assert rows(path) == 0  # deleted once delivered
    assert len(fake.leads) == 1


async def test_failures_are_rescheduled_until_delivered(tmp_path: Path) -> None:
    fake = FakeTaapit()
    fake.fail_next(2, status=503)
    fake.rate_limit_next(1, retry_after="0")
    async with client_for(fake, tmp_path / "o.sqlite3") as taapit:
        delivery = await taapit.background.sale(
            tracking_id=TID, customer={"external_id": "u"}, amount=5, currency="eur"
        )
        result = await delivery.result()
        stats = taapit.stats
    assert result.success
    assert len(fake.sales) == 1
    assert fake.attempts(delivery.idempotency_key) == 4  # 1 + the 3 faults it met
    assert (stats.sent, stats.retried, stats.failed) == (1, 3, 0)


async def test_a_rejected_event_goes_to_the_dead_letters(tmp_path: Path) -> None:
    fake = FakeTaapit()
    path = tmp_path / "o.sqlite3"
    async with client_for(fake, path) as taapit:
        # A sale for an unknown customer without a tracking id: Taapit answers 400.
        delivery = await taapit.background.sale(
            customer={"external_id": "nobody"}, amount=5, currency="eur"
        )
        result = await delivery.result()
        assert taapit.stats.dead_lettered == 1
    assert result.error is not None
    assert result.error.code == ErrorCode.INVALID_REQUEST
    assert (rows(path), rows(path, "dead_letters")) == (0, 1)


async def test_the_attempt_budget_sends_retryable_failures_to_the_dead_letters(
    tmp_path: Path,
) -> None:
    fake = FakeTaapit()
    fake.fail_next(100, status=503)
    path = tmp_path / "o.sqlite3"
    async with client_for(fake, path, outbox_max_attempts=3) as taapit:
        delivery = await taapit.background.lead(tracking_id=TID, customer={"external_id": "u"})
        result = await delivery.result()
    assert result.error is not None
    assert result.error.code == ErrorCode.SERVER_ERROR
    assert rows(path, "dead_letters") == 1
    assert fake.attempts(delivery.idempotency_key) == 3


async def test_pending_events_survive_a_close_and_are_sent_by_the_next_client(
    tmp_path: Path,
) -> None:
    path = tmp_path / "o.sqlite3"
    down = FakeTaapit()
    down.fail_next(1000, status=503)
    taapit = client_for(down, path, drain_timeout=0.05, backoff_base=5, backoff_max=5)
    async with taapit:
        deliveries = [
            await taapit.background.lead(tracking_id=TID, customer={"external_id": f"u{i}"})
            for i in range(10)
        ]
    results = [await d.result() for d in deliveries]
    assert {r.error.code for r in results if r.error} == {ErrorCode.IN_OUTBOX}
    assert taapit.stats.dropped == 0  # handed over, not lost
    assert rows(path) == 10

    up = FakeTaapit()
    # Rows were rescheduled 5 s ahead; a new client still delivers them once they are due.
    with sqlite3.connect(path) as db:
        db.execute("UPDATE events SET next_attempt_at = 0")
    async with client_for(up, path):
        await wait_until(lambda: rows(path) == 0, seconds=10)
    assert rows(path) == 0
    assert sorted(e.customer.external_id for e in up.leads) == sorted(f"u{i}" for i in range(10))


async def test_an_unwritable_path_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a directory")  # unwritable even for root
    with pytest.raises(OutboxError, match="cannot use the outbox file") as info:
        async with client_for(FakeTaapit(), tmp_path / "a-file" / "o.sqlite3"):
            pass  # pragma: no cover
    assert isinstance(info.value, OSError)


async def test_a_corrupt_file_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite3"
    path.write_bytes(b"this is not a database" * 200)
    with pytest.raises(OutboxError, match=r"cannot use the outbox file .*\(is it a taapit-async"):
        async with client_for(FakeTaapit(), path):
            pass  # pragma: no cover


async def test_a_directory_is_refused_at_construction(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is a directory"):
        client_for(FakeTaapit(), tmp_path)


# --- processes ------------------------------------------------------------------------

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from taapit_async import AsyncTaapit

    async def main(path, url):
        # Taapit is unreachable for this process: every event stays pending on disk.
        async with AsyncTaapit("taapit_sk_test", base_url=url, outbox=path,
                               timeout=0.2, backoff_base=1, backoff_max=1,
                               outbox_lease=1.0) as taapit:  # the test waits for the lease
            i = 0
            while True:
                await taapit.background.lead(
                    tracking_id="t1", customer={"external_id": f"u{i}"},
                    idempotency_key=f"crash-{i}")
                print(i, flush=True)  # printed only once the event is committed
                i += 1

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.fixture
def server() -> Iterator[FakeTaapitServer]:
    with FakeTaapitServer() as running:
        yield running


@pytest.mark.server
async def test_a_process_killed_mid_stream_loses_nothing_and_sends_nothing_twice(
    tmp_path: Path, server: FakeTaapitServer
) -> None:
    path = tmp_path / "crash.sqlite3"
    child = await asyncio.create_subprocess_exec(
        *[sys.executable, "-c", CHILD, str(path), "http://127.0.0.1:9"],  # port 9: nothing
        stdout=asyncio.subprocess.PIPE,
    )
    assert child.stdout is not None
    committed = -1
    while committed < 300:
        line = await child.stdout.readline()
        assert line, "the child stopped early"
        committed = int(line)
    pending_before_kill = rows(path)
    child.send_signal(signal.SIGKILL)
    await child.wait()
    assert pending_before_kill >= 300  # provably still pending at the moment of the kill
    on_disk = rows(path)
    assert on_disk >= committed + 1

    async with AsyncTaapit(server.fake.api_key, base_url=server.url, outbox=path):
        await wait_until(lambda: rows(path) == 0, seconds=20)
    keys = [e.idempotency_key for e in server.fake.leads]
    assert len(keys) == len(set(keys)) == on_disk  # exactly once each
    assert {f"crash-{i}" for i in range(committed + 1)} <= set(keys)


WORKER = textwrap.dedent(
    """
    import asyncio, sys
    from taapit_async import AsyncTaapit

    async def main(path, url, seconds):
        async with AsyncTaapit("taapit_sk_test", base_url=url, outbox=path) as taapit:
            await asyncio.sleep(float(seconds))

    asyncio.run(main(*sys.argv[1:]))
    """
)


@pytest.mark.server
async def test_two_processes_share_one_outbox_without_double_sends(
    tmp_path: Path, server: FakeTaapitServer
) -> None:
    path = tmp_path / "shared.sqlite3"
    server.fake.delay_next(50, seconds=0.01)
    async with AsyncTaapit(
        server.fake.api_key, base_url="http://127.0.0.1:9", outbox=path, timeout=0.1,
        backoff_base=60, backoff_max=60, drain_timeout=0,
    ) as producer:  # fmt: skip
        for i in range(200):
            await producer.background.lead(
                tracking_id=TID, customer={"external_id": f"u{i}"}, idempotency_key=f"k{i}"
            )
    with sqlite3.connect(path) as db:
        db.execute("UPDATE events SET next_attempt_at = 0")
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WORKER, str(path), server.url, "4"
        )
        for _ in range(2)
    ]
    for worker in workers:
        assert await asyncio.wait_for(worker.wait(), 30) == 0
    keys = [e.idempotency_key or "" for e in server.fake.leads]
    assert rows(path) == 0
    assert sorted(keys) == sorted(f"k{i}" for i in range(200))
    assert max(server.fake.attempts(k) for k in keys) == 1  # nobody sent a row twice


async def test_handles_resolve_when_another_process_sent_or_dead_lettered_the_rows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "shared.sqlite3"
    paused = FakeTaapit()
    paused.set_fault_rates(rate_limit_rate=1.0, retry_after="60")  # this one waits a minute
    healthy = FakeTaapit()
    healthy.fail_next(1, status=400)  # the first row it sends becomes a dead letter
    async with client_for(paused, path) as waiting:
        deliveries = [
            await waiting.background.lead(
                tracking_id=TID, customer={"external_id": f"u{i}"}, idempotency_key=f"k{i}"
            )
            for i in range(5)
        ]
        assert waiting._outbox is not None
        for _ in range(500):  # until the 429 is settled: its row is due in a minute
            await asyncio.sleep(0.01)
            status = await waiting._outbox.status()
            if paused.stats()["requests"] and not status.leased:
                break
        assert waiting._breaker.state == "open"  # paused by Retry-After: it sends nothing
        with sqlite3.connect(path) as db:
            db.execute("UPDATE events SET next_attempt_at = 0")
        async with client_for(healthy, path, max_in_flight=1):  # another process
            for _ in range(500):
                await asyncio.sleep(0.01)
                if not rows(path):
                    break
        assert await waiting.flush(5)  # learnt from the file, not from its own sends
        results = [await delivery.result() for delivery in deliveries]
    assert sum(result.success for result in results) == 4
    (dead,) = [result.error for result in results if not result.success]
    assert dead is not None
    assert dead.code == ErrorCode.DEAD_LETTER
    assert "another process" in dead.message
    assert len(healthy.leads) == 4


# --- a locked file, a full disk -------------------------------------------------------------


async def test_a_file_locked_by_another_writer_is_a_clear_error_and_nothing_is_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_outbox, "BUSY_TIMEOUT", 0.2)  # not the 10 s an app would wait
    path = tmp_path / "locked.sqlite3"
    fake = FakeTaapit()
    async with client_for(fake, path) as taapit:
        first = await taapit.background.lead(tracking_id=TID, customer={"external_id": "u0"})
        assert (await first.result()).success
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            refused = await taapit.background.lead(tracking_id=TID, customer={"external_id": "u1"})
            result = await refused.result()
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert result.error is not None
        assert result.error.code == ErrorCode.OUTBOX_ERROR
        assert "database is locked" in result.error.message
        assert "another process holds" in result.error.message
        assert str(path) in result.error.message
        assert taapit.stats.dropped == 1  # counted, and logged
        # Once the lock is gone the outbox works again.
        later = await taapit.background.lead(tracking_id=TID, customer={"external_id": "u2"})
        assert (await later.result()).success
    assert [e.customer.external_id for e in fake.leads] == ["u0", "u2"]


FULL_DISK = textwrap.dedent(
    """
    import asyncio, resource, sys
    from taapit_async import AsyncTaapit

    async def main(path, limit):
        # Taapit is unreachable, so every committed event stays in the file.
        async with AsyncTaapit("taapit_sk_test", base_url="http://127.0.0.1:9", outbox=path,
                               timeout=0.2, breaker_cooldown=60) as taapit:
            # A real size limit: past it, writes fail with EFBIG (CPython ignores SIGXFSZ).
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
            accepted, errors = 0, []
            for i in range(10_000):
                delivery = await taapit.background.lead(
                    tracking_id="t1", customer={"external_id": f"user-{i}"},
                    metadata={"padding": "x" * 1000}, idempotency_key=f"k{i}")
                if delivery.done():
                    errors.append((await delivery.result()).error)
                    if len(errors) == 3:
                        break
                else:
                    accepted += 1
            print(accepted, taapit.stats.dropped, flush=True)
            for error in errors:
                print(error.code, error.message, flush=True)

    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
    """
)


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_FSIZE semantics checked on Linux")
async def test_a_full_disk_refuses_new_events_clearly_and_keeps_every_accepted_one(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite3"
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", FULL_DISK, str(path), str(1024 * 1024),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(child.communicate(), 60)
    assert child.returncode == 0, err.decode()
    first, *errors = out.decode().splitlines()
    accepted, dropped = map(int, first.split())
    assert accepted > 20  # the limit was reached by real writes, not at once
    assert dropped == 3
    for line in errors:
        assert line.startswith("outbox_error ")
        assert str(path) in line
        # SQLite's own words (EFBIG is an I/O error to it, ENOSPC "disk is full"), not those
        # of a later failure, and what it means for the events.
        assert "disk I/O error" in line or "database or disk is full" in line
        assert "events already committed stay in the file" in line
    # Every event whose call returned a pending handle is on disk: none silently lost.
    assert rows(path) == accepted


async def test_closing_while_another_writer_holds_the_lock_does_not_fail_the_shutdown(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(_outbox, "BUSY_TIMEOUT", 0.2)
    path = tmp_path / "outbox.sqlite3"
    taapit = client_for(FakeTaapit(), path)
    await taapit.start()
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        await taapit.aclose()  # its leases cannot be released now: they will expire
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert "leases expire" in caplog.text
    assert taapit.closed
