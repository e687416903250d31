"""pybreaker 1.4's contract, run side by side on ``pybreaker.CircuitBreaker`` and ``Breaker``.

Most tests are differential: one scenario, parametrized over both classes, must give the same
observable outcome (what each call returns or raises, the counters, the state, and what the
listeners hear). Where redisguard differs on purpose the test pins our behaviour and says why.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pybreaker
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from redisguard import Breaker, BreakerConfig, CircuitOpenError, ConfigError, _breaker
from redisguard.testing import RedisServer

Factory = Callable[..., pybreaker.CircuitBreaker]
BOTH = pytest.mark.parametrize(
    "factory", [pybreaker.CircuitBreaker, Breaker], ids=["pybreaker", "redisguard"]
)


class Boom(Exception):
    """A system error."""


class Business(Exception):
    """An error the breaker is told to exclude."""


class Events(pybreaker.CircuitBreakerListener):
    """Writes down every hook, in order, in a form both breakers produce alike."""

    def __init__(self) -> None:
        self.log: list[tuple[str, ...]] = []

    def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
        self.log.append(("before_call",))

    def success(self, cb: Any) -> None:
        self.log.append(("success",))

    def failure(self, cb: Any, exc: BaseException) -> None:
        self.log.append(("failure", type(exc).__name__))

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        if getattr(old_state, "name", None) != new_state.name:  # pybreaker's spurious ones
            self.log.append(("state", getattr(old_state, "name", None), new_state.name))


def _raise(exc: BaseException) -> None:
    raise exc


def outcome(cb: pybreaker.CircuitBreaker, func: Callable[..., Any], *args: Any) -> str:
    """What one call looked like from outside: its value, the breaker's error, or the error."""
    try:
        return f"ok:{cb.call(func, *args)}"
    except pybreaker.CircuitBreakerError:
        return "breaker-error"
    except Exception as exc:
        return f"raised:{type(exc).__name__}"


def snapshot(cb: pybreaker.CircuitBreaker) -> tuple[str, int, int]:
    return cb.current_state, cb.fail_counter, cb.success_counter


# -- constructor ---------------------------------------------------------------------------------


@BOTH
def test_accepts_every_pybreaker_keyword(factory: Factory) -> None:
    """Both classes take pybreaker 1.4's constructor keywords and expose them alike."""
    storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
    listener = Events()
    cb = factory(
        fail_max=3,
        reset_timeout=10,
        success_threshold=2,
        exclude=[Business],
        listeners=[listener],
        state_storage=storage,
        name="orders",
        throw_new_error_on_trip=False,
    )
    assert (cb.fail_max, cb.reset_timeout, cb.success_threshold) == (3, 10, 2)
    assert cb.excluded_exceptions == (Business,)
    assert cb.listeners == (listener,)
    assert cb.name == "orders"
    assert cb.open() is False  # open() returns throw_new_error_on_trip


def test_pybreaker_keywords_map_onto_breaker_config() -> None:
    """fail_max, reset_timeout and success_threshold become the BreakerConfig fields."""
    cb = Breaker(fail_max=3, reset_timeout=10, success_threshold=2, name="orders")
    assert cb.config.failure_threshold == 3
    assert cb.config.reset_timeout == 10
    assert cb.config.success_threshold == 2
    assert cb.config.monitoring_window == BreakerConfig().monitoring_window


def test_pybreaker_keywords_agreeing_with_config_are_accepted() -> None:
    """A keyword that repeats the config's own value is not a contradiction."""
    config = BreakerConfig(failure_threshold=3)
    assert Breaker("x", config, fail_max=3).config == config


def test_contradicting_config_and_keyword_names_both() -> None:
    """config= and a pybreaker keyword that disagree raise ConfigError naming both."""
    with pytest.raises(ConfigError, match=r"fail_max=4.*failure_threshold=3"):
        Breaker("x", BreakerConfig(failure_threshold=3), fail_max=4)
    with pytest.raises(ConfigError, match=r"reset_timeout=5.*reset_timeout=30"):
        Breaker("x", BreakerConfig(), reset_timeout=5)


