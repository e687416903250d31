"""The breaker's state machine, its pybreaker compatibility, its registry and its concurrency."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import pybreaker
import pytest
import redis
from _breakers import connection_refused, fail, returns_ok, trip

import redisguard
from redisguard import Breaker, BreakerConfig, CircuitOpenError, ConfigError
from redisguard._breaker import get_breaker

if TYPE_CHECKING:
    from conftest import BreakerFactory, FakeClock


class Recorder(pybreaker.CircuitBreakerListener):
    """A plain pybreaker listener that writes down what it is told."""

    def __init__(self) -> None:
        self.changes: list[tuple[str, str]] = []
        self.failures: list[BaseException] = []
        self.successes = 0
        self.before_calls = 0

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        self.changes.append((old_state.name, new_state.name))

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        self.failures.append(exc)

    def success(self, cb: pybreaker.CircuitBreaker) -> None:
        self.successes += 1

    def before_call(self, cb: pybreaker.CircuitBreaker, func: Any, *args: Any, **kw: Any) -> None:
        self.before_calls += 1


# -- opening ----------------------------------------------------------------------------------
def test_opens_only_at_the_threshold(make_breaker: BreakerFactory) -> None:
    """Failures below the threshold re-raise the error; the threshold-th one opens the circuit."""
    breaker = make_breaker(failure_threshold=3)
    for expected in (1, 2):
        with pytest.raises(redis.ConnectionError):
            breaker.call(connection_refused)
        assert breaker.current_state == "closed"
        assert breaker.stats().failure_count == expected
    with pytest.raises(CircuitOpenError) as info:
        breaker.call(connection_refused)
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    assert info.value.attempts == 1  # this call reached Redis and opened the circuit
    assert breaker.current_state == "open"


def test_success_clears_the_consecutive_count(make_breaker: BreakerFactory) -> None:
    """A success in between means the failures are not consecutive, so the circuit stays closed."""
    breaker = make_breaker(failure_threshold=3)
    fail(breaker, 2)
    assert breaker.call(returns_ok) == "ok"
    assert breaker.stats().failure_count == 0
    fail(breaker, 2)
    assert breaker.current_state == "closed"
    fail(breaker)
    assert breaker.current_state == "open"


def test_failures_older_than_the_window_drop_out(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """Failures that left the monitoring window no longer count toward the threshold."""
    breaker = make_breaker(failure_threshold=3, monitoring_window=10.0)
    fail(breaker, 2)
    clock.advance(10.5)
    assert breaker.stats().failure_count == 0
    fail(breaker)
    assert breaker.current_state == "closed"
    assert breaker.stats().failure_count == 1
    clock.advance(5.0)
    fail(breaker, 2)
    assert breaker.current_state == "open"


def test_failures_just_inside_the_window_still_count(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """Failures spread over just under one window open the circuit."""
    breaker = make_breaker(failure_threshold=3, monitoring_window=10.0)
    fail(breaker)
    clock.advance(4.9)
    fail(breaker)
    clock.advance(4.9)
    fail(breaker)
    assert breaker.current_state == "open"


# -- open and half-open -------------------------------------------------------------------------
def test_stays_open_until_reset_timeout(make_breaker: BreakerFactory, clock: FakeClock) -> None:
    """While open, calls are rejected without running; after reset_timeout a trial runs."""
    breaker = make_breaker(failure_threshold=1, reset_timeout=5.0)
    trip(breaker)
    calls: list[int] = []
    clock.advance(4.99)
    with pytest.raises(CircuitOpenError):
        breaker.call(calls.append, 1)
    assert calls == []
    assert breaker.rejected_count == 1
    assert breaker.seconds_until_retry() == pytest.approx(0.01)
    clock.advance(0.01)
    breaker.call(calls.append, 2)
    assert calls == [2]
    assert breaker.current_state == "closed"


def test_half_open_needs_success_threshold_successes(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """With success_threshold=2 the first trial success keeps it half-open; the second closes it."""
    breaker = make_breaker(failure_threshold=1, reset_timeout=1.0, success_threshold=2)
    trip(breaker)
    clock.advance(1.0)
    breaker.call(returns_ok)
    assert breaker.current_state == "half-open"
    breaker.call(returns_ok)
    assert breaker.current_state == "closed"


def test_failed_trial_reopens_and_restarts_the_timeout(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """A failed half-open trial opens the circuit again for a full reset_timeout."""
    breaker = make_breaker(failure_threshold=1, reset_timeout=2.0)
    trip(breaker)
    clock.advance(2.0)
    with pytest.raises(CircuitOpenError):
        breaker.call(connection_refused)
    assert breaker.current_state == "open"
    clock.advance(1.9)
    with pytest.raises(CircuitOpenError):
        breaker.call(returns_ok)
    clock.advance(0.1)
    assert breaker.call(returns_ok) == "ok"
    assert breaker.current_state == "closed"


def test_half_open_rejects_beyond_the_trial_limit(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """Nested trial calls beyond half_open_max_attempts are rejected without running."""
    breaker = make_breaker(failure_threshold=1, reset_timeout=1.0, half_open_max_attempts=2)
    trip(breaker)
    clock.advance(1.0)
    ran: list[str] = []
    with breaker.calling(), breaker.calling():
        assert breaker.current_state == "half-open"
        with pytest.raises(CircuitOpenError):
            breaker.call(ran.append, "third")
    assert ran == []
    assert breaker.current_state == "closed"


def _start_threads(targets: list[Callable[[], None]]) -> list[threading.Thread]:
    threads = [threading.Thread(target=t, daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    return threads


def test_half_open_limit_with_threads(make_breaker: BreakerFactory, clock: FakeClock) -> None:
    """Of 8 threads arriving in half-open, half_open_max_attempts run; the rest are refused."""
    breaker = make_breaker(failure_threshold=1, reset_timeout=1.0, half_open_max_attempts=3)
    trip(breaker)
    clock.advance(1.0)
    release = threading.Event()
    running = threading.Semaphore(0)
    outcomes: list[str] = []
    lock = threading.Lock()

    def trial() -> str:
        running.release()
        assert release.wait(5)
        return "trial"

    def worker() -> None:
        try:
            result = breaker.call(trial)
        except CircuitOpenError:
            result = "rejected"
        with lock:
            outcomes.append(result)

    threads = _start_threads([worker] * 8)
    for _ in range(3):
        assert running.acquire(timeout=5)
    deadline = time.monotonic() + 5
    while len(outcomes) < 5 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert outcomes == ["rejected"] * 5  # refused while the trials are still blocked
    release.set()
    for thread in threads:
        thread.join(5)
    assert sorted(outcomes) == ["rejected"] * 5 + ["trial"] * 3
    assert breaker.current_state == "closed"


async def test_half_open_limit_with_asyncio_tasks(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """Of 8 tasks arriving in half-open, exactly half_open_max_attempts are awaited."""
    breaker = make_breaker(failure_threshold=1, reset_timeout=1.0, half_open_max_attempts=2)
    trip(breaker)
    clock.advance(1.0)
    release = asyncio.Event()
    started = 0

    async def trial() -> str:
        nonlocal started
        started += 1
        await release.wait()
        return "trial"

    async def worker() -> str:
        try:
            return await breaker.acall(trial)
        except CircuitOpenError:
            return "rejected"

    tasks = [asyncio.create_task(worker()) for _ in range(8)]
    await asyncio.sleep(0.01)
    assert started == 2
    assert sum(task.done() for task in tasks) == 6
    release.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert sorted(results) == ["rejected"] * 6 + ["trial"] * 2
    assert breaker.current_state == "closed"


# -- neutral outcomes -----------------------------------------------------------------------------
@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, asyncio.CancelledError, SystemExit])
def test_base_exceptions_are_neutral(make_breaker: BreakerFactory, exc_type: type) -> None:
    """KeyboardInterrupt, CancelledError and SystemExit propagate and are never counted."""
    breaker = make_breaker(failure_threshold=1)

    def interrupted() -> None:
        raise exc_type()

    with pytest.raises(exc_type):
        breaker.call(interrupted)
    assert breaker.current_state == "closed"
    assert breaker.stats().failure_count == 0
    assert breaker.failure_total == 0


def test_neutral_trial_frees_its_slot(make_breaker: BreakerFactory, clock: FakeClock) -> None:
    """A cancelled half-open trial neither closes nor re-opens, and frees its trial slot."""
    breaker = make_breaker(failure_threshold=1, reset_timeout=1.0, half_open_max_attempts=1)
    trip(breaker)
    clock.advance(1.0)

    def cancelled() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        breaker.call(cancelled)
    assert breaker.current_state == "half-open"
    assert breaker.call(returns_ok) == "ok"
    assert breaker.current_state == "closed"


def test_excluded_exceptions_are_successes(make_breaker: BreakerFactory) -> None:
    """pybreaker's excluded exceptions propagate from call() and count as a success."""
    breaker = make_breaker(failure_threshold=2)
    breaker.add_excluded_exception(redis.ResponseError)

    def wrongtype() -> None:
        raise redis.ResponseError("WRONGTYPE Operation against a key holding the wrong kind")

    fail(breaker)
    with pytest.raises(redis.ResponseError):
        breaker.call(wrongtype)
    assert breaker.current_state == "closed"
    assert breaker.fail_counter == 0
    assert breaker.success_count == 1


