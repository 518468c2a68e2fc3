"""The circuit breaker's state machine, on a clock the test moves by hand."""

from __future__ import annotations

import pytest

from gateway.breaker import CircuitBreaker, State


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def breaker(clock: Clock) -> CircuitBreaker:
    return CircuitBreaker(failures=3, open_seconds=10, clock=clock)


def state(breaker: CircuitBreaker) -> State:
    """Read afresh each time (a plain attribute access would let mypy assume it is fixed)."""
    return breaker.state


def fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        assert breaker.allow()
        breaker.record_failure()


def test_a_closed_circuit_lets_everything_through(breaker: CircuitBreaker) -> None:
    assert state(breaker) is State.CLOSED
    assert all(breaker.allow() for _ in range(100))
    assert breaker.retry_after() == 0


def test_only_consecutive_failures_open_the_circuit(breaker: CircuitBreaker) -> None:
    fail(breaker, 2)
    breaker.record_success()  # one success and the count starts over
    fail(breaker, 2)
    assert state(breaker) is State.CLOSED
    fail(breaker, 1)
    assert state(breaker) is State.OPEN


def test_an_open_circuit_refuses_and_says_how_long_for(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    fail(breaker, 3)
    assert not breaker.allow()
    assert breaker.retry_after() == 10
    clock.advance(7.5)
    assert not breaker.allow()
    assert state(breaker) is State.OPEN
    assert breaker.retry_after() == 3  # rounded up: never invites a retry too early


def test_after_the_open_period_exactly_one_probe_goes_through(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    fail(breaker, 3)
    clock.advance(10)
    assert state(breaker) is State.HALF_OPEN
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # everyone else waits for its verdict
    assert not breaker.allow()
    assert breaker.retry_after() == 1


def test_a_successful_probe_closes_the_circuit(breaker: CircuitBreaker, clock: Clock) -> None:
    fail(breaker, 3)
    clock.advance(10)
    assert breaker.allow()
    breaker.record_success()
    assert state(breaker) is State.CLOSED
    assert all(breaker.allow() for _ in range(10))
    # Closed again means a fresh count: it takes the full threshold to reopen.
    fail(breaker, 2)
    assert state(breaker) is State.CLOSED


def test_a_failed_probe_reopens_the_circuit_for_a_full_period(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    fail(breaker, 3)
    clock.advance(10)
    assert breaker.allow()
    breaker.record_failure()  # one failure suffices in half-open
    assert state(breaker) is State.OPEN
    assert not breaker.allow()
    clock.advance(9.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()


def test_a_probe_that_ends_without_a_verdict_lets_another_probe_go(
    breaker: CircuitBreaker, clock: Clock
) -> None:
    # E.g. the caller hung up, or its body was too large: nothing learned about the service.
    fail(breaker, 3)
    clock.advance(10)
    assert breaker.allow()
    assert not breaker.allow()
    breaker.release_probe()
    assert state(breaker) is State.HALF_OPEN
    assert breaker.allow()


def test_a_threshold_of_one_opens_on_the_first_failure(clock: Clock) -> None:
    breaker = CircuitBreaker(failures=1, open_seconds=0.5, clock=clock)
    fail(breaker, 1)
    assert state(breaker) is State.OPEN
    assert breaker.retry_after() == 1
