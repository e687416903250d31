"""Host-shared breakers: one breaker state for every worker process on a host.

A gunicorn, uvicorn or Celery fleet runs one breaker per worker; without sharing, each
worker rediscovers every outage alone (its own ``failure_threshold`` timed-out calls, its
own trial calls after the heal). :class:`HostBreaker` keeps the state in a
:class:`~redisguard._segment.HostSegment` that every process on the host maps:

* **failures** within the monitoring window are counted host-wide, so the breaker opens
  after ``failure_threshold`` failures *on the host*; a success anywhere clears the run (it
  takes the host lock only when there is a run to clear);
* **state** -- closed, open (when, and why), half-open -- is one byte every guarded call reads
  without a lock; ``reset_timeout`` runs on ``CLOCK_MONOTONIC``, which is one clock for
  every process on the host;
* **half-open trials** are limited host-wide to ``half_open_max_attempts``; a slot held by a
  process that died is reclaimed at once, and every slot expires after
  ``half_open_trial_timeout`` (the breaker's existing rule), so a crash mid-trial never
  holds the circuit half-open;
* **one recovery prober per host**: the ``connect()`` client's prober PINGs only while it
  holds the host's prober lease; the lease passes on when its holder dies or stops
  renewing it;
* **transitions are reported once per host**: the process that makes a transition sends it
  to its listeners as always; the others *adopt* it the next time they consult the state
  (their listeners still hear it, flagged, and the logging and OpenTelemetry listeners skip
  it). Per-worker call counters (successes, rejections, failures) stay per worker.

Still per process: the write side (``redisguard._sides``), failure-rate and slow-call
windows (``redisguard._window``), the bulkhead and the retry budget.

:class:`HostStorage` is the same segment as a ``pybreaker.CircuitBreakerStorage``: pass it
as ``state_storage=`` to a :class:`~redisguard.Breaker` (which then behaves as above) or to
a plain ``pybreaker.CircuitBreaker`` (which then only reads and writes it field by field).
"""

from __future__ import annotations

import os
import threading
import time
from datetime import datetime, timezone
from types import TracebackType
from typing import TYPE_CHECKING, Any

import pybreaker
from redis import exceptions as rx

from ._breaker import ADOPTED, CLOSED, HALF_OPEN, OPEN, STATE_NAMES, Breaker
from ._config import BreakerConfig, with_pybreaker_keywords
from ._errors import ConfigError, SlowCallsError
from ._fork import after_fork
from ._prober import ping_proves_recovery
from ._redact import redact_text
from ._segment import (
    CAUSE_KIND,
    GENERATION,
    LAST_CHANGE,
    OPENED_AT,
    PROBER_PID,
    PROBER_SEEN,
    SEQ,
    SLOW_OPENED,
    STATE,
    TRANSITIONS_BY,
    TRIAL_ADMITTED_AT,
    TRIAL_SUCCESSES,
    TRIALS,
    W_CAUSE,
    W_CAUSE_LEN,
    W_CAUSE_MAX,
    W_DELETE_GATE,
    W_GENERATION,
    W_OPENED_AT,
    W_SPARES,
    W_STATE,
    W_TEXT,
    W_TEXT_LEN,
    W_TEXT_MAX,
    W_TRIAL_ADMITTED_AT,
    W_TRIAL_SUCCESSES,
    W_TRIALS,
    W_WRITE_GATE,
    HostSegment,
    derive_namespace,
    fingerprint,
    pid_alive,
    segment_path,
)
from ._sides import SideGate, WriteSide
from ._storage import WindowStorage

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["HostBreaker", "HostStorage", "open_segment"]

# What opened the breaker, as one byte other processes can rebuild an ``opened_by`` from.
_NONE, _CONNECTION, _TIMEOUT, _LOADING, _BUSY, _SLOW, _OTHER = range(7)
#: A prober lease not renewed for this long passes on even if its holder still exists.
PROBER_LEASE = 5.0


def open_segment(
    name: str, config: BreakerConfig, *, redis_url: str | None = None, directory: str | None = None
) -> HostSegment:
    """The segment of breaker ``name`` under ``config.shared`` (True: the derived namespace)."""
    shared = config.shared
    namespace = derive_namespace(redis_url=redis_url) if shared is True else str(shared)
    return HostSegment(
        segment_path(name, namespace, directory),
        fingerprint(name, namespace, config),
        config.failure_threshold,
    )


