"""The circuit breaker: pybreaker's state machine and listeners, without its lock around I/O.

pybreaker's ``CircuitBreaker.call()`` holds an RLock across the wrapped call (8 threads doing
0.1 s of I/O take 0.8 s) and has no asyncio support. :class:`Breaker` keeps pybreaker's public
surface -- ``current_state``, ``state``, ``open()``/``half_open()``/``close()``, listeners,
``fail_counter``, ``call()`` -- and drives it with an *admit, then record* protocol:

1. ``_admit()`` decides, under a short lock that is never held across I/O, whether a call may
   touch Redis: yes when closed (no lock at all), no while open and ``reset_timeout`` has not
   elapsed on a monotonic clock, and at most ``half_open_max_attempts`` concurrent trial
   calls while half-open.
2. The caller does its I/O with no lock held.
3. ``_on_success()`` / ``_on_failure()`` / ``_on_neutral()`` record the outcome and move the
   state machine; listeners are notified after the lock is released.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

import pybreaker

from ._config import BreakerConfig
from ._errors import CircuitOpenError, ConfigError
from ._tally import Tally, TallyGroup

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

_BASE_LISTENER = pybreaker.CircuitBreakerListener


def _overrides(listener: object, method: str) -> bool:
    """Whether a listener implements ``method`` itself rather than inheriting the no-op."""
    if not isinstance(listener, _BASE_LISTENER):
        return hasattr(listener, method)
    return getattr(type(listener), method, None) is not getattr(_BASE_LISTENER, method)


def _utc(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc)


class _WindowStorage(pybreaker.CircuitMemoryStorage):
    """pybreaker storage whose failure counter only counts failures inside the window."""

    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        super().__init__(pybreaker.STATE_CLOSED)
        self._window = window
        self._clock = clock
        self._failures: deque[float] = deque()

    def increment_counter(self) -> None:
        self._failures.append(self._clock())

    def reset_counter(self) -> None:
        self._failures.clear()

    @property
    def counter(self) -> int:
        horizon = self._clock() - self._window
        failures = self._failures
        while failures and failures[0] <= horizon:
            failures.popleft()
        return len(failures)


@dataclass(frozen=True)
class BreakerStats:
    """A snapshot of one breaker, as the design document's ``getStats()`` returns it.

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
    """

    name: str
    state: str
    failure_count: int
    success_count: int
    rejected_count: int
    last_failure_time: datetime | None
    last_state_change: datetime
    next_retry_time: datetime | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (ISO 8601 timestamps)."""
        out: dict[str, Any] = {}
        for key, value in self.__dict__.items():
            out[key] = value.isoformat() if isinstance(value, datetime) else value
        return out


