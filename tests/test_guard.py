"""``@redis_guarded`` with plain functions that raise the real redis-py exception classes."""

from __future__ import annotations

import asyncio
import functools
import inspect
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

import pybreaker
import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from redis import exceptions as rx

import redisguard
from redisguard import (
    CircuitOpenError,
    ConfigError,
    ErrorKind,
    Failure,
    RedisUnavailableError,
    RetryPolicy,
    current_failure,
    redis_guarded,
)
from redisguard._observe import operations

if TYPE_CHECKING:
    from conftest import BreakerFactory, FakeClock

FAST = RetryPolicy(attempts=3, backoff=0.001, max_backoff=0.001, jitter=0.0, deadline=2.0)
REFUSED = "Error 111 connecting to 127.0.0.1:1. Connection refused."


def refused() -> rx.ConnectionError:
    return rx.ConnectionError(REFUSED)


def wrongtype() -> rx.ResponseError:
    return rx.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value")


def op_stats(name: str) -> dict[str, int]:
    """The operation counters for ``name`` as a dict."""
    (stats,) = [s for s in operations() if s.name == name]
    return stats.snapshot()


class Flaky:
    """A callable that raises the queued exceptions in order, then returns ``value``."""

    def __init__(self, *errors: BaseException, value: Any = "value") -> None:
        self.errors = list(errors)
        self.value = value
        self.calls: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls.append((args, kwargs))
        if self.errors:
            raise self.errors.pop(0)
        return self.value


class AsyncFlaky(Flaky):
    """The coroutine twin of :class:`Flaky`."""

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0)
        return super().__call__(*args, **kwargs)


def always(exc_factory: Any, n: int = 50) -> Flaky:
    return Flaky(*(exc_factory() for _ in range(n)))