class HostStorage(pybreaker.CircuitBreakerStorage):
    """A pybreaker storage kept in a host segment, shared by every process on the host.

    Args:
        name: The breaker's name.
        config: The breaker's settings; ``config.shared`` may be False here (True is
            assumed: the derived namespace) or a namespace.
        namespace: Overrides ``config.shared``'s namespace.
        directory: Where segments live (default ``$REDISGUARD_SHARED_DIR`` or ``/dev/shm``).

    Raises:
        ConfigError: see :class:`~redisguard._segment.HostSegment`.
    """

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        *,
        namespace: str | None = None,
        directory: str | None = None,
    ) -> None:
        super().__init__(name)
        config = config or BreakerConfig()
        shared: bool | str = namespace if namespace is not None else (config.shared or True)
        self.config = BreakerConfig(**{**_fields(config), "shared": shared})
        self.segment = open_segment(name, self.config, directory=directory)

    # pybreaker's storage interface; each call is one host transaction.
    @property
    def state(self) -> str:
        return STATE_NAMES[self.segment.u8(STATE)]

    @state.setter
    def state(self, state: str) -> None:
        code = STATE_NAMES.index(state)
        with _locked(self.segment):
            if self.segment.u8(STATE) != code:
                self.segment.set_u8(STATE, code)
                self.segment.set_u64(SEQ, self.segment.u64(SEQ) + 1)

    def increment_counter(self) -> None:
        with _locked(self.segment):
            self.segment.failures.append(_now())

    def reset_counter(self) -> None:
        with _locked(self.segment):
            self.segment.failures.clear()

    def increment_success_counter(self) -> None:
        with _locked(self.segment):
            self.segment.set_u32(TRIAL_SUCCESSES, self.segment.u32(TRIAL_SUCCESSES) + 1)

    def reset_success_counter(self) -> None:
        with _locked(self.segment):
            self.segment.set_u32(TRIAL_SUCCESSES, 0)

    @property
    def counter(self) -> int:
        return self.segment.failures.count(_now() - self.config.monitoring_window)

    @property
    def success_counter(self) -> int:
        return self.segment.u32(TRIAL_SUCCESSES)

    @property
    def opened_at(self) -> datetime | None:
        if self.segment.u8(STATE) != OPEN:
            return None
        ago = _now() - self.segment.f64(OPENED_AT)
        return datetime.fromtimestamp(_wall() - ago, timezone.utc)

    @opened_at.setter
    def opened_at(self, moment: datetime) -> None:
        ago = _wall() - moment.timestamp()
        with _locked(self.segment):
            self.segment.set_f64(OPENED_AT, _now() - ago)


class _locked:
    """``with _locked(segment):`` one host transaction (for :class:`HostStorage`)."""

    __slots__ = ("_segment",)

    def __init__(self, segment: HostSegment) -> None:
        self._segment = segment

    def __enter__(self) -> None:
        self._segment.lock()

    def __exit__(self, *exc: object) -> None:
        self._segment.unlock()


def _fields(config: BreakerConfig) -> dict[str, Any]:
    return {f: getattr(config, f) for f in config.__dataclass_fields__}


_now = time.monotonic
_wall = time.time


class HostWindowStorage(WindowStorage):
    """The breaker's failure window, kept in the segment's ring (under the host lock)."""

    def __init__(self, segment: HostSegment, window: float, clock: Callable[[], float]) -> None:
        super().__init__(window, clock)
        self._segment = segment
        # The guard's happy path tests it for truth: one byte of the segment, read live.
        self._failures = segment.failing  # type: ignore[assignment]

    def increment_counter(self) -> None:
        self._segment.failures.append(self._clock())

    def reset_counter(self) -> None:
        self._segment.failures.clear()

    def seed(self, failures: int) -> None:  # pragma: no cover - host breakers never seed
        raise AssertionError("a host breaker's failures are the segment's")

    @property
    def counter(self) -> int:
        return self._segment.failures.count(self._clock() - self._window)


def _host_field(offset: int, kind: str, *, side: bool = False) -> Any:
    """A breaker (or, ``side``: write-side) attribute kept in the segment; written only once
    the breaker is attached (``Breaker.__init__`` assigns every field its start value)."""
    get = getattr(HostSegment, kind)
    put = getattr(HostSegment, f"set_{kind}")

    def breaker_of(self: Any) -> HostBreaker:
        return self.breaker if side else self  # type: ignore[no-any-return]

    def fget(self: Any) -> Any:
        return get(breaker_of(self)._seg, offset)

    def fset(self: Any, value: Any) -> None:
        breaker = breaker_of(self)
        if breaker._attached:
            put(breaker._seg, offset, value)

    return property(fget, fset)