def test_invalid_pybreaker_keyword_is_a_config_error() -> None:
    """A keyword out of range is refused, naming the keyword the caller wrote."""
    with pytest.raises(ConfigError, match="fail_max"):
        Breaker(fail_max=0)


def test_today_constructor_still_works() -> None:
    """Breaker(name, config, listeners=, clock=, wall_clock=) keeps working."""
    cb = Breaker("x", BreakerConfig(failure_threshold=2), listeners=[Events()],
                 clock=time.monotonic, wall_clock=time.time)
    assert (cb.name, cb.fail_max) == ("x", 2)


@BOTH
def test_throw_new_error_on_trip_is_public(factory: Factory) -> None:
    """Setting throw_new_error_on_trip after creation changes what the tripping call raises."""
    cb = factory(fail_max=1)
    if isinstance(cb, Breaker):
        cb.throw_new_error_on_trip = False
        assert cb.throw_new_error_on_trip is False
    else:
        cb._throw_new_error_on_trip = False  # pybreaker 1.4.1 has no public setter
    assert outcome(cb, _raise, Boom()) == "raised:Boom"
    assert cb.current_state == "open"


@BOTH
def test_settable_thresholds(factory: Factory) -> None:
    """fail_max set after creation is the threshold the next failures use."""
    cb = factory(fail_max=5)
    cb.fail_max = 2
    assert [outcome(cb, _raise, Boom()) for _ in range(2)] == ["raised:Boom", "breaker-error"]


# -- tripping --------------------------------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("throw", [True, False])
def test_trip_sequence(factory: Factory, throw: bool) -> None:
    """Three failures open the circuit; the rest are refused without a call."""
    events = Events()
    cb = factory(fail_max=3, listeners=[events], throw_new_error_on_trip=throw)
    got = [outcome(cb, _raise, Boom()) for _ in range(4)]
    tripping = "breaker-error" if throw else "raised:Boom"
    assert got == ["raised:Boom", "raised:Boom", tripping, "breaker-error"]
    assert snapshot(cb) == ("open", 3, 0)
    assert events.log == [
        ("before_call",), ("failure", "Boom"),
        ("before_call",), ("failure", "Boom"),
        ("before_call",), ("failure", "Boom"), ("state", "closed", "open"),
    ]


@BOTH
def test_trip_error_chains_the_failure(factory: Factory) -> None:
    """The breaker's error on the tripping call has the failure as its context."""
    cb = factory(fail_max=1)
    with pytest.raises(pybreaker.CircuitBreakerError) as info:
        cb.call(_raise, Boom("down"))
    assert isinstance(info.value.__context__, Boom)


@BOTH
def test_failed_trial_reopens(factory: Factory) -> None:
    """A failing half-open trial raises the breaker's error and opens the circuit again."""
    events = Events()
    cb = factory(fail_max=1, listeners=[events])
    outcome(cb, _raise, Boom())
    cb.half_open()
    events.log.clear()
    assert outcome(cb, _raise, Boom()) == "breaker-error"
    assert cb.current_state == "open"
    assert events.log == [
        ("before_call",), ("failure", "Boom"), ("state", "half-open", "open"),
    ]


# -- excluded exceptions count as successes --------------------------------------------------------


def _excluding(factory: Factory, how: str, **kwargs: Any) -> pybreaker.CircuitBreaker:
    if how == "class":
        return factory(exclude=[Business], **kwargs)
    if how == "callable":
        return factory(exclude=[lambda e: isinstance(e, Business)], **kwargs)
    cb = factory(**kwargs)
    if how == "add_excluded_exception":
        cb.add_excluded_exception(Business)
    else:
        cb.add_excluded_exceptions(KeyError, Business)
    return cb


EXCLUSIONS = pytest.mark.parametrize(
    "how", ["class", "callable", "add_excluded_exception", "add_excluded_exceptions"]
)


@BOTH
@EXCLUSIONS
def test_excluded_error_resets_the_failure_count(factory: Factory, how: str) -> None:
    """An excluded error propagates, clears the consecutive failures and fires success."""
    events = Events()
    cb = _excluding(factory, how, fail_max=3, listeners=[events])
    got = [outcome(cb, _raise, e) for e in (Boom(), Boom(), Business(), Boom(), Boom())]
    assert got == ["raised:Boom", "raised:Boom", "raised:Business", "raised:Boom", "raised:Boom"]
    assert snapshot(cb) == ("closed", 2, 0)
    assert ("success",) in events.log