def guard(fn: Any, **options: Any) -> Any:
    """Apply ``redis_guarded`` to a fresh function that delegates to ``fn``.

    Declared idempotent unless told otherwise: these tests drive the retry machinery with
    synthetic errors, which cannot prove that a command never ran (see test_guard_redis.py
    for the non-idempotent default against a real server).
    """
    options.setdefault("name", "op")
    options.setdefault("retry", FAST)
    options.setdefault("idempotent", True)

    def get(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return redis_guarded(**options)(get)


def aguard(fn: Any, **options: Any) -> Any:
    """Apply ``redis_guarded`` to a fresh coroutine function that awaits ``fn`` (idempotent)."""
    options.setdefault("name", "op")
    options.setdefault("retry", FAST)
    options.setdefault("idempotent", True)

    async def get(*args: Any, **kwargs: Any) -> Any:
        return await fn(*args, **kwargs)

    return redis_guarded(**options)(get)


# -- success and fallback ---------------------------------------------------------------------
def test_success_passes_the_result_through(make_breaker: BreakerFactory) -> None:
    """A call that succeeds returns its own result and counts one success."""
    breaker = make_breaker()
    fn = Flaky(value={"id": 1})
    assert guard(fn, breaker=breaker, fallback=None)(1, key="k") == {"id": 1}
    assert fn.calls == [((1,), {"key": "k"})]
    assert op_stats("op") == {"success": 1, "fallback": 0, "error": 0, "retries": 0}
    assert breaker.success_count == 1


def test_fallback_value_after_retries(make_breaker: BreakerFactory) -> None:
    """A transient error is retried up to the policy's attempts, then the fallback value returns."""
    breaker = make_breaker(failure_threshold=10)
    fn = always(refused)
    assert guard(fn, breaker=breaker, fallback="cached")() == "cached"
    assert len(fn.calls) == 3
    assert breaker.stats().failure_count == 3
    assert op_stats("op") == {"success": 0, "fallback": 1, "error": 0, "retries": 1}


def test_fallback_callable_gets_the_same_arguments(make_breaker: BreakerFactory) -> None:
    """A callable fallback is called with the guarded function's own arguments."""
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []

    def fallback(*args: Any, **kwargs: Any) -> str:
        seen.append((args, kwargs))
        return "fb"

    guarded = guard(always(refused), breaker=make_breaker(), fallback=fallback)
    assert guarded("user:1", ttl=5) == "fb"
    assert seen == [(("user:1",), {"ttl": 5})]


def test_current_failure_describes_a_failed_call(make_breaker: BreakerFactory) -> None:
    """Inside the fallback, current_failure() gives the last error, its kind and the attempts."""
    errors = [refused(), rx.TimeoutError("Timeout reading from socket"), refused()]
    seen: list[Failure | None] = []

    def fallback() -> str:
        seen.append(current_failure())
        return "fb"

    guarded = guard(Flaky(*errors), name="session.get", breaker=make_breaker(), fallback=fallback)
    assert guarded() == "fb"
    (failure,) = seen
    assert failure is not None
    assert failure.exception is errors[2]
    assert failure.kind is ErrorKind.TRANSIENT
    assert (failure.circuit_open, failure.attempts) == (False, 3)
    assert (failure.operation, failure.breaker) == ("session.get", "test")
    assert current_failure() is None


def test_current_failure_when_the_circuit_is_open(make_breaker: BreakerFactory) -> None:
    """With the circuit open the fallback learns circuit_open=True and that nothing was tried."""
    breaker = make_breaker()
    breaker.open()
    seen: list[Failure | None] = []

    def fallback() -> str:
        seen.append(current_failure())
        return "fb"

    fn = Flaky()
    assert guard(fn, breaker=breaker, fallback=fallback)() == "fb"
    assert fn.calls == []
    assert seen == [Failure("op", "test", None, None, circuit_open=True, attempts=0)]
    assert op_stats("op")["fallback"] == 1


def test_open_circuit_returns_a_constant_fallback_without_calling(
    make_breaker: BreakerFactory,
) -> None:
    """An open circuit answers with the fallback value and never calls the function."""
    breaker = make_breaker()
    breaker.open()
    fn = Flaky()
    guarded = guard(fn, breaker=breaker, fallback=0)
    assert [guarded() for _ in range(5)] == [0] * 5
    assert fn.calls == []
    assert breaker.rejected_count == 5
    assert op_stats("op") == {"success": 0, "fallback": 5, "error": 0, "retries": 0}


def test_none_is_a_fallback_value(make_breaker: BreakerFactory) -> None:
    """fallback=None returns None instead of raising."""
    assert guard(always(refused), breaker=make_breaker(), fallback=None)() is None


# -- no fallback ------------------------------------------------------------------------------
def test_without_fallback_raises_unavailable_chained(make_breaker: BreakerFactory) -> None:
    """Without a fallback the guard raises RedisUnavailableError chained to the last error."""
    errors = [refused() for _ in range(3)]
    guarded = guard(Flaky(*errors), name="rate.check", breaker=make_breaker(failure_threshold=9))
    with pytest.raises(RedisUnavailableError) as info:
        guarded()
    err = info.value
    assert type(err) is RedisUnavailableError
    assert err.__cause__ is errors[2]
    assert (err.operation, err.breaker, err.attempts) == ("rate.check", "test", 3)
    assert "rate.check" in str(err)
    assert "ConnectionError" in str(err)
    assert op_stats("rate.check") == {"success": 0, "fallback": 0, "error": 1, "retries": 1}


def test_without_fallback_an_open_circuit_raises_circuit_open(
    make_breaker: BreakerFactory,
) -> None:
    """With the circuit open and no fallback, CircuitOpenError says no attempt was made."""
    breaker = make_breaker()
    breaker.open()
    fn = Flaky()
    with pytest.raises(CircuitOpenError) as info:
        guard(fn, breaker=breaker)()
    assert info.value.attempts == 0
    assert info.value.__cause__ is None
    assert "open" in str(info.value)
    assert fn.calls == []
    assert op_stats("op")["error"] == 1


def test_trip_without_fallback_is_unavailable_not_circuit_open(
    make_breaker: BreakerFactory,
) -> None:
    """The call whose failure opens the circuit did reach Redis, so it is not a CircuitOpenError."""
    guarded = guard(always(refused), breaker=make_breaker(failure_threshold=1))
    with pytest.raises(RedisUnavailableError) as info:
        guarded()
    assert type(info.value) is RedisUnavailableError
    assert info.value.attempts == 1


def test_fallback_that_raises_propagates_its_own_error(make_breaker: BreakerFactory) -> None:
    """An exception from the fallback itself reaches the caller unchanged."""

    def fallback() -> str:
        raise LookupError("no local copy either")

    breaker = make_breaker(failure_threshold=1)
    guarded = guard(always(refused), breaker=breaker, fallback=fallback)
    with pytest.raises(LookupError, match="no local copy"):
        guarded()
    with pytest.raises(LookupError, match="no local copy"):
        guarded()  # the circuit is open now: the short-circuit path too


# -- what is retried, counted and propagated ------------------------------------------------------
def test_retry_none_makes_a_single_attempt(make_breaker: BreakerFactory) -> None:
    """retry=None means exactly one attempt and no retry counted."""
    fn = always(refused)
    assert guard(fn, breaker=make_breaker(), retry=None, fallback="fb")() == "fb"
    assert len(fn.calls) == 1
    assert op_stats("op")["retries"] == 0


def test_single_attempt_policy(make_breaker: BreakerFactory) -> None:
    """RetryPolicy(attempts=1) makes one attempt."""
    fn = always(refused)
    guard(fn, breaker=make_breaker(), retry=RetryPolicy(attempts=1), fallback="fb")()
    assert len(fn.calls) == 1


def test_success_after_a_retry(make_breaker: BreakerFactory) -> None:
    """A retry that succeeds returns the result and clears the failure count."""
    breaker = make_breaker()
    fn = Flaky(refused(), value="late")
    assert guard(fn, breaker=breaker, fallback="fb")() == "late"
    assert len(fn.calls) == 2
    assert breaker.stats().failure_count == 0
    assert op_stats("op") == {"success": 1, "fallback": 0, "error": 0, "retries": 1}


def test_retry_backoff_is_exponential(make_breaker: BreakerFactory) -> None:
    """Without jitter the waits between attempts double: 20, 40, 80 ms."""
    stamps: list[float] = []

    def fn() -> None:
        stamps.append(time.perf_counter())
        raise refused()

    policy = RetryPolicy(attempts=4, backoff=0.02, max_backoff=1.0, jitter=0.0, deadline=5.0)
    guard(fn, breaker=make_breaker(failure_threshold=10), retry=policy, fallback=None)()
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(gaps) == 3
    for gap, expected in zip(gaps, (0.02, 0.04, 0.08), strict=True):
        assert expected <= gap < expected + 0.1


def test_backoff_is_capped(make_breaker: BreakerFactory) -> None:
    """No wait exceeds max_backoff."""
    stamps: list[float] = []

    def fn() -> None:
        stamps.append(time.perf_counter())
        raise refused()

    policy = RetryPolicy(attempts=5, backoff=0.02, max_backoff=0.03, jitter=0.0, deadline=5.0)
    guard(fn, breaker=make_breaker(failure_threshold=10), retry=policy, fallback=None)()
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert len(gaps) == 4
    assert all(0.02 <= gap < 0.03 + 0.04 for gap in gaps)


@pytest.mark.parametrize(
    "error",
    [
        rx.AuthenticationError("WRONGPASS invalid username-password pair"),
        rx.NoPermissionError("this user has no permissions to run the 'get' command"),
    ],
)
def test_misconfiguration_is_counted_not_retried(
    make_breaker: BreakerFactory, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    """Auth errors are not retried, count against the breaker, get the fallback, log ERROR."""
    breaker = make_breaker(failure_threshold=5)
    fn = Flaky(error)
    with caplog.at_level(logging.WARNING, logger="redisguard"):
        assert guard(fn, breaker=breaker, fallback="fb")() == "fb"
    assert len(fn.calls) == 1
    assert breaker.stats().failure_count == 1
    config_logs = [r for r in caplog.records if getattr(r, "category", None) == "config"]
    assert [r.levelno for r in config_logs] == [logging.ERROR]


def test_pool_exhaustion_is_not_counted(make_breaker: BreakerFactory) -> None:
    """MaxConnectionsError gets the fallback without a retry and without tripping the breaker."""
    breaker = make_breaker(failure_threshold=1)
    fn = always(lambda: rx.MaxConnectionsError("Too many connections"))
    guarded = guard(fn, breaker=breaker, fallback="fb")
    assert [guarded(), guarded()] == ["fb", "fb"]
    assert len(fn.calls) == 2
    assert breaker.current_state == "closed"
    assert breaker.stats().failure_count == 0


@pytest.mark.parametrize(
    "error",
    [
        wrongtype(),
        rx.DataError("Invalid input of type: 'dict'."),
        rx.NoScriptError("No matching script."),
        rx.WatchError("Watched variable changed."),
        ValueError("the function's own bug"),
    ],
)
def test_data_errors_propagate_unchanged_and_never_count(
    make_breaker: BreakerFactory, error: Exception
) -> None:
    """Data errors and bugs reach the caller as-is, once, and never trip even a threshold of 1."""
    breaker = make_breaker(failure_threshold=1)
    fn = Flaky(error, error)
    guarded = guard(fn, breaker=breaker, fallback="fb")
    for _ in range(2):
        with pytest.raises(type(error)) as info:
            guarded()
        assert info.value is error
    assert len(fn.calls) == 2
    assert breaker.current_state == "closed"
    assert breaker.failure_total == 0
    assert op_stats("op") == {"success": 0, "fallback": 0, "error": 2, "retries": 0}


@pytest.mark.parametrize("exc_type", [KeyboardInterrupt, asyncio.CancelledError, SystemExit])
def test_interrupts_are_never_retried_counted_or_swallowed(
    make_breaker: BreakerFactory, exc_type: type[BaseException]
) -> None:
    """KeyboardInterrupt, CancelledError and SystemExit propagate after one attempt, uncounted."""
    breaker = make_breaker(failure_threshold=1)
    fn = Flaky(exc_type())
    with pytest.raises(exc_type):
        guard(fn, breaker=breaker, fallback="fb")()
    assert len(fn.calls) == 1
    assert breaker.current_state == "closed"
    assert breaker.failure_total == 0
    assert op_stats("op") == {"success": 0, "fallback": 0, "error": 0, "retries": 0}


def test_data_error_during_a_retry_propagates(make_breaker: BreakerFactory) -> None:
    """A retry attempt that hits a data error stops retrying and raises it unchanged."""
    breaker = make_breaker(failure_threshold=10)
    error = wrongtype()
    fn = Flaky(refused(), error)
    with pytest.raises(rx.ResponseError) as info:
        guard(fn, breaker=breaker, fallback="fb")()
    assert info.value is error
    assert len(fn.calls) == 2
    assert breaker.stats().failure_count == 1
    assert op_stats("op") == {"success": 0, "fallback": 0, "error": 1, "retries": 1}


def test_interrupt_during_a_retry_propagates(make_breaker: BreakerFactory) -> None:
    """A KeyboardInterrupt in a retry attempt escapes and is not counted."""
    breaker = make_breaker(failure_threshold=10)
    fn = Flaky(refused(), KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        guard(fn, breaker=breaker, fallback="fb")()
    assert breaker.failure_total == 1


def test_misconfiguration_during_a_retry_stops_retrying(make_breaker: BreakerFactory) -> None:
    """A retry that meets an auth error falls back at once and the error is counted."""
    breaker = make_breaker(failure_threshold=10)
    fn = Flaky(refused(), rx.AuthenticationError("WRONGPASS"), refused())
    seen: list[Failure | None] = []

    def fallback() -> str:
        seen.append(current_failure())
        return "fb"

    policy = RetryPolicy(attempts=5, backoff=0.001, max_backoff=0.001, jitter=0.0)
    assert guard(fn, breaker=breaker, retry=policy, fallback=fallback)() == "fb"
    assert len(fn.calls) == 2
    assert breaker.stats().failure_count == 2
    assert seen[0] is not None
    assert seen[0].kind is ErrorKind.MISCONFIGURED


def test_the_trip_stops_retrying(make_breaker: BreakerFactory) -> None:
    """Once an attempt opens the circuit no further attempt is made, now or later."""
    breaker = make_breaker(failure_threshold=2)
    fn = always(refused)
    policy = RetryPolicy(attempts=5, backoff=0.001, max_backoff=0.001, jitter=0.0)
    guarded = guard(fn, breaker=breaker, retry=policy, fallback="fb")
    assert guarded() == "fb"
    assert len(fn.calls) == 2
    assert breaker.current_state == "open"
    assert guarded() == "fb"
    assert len(fn.calls) == 2


def test_a_retry_finding_the_trial_slots_taken_falls_back(
    make_breaker: BreakerFactory,
) -> None:
    """If the half-open trial slots are taken when a retry is due, the call falls back, no I/O."""
    breaker = make_breaker(failure_threshold=5, half_open_max_attempts=1)
    held = breaker.calling()
    calls = 0

    def fn() -> None:
        nonlocal calls
        calls += 1
        # Meanwhile other callers opened the circuit and took the only trial slot.
        breaker.half_open()
        held.__enter__()
        raise refused()

    seen: list[Failure | None] = []

    def fallback() -> str:
        seen.append(current_failure())
        return "fb"

    assert guard(fn, breaker=breaker, fallback=fallback)() == "fb"
    assert calls == 1
    assert seen[0] is not None
    assert seen[0].attempts == 1
    held.__exit__(None, None, None)
    assert breaker.current_state == "closed"


def test_failed_half_open_trial_does_not_retry(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """A failing half-open trial re-opens the circuit and the guard does not try again."""
    breaker = make_breaker(failure_threshold=1, reset_timeout=1.0)
    breaker.open()
    clock.advance(1.0)
    fn = always(refused)
    assert guard(fn, breaker=breaker, fallback="fb")() == "fb"
    assert len(fn.calls) == 1
    assert breaker.current_state == "open"


def test_half_open_trial_success_closes(make_breaker: BreakerFactory, clock: FakeClock) -> None:
    """A successful trial call closes the circuit."""
    breaker = make_breaker(failure_threshold=1, reset_timeout=1.0)
    breaker.open()
    clock.advance(1.0)
    assert guard(Flaky(value="v"), breaker=breaker, fallback="fb")() == "v"
    assert breaker.current_state == "closed"


def test_sync_deadline_stops_slow_retries(make_breaker: BreakerFactory) -> None:
    """With a 0.3 s timeout per attempt and a 0.5 s deadline, no second attempt starts."""
    calls = 0

    def slow() -> None:
        nonlocal calls
        calls += 1
        time.sleep(0.3)
        raise TimeoutError

    policy = RetryPolicy(attempts=5, deadline=0.5)
    began = time.perf_counter()
    assert guard(slow, breaker=make_breaker(), retry=policy, fallback="fb")() == "fb"
    assert time.perf_counter() - began < 0.65
    assert calls == 1


def test_deadline_counts_the_waits(make_breaker: BreakerFactory) -> None:
    """A wait that would end past the deadline is not started."""
    fn = always(refused)
    policy = RetryPolicy(attempts=5, backoff=0.3, max_backoff=0.3, jitter=0.0, deadline=0.5)
    began = time.perf_counter()
    guard(fn, breaker=make_breaker(failure_threshold=10), retry=policy, fallback=None)()
    assert time.perf_counter() - began < 0.5
    assert len(fn.calls) == 2


# -- classification override ----------------------------------------------------------------
def test_classify_override_can_make_an_error_transient(make_breaker: BreakerFactory) -> None:
    """A per-decorator classifier can treat OutOfMemoryError as transient."""

    def classify(exc: BaseException) -> ErrorKind:
        if isinstance(exc, rx.OutOfMemoryError):
            return ErrorKind.TRANSIENT
        return redisguard.classify_error(exc)

    fn = always(lambda: rx.OutOfMemoryError("OOM command not allowed"))
    assert guard(fn, breaker=make_breaker(), classify=classify, fallback="fb")() == "fb"
    assert len(fn.calls) == 3


def test_classify_override_can_propagate_connection_errors(make_breaker: BreakerFactory) -> None:
    """A classifier returning PROPAGATE lets even a connection error through, uncounted."""
    breaker = make_breaker(failure_threshold=1)
    fn = always(refused)
    guarded = guard(fn, breaker=breaker, classify=lambda e: ErrorKind.PROPAGATE, fallback="fb")
    with pytest.raises(rx.ConnectionError):
        guarded()
    assert breaker.current_state == "closed"


def test_nested_guard_failure_is_not_counted_twice(make_breaker: BreakerFactory) -> None:
    """An inner guard's RedisUnavailableError gets the outer fallback; the outer does not trip."""
    inner_breaker = make_breaker("inner", failure_threshold=10)
    outer_breaker = make_breaker("outer", failure_threshold=1)
    inner = guard(always(refused), name="inner", breaker=inner_breaker)
    outer = guard(inner, name="outer", breaker=outer_breaker, fallback="outer-fb")
    assert outer() == "outer-fb"
    assert outer_breaker.current_state == "closed"
    assert inner_breaker.stats().failure_count == 3


# -- breakers shared by name ------------------------------------------------------------------
def test_operations_share_a_named_breaker() -> None:
    """Two operations naming the same breaker trip it together."""
    redisguard.get_breaker("shared", redisguard.BreakerConfig(failure_threshold=2))
    a = guard(always(refused), name="a", breaker="shared", retry=None, fallback="a")
    b_fn = Flaky()
    b = guard(b_fn, name="b", breaker="shared", retry=None, fallback="b")
    a()
    a()
    assert b() == "b"
    assert b_fn.calls == []
    assert redisguard.get_breaker("shared").current_state == "open"


def test_default_breaker_is_named_redis() -> None:
    """Without breaker=, operations use the shared breaker called "redis"."""
    guarded = guard(Flaky())
    guarded()
    assert guarded.__redisguard__.breaker is redisguard.get_breaker("redis")


# -- decoration ----------------------------------------------------------------------------------
def test_wraps_keeps_the_metadata() -> None:
    """The wrapper keeps __name__, __qualname__, __doc__ and __wrapped__."""

    def fetch(key: str) -> str:
        """Fetch a key."""
        return key

    guarded = redis_guarded(name="fetch", fallback=None)(fetch)
    assert guarded.__name__ == "fetch"
    assert guarded.__qualname__ == fetch.__qualname__
    assert guarded.__doc__ == "Fetch a key."
    assert getattr(guarded, "__wrapped__", None) is fetch


async def test_async_wraps_keeps_the_metadata() -> None:
    """The async wrapper is a coroutine function with the original's metadata."""

    async def fetch(key: str) -> str:
        """Fetch a key."""
        return key

    guarded = redis_guarded(name="fetch", fallback=None)(fetch)
    assert asyncio.iscoroutinefunction(guarded)
    assert guarded.__name__ == "fetch"
    assert getattr(guarded, "__wrapped__", None) is fetch
    assert await guarded("k") == "k"


def test_generators_are_refused() -> None:
    """Generator and async generator functions cannot be guarded."""

    def gen() -> Iterator[int]:
        yield 1

    async def agen() -> AsyncIterator[int]:
        yield 1

    with pytest.raises(TypeError, match="generator"):
        redis_guarded(name="g")(gen)
    with pytest.raises(TypeError, match="generator"):
        redis_guarded(name="g")(agen)


def test_async_fallback_on_sync_function_is_refused() -> None:
    """An async fallback cannot serve a sync function."""

    async def fallback() -> None:
        return None

    def fn() -> None:
        return None

    with pytest.raises(TypeError, match="async"):
        redis_guarded(name="op", fallback=fallback)(fn)


@pytest.mark.parametrize("name", ["", "   ", None, 3])
def test_name_must_be_a_non_empty_string(name: Any) -> None:
    """An empty or non-string operation name is a ConfigError."""
    with pytest.raises(ConfigError, match="name"):
        redis_guarded(name=name)


def test_bad_arguments_are_refused() -> None:
    """Wrong types for retry, classify, breaker or the decorated object fail at decoration."""
    with pytest.raises(TypeError, match="retry"):
        redis_guarded(name="op", retry=3)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="classify"):
        redis_guarded(name="op", classify="default")  # type: ignore[call-overload]
    with pytest.raises(ConfigError, match="breaker"):
        redis_guarded(name="op", breaker=42)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="needs a function"):
        redis_guarded(name="op")(42)  # type: ignore[call-overload]


# -- methods -----------------------------------------------------------------------------------
# Class bodies are decorated at import, so these methods share one long-lived breaker.
REPO_BREAKER = redisguard.Breaker("repo", redisguard.BreakerConfig(failure_threshold=1000))


@pytest.fixture
def repo_breaker() -> Iterator[redisguard.Breaker]:
    """The breaker of :class:`Repo`, reset before and after the test."""
    REPO_BREAKER.reset()
    yield REPO_BREAKER
    REPO_BREAKER.reset()


class Repo:
    """A class whose methods talk to a (failing) Redis."""

    def __init__(self) -> None:
        self.fallback_calls: list[tuple[Any, ...]] = []

    def _fallback(self, key: str) -> str:
        self.fallback_calls.append((self, key))
        return f"local:{key}"

    @redis_guarded(name="repo.get", breaker=REPO_BREAKER, fallback=_fallback, retry=None)
    def get(self, key: str) -> str:
        raise refused()

    @staticmethod
    def _class_fallback(owner: type, key: str) -> str:
        return f"{owner.__name__}:{key}"

    @redis_guarded(name="repo.cm_outer", breaker=REPO_BREAKER, fallback=_class_fallback)
    @classmethod
    def cm_outer(cls, key: str) -> str:
        raise refused()

    @classmethod
    @redis_guarded(name="repo.cm_inner", breaker=REPO_BREAKER, fallback=_class_fallback)
    def cm_inner(cls, key: str) -> str:
        raise refused()

    @redis_guarded(name="repo.sm_outer", breaker=REPO_BREAKER, fallback=lambda key: f"sm:{key}")
    @staticmethod
    def sm_outer(key: str) -> str:
        raise refused()

    @staticmethod
    @redis_guarded(name="repo.sm_inner", breaker=REPO_BREAKER, fallback=lambda key: f"sm:{key}")
    def sm_inner(key: str) -> str:
        raise refused()

    @redis_guarded(name="repo.ok", breaker=REPO_BREAKER, fallback=None)
    @classmethod
    def ok(cls, key: str) -> str:
        return f"{cls.__name__}.ok:{key}"


def test_instance_method_fallback_gets_self(repo_breaker: redisguard.Breaker) -> None:
    """A method's fallback is called with self and the method's arguments."""
    repo = Repo()
    assert repo.get("k") == "local:k"
    assert repo.fallback_calls == [(repo, "k")]


@pytest.mark.parametrize("method", ["cm_outer", "cm_inner"])
def test_classmethod_in_both_orders(repo_breaker: redisguard.Breaker, method: str) -> None:
    """@redis_guarded works above or below @classmethod; the fallback gets the class."""
    assert getattr(Repo, method)("k") == "Repo:k"
    assert getattr(Repo(), method)("k") == "Repo:k"


@pytest.mark.parametrize("method", ["sm_outer", "sm_inner"])
def test_staticmethod_in_both_orders(repo_breaker: redisguard.Breaker, method: str) -> None:
    """@redis_guarded works above or below @staticmethod."""
    assert getattr(Repo, method)("k") == "sm:k"
    assert getattr(Repo(), method)("k") == "sm:k"


def test_guarded_classmethod_succeeds(repo_breaker: redisguard.Breaker) -> None:
    """A guarded classmethod that succeeds receives the class."""
    assert Repo.ok("k") == "Repo.ok:k"


# -- async ----------------------------------------------------------------------------------------
async def test_async_success_and_fallback(make_breaker: BreakerFactory) -> None:
    """Async functions get the same success, retry and fallback behaviour."""
    breaker = make_breaker(failure_threshold=10)
    ok = AsyncFlaky(value=7)
    assert await aguard(ok, name="ok", breaker=breaker, fallback=0)() == 7
    failing = AsyncFlaky(*(refused() for _ in range(5)))
    assert await aguard(failing, name="bad", breaker=breaker, fallback=0)() == 0
    assert len(failing.calls) == 3
    assert op_stats("ok")["success"] == 1
    assert op_stats("bad") == {"success": 0, "fallback": 1, "error": 0, "retries": 1}


async def test_async_fallback_is_awaited_with_arguments(make_breaker: BreakerFactory) -> None:
    """An async fallback is awaited with the call's arguments and sees current_failure()."""
    seen: list[tuple[Any, ...]] = []

    async def fallback(key: str) -> str:
        await asyncio.sleep(0)
        failure = current_failure()
        assert failure is not None
        seen.append((key, failure.circuit_open, type(failure.exception)))
        return "afb"

    guarded = aguard(AsyncFlaky(refused()), breaker=make_breaker(), retry=None, fallback=fallback)
    assert await guarded("k") == "afb"
    assert seen == [("k", False, rx.ConnectionError)]


async def test_async_sync_fallback_callable(make_breaker: BreakerFactory) -> None:
    """A plain callable fallback also serves an async function."""
    guarded = aguard(
        AsyncFlaky(refused()), breaker=make_breaker(), retry=None, fallback=lambda k: f"fb:{k}"
    )
    assert await guarded("k") == "fb:k"


async def test_async_without_fallback(make_breaker: BreakerFactory) -> None:
    """Async calls without a fallback raise RedisUnavailableError, then CircuitOpenError."""
    breaker = make_breaker(failure_threshold=3)
    errors = [refused() for _ in range(3)]
    guarded = aguard(AsyncFlaky(*errors), breaker=breaker)
    with pytest.raises(RedisUnavailableError) as info:
        await guarded()
    assert info.value.__cause__ is errors[2]
    with pytest.raises(CircuitOpenError):
        await guarded()
    assert op_stats("op")["error"] == 2


async def test_async_open_circuit_fallbacks(make_breaker: BreakerFactory) -> None:
    """An open circuit answers async calls with the value or the callable, no await of fn."""
    breaker = make_breaker()
    breaker.open()
    fn = AsyncFlaky()
    assert await aguard(fn, name="v", breaker=breaker, fallback="v")() == "v"

    async def fallback() -> bool:
        failure = current_failure()
        return failure is not None and failure.circuit_open

    assert await aguard(fn, name="c", breaker=breaker, fallback=fallback)() is True
    assert fn.calls == []


async def test_async_data_error_propagates(make_breaker: BreakerFactory) -> None:
    """WRONGTYPE from a coroutine propagates unchanged and does not count."""
    breaker = make_breaker(failure_threshold=1)
    error = wrongtype()
    with pytest.raises(rx.ResponseError) as info:
        await aguard(AsyncFlaky(error), breaker=breaker, fallback="fb")()
    assert info.value is error
    assert breaker.current_state == "closed"


async def test_async_retry_attempt_is_cancelled_at_the_deadline(
    make_breaker: BreakerFactory,
) -> None:
    """A retry attempt still running at the deadline is cancelled and the fallback returns."""
    cancelled = asyncio.Event()
    calls = 0

    async def fn() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise refused()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "late"

    breaker = make_breaker(failure_threshold=10)
    policy = RetryPolicy(attempts=3, backoff=0.001, max_backoff=0.001, jitter=0.0, deadline=0.3)
    began = time.perf_counter()
    assert await aguard(fn, breaker=breaker, retry=policy, fallback="fb")() == "fb"
    assert time.perf_counter() - began < 0.45
    assert cancelled.is_set()
    assert calls == 2
    assert breaker.stats().failure_count == 2  # the cut attempt is a timeout: it counts


async def test_cancelling_the_caller_while_the_deadline_cuts_an_attempt_propagates(
    make_breaker: BreakerFactory,
) -> None:
    """A caller cancelled while the deadline is cutting a retry attempt gets CancelledError."""
    cleaning = asyncio.Event()
    calls = 0

    async def fn() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise refused()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cleaning.set()
            await asyncio.sleep(0.2)  # slow cleanup: the caller is cancelled meanwhile
            raise
        return "late"

    policy = RetryPolicy(attempts=3, backoff=0.001, max_backoff=0.001, jitter=0.0, deadline=0.2)
    task = asyncio.create_task(
        aguard(fn, breaker=make_breaker(failure_threshold=10), retry=policy, fallback="fb")()
    )
    await asyncio.wait_for(cleaning.wait(), 2)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_asyncio_wait_for_timeout_in_the_guarded_coroutine_falls_back(
    make_breaker: BreakerFactory,
) -> None:
    """A guarded coroutine's own asyncio.wait_for timeout is transient on every Python."""

    async def fn() -> str:
        return await asyncio.wait_for(asyncio.sleep(10, "late"), 0.01)

    breaker = make_breaker(failure_threshold=10)
    assert await aguard(fn, breaker=breaker, fallback="fb")() == "fb"
    assert breaker.failure_total >= 1


async def test_async_success_after_a_retry(make_breaker: BreakerFactory) -> None:
    """An async retry that succeeds returns its result."""
    fn = AsyncFlaky(refused(), value="late")
    assert await aguard(fn, breaker=make_breaker(), fallback="fb")() == "late"
    assert op_stats("op") == {"success": 1, "fallback": 0, "error": 0, "retries": 1}


async def test_cancelling_the_caller_propagates(make_breaker: BreakerFactory) -> None:
    """Cancelling a task inside a guarded coroutine raises CancelledError and counts nothing."""
    breaker = make_breaker(failure_threshold=1)
    started = asyncio.Event()

    async def slow() -> None:
        started.set()
        await asyncio.sleep(10)

    task = asyncio.create_task(aguard(slow, breaker=breaker, fallback="fb")())
    await asyncio.wait_for(started.wait(), 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.failure_total == 0
    assert op_stats("op") == {"success": 0, "fallback": 0, "error": 0, "retries": 0}


async def test_cancelling_the_caller_during_a_retry_propagates(
    make_breaker: BreakerFactory,
) -> None:
    """Cancellation during a retry attempt is not swallowed into the fallback."""
    breaker = make_breaker(failure_threshold=10)
    retrying = asyncio.Event()
    calls = 0

    async def fn() -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise refused()
        retrying.set()
        await asyncio.sleep(10)

    policy = RetryPolicy(attempts=3, backoff=0.001, max_backoff=0.001, jitter=0.0, deadline=5.0)
    task = asyncio.create_task(aguard(fn, breaker=breaker, retry=policy, fallback="fb")())
    await asyncio.wait_for(retrying.wait(), 1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert breaker.failure_total == 1


# -- concurrency through the guard ------------------------------------------------------------
def test_sync_guard_holds_no_lock(make_breaker: BreakerFactory) -> None:
    """8 threads sleeping 0.1 s inside a guarded function finish in about 0.1 s."""
    guarded = guard(lambda: time.sleep(0.1), breaker=make_breaker())
    threads = [threading.Thread(target=guarded) for _ in range(8)]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5)
    assert time.perf_counter() - began < 0.5
    assert op_stats("op")["success"] == 8


async def test_async_guard_holds_no_lock(make_breaker: BreakerFactory) -> None:
    """8 tasks sleeping 0.1 s inside a guarded coroutine finish in about 0.1 s."""
    guarded = aguard(asyncio.sleep, breaker=make_breaker())
    began = time.perf_counter()
    await asyncio.gather(*(guarded(0.1) for _ in range(8)))
    assert time.perf_counter() - began < 0.5


def test_half_open_limit_threads_get_the_fallback(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """In half-open, exactly half_open_max_attempts threads run; the others get the fallback."""
    breaker = make_breaker(failure_threshold=1, reset_timeout=1.0, half_open_max_attempts=2)
    breaker.open()
    clock.advance(1.0)
    release = threading.Event()
    entered = threading.Semaphore(0)

    def trial() -> str:
        entered.release()
        assert release.wait(5)
        return "trial"

    guarded = guard(trial, breaker=breaker, fallback="fb")
    results: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        value = guarded()
        with lock:
            results.append(value)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for _ in range(2):
        assert entered.acquire(timeout=5)
    deadline = time.monotonic() + 5
    while len(results) < 4 and time.monotonic() < deadline:
        time.sleep(0.005)
    assert results == ["fb"] * 4  # answered while both trials are still blocked
    release.set()
    for thread in threads:
        thread.join(5)
    assert sorted(results) == ["fb"] * 4 + ["trial"] * 2
    assert breaker.current_state == "closed"


async def test_half_open_limit_tasks_get_the_fallback(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """In half-open, exactly half_open_max_attempts tasks run; the others get the fallback."""
    breaker = make_breaker(failure_threshold=1, reset_timeout=1.0, half_open_max_attempts=3)
    breaker.open()
    clock.advance(1.0)
    release = asyncio.Event()
    running = 0

    async def trial() -> str:
        nonlocal running
        running += 1
        await release.wait()
        return "trial"

    guarded = aguard(trial, breaker=breaker, fallback="fb")
    tasks = [asyncio.create_task(guarded()) for _ in range(10)]
    await asyncio.sleep(0.01)
    assert running == 3
    assert [t.result() for t in tasks if t.done()] == ["fb"] * 7
    release.set()
    results = await asyncio.wait_for(asyncio.gather(*tasks), 5)
    assert sorted(results) == ["fb"] * 7 + ["trial"] * 3
    assert breaker.current_state == "closed"


# -- logs ------------------------------------------------------------------------------------
def test_logs_redact_passwords(
    make_breaker: BreakerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A Redis URL with a password inside an error never reaches the log or the error text."""
    error = rx.ConnectionError("Error connecting to redis://app:hunter2@10.0.0.5:6379/0")
    guarded = guard(Flaky(error), breaker=make_breaker(), retry=None)
    with (
        caplog.at_level(logging.DEBUG, logger="redisguard"),
        pytest.raises(RedisUnavailableError) as info,
    ):
        guarded()
    assert "hunter2" not in str(info.value)
    assert caplog.records
    for record in caplog.records:
        assert "hunter2" not in record.getMessage()
        assert "hunter2" not in str(getattr(record, "error", ""))


def test_logs_tell_connection_errors_apart(
    make_breaker: BreakerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """A failed attempt is logged at WARNING with structured breaker/operation/error fields."""
    breaker = make_breaker("cache")
    with caplog.at_level(logging.WARNING, logger="redisguard"):
        guard(Flaky(refused()), name="cache.get", breaker=breaker, retry=None, fallback=0)()
    failed = [r for r in caplog.records if r.getMessage().startswith("Redis operation failed")]
    assert len(failed) == 1
    record: Any = failed[0]
    assert (record.levelno, record.category) == (logging.WARNING, "redis")
    assert (record.breaker, record.operation) == ("cache", "cache.get")
    assert record.error_type == "redis.exceptions.ConnectionError"
    assert REFUSED in record.error


def test_operation_stats_are_shared_by_name(make_breaker: BreakerFactory) -> None:
    """Two decorators with one operation name add to the same counters."""
    breaker = make_breaker()
    guard(Flaky(), name="shared.op", breaker=breaker)()
    guard(Flaky(), name="shared.op", breaker=breaker)()
    assert op_stats("shared.op")["success"] == 2
    (stats,) = operations()
    assert stats.breaker == "test"


def test_redis_client_errors_are_real_classes() -> None:
    """The exceptions used here are redis-py's own, re-exported at the top level."""
    assert redis.ConnectionError is rx.ConnectionError
    assert redis.TimeoutError is rx.TimeoutError


# -- breaker selectors ------------------------------------------------------------------------
def test_selector_picks_a_breaker_per_call(make_breaker: BreakerFactory) -> None:
    """A breaker selector routes each call to its own breaker; one open breaker spares others."""
    by_node = {"a": make_breaker("node-a"), "b": make_breaker("node-b")}
    by_node["a"].open()
    fn = Flaky(value="ok")
    guarded = guard(fn, breaker=lambda node: by_node[node], fallback="fb")
    assert guarded("a") == "fb"
    assert guarded("b") == "ok"
    assert guarded("b") == "ok"
    assert fn.calls == [(("b",), {}), (("b",), {})]
    assert by_node["b"].success_count == 2


async def test_async_selector(make_breaker: BreakerFactory) -> None:
    """Selectors also route coroutine functions."""
    by_node = {"a": make_breaker("node-a", failure_threshold=1)}
    guarded = aguard(AsyncFlaky(refused()), breaker=lambda node: by_node[node], fallback="fb")
    assert await guarded("a") == "fb"
    assert by_node["a"].current_state == "open"


def test_selector_must_return_a_breaker() -> None:
    """A selector returning anything but a Breaker fails the call with TypeError."""
    guarded = guard(Flaky(), breaker=lambda: "redis")
    with pytest.raises(TypeError, match="not a Breaker"):
        guarded()


# -- trace_success -----------------------------------------------------------------------------
@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    """An SDK tracer provider of this test's own, exporting to memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_trace_success_spans_plain_successes(
    make_breaker: BreakerFactory, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """With trace_success=True a successful call gets its own span; results are unchanged."""
    provider, exporter = spans
    guarded = guard(
        Flaky(value=3), breaker=make_breaker(), trace_success=True, tracer_provider=provider
    )
    assert guarded() == 3
    (span,) = exporter.get_finished_spans()
    assert span.name == "redisguard op"
    assert span.status.status_code is StatusCode.UNSET


def test_trace_success_keeps_errors_propagating(
    make_breaker: BreakerFactory, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """A traced call whose data error propagates still raises it, and its span is an error."""
    provider, exporter = spans
    error = wrongtype()
    guarded = guard(
        Flaky(error), breaker=make_breaker(), trace_success=True, tracer_provider=provider
    )
    with pytest.raises(rx.ResponseError) as info:
        guarded()
    assert info.value is error
    assert [s.status.status_code for s in exporter.get_finished_spans()] == [StatusCode.ERROR]


async def test_async_trace_success(
    make_breaker: BreakerFactory, spans: tuple[TracerProvider, InMemorySpanExporter]
) -> None:
    """Async calls with trace_success=True are spanned and keep their results and errors."""
    provider, exporter = spans
    breaker = make_breaker()
    ok = aguard(AsyncFlaky(value=1), breaker=breaker, trace_success=True, tracer_provider=provider)
    assert await ok() == 1
    bad = aguard(
        AsyncFlaky(wrongtype()),
        name="bad",
        breaker=breaker,
        trace_success=True,
        tracer_provider=provider,
    )
    with pytest.raises(rx.ResponseError):
        await bad()
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == ["redisguard bad", "redisguard op"]


async def test_trace_success_without_an_sdk_is_transparent(make_breaker: BreakerFactory) -> None:
    """trace_success=True with no SDK configured changes nothing about results or errors."""
    breaker = make_breaker()
    assert guard(Flaky(value="v"), breaker=breaker, trace_success=True)() == "v"
    assert await aguard(AsyncFlaky(value="a"), breaker=breaker, trace_success=True)() == "a"
    with pytest.raises(KeyError):
        guard(Flaky(KeyError("k")), breaker=breaker, trace_success=True)()


def test_open_circuit_fallbacks_log_at_debug_only(
    make_breaker: BreakerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """Short-circuited calls log at DEBUG (an outage must not flood the logs at WARNING)."""
    breaker = make_breaker("quiet")
    breaker.open()
    with caplog.at_level(logging.DEBUG, logger="redisguard"):
        guard(Flaky(), name="const", breaker=breaker, fallback=0)()
        guard(Flaky(), name="call", breaker=breaker, fallback=lambda: 0)()
    records = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert records == [
        (logging.DEBUG, "Circuit breaker open, using fallback for const"),
        (logging.DEBUG, "Circuit breaker open, using fallback for call"),
    ]


# -- async callables that do not look async ---------------------------------------------------
class AsyncCallable:
    """An object whose ``__call__`` is a coroutine function."""

    def __init__(self, *errors: BaseException) -> None:
        self.flaky = AsyncFlaky(*errors)

    async def __call__(self) -> Any:
        return await self.flaky()


def sync_decorator(fn: Any) -> Any:
    """A plain sync decorator (functools.wraps) around whatever it gets."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


async def _lookup(flaky: AsyncFlaky, key: str) -> Any:
    return await flaky(key)


def _async_shapes() -> list[tuple[str, Any, AsyncFlaky]]:
    shapes: list[tuple[str, Any, AsyncFlaky]] = []
    obj = AsyncCallable(*(refused() for _ in range(5)))
    shapes.append(("async __call__", obj, obj.flaky))
    flaky = AsyncFlaky(*(refused() for _ in range(5)))

    @sync_decorator
    async def decorated() -> Any:
        return await flaky()

    shapes.append(("wraps(async def)", decorated, flaky))
    flaky2 = AsyncFlaky(*(refused() for _ in range(5)))
    shapes.append(("partial(async def)", functools.partial(_lookup, flaky2, "k"), flaky2))
    return shapes


@pytest.mark.parametrize("shape", range(3), ids=["async-call", "wraps", "partial"])
async def test_async_callables_that_do_not_look_async_are_guarded(
    make_breaker: BreakerFactory, shape: int
) -> None:
    """An async __call__, a wrapped async def and a partial get the async guard."""
    _, fn, flaky = _async_shapes()[shape]
    breaker = make_breaker(failure_threshold=10)
    guarded: Any = redis_guarded(
        name="op", fallback="FB", breaker=breaker, retry=FAST, idempotent=True
    )(fn)
    assert await guarded() == "FB"  # the coroutine's error reached the guard
    assert inspect.iscoroutinefunction(guarded)
    assert len(flaky.calls) == 3  # retried: errors raised by the coroutine are seen
    assert breaker.stats().failure_count == 3


def test_a_sync_adapter_around_an_async_function_stays_sync(make_breaker: BreakerFactory) -> None:
    """A callable object with a sync __call__ is sync, whatever its __wrapped__ says."""

    async def coro() -> str:
        return "async"

    class RunsToCompletion:
        __wrapped__ = coro

        def __call__(self) -> str:
            return "sync"

    guarded = redis_guarded(name="op", breaker=make_breaker())(RunsToCompletion())
    assert not inspect.iscoroutinefunction(guarded)
    assert guarded() == "sync"


# -- a classify that raises -----------------------------------------------------------------
def _raising_once() -> Any:
    calls = 0

    def classify(exc: BaseException) -> ErrorKind:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("classifier bug")
        return redisguard.classify_error(exc)

    return classify


def test_a_raising_classify_releases_the_half_open_trial(
    make_breaker: BreakerFactory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """half_open_max_attempts=1, classify raises on the trial: later calls still reach Redis."""
    breaker = make_breaker(failure_threshold=1, reset_timeout=1.0, half_open_max_attempts=1)
    breaker.open()
    clock.advance(1.5)
    fn = Flaky(wrongtype(), value="ok")
    guarded = guard(fn, breaker=breaker, fallback="FB", classify=_raising_once())
    with pytest.raises(rx.ResponseError, match="WRONGTYPE"):  # the original error, unchanged
        guarded()
    assert "classifier bug" in caplog.text
    assert guarded() == "ok"  # the slot was released: this trial reached the function
    assert breaker.current_state == "closed"
    assert len(fn.calls) == 2


async def test_a_raising_classify_falls_back_to_the_default_classification(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """An outage stays an outage when classify raises: fallback, and the trial is recorded."""
    breaker = make_breaker(failure_threshold=1, reset_timeout=1.0, half_open_max_attempts=1)
    breaker.open()
    clock.advance(1.5)
    fn = AsyncFlaky(refused(), value="ok")
    guarded = aguard(fn, breaker=breaker, fallback="FB", classify=_raising_once(), retry=None)
    assert await guarded() == "FB"
    assert breaker.current_state == "open"  # the failed trial re-opened it
    clock.advance(1.5)
    assert await guarded() == "ok"
    assert breaker.current_state == "closed"


# -- the breaker's exclude -------------------------------------------------------------------
class QuotaExceeded(rx.ConnectionError):
    """A handled (TRANSIENT) error class that an application treats as a business error."""


def test_an_excluded_error_propagates_and_counts_as_a_success(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """exclude: an error the guard would handle propagates unchanged and closes a trial."""
    breaker = make_breaker(failure_threshold=3, reset_timeout=1.0, half_open_max_attempts=1)
    breaker.add_excluded_exception(QuotaExceeded)
    guard(always(refused, 2), breaker=breaker, fallback="FB", retry=None)()
    guard(always(refused, 2), breaker=breaker, fallback="FB", retry=None)()
    assert breaker.stats().failure_count == 2
    quota = QuotaExceeded("quota")
    fn = Flaky(quota)
    guarded = guard(fn, breaker=breaker, fallback="FB")
    with pytest.raises(QuotaExceeded) as info:
        guarded()
    assert info.value is quota
    assert len(fn.calls) == 1  # not retried
    assert breaker.stats().failure_count == 0  # a success resets the count
    breaker.open()
    clock.advance(1.5)
    with pytest.raises(QuotaExceeded):
        guard(Flaky(QuotaExceeded("again")), breaker=breaker, fallback="FB")()
    assert breaker.current_state == "closed"


async def test_an_excluded_error_during_a_retry_propagates(make_breaker: BreakerFactory) -> None:
    """An excluded error on a retry attempt ends the loop and reaches the caller unchanged."""
    breaker = make_breaker(failure_threshold=10)
    # pybreaker accepts predicates too (its annotation says classes only).
    is_quota: Any = lambda exc: isinstance(exc, QuotaExceeded)  # noqa: E731
    breaker.add_excluded_exception(is_quota)
    fn = AsyncFlaky(refused(), QuotaExceeded("quota"), value="ok")
    with pytest.raises(QuotaExceeded):
        await aguard(fn, breaker=breaker, fallback="FB")()
    assert len(fn.calls) == 2
    assert breaker.stats().failure_count == 0


def test_an_excluded_propagating_error_stays_neutral(make_breaker: BreakerFactory) -> None:
    """PROPAGATE errors are neutral even when excluded: the failure count is untouched."""
    breaker = make_breaker(failure_threshold=5)
    breaker.add_excluded_exception(rx.ResponseError)
    guard(always(refused, 2), breaker=breaker, fallback="FB", retry=None)()
    with pytest.raises(rx.ResponseError):
        guard(Flaky(wrongtype()), breaker=breaker, fallback="FB")()
    assert breaker.stats().failure_count == 1


def test_raising_listeners_never_hold_the_half_open_trial(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """Listeners that raise in every hook: a trial's slot is still released, later calls run."""

    class Broken(pybreaker.CircuitBreakerListener):
        def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
            raise RuntimeError("before_call")

        def failure(self, cb: Any, exc: BaseException) -> None:
            raise RuntimeError("failure")

        def success(self, cb: Any) -> None:
            raise RuntimeError("success")

        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            raise RuntimeError("state_change")

    breaker = make_breaker(failure_threshold=1, reset_timeout=1.0, half_open_max_attempts=1)
    breaker.add_listener(Broken())
    breaker.open()
    clock.advance(1.5)
    fn = Flaky(wrongtype(), value="ok")
    guarded = guard(fn, breaker=breaker, fallback="FB")
    with pytest.raises(rx.ResponseError):
        guarded()
    assert guarded() == "ok"
    assert breaker.current_state == "closed"
