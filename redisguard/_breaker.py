"""The circuit breaker: pybreaker's state machine and listeners, without its lock around I/O.

pybreaker's ``CircuitBreaker.call()`` holds an RLock across the wrapped call (8 threads doing
0.1 s of I/O take 0.8 s) and has no asyncio support. :class:`Breaker` keeps pybreaker 1.4's
whole public surface -- its constructor keywords, ``current_state``, ``state``,
``open()``/``half_open()``/``close()``, listeners, excluded exceptions, ``fail_counter``,
``success_counter``, ``call()`` (generators included), ``@breaker``, ``calling()``,
``state_storage`` -- and drives it with an *admit, then record* protocol:

1. ``_admit()`` decides, under a short lock that is never held across I/O, whether a call may
   touch Redis: yes when closed (no lock at all), no while open and ``reset_timeout`` has not
   elapsed on a monotonic clock, and at most ``half_open_max_attempts`` concurrent trial
   calls while half-open (a slot held past ``half_open_trial_timeout`` is given up).
2. The caller does its I/O with no lock held.
3. ``_on_success()`` / ``_on_failure()`` / ``_on_neutral()`` record the outcome and move the
   state machine.

Listeners: ``before_call``, ``success`` and ``failure`` run on the caller's thread, so they
may run on several threads at once. ``state_change`` events are queued under the lock and
delivered after it is released by one thread at a time, in the order the transitions
happened; a listener that moves the breaker itself has its event delivered after its own.

Where this differs from pybreaker on purpose: a ``BaseException`` that is not an
``Exception`` (cancellation, ``KeyboardInterrupt``, closing an unfinished generator) is
neutral, not a failure; no lock is held across calls, so half-open admits up to
``half_open_max_attempts`` concurrent trials instead of serializing every call; a
``state_change`` where the state did not change is never sent; unspecified settings come
from ``BreakerConfig.from_env()`` (``reset_timeout`` 30 s, not 60 s); ``fail_counter``
counts only failures inside the monitoring window; and a ``state_storage`` is re-read only
on the failure path and the slow admission path (see ``redisguard._storage``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import threading
import time
import types
from collections import deque
from collections.abc import Awaitable, Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar, cast

import pybreaker

from ._budget import RetryBudget, budget_for
from ._bulkhead import Bulkhead, bulkhead_for
from ._config import BreakerConfig, replace_pybreaker_keyword, with_pybreaker_keywords
from ._errors import CircuitOpenError, ConfigError, SlowCallsError
from ._fork import after_fork, renew_lock_after_fork
from ._sides import EVENT as _WRITE_EVENT
from ._sides import WriteSide
from ._storage import Snapshot, StorageLink, WindowStorage
from ._tally import Tally, TallyGroup
from ._transport import closed_transport_error
from ._window import CallWindow, slow_trial_error

__all__ = [
    "Breaker",
    "BreakerStats",
    "breakers",
    "forget_breaker",
    "get_breaker",
]

T = TypeVar("T")
logger = logging.getLogger("redisguard")

# State codes double as the gauge values of the design document: 0 closed, 1 half-open, 2 open.
CLOSED, HALF_OPEN, OPEN = 0, 1, 2
STATE_NAMES = (pybreaker.STATE_CLOSED, pybreaker.STATE_HALF_OPEN, pybreaker.STATE_OPEN)
_CODES = {name: code for code, name in enumerate(STATE_NAMES)}

# Admission tickets: NORMAL for a closed circuit, REJECT for "answer with the fallback now",
# and a positive half-open generation number for a trial call.
NORMAL = 0
REJECT = -1
#: Marks an event in a breaker's queue as a transition another process made (host-shared
#: breakers, ``redisguard._host``): listeners hear it with ``breaker._adopting`` set.
ADOPTED = object()

_BASE_LISTENER = pybreaker.CircuitBreakerListener

# What call() hands back wrapped, recording the outcome later (as pybreaker does generators).
# Neither type can be subclassed, so an exact type lookup is enough (and cheaper).
_DEFERRED = frozenset((types.GeneratorType, types.CoroutineType))

# Kept for code that imported the old private name.
_WindowStorage = WindowStorage


def _overrides(listener: object, method: str) -> bool:
    """Whether a listener implements ``method`` itself rather than inheriting the no-op."""
    if not isinstance(listener, _BASE_LISTENER):
        return hasattr(listener, method)
    return getattr(type(listener), method, None) is not getattr(_BASE_LISTENER, method)


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)


@dataclass(frozen=True)
class BreakerStats:
    """A snapshot of one breaker: its state, counts and timings (``Breaker.stats()``).

    Attributes:
        name: The breaker's name.
        state: ``"closed"``, ``"half-open"`` or ``"open"``.
        failure_count: Consecutive failures inside the monitoring window right now.
        success_count: Successful calls since creation or the last ``reset()``.
        rejected_count: Calls answered at once because the circuit was open or the half-open
            trial slots were taken (pybreaker fires no event for these).
        last_failure_time: When the last failure was recorded (UTC), or None.
        last_state_change: When the state last changed (UTC).
        next_retry_time: While open, when trial calls will be admitted (UTC); else None.
        write_state: The write side's state (``redisguard._sides``): opened by refusals of
            writes (OOM, READONLY, MISCONF), it blocks only write and delete guards.
        write_cause: What opened the write side (``"OOM"``, ``"READONLY"``, ``"MISCONF"``...),
            while it is not closed; else None.
        write_refusal_count: Write refusals in the current run (towards opening it).
        write_rejected_count: Write and delete calls the write side answered with their
            fallback, since creation or the last ``reset()``.
        write_next_retry_time: While the write side is open, when trial writes will be
            admitted (UTC); else None.
        bulkhead_in_flight: Calls holding a bulkhead slot now; None without a bulkhead.
        bulkhead_rejected_count: Calls the bulkhead turned away since creation.
        retries_denied_count: Retries the retry budget denied since creation.
        window_calls: Calls in the failure-rate/slow-call window (``redisguard._window``),
            or None when the breaker has no such window.
        failure_rate: Percent of the window's calls that failed, or None (no window).
        slow_call_rate: Percent of the window's calls that were slow, or None (no window).
        shared: Whether the state is shared by every process on the host (``redisguard._host``);
            the counters above (successes, rejections, failures seen) stay this process's own.
        host_segment: The shared segment's path when ``shared``, else None.
        trial_count: Half-open trial calls this process admitted since creation (the prober's
            PINGs are not trial calls).
    """

    name: str
    state: str
    failure_count: int
    success_count: int
    rejected_count: int
    last_failure_time: datetime | None
    last_state_change: datetime
    next_retry_time: datetime | None
    write_state: str = "closed"
    write_cause: str | None = None
    write_refusal_count: int = 0
    write_rejected_count: int = 0
    write_next_retry_time: datetime | None = None
    bulkhead_in_flight: int | None = None
    bulkhead_rejected_count: int = 0
    retries_denied_count: int = 0
    window_calls: int | None = None
    failure_rate: float | None = None
    slow_call_rate: float | None = None
    shared: bool = False
    host_segment: str | None = None
    trial_count: int = 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (ISO 8601 timestamps)."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.isoformat() if isinstance(value, datetime) else value
        return out


class Breaker(pybreaker.CircuitBreaker):
    """A ``pybreaker.CircuitBreaker`` that never holds a lock across the guarded call.

    It adds a monitoring window (failures older than it do not count), a limit on concurrent
    half-open trial calls and a timeout on them, a monotonic clock, asyncio support
    (:meth:`acall`, ``@breaker`` on an ``async def``) and :meth:`stats`. pybreaker listeners
    work unchanged; ``state_change`` fires only for real transitions, one at a time and in
    order, and ``before_call``/``success`` are only dispatched when some listener implements
    them, so the happy path stays cheap. ``before_call``, ``success`` and ``failure`` may run
    on several threads at once.

    It takes pybreaker 1.4's keywords too: ``fail_max``, ``reset_timeout`` (seconds) and
    ``success_threshold`` become the :class:`BreakerConfig` fields ``failure_threshold``,
    ``reset_timeout`` and ``success_threshold``; the fields they do not name come from
    ``config`` or ``BreakerConfig.from_env()``.

    Args:
        name: The dependency's name; breakers are shared by name through :func:`get_breaker`.
        config: Thresholds and durations; ``BreakerConfig.from_env()`` when omitted.
        fail_max: pybreaker's name for ``failure_threshold``.
        reset_timeout: pybreaker's ``reset_timeout`` in seconds.
        success_threshold: Successful trials needed to close.
        exclude: Exception classes or predicates that are not failures. As in pybreaker,
            an excluded error counts as a *success* in :meth:`call`, :meth:`acall` and
            :meth:`calling`.
        listeners: pybreaker listeners to attach.
        state_storage: Any ``pybreaker.CircuitBreakerStorage``; the breaker starts in its
            state and writes every change through to it (see ``redisguard._storage``).
        throw_new_error_on_trip: Whether the call that opens the circuit raises
            :class:`CircuitOpenError` (True) or re-raises its own error.
        clock: A monotonic clock in seconds (injectable for tests).
        wall_clock: Seconds since the epoch, for :meth:`stats` and the storage's
            ``opened_at``.
        redis_url: The Redis this breaker guards; a host-shared breaker (``config.shared``
            True) derives its namespace from it (default ``$REDIS_URL``).

    Raises:
        ConfigError: an invalid setting, or ``config`` and a pybreaker keyword disagree.
    """

    #: Whether this breaker's state is shared by every process on the host (``_host``).
    is_host_shared = False
    #: True while a transition made by another process is delivered to the listeners.
    _adopting = False
    #: The write side's class (a host-shared breaker's keeps its state in shared memory).
    _write_side_class: type[WriteSide] = WriteSide

    def __new__(cls, *args: Any, **kwargs: Any) -> Breaker:
        """A :class:`~redisguard._host.HostBreaker` when the breaker is to be host-shared."""
        if cls is Breaker and _wants_host(args, kwargs):
            from ._host import HostBreaker  # noqa: PLC0415 - _host subclasses Breaker

            return super().__new__(HostBreaker)
        return super().__new__(cls)

    def __init__(
        self,
        name: str | None = None,
        config: BreakerConfig | None = None,
        *,
        fail_max: int | None = None,
        reset_timeout: float | None = None,
        success_threshold: int | None = None,
        exclude: Iterable[type[BaseException] | Callable[[Any], bool]] | None = None,
        listeners: Sequence[pybreaker.CircuitBreakerListener] | None = None,
        state_storage: pybreaker.CircuitBreakerStorage | None = None,
        throw_new_error_on_trip: bool = True,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        redis_url: str | None = None,
    ) -> None:
        del redis_url  # only a host-shared breaker uses it (redisguard._host)
        name = "redis" if name is None else name
        if not isinstance(name, str) or not name:
            raise ConfigError(
                f"breaker name must be a non-empty string, got {name!r} "
                "(pybreaker's settings are keywords: Breaker(fail_max=..., ...))"
            )
        config = with_pybreaker_keywords(
            config,
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            success_threshold=success_threshold,
        )
        self.config = config
        self._clock = clock
        self._wall = wall_clock
        self._window_storage = WindowStorage(config.monitoring_window, clock)
        # Failure-rate / slow-call rules; None keeps the consecutive rule alone (and the
        # guard's happy path exactly as cheap as without them).
        self._window = CallWindow(config, clock) if config.uses_window else None
        self._link = None if state_storage is None else StorageLink(state_storage)
        loaded = None if self._link is None else self._link.load()
        self._code = CLOSED if loaded is None else _code_of(loaded.state)
        self._write_side = self._write_side_class(self, _without_traceback)
        super().__init__(
            fail_max=config.failure_threshold,
            reset_timeout=config.reset_timeout,
            success_threshold=config.success_threshold,
            exclude=exclude,
            state_storage=state_storage or self._window_storage,
            listeners=list(listeners or ()),
            name=name,
            throw_new_error_on_trip=throw_new_error_on_trip,
        )
        self._gate = threading.Lock()  # guards the fields below; never held across I/O
        self._notify_lock = threading.Lock()  # held by the one thread delivering state events
        self._events: deque[tuple[Any, Any]] = deque()  # (old, new), appended under the gate
        self._opened_at = 0.0
        self._opened_by: BaseException | None = None
        self._slow_opened = False  # opened by slow calls: a slow half-open trial re-opens it
        self._generation = 0
        self._trials = 0
        self._trial_admitted_at = 0.0
        self._trial_successes = 0
        self._trial_restarts = 0
        self._trials_admitted = 0  # half-open trial calls this process admitted (stats)
        self._failure_total = 0
        self._last_failure: float | None = None
        self._last_change = wall_clock()
        # Monotonic totals (metrics read them); reset() only moves the offsets stats() use.
        # Guards count their successes in their own tally, attached to this group.
        self._successes = TallyGroup()
        self._direct_successes = self._successes.new()
        self._rejections = Tally()
        self._offsets = (0, 0, 0)
        # Policies the guard consults (None: off); see redisguard._bulkhead / ._budget.
        self._bulkhead: Bulkhead | None = bulkhead_for(
            config.max_concurrent_calls, config.max_wait_for_slot
        )
        self._budget: RetryBudget | None = budget_for(
            config.retry_budget_ratio, config.retry_budget_min_per_second, self._successes, clock
        )
        self._wants_call_events = False
        self._refresh_listener_flags()
        if loaded is not None:
            self._take_over(loaded)
        after_fork(self, Breaker._after_fork)

    def _take_over(self, loaded: Snapshot) -> None:
        """Start where the storage is, telling no listener (pybreaker does not either)."""
        self._window_storage.state = loaded.state
        self._window_storage.seed(min(loaded.failures, self._fail_max))
        if self._code == OPEN:
            self._opened_at = self._monotonic(loaded.opened_at)
            if loaded.opened_at is not None:
                self._window_storage.opened_at = loaded.opened_at
        elif self._code == HALF_OPEN:
            self._generation = 1
            self._trial_successes = loaded.successes

    def _after_fork(self) -> None:
        # Another thread may have held these at the fork; in the child it no longer exists.
        self._gate = threading.Lock()
        self._notify_lock = threading.Lock()
        self._lock = threading.RLock()

    # -- identity -----------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The breaker's name."""
        return self._name or "redis"

    @name.setter
    def name(self, name: str) -> None:
        raise AttributeError("a breaker's name is fixed at creation")

    def __repr__(self) -> str:
        return f"<Breaker {self.name!r} {self.current_state}>"

    # -- pybreaker surface ----------------------------------------------------------------
    @property
    def current_state(self) -> str:
        return STATE_NAMES[self._code]

    @property
    def state(self) -> Any:
        """pybreaker's state object (``.name`` is the state string)."""
        return self._state

    @state.setter
    def state(self, state_str: str) -> None:
        self._move_to(_code_of(state_str))

    @property
    def state_code(self) -> int:
        """0 closed, 1 half-open, 2 open (the ``circuit_breaker_state`` gauge's encoding)."""
        return self._code

    @property
    def fail_counter(self) -> int:
        """Consecutive failures inside the monitoring window, in every state."""
        return self._window_storage.counter

    @property
    def success_counter(self) -> int:
        """Successful trials in the current half-open round (0 when closed or open)."""
        return self._trial_successes

    @property
    def fail_max(self) -> int:
        """Failures that open the circuit (``config.failure_threshold``)."""
        return self._fail_max

    @fail_max.setter
    def fail_max(self, number: int) -> None:
        self.config = replace_pybreaker_keyword(self.config, "fail_max", number)
        self._fail_max = number

    @property
    def reset_timeout(self) -> float:
        """Seconds the circuit stays open before trials (``config.reset_timeout``)."""
        return self._reset_timeout

    @reset_timeout.setter
    def reset_timeout(self, timeout: float) -> None:
        self.config = replace_pybreaker_keyword(self.config, "reset_timeout", timeout)
        self._reset_timeout = timeout

    @property
    def success_threshold(self) -> int:
        """Successful trials that close the circuit (``config.success_threshold``)."""
        return self._success_threshold

    @success_threshold.setter
    def success_threshold(self, threshold: int) -> None:
        self.config = replace_pybreaker_keyword(self.config, "success_threshold", threshold)
        self._success_threshold = threshold

    @property
    def throw_new_error_on_trip(self) -> bool:
        """Whether the call that opens the circuit raises :class:`CircuitOpenError`
        (True) or re-raises its own error (False)."""
        return bool(self._throw_new_error_on_trip)

    @throw_new_error_on_trip.setter
    def throw_new_error_on_trip(self, value: bool) -> None:
        if not isinstance(value, bool):
            raise ConfigError(f"throw_new_error_on_trip must be True or False, got {value!r}")
        self._throw_new_error_on_trip = value

    @property
    def write_side(self) -> WriteSide:
        """The write side: opened by refusals of writes only (OOM, READONLY, MISCONF), it
        blocks write and delete guards while reads go on (``redisguard._sides``)."""
        return self._write_side

    @property
    def write_state(self) -> str:
        """The write side's state: ``"closed"``, ``"half-open"`` or ``"open"``."""
        return self._write_side.current_state

    @property
    def opened_by(self) -> BaseException | None:
        """The failure that opened the circuit, while it is open.

        A copy with the same class and arguments but no traceback, so that the failed call's
        frames (and the client they hold) are not kept alive by the breaker. None when the
        circuit is not open, or was opened by :meth:`open` or by its storage.
        """
        return self._opened_by

    def open(self) -> bool:
        """Open the circuit now; calls get their fallback until ``reset_timeout`` elapses."""
        self._move_to(OPEN)
        return bool(self._throw_new_error_on_trip)

    def half_open(self) -> None:
        """Admit trial calls now (the recovery prober uses this when Redis answers again)."""
        self._move_to(HALF_OPEN)

    def close(self) -> None:
        """Close the circuit; calls go to Redis again."""
        self._move_to(CLOSED)

    def reset(self) -> None:
        """Admin action: close the circuit and clear every count and timestamp."""
        with self._gate:
            self._clear_failures()
            if self._window is not None:
                self._window.reset()
            self._offsets = (self._successes.value, self._rejections.value, self._failure_total)
            self._last_failure = None
        self._write_side._reset()
        self._move_to(CLOSED)

    def add_listener(self, listener: Any) -> None:
        super().add_listener(listener)
        self._refresh_listener_flags()

    def remove_listener(self, listener: Any) -> None:
        super().remove_listener(listener)
        self._refresh_listener_flags()

    def _refresh_listener_flags(self) -> None:
        self._wants_call_events = any(
            _overrides(listener, "success") or _overrides(listener, "before_call")
            for listener in self._listeners
        )

    def __call__(self, *call_args: Any, **call_kwargs: Any) -> Any:
        """``@breaker``: a function's calls go through :meth:`call`, an ``async def``'s
        through :meth:`acall` (the wrapper is then an ``async def`` too)."""
        if call_kwargs.pop("__pybreaker_call_async", False):
            raise NotImplementedError("Tornado coroutines are not supported; use acall()")

        def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
            if inspect.iscoroutinefunction(func):

                @functools.wraps(func)
                async def acalled(*args: Any, **kwargs: Any) -> Any:
                    return await self.acall(func, *args, **kwargs)

                return acalled

            @functools.wraps(func)
            def called(*args: Any, **kwargs: Any) -> Any:
                return self.call(func, *args, **kwargs)

            return called

        return decorate(*call_args) if call_args else decorate

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``func`` through the breaker, holding no lock while it runs.

        As in pybreaker, a generator is wrapped: an error while iterating it is the
        failure and its exhaustion the success. A coroutine (``func`` is an ``async def``)
        is wrapped likewise: its outcome is recorded when it is awaited.

        Raises:
            CircuitOpenError: the circuit is open (it is also a pybreaker
                ``CircuitBreakerError``), or this call's failure opened it.
        """
        ticket = self._admit()
        if ticket == REJECT:
            raise self._open_error()
        self._before_call(func, args, kwargs)
        began = self._clock()
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            self._record_exception(ticket, exc)
            raise
        if type(result) in _DEFERRED:
            if isinstance(result, types.GeneratorType):
                return cast(T, self._iterate(ticket, result, began))
            return cast(T, self._finish(ticket, cast(Awaitable[Any], result), began))
        self._on_success(ticket, True, self._clock() - began)
        return result

    async def acall(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Await ``func(*args, **kwargs)`` through the breaker (asyncio twin of :meth:`call`)."""
        ticket = self._admit()
        if ticket == REJECT:
            raise self._open_error()
        self._before_call(func, args, kwargs)
        began = self._clock()
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            self._record_exception(ticket, exc)
            raise
        self._on_success(ticket, True, self._clock() - began)
        return result

    @contextlib.contextmanager
    def calling(self) -> Iterator[None]:
        """``with breaker.calling(): ...`` -- the block runs under the breaker's rules."""
        ticket = self._admit()
        if ticket == REJECT:
            raise self._open_error()
        began = self._clock()
        try:
            yield
        except BaseException as exc:
            self._record_exception(ticket, exc)
            raise
        self._on_success(ticket, True, self._clock() - began)

    def call_async(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """pybreaker's Tornado entry point is not supported; use :meth:`acall`."""
        raise NotImplementedError("Breaker.call_async (Tornado) is not supported; use acall()")

    def _iterate(
        self, ticket: int, generator: Generator[Any, Any, Any], began: float
    ) -> Generator[Any, Any, Any]:
        try:
            result = yield from generator
        except BaseException as exc:
            self._record_exception(ticket, exc)
            raise
        self._on_success(ticket, True, self._clock() - began)
        return result

    async def _finish(self, ticket: int, coroutine: Awaitable[T], began: float) -> T:
        try:
            result = await coroutine
        except BaseException as exc:
            self._record_exception(ticket, exc)
            raise
        self._on_success(ticket, True, self._clock() - began)
        return result

    def _record_exception(self, ticket: int, exc: BaseException) -> None:
        """pybreaker's rules for a direct call: an excluded error is a success.

        Unlike pybreaker, a ``BaseException`` that is not an ``Exception`` (cancellation,
        ``KeyboardInterrupt``, ``GeneratorExit``) says nothing about Redis: neutral.
        """
        if not isinstance(exc, Exception):
            self._on_neutral(ticket)
        elif not self.is_system_error(exc):
            self._on_success(ticket)
        elif self._on_failure(ticket, exc) and self._throw_new_error_on_trip:
            raise CircuitOpenError(
                f"circuit breaker {self.name!r} opened by this failure: {type(exc).__name__}",
                operation="",
                breaker=self.name,
                attempts=1,
            ) from exc

    def _open_error(self) -> CircuitOpenError:
        return CircuitOpenError(
            f"circuit breaker {self.name!r} is {self.current_state}; call not attempted",
            operation="",
            breaker=self.name,
            attempts=0,
        )

    # -- admission and outcomes (used by the guard) ----------------------------------------
    def _admit(self) -> int:
        """Return NORMAL, a trial generation, or REJECT. Never blocks on I/O."""
        code = self._code
        if code == CLOSED:
            return NORMAL
        if code == OPEN and self._clock() < self._opened_at + self._reset_timeout:
            self._rejections.add()
            return REJECT
        with self._gate:
            if self._link is not None:
                self._reread()
            restarts = self._trial_restarts
            ticket = self._admit_locked()
        if ticket == REJECT:
            self._rejections.add()
        elif self._trial_restarts != restarts:
            logger.warning(
                "breaker %s: every half-open trial slot was held longer than %g s; "
                "starting a new round of trials",
                self.name,
                self.config.half_open_trial_timeout,
                extra={"category": "circuit-breaker", "breaker": self.name},
            )
        if self._events:
            self._drain()
        return ticket

    def _admit_locked(self) -> int:
        now = self._clock()
        code = self._code
        if code == OPEN:
            if now < self._opened_at + self._reset_timeout:
                return REJECT
            self._set_state(HALF_OPEN)
            code = HALF_OPEN
        if code == CLOSED:
            return NORMAL
        config = self.config
        if self._trials >= config.half_open_max_attempts:
            # The newest slot was taken at _trial_admitted_at, so every held slot is at least
            # this old: no path can hold the circuit half-open forever.
            if now - self._trial_admitted_at < config.half_open_trial_timeout:
                return REJECT
            self._restart_trials()
        self._trials += 1
        self._trials_admitted += 1
        self._trial_admitted_at = now
        return self._generation

    def _restart_trials(self) -> None:
        """Start a new half-open round; the old round's late outcomes will be ignored."""
        self._trial_restarts += 1
        self._generation += 1
        self._trials = 0
        self._trial_successes = 0
        self._window_storage.reset_success_counter()
        if self._link is not None:
            self._link.trials_restarted()

    def _before_call(self, func: Any, args: Any, kwargs: Any) -> None:
        if self._wants_call_events:
            for listener in self._listeners:
                _dispatch(listener, "before_call", self, func, *args, **kwargs)

    def _on_success(self, ticket: int, count: bool = True, elapsed: float = 0.0) -> None:
        """Record a success (``count=False``: the caller counts it in an attached tally).

        ``elapsed`` is the call's duration in seconds, for slow-call breaking.
        """
        if count:
            self._direct_successes.add()
        window = self._window
        if ticket == NORMAL:
            if window is not None:
                if elapsed > window.slow_after:
                    self._on_slow()
                else:
                    window.note_fast()
            if self._window_storage._failures:
                with self._gate:
                    self._clear_failures()
        else:
            with self._gate:
                if ticket == self._generation and self._code == HALF_OPEN:
                    self._trials -= 1
                    if (
                        window is not None
                        and elapsed > window.slow_after
                        and self._slow_opened
                    ):
                        # Opened by slow calls: an answered PING proves nothing about latency,
                        # so a slow trial failed. After an outage a slow trial (it paid for
                        # the reconnect) proves Redis answers; the window judges latency again.
                        self._set_state(OPEN, cause=slow_trial_error(elapsed, window))
                    else:
                        self._trial_succeeded()
                elif self._code == CLOSED:
                    # A late trial (its circuit closed meanwhile) still proves Redis answers.
                    self._clear_failures()
            if self._events:  # pybreaker announces the close before the success
                self._drain()
        if self._wants_call_events:
            for listener in self._listeners:
                _dispatch(listener, "success", self)

    def _on_slow(self) -> None:
        """A slow success while closed: count it, and open if the slow-call rate says so."""
        assert self._window is not None
        with self._gate:
            verdict = self._window.slow()
            if verdict is not None and self._code == CLOSED:
                self._set_state(OPEN, cause=verdict)
        if self._events:
            self._drain()

    def _trial_succeeded(self) -> None:
        """A half-open trial succeeded in time (under the gate)."""
        self._clear_failures()
        self._trial_successes += 1
        self._window_storage.increment_success_counter()
        if self._link is not None:
            self._link.trial_succeeded()
        if self._trial_successes >= self._success_threshold:
            self._set_state(CLOSED)

    def _failure_trips(self) -> bool:
        """Whether a failure recorded while closed opens the circuit (under the gate)."""
        window = self._window
        if window is None:
            return self._window_storage.counter >= self._fail_max
        by_rate = window.failure()  # counts the call; False in consecutive mode
        return by_rate or (
            window.failure_rate is None and self._window_storage.counter >= self._fail_max
        )

    def _on_failure(self, ticket: int, exc: BaseException) -> bool:
        """Record a failure; return True if it opened the circuit."""
        opened = False
        with self._gate:
            link = self._link
            if link is not None:
                self._reread()
            self._window_storage.increment_counter()
            if link is not None:
                link.failed()
            self._failure_total += 1
            self._last_failure = self._wall()
            if ticket > 0 and ticket == self._generation and self._code == HALF_OPEN:
                self._trials -= 1
                opened = self._set_state(OPEN, cause=exc)
            elif self._code == CLOSED and self._failure_trips():
                opened = self._set_state(OPEN, cause=exc)
        for listener in self._listeners:
            _dispatch(listener, "failure", self, exc)
        if self._events:
            self._drain()
        return opened

    def _on_neutral(self, ticket: int) -> None:
        """An outcome that says nothing about Redis (cancellation, a data error)."""
        if ticket > 0:
            with self._gate:
                if ticket == self._generation and self._code == HALF_OPEN:
                    self._trials -= 1

    def _on_write_refused(self, ticket: int, exc: BaseException) -> None:
        """Redis refused a write (OOM, READONLY, MISCONF): neutral here, told to the write side."""
        self._on_neutral(ticket)
        self._write_side.refused(0, exc)

    def _clear_failures(self) -> None:
        """End the run of consecutive failures (under the gate)."""
        self._window_storage.reset_counter()
        if self._link is not None:
            self._link.failures_cleared()

    # -- state transitions ----------------------------------------------------------------
    def _move_to(self, code: int) -> None:
        with self._gate:
            self._set_state(code)
        if self._events:
            self._drain()

    def _set_state(
        self,
        code: int,
        *,
        cause: BaseException | None = None,
        opened_at: float | None = None,
        from_storage: bool = False,
    ) -> bool:
        """Switch state under the gate; queue the (old, new) event; return whether it moved.

        Args:
            code: The new state.
            cause: For OPEN, the failure that opened it (:attr:`opened_by`).
            opened_at: For OPEN, when it opened on our monotonic clock (default: now).
            from_storage: The storage already says so; do not write it back.
        """
        if code == OPEN:
            self._opened_at = self._clock() if opened_at is None else opened_at
            self._opened_by = None if cause is None else _without_traceback(cause)
            self._slow_opened = isinstance(cause, SlowCallsError)  # kept while half-open
        if code == self._code:
            if code == OPEN and not from_storage:  # re-opening restarts the timeout
                self._write_state(code)
            return False
        old = self._state
        self._code = code
        self._last_change = self._wall()
        self._trial_successes = 0
        if code == HALF_OPEN:
            self._generation += 1
            self._trials = 0
            self._opened_by = None
        elif code == CLOSED:
            self._window_storage.reset_counter()
            if self._window is not None:
                self._window.reset()
            self._opened_by = None
        if from_storage:
            self._window_storage.state = STATE_NAMES[code]
        else:
            self._write_state(code)
        self._state = self._create_new_state(STATE_NAMES[code], prev_state=old, notify=False)
        self._events.append((old, self._state))
        self._write_side._refresh()
        return True

    def _write_state(self, code: int) -> None:
        """Write a transition to our storage and through to a linked one (under the gate)."""
        name = STATE_NAMES[code]
        own = self._window_storage
        opened_at = None
        if code == OPEN:
            # pybreaker stores an aware UTC datetime on the wall clock.
            opened_at = datetime.fromtimestamp(self._wall(), timezone.utc)
            own.opened_at = opened_at
        own.state = name
        own.reset_success_counter()
        if self._link is not None:
            self._link.moved(name, opened_at)

    def _reread(self) -> None:
        """Adopt what a linked storage says now (under the gate; failure and slow paths)."""
        assert self._link is not None
        read = self._link.read_state()
        if read is None:
            return
        name, opened_at = read
        code = _CODES.get(name)
        if code is None:
            return
        if code == OPEN:
            at = self._monotonic(opened_at)
            if self._code == OPEN:
                self._opened_at = max(self._opened_at, at)
            else:
                self._set_state(OPEN, opened_at=at, from_storage=True)
        elif code != self._code:
            self._set_state(code, from_storage=True)

    def _monotonic(self, opened_at: datetime | None) -> float:
        """A storage's wall-clock ``opened_at`` on our monotonic clock.

        A storage that is open without an ``opened_at`` is treated as opened long ago, so the
        next call is a trial (pybreaker does the same).
        """
        now = self._clock()
        if opened_at is None:
            return now - self._reset_timeout
        return now - (self._wall() - opened_at.timestamp())

    def _drain(self) -> None:
        """Deliver queued state events, in order, from one thread at a time.

        Whoever holds the notify lock delivers every event queued meanwhile, and checks the
        queue again after releasing it, so no event is stranded. A listener that moves the
        breaker itself only queues its event; it is delivered after the current one.
        """
        events = self._events
        while events:
            if not self._notify_lock.acquire(blocking=False):
                return
            try:
                while events:
                    old, new = events.popleft()
                    self._notify_state(old, new)
            finally:
                self._notify_lock.release()

    def _notify_state(self, old: Any, new: Any) -> None:
        if old is ADOPTED:  # another process made this transition; it reports it
            self._adopting = True
            try:
                self._notify_state(*new)
            finally:
                self._adopting = False
            return
        method = "write_state_change" if old is _WRITE_EVENT else "state_change"
        args = (new,) if old is _WRITE_EVENT else (old, new)
        for listener in self._listeners:
            _dispatch(listener, method, self, *args)

    def _sync(self) -> None:
        """Host-shared breakers adopt other processes' transitions here; no-op otherwise."""

    @property
    def host_segment(self) -> str | None:
        """The host segment's path when the breaker is host-shared, else None."""
        return None

    # -- reporting -------------------------------------------------------------------------
    @property
    def success_count(self) -> int:
        """Successful calls since creation or the last ``reset()``."""
        return self._successes.value - self._offsets[0]

    @property
    def rejected_count(self) -> int:
        """Calls answered without touching Redis (circuit open or trial slots taken), since
        creation or the last ``reset()``."""
        return self._rejections.value - self._offsets[1]

    @property
    def success_total(self) -> int:
        """Successful calls since creation; never decreases (for metrics)."""
        return self._successes.value

    @property
    def rejected_total(self) -> int:
        """Rejected calls since creation; never decreases (for metrics)."""
        return self._rejections.value

    @property
    def failure_total(self) -> int:
        """Failures recorded since creation, not windowed; never decreases (for metrics)."""
        return self._failure_total

    def seconds_until_retry(self) -> float | None:
        """While open, seconds until trial calls are admitted; otherwise None."""
        if self._code != OPEN:
            return None
        return max(0.0, self._opened_at + self._reset_timeout - self._clock())

    def stats(self) -> BreakerStats:
        """A consistent snapshot of the breaker's state and counters."""
        with self._gate:
            code = self._code
            failures = self._window_storage.counter
            last_failure = self._last_failure
            last_change = self._last_change
            write_state, write_cause, write_refusals = self._write_side.snapshot()
            view = None if self._window is None else self._window.view()
        wait = self.seconds_until_retry() if code == OPEN else None
        write_wait = self._write_side.seconds_until_retry()
        return BreakerStats(
            name=self.name,
            state=STATE_NAMES[code],
            failure_count=failures,
            success_count=self.success_count,
            rejected_count=self.rejected_count,
            last_failure_time=_utc(last_failure),
            last_state_change=_utc(last_change) or datetime.now(timezone.utc),
            next_retry_time=None if wait is None else _utc(self._wall() + wait),
            write_state=write_state,
            write_cause=write_cause,
            write_refusal_count=write_refusals,
            write_rejected_count=self._write_side.rejected_count,
            write_next_retry_time=None if write_wait is None else _utc(self._wall() + write_wait),
            bulkhead_in_flight=None if self._bulkhead is None else self._bulkhead.in_flight,
            bulkhead_rejected_count=0 if self._bulkhead is None else self._bulkhead.rejected_total,
            retries_denied_count=0 if self._budget is None else self._budget.denied_total,
            window_calls=None if view is None else view.calls,
            failure_rate=None if view is None else view.failure_rate,
            slow_call_rate=None if view is None else view.slow_call_rate,
            shared=self.is_host_shared,
            host_segment=self.host_segment,
            trial_count=self._trials_admitted,
        )


def _wants_host(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether ``Breaker(*args, **kwargs)`` is to be host-shared (config, env or storage)."""
    storage = kwargs.get("state_storage")
    if type(storage).__name__ == "HostStorage" and type(storage).__module__ == "redisguard._host":
        return True
    config = args[1] if len(args) > 1 else kwargs.get("config")
    if config is None:
        config = BreakerConfig.from_env()
    return bool(getattr(config, "shared", False))


def _without_traceback(exc: BaseException) -> BaseException:
    """A copy of ``exc`` (same class and args) that holds no traceback, cause or context.

    The original's frames would keep whatever the failed call touched -- the client, its
    pool and connections -- alive for as long as the breaker remembers the failure. asyncio's
    internal error from writing to a closed transport (Python 3.12+) is only recognisable by
    its traceback, so it is remembered as what it means: a connection the peer reset.
    """
    if closed_transport_error(exc):
        return ConnectionResetError(
            f"the peer closed the connection (asyncio transport: {type(exc).__name__})"
        )
    try:
        clone = type(exc).__new__(type(exc), *exc.args)
        clone.args = exc.args
        # Attributes __init__ set (redis-py's error_type, our operation/breaker...): repr()
        # and str() of some exceptions need them.
        clone.__dict__.update(exc.__dict__)
    except Exception:
        return exc
    return clone


def _code_of(state: str) -> int:
    try:
        return _CODES[state]
    except KeyError:
        raise ValueError(
            f"unknown breaker state {state!r}; expected one of {', '.join(STATE_NAMES)}"
        ) from None


def _dispatch(listener: Any, method: str, *args: Any, **kwargs: Any) -> None:
    """Call a listener hook; a listener that raises never breaks the guarded call."""
    try:
        hook = getattr(listener, method, None)
        if hook is not None:
            hook(*args, **kwargs)
    except Exception:
        logger.exception(
            "breaker listener %r failed in %s",
            listener,
            method,
            extra={"category": "circuit-breaker", "listener": repr(listener)},
        )


# -- the registry -----------------------------------------------------------------------------
_registry: dict[str, Breaker] = {}
_registry_lock = threading.Lock()
renew_lock_after_fork(__name__, "_registry_lock")
_default_listener_factories: list[Callable[[], pybreaker.CircuitBreakerListener]] = []


def get_breaker(
    name: str = "redis", config: BreakerConfig | None = None, *, redis_url: str | None = None
) -> Breaker:
    """Return the breaker called ``name``, creating it on first use.

    One breaker per dependency, shared by every operation that names it. A new breaker gets
    ``config``, or ``BreakerConfig.from_env()``, and the default listeners (logging and
    OpenTelemetry). ``redis_url`` (the Redis it guards) names the namespace of a new
    host-shared breaker (see :class:`Breaker`).

    Raises:
        ConfigError: ``config`` differs from the config the existing breaker was created with.
    """
    breaker = _registry.get(name)
    if breaker is None:
        with _registry_lock:
            breaker = _registry.get(name)
            if breaker is None:
                listeners = [factory() for factory in _default_listener_factories]
                breaker = Breaker(name, config, listeners=listeners, redis_url=redis_url)
                _registry[name] = breaker
                return breaker
    if config is not None and config != breaker.config:
        raise ConfigError(
            f"breaker {name!r} already exists with {breaker.config!r}; "
            f"cannot re-create it with {config!r}"
        )
    return breaker


def breakers() -> list[Breaker]:
    """Every breaker created through :func:`get_breaker`, sorted by name."""
    with _registry_lock:
        return sorted(_registry.values(), key=lambda b: b.name)


def forget_breaker(name: str) -> bool:
    """Remove the breaker called ``name`` from the registry; return whether it was there.

    Functions already decorated keep the breaker object they hold. Use it for breakers that
    describe something gone for good, e.g. a Cluster node replaced by a failover
    (:func:`redisguard.cluster.prune_node_breakers`).
    """
    with _registry_lock:
        return _registry.pop(name, None) is not None


def _clear_registry() -> None:
    """Forget every registered breaker (test isolation)."""
    with _registry_lock:
        _registry.clear()
