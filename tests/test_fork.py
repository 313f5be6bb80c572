"""A client created before a fork: the child gets its own connections, queue and outbox.

Each scenario runs in a subprocess that forks for real while its event loop is running, its
pool holds a live keep-alive connection and its background queue holds events, against the
fake API served by uvicorn on 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from taapit_async import AsyncTaapit, ClientStateError, ErrorCode
from taapit_async._delivery import BackgroundQueue
from taapit_async.testing import FakeTaapitServer

pytestmark = pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")

TID = "rLnWe1uz9t282v7g"

SCRIPT = textwrap.dedent(
    """
    import asyncio, faulthandler, os, sys, threading
    from taapit_async import AsyncTaapit

    url, key, outbox, transport = sys.argv[1], sys.argv[2], sys.argv[3] or None, sys.argv[4]

    def lead(taapit, key, background=False):
        send = taapit.background if background else taapit.track
        return send.lead(tracking_id="t1", customer={"external_id": key}, idempotency_key=key)

    async def child(taapit):
        assert (await lead(taapit, "child-awaited")).success
        deliveries = [await lead(taapit, f"child-bg-{i}", True) for i in range(5)]
        results = [await d.result() for d in deliveries]
        assert all(r.success for r in results), results
        assert taapit.stats.queued == 5, taapit.stats  # the child's own counters
        await taapit.aclose()

    async def main():
        taapit = AsyncTaapit(key, base_url=url, outbox=outbox, transport=transport)
        assert (await lead(taapit, "parent-before")).success  # a live pooled connection
        deliveries = [await lead(taapit, f"parent-bg-{i}", True) for i in range(20)]
        pid = os.fork()
        if pid == 0:
            # A hang in the child shows its stacks. (Armed only here: a watchdog armed
            # before the fork would deadlock the child when re-armed.)
            faulthandler.dump_traceback_later(45, exit=True)
            # The child's main thread is inside the parent's running loop: a new thread
            # runs a new loop, as a pre-fork worker's would.
            outcome = []
            thread = threading.Thread(target=lambda: outcome.append(asyncio.run(child(taapit))))
            thread.start()
            thread.join()
            os._exit(0 if outcome else 1)
        results = [await d.result() for d in deliveries]
        assert all(r.success for r in results), results
        assert (await lead(taapit, "parent-after")).success
        await taapit.aclose()
        _, status = os.waitpid(pid, 0)
        sys.exit(os.waitstatus_to_exitcode(status))

    asyncio.run(main())
    """
)


@pytest.fixture
def server() -> Iterator[FakeTaapitServer]:
    with FakeTaapitServer() as running:
        yield running


@pytest.mark.server
@pytest.mark.parametrize(
    ("durable", "transport"),
    [(False, "httpx"), (True, "httpx"), (False, "aiohttp")],
    ids=["in-memory", "outbox", "in-memory-aiohttp"],
)
async def test_a_forked_child_sends_its_own_events_and_never_the_parents(
    server: FakeTaapitServer, tmp_path: Path, durable: bool, transport: str
) -> None:
    server.fake.latency = 0.02  # the parent's background events are still queued at the fork
    outbox = str(tmp_path / "outbox.sqlite3") if durable else ""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SCRIPT, server.url, server.fake.api_key, outbox, transport,
        stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), 60)
    finally:
        if process.returncode is None:  # hung: do not leave it behind for the next tests
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    keys = [event.idempotency_key or "" for event in server.fake.leads]
    expected = [
        "parent-before",
        "parent-after",
        "child-awaited",
        *(f"parent-bg-{i}" for i in range(20)),
        *(f"child-bg-{i}" for i in range(5)),
    ]
    assert sorted(keys) == sorted(expected)  # nothing lost
    assert {key: server.fake.attempts(key) for key in keys} == dict.fromkeys(keys, 1)  # none twice


async def test_a_users_own_http_client_across_a_fork_is_refused_plainly() -> None:
    taapit = AsyncTaapit("taapit_sk_test", http_client=httpx.AsyncClient())
    taapit._fork_generation -= 1  # as if created before the fork this process came from
    for _ in range(2):  # every call, not only the first
        with pytest.raises(ClientStateError, match="before the process forked") as caught:
            await taapit.track.lead(tracking_id=TID, customer={"external_id": "u"})
        assert caught.value.code == ErrorCode.FORKED
    await taapit.aclose()  # leaves the parent's connections alone


async def test_flush_in_a_forked_child_does_not_wait_for_the_parents_queue() -> None:
    reply = asyncio.Event()

    async def answer_when_told(request: httpx.Request) -> httpx.Response:
        await reply.wait()
        return httpx.Response(200, json={"success": True})

    own = httpx.AsyncClient(transport=httpx.MockTransport(answer_when_told))
    taapit = AsyncTaapit("taapit_sk_test", http_client=own)
    await taapit.background.lead(tracking_id=TID, customer={"external_id": "u"})
    parents_queue = taapit._queue
    assert isinstance(parents_queue, BackgroundQueue)
    taapit._fork_generation -= 1  # forked while the parent's event is on the wire

    assert await asyncio.wait_for(taapit.flush(), 1)  # nothing of this process to wait for
    assert taapit.stats.queued == taapit.stats.in_queue == 0  # the parent's, not ours
    await asyncio.wait_for(taapit.aclose(), 1)  # no drain of the parent's queue either
    assert parents_queue._workers
    assert not any(worker.done() for worker in parents_queue._workers)  # still the parent's

    reply.set()  # what the parent would see: its own event delivered
    assert await parents_queue.flush(5)
    await parents_queue.aclose(1)
    await own.aclose()
