"""Back-off as a whole: a circuit breaker and a recovery ramp for background delivery.

Retries space out one event's attempts; they do nothing about a thousand queued events that
all meet the same outage. The breaker watches every attempt. After ``threshold`` failures in
a row that say "Taapit is unwell" (no connection, a timeout, 5xx, 429) it *opens*: background
attempts wait instead of going out. After a cooldown one attempt goes out as a probe
(*half-open*); if it fails the breaker opens again with twice the cooldown (up to a cap), if
it succeeds the breaker closes and a ramp paces the backlog: the rate of background attempts
starts at ``recovery_rate`` per second and doubles every second until the ramp ends. A 429
with ``Retry-After`` pauses background delivery for that long at once, and its end is probed
the same way.

Awaited ``track`` calls are never held here (their deadline is the caller's); their outcomes
still inform the breaker. A refusal such as 400 or 401 proves Taapit is up, so it closes the
breaker rather than opening it.
"""

from __future__ import annotations

import asyncio
import math
from typing import Final, Literal

from ._errors import ConfigurationError

__all__ = [
    "DEFAULT_BREAKER_COOLDOWN",
    "DEFAULT_BREAKER_THRESHOLD",
    "DEFAULT_RECOVERY_RATE",
    "CircuitBreaker",
]

#: Failures in a row (all attempts, all events) that open the breaker; 0 turns it off.
DEFAULT_BREAKER_THRESHOLD: Final = 5
#: Seconds the breaker stays open before its first probe; doubles per failed probe.
DEFAULT_BREAKER_COOLDOWN: Final = 5.0
#: Longest cooldown, in seconds, however many probes failed.
BREAKER_COOLDOWN_MAX: Final = 60.0
#: Background attempts per second right after a recovery; the rate doubles every second.
DEFAULT_RECOVERY_RATE: Final = 10.0
#: Seconds the recovery ramp lasts; after it, background attempts are not paced.
RECOVERY_SECONDS: Final = 8.0

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Shared by every background attempt of one client (one event loop)."""

    def __init__(
        self,
        *,
        threshold: int = DEFAULT_BREAKER_THRESHOLD,
        cooldown: float = DEFAULT_BREAKER_COOLDOWN,
        recovery_rate: float | None = DEFAULT_RECOVERY_RATE,
    ) -> None:
        raw: tuple[object, object, object] = (threshold, cooldown, recovery_rate)
        if isinstance(raw[0], bool) or not isinstance(raw[0], int) or threshold < 0:
            raise ConfigurationError(
                f"breaker_threshold must be an int >= 0 (0 turns it off), not {threshold!r}"
            )
        if isinstance(raw[1], bool) or not isinstance(raw[1], int | float):
            raise ConfigurationError(f"breaker_cooldown must be seconds, not {cooldown!r}")
        if not 0 < cooldown <= BREAKER_COOLDOWN_MAX:
            raise ConfigurationError(
                f"breaker_cooldown must be > 0 and <= {BREAKER_COOLDOWN_MAX:g} seconds, "
                f"not {cooldown!r}"
            )
        if recovery_rate is not None and (
            isinstance(raw[2], bool)
            or not isinstance(raw[2], int | float)
            or not 0 < recovery_rate < math.inf
        ):
            raise ConfigurationError(
                "recovery_rate must be background attempts per second > 0, or None for no "
                f"ramp, not {recovery_rate!r}"
            )
        self.threshold = threshold
        self.cooldown = float(cooldown)
        self.recovery_rate = recovery_rate
        self.trips = 0  # times opened, for stats and tests
        self._failures = 0
        self._open_until: float | None = None
        self._next_cooldown = self.cooldown
        self._probe_out = False
        self._probe_done: asyncio.Event | None = None
        self._ramp_from: float | None = None
        self._ramp_admitted = 0

    @property
    def state(self) -> State:
        """``closed`` (attempts flow), ``open`` (they wait) or ``half_open`` (probing)."""
        if self._open_until is None:
            return "closed"
        return "open" if _now() < self._open_until else "half_open"

    # --- admission -----------------------------------------------------------------------

    async def admit(self) -> bool:
        """Wait until a background attempt may go out; True when it is the probe.

        A caller that got True must end with ``record(..., probe=True)`` or ``release()``.
        """
        while True:
            if self._open_until is not None:
                if await self._wait_open():
                    return True
                continue
            wait = self.ramp_take(1)
            if wait <= 0:
                return False
            await asyncio.sleep(wait)
            if self._open_until is None:
                return False  # the slot was reserved before the wait

    async def wait_ready(self) -> None:
        """Wait until the breaker is closed or a probe may go out (the outbox's pump)."""
        while self._open_until is not None:
            now = _now()
            if now < self._open_until:
                await asyncio.sleep(self._open_until - now)
            elif self._probe_out:
                await self._probe_event().wait()
            else:
                return

    def take_probe(self) -> bool:
        """Become the probe if the cooldown is over and no probe is out (no waiting)."""
        if self._open_until is None or self._probe_out or _now() < self._open_until:
            return False
        self._probe_out = True
        return True

    def ramp_allowance(self, limit: int) -> int:
        """How many attempts may start within a second (up to ``limit``); at least 1."""
        if self._ramp_from is None or self.recovery_rate is None:
            return limit
        elapsed = _now() - self._ramp_from
        if elapsed >= RECOVERY_SECONDS:
            return limit
        # Attempts allowed by one second from now, minus those already let through.
        allowed = self._allowed_by(elapsed + 1.0) - self._ramp_admitted
        return max(1, min(limit, int(allowed)))

    async def _wait_open(self) -> bool:
        assert self._open_until is not None
        now = _now()
        if now < self._open_until:
            await asyncio.sleep(self._open_until - now)
            return False
        if self.take_probe():
            return True
        await self._probe_event().wait()
        return False

    def _probe_event(self) -> asyncio.Event:
        if self._probe_done is None:
            self._probe_done = asyncio.Event()
        return self._probe_done

    def _allowed_by(self, elapsed: float) -> float:
        # The rate r(t) = rate * 2**t, integrated from 0 to t: attempts allowed so far.
        assert self.recovery_rate is not None
        return self.recovery_rate * (math.pow(2.0, elapsed) - 1.0) / math.log(2.0)

    def ramp_take(self, count: int) -> float:
        """Let ``count`` attempts out under the ramp; seconds until the last one's slot."""
        if self._ramp_from is None or self.recovery_rate is None:
            return 0.0
        elapsed = _now() - self._ramp_from
        if elapsed >= RECOVERY_SECONDS:
            self._ramp_from = None
            return 0.0
        self._ramp_admitted += count
        # When the integral reaches this attempt's number: its slot.
        due = math.log2(self._ramp_admitted * math.log(2.0) / self.recovery_rate + 1.0)
        return min(due, RECOVERY_SECONDS) - elapsed

    # --- outcomes --------------------------------------------------------------------------

    def record(self, *, healthy: bool, probe: bool = False, pause: float | None = None) -> None:
        """Take one attempt's outcome into account.

        Args:
            healthy: Taapit answered (success or a refusal such as 400); False for no
                connection, a timeout, 5xx or 429.
            probe: The attempt was the half-open probe ``admit()`` returned True for.
            pause: Seconds the server asked everyone to wait (429 ``Retry-After``).
        """
        if self.threshold == 0:
            return
        if healthy:
            self._failures = 0
            if self._open_until is not None:  # any answer proves Taapit is back
                self._close()
            return
        self._failures += 1
        if pause is not None and pause > 0:
            self._open(pause)  # the server said when: no guessing, no doubling
        elif probe or (self._failures >= self.threshold and self._open_until is None):
            self._open(self._next_cooldown)
            self._next_cooldown = min(self._next_cooldown * 2, BREAKER_COOLDOWN_MAX)

    def release(self, probe: bool) -> None:
        """An admitted attempt ended with no outcome (cancelled): free the probe slot."""
        if probe and self._probe_out:
            self._probe_out = False
            self._wake_waiters()

    def _open(self, seconds: float) -> None:
        until = _now() + seconds
        if self._open_until is None:
            self.trips += 1
        self._open_until = max(until, self._open_until or until)
        self._ramp_from = None
        self._probe_out = False
        self._wake_waiters()

    def _close(self) -> None:
        self._open_until = None
        self._probe_out = False
        self._next_cooldown = self.cooldown
        if self.recovery_rate is not None:
            self._ramp_from = _now()
            self._ramp_admitted = 0
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        if self._probe_done is not None:
            self._probe_done.set()
            self._probe_done = None


def _now() -> float:
    return asyncio.get_running_loop().time()
