"""Failure-rate and slow-call windows: the window itself and the breaker that opens on it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pybreaker
import pytest
import redis
from _breakers import connection_refused, fail, returns_ok

from redisguard import (
    Breaker,
    BreakerConfig,
    CircuitOpenError,
    ConfigError,
    LoggingListener,
    SlowCallsError,
    redis_guarded,
)
from redisguard._breaker import NORMAL
from redisguard._prober import ping_proves_recovery
from redisguard._window import CallWindow

if TYPE_CHECKING:
    from conftest import BreakerFactory, FakeClock


def succeed(breaker: Breaker, times: int = 1) -> None:
    for _ in range(times):
        breaker.call(returns_ok)


def slow_call(clock: FakeClock, seconds: float) -> Callable[[], str]:
    """A function that succeeds after ``seconds`` on the fake clock."""

    def slow() -> str:
        clock.advance(seconds)
        return "slow"

    return slow


# -- the window alone -------------------------------------------------------------------------
def test_count_based_window_holds_the_last_calls(clock: FakeClock) -> None:
    """A count-based window of 10 per-call buckets forgets the 11th call back."""
    window = CallWindow(
        BreakerConfig(failure_rate_threshold=50, minimum_calls=5, sliding_window_size=10), clock
    )
    assert [window.failure() for _ in range(4)] == [False] * 4
    assert window.view().failures == 4
    for _ in range(10):
        window.note_fast()
    view = window.view()
    assert (view.calls, view.failures) == (10, 0)


def test_count_based_buckets_cover_at_least_the_window(clock: FakeClock) -> None:
    """A 100-call window in 10-call buckets holds between 100 and 109 calls once full."""
    window = CallWindow(
        BreakerConfig(failure_rate_threshold=50, minimum_calls=5, sliding_window_size=100), clock
    )
    window.failure()  # call 0: slides out once 110 more calls have been made
    for n in range(1, 250):
        window.note_fast()
        calls = window.view().calls
        assert calls == n + 1 if n < 100 else 100 <= calls <= 109
    assert window.view().failures == 0


def test_time_based_buckets_expire_on_the_clock(clock: FakeClock) -> None:
    """Failures older than the monitoring window drop out, a bucket at a time."""
    window = CallWindow(
        BreakerConfig(failure_rate_threshold=50, minimum_calls=100, monitoring_window=10), clock
    )
    window.failure()
    window.failure()
    clock.advance(5)
    window.note_fast()
    window.failure()
    assert (window.view().calls, window.view().failures) == (4, 3)
    clock.advance(5.5)  # the first bucket (t=1000..1001) is now out of the window
    view = window.view()
    assert (view.calls, view.failures) == (2, 1)
    clock.advance(5)
    assert window.view().calls == 0


def test_rates_are_judged_only_from_minimum_calls(clock: FakeClock) -> None:
    """With 5 minimum calls, four failures out of four do not trip; the fifth does."""
    window = CallWindow(
        BreakerConfig(failure_rate_threshold=80, minimum_calls=5, sliding_window_size=5), clock
    )
    assert [window.failure() for _ in range(5)] == [False, False, False, False, True]


def test_window_reset_starts_empty(clock: FakeClock) -> None:
    """After reset() the earlier calls are gone, in both kinds of window."""
    for size in (None, 10):
        window = CallWindow(
            BreakerConfig(failure_rate_threshold=50, minimum_calls=2, sliding_window_size=size),
            clock,
        )
        window.failure()
        window.note_fast()
        window.reset()
        assert window.view().calls == 0
        window.note_fast()
        assert (window.view().calls, window.view().failures) == (1, 0)


@pytest.mark.parametrize("size", [None, 1_000_000])
def test_concurrent_successes_never_lose_a_failure(size: int | None) -> None:
    """Threads hammering lock-free successes while failures arrive: failures stay exact."""
    breaker = Breaker(
        "hammer",
        BreakerConfig(
            failure_rate_threshold=100,
            minimum_calls=1_000_000,
            sliding_window_size=size,
            monitoring_window=3600,
        ),
    )
    threads, per_thread, failures = 8, 20_000, 1_000
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)

    assert breaker._window is not None
    success = redis_guarded(name="hammer", breaker=breaker)(returns_ok)  # the windowed wrapper

    def hammer() -> None:
        try:
            start.wait()
            for _ in range(per_thread):
                success()
        except BaseException as exc:  # pragma: no cover - the assertion below reports it
            errors.append(exc)

    pool = [threading.Thread(target=hammer) for _ in range(threads)]
    for thread in pool:
        thread.start()
    start.wait()
    for _ in range(failures):
        breaker._on_failure(NORMAL, redis.ConnectionError("refused"))
    for thread in pool:
        thread.join()
    assert errors == []
    view = breaker._window.view()
    assert view.failures == failures
    total = threads * per_thread + failures
    if size is None:  # the first bucket's first call number may race by a few calls
        assert total - 50 <= view.calls <= total
    else:
        assert view.calls == total
    assert breaker.current_state == "closed"


# -- failure-rate mode ------------------------------------------------------------------------
def test_rate_mode_opens_at_the_rate_not_before_minimum_calls(
    make_breaker: BreakerFactory,
) -> None:
    """50% of 10 calls opens; 4 failures in 9 calls do not, whatever failure_threshold says."""
    breaker = make_breaker(
        failure_threshold=2, failure_rate_threshold=50, minimum_calls=10, sliding_window_size=10
    )
    for _ in range(4):
        succeed(breaker)
        with pytest.raises(redis.ConnectionError):
            breaker.call(connection_refused)
    succeed(breaker)
    assert breaker.current_state == "closed"
    assert breaker.stats().window_calls == 9
    with pytest.raises(CircuitOpenError):
        breaker.call(connection_refused)
    assert breaker.current_state == "open"
    assert isinstance(breaker.opened_by, redis.ConnectionError)
    assert ping_proves_recovery(breaker.opened_by)  # the prober may half-open it early


def test_rate_mode_ignores_consecutive_failures_below_the_rate(
    make_breaker: BreakerFactory,
) -> None:
    """Three consecutive failures after 17 successes are 15%: below a 20% threshold."""
    breaker = make_breaker(failure_threshold=3, failure_rate_threshold=20, minimum_calls=10)
    succeed(breaker, 17)
    fail(breaker, 3)
    assert breaker.current_state == "closed"
    assert breaker.fail_counter == 3  # pybreaker's counter still counts the run
    stats = breaker.stats()
    assert (stats.window_calls, stats.failure_rate) == (20, 15.0)
    fail(breaker)
    assert breaker.current_state == "closed"  # 4 of 21: 19%
    fail(breaker)
    assert breaker.current_state == "open"  # 5 of 22: 23%


def test_time_based_rate_forgets_old_failures(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """Failures that left the monitoring window no longer count towards the rate."""
    breaker = make_breaker(failure_rate_threshold=50, minimum_calls=4, monitoring_window=10)
    fail(breaker, 3)
    clock.advance(10.5)
    succeed(breaker, 3)
    fail(breaker)
    assert breaker.current_state == "closed"  # 1 of 4 calls in the window
    assert breaker.stats().failure_rate == 25.0


def test_window_starts_empty_after_the_circuit_closes(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """Half-open -> closed clears the window, so one more failure does not re-open it."""
    breaker = make_breaker(
        failure_rate_threshold=50, minimum_calls=2, sliding_window_size=4, reset_timeout=1
    )
    fail(breaker, 2)
    assert breaker.current_state == "open"
    clock.advance(1.5)
    succeed(breaker)
    assert breaker.current_state == "closed"
    assert breaker.stats().window_calls == 0
    with pytest.raises(redis.ConnectionError):
        breaker.call(connection_refused)  # 1 call in the window: below minimum_calls
    assert breaker.current_state == "closed"


# -- slow calls -------------------------------------------------------------------------------
def test_slow_successes_open_the_circuit_with_a_slow_calls_reason(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """Half of 4 calls slower than 10 ms open it, though every call succeeded."""
    breaker = make_breaker(slow_call_duration=0.01, slow_call_rate_threshold=50, minimum_calls=4)
    slow = slow_call(clock, 0.05)
    succeed(breaker, 2)
    assert breaker.call(slow) == "slow"
    assert breaker.current_state == "closed"  # 3 calls: below minimum_calls
    assert breaker.call(slow) == "slow"
    assert breaker.current_state == "open"
    cause = breaker.opened_by
    assert isinstance(cause, SlowCallsError)
    assert (cause.rate, cause.threshold, cause.calls) == (50.0, 50.0, 4)
    assert "50.0% of the last 4 calls took longer than 10 ms" in str(cause)
    assert not ping_proves_recovery(cause)  # an answered PING proves nothing about latency
    assert breaker.stats().slow_call_rate == 50.0


def test_calls_at_the_slow_duration_are_not_slow(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """Only calls slower than slow_call_duration count; failures are never slow calls."""
    breaker = make_breaker(slow_call_duration=0.01, minimum_calls=2, failure_threshold=100)
    for _ in range(5):
        breaker.call(slow_call(clock, 0.01))
        fail(breaker)
    stats = breaker.stats()
    assert (stats.window_calls, stats.slow_call_rate, stats.failure_rate) == (10, 0.0, 50.0)
    assert breaker.current_state == "closed"  # consecutive mode: 1 failure in a row


def test_consecutive_mode_still_opens_on_failures_with_slow_calls_on(
    make_breaker: BreakerFactory,
) -> None:
    """Slow-call breaking does not change the consecutive failure rule."""
    breaker = make_breaker(failure_threshold=3, slow_call_duration=0.01)
    fail(breaker, 3)
    assert breaker.current_state == "open"
    assert isinstance(breaker.opened_by, redis.ConnectionError)


def test_slow_trial_reopens_and_fast_trial_closes(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """Half-open: a slow trial is a failed trial (re-opens), a fast one closes the circuit."""
    breaker = make_breaker(
        slow_call_duration=0.01, minimum_calls=2, reset_timeout=1, half_open_max_attempts=1
    )
    breaker.call(slow_call(clock, 0.05))
    breaker.call(slow_call(clock, 0.05))
    assert breaker.current_state == "open"
    clock.advance(1.5)
    assert breaker.call(slow_call(clock, 0.05)) == "slow"  # the trial succeeds, but slowly
    assert breaker.current_state == "open"
    assert isinstance(breaker.opened_by, SlowCallsError)
    assert "half-open trial call took 50.0 ms" in str(breaker.opened_by)
    with pytest.raises(CircuitOpenError):
        breaker.call(returns_ok)  # the reset timeout starts again
    clock.advance(1.5)
    succeed(breaker)
    assert breaker.current_state == "closed"
    assert breaker.opened_by is None


async def test_acall_times_slow_calls(make_breaker: BreakerFactory, clock: FakeClock) -> None:
    """acall() measures the awaited call on the breaker's clock."""
    breaker = make_breaker(slow_call_duration=0.01, minimum_calls=1, slow_call_rate_threshold=100)

    async def slow() -> str:
        clock.advance(0.02)
        return "slow"

    assert await breaker.acall(slow) == "slow"
    assert isinstance(breaker.opened_by, SlowCallsError)


