"""Slow-call windows and the write side on one breaker (the two policies composed).

State-machine tests without a server: the guarded functions raise or sleep as Redis would.
The Redis behaviour itself (OOM, 30 ms of latency) is covered against real servers by
tests/test_sides_redis.py, tests/test_window_redis.py, the demo and the soak.
"""

from __future__ import annotations

import time

import pytest
from redis import exceptions as rx

from redisguard import Breaker, BreakerConfig, redis_guarded
from redisguard._errors import SlowCallsError

OOM = "command not allowed when used memory > 'maxmemory'."


def _breaker(name: str) -> Breaker:
    config = BreakerConfig(
        failure_threshold=2,
        reset_timeout=0.05,
        half_open_max_attempts=1,
        slow_call_duration=0.01,
        slow_call_rate_threshold=50.0,
        minimum_calls=4,
        sliding_window_size=4,
    )
    return Breaker(name, config)


@pytest.mark.parametrize("access", ["write", "both"])
def test_a_write_trial_closes_the_write_side_of_a_windowed_breaker(access: str) -> None:
    """OOM opens the write side; after reset_timeout a successful trial write closes it."""
    breaker = _breaker(f"ws-trial-{access}")
    refuse = [True]

    @redis_guarded(name="ws.set", fallback=False, breaker=breaker, retry=None, access=access)
    def set_value() -> bool:
        if refuse[0]:
            raise rx.OutOfMemoryError(OOM)
        return True

    assert set_value() is False
    assert set_value() is False
    assert breaker.write_state == "open"
    assert breaker.current_state == "closed"  # reads go on
    refuse[0] = False
    assert set_value() is False  # still open: answered without calling Redis
    time.sleep(0.06)
    assert set_value() is True  # the trial write
    assert breaker.write_state == "closed"
    assert set_value() is True


def test_slow_writes_open_the_main_side_of_a_windowed_breaker() -> None:
    """A write guard's slow successes count in the slow-call window like a read guard's."""
    breaker = _breaker("ws-slow")

    @redis_guarded(name="ws.slow", fallback=False, breaker=breaker, retry=None, access="write")
    def slow_set() -> bool:
        time.sleep(0.015)
        return True

    for _ in range(4):
        assert slow_set() is True
    assert breaker.current_state == "open"
    assert isinstance(breaker.opened_by, SlowCallsError)
    assert breaker.write_state == "closed"
