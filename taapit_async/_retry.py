"""When to retry, and how long to wait: exponential backoff with full jitter.

The wait before retry ``n`` (1 for the first retry) is drawn uniformly from
``[0, min(backoff_max, backoff_base * 2 ** (n - 1))]`` ("full jitter": clients that failed
together do not come back together). A ``Retry-After`` header replaces that draw when the
server sends one, up to ``retry_after_max``; beyond it the awaited call gives up, because
waiting longer would hold the caller's request hostage.
"""

from __future__ import annotations

import datetime as dt
import email.utils
import random
from typing import Final

import attrs

from ._errors import ConfigurationError

__all__ = [
    "DEFAULT_BACKOFF_BASE",
    "DEFAULT_BACKOFF_MAX",
    "DEFAULT_DEADLINE",
    "DEFAULT_MAX_RETRIES",
    "DEFAULT_RETRY_AFTER_MAX",
    "DEFAULT_TIMEOUT",
    "RetryPolicy",
    "is_retryable_status",
    "parse_retry_after",
]

#: Seconds one HTTP attempt may take (connect, write and read each).
DEFAULT_TIMEOUT: Final = 5.0
#: Seconds an awaited track call may take in total, retries and waits included.
DEFAULT_DEADLINE: Final = 10.0
#: Retries after the first attempt.
DEFAULT_MAX_RETRIES: Final = 2
#: Upper bound, in seconds, of the first retry's random wait; it doubles on each retry.
DEFAULT_BACKOFF_BASE: Final = 0.5
#: Largest upper bound, in seconds, of a retry's random wait.
DEFAULT_BACKOFF_MAX: Final = 8.0
#: Longest ``Retry-After``, in seconds, the client honours before giving up.
DEFAULT_RETRY_AFTER_MAX: Final = 60.0

# 408 and 429 are the server asking for another try; every 5xx may be transient.
_RETRYABLE_4XX: Final = frozenset({408, 429})


def _seconds(_instance: object, attribute: attrs.Attribute[float], value: object) -> None:
    # `not value >= 0` also refuses NaN; a deadline of 0 would forbid every call.
    bad = isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0
    if bad or (attribute.name == "deadline" and value == 0) or value == float("inf"):
        raise ConfigurationError(
            f"{attribute.name} must be a finite number of seconds"
            f"{' > 0' if attribute.name == 'deadline' else ' >= 0'}, not {value!r}"
        )


def _count(_instance: object, attribute: attrs.Attribute[int], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(f"{attribute.name} must be an int >= 0, not {value!r}")


@attrs.frozen
class RetryPolicy:
    """How many times to retry, how long to wait between tries, and the total deadline."""

    max_retries: int = attrs.field(default=DEFAULT_MAX_RETRIES, validator=_count)
    backoff_base: float = attrs.field(default=DEFAULT_BACKOFF_BASE, validator=_seconds)
    backoff_max: float = attrs.field(default=DEFAULT_BACKOFF_MAX, validator=_seconds)
    retry_after_max: float = attrs.field(default=DEFAULT_RETRY_AFTER_MAX, validator=_seconds)
    deadline: float = attrs.field(default=DEFAULT_DEADLINE, validator=_seconds)

    def backoff(self, retry: int, rng: random.Random | None = None) -> float:
        """Return the jittered wait in seconds before retry number ``retry`` (from 1)."""
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** (retry - 1))
        return (rng or _rng).uniform(0, ceiling)


# Jitter needs spread, not secrecy.
_rng: Final = random.Random()  # noqa: S311


def is_retryable_status(status: int) -> bool:
    """Tell whether an HTTP status is worth another attempt (408, 429 and 5xx)."""
    return status >= 500 or status in _RETRYABLE_4XX


def parse_retry_after(value: str | None, *, now: dt.datetime | None = None) -> float | None:
    """Return the wait a ``Retry-After`` header asks for, in seconds, or None if unusable.

    Both forms of RFC 9110 are read: a number of seconds and an HTTP date. A date in the
    past means "now" (0 seconds).
    """
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT; parsedate gives naive for "-0000"
        when = when.replace(tzinfo=dt.UTC)
    current = now or dt.datetime.now(dt.UTC)
    return max(0.0, (when - current).total_seconds())
