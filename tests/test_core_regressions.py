"""Regression tests for core bugs found by the property tests and review."""

from __future__ import annotations

import contextlib
import gc
import weakref

import pybreaker
import pytest
import redis

from redisguard import Breaker, BreakerConfig, CircuitOpenError, redact_url
from redisguard._tally import Tally


def test_late_trial_success_clears_the_failure_count() -> None:
    """A trial call that succeeds after the circuit closed still breaks a run of failures."""
    now = [0.0]
    breaker = Breaker(
        "late",
        BreakerConfig(failure_threshold=2, reset_timeout=1.0, half_open_max_attempts=2),
        clock=lambda: now[0],
    )
    breaker.open()
    now[0] += 1.0
    first, late = breaker.calling(), breaker.calling()
    first.__enter__()
    late.__enter__()
    first.__exit__(None, None, None)  # closes the circuit

    def fail() -> None:
        with contextlib.suppress(redis.ConnectionError, CircuitOpenError), breaker.calling():
            raise redis.ConnectionError("refused")

    fail()
    late.__exit__(None, None, None)
    fail()
    assert breaker.current_state == "closed"


def test_dropped_tallies_are_freed() -> None:
    """A Tally that is no longer referenced is garbage-collected along with its finalizer."""
    gc.collect()
    before = len(weakref.finalize._registry)  # type: ignore[attr-defined]
    for _ in range(100):
        Tally().add()
    gc.collect()
    assert len(weakref.finalize._registry) - before < 100  # type: ignore[attr-defined]


def test_redact_url_leaves_a_url_without_secrets_unchanged() -> None:
    """A unix:// URL without credentials is shown exactly as given."""
    assert redact_url("unix:///run/redis.sock?db=0") == "unix:///run/redis.sock?db=0"


def test_circuit_open_error_is_a_pybreaker_error() -> None:
    """pybreaker users catching CircuitBreakerError around breaker.call() also catch ours."""
    assert issubclass(CircuitOpenError, pybreaker.CircuitBreakerError)


def test_tripping_call_says_it_opened_the_circuit() -> None:
    """The call whose failure opens the circuit reports one attempt, not 'not attempted'."""
    breaker = Breaker("trip", BreakerConfig(failure_threshold=1))

    def boom() -> None:
        raise redis.ConnectionError("refused")

    with pytest.raises(CircuitOpenError, match="opened by this failure") as info:
        breaker.call(boom)
    assert info.value.attempts == 1
    assert isinstance(info.value.__cause__, redis.ConnectionError)