def test_listeners_see_the_slow_open(make_breaker: BreakerFactory, clock: FakeClock) -> None:
    """state_change fires closed -> open for a slow-call opening, and success still fires."""
    events: list[tuple[str, str]] = []
    successes: list[int] = []

    class Recorder(pybreaker.CircuitBreakerListener):
        def state_change(self, cb: pybreaker.CircuitBreaker, old: object, new: object) -> None:
            events.append((getattr(old, "name", ""), getattr(new, "name", "")))

        def success(self, cb: pybreaker.CircuitBreaker) -> None:
            successes.append(1)

    breaker = make_breaker(slow_call_duration=0.01, minimum_calls=1)
    breaker.add_listener(Recorder())
    breaker.call(slow_call(clock, 0.02))
    assert events == [("closed", "open")]
    assert successes == [1]


def test_stats_have_no_window_view_without_a_window(make_breaker: BreakerFactory) -> None:
    """Without rate or slow-call settings the window fields are None and nothing is built."""
    breaker = make_breaker()
    stats = breaker.stats()
    assert (stats.window_calls, stats.failure_rate, stats.slow_call_rate) == (None, None, None)
    assert breaker._window is None
    assert stats.as_dict()["window_calls"] is None


# -- configuration ----------------------------------------------------------------------------
def test_minimum_calls_above_the_sliding_window_is_refused() -> None:
    """A window that could never hold minimum_calls calls is a ConfigError naming both."""
    with pytest.raises(ConfigError, match=r"minimum_calls \(30\).*sliding_window_size \(20\)"):
        BreakerConfig(failure_rate_threshold=50, minimum_calls=30, sliding_window_size=20)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_rate_threshold", 0),
        ("failure_rate_threshold", 100.5),
        ("failure_rate_threshold", "50"),
        ("slow_call_rate_threshold", 0.0),
        ("slow_call_rate_threshold", -1),
        ("minimum_calls", 0),
        ("minimum_calls", 2.5),
        ("sliding_window_size", 0),
        ("slow_call_duration", 0),
        ("slow_call_duration", -0.01),
    ],
)
def test_window_fields_are_validated(field: str, value: object) -> None:
    """Each window setting must be sane; the error names the field and the value."""
    with pytest.raises(ConfigError) as info:
        BreakerConfig(**{field: value})  # type: ignore[arg-type]
    assert field in str(info.value)
    assert repr(value) in str(info.value)