# -- reset and stats ------------------------------------------------------------------------------
def test_reset_closes_and_clears_counts(make_breaker: BreakerFactory) -> None:
    """reset() closes an open breaker and zeroes every count."""
    breaker = make_breaker(failure_threshold=2)
    breaker.call(returns_ok)
    trip(breaker)
    with pytest.raises(CircuitOpenError):
        breaker.call(returns_ok)
    breaker.reset()
    stats = breaker.stats()
    assert stats.state == "closed"
    assert (stats.failure_count, stats.success_count, stats.rejected_count) == (0, 0, 0)
    assert stats.last_failure_time is None
    fail(breaker)
    assert breaker.current_state == "closed"


def test_stats_fields(clock: FakeClock) -> None:
    """stats() reports the state, counts and UTC timestamps of the design document."""
    wall = type(clock)(start=1_700_000_000.0)
    breaker = Breaker(
        "stats",
        BreakerConfig(failure_threshold=2, reset_timeout=30.0),
        clock=clock,
        wall_clock=wall,
    )
    created = breaker.stats()
    assert created.name == "stats"
    assert created.state == "closed"
    assert created.last_state_change == datetime.fromtimestamp(1_700_000_000.0, timezone.utc)
    assert created.next_retry_time is None
    breaker.call(returns_ok)
    wall.advance(10)
    fail(breaker)
    wall.advance(1)
    clock.advance(1)
    fail(breaker)
    with pytest.raises(CircuitOpenError):
        breaker.call(returns_ok)
    clock.advance(10)
    stats = breaker.stats()
    assert stats.state == "open"
    assert stats.failure_count == 2
    assert stats.success_count == 1
    assert stats.rejected_count == 1
    assert stats.last_failure_time == datetime.fromtimestamp(1_700_000_011.0, timezone.utc)
    assert stats.last_state_change == datetime.fromtimestamp(1_700_000_011.0, timezone.utc)
    # Opened at wall time ...011; 10 s of the 30 s timeout have passed on the monotonic clock.
    assert stats.next_retry_time == datetime.fromtimestamp(1_700_000_031.0, timezone.utc)
    as_dict = stats.as_dict()
    assert as_dict["state"] == "open"
    assert as_dict["next_retry_time"] == "2023-11-14T22:13:51+00:00"
    assert as_dict["failure_count"] == 2


