"""Backoff bounds and Retry-After parsing."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from taapit_async import ConfigurationError
from taapit_async._retry import RetryPolicy, is_retryable_status, parse_retry_after

NOW = dt.datetime(2026, 11, 28, 12, 0, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("0", 0.0),
        ("7", 7.0),
        (" 12 ", 12.0),
        ("Sat, 28 Nov 2026 12:00:30 GMT", 30.0),
        ("Sat, 28 Nov 2026 11:59:00 GMT", 0.0),
        ("Sat, 28 Nov 2026 12:01:00 -0000", 60.0),
    ],
)
def test_retry_after_reads_seconds_and_http_dates(header: str, seconds: float) -> None:
    assert parse_retry_after(header, now=NOW) == seconds


@pytest.mark.parametrize("header", [None, "", "soon", "-5", "1.5", "Mon, 99 Foo 2026"])
def test_unusable_retry_after_is_none(header: str | None) -> None:
    assert parse_retry_after(header, now=NOW) is None


def test_retry_after_without_now_uses_the_clock() -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=100)
    seconds = parse_retry_after(later.strftime("%a, %d %b %Y %H:%M:%S GMT"))
    assert seconds is not None
    assert 95 <= seconds <= 100


def test_full_jitter_stays_under_the_doubling_ceiling() -> None:
    policy = RetryPolicy(backoff_base=0.5, backoff_max=4.0)
    rng = random.Random(7)
    for retry, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (10, 4.0)]:
        draws = [policy.backoff(retry, rng) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in draws)
        assert max(draws) > ceiling * 0.8  # spread over the whole range, not a fixed wait


def test_zero_backoff_base_means_no_wait() -> None:
    assert RetryPolicy(backoff_base=0).backoff(3) == 0


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(408, True), (429, True), (500, True), (503, True), (599, True), (400, False),
     (401, False), (403, False), (404, False), (409, False), (413, False), (422, False)],
)  # fmt: skip
def test_only_408_429_and_5xx_are_retryable(status: int, retryable: bool) -> None:
    assert is_retryable_status(status) is retryable


def test_a_negative_wait_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="backoff_max must be a finite number"):
        RetryPolicy(backoff_max=-1)