class HostSideGate(SideGate):
    """A write or delete gate of a host breaker: its code is a byte of the segment, kept at
    max(main side, write side) by whichever process moves either side; the guard's happy
    path reads it through ``_host_head`` (a ctypes view) as cheaply as an attribute."""

    __slots__ = ("_at", "_host_head")

    def __init__(self, side: WriteSide, deletes: bool) -> None:
        seg: HostSegment = side.breaker._seg  # type: ignore[attr-defined]
        self._at = W_DELETE_GATE if deletes else W_WRITE_GATE
        self._host_head = seg.delete_head if deletes else seg.write_head
        super().__init__(side, deletes)

    @property
    def _code(self) -> int:
        return int(self._host_head._code)

    @_code.setter
    def _code(self, value: int) -> None:
        if self.breaker._attached:  # type: ignore[attr-defined]
            self._host_head._code = value


class HostWriteSide(WriteSide):
    """The write side of a host breaker: opened by write refusals anywhere on the host (an
    OOM or a READONLY replica is the server's, not one worker's), blocking every worker's
    write guards. A run of refusals is cleared by a write success in the refusing worker;
    a dead worker's write trial slot expires after ``half_open_trial_timeout``."""

    breaker: HostBreaker
    _gate_class = HostSideGate

    _code = _host_field(W_STATE, "u8", side=True)
    _opened_at = _host_field(W_OPENED_AT, "f64", side=True)
    _generation = _host_field(W_GENERATION, "u64", side=True)
    _trials = _host_field(W_TRIALS, "u32", side=True)
    _trial_admitted_at = _host_field(W_TRIAL_ADMITTED_AT, "f64", side=True)
    _trial_successes = _host_field(W_TRIAL_SUCCESSES, "u32", side=True)

    @property
    def _spares(self) -> bool:
        return bool(self.breaker._seg.u8(W_SPARES))

    @_spares.setter
    def _spares(self, value: bool) -> None:
        if self.breaker._attached:
            self.breaker._seg.set_u8(W_SPARES, 1 if value else 0)

    @property
    def _cause(self) -> str | None:
        return self.breaker._seg.text(W_CAUSE_LEN, W_CAUSE, W_CAUSE_MAX) or None

    @_cause.setter
    def _cause(self, value: str | None) -> None:
        if self.breaker._attached:
            self.breaker._seg.set_text(value or "", W_CAUSE_LEN, W_CAUSE, W_CAUSE_MAX)

    @property
    def _opened_by(self) -> BaseException | None:
        text = self.breaker._seg.text(W_TEXT_LEN, W_TEXT, W_TEXT_MAX)
        if not text:
            return None
        local = self.__dict__.get("_local_cause")
        if local is not None and local[0] == text:
            return local[1]  # type: ignore[no-any-return]
        return _rebuild_refusal(self._cause, text)

    @_opened_by.setter
    def _opened_by(self, cause: BaseException | None) -> None:
        if not self.breaker._attached:
            return
        seg = self.breaker._seg
        text = "" if cause is None else redact_text(str(cause))
        seg.set_text(text, W_TEXT_LEN, W_TEXT, W_TEXT_MAX)
        text = seg.text(W_TEXT_LEN, W_TEXT, W_TEXT_MAX)
        self.__dict__["_local_cause"] = None if cause is None else (text, cause)

    @property
    def _run(self) -> Any:
        return self.breaker._seg.refusals

    @_run.setter
    def _run(self, value: Any) -> None:
        """``WriteSide.__init__`` sets a deque; the run is the segment's ring."""


def _rebuild_refusal(cause: str | None, text: str) -> BaseException:
    """A write side's ``opened_by`` in another process: the refusal's class, from its word."""
    kinds: dict[str, type[BaseException]] = {
        "OOM": getattr(rx, "OutOfMemoryError", rx.ResponseError),
        "READONLY": rx.ReadOnlyError,
    }
    return kinds.get(cause or "", rx.ResponseError)(text)


class HostGate:
    """A host breaker's gate: its thread lock, then the host lock (one transaction).

    Entering adopts whatever other processes changed since this process last looked.
    """

    __slots__ = ("_breaker", "_thread")

    def __init__(self, breaker: HostBreaker) -> None:
        self._breaker = breaker
        self._thread = threading.Lock()

    def __enter__(self) -> None:
        self._thread.acquire()
        try:
            self._breaker._seg.lock()
        except BaseException:
            self._thread.release()
            raise
        try:
            self._breaker._adopt()
        except BaseException:
            self.__exit__(None, None, None)
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._breaker._seg.unlock()
        finally:
            self._thread.release()