@BOTH
@EXCLUSIONS
def test_excluded_error_closes_a_half_open_circuit(factory: Factory, how: str) -> None:
    """A half-open trial that raises an excluded error is a successful trial."""
    events = Events()
    cb = _excluding(factory, how, fail_max=1, listeners=[events])
    outcome(cb, _raise, Boom())
    cb.half_open()
    events.log.clear()
    assert outcome(cb, _raise, Business()) == "raised:Business"
    assert snapshot(cb) == ("closed", 0, 0)
    assert events.log == [("before_call",), ("state", "half-open", "closed"), ("success",)]


async def test_acall_treats_excluded_errors_as_success() -> None:
    """acall() closes a half-open circuit on an excluded error, as call() does."""
    cb = Breaker(fail_max=1, exclude=[Business])

    async def boom(exc: Exception) -> None:
        raise exc

    with pytest.raises(CircuitOpenError):
        await cb.acall(boom, Boom())
    cb.half_open()
    with pytest.raises(Business):
        await cb.acall(boom, Business())
    assert cb.current_state == "closed"


def test_calling_treats_excluded_errors_as_success() -> None:
    """``with breaker.calling()`` resets the failure count on an excluded error."""
    cb = Breaker(fail_max=3, exclude=[Business])
    for exc in (Boom(), Boom(), Business()):
        with pytest.raises(type(exc)), cb.calling():
            raise exc
    assert cb.fail_counter == 0


# -- counters ------------------------------------------------------------------------------------


@BOTH
def test_success_counter_counts_half_open_successes(factory: Factory) -> None:
    """success_counter reads each half-open success until the threshold closes the circuit."""
    cb = factory(fail_max=1, success_threshold=3)
    outcome(cb, _raise, Boom())
    cb.half_open()
    seen = []
    for _ in range(3):
        outcome(cb, lambda: 1)
        seen.append(snapshot(cb))
    assert seen == [("half-open", 0, 1), ("half-open", 0, 2), ("closed", 0, 0)]


@BOTH
def test_half_open_failure_resets_successes(factory: Factory) -> None:
    """A failed trial after some successes opens the circuit with success_counter back at 0."""
    cb = factory(fail_max=1, success_threshold=3)
    outcome(cb, _raise, Boom())
    cb.half_open()
    outcome(cb, lambda: 1)
    assert outcome(cb, _raise, Boom()) == "breaker-error"
    assert snapshot(cb) == ("open", 1, 0)


# -- generators and coroutines ---------------------------------------------------------------------


def _numbers(fail_at: int | None) -> Iterator[int]:
    for i in range(3):
        if i == fail_at:
            raise Boom(f"at {i}")
        yield i


@BOTH
def test_generator_error_while_iterating_is_a_failure(factory: Factory) -> None:
    """call(gen_fn) returns a generator whose error during iteration counts as a failure."""
    events = Events()
    cb = factory(fail_max=2, listeners=[events])
    gen = cb.call(_numbers, 1)
    assert events.log == [("before_call",)]  # nothing recorded before iteration
    with pytest.raises(Boom):
        list(gen)
    assert snapshot(cb) == ("closed", 1, 0)
    with pytest.raises(pybreaker.CircuitBreakerError):
        list(cb.call(_numbers, 0))
    assert cb.current_state == "open"


@BOTH
def test_generator_exhaustion_is_the_success(factory: Factory) -> None:
    """The success of a generator call is recorded when it is exhausted."""
    events = Events()
    cb = factory(fail_max=2, listeners=[events])
    outcome(cb, _raise, Boom())
    gen = cb.call(_numbers, None)
    assert cb.fail_counter == 1
    assert list(gen) == [0, 1, 2]
    assert cb.fail_counter == 0
    assert events.log[-1] == ("success",)


@BOTH
def test_generator_passes_sent_values_through(factory: Factory) -> None:
    """Values sent into the wrapped generator reach the user's generator."""

    def echo() -> Any:
        got = yield "ready"
        yield got * 2

    cb = factory()
    gen = cb.call(echo)
    assert next(gen) == "ready"
    assert gen.send(21) == 42