def test_success_count_is_exact_across_threads(make_breaker: BreakerFactory) -> None:
    """success_count loses no increments when many threads succeed at once."""
    breaker = make_breaker()

    def work() -> None:
        for _ in range(500):
            breaker.call(returns_ok)

    for thread in _start_threads([work] * 8):
        thread.join(10)
    assert breaker.success_count == 4000


# -- pybreaker compatibility ----------------------------------------------------------------------
def test_is_a_pybreaker_circuit_breaker(make_breaker: BreakerFactory) -> None:
    """A Breaker is a pybreaker.CircuitBreaker with pybreaker's state strings and methods."""
    breaker = make_breaker("compat", failure_threshold=4, reset_timeout=7.0)
    assert isinstance(breaker, pybreaker.CircuitBreaker)
    assert breaker.name == "compat"
    assert breaker.fail_max == 4
    assert breaker.reset_timeout == 7.0
    assert breaker.current_state == pybreaker.STATE_CLOSED == "closed"
    assert breaker.state.name == "closed"
    breaker.open()
    assert (breaker.current_state, breaker.state.name, breaker.state_code) == ("open", "open", 2)
    breaker.half_open()
    assert (breaker.current_state, breaker.state_code) == ("half-open", 1)
    breaker.close()
    assert (breaker.current_state, breaker.state_code) == ("closed", 0)
    breaker.state = "open"  # pybreaker's state setter takes a state name
    assert breaker.current_state == "open"
    assert repr(breaker) == "<Breaker 'compat' open>"