class HostBreaker(Breaker):
    """A :class:`~redisguard.Breaker` whose state every process on the host shares.

    Built by ``Breaker(...)`` itself when the config says ``shared`` (or the environment
    does, through ``REDISGUARD_SHARED_BREAKERS``) or ``state_storage`` is a
    :class:`HostStorage`; see the module docstring for the semantics.
    """

    is_host_shared = True
    _write_side_class = HostWriteSide

    _code = _host_field(STATE, "u8")
    _opened_at = _host_field(OPENED_AT, "f64")
    _generation = _host_field(GENERATION, "u64")
    _trial_admitted_at = _host_field(TRIAL_ADMITTED_AT, "f64")
    _trial_successes = _host_field(TRIAL_SUCCESSES, "u32")
    _last_change = _host_field(LAST_CHANGE, "f64")

    def __init__(
        self,
        name: str | None = None,
        config: BreakerConfig | None = None,
        *,
        fail_max: int | None = None,
        reset_timeout: float | None = None,
        success_threshold: int | None = None,
        state_storage: pybreaker.CircuitBreakerStorage | None = None,
        redis_url: str | None = None,
        **kwargs: Any,
    ) -> None:
        config = with_pybreaker_keywords(
            config,
            fail_max=fail_max,
            reset_timeout=reset_timeout,
            success_threshold=success_threshold,
        )
        name = "redis" if name is None else name
        if isinstance(state_storage, HostStorage):
            if _fields(state_storage.config) | {"shared": 0} != _fields(config) | {"shared": 0}:
                raise ConfigError(
                    f"breaker {name!r}: its HostStorage was made with {state_storage.config!r}, "
                    f"which differs from the breaker's {config!r}"
                )
            segment = state_storage.segment
            config = state_storage.config
        elif state_storage is not None:
            raise ConfigError(
                f"breaker {name!r} is host-shared (config.shared={config.shared!r}); it keeps "
                "its state in its host segment and takes no other state_storage"
            )
        else:
            if not isinstance(name, str) or not name:
                raise ConfigError(f"breaker name must be a non-empty string, got {name!r}")
            segment = open_segment(name, config, redis_url=redis_url)
        self._seg: HostSegment = segment
        self._attached = False
        self._seen = -1
        self._cause_local: tuple[int, str, BaseException] | None = None
        self._adopting = False
        super().__init__(name, config, **kwargs)
        self._window_storage = HostWindowStorage(segment, config.monitoring_window, self._clock)
        self._state_storage = self._window_storage
        self._gate = HostGate(self)  # type: ignore[assignment]
        self._state = self._create_new_state(STATE_NAMES[self._code], notify=False)
        self._seen = segment.u64(SEQ)
        self._attached = True
        after_fork(self, HostBreaker._host_after_fork)
        if segment.f64(LAST_CHANGE) == 0.0:  # a new segment
            with self._gate:
                if segment.f64(LAST_CHANGE) == 0.0:
                    segment.set_f64(LAST_CHANGE, self._wall())
        with self._gate:  # the gate bytes from the host's state now
            self._write_side._refresh()

    # -- fields that are not plain numbers ---------------------------------------------------
    @property
    def _trials(self) -> int:
        return self._seg.u32(TRIALS)

    @_trials.setter
    def _trials(self, value: int) -> None:
        if not self._attached:
            return
        seg = self._seg
        held = seg.u32(TRIALS)
        seg.set_u32(TRIALS, value)
        if value == 0:
            seg.clear_holds()
        elif value != held:
            seg.hold(os.getpid(), value - held)

    @property
    def _slow_opened(self) -> bool:
        return bool(self._seg.u8(SLOW_OPENED))

    @_slow_opened.setter
    def _slow_opened(self, value: bool) -> None:
        if self._attached:
            self._seg.set_u8(SLOW_OPENED, 1 if value else 0)

    @property
    def _opened_by(self) -> BaseException | None:
        seg = self._seg
        kind = seg.u8(CAUSE_KIND)
        if kind == _NONE:
            return None
        text = seg.text()
        local = self._cause_local
        if local is not None and local[0] == kind and local[1] == text:
            return local[2]
        return _rebuild(kind, text)

    @_opened_by.setter
    def _opened_by(self, cause: BaseException | None) -> None:
        if not self._attached:
            return
        kind, text = _encode(cause)
        self._seg.set_u8(CAUSE_KIND, kind)
        self._seg.set_text(text)
        self._cause_local = None if cause is None else (kind, self._seg.text(), cause)

    @property
    def state(self) -> Any:
        """pybreaker's state object, after adopting what other processes changed."""
        self._sync()
        return self._state

    @state.setter
    def state(self, state_str: str) -> None:
        Breaker.state.fset(self, state_str)  # type: ignore[attr-defined]

    # -- adoption ------------------------------------------------------------------------------
    def _adopt(self) -> None:
        """Take over the transitions other processes made (under the gate)."""
        if not self._attached:
            return
        seq = self._seg.u64(SEQ)
        if seq == self._seen:
            return
        self._seen = seq
        code = self._code
        old = self._state
        if old.name != STATE_NAMES[code]:
            self._state = self._create_new_state(STATE_NAMES[code], prev_state=old, notify=False)
            self._events.append((ADOPTED, (old, self._state)))
            if code == CLOSED and self._window is not None:
                self._window.reset()
        self._write_side._refresh()

    def _sync(self) -> None:
        """Adopt other processes' transitions now if there are any (outside the gate)."""
        if self._seen != self._seg.u64(SEQ):
            with self._gate:
                pass
            if self._events:
                self._drain()

    def _set_state(self, code: int, **kwargs: Any) -> bool:
        moved = super()._set_state(code, **kwargs)
        if moved:
            seg = self._seg
            seq = seg.u64(SEQ) + 1
            seg.set_u64(SEQ, seq)
            seg.set_u32(TRANSITIONS_BY, os.getpid())
            self._seen = seq
        return moved

    # -- admission -------------------------------------------------------------------------
    def _admit(self) -> int:
        if self._seen != self._seg.u64(SEQ):
            self._sync()
        return super()._admit()

    def _admit_locked(self) -> int:
        seg = self._seg
        if seg.u8(STATE) == HALF_OPEN and seg.u32(TRIALS) >= self.config.half_open_max_attempts:
            freed = seg.reclaim_dead()
            if freed:  # slots of crashed processes
                seg.set_u32(TRIALS, max(0, seg.u32(TRIALS) - freed))
        return super()._admit_locked()

    # -- the prober lease --------------------------------------------------------------------
    def claim_prober(self, now: float | None = None) -> bool:
        """Whether this process may PING for the host now (taking or renewing the lease)."""
        now = self._clock() if now is None else now
        me = os.getpid()
        with self._gate:
            seg = self._seg
            holder, seen = seg.u32(PROBER_PID), seg.f64(PROBER_SEEN)
            elected = holder in (0, me) or not pid_alive(holder) or now - seen > PROBER_LEASE
            if elected:
                seg.set_u32(PROBER_PID, me)
                seg.set_f64(PROBER_SEEN, now)
        if self._events:
            self._drain()
        return elected

    def release_prober(self) -> None:
        """Give the prober lease up (this process stopped probing)."""
        with self._gate:
            if self._seg.u32(PROBER_PID) == os.getpid():
                self._seg.set_u32(PROBER_PID, 0)
        if self._events:
            self._drain()

    @property
    def _host_head(self) -> Any:
        """What the guard reads ``_code`` from on the happy path: the segment's state byte."""
        return self._seg.head

    @property
    def host_segment(self) -> str:
        """The path of the segment this breaker shares."""
        return str(self._seg.path)

    def _host_after_fork(self) -> None:
        """In a forked child (after ``Breaker._after_fork``): its own open file description,
        so that the host lock excludes the parent, and a new gate over it."""
        self._seg.after_fork()
        self._gate = HostGate(self)  # type: ignore[assignment]