def test_closing_an_unfinished_generator_is_neutral() -> None:
    """Closing a generator early records nothing (pybreaker would count GeneratorExit)."""
    cb = Breaker(fail_max=1)
    gen = cb.call(_numbers, None)
    next(gen)
    gen.close()
    assert snapshot(cb) == ("closed", 0, 0)


@BOTH
def test_decorated_sync_function_goes_through_call(factory: Factory) -> None:
    """@breaker on a plain function counts its failures."""
    cb = factory(fail_max=2)

    @cb
    def boom() -> None:
        raise Boom

    got = []
    for _ in range(2):
        try:
            boom()
        except Exception as exc:
            got.append(type(exc).__name__ if isinstance(exc, Boom) else "breaker-error")
    assert got == ["Boom", "breaker-error"]
    assert cb.current_state == "open"


async def test_decorated_async_function_goes_through_acall() -> None:
    """@breaker on an async def returns an async function whose failures count."""
    cb = Breaker(fail_max=2)

    @cb
    async def boom() -> None:
        await asyncio.sleep(0)
        raise Boom

    assert inspect.iscoroutinefunction(boom)
    with pytest.raises(Boom):
        await boom()
    with pytest.raises(CircuitOpenError):
        await boom()
    assert cb.current_state == "open"


async def test_call_on_a_coroutine_function_awaits_through_the_breaker() -> None:
    """call(async_fn) returns an awaitable whose outcome is recorded when it finishes."""
    cb = Breaker(fail_max=1)

    async def boom() -> None:
        raise Boom

    pending = cb.call(boom)
    assert cb.fail_counter == 0
    with pytest.raises(CircuitOpenError):
        await pending
    assert cb.current_state == "open"


# -- state storage -------------------------------------------------------------------------------


def _storage(state: str, *, fails: int = 0, successes: int = 0,
             opened_ago: float | None = None) -> pybreaker.CircuitMemoryStorage:
    storage = pybreaker.CircuitMemoryStorage(state)
    for _ in range(fails):
        storage.increment_counter()
    for _ in range(successes):
        storage.increment_success_counter()
    if opened_ago is not None:
        storage.opened_at = datetime.now(timezone.utc) - timedelta(seconds=opened_ago)
    return storage


@BOTH
def test_starts_in_the_storage_state_silently(factory: Factory) -> None:
    """A breaker on an open storage starts open, keeps its counters and notifies no one."""
    events = Events()
    storage = _storage("open", fails=3, opened_ago=1)
    cb = factory(fail_max=3, reset_timeout=60, state_storage=storage, listeners=[events])
    assert snapshot(cb) == ("open", 3, 0)
    assert events.log == []
    assert outcome(cb, lambda: 1) == "breaker-error"


@BOTH
def test_storage_opened_long_ago_admits_a_trial(factory: Factory) -> None:
    """The storage's opened_at decides when the timeout has elapsed."""
    events = Events()
    storage = _storage("open", fails=3, opened_ago=120)
    cb = factory(fail_max=3, reset_timeout=60, state_storage=storage, listeners=[events])
    assert outcome(cb, lambda: 1) == "ok:1"
    assert snapshot(cb) == ("closed", 0, 0)
    assert events.log == [
        ("state", "open", "half-open"), ("before_call",), ("state", "half-open", "closed"),
        ("success",),
    ]
    assert storage.state == "closed"


@BOTH
def test_half_open_storage_keeps_its_success_counter(factory: Factory) -> None:
    """Successes already in a half-open storage count towards the threshold."""
    storage = _storage("half-open", fails=1, successes=1)
    cb = factory(fail_max=1, success_threshold=2, state_storage=storage)
    assert snapshot(cb) == ("half-open", 1, 1)
    outcome(cb, lambda: 1)
    assert snapshot(cb) == ("closed", 0, 0)


@BOTH
def test_closed_storage_keeps_its_failure_counter(factory: Factory) -> None:
    """Failures already in a closed storage count towards fail_max."""
    storage = _storage("closed", fails=2)
    cb = factory(fail_max=3, state_storage=storage)
    assert cb.fail_counter == 2
    assert outcome(cb, _raise, Boom()) == "breaker-error"