def test_window_settings_from_the_environment() -> None:
    """Percentages, counts, and the slow-call duration in milliseconds."""
    prefix = "REDIS_CIRCUIT_BREAKER_"
    config = BreakerConfig.from_env(
        {
            f"{prefix}FAILURE_RATE_THRESHOLD": "25.5",
            f"{prefix}MINIMUM_CALLS": "40",
            f"{prefix}SLIDING_WINDOW_SIZE": "200",
            f"{prefix}SLOW_CALL_DURATION": "15",
            f"{prefix}SLOW_CALL_RATE_THRESHOLD": "80",
        }
    )
    assert config == BreakerConfig(
        failure_rate_threshold=25.5,
        minimum_calls=40,
        sliding_window_size=200,
        slow_call_duration=0.015,
        slow_call_rate_threshold=80,
    )
    assert isinstance(config.minimum_calls, int)
    assert isinstance(config.sliding_window_size, int)
    assert config.uses_window
    assert not BreakerConfig().uses_window


def test_logging_listener_says_slow_calls_opened_it(
    make_breaker: BreakerFactory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The ERROR record of the opening carries opened_by, naming the slow-call rate."""
    breaker = make_breaker(slow_call_duration=0.01, minimum_calls=1)
    breaker.add_listener(LoggingListener())
    with caplog.at_level(logging.ERROR, logger="redisguard"):
        breaker.call(slow_call(clock, 0.02))
    (record,) = caplog.records
    assert record.getMessage() == "Circuit breaker opened: test"
    assert getattr(record, "opened_by", "").startswith("SlowCallsError: slow calls: 100.0%")


def test_a_slow_trial_after_an_outage_closes_the_circuit() -> None:
    """Opened by a connection error, the first trial pays a reconnect: slow, but it proves
    Redis answers, so it closes the circuit; the window judges latency again from there."""
    breaker = Breaker(
        "slow-trial-outage",
        BreakerConfig(
            failure_threshold=1, slow_call_duration=0.01, sliding_window_size=20, minimum_calls=20
        ),
    )

    def refused() -> None:
        raise ConnectionRefusedError("refused")

    with pytest.raises((ConnectionRefusedError, pybreaker.CircuitBreakerError)):
        breaker.call(refused)
    assert breaker.current_state == "open"
    breaker.half_open()
    breaker.call(time.sleep, 0.03)
    assert breaker.current_state == "closed"