def _encode(cause: BaseException | None) -> tuple[int, str]:
    """What opened the breaker, as (kind, redacted text) other processes can rebuild."""
    if cause is None:
        return _NONE, ""
    text = redact_text(str(cause))
    if isinstance(cause, SlowCallsError):
        return _SLOW, text
    if not ping_proves_recovery(cause):
        return _OTHER, redact_text(f"{type(cause).__name__}: {cause}")
    if isinstance(cause, rx.BusyLoadingError):
        return _LOADING, text
    if isinstance(cause, rx.ResponseError):
        return _BUSY, text
    if isinstance(cause, (rx.TimeoutError, TimeoutError)):
        return _TIMEOUT, text
    return _CONNECTION, text


def _rebuild(kind: int, text: str) -> BaseException:
    """An ``opened_by`` of the same family (an answered PING proves it healed, or not)."""
    if kind == _SLOW:
        return SlowCallsError(text, rate=0.0, threshold=0.0, calls=0, slow_call_duration=0.0)
    if kind == _LOADING:
        return rx.BusyLoadingError(text)
    if kind == _BUSY:
        return rx.ResponseError(text)
    if kind == _TIMEOUT:
        return rx.TimeoutError(text)
    if kind == _CONNECTION:
        return rx.ConnectionError(text)
    return rx.RedisError(text)
