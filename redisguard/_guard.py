"""``@redis_guarded``: breaker + retry + fallback around any sync or async function.

The happy path is: read the breaker state (no lock), call the function, bump a counter.
Only after a first failure does the tenacity machinery start, and only for errors that mean
"Redis is unavailable". The policy (classify, record, stop, give up) lives in :class:`_Guard`
methods that do no I/O; the sync and async shells only differ in ``await``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import inspect
import logging
import math
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, NoReturn, ParamSpec, Protocol, TypeVar, overload

import tenacity
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from . import _canary, _chaos
from ._breaker import CLOSED, NORMAL, OPEN, REJECT, Breaker, get_breaker
from ._bulkhead import Bulkhead
from ._classify import Classifier, ErrorKind, classify_error, not_applied
from ._compat import wait_exponential_jitter
from ._config import RetryPolicy
from ._errors import BulkheadFullError, CircuitOpenError, ConfigError, RedisUnavailableError
from ._observe import OperationStats, operation_stats
from ._redact import redact_text
from ._sides import Access, SideGate, check_access
from ._telemetry import (
    GuardSpan,
    Telemetry,
    _qualname,
    begin_traced,
    end_traced,
    record_propagated,
    record_rejected,
    record_short_circuit,
    start_degraded,
    trace_success_default,
)
from ._window import CallWindow

__all__ = ["DEFAULT_RETRY", "Failure", "current_failure", "redis_guarded"]

P = ParamSpec("P")
R = TypeVar("R")
F = TypeVar("F")
F_co = TypeVar("F_co", covariant=True)
BreakerSelector = Callable[..., Breaker]
"""Chooses the breaker for one call from the guarded function's arguments."""

logger = logging.getLogger("redisguard")
DEFAULT_RETRY = RetryPolicy()


class _Unset:
    def __repr__(self) -> str:
        return "<no fallback>"


_NO_FALLBACK: Any = _Unset()
_DEFAULT: Any = object()  # "use DEFAULT_RETRY" (distinct from retry=None: a single attempt)


@dataclass(frozen=True)
class Failure:
    """Why a fallback is being used; read it with :func:`current_failure` inside a fallback.

    Attributes:
        operation: The guarded operation's name.
        breaker: The breaker's name.
        exception: The last error from Redis, or None when no attempt was made (the
            circuit was open, or the bulkhead full).
        kind: How that error was classified (None when the circuit was open;
            ``ErrorKind.REJECTED`` when the bulkhead turned the call away).
        circuit_open: True when the call was answered without touching Redis because the
            circuit was open.
        attempts: Attempts that reached the function.
        may_have_run: The last error leaves open whether Redis ran the command (a timeout
            or a reset while waiting for the reply); a guard not declared idempotent does
            not retry such an error.
        side: ``"write"`` when the breaker's write side answered the call (it is open after
            refusals of writes: OOM, READONLY, MISCONF) or the error was such a refusal;
            ``"main"`` otherwise.
        retry_denied: The breaker's retry budget was spent, so the call fell back instead
            of making its next attempt.
        canary: The fallback runs as the guard's canary (``redis_guarded(canary=...)``):
            Redis answered, and the fallback's answer is only compared with it.
    """

    operation: str
    breaker: str
    exception: BaseException | None
    kind: ErrorKind | None
    circuit_open: bool
    attempts: int
    may_have_run: bool = False
    side: str = "main"
    retry_denied: bool = False
    canary: bool = False


_current_failure: ContextVar[Failure | None] = ContextVar("redisguard_failure", default=None)


def current_failure() -> Failure | None:
    """Inside a fallback: why it was called. Outside one: None.

    Example::

        def cached_profile(user_id):
            failure = redisguard.current_failure()
            log.info("serving stale profile (circuit open: %s)", failure.circuit_open)
            return LOCAL_CACHE.get(user_id)
    """
    return _current_failure.get()


class _ShortCircuit(Exception):
    """A retry found the circuit open (or the half-open slots taken): stop, no I/O."""


class _CallState:
    """The bookkeeping of one degraded call; its methods are tenacity's stop/retry hooks."""

    __slots__ = (
        "attempts",
        "breaker",
        "denied",
        "idempotent",
        "kind",
        "last",
        "pending",
        "policy",
        "slowest",
        "started",
    )

    def __init__(
        self,
        breaker: Breaker,
        policy: RetryPolicy,
        started: float,
        exc: BaseException,
        kind: ErrorKind,
        idempotent: bool,
    ) -> None:
        self.breaker = breaker
        self.idempotent = idempotent
        self.policy = policy
        self.started = started
        self.slowest = time.perf_counter() - started
        self.last: BaseException = exc
        self.kind: ErrorKind = kind
        self.pending: BaseException | None = exc  # replayed as tenacity's attempt 1 (no I/O)
        self.attempts = 1
        self.denied = False  # the retry budget refused the next attempt

    def remaining(self) -> float:
        return self.policy.deadline - (time.perf_counter() - self.started)

    def retry(self, rs: tenacity.RetryCallState) -> bool:
        """Retry a TRANSIENT failure; unless idempotent, only one that proves nothing ran."""
        outcome = rs.outcome
        return (
            outcome is not None
            and outcome.failed
            and outcome.exception() is self.last
            and self.kind is ErrorKind.TRANSIENT
            and (self.idempotent or not_applied(self.last))
        )

    def stop(self, rs: tenacity.RetryCallState) -> bool:
        if rs.attempt_number >= self.policy.attempts or self.breaker.state_code == OPEN:
            return True
        # Do not start an attempt that, judging by the slowest one so far, would overrun.
        sleep = rs.upcoming_sleep or 0.0
        if sleep + self.slowest > self.remaining():
            return True
        budget = self.breaker._budget  # asked last: a token is spent only on a real retry
        if budget is not None and not budget.withdraw():
            self.denied = True
            return True
        return False


