"""Back-off as a whole: the circuit breaker pauses background delivery during an outage."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from taapit_async import AsyncTaapit, ConfigurationError
from taapit_async._breaker import BREAKER_COOLDOWN_MAX, CircuitBreaker
from taapit_async.testing import FakeTaapit

from ._support import fake_client

TID = "rLnWe1uz9t282v7g"


def _loop_time() -> float:
    return asyncio.get_running_loop().time()


def _state(breaker: CircuitBreaker) -> str:
    return breaker.state  # read through a function: mypy would narrow the property


def _fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record(healthy=False)


# --- the breaker on its own ------------------------------------------------------------------


async def test_it_opens_after_threshold_failures_in_a_row() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=1)
    _fail(breaker, 2)
    assert _state(breaker) == "closed"
    _fail(breaker, 1)
    assert _state(breaker) == "open"
    assert breaker.trips == 1


async def test_an_answer_from_taapit_resets_the_count_of_failures() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=1)
    _fail(breaker, 2)
    breaker.record(healthy=True)  # a 400 or a success: Taapit is up
    _fail(breaker, 2)
    assert breaker.state == "closed"


async def test_a_background_attempt_waits_out_the_cooldown_then_goes_as_the_probe() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=0.2)
    _fail(breaker, 1)
    started = _loop_time()
    probe = await breaker.admit()
    assert probe is True
    assert _loop_time() - started >= 0.19
    assert breaker.state == "half_open"


async def test_only_one_probe_goes_out_and_the_others_wait_for_its_outcome() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=0.01, recovery_rate=None)
    _fail(breaker, 1)
    await asyncio.sleep(0.02)
    admits = [asyncio.ensure_future(breaker.admit()) for _ in range(3)]
    await asyncio.sleep(0.05)
    done = [task for task in admits if task.done()]
    assert [task.result() for task in done] == [True]
    breaker.record(healthy=True, probe=True)
    assert await asyncio.gather(*admits) in ([True, False, False], [False, True, False])
    assert breaker.state == "closed"


async def test_a_failed_probe_reopens_with_twice_the_cooldown_up_to_the_cap() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=0.05)
    _fail(breaker, 1)
    pauses = []
    for _ in range(3):
        assert await breaker.admit() is True
        breaker.record(healthy=False, probe=True)
        assert breaker._open_until is not None
        pauses.append(breaker._open_until - _loop_time())
    assert pauses == pytest.approx([0.1, 0.2, 0.4], abs=0.02)
    assert breaker.trips == 1  # one outage, however many probes it took
    breaker._next_cooldown = BREAKER_COOLDOWN_MAX
    breaker.record(healthy=False, probe=True)
    assert breaker._next_cooldown == BREAKER_COOLDOWN_MAX


async def test_a_cancelled_probe_lets_the_next_attempt_probe() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=0.01)
    _fail(breaker, 1)
    assert await breaker.admit() is True
    waiting = asyncio.ensure_future(breaker.admit())
    await asyncio.sleep(0.02)
    assert not waiting.done()
    breaker.release(probe=True)
    assert await waiting is True


async def test_retry_after_pauses_background_delivery_for_that_long_at_once() -> None:
    breaker = CircuitBreaker(threshold=5, cooldown=1)
    breaker.record(healthy=False, pause=0.3)
    assert breaker.state == "open"
    assert breaker._open_until is not None
    assert breaker._open_until - _loop_time() == pytest.approx(0.3, abs=0.02)


async def test_after_a_recovery_the_backlog_is_paced_by_a_doubling_rate() -> None:
    breaker = CircuitBreaker(threshold=1, cooldown=0.01, recovery_rate=100)
    _fail(breaker, 1)
    assert await breaker.admit() is True
    breaker.record(healthy=True, probe=True)
    started = _loop_time()
    await asyncio.gather(*(breaker.admit() for _ in range(100)))
    # 100 attempts at 100/s doubling each second need log2(100 ln2 / 100 + 1) = 0.76 s.
    assert _loop_time() - started >= 0.7
    assert breaker.ramp_allowance(1000) < 1000


async def test_threshold_zero_turns_the_breaker_off() -> None:
    breaker = CircuitBreaker(threshold=0)
    _fail(breaker, 100)
    assert breaker.state == "closed"
    assert await breaker.admit() is False


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"breaker_threshold": -1}, "breaker_threshold"),
        ({"breaker_threshold": True}, "breaker_threshold"),
        ({"breaker_cooldown": 0}, "breaker_cooldown"),
        ({"breaker_cooldown": 61}, "breaker_cooldown"),
        ({"breaker_cooldown": "5"}, "breaker_cooldown"),
        ({"recovery_rate": 0}, "recovery_rate"),
        ({"recovery_rate": float("inf")}, "recovery_rate"),
        ({"outbox_max_attempts": 0}, "outbox_max_attempts"),
        ({"outbox_max_age": 0}, "outbox_max_age"),
        ({"outbox_lease": -1}, "outbox_lease"),
    ],
)
def test_bad_breaker_and_outbox_options_are_refused_by_name(
    options: dict[str, Any], named: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigurationError, match=named):
        AsyncTaapit("taapit_sk_x", outbox=tmp_path / "o.sqlite3", **options)


# --- the breaker in the client ---------------------------------------------------------------


def client_for(fake: FakeTaapit, **options: Any) -> AsyncTaapit:
    options.setdefault("backoff_base", 0.01)
    options.setdefault("backoff_max", 0.02)
    return fake_client(fake, **options)


async def _outage(fake: FakeTaapit, seconds: float, **options: Any) -> tuple[int, int]:
    """Queue 40 background leads into a total outage; return failed requests and delivered."""
    fake.set_fault_rates(error_rate=1.0, seed=1)
    async with client_for(
        fake, max_in_flight=4, background_max_retries=100, background_deadline=30, **options
    ) as taapit:
        deliveries = [
            await taapit.background.lead(tracking_id=TID, customer={"external_id": f"u{i}"})
            for i in range(40)
        ]
        await asyncio.sleep(seconds)
        failed = fake.stats()["faults"]
        fake.clear_faults()
        results = [await delivery.result() for delivery in deliveries]
    return failed, sum(result.success for result in results)


async def test_an_outage_costs_a_few_probes_not_a_request_per_event() -> None:
    with_breaker = await _outage(
        FakeTaapit(), 0.5, breaker_threshold=3, breaker_cooldown=0.05, recovery_rate=None
    )
    without = await _outage(FakeTaapit(), 0.5, breaker_threshold=0)
    # With it: the first wave (4 in flight) and one probe per cooldown (0.05, 0.1, 0.2 s).
    assert with_breaker[0] <= 4 + 6
    assert without[0] > 3 * with_breaker[0]
    assert with_breaker[1] == without[1] == 40  # and nothing is lost either way


async def test_awaited_calls_are_not_held_back_by_an_open_breaker() -> None:
    fake = FakeTaapit()
    fake.fail_next(2)
    async with client_for(fake, max_retries=0, breaker_threshold=2, breaker_cooldown=30) as taapit:
        for _ in range(2):
            await taapit.track.lead(tracking_id=TID, customer={"external_id": "u"})
        assert _state(taapit._breaker) == "open"
        started = time.monotonic()
        result = await taapit.track.lead(tracking_id=TID, customer={"external_id": "u"})
        assert time.monotonic() - started < 5  # not the 30 s pause
        assert result.success
        assert _state(taapit._breaker) == "closed"  # and its answer ends the pause


async def test_the_outbox_holds_no_leases_while_the_breaker_is_open(tmp_path: Path) -> None:
    fake = FakeTaapit()
    fake.set_fault_rates(error_rate=1.0, seed=2)
    async with client_for(
        fake,
        outbox=tmp_path / "outbox.sqlite3",
        breaker_threshold=2,
        breaker_cooldown=2,
        recovery_rate=None,
    ) as taapit:
        deliveries = [
            await taapit.background.lead(tracking_id=TID, customer={"external_id": f"u{i}"})
            for i in range(30)
        ]
        assert taapit._outbox is not None
        leased = []
        for _ in range(150):  # the batch that met the outage settles, then nothing is claimed
            await asyncio.sleep(0.01)
            if _state(taapit._breaker) == "open":
                leased.append((await taapit._outbox.status()).leased)
                if leased[-1] == 0:
                    break
        assert leased[-1:] == [0]
        assert _state(taapit._breaker) == "open"
        assert (await taapit._outbox.status()).pending == 30
        fake.clear_faults()
        results = [await delivery.result() for delivery in deliveries]
    assert all(result.success for result in results)
    assert len(fake.leads) == 30