@BOTH
def test_writes_through_to_the_storage(factory: Factory) -> None:
    """State, counters and opened_at (an aware UTC datetime) land in the storage."""
    storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
    cb = factory(fail_max=2, success_threshold=2, state_storage=storage)
    outcome(cb, _raise, Boom())
    assert (storage.state, storage.counter) == ("closed", 1)
    outcome(cb, lambda: 1)
    assert storage.counter == 0
    before = datetime.now(timezone.utc)
    outcome(cb, _raise, Boom())
    outcome(cb, _raise, Boom())
    assert (storage.state, storage.counter) == ("open", 2)
    assert storage.opened_at is not None
    assert storage.opened_at.tzinfo is not None
    assert abs((storage.opened_at - before).total_seconds()) < 5
    cb.half_open()
    outcome(cb, lambda: 1)
    assert (storage.state, storage.success_counter) == ("half-open", 1)
    outcome(cb, lambda: 1)
    assert (storage.state, storage.counter, storage.success_counter) == ("closed", 0, 0)


@BOTH
def test_shared_storage_state_is_noticed(factory: Factory) -> None:
    """A breaker sees on its failure path that another breaker on its storage opened it."""
    storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
    one = factory(fail_max=1, reset_timeout=60, state_storage=storage)
    two = factory(fail_max=5, reset_timeout=60, state_storage=storage)
    outcome(one, _raise, Boom())
    assert storage.state == "open"
    outcome(two, _raise, Boom())
    assert two.current_state == "open"
    assert outcome(two, lambda: 1) == "breaker-error"


def test_happy_path_does_not_touch_the_storage() -> None:
    """Successful calls on a closed breaker never read or write a foreign storage."""

    class Counting(pybreaker.CircuitMemoryStorage):
        touched = 0

        def __getattribute__(self, item: str) -> Any:
            if not item.startswith("_") and item != "touched":
                type(self).touched += 1
            return super().__getattribute__(item)

    storage = Counting(pybreaker.STATE_CLOSED)
    cb = Breaker(fail_max=3, state_storage=storage)
    Counting.touched = 0
    for _ in range(100):
        cb.call(lambda: 1)
    assert Counting.touched == 0


# -- listeners on several threads ------------------------------------------------------------------