class Breaker(pybreaker.CircuitBreaker):
    """A ``pybreaker.CircuitBreaker`` that never holds a lock across the guarded call.

    It adds a monitoring window (failures older than it do not count), a limit on concurrent
    half-open trial calls, a monotonic clock, asyncio support (:meth:`acall`) and
    :meth:`stats`. pybreaker listeners work unchanged; ``state_change`` fires only for real
    transitions, and ``before_call``/``success`` are only dispatched when some listener
    implements them, so the happy path stays cheap.

    Args:
        name: The dependency's name; breakers are shared by name through :func:`get_breaker`.
        config: Thresholds and durations; ``BreakerConfig.from_env()`` when omitted.
        listeners: pybreaker listeners to attach.
        clock: A monotonic clock in seconds (injectable for tests).
        wall_clock: Seconds since the epoch, used only for the timestamps in :meth:`stats`.
    """

    def __init__(
        self,
        name: str = "redis",
        config: BreakerConfig | None = None,
        *,
        listeners: Sequence[pybreaker.CircuitBreakerListener] = (),
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ConfigError(f"breaker name must be a non-empty string, got {name!r}")
        config = BreakerConfig.from_env() if config is None else config
        self.config = config
        self._clock = clock
        self._wall = wall_clock
        self._window_storage = _WindowStorage(config.monitoring_window, clock)
        self._code = CLOSED
        super().__init__(
            fail_max=config.failure_threshold,
            reset_timeout=config.reset_timeout,
            success_threshold=config.success_threshold,
            state_storage=self._window_storage,
            listeners=list(listeners),
            name=name,
        )
        self._gate = threading.Lock()  # guards the fields below; never held across I/O
        self._opened_at = 0.0
        self._generation = 0
        self._trials = 0
        self._trial_successes = 0
        self._failure_total = 0
        self._last_failure: float | None = None
        self._last_change = wall_clock()
        # Monotonic totals (metrics read them); reset() only moves the offsets stats() use.
        # Guards count their successes in their own tally, attached to this group.
        self._successes = TallyGroup()
        self._direct_successes = self._successes.new()
        self._rejections = Tally()
        self._offsets = (0, 0, 0)
        self._wants_call_events = False
        self._refresh_listener_flags()

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
        """0 closed, 1 half-open, 2 open (the design document's gauge encoding)."""
        return self._code

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
            self._window_storage.reset_counter()
            self._offsets = (self._successes.value, self._rejections.value, self._failure_total)
            self._last_failure = None
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

    def call(self, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Call ``func`` through the breaker, holding no lock while it runs.

        Raises:
            CircuitOpenError: the circuit is open (it is also a pybreaker
                ``CircuitBreakerError``), or this call's failure opened it.
        """
        ticket = self._admit()
        if ticket == REJECT:
            raise self._open_error()
        self._before_call(func, args, kwargs)
        try:
            result = func(*args, **kwargs)
        except BaseException as exc:
            self._record_exception(ticket, exc)
            raise
        self._on_success(ticket)
        return result

    async def acall(self, func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Await ``func(*args, **kwargs)`` through the breaker (asyncio twin of :meth:`call`)."""
        ticket = self._admit()
        if ticket == REJECT:
            raise self._open_error()
        self._before_call(func, args, kwargs)
        try:
            result = await func(*args, **kwargs)
        except BaseException as exc:
            self._record_exception(ticket, exc)
            raise
        self._on_success(ticket)
        return result

    @contextlib.contextmanager
    def calling(self) -> Iterator[None]:
        """``with breaker.calling(): ...`` -- the block runs under the breaker's rules."""
        ticket = self._admit()
        if ticket == REJECT:
            raise self._open_error()
        try:
            yield
        except BaseException as exc:
            self._record_exception(ticket, exc)
            raise
        self._on_success(ticket)

    def call_async(self, func: Any, *args: Any, **kwargs: Any) -> Any:
        """pybreaker's Tornado entry point is not supported; use :meth:`acall`."""
        raise NotImplementedError("Breaker.call_async (Tornado) is not supported; use acall()")

    def _record_exception(self, ticket: int, exc: BaseException) -> None:
        """pybreaker semantics for direct ``call()``: excluded and BaseExceptions are neutral."""
        if isinstance(exc, Exception) and self.is_system_error(exc):
            if self._on_failure(ticket, exc) and self._throw_new_error_on_trip:
                raise CircuitOpenError(
                    f"circuit breaker {self.name!r} opened by this failure: "
                    f"{type(exc).__name__}",
                    operation="",
                    breaker=self.name,
                    attempts=1,
                ) from exc
        else:
            self._on_neutral(ticket)

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
        changed = None
        with self._gate:
            code = self._code
            if code == OPEN:
                if self._clock() < self._opened_at + self._reset_timeout:
                    ticket = REJECT
                else:
                    changed = self._set_state(HALF_OPEN)
                    code = HALF_OPEN
            if code == HALF_OPEN:
                if self._trials >= self.config.half_open_max_attempts:
                    ticket = REJECT
                else:
                    self._trials += 1
                    ticket = self._generation
            elif code == CLOSED:
                ticket = NORMAL
        if ticket == REJECT:
            self._rejections.add()
        if changed is not None:
            self._notify_state(*changed)
        return ticket

    def _before_call(self, func: Any, args: Any, kwargs: Any) -> None:
        if self._wants_call_events:
            for listener in self._listeners:
                _dispatch(listener, "before_call", self, func, *args, **kwargs)

    def _on_success(self, ticket: int, count: bool = True) -> None:
        """Record a success (``count=False``: the caller counts it in an attached tally)."""
        if count:
            self._direct_successes.add()
        changed = None
        if ticket == NORMAL:
            if self._window_storage._failures:
                with self._gate:
                    self._window_storage.reset_counter()
        else:
            with self._gate:
                if ticket == self._generation and self._code == HALF_OPEN:
                    self._trials -= 1
                    self._trial_successes += 1
                    if self._trial_successes >= self._success_threshold:
                        changed = self._set_state(CLOSED)
                elif self._code == CLOSED:
                    # A late trial (its circuit closed meanwhile) still proves Redis answers.
                    self._window_storage.reset_counter()
        if self._wants_call_events:
            for listener in self._listeners:
                _dispatch(listener, "success", self)
        if changed is not None:
            self._notify_state(*changed)

    def _on_failure(self, ticket: int, exc: BaseException) -> bool:
        """Record a failure; return True if it opened the circuit."""
        changed = None
        with self._gate:
            self._window_storage.increment_counter()
            self._failure_total += 1
            self._last_failure = self._wall()
            live_trial = ticket > 0 and ticket == self._generation and self._code == HALF_OPEN
            if live_trial:
                self._trials -= 1
                changed = self._set_state(OPEN)
            elif (
                self._code == CLOSED
                and self._window_storage.counter >= self._fail_max
            ):
                changed = self._set_state(OPEN)
        for listener in self._listeners:
            _dispatch(listener, "failure", self, exc)
        if changed is not None:
            self._notify_state(*changed)
        return changed is not None

    def _on_neutral(self, ticket: int) -> None:
        """An outcome that says nothing about Redis (cancellation, a data error)."""
        if ticket > 0:
            with self._gate:
                if ticket == self._generation and self._code == HALF_OPEN:
                    self._trials -= 1

    # -- state transitions ----------------------------------------------------------------
    def _move_to(self, code: int) -> None:
        with self._gate:
            changed = self._set_state(code)
        if changed is not None:
            self._notify_state(*changed)

    def _set_state(self, code: int) -> tuple[Any, Any] | None:
        """Switch state under the gate; return (old, new) pybreaker states to notify, or None."""
        if code == self._code:
            if code == OPEN:
                self._opened_at = self._clock()  # re-opening restarts the timeout
            return None
        old = self._state
        name = STATE_NAMES[code]
        self._code = code
        self._last_change = self._wall()
        storage = self._window_storage
        storage.state = name
        if code == OPEN:
            self._opened_at = self._clock()
            storage.opened_at = datetime.now(timezone.utc)
        elif code == HALF_OPEN:
            self._generation += 1
            self._trials = 0
            self._trial_successes = 0
        else:
            storage.reset_counter()
        storage.reset_success_counter()
        self._state = self._create_new_state(name, prev_state=old, notify=False)
        return old, self._state

    def _notify_state(self, old: Any, new: Any) -> None:
        for listener in self._listeners:
            _dispatch(listener, "state_change", self, old, new)

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
        wait = self.seconds_until_retry() if code == OPEN else None
        return BreakerStats(
            name=self.name,
            state=STATE_NAMES[code],
            failure_count=failures,
            success_count=self.success_count,
            rejected_count=self.rejected_count,
            last_failure_time=_utc(last_failure),
            last_state_change=_utc(last_change) or datetime.now(timezone.utc),
            next_retry_time=None if wait is None else _utc(self._wall() + wait),
        )


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
_default_listener_factories: list[Callable[[], pybreaker.CircuitBreakerListener]] = []


def get_breaker(name: str = "redis", config: BreakerConfig | None = None) -> Breaker:
    """Return the breaker called ``name``, creating it on first use.

    One breaker per dependency, shared by every operation that names it. A new breaker gets
    ``config``, or ``BreakerConfig.from_env()``, and the default listeners (logging and
    OpenTelemetry).

    Raises:
        ConfigError: ``config`` differs from the config the existing breaker was created with.
    """
    breaker = _registry.get(name)
    if breaker is None:
        with _registry_lock:
            breaker = _registry.get(name)
            if breaker is None:
                listeners = [factory() for factory in _default_listener_factories]
                breaker = Breaker(name, config, listeners=listeners)
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
