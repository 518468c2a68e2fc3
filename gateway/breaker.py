"""A circuit breaker per service: stop sending to a service that keeps failing, probe it again.

Closed: requests flow, consecutive transport failures are counted. Open: requests are refused
at once (503) for ``open_seconds``. Half-open: one probe request is let through; its success
closes the circuit, its failure opens it again. So a service that comes back is served again
without a restart of the gateway.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class CircuitBreaker:
    def __init__(
        self,
        *,
        failures: int,
        open_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failures
        self.open_seconds = open_seconds
        # Injectable so tests can move time without patching the clock asyncio runs on.
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._probing = False

    @property
    def state(self) -> State:
        if self._opened_at is None:
            return State.CLOSED
        if self._clock() - self._opened_at >= self.open_seconds:
            return State.HALF_OPEN
        return State.OPEN

    def retry_after(self) -> int:
        if self._opened_at is None:
            return 0
        remaining = self.open_seconds - (self._clock() - self._opened_at)
        return max(1, int(remaining + 0.999))

    def allow(self) -> bool:
        """May a request go to the service now? In half-open, only one probe at a time."""
        state = self.state
        if state is State.CLOSED:
            return True
        if state is State.HALF_OPEN and not self._probing:
            self._probing = True
            return True
        return False

    def record_success(self) -> None:
        self._failures = 0
        self._opened_at = None
        self._probing = False

    def record_failure(self) -> None:
        self._probing = False
        self._failures += 1
        if self._opened_at is not None or self._failures >= self.failure_threshold:
            self._opened_at = self._clock()

    def release_probe(self) -> None:
        """A probe that ended without telling anything (e.g. the client went away)."""
        self._probing = False