class _Guard:
    """Everything the wrappers share: configuration and the I/O-free policy steps."""

    def __init__(
        self,
        name: str,
        fallback: Any,
        breaker: Breaker,
        retry: RetryPolicy | None,
        classify: Classifier,
        telemetry: Telemetry,
        idempotent: bool = False,
        access: Access = "both",
    ) -> None:
        self.name = name
        self.idempotent = idempotent
        self.access = access
        # What admits calls and takes their outcomes: the breaker itself for a read, else a
        # gate that also consults the breaker's write side (redisguard._sides).
        self.side: Breaker | SideGate = breaker.write_side.gate(access) or breaker
        self.fallback = fallback
        self.breaker = breaker
        self.policy = retry
        self.classify = classify
        self.telemetry = telemetry
        self.trace_success = False
        self.span_name = f"redisguard {name}"
        # Attributes of short-circuit spans, by (state, has-error): built once, copied by the SDK.
        self.span_attributes: dict[tuple[int, bool], dict[str, Any]] = {}
        self.stats: OperationStats = operation_stats(name, breaker)
        # One tally per guard, part of both the operation's and the breaker's totals.
        self.success = breaker._successes.attach(self.stats.success.new())
        if access in ("write", "both"):  # a write success ends a run of write refusals
            breaker.write_side.successes.attach(self.success)
        # Every short-circuited call of this guard looks the same: describe it once.
        self.open_failure = Failure(
            operation=name,
            breaker=breaker.name,
            exception=None,
            kind=None,
            circuit_open=True,
            attempts=0,
        )
        self.write_open_failure = dataclasses.replace(self.open_failure, side="write")
        self.canary_failure = dataclasses.replace(
            self.open_failure, circuit_open=False, canary=True
        )
        # ... and so does every call the bulkhead turns away.
        self.full_failure = Failure(
            operation=name,
            breaker=breaker.name,
            exception=None,
            kind=ErrorKind.REJECTED,
            circuit_open=False,
            attempts=0,
        )
        self.call_fallback = callable(fallback)
        # Where chaos (redisguard._chaos) swaps the function for an injecting one: the
        # wrapper's closure cell of ``fn``, and the function it holds when chaos is off.
        self.breaker_name = breaker.name
        self.is_async = False
        self.fn: Callable[..., Any] = _unbuilt
        self.fn_cell: Any = None
        #: Called with True when chaos starts injecting into this guard and False when it
        #: stops (a caller that inlines this guard's happy path, ``redisguard._cache``, must
        #: then take the guard's own path, where the faults go in).
        self.chaos_hooks: list[Callable[[bool], None]] = []
        self._sync_template: tenacity.Retrying | None = None
        self._async_template: tenacity.AsyncRetrying | None = None
        if retry is not None and retry.attempts > 1:
            wait = _backoff(retry)
            self._sync_template = tenacity.Retrying(wait=wait, reraise=True)
            self._async_template = tenacity.AsyncRetrying(wait=wait, reraise=True)

    # -- policy steps (no I/O) ---------------------------------------------------------
    def record(self, ticket: int, exc: BaseException, kind: ErrorKind, attempt: int) -> None:
        """Tell the breaker about a failed attempt and log it."""
        tally = self.stats.failures.get(kind.value)
        if tally is not None:
            tally.add()
        if kind is ErrorKind.REJECTED:
            self.side._on_neutral(ticket)
        elif kind is ErrorKind.WRITE_REFUSED:
            self.side._on_write_refused(ticket, exc)
        else:
            self.side._on_failure(ticket, exc)
        misconfigured = kind is ErrorKind.MISCONFIGURED
        level = logging.ERROR if misconfigured else logging.WARNING
        if logger.isEnabledFor(level):
            logger.log(
                level,
                "Redis rejected the configuration (not retried): %s"
                if misconfigured
                else "Redis refused a write (not retried): %s"
                if kind is ErrorKind.WRITE_REFUSED
                else "Redis operation failed: %s",
                _describe(exc),
                extra={
                    "category": "config" if misconfigured else "redis",
                    "breaker": self.breaker.name,
                    "operation": self.name,
                    "state": self.breaker.current_state,
                    "error": _describe(exc),
                    "error_type": _qualname(exc),
                    "attempt": attempt,
                },
            )

    def misclassified(self, exc: BaseException) -> ErrorKind:
        """``classify`` raised: log it, and classify ``exc`` the default way instead.

        A broken classifier must neither leak a half-open trial slot nor change what the
        caller sees: a Redis outage still falls back, a data error still propagates.
        """
        logger.exception(
            "classify %r failed on %s; using redisguard.classify_error",
            self.classify,
            _qualname(exc),
            extra={"category": "config", "breaker": self.breaker.name, "operation": self.name},
        )
        return classify_error(exc)

    def excluded(self, ticket: int, exc: BaseException, started: float) -> bool:
        """Whether the breaker excludes ``exc`` (a business error): then it is a success.

        pybreaker semantics: an excluded exception resets the failure count and closes a
        half-open circuit. The caller re-raises ``exc`` unchanged.
        """
        if self.breaker.is_system_error(exc):
            return False
        self.side._on_success(ticket, True)
        self.stats.error.add()
        record_propagated(self, ticket, started, exc)
        return True

    def first_failure(self, ticket: int, exc: BaseException, started: float) -> ErrorKind | None:
        """Classify the first attempt's error: the kind to recover from, or None when the
        caller must re-raise ``exc`` unchanged (an error the guard does not handle, or one
        the breaker excludes)."""
        try:
            kind = self.classify(exc)
        except Exception:
            kind = self.misclassified(exc)
        if kind is ErrorKind.PROPAGATE:
            self.propagated(ticket, exc, started)
            return None
        if self.excluded(ticket, exc, started):
            return None
        return kind

    def propagated(self, ticket: int, exc: BaseException, started: float) -> None:
        """The first attempt raised an error the guard does not handle (it is re-raised)."""
        self.side._on_neutral(ticket)
        if isinstance(exc, Exception):  # cancellation and interrupts are not outcomes
            self.stats.error.add()
            record_propagated(self, ticket, started, exc)

    def retrying_state(
        self, started: float, exc: BaseException, kind: ErrorKind
    ) -> _CallState | None:
        """The state of a retry loop, or None when this failure is not worth retrying."""
        if (
            kind is not ErrorKind.TRANSIENT
            or self.policy is None
            or self._sync_template is None
            or self.breaker.state_code == OPEN
            or not (self.idempotent or not_applied(exc))
        ):
            return None
        return _CallState(self.breaker, self.policy, started, exc, kind, self.idempotent)

    def admit_retry(
        self,
        state: _CallState,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> int:
        """Start one retry attempt: replay the first failure, or ask the breaker."""
        if state.pending is not None:
            exc, state.pending = state.pending, None
            raise exc
        ticket = self.side._admit()
        if ticket == REJECT:
            raise _ShortCircuit
        if self.breaker._wants_call_events:
            self.breaker._before_call(fn, args, kwargs)
        state.attempts += 1
        if state.attempts == 2:
            self.stats.retries.add()
        return ticket

    def attempt_failed(
        self, state: _CallState, ticket: int, exc: BaseException, began: float
    ) -> None:
        """Classify and record a failed retry attempt (the caller re-raises ``exc``)."""
        state.slowest = max(state.slowest, time.perf_counter() - began)
        try:
            kind = self.classify(exc)
        except Exception:
            kind = self.misclassified(exc)
        state.last, state.kind = exc, kind
        if kind is not ErrorKind.PROPAGATE and self.excluded(ticket, exc, began):
            state.kind = ErrorKind.PROPAGATE  # re-raised unchanged by the retry loop
            return
        if kind is ErrorKind.PROPAGATE:
            self.side._on_neutral(ticket)
            if isinstance(exc, Exception):
                self.stats.error.add()
        else:
            self.record(ticket, exc, kind, state.attempts)

    def attempt_succeeded(self, ticket: int, state: _CallState, span: GuardSpan) -> None:
        # The slow-call clock covers the whole guarded call: what the caller paid.
        self.side._on_success(ticket, False, time.perf_counter() - state.started)
        self.success.add()
        span.finish("success", state.attempts, None)
        logger.info(
            "Redis operation %s succeeded after %d attempts",
            self.name,
            state.attempts,
            extra={"category": "redis", "breaker": self.breaker.name, "operation": self.name},
        )

    def escaped(self, state: _CallState, err: BaseException, span: GuardSpan) -> bool:
        """Whether an exception out of the retry loop must reach the caller unchanged."""
        if err is state.last and state.kind is not ErrorKind.PROPAGATE:
            return False
        span.finish("error", state.attempts, err if isinstance(err, Exception) else None)
        return True

    def failure(
        self,
        state: _CallState | None,
        exc: BaseException | None,
        kind: ErrorKind | None = None,
    ) -> Failure:
        """Describe why the fallback is used (exc None: short-circuited by an open circuit)."""
        if exc is None and state is None:
            if self.side is not self.breaker and self.breaker._code == CLOSED:
                return self.write_open_failure  # the main side admitted it: the write side
            return self.open_failure
        attempts = 0 if exc is None else 1
        denied = False
        if state is not None:
            exc, kind, attempts, denied = state.last, state.kind, state.attempts, state.denied
        return Failure(
            operation=self.name,
            breaker=self.breaker.name,
            exception=exc,
            kind=kind,
            circuit_open=exc is None,
            attempts=attempts,
            may_have_run=exc is not None and not not_applied(exc),
            side="write" if kind is ErrorKind.WRITE_REFUSED else "main",
            retry_denied=denied,
        )

    def give_up(self, failure: Failure, span: GuardSpan | None) -> None:
        """Count, log and trace the fallback; raise when there is no fallback to give."""
        no_fallback = self.fallback is _NO_FALLBACK
        (self.stats.error if no_fallback else self.stats.fallback).add()
        error = self.unavailable(failure) if no_fallback else None
        if failure.circuit_open:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "Circuit breaker open, using fallback for %s",
                    self.name,
                    extra=self._extra(failure),
                )
            record_short_circuit(self, error)
        elif failure is self.full_failure:
            if logger.isEnabledFor(logging.DEBUG):
                logger.debug(
                    "Bulkhead full, using fallback for %s", self.name, extra=self._extra(failure)
                )
            record_rejected(self, error)
        else:
            if logger.isEnabledFor(logging.WARNING):
                held_back = (
                    failure.may_have_run
                    and failure.kind is ErrorKind.TRANSIENT
                    and not self.idempotent
                    and self._sync_template is not None
                )
                denied = " (retry denied: the retry budget is spent)"
                logger.warning(
                    (
                        "Using fallback for Redis operation %s"
                        if error is None
                        else "Redis operation %s failed and has no fallback"
                    )
                    + (" (not retried: the command may have run)" if held_back else "")
                    + (denied if failure.retry_denied else ""),
                    self.name,
                    extra={
                        **self._extra(failure),
                        "retry_skipped": held_back,
                        "retry_denied": failure.retry_denied,
                    },
                )
            if span is not None:
                span.finish(
                    "error" if error else "fallback", failure.attempts, failure.exception
                )
        if error is not None:
            raise error from failure.exception

    def _extra(self, failure: Failure) -> dict[str, Any]:
        return {
            "category": "redis",
            "breaker": self.breaker.name,
            "operation": self.name,
            "state": self.breaker.current_state,
            "error": None if failure.exception is None else _describe(failure.exception),
            "attempts": failure.attempts,
        }

    def unavailable(self, failure: Failure) -> RedisUnavailableError:
        cls: type[RedisUnavailableError] = RedisUnavailableError
        if failure.circuit_open:
            cls = CircuitOpenError
        elif failure is self.full_failure:
            cls = BulkheadFullError
        if failure is self.full_failure:
            reason = f"the bulkhead of breaker {self.breaker.name!r} is full"
        elif failure.exception is None and failure.side == "write":
            side = self.breaker.write_side
            reason = (
                f"the write side of circuit breaker {self.breaker.name!r} is "
                f"{side.current_state} ({side.cause or 'writes refused'})"
            )
        elif failure.exception is None:
            reason = f"circuit breaker {self.breaker.name!r} is {self.breaker.current_state}"
        else:
            reason = f"{failure.attempts} attempt(s) failed, last: {_describe(failure.exception)}"
        return cls(
            f"Redis operation {self.name!r} unavailable: {reason}",
            operation=self.name,
            breaker=self.breaker.name,
            attempts=failure.attempts,
        )

    def canary_fallback(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Run the fallback for the canary (no counting, no logging, no span)."""
        if not self.call_fallback:
            return self.fallback
        token = _current_failure.set(self.canary_failure)
        try:
            return self.fallback(*args, **kwargs)
        finally:
            _current_failure.reset(token)

    async def acanary_fallback(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Async twin of :meth:`canary_fallback` (awaited with ``current_failure()`` set)."""
        token = _current_failure.set(self.canary_failure)
        try:
            result = self.fallback(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result
        finally:
            _current_failure.reset(token)

    def constant_fallback(self) -> bool:
        """Short-circuit with a plain value: count it and return (the hot part of an outage)."""
        if self.call_fallback or self.fallback is _NO_FALLBACK:
            return False
        self.stats.fallback.add()
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "Circuit breaker open, using fallback for %s",
                self.name,
                extra={"category": "redis", "breaker": self.breaker.name, "operation": self.name},
            )
        record_short_circuit(self, None)
        return True

    def inlinable(self) -> bool:
        """Whether a caller may inline this guard's closed-circuit happy path.

        True when the plain shells apply (no failure-rate window, no bulkhead) and successes
        are not traced. Such a caller runs, while ``state_source()._code == CLOSED`` and the
        breaker has no call listeners: ``started = time.perf_counter()``, the call, then on
        success ``if failures or breaker._wants_call_events: side._on_success(NORMAL, False,
        0.0)`` and ``success.add()`` (``failures``: the window storage's list); on an error
        :meth:`failed` (or :meth:`afailed`) with ticket ``NORMAL``.
        """
        breaker = self.breaker
        return breaker._window is None and breaker._bulkhead is None and not self.trace_success

    def state_source(self) -> Any:
        """What the happy path reads ``_code`` from (see :func:`_state_source`)."""
        return _state_source(self)

    def failed(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ticket: int,
        exc: BaseException,
        started: float,
    ) -> Any:
        """The sync shell's error path, for a caller that inlined the happy path: classify,
        then re-raise ``exc`` or retry / fall back as the guard would."""
        kind = self.first_failure(ticket, exc, started)
        if kind is None:
            raise exc
        return self.recover(fn, args, kwargs, ticket, exc, kind, started)

    async def afailed(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ticket: int,
        exc: BaseException,
        started: float,
    ) -> Any:
        """The asyncio twin of :meth:`failed`."""
        kind = self.first_failure(ticket, exc, started)
        if kind is None:
            raise exc
        return await self.arecover(fn, args, kwargs, ticket, exc, kind, started)

    # -- sync shell ----------------------------------------------------------------------
    def recover(
        self,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ticket: int,
        exc: BaseException,
        kind: ErrorKind,
        started: float,
    ) -> Any:
        """Handle a failed first attempt: retry if worthwhile, else fall back."""
        self.record(ticket, exc, kind, 1)
        span = start_degraded(self, ticket, started, exc)
        try:
            state = self.retrying_state(started, exc, kind)
            if state is not None:
                assert self._sync_template is not None
                retrying = self._sync_template.copy(stop=state.stop, retry=state.retry)
                try:
                    for attempt in retrying:
                        with attempt:
                            ticket = self.admit_retry(state, fn, args, kwargs)
                            began = time.perf_counter()
                            try:
                                result = fn(*args, **kwargs)
                            except BaseException as err:
                                self.attempt_failed(state, ticket, err, began)
                                raise
                            self.attempt_succeeded(ticket, state, span)
                            return result
                except _ShortCircuit:
                    pass
                except BaseException as err:
                    if self.escaped(state, err, span):
                        raise
            return self.fall_back(args, kwargs, self.failure(state, exc, kind), span)
        finally:
            span.close()

    def fall_back(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        failure: Failure,
        span: GuardSpan | None = None,
    ) -> Any:
        self.give_up(failure, span)
        if not self.call_fallback:
            return self.fallback
        token = _current_failure.set(failure)
        try:
            return self.fallback(*args, **kwargs)
        finally:
            _current_failure.reset(token)

    # -- async shell ---------------------------------------------------------------------
    async def arecover(
        self,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        ticket: int,
        exc: BaseException,
        kind: ErrorKind,
        started: float,
    ) -> Any:
        """Async twin of :meth:`recover`; each retry attempt is cut at the deadline."""
        self.record(ticket, exc, kind, 1)
        span = start_degraded(self, ticket, started, exc)
        try:
            state = self.retrying_state(started, exc, kind)
            if state is not None:
                assert self._async_template is not None
                retrying = self._async_template.copy(stop=state.stop, retry=state.retry)
                try:
                    async for attempt in retrying:
                        with attempt:
                            ticket = self.admit_retry(state, fn, args, kwargs)
                            began = time.perf_counter()
                            try:
                                result = await _within(fn(*args, **kwargs), state.remaining())
                            except BaseException as err:
                                self.attempt_failed(state, ticket, err, began)
                                raise
                            self.attempt_succeeded(ticket, state, span)
                            return result
                except _ShortCircuit:
                    pass
                except BaseException as err:
                    if self.escaped(state, err, span):
                        raise
            return await self.afall_back(args, kwargs, self.failure(state, exc, kind), span)
        finally:
            span.close()

    async def afall_back(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        failure: Failure,
        span: GuardSpan | None = None,
    ) -> Any:
        self.give_up(failure, span)
        if not self.call_fallback:
            return self.fallback
        token = _current_failure.set(failure)
        try:
            result = self.fallback(*args, **kwargs)
            if inspect.isawaitable(result):
                result = await result
            return result
        finally:
            _current_failure.reset(token)


if sys.version_info >= (3, 11):

    async def _within(awaitable: Awaitable[R], seconds: float) -> R:
        async with asyncio.timeout(max(seconds, 0.0)):
            return await awaitable

else:  # pragma: no cover - exercised on Python 3.10 only

    async def _within(awaitable: Awaitable[R], seconds: float) -> R:
        """Python 3.10's stand-in for ``asyncio.timeout``: the builtin TimeoutError at the deadline.

        ``asyncio.wait_for`` raises ``asyncio.TimeoutError`` there, which is not the builtin
        until 3.11, and it can swallow the caller's cancellation when the attempt finishes at
        the same moment. The attempt runs in its own task, so the deadline cancels only that
        task: a cancellation of the caller is never mistaken for the deadline, and the
        attempt has ended (its ``finally`` blocks run) before this returns or raises.
        """
        attempt = asyncio.ensure_future(awaitable)
        try:
            await asyncio.wait((attempt,), timeout=max(seconds, 0.0))
        except asyncio.CancelledError:
            attempt.cancel()
            await _settled(attempt)
            raise
        if not attempt.done():
            attempt.cancel()
            if await _settled(attempt):
                raise asyncio.CancelledError
            if attempt.cancelled():
                try:
                    attempt.result()
                except asyncio.CancelledError as cut:
                    # As asyncio.timeout does on 3.11+: the cancellation that went through
                    # the attempt's frames stays reachable (not_applied() reads them).
                    raise TimeoutError from cut
        return attempt.result()

    async def _settled(attempt: asyncio.Future[Any]) -> bool:
        """Wait until ``attempt`` has ended; True if the caller was cancelled meanwhile."""
        cancelled = False
        while not attempt.done():
            try:
                await asyncio.wait((attempt,))
            except asyncio.CancelledError:
                attempt.cancel()  # as if the attempt ran in the caller's task (3.11+)
                cancelled = True
        if not attempt.cancelled():
            attempt.exception()  # retrieved: the caller reads result() or drops it on purpose
        return cancelled


def _backoff(policy: RetryPolicy) -> tenacity.wait.wait_base:
    """``backoff * 2**(n-1) + U(0, jitter)``, capped at ``max_backoff``.

    tenacity counts the replayed first failure as attempt 1, so the wait before the first
    real retry is ``backoff + U(0, jitter)``.
    """
    return wait_exponential_jitter(
        multiplier=policy.backoff, maximum=policy.max_backoff, jitter=policy.jitter
    )


def _describe(exc: BaseException) -> str:
    """``Type: message`` with any URL password masked."""
    text = str(exc)
    return redact_text(f"{type(exc).__name__}: {text}" if text else type(exc).__name__)


class GuardDecorator(Protocol[F_co]):
    """What ``redis_guarded(...)`` returns: keeps the signature, widens the return type."""

    @overload
    def __call__(
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> Callable[P, Coroutine[Any, Any, R | F_co]]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> Callable[P, R | F_co]: ...


@overload
def redis_guarded(
    *,
    name: str,
    breaker: str | Breaker | BreakerSelector = ...,
    retry: RetryPolicy | None = ...,
    classify: Classifier = ...,
    idempotent: bool | None = ...,
    access: Access = ...,
    trace_success: bool | None = ...,
    tracer_provider: TracerProvider | None = ...,
    meter_provider: MeterProvider | None = ...,
    canary: float = ...,
    canary_compare: Callable[[Any, Any], bool] | None = ...,
    canary_side_effect_free: bool = ...,
) -> GuardDecorator[NoReturn]: ...


@overload
def redis_guarded(
    *,
    name: str,
    fallback: Callable[..., Awaitable[F]],
    breaker: str | Breaker | BreakerSelector = ...,
    retry: RetryPolicy | None = ...,
    classify: Classifier = ...,
    idempotent: bool | None = ...,
    access: Access = ...,
    trace_success: bool | None = ...,
    tracer_provider: TracerProvider | None = ...,
    meter_provider: MeterProvider | None = ...,
    canary: float = ...,
    canary_compare: Callable[[Any, Any], bool] | None = ...,
    canary_side_effect_free: bool = ...,
) -> GuardDecorator[F]: ...


@overload
def redis_guarded(
    *,
    name: str,
    fallback: Callable[..., F],
    breaker: str | Breaker | BreakerSelector = ...,
    retry: RetryPolicy | None = ...,
    classify: Classifier = ...,
    idempotent: bool | None = ...,
    access: Access = ...,
    trace_success: bool | None = ...,
    tracer_provider: TracerProvider | None = ...,
    meter_provider: MeterProvider | None = ...,
    canary: float = ...,
    canary_compare: Callable[[Any, Any], bool] | None = ...,
    canary_side_effect_free: bool = ...,
) -> GuardDecorator[F]: ...


@overload
def redis_guarded(
    *,
    name: str,
    fallback: F,
    breaker: str | Breaker | BreakerSelector = ...,
    retry: RetryPolicy | None = ...,
    classify: Classifier = ...,
    idempotent: bool | None = ...,
    access: Access = ...,
    trace_success: bool | None = ...,
    tracer_provider: TracerProvider | None = ...,
    meter_provider: MeterProvider | None = ...,
    canary: float = ...,
    canary_compare: Callable[[Any, Any], bool] | None = ...,
    canary_side_effect_free: bool = ...,
) -> GuardDecorator[F]: ...


def redis_guarded(
    *,
    name: str,
    fallback: Any = _NO_FALLBACK,
    breaker: str | Breaker | BreakerSelector = "redis",
    retry: RetryPolicy | None = _DEFAULT,
    classify: Classifier = classify_error,
    idempotent: bool | None = None,
    access: Access = "both",
    trace_success: bool | None = None,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    canary: float = 0.0,
    canary_compare: Callable[[Any, Any], bool] | None = None,
    canary_side_effect_free: bool = False,
) -> Any:
    """Guard a function that talks to Redis with a circuit breaker, retries and a fallback.

    Works on plain and ``async def`` functions, and on methods (instance, class, static).

    Args:
        name: The operation's name, used in logs, spans and metrics (e.g. ``"session.get"``).
        fallback: What to answer when Redis is unavailable: a value, or a callable called with
            the guarded function's own arguments (awaited if the function is async and the
            fallback is a coroutine function). Inside it, :func:`current_failure` says why.
            Without a fallback the call raises :class:`RedisUnavailableError`, or
            :class:`CircuitOpenError` when the circuit was open.
        breaker: A breaker name (shared through :func:`get_breaker`), a :class:`Breaker`, or
            a selector called with the guarded function's arguments that returns the breaker
            for this call (e.g. one per Cluster node: :func:`redisguard.cluster.node_breaker`).
        retry: A :class:`RetryPolicy`; ``None`` for a single attempt. Defaults to
            ``RetryPolicy()`` (3 attempts, 25 ms jittered exponential backoff, 0.5 s deadline).
        classify: Maps an exception to an :class:`ErrorKind`; defaults to
            :func:`classify_error`. If it raises, the error is logged and the default
            classification is used. Then the breaker's ``exclude`` applies: an error the guard
            would handle (not ``PROPAGATE``) that the breaker excludes is a business error,
            re-raised unchanged and recorded as a breaker success (as pybreaker does);
            ``PROPAGATE`` errors stay neutral.
        idempotent: Whether running the function twice is as good as once. ``None``
            (undeclared) is treated as False: the guard then retries only errors that prove
            the command never ran (:func:`redisguard._classify.not_applied`: a refused
            connection, a connect timeout, LOADING, BUSY...), never a timeout or a reset
            while waiting for the reply. ``True`` retries every ``TRANSIENT`` error.
        access: What the function does to Redis: ``"read"``, ``"write"``, ``"delete"`` (a
            write that frees memory: DEL, UNLINK, EXPIRE) or ``"both"`` (the default, a
            write). Refusals of writes (OOM, READONLY, MISCONF) open only the breaker's
            write side: write guards then get their fallback at once, read guards go on
            reaching Redis, and delete guards too unless the refusal was READONLY or
            MISCONF (see ``redisguard._sides``).
        trace_success: Also trace calls that succeed at once (off by default, so the happy
            path stays cheap and does not double the redis instrumentation's command spans).
            ``None`` reads ``REDISGUARD_TRACE_SUCCESS``.
        tracer_provider: Where spans go; the global provider when None (also one configured
            after redisguard was imported).
        meter_provider: Where metrics go; the global provider when None.
        canary: The share of successful calls (0 to 1; 0, the default, is off) for which
            the fallback also runs with the same arguments, off the caller's path, and its
            answer is compared with Redis's (``redisguard._canary``): a broken fallback
            shows in ``redisguard_canary_checks_total{operation,result}`` and a WARNING log
            before the outage that needs it. The caller's result and latency are unchanged.
        canary_compare: ``compare(redis_result, fallback_result) -> bool``; by default the
            fallback must return the type Redis's answer has (None on either side passes).
        canary_side_effect_free: Confirms that a callable fallback may run while Redis is
            fine (it writes nothing, sends nothing, charges nothing). Required for a canary
            with a callable fallback; a value fallback needs no confirmation.

    Raises:
        TypeError: at decoration, for a generator function, a non-callable, or an async
            fallback on a sync function.
        ConfigError: for an empty name, an invalid breaker or access, or a canary that is
            out of range, has no fallback to run, or would run a callable fallback not
            declared ``canary_side_effect_free``.
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"redis_guarded(name=...) must be a non-empty string, got {name!r}")
    access = check_access(access)
    if retry is _DEFAULT:
        retry = DEFAULT_RETRY
    elif retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError(f"retry must be a RetryPolicy or None, got {retry!r}")
    if not callable(classify):
        raise TypeError(f"classify must be callable, got {classify!r}")
    selector: BreakerSelector | None = None
    if isinstance(breaker, str):
        breaker_obj: Breaker | None = get_breaker(breaker)
    elif isinstance(breaker, Breaker):
        breaker_obj = breaker
    elif callable(breaker):
        breaker_obj, selector = None, breaker
    else:
        raise ConfigError(
            f"breaker must be a name, a redisguard.Breaker or a selector, got {breaker!r}"
        )

    canary = _canary.check_options(
        canary,
        canary_compare,
        canary_side_effect_free,
        has_fallback=fallback is not _NO_FALLBACK,
        fallback_name=_name(fallback) if callable(fallback) else None,
    )
    telemetry = Telemetry(tracer_provider, meter_provider)
    trace_default = trace_success_default()

    def decorate(fn: Any) -> Any:
        if isinstance(fn, classmethod | staticmethod):
            return type(fn)(decorate(fn.__func__))
        if not callable(fn):
            raise TypeError(f"@redis_guarded needs a function, got {fn!r}")
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(
                f"@redis_guarded cannot guard generator {fn.__qualname__}: results would "
                "escape the guard; guard the function that does the Redis calls instead"
            )
        is_async = _is_async(fn)
        if not is_async and inspect.iscoroutinefunction(fallback):
            raise TypeError(f"fallback {_name(fallback)} is async but {_name(fn)} is not")
        wrap = _async_wrapper if is_async else _sync_wrapper

        def build(breaker: Breaker) -> Callable[..., Any]:
            guard = _Guard(
                name, fallback, breaker, retry, classify, telemetry, bool(idempotent), access
            )
            guard.trace_success = trace_default if trace_success is None else trace_success
            guard.is_async = is_async
            guard.fn = fn if not canary else _canaried(fn, guard, canary, canary_compare)
            wrapped = wrap(guard.fn, guard)
            _chaos.register(guard)
            return wrapped

        if selector is None:
            assert breaker_obj is not None
            return build(breaker_obj)
        return _selecting_wrapper(fn, selector, build, is_async)

    return decorate


def _canaried(
    fn: Callable[..., Any],
    guard: _Guard,
    share: float,
    compare: Callable[[Any, Any], bool] | None,
) -> Callable[..., Any]:
    """``fn`` that hands a sampled share of its successes to the guard's canary."""
    canary = _canary.Canary(
        guard.name,
        share,
        compare,
        guard.canary_fallback,
        guard.acanary_fallback,
        inspect.iscoroutinefunction(guard.fallback),
    )
    return _canary.wrap(fn, canary, guard.is_async)


def _name(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


def _is_async(fn: Any) -> bool:
    """Whether calling ``fn`` returns a coroutine, decided once, at decoration.

    Besides ``async def`` functions and methods: a ``functools.partial`` of one; a plain
    function whose ``__wrapped__`` chain (``functools.wraps``) ends at one, such as an
    ``async def`` under a sync decorator; and an object whose class has ``async def
    __call__``. A callable *object* is judged by its own ``__call__`` only, so a sync adapter
    that sets ``__wrapped__`` to an async function (asgiref's ``async_to_sync``) stays sync.
    """
    for _ in range(64):  # a partial of a partial...; bounded against cycles
        if inspect.iscoroutinefunction(fn):
            return True
        if isinstance(fn, functools.partial):
            fn = fn.func
        elif inspect.isfunction(fn) or inspect.ismethod(fn):
            wrapped = getattr(fn, "__wrapped__", None)
            if wrapped is None:
                return False
            fn = wrapped
        elif isinstance(fn, type):
            return False
        else:
            return inspect.iscoroutinefunction(type(fn).__call__)
    return False


def _selecting_wrapper(
    fn: Callable[..., Any],
    selector: BreakerSelector,
    build: Callable[[Breaker], Callable[..., Any]],
    is_async: bool,
) -> Callable[..., Any]:
    """Pick the breaker per call (e.g. the Cluster node owning the key), one guard per breaker."""
    wrappers: dict[Breaker, Callable[..., Any]] = {}

    def pick(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Callable[..., Any]:
        breaker = selector(*args, **kwargs)
        wrapper = wrappers.get(breaker)
        if wrapper is None:
            if not isinstance(breaker, Breaker):
                raise TypeError(f"breaker selector returned {breaker!r}, not a Breaker")
            wrapper = wrappers.setdefault(breaker, build(breaker))
        return wrapper

    if is_async:

        @functools.wraps(fn)
        async def aselected(*args: Any, **kwargs: Any) -> Any:
            return await pick(args, kwargs)(*args, **kwargs)

        return aselected

    @functools.wraps(fn)
    def selected(*args: Any, **kwargs: Any) -> Any:
        return pick(args, kwargs)(*args, **kwargs)

    return selected


def _sync_wrapper(fn: Callable[..., Any], guard: _Guard) -> Callable[..., Any]:
    breaker, gate = guard.breaker, guard.side
    if breaker._window is not None or breaker._bulkhead is not None:
        policy = _sync_policy_wrapper(fn, guard)
        guard.fn_cell = _fn_cell(policy)
        return _traced_sync(fn, guard, policy)
    admit, on_success = gate._admit, gate._on_success
    successes = guard.success.counter()  # next(successes): success.add(), inlined
    failures = breaker._window_storage._failures  # cleared in place, never rebound
    clock, state = time.perf_counter, _state_source(guard)

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if state._code == CLOSED:
            ticket = NORMAL
        else:
            ticket = admit()
            if ticket == REJECT:
                if guard.constant_fallback():
                    return guard.fallback
                return guard.fall_back(args, kwargs, guard.failure(None, None))
        if breaker._wants_call_events:
            breaker._before_call(fn, args, kwargs)
        started = clock()
        try:  # fn(*args): no empty keyword dict built and merged per call
            result = fn(*args, **kwargs) if kwargs else fn(*args)
        except BaseException as exc:
            kind = guard.first_failure(ticket, exc, started)
            if kind is None:
                raise
            return guard.recover(fn, args, kwargs, ticket, exc, kind, started)
        if ticket or failures or breaker._wants_call_events:
            # A trial, a failure run to clear, or listeners to call.
            on_success(ticket, False, 0.0)
        next(successes)
        return result

    guard.fn_cell = _fn_cell(guarded)
    return _traced_sync(fn, guard, guarded)


def _unbuilt(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the guard's wrapper was not built")  # pragma: no cover


def _fn_cell(guarded: Callable[..., Any]) -> Any:
    """The closure cell through which ``guarded`` calls its function (named ``fn``).

    Chaos swaps its contents for an injecting wrapper while enabled; while disabled it holds
    the function itself, so the wrapper's happy path is the same bytecode either way.
    """
    code = guarded.__code__
    closure = guarded.__closure__
    assert closure is not None
    assert "fn" in code.co_freevars
    return closure[code.co_freevars.index("fn")]


def _state_source(guard: _Guard) -> Any:
    """What the happy path reads ``_code`` (0: closed) from: the gate itself, or on a
    host-shared breaker (``redisguard._host``) the gate's byte of the shared segment, read
    as an attribute straight from shared memory (``_host_head``)."""
    head = getattr(guard.side, "_host_head", None)
    return guard.side if head is None else head


def _window_parts(
    window: CallWindow | None,
) -> tuple[float, bool, Iterator[int], Callable[[], float] | None]:
    """``(slow_after, timed, numbers, clock)`` of a window's fast success (see
    ``fast_success``); timed: whether slow-call breaking needs the call's duration."""
    if window is None:
        return math.inf, False, iter(()), None  # never used: the wrapper checks the window
    slow_after, numbers, clock = window.fast_success()
    return slow_after, slow_after < math.inf, numbers, clock


def _slot_parts(bulkhead: Bulkhead | None) -> tuple[Callable[[], None], Callable[[None], None]]:
    """A bulkhead's ``(take, give)`` (see ``Bulkhead.slot_ops``)."""
    if bulkhead is None:
        return _no_slot, _no_slot  # never used: the wrapper checks the bulkhead first
    return bulkhead.slot_ops()


def _no_slot(_: None = None) -> None:
    raise AssertionError("no bulkhead")  # pragma: no cover


def _sync_policy_wrapper(fn: Callable[..., Any], guard: _Guard) -> Callable[..., Any]:
    """``_sync_wrapper`` with a window and/or a bulkhead, both inlined (no extra frame).

    The bulkhead's slot (``redisguard._bulkhead``) is taken before anything else and given
    back on every path; a fast success is counted in the window (``redisguard._window``,
    :meth:`CallWindow.fast_success`) without a call into it, and the call is timed a second
    time only for slow-call breaking. Everything else is ``_sync_wrapper``'s.
    """
    breaker, gate, clock = guard.breaker, guard.side, time.perf_counter
    state = _state_source(guard)  # the gate, or a host-shared breaker's byte (see there)
    successes = guard.success.counter()  # next(successes): success.add(), inlined
    # The failure deque is cleared in place, never rebound.
    admit, on_success, failures = gate._admit, gate._on_success, breaker._window_storage._failures
    window, bulkhead, full = breaker._window, breaker._bulkhead, guard.full_failure
    slow_after, timed, numbers, window_clock = _window_parts(window)
    take_slot, give_slot = _slot_parts(bulkhead)

    @functools.wraps(fn)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if bulkhead is not None:
            try:
                take_slot()
            except IndexError:
                if not bulkhead._wait_or_reject():
                    return guard.fall_back(args, kwargs, full)
        try:
            if state._code == CLOSED:
                ticket = NORMAL
            else:
                ticket = admit()
                if ticket == REJECT:
                    if guard.constant_fallback():
                        return guard.fallback
                    return guard.fall_back(args, kwargs, guard.failure(None, None))
            if breaker._wants_call_events:
                breaker._before_call(fn, args, kwargs)
            started = clock()
            try:
                result = fn(*args, **kwargs) if kwargs else fn(*args)
            except BaseException as exc:
                kind = guard.first_failure(ticket, exc, started)
                if kind is None:
                    raise
                return guard.recover(fn, args, kwargs, ticket, exc, kind, started)
            if window is None:
                if ticket or failures or breaker._wants_call_events:
                    on_success(ticket, False, 0.0)
            else:
                elapsed = clock() - started if timed else 0.0
                if ticket or failures or breaker._wants_call_events or elapsed > slow_after:
                    on_success(ticket, False, elapsed)
                else:  # a fast success: the window's note_fast, inlined
                    number = next(numbers)
                    if window_clock is not None and window_clock() >= window._edge:
                        window._turn(number)
            next(successes)
            return result
        finally:
            if bulkhead is not None:
                give_slot(None)
                if bulkhead._waiters:
                    bulkhead._notify()

    return guarded


def _traced_sync(
    fn: Callable[..., Any], guard: _Guard, guarded: Callable[..., Any]
) -> Callable[..., Any]:
    """``guarded``, traced when ``trace_success`` is on, marked with its guard."""
    if guard.trace_success:
        inner, clock = guarded, time.perf_counter

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            handle = begin_traced(guard, clock())
            if handle is None:
                return inner(*args, **kwargs)
            try:
                result = inner(*args, **kwargs)
            except BaseException as exc:
                end_traced(handle, exc)
                raise
            end_traced(handle, None)
            return result

    guarded.__redisguard__ = guard  # type: ignore[attr-defined]
    return guarded


def _async_wrapper(fn: Callable[..., Awaitable[Any]], guard: _Guard) -> Callable[..., Any]:
    breaker, gate = guard.breaker, guard.side
    if breaker._window is not None or breaker._bulkhead is not None:
        policy = _async_policy_wrapper(fn, guard)
        guard.fn_cell = _fn_cell(policy)
        return _traced_async(fn, guard, policy)
    admit, on_success = gate._admit, gate._on_success
    successes = guard.success.counter()  # next(successes): success.add(), inlined
    failures = breaker._window_storage._failures  # cleared in place, never rebound
    clock, state = time.perf_counter, _state_source(guard)

    @functools.wraps(fn)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        if state._code == CLOSED:
            ticket = NORMAL
        else:
            ticket = admit()
            if ticket == REJECT:
                if guard.constant_fallback():
                    return guard.fallback
                return await guard.afall_back(args, kwargs, guard.failure(None, None))
        if breaker._wants_call_events:
            breaker._before_call(fn, args, kwargs)
        started = clock()
        try:
            result = await (fn(*args, **kwargs) if kwargs else fn(*args))
        except BaseException as exc:
            kind = guard.first_failure(ticket, exc, started)
            if kind is None:
                raise
            return await guard.arecover(fn, args, kwargs, ticket, exc, kind, started)
        if ticket or failures or breaker._wants_call_events:
            # A trial, a failure run to clear, or listeners to call.
            on_success(ticket, False, 0.0)
        next(successes)
        return result

    guard.fn_cell = _fn_cell(guarded)
    return _traced_async(fn, guard, guarded)


def _async_policy_wrapper(fn: Callable[..., Awaitable[Any]], guard: _Guard) -> Callable[..., Any]:
    """Async twin of :func:`_sync_policy_wrapper`; the slot is released on cancellation too."""
    breaker, gate, clock = guard.breaker, guard.side, time.perf_counter
    state = _state_source(guard)  # the gate, or a host-shared breaker's byte (see there)
    successes = guard.success.counter()  # next(successes): success.add(), inlined
    # The failure deque is cleared in place, never rebound.
    admit, on_success, failures = gate._admit, gate._on_success, breaker._window_storage._failures
    window, bulkhead, full = breaker._window, breaker._bulkhead, guard.full_failure
    slow_after, timed, numbers, window_clock = _window_parts(window)
    take_slot, give_slot = _slot_parts(bulkhead)

    @functools.wraps(fn)
    async def guarded(*args: Any, **kwargs: Any) -> Any:
        if bulkhead is not None:
            try:
                take_slot()
            except IndexError:
                if not await bulkhead._await_or_reject():
                    return await guard.afall_back(args, kwargs, full)
        try:
            if state._code == CLOSED:
                ticket = NORMAL
            else:
                ticket = admit()
                if ticket == REJECT:
                    if guard.constant_fallback():
                        return guard.fallback
                    return await guard.afall_back(args, kwargs, guard.failure(None, None))
            if breaker._wants_call_events:
                breaker._before_call(fn, args, kwargs)
            started = clock()
            try:
                result = await (fn(*args, **kwargs) if kwargs else fn(*args))
            except BaseException as exc:
                kind = guard.first_failure(ticket, exc, started)
                if kind is None:
                    raise
                return await guard.arecover(fn, args, kwargs, ticket, exc, kind, started)
            if window is None:
                if ticket or failures or breaker._wants_call_events:
                    on_success(ticket, False, 0.0)
            else:
                elapsed = clock() - started if timed else 0.0
                if ticket or failures or breaker._wants_call_events or elapsed > slow_after:
                    on_success(ticket, False, elapsed)
                else:  # a fast success: the window's note_fast, inlined
                    number = next(numbers)
                    if window_clock is not None and window_clock() >= window._edge:
                        window._turn(number)
            next(successes)
            return result
        finally:
            if bulkhead is not None:
                give_slot(None)
                if bulkhead._waiters:
                    bulkhead._notify()

    return guarded


def _traced_async(
    fn: Callable[..., Any], guard: _Guard, guarded: Callable[..., Any]
) -> Callable[..., Any]:
    """Async twin of :func:`_traced_sync`."""
    if guard.trace_success:
        inner, clock = guarded, time.perf_counter

        @functools.wraps(fn)
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            handle = begin_traced(guard, clock())
            if handle is None:
                return await inner(*args, **kwargs)
            try:
                result = await inner(*args, **kwargs)
            except BaseException as exc:
                end_traced(handle, exc)
                raise
            end_traced(handle, None)
            return result

    guarded.__redisguard__ = guard  # type: ignore[attr-defined]
    return guarded