def test_fail_counter_follows_failures(make_breaker: BreakerFactory) -> None:
    """pybreaker's fail_counter reports the windowed failure count."""
    breaker = make_breaker(failure_threshold=5)
    fail(breaker, 3)
    assert breaker.fail_counter == 3


def test_unknown_state_name_is_refused(make_breaker: BreakerFactory) -> None:
    """Setting an unknown state name raises ValueError listing the valid ones."""
    breaker = make_breaker()
    with pytest.raises(ValueError, match="half-open"):
        breaker.state = "ajar"


def test_name_is_fixed_and_required(make_breaker: BreakerFactory) -> None:
    """A breaker's name cannot change and must be a non-empty string."""
    breaker = make_breaker("fixed")
    with pytest.raises(AttributeError):
        breaker.name = "other"
    with pytest.raises(ConfigError, match="non-empty"):
        Breaker("", BreakerConfig())


def test_call_async_is_not_supported(make_breaker: BreakerFactory) -> None:
    """pybreaker's Tornado entry point tells the user to use acall()."""
    with pytest.raises(NotImplementedError, match="acall"):
        make_breaker().call_async(returns_ok)


def test_listener_sees_each_real_transition_once(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """A pybreaker listener gets one state_change per transition and one failure per failure."""
    breaker = make_breaker(failure_threshold=2, reset_timeout=1.0)
    recorder = Recorder()
    breaker.add_listener(recorder)
    breaker.close()  # already closed: pybreaker would report closed -> closed here
    fail(breaker, 2)
    clock.advance(1.0)
    breaker.call(returns_ok)
    breaker.call(returns_ok)  # a late success in closed state is not a transition either
    assert recorder.changes == [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
    assert len(recorder.failures) == 2
    assert all(isinstance(exc, redis.ConnectionError) for exc in recorder.failures)
    assert recorder.successes == 2
    assert recorder.before_calls == 4


def test_listener_on_a_reopen(make_breaker: BreakerFactory, clock: FakeClock) -> None:
    """A failed trial is reported as half-open -> open."""
    breaker = make_breaker(failure_threshold=1, reset_timeout=1.0)
    recorder = Recorder()
    breaker.add_listener(recorder)
    trip(breaker)
    clock.advance(1.0)
    fail(breaker)
    assert recorder.changes == [("closed", "open"), ("open", "half-open"), ("half-open", "open")]


def test_removed_listener_hears_nothing(make_breaker: BreakerFactory) -> None:
    """After remove_listener, the listener receives no more events."""
    breaker = make_breaker(failure_threshold=1)
    recorder = Recorder()
    breaker.add_listener(recorder)
    breaker.remove_listener(recorder)
    breaker.call(returns_ok)
    trip(breaker)
    assert (recorder.changes, recorder.failures, recorder.successes) == ([], [], 0)


def test_listener_passed_at_construction(clock: FakeClock) -> None:
    """Listeners given to the constructor are attached like pybreaker's."""
    recorder = Recorder()
    breaker = Breaker("ctor", BreakerConfig(failure_threshold=1), listeners=[recorder], clock=clock)
    trip(breaker)
    assert recorder.changes == [("closed", "open")]
    assert breaker.listeners == (recorder,)


def test_raising_listener_does_not_break_calls(
    make_breaker: BreakerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A listener that raises is logged and the call's own outcome is unchanged."""

    class Broken(pybreaker.CircuitBreakerListener):
        def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("before_call broke")

        def success(self, cb: Any) -> None:
            raise RuntimeError("success broke")

        def failure(self, cb: Any, exc: BaseException) -> None:
            raise RuntimeError("failure broke")

        def state_change(self, cb: Any, old: Any, new: Any) -> None:
            raise RuntimeError("state_change broke")

    breaker = make_breaker(failure_threshold=1)
    breaker.add_listener(Broken())
    with caplog.at_level(logging.ERROR, logger="redisguard"):
        assert breaker.call(returns_ok) == "ok"
        with pytest.raises(CircuitOpenError):
            breaker.call(connection_refused)
    assert breaker.current_state == "open"
    broken = {str(r.exc_info[1]) for r in caplog.records if r.exc_info}
    assert broken == {"before_call broke", "success broke", "failure broke", "state_change broke"}


def test_duck_typed_listener(make_breaker: BreakerFactory) -> None:
    """An object that is not a CircuitBreakerListener but has the hooks also receives events."""

    class Duck:
        def __init__(self) -> None:
            self.events: list[str] = []

        def success(self, cb: Any) -> None:
            self.events.append("success")

        def state_change(self, cb: Any, old: Any, new: Any) -> None:
            self.events.append(f"{old.name}->{new.name}")

    breaker = make_breaker(failure_threshold=1)
    duck = Duck()
    breaker.add_listener(duck)
    breaker.call(returns_ok)
    trip(breaker)
    assert duck.events == ["success", "closed->open"]


# -- logging listener ------------------------------------------------------------------------
def test_logging_listener_levels(
    make_breaker: BreakerFactory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """The logging listener logs open at ERROR, re-open at WARNING, recovery at INFO."""
    breaker = make_breaker("logged", failure_threshold=1, reset_timeout=1.0)
    breaker.add_listener(redisguard.LoggingListener())
    with caplog.at_level(logging.INFO, logger="redisguard"):
        trip(breaker)
        clock.advance(1.0)
        fail(breaker)
        clock.advance(1.0)
        breaker.call(returns_ok)
    got = [
        (r.levelno, r.getMessage(), getattr(r, "state", None))
        for r in caplog.records
        if getattr(r, "category", None) == "circuit-breaker"
    ]
    assert got == [
        (logging.ERROR, "Circuit breaker opened: logged", "open"),
        (logging.INFO, "Circuit breaker entering half-open state: logged", "half-open"),
        (logging.WARNING, "Circuit breaker re-opened during recovery: logged", "open"),
        (logging.INFO, "Circuit breaker entering half-open state: logged", "half-open"),
        (logging.INFO, "Circuit breaker closed (recovered): logged", "closed"),
    ]
    opened = next(r for r in caplog.records if r.levelno == logging.ERROR)
    assert opened.failure_count == 1  # type: ignore[attr-defined]
    assert opened.previous_state == "closed"  # type: ignore[attr-defined]


def test_logging_listener_ignores_non_transitions(caplog: pytest.LogCaptureFixture) -> None:
    """A same-state notification (as raw pybreaker sends) is not logged."""
    listener = redisguard.LoggingListener(logging.getLogger("redisguard.test"))
    closed = pybreaker.CircuitClosedState(pybreaker.CircuitBreaker())
    with caplog.at_level(logging.DEBUG, logger="redisguard.test"):
        listener.state_change(pybreaker.CircuitBreaker(), closed, closed)
    assert caplog.records == []


# -- no lock across the call ------------------------------------------------------------------
def test_call_holds_no_lock_across_threads(make_breaker: BreakerFactory) -> None:
    """8 threads sleeping 0.1 s inside breaker.call finish together, not one after another."""
    breaker = make_breaker()
    began = time.perf_counter()
    threads = _start_threads([lambda: breaker.call(time.sleep, 0.1)] * 8)
    for thread in threads:
        thread.join(5)
    assert time.perf_counter() - began < 0.5


def test_calling_holds_no_lock_across_threads(make_breaker: BreakerFactory) -> None:
    """8 threads sleeping 0.1 s inside ``with breaker.calling()`` run concurrently."""
    breaker = make_breaker()

    def work() -> None:
        with breaker.calling():
            time.sleep(0.1)

    began = time.perf_counter()
    for thread in _start_threads([work] * 8):
        thread.join(5)
    assert time.perf_counter() - began < 0.5
    assert breaker.success_count == 8


async def test_acall_runs_tasks_concurrently(make_breaker: BreakerFactory) -> None:
    """8 tasks awaiting a 0.1 s sleep through breaker.acall finish in about 0.1 s."""
    breaker = make_breaker()
    began = time.perf_counter()
    await asyncio.gather(*(breaker.acall(asyncio.sleep, 0.1) for _ in range(8)))
    assert time.perf_counter() - began < 0.5
    assert breaker.success_count == 8


async def test_acall_counts_failures_and_rejects(make_breaker: BreakerFactory) -> None:
    """acall counts failures, trips, and then rejects without awaiting the function."""
    breaker = make_breaker(failure_threshold=2)
    awaited: list[int] = []

    async def refused() -> None:
        awaited.append(1)
        raise redis.ConnectionError("refused")

    with pytest.raises(redis.ConnectionError):
        await breaker.acall(refused)
    with pytest.raises(CircuitOpenError):
        await breaker.acall(refused)
    with pytest.raises(CircuitOpenError):
        await breaker.acall(refused)
    assert len(awaited) == 2


async def test_acall_cancellation_is_neutral(make_breaker: BreakerFactory) -> None:
    """Cancelling a task inside acall propagates CancelledError and counts nothing."""
    breaker = make_breaker(failure_threshold=1)
    task = asyncio.create_task(breaker.acall(asyncio.sleep, 10))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.current_state == "closed"
    assert breaker.failure_total == 0


def test_calling_counts_failures(make_breaker: BreakerFactory) -> None:
    """An exception inside ``with breaker.calling()`` counts and can open the circuit."""
    breaker = make_breaker(failure_threshold=1)
    with pytest.raises(CircuitOpenError), breaker.calling():
        connection_refused()
    with pytest.raises(CircuitOpenError), breaker.calling():
        pytest.fail("an open circuit must not run the block")


# -- registry --------------------------------------------------------------------------------
def test_get_breaker_shares_by_name() -> None:
    """get_breaker returns one breaker per name, listed by breakers() in name order."""
    b = redisguard.get_breaker("b", BreakerConfig(failure_threshold=2))
    a = redisguard.get_breaker("a")
    assert redisguard.get_breaker("b") is b
    assert redisguard.get_breaker("b", BreakerConfig(failure_threshold=2)) is b
    assert redisguard.breakers() == [a, b]


def test_get_breaker_refuses_a_different_config() -> None:
    """Asking for an existing breaker with another config is a ConfigError."""
    get_breaker("cfg", BreakerConfig(failure_threshold=2))
    with pytest.raises(ConfigError, match="already exists"):
        get_breaker("cfg", BreakerConfig(failure_threshold=3))


def test_get_breaker_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A breaker created without a config takes BreakerConfig.from_env()."""
    monkeypatch.setenv("REDIS_CIRCUIT_BREAKER_FAILURE_THRESHOLD", "7")
    monkeypatch.setenv("REDIS_CIRCUIT_BREAKER_RESET_TIMEOUT", "1500")
    breaker = get_breaker("env")
    assert breaker.config.failure_threshold == 7
    assert breaker.reset_timeout == 1.5


def test_registered_breakers_log_transitions(caplog: pytest.LogCaptureFixture) -> None:
    """Breakers made by get_breaker come with the logging listener attached."""
    breaker = get_breaker("default-listeners", BreakerConfig(failure_threshold=1))
    with caplog.at_level(logging.ERROR, logger="redisguard"):
        trip(breaker)
    assert [r.getMessage() for r in caplog.records] == ["Circuit breaker opened: default-listeners"]