def test_state_changes_are_delivered_in_order_across_threads() -> None:
    """Transitions made on many threads reach a slow listener one at a time and in order."""
    lock = threading.Lock()
    delivered: list[tuple[str, str]] = []
    inside = 0
    overlapped = False

    class Slow(pybreaker.CircuitBreakerListener):
        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            nonlocal inside, overlapped
            with lock:
                inside += 1
                overlapped |= inside > 1
            time.sleep(0.002)
            delivered.append((old_state.name, new_state.name))
            with lock:
                inside -= 1

    cb = Breaker("t", BreakerConfig(), listeners=[Slow()])
    moves = [cb.open, cb.half_open, cb.close]

    def churn(offset: int) -> None:
        for i in range(30):
            moves[(i + offset) % 3]()

    threads = [threading.Thread(target=churn, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not overlapped
    assert delivered, "no transition was delivered"
    for (_, new), (old, _) in itertools.pairwise(delivered):
        assert new == old, f"out of order: {delivered}"
    assert delivered[-1][1] == cb.current_state


def test_call_hooks_may_run_on_several_threads_at_once() -> None:
    """before_call and success run on the callers' threads concurrently (no lock across calls)."""
    both_inside = threading.Barrier(2, timeout=5)
    met: list[str] = []

    class Meeting(pybreaker.CircuitBreakerListener):
        def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
            both_inside.wait()  # breaks (and is logged) if the hooks were serialized
            met.append("before_call")

        def success(self, cb: Any) -> None:
            both_inside.wait()
            met.append("success")

    cb = Breaker("t", BreakerConfig(), listeners=[Meeting()])
    threads = [threading.Thread(target=cb.call, args=(lambda: 1,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(met) == ["before_call", "before_call", "success", "success"]


def test_listener_that_causes_a_transition_does_not_deadlock() -> None:
    """A state_change listener may move the breaker; its event is delivered after its own."""
    seen: list[tuple[str, str]] = []

    class Reopener(pybreaker.CircuitBreakerListener):
        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            seen.append((old_state.name, new_state.name))
            if new_state.name == "half-open":
                cb.open()

    cb = Breaker("t", BreakerConfig(), listeners=[Reopener()])
    cb.open()
    cb.half_open()
    assert seen == [("closed", "open"), ("open", "half-open"), ("half-open", "open")]
    assert cb.current_state == "open"


# -- half-open trial timeout -----------------------------------------------------------------------


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_trial_slots_held_past_the_timeout_start_a_new_generation() -> None:
    """When every trial slot is held longer than half_open_trial_timeout, a new trial is let in."""
    clock = _Clock()
    config = BreakerConfig(
        failure_threshold=1, half_open_max_attempts=1, half_open_trial_timeout=5.0
    )
    cb = Breaker("t", config, clock=clock)
    cb.half_open()
    stuck = cb._admit()
    assert stuck > 0
    clock.now += 4.9
    assert cb._admit() == _breaker.REJECT
    clock.now += 0.2
    fresh = cb._admit()
    assert fresh > stuck
    cb._on_failure(stuck, Boom())  # the late outcome of the old generation is ignored
    assert cb.current_state == "half-open"
    cb._on_success(fresh)
    assert cb.current_state == "closed"


def test_an_unconsumed_generator_trial_gives_up_its_slot_after_the_timeout() -> None:
    """A trial that never reports (an uniterated generator) blocks trials only for the timeout."""
    clock = _Clock()
    config = BreakerConfig(
        failure_threshold=1, half_open_max_attempts=1, half_open_trial_timeout=5.0
    )
    cb = Breaker("t", config, clock=clock)
    cb.half_open()
    held = cb.call(_numbers, None)
    assert outcome(cb, lambda: 1) == "breaker-error"
    clock.now += 5.0
    assert outcome(cb, lambda: 1) == "ok:1"
    assert cb.current_state == "closed"
    assert list(held) == [0, 1, 2]
    assert cb.current_state == "closed"


def test_trial_timeout_is_configurable_and_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    """half_open_trial_timeout defaults to 10 s, reads milliseconds from the environment."""
    assert BreakerConfig().half_open_trial_timeout == 10.0
    monkeypatch.setenv("REDIS_CIRCUIT_BREAKER_HALF_OPEN_TRIAL_TIMEOUT", "2500")
    assert BreakerConfig.from_env().half_open_trial_timeout == 2.5
    with pytest.raises(ConfigError, match="half_open_trial_timeout"):
        BreakerConfig(half_open_trial_timeout=0)


# -- opened_by -----------------------------------------------------------------------------------


def test_opened_by_is_the_failure_that_opened_the_circuit() -> None:
    """opened_by holds the tripping exception while open and clears when the state moves on."""
    cb = Breaker(fail_max=2)
    assert cb.opened_by is None
    outcome(cb, _raise, Boom("first"))
    tripping = Boom("second")
    outcome(cb, _raise, tripping)
    seen = cb.opened_by
    assert type(seen) is Boom
    assert seen.args == ("second",)
    assert seen.__traceback__ is None  # holds no frames (and no client) of the failed call
    cb.half_open()
    assert cb.opened_by is None
    cb.open()
    assert cb.opened_by is None
    with pytest.raises(AttributeError):
        cb.opened_by = tripping  # type: ignore[misc]


def test_opened_by_is_none_when_a_storage_opened_it() -> None:
    """A breaker that starts open from its storage does not know why it opened."""
    cb = Breaker(state_storage=_storage("open", opened_ago=1))
    assert cb.current_state == "open"
    assert cb.opened_by is None


def test_a_failed_trial_becomes_opened_by() -> None:
    """A failed half-open trial re-opens the circuit and is the new opened_by."""
    cb = Breaker(fail_max=1)
    cb.half_open()
    trial = Boom("trial")
    outcome(cb, _raise, trial)
    seen = cb.opened_by
    assert type(seen) is Boom
    assert seen.args == ("trial",)


# -- fork safety -----------------------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="needs os.fork")
@pytest.mark.filterwarnings("ignore:This process.*multi-threaded:DeprecationWarning")
def test_forked_child_can_use_a_breaker_whose_gate_another_thread_held() -> None:
    """A child forked while another thread holds the gate gets fresh locks and works."""
    cb = Breaker(fail_max=1)
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with cb._gate, _breaker._registry_lock:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(5)
    try:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                done = threading.Event()

                def use() -> None:
                    outcome(cb, _raise, Boom())
                    cb.half_open()
                    cb.call(lambda: 1)
                    _breaker.get_breaker("child")
                    done.set()

                threading.Thread(target=use, daemon=True).start()
                code = 0 if done.wait(5) and cb.current_state == "closed" else 2
            finally:
                os._exit(code)
        deadline = time.monotonic() + 20
        while True:
            waited, status = os.waitpid(pid, os.WNOHANG)
            if waited:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                pytest.fail("the child hung on a lock it inherited")
            time.sleep(0.01)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        release.set()
        holder.join()
    outcome(cb, _raise, Boom())
    assert cb.current_state == "open"


# -- CircuitRedisStorage on a real server ----------------------------------------------------------


def _storage_client(server: RedisServer, **kwargs: Any) -> redis.Redis:
    return redis.Redis(
        port=server.port,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
        **kwargs,
    )


def test_circuit_redis_storage_carries_state_to_a_new_breaker(redis_server: RedisServer) -> None:
    """A breaker on CircuitRedisStorage writes its trip to Redis; a new one starts open."""
    client = _storage_client(redis_server)
    one = Breaker(fail_max=2, reset_timeout=60,
                  state_storage=pybreaker.CircuitRedisStorage("closed", client, namespace="a"))
    outcome(one, _raise, Boom())
    assert client.get("a:pybreaker:fail_counter") == b"1"
    outcome(one, _raise, Boom())
    assert client.get("a:pybreaker:state") == b"open"
    assert abs(int(client.get("a:pybreaker:opened_at") or 0) - time.time()) < 5
    events = Events()
    two = Breaker(fail_max=2, reset_timeout=60, listeners=[events],
                  state_storage=pybreaker.CircuitRedisStorage("closed", client, namespace="a"))
    assert snapshot(two) == ("open", 2, 0)
    assert outcome(two, lambda: 1) == "breaker-error"
    assert events.log == []
    client.close()


def test_breaker_trips_from_memory_when_the_storage_redis_is_down(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """With its storage's Redis dead, the breaker still trips and refuses without touching it."""
    client = _storage_client(redis_server)
    cb = Breaker(fail_max=2, reset_timeout=60,
                 state_storage=pybreaker.CircuitRedisStorage("closed", client))
    redis_server.kill()
    assert [outcome(cb, _raise, Boom()) for _ in range(2)] == ["raised:Boom", "breaker-error"]
    assert any(r.name == "pybreaker" for r in caplog.records)  # the storage did fail
    caplog.clear()
    assert outcome(cb, lambda: 1) == "breaker-error"
    assert not [r for r in caplog.records if r.name == "pybreaker"]  # refused from memory
    client.close()


def test_circuit_redis_storage_crashes_with_decoded_responses(redis_server: RedisServer) -> None:
    """The documented trap: pybreaker's Redis storage cannot read a decode_responses client."""
    client = _storage_client(redis_server, decode_responses=True)
    with pytest.raises(AttributeError, match="decode"):
        Breaker(state_storage=pybreaker.CircuitRedisStorage("closed", client))
    client.close()


def test_opened_by_keeps_the_errors_attributes() -> None:
    """The copy in opened_by keeps what __init__ set, so repr() and str() still work."""
    import redis

    cb = Breaker(fail_max=1)
    error = redis.ConnectionError("Error 111 connecting to 127.0.0.1:1. Connection refused.")
    outcome(cb, _raise, error)
    seen = cb.opened_by
    assert seen is not None
    assert seen.__traceback__ is None
    assert repr(seen) == repr(error)
    assert str(seen) == str(error)
    assert seen.__dict__ == error.__dict__
