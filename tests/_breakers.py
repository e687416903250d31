"""Calls that fail or succeed, to drive a :class:`redisguard.Breaker` through its public API."""

from __future__ import annotations

import contextlib

import redis

from redisguard import Breaker, CircuitOpenError


def connection_refused() -> None:
    """A call that fails the way redis-py does when nothing listens on the port."""
    raise redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")


def returns_ok() -> str:
    """A call that succeeds."""
    return "ok"


def fail(breaker: Breaker, times: int = 1) -> None:
    """Record ``times`` failed calls through the public ``call()`` API."""
    for _ in range(times):
        with contextlib.suppress(redis.ConnectionError, CircuitOpenError):
            breaker.call(connection_refused)


def trip(breaker: Breaker) -> None:
    """Fail until the breaker opens."""
    fail(breaker, breaker.config.failure_threshold)
    assert breaker.current_state == "open"
