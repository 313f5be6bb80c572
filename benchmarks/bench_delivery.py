"""Delivery: what a background call costs the caller, what the outbox sustains, and memory.

One run, against the fake Taapit API under uvicorn in its own process on 127.0.0.1:

1. **awaited send**: ``track.lead`` one after another; its median is the baseline;
2. **background enqueue** (in memory): the time each ``background.lead`` call takes while
   the workers deliver alongside, p50 and p99;
3. **outbox enqueue**: the same with ``outbox=`` (each call returns once the event is
   committed to disk, group commit with its neighbours);
4. **outbox persisted**: 32 producers writing to the outbox while Taapit is unreachable
   (nothing drains), events/s committed; once per transport, into a file of its own;
5. **outbox drain**: a new client on that file delivering the backlog to the fake, events/s,
   on the default httpx transport and on ``transport="aiohttp"``;
6. **memory**: 100,000 background events through a bounded queue (the producer backs off on
   ``queue_full``), the process's resident memory sampled every 10,000 events.

Targets (issue 4): background enqueue p99 <= 0.05x the median awaited send; outbox persisted
>= 5,000 events/s with 32 producers on this 2-core machine (a sanity figure) and not slower
than the drain; memory flat. Run it with ``python benchmarks/bench_delivery.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final, Literal

from bench_transport import FakeServer, machine_facts, print_facts, print_table

from taapit_async import AsyncTaapit, ErrorCode

API_KEY: Final = "taapit_sk_test"
TRACKING_ID: Final = "rLnWe1uz9t282v7g"
Transport = Literal["httpx", "aiohttp"]
TRANSPORTS: Final[tuple[Transport, ...]] = ("httpx", "aiohttp")
UNREACHABLE: Final = "http://127.0.0.1:9"  # the discard port: connections are refused
PAGE: Final = os.sysconf("SC_PAGE_SIZE")


def rss_mib() -> float:
    """Resident memory of this process, MiB."""
    resident = int(Path("/proc/self/statm").read_text().split()[1])
    return resident * PAGE / 2**20


def lead(taapit: AsyncTaapit, i: int, *, background: bool) -> Any:
    send = taapit.background if background else taapit.track
    return send.lead(
        tracking_id=TRACKING_ID,
        customer={"external_id": f"user-{i}", "email": f"user-{i}@example.com"},
        metadata={"plan": "pro", "source": "benchmark"},
        idempotency_key=f"bench-{os.getpid()}-{i}-{time.monotonic_ns()}",
    )


def quantile(samples: Sequence[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def awaited(url: str, n: int) -> list[float]:
    async with AsyncTaapit(API_KEY, base_url=url) as taapit:
        for i in range(50):  # warm-up: connections and caches
            await lead(taapit, i, background=False)
        times = []
        for i in range(n):
            started = time.perf_counter()
            result = await lead(taapit, i, background=False)
            times.append(time.perf_counter() - started)
            assert result.success, result
    return times


async def enqueue(url: str, n: int, outbox: Path | None) -> tuple[list[float], int]:
    """Time each background call; the workers (or the outbox pump) deliver meanwhile."""
    async with AsyncTaapit(API_KEY, base_url=url, max_queue=n, outbox=outbox) as taapit:
        times = []
        deliveries = []
        for i in range(n):
            started = time.perf_counter()
            delivery = await lead(taapit, i, background=True)
            times.append(time.perf_counter() - started)
            deliveries.append(delivery)
            if i % 10 == 9:
                await asyncio.sleep(0)  # a handler returns to the loop between requests
        results = [await delivery.result() for delivery in deliveries]
    return times, sum(result.success for result in results)


async def persist(path: Path, n: int, producers: int) -> tuple[float, int]:
    """Events/s committed by ``producers`` concurrent callers while nothing drains."""
    async with AsyncTaapit(
        API_KEY, base_url=UNREACHABLE, outbox=path, timeout=0.5, breaker_threshold=1,
        breaker_cooldown=60, drain_timeout=0,
    ) as taapit:  # fmt: skip
        await lead(taapit, -1, background=True)  # the breaker opens on the refused connection
        await asyncio.sleep(0.2)

        async def producer(first: int) -> int:
            committed = 0
            for i in range(first, n, producers):
                delivery = await lead(taapit, i, background=True)
                committed += not delivery.done()  # done at once means refused
            return committed

        started = time.perf_counter()
        counts = await asyncio.gather(*(producer(p) for p in range(producers)))
        elapsed = time.perf_counter() - started
    return sum(counts) / elapsed, sum(counts)


async def drain(url: str, path: Path, expected: int, transport: Transport) -> float:
    """Events/s a fresh client on ``transport`` delivers from a backlog in the file."""
    started = time.perf_counter()
    async with AsyncTaapit(API_KEY, base_url=url, outbox=path, transport=transport) as taapit:
        outbox = taapit._outbox
        assert outbox is not None
        for _ in range(12_000):  # ten minutes at most
            if not (await outbox.status()).pending:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - started
    return expected / elapsed


async def memory(url: str, n: int, max_queue: int) -> tuple[list[float], int]:
    """Resident MiB every 10,000 events while ``n`` events pass through a bounded queue."""
    samples = [rss_mib()]
    backed_off = 0
    # Each refused call is logged as a warning; here they are the expected back-pressure.
    logging.getLogger("taapit_async").setLevel(logging.ERROR)
    async with AsyncTaapit(API_KEY, base_url=url, max_queue=max_queue) as taapit:
        for i in range(n):
            while True:
                delivery = await lead(taapit, i, background=True)
                if not delivery.done():
                    break
                result = await delivery.result()
                assert result.error is not None
                assert result.error.code == ErrorCode.QUEUE_FULL, result
                backed_off += 1
                await asyncio.sleep(0.001)  # back-pressure: let the workers catch up
            if i % 10 == 9:
                await asyncio.sleep(0)
            if i % 10_000 == 9_999:
                samples.append(rss_mib())
        assert await taapit.flush(120)
        samples.append(rss_mib())
        assert taapit.stats.sent == n, taapit.stats
    return samples, backed_off


def micros(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--awaited", type=int, default=2_000, help="awaited sends timed")
    parser.add_argument("--enqueue", type=int, default=20_000, help="background calls timed")
    parser.add_argument("--outbox-enqueue", type=int, default=3_000, help="outbox calls timed")
    parser.add_argument("--persist", type=int, default=20_000, help="events the producers write")
    parser.add_argument("--producers", type=int, default=32, help="concurrent outbox producers")
    parser.add_argument("--memory", type=int, default=100_000, help="events for the memory run")
    parser.add_argument("--max-queue", type=int, default=10_000, help="queue bound (memory run)")
    return parser.parse_args(argv)


async def run(url: str, args: argparse.Namespace, workdir: Path) -> bool:
    awaited_times = await awaited(url, args.awaited)
    baseline = statistics.median(awaited_times)
    memory_times, delivered = await enqueue(url, args.enqueue, None)
    outbox_times, outbox_delivered = await enqueue(
        url, args.outbox_enqueue, workdir / "enqueue.sqlite3"
    )
    # One backlog per transport: an outage's worth of events, then a new client drains it.
    drains: dict[Transport, tuple[int, float]] = {}
    persisted_rates = []
    for transport in TRANSPORTS:
        backlog = workdir / f"backlog-{transport}.sqlite3"
        persisted_rate, persisted = await persist(backlog, args.persist, args.producers)
        persisted_rates.append(persisted_rate)
        drains[transport] = (persisted + 1, await drain(url, backlog, persisted + 1, transport))
    persisted_rate = min(persisted_rates)
    drain_rate = max(rate for _, rate in drains.values())
    rss, backed_off = await memory(url, args.memory, args.max_queue)

    print("== Caller's cost (µs per call) ==")
    rows = [
        ["awaited track.lead", micros(baseline), micros(quantile(awaited_times, 0.99)), "1"],
    ]
    for label, times in (
        ("background.lead (memory)", memory_times),
        ("background.lead (outbox)", outbox_times),
    ):
        p99 = quantile(times, 0.99)
        rows.append([label, micros(quantile(times, 0.5)), micros(p99), f"{p99 / baseline:.3f}"])
    print_table(["call", "p50", "p99", "p99 ÷ awaited p50"], rows)
    print(f"(delivered afterwards: {delivered}/{args.enqueue} in memory, "
          f"{outbox_delivered}/{args.outbox_enqueue} through the outbox)\n")  # fmt: skip

    print("== Outbox throughput ==")
    print_table(
        ["phase", "events", "events/s"],
        [
            [f"persisted by {args.producers} producers (nothing drains; slower of "
             f"{len(TRANSPORTS)} runs)", f"{persisted:,}", f"{persisted_rate:,.0f}"],
            *(
                [f"drained to the fake by a new client, transport={transport!r}",
                 f"{events:,}", f"{rate:,.0f}"]
                for transport, (events, rate) in drains.items()
            ),
        ],
    )  # fmt: skip
    print()
    print(f"== Memory: {args.memory:,} background events, queue bound {args.max_queue:,} ==")
    print("resident MiB at start, every 10,000 events, after the flush:")
    print("  " + " ".join(f"{mib:.1f}" for mib in rss))
    growth = max(rss[2:]) - rss[1] if len(rss) > 2 else 0.0
    print(f"growth after the first 10,000: {growth:+.1f} MiB; producer backed off "
          f"{backed_off:,} times on queue_full\n")  # fmt: skip

    enqueue_ratio = quantile(memory_times, 0.99) / baseline
    checks = [
        (f"background enqueue p99 <= 0.05x awaited median: {enqueue_ratio:.3f}x",
         enqueue_ratio <= 0.05),
        (f"outbox persisted >= 5,000 events/s: {persisted_rate:,.0f}", persisted_rate >= 5_000),
        (f"outbox persisted >= drain rate: {persisted_rate:,.0f} vs {drain_rate:,.0f}",
         persisted_rate >= drain_rate),
        (f"memory flat (growth after warm-up <= 5 MiB): {growth:+.1f} MiB", growth <= 5.0),
        (f"every event delivered: {delivered + outbox_delivered:,} of "
         f"{args.enqueue + args.outbox_enqueue:,}",
         delivered + outbox_delivered == args.enqueue + args.outbox_enqueue),
    ]  # fmt: skip
    print("== Targets ==")
    for text, met in checks:
        print(f"{'MET ' if met else 'MISSED'} {text}")
    return all(met for _, met in checks)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    server = FakeServer(http="auto", latency=0.0)
    try:
        with tempfile.TemporaryDirectory(prefix="taapit-bench-") as workdir:
            ok = asyncio.run(run(server.url, args, Path(workdir)))
        print()
        print_facts(machine_facts(server.http))
    finally:
        server.stop()
    print(f"\nTotal time: {time.monotonic() - started:.0f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
