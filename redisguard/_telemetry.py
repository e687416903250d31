"""OpenTelemetry: spans for degraded calls, observable metrics over in-process totals.

Depends on ``opentelemetry-api`` only. Nothing here runs on the happy path unless success
spans are switched on: successes are counted by :class:`~redisguard._tally.Tally` objects and
exported by observable instruments when the SDK collects.

Metric names are chosen so a Prometheus exporter shows exactly the design document's series::

    circuit_breaker_state{name}                    0 closed, 1 half-open, 2 open
    circuit_breaker_failures_total{name}
    circuit_breaker_successes_total{name}
    circuit_breaker_rejections_total{name}         calls answered without touching Redis
    circuit_breaker_transitions_total{name,from,to}   a host-shared breaker's transitions are
                                                   counted by the worker that made them only,
                                                   so the sum over a host counts each once
    circuit_breaker_host_shared{name}              1 when the state is shared by every process
                                                   on the host (redisguard._host), else 0
    circuit_breaker_write_state{name}              the write side (refusals of writes: OOM,
                                                   READONLY, MISCONF): 0 closed, 1 half-open,
                                                   2 open
    circuit_breaker_write_refusals_total{name}     writes Redis refused
    circuit_breaker_write_rejections_total{name}   write/delete calls the write side answered
                                                   with the fallback
    redis_operations_total{operation,result}       result = success | fallback | error
    redis_operation_retries_total{operation}       calls that needed at least one retry
    redis_operation_failures_total{operation,kind}  failed attempts by classification: transient |
                                                   misconfigured (auth, ACL, TLS) | write_refused |
                                                   rejected
    redis_degraded_call_duration_seconds{operation,result}  histogram, explicit buckets
    ratelimit_decisions_total{limiter,result}      allowed/denied, and fail_open/fail_closed/
                                                   local_allowed/local_denied while Redis is down
    store_data_errors_total{operation}             corrupt JSON read by the stores
    redis_bulkhead_rejections_total{breaker}       calls the bulkhead turned away
    redis_bulkhead_in_flight{breaker}              calls holding a bulkhead slot now
    redis_retries_denied_total{breaker}            retries the retry budget denied
    cache_lookups_total{cache,result}              @cached calls: hit / miss / stale /
                                                   unavailable / joined (waited for a fill)
    cache_stale_served_total{cache}                answered from the L1 while Redis was down
    redisguard_chaos_injected_total{operation,kind}  faults injected by redisguard.chaos
    redisguard_canary_checks_total{operation,result}  fallback canary runs: match | mismatch |
                                                   error | dropped (the worker was full)

Spans of calls that met an injected fault carry ``redisguard.chaos=true`` and
``redisguard.chaos_kind``.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import pybreaker
from opentelemetry import context as otel_context
from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

from ._breaker import NORMAL, STATE_NAMES, Breaker, _default_listener_factories, breakers
from ._fork import after_fork, renew_lock_after_fork
from ._observe import operations
from ._redact import redact_text
from ._tally import Tally
from ._version import __version__

if TYPE_CHECKING:
    from ._guard import _Guard

__all__ = [
    "DURATION_BUCKETS",
    "OpenTelemetryListener",
    "Telemetry",
    "trace_success_default",
]

SCOPE = "redisguard"
logger = logging.getLogger("redisguard")
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)
TRACE_SUCCESS_ENV = "REDISGUARD_TRACE_SUCCESS"
RESULTS = ("success", "fallback", "error")
_TRANSITIONS = tuple((a, b) for a in STATE_NAMES for b in STATE_NAMES if a != b)
#: The attribute ``redisguard._chaos`` sets on an injected exception (its value: the kind).
CHAOS_MARK = "_redisguard_chaos"
_NOOP_PROVIDERS = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
_RECHECK_SECONDS = 1.0

# The span of a call traced from its start (success spans switched on): inner steps adopt it
# instead of starting their own.
_active_guard_span: ContextVar[GuardSpan | None] = ContextVar(
    "redisguard_active_span", default=None
)


def trace_success_default() -> bool:
    """Whether ``REDISGUARD_TRACE_SUCCESS`` asks for spans on plain successes too."""
    return os.environ.get(TRACE_SUCCESS_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


# -- listener ------------------------------------------------------------------------------
class OpenTelemetryListener(pybreaker.CircuitBreakerListener):
    """Counts real state transitions and marks them on the current span.

    Attached to every breaker by default. Remove it (``breaker.remove_listener(...)``) to stop
    ``circuit_breaker_transitions_total`` and the span events; the state gauge and the
    failure/success counters come from the breaker itself.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str, str], Tally] = {}
        after_fork(self, OpenTelemetryListener._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        old = getattr(old_state, "name", None)
        new = new_state.name
        if old is None or old == new or getattr(cb, "_adopting", False):
            return  # (adopting: another process on the host made it, and counted it)
        self._tally(cb.name or "", old, new).add()
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                "redisguard.circuit_state_change",
                {"redisguard.breaker": cb.name or "", "from": old, "to": new},
            )

    def write_state_change(self, cb: pybreaker.CircuitBreaker, event: Any) -> None:
        """Mark a write-side transition on the current span (the gauge shows the state)."""
        span = trace.get_current_span()
        if span.is_recording():
            span.add_event(
                "redisguard.circuit_write_state_change",
                {
                    "redisguard.breaker": cb.name or "",
                    "from": event.old,
                    "to": event.new,
                    "cause": event.cause or "",
                },
            )

    def _tally(self, name: str, old: str, new: str) -> Tally:
        key = (name, old, new)
        tally = self._counts.get(key)
        if tally is None:
            with self._lock:
                tally = self._counts.setdefault(key, Tally())
        return tally

    def transitions(self, name: str) -> Iterator[tuple[str, str, int]]:
        """(from, to, count) for every possible transition of breaker ``name``, zeros too."""
        for old, new in _TRANSITIONS:
            tally = self._counts.get((name, old, new))
            yield old, new, 0 if tally is None else tally.value


_default_listener_factories.append(OpenTelemetryListener)


# -- metrics -------------------------------------------------------------------------------
def _all_breakers() -> list[Breaker]:
    """Registered breakers plus any breaker object a guarded operation uses."""
    seen: dict[int, Breaker] = {id(b): b for b in breakers()}
    for op in operations():
        seen.setdefault(id(op.breaker_obj), op.breaker_obj)
    return sorted(seen.values(), key=lambda b: b.name)


def _state(_: CallbackOptions) -> Iterable[Observation]:
    return [Observation(b.state_code, {"name": b.name}) for b in _all_breakers()]


def _host_shared(_: CallbackOptions) -> Iterable[Observation]:
    return [Observation(int(b.is_host_shared), {"name": b.name}) for b in _all_breakers()]


def _failures(_: CallbackOptions) -> Iterable[Observation]:
    return [Observation(b.failure_total, {"name": b.name}) for b in _all_breakers()]


def _successes(_: CallbackOptions) -> Iterable[Observation]:
    return [Observation(b.success_total, {"name": b.name}) for b in _all_breakers()]


def _rejections(_: CallbackOptions) -> Iterable[Observation]:
    return [Observation(b.rejected_total, {"name": b.name}) for b in _all_breakers()]


def _write_state(_: CallbackOptions) -> Iterable[Observation]:
    return [Observation(b.write_side.state_code, {"name": b.name}) for b in _all_breakers()]


def _write_refusals(_: CallbackOptions) -> Iterable[Observation]:
    return [Observation(b.write_side.refusal_total, {"name": b.name}) for b in _all_breakers()]


def _write_rejections(_: CallbackOptions) -> Iterable[Observation]:
    return [Observation(b.write_side.rejected_total, {"name": b.name}) for b in _all_breakers()]


def _transitions(_: CallbackOptions) -> Iterable[Observation]:
    out = []
    for b in _all_breakers():
        for listener in b.listeners:
            if isinstance(listener, OpenTelemetryListener):
                for old, new, count in listener.transitions(b.name):
                    out.append(Observation(count, {"name": b.name, "from": old, "to": new}))
    return out


def _operations(_: CallbackOptions) -> Iterable[Observation]:
    out = []
    for op in operations():
        values = (op.success.value, op.fallback.value, op.error.value)
        for result, value in zip(RESULTS, values, strict=True):
            out.append(Observation(value, {"operation": op.name, "result": result}))
    return out


def _retries(_: CallbackOptions) -> Iterable[Observation]:
    return [Observation(op.retries.value, {"operation": op.name}) for op in operations()]


def _failures_by_kind(_: CallbackOptions) -> Iterable[Observation]:
    return [
        Observation(tally.value, {"operation": op.name, "kind": kind})
        for op in operations()
        for kind, tally in op.failures.items()
    ]


def _limiter_decisions(_: CallbackOptions) -> Iterable[Observation]:
    ratelimit = sys.modules.get("redisguard.ratelimit")  # nothing to report if never used
    if ratelimit is None:
        return []
    return [
        Observation(count, {"limiter": stats.name, "result": result})
        for stats in ratelimit.limiter_stats()
        for result, count in stats.snapshot().items()
    ]


def _data_errors(_: CallbackOptions) -> Iterable[Observation]:
    stores = sys.modules.get("redisguard._stores_core")
    if stores is None:
        return []
    return [
        Observation(count, {"operation": operation})
        for operation, count in stores.data_errors().items()
    ]


def _cache_stats() -> list[Any]:
    cache = sys.modules.get("redisguard._cache")  # nothing to report if never used
    return [] if cache is None else list(cache.cache_stats())


def _cache_lookups(_: CallbackOptions) -> Iterable[Observation]:
    return [
        Observation(count, {"cache": stats.name, "result": result})
        for stats in _cache_stats()
        for result, count in stats.snapshot().items()
    ]


def _cache_stale(_: CallbackOptions) -> Iterable[Observation]:
    return [Observation(stats.stale.value, {"cache": stats.name}) for stats in _cache_stats()]


def _bulkhead_rejections(_: CallbackOptions) -> Iterable[Observation]:
    return [
        Observation(b._bulkhead.rejected_total, {"breaker": b.name})
        for b in _all_breakers()
        if b._bulkhead is not None
    ]


def _bulkhead_in_flight(_: CallbackOptions) -> Iterable[Observation]:
    return [
        Observation(b._bulkhead.in_flight, {"breaker": b.name})
        for b in _all_breakers()
        if b._bulkhead is not None
    ]


def _retries_denied(_: CallbackOptions) -> Iterable[Observation]:
    return [
        Observation(b._budget.denied_total, {"breaker": b.name})
        for b in _all_breakers()
        if b._budget is not None
    ]


def _chaos_injected(_: CallbackOptions) -> Iterable[Observation]:
    chaos = sys.modules.get("redisguard._chaos")
    if chaos is None:
        return []
    return [
        Observation(count, {"operation": operation, "kind": kind})
        for (operation, kind), count in chaos.counts().items()
    ]


def _canary_checks(_: CallbackOptions) -> Iterable[Observation]:
    canary = sys.modules.get("redisguard._canary")
    if canary is None:
        return []
    return [
        Observation(count, {"operation": operation, "result": result})
        for (operation, result), count in canary.counts().items()
    ]


def _register_policy_instruments(meter: metrics.Meter) -> None:
    """The bulkhead's and the retry budget's series (breakers that have the policy on)."""
    meter.create_observable_counter(
        "redis_bulkhead_rejections",
        [_bulkhead_rejections],
        unit="1",
        description="Calls the bulkhead turned away (max_concurrent_calls in flight)",
    )
    meter.create_observable_gauge(
        "redis_bulkhead_in_flight",
        [_bulkhead_in_flight],
        unit="1",
        description="Calls holding a bulkhead slot",
    )
    meter.create_observable_counter(
        "redis_retries_denied",
        [_retries_denied],
        unit="1",
        description="Retries denied because the breaker's retry budget was spent",
    )
    meter.create_observable_counter(
        "redisguard_chaos_injected",
        [_chaos_injected],
        unit="1",
        description="Faults injected by redisguard.chaos (a rehearsal, not an incident)",
    )
    meter.create_observable_counter(
        "redisguard_canary_checks",
        [_canary_checks],
        unit="1",
        description="Fallback canary runs by result: match, mismatch, error, dropped",
    )


class _Instruments:
    """The instruments registered on one meter provider (once per provider)."""

    def __init__(self, meter: metrics.Meter) -> None:
        meter.create_observable_gauge(
            "circuit_breaker_state",
            [_state],
            unit="1",
            description="Circuit breaker state: 0 closed, 1 half-open, 2 open",
        )
        meter.create_observable_gauge(
            "circuit_breaker_host_shared",
            [_host_shared],
            unit="1",
            description="1 when the breaker's state is shared by every process on the host",
        )
        meter.create_observable_gauge(
            "circuit_breaker_write_state",
            [_write_state],
            unit="1",
            description=(
                "Circuit breaker write side (opened by refused writes: OOM, READONLY, "
                "MISCONF): 0 closed, 1 half-open, 2 open"
            ),
        )
        for name, callback, description in (
            ("circuit_breaker_failures", _failures, "Failures recorded by the breaker"),
            ("circuit_breaker_successes", _successes, "Successful calls through the breaker"),
            ("circuit_breaker_rejections", _rejections, "Calls answered without touching Redis"),
            ("circuit_breaker_transitions", _transitions, "Breaker state transitions"),
            ("circuit_breaker_write_refusals", _write_refusals, "Writes Redis refused"),
            (
                "circuit_breaker_write_rejections",
                _write_rejections,
                "Write and delete calls answered by an open write side without touching Redis",
            ),
            ("redis_operations", _operations, "Guarded operations by result"),
            ("redis_operation_retries", _retries, "Guarded calls that needed a retry"),
            (
                "redis_operation_failures",
                _failures_by_kind,
                "Failed attempts the guard handled, by kind: transient, misconfigured "
                "(authentication, ACL, TLS), write_refused, rejected",
            ),
            (
                "ratelimit_decisions",
                _limiter_decisions,
                "Rate-limit decisions by result (fail_open/fail_closed/local_*: Redis was down)",
            ),
            ("store_data_errors", _data_errors, "Corrupt values read by the stores"),
            ("cache_lookups", _cache_lookups, "@cached calls by result"),
            (
                "cache_stale_served",
                _cache_stale,
                "@cached calls answered from the in-process L1 while Redis was unavailable",
            ),
        ):
            meter.create_observable_counter(name, [callback], unit="1", description=description)
        self.duration = meter.create_histogram(
            "redis_degraded_call_duration",
            unit="s",
            description="Duration of guarded calls that failed at least once",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )
        _register_policy_instruments(meter)


_global_instruments: dict[None, _Instruments] = {}
_instruments: weakref.WeakKeyDictionary[metrics.MeterProvider, _Instruments] = (
    weakref.WeakKeyDictionary()
)
_instruments_lock = threading.Lock()
renew_lock_after_fork(__name__, "_instruments_lock")  # the instruments stay valid in a child


def _instruments_for(meter_provider: metrics.MeterProvider | None) -> _Instruments:
    """The instruments on this provider (None: the global one), registered once per provider."""
    with _instruments_lock:
        if meter_provider is None:
            found = _global_instruments.get(None)
            if found is None:
                # The global proxy meter binds to an SDK configured later.
                found = _global_instruments[None] = _Instruments(
                    metrics.get_meter(SCOPE, __version__)
                )
            return found
        found = _instruments.get(meter_provider)
        if found is None:
            found = _instruments[meter_provider] = _Instruments(
                meter_provider.get_meter(SCOPE, __version__)
            )
        return found


# -- tracing -------------------------------------------------------------------------------
class Telemetry:
    """The tracer and degraded-call histogram for one pair of providers."""

    def __init__(
        self,
        tracer_provider: trace.TracerProvider | None,
        meter_provider: metrics.MeterProvider | None,
    ) -> None:
        self._tracer_provider = tracer_provider
        self._tracer: trace.Tracer | None = None
        self._recheck_at = 0.0
        self.instruments = _instruments_for(meter_provider)

    def tracer(self, *, fresh: bool = False) -> trace.Tracer | None:
        """The real tracer, or None while no SDK is configured (spans would be no-ops).

        While only the API is installed, the hot paths (short-circuited calls, traced
        successes) re-check at most once a second, so an outage does not pay for the check on
        every call; ``fresh=True`` (calls that reached Redis) always re-checks. Either way an
        SDK configured after import is picked up.
        """
        tracer = self._tracer
        if tracer is None:
            now = time.monotonic()
            if not fresh and now < self._recheck_at:
                return None
            provider = self._tracer_provider or trace.get_tracer_provider()
            if isinstance(provider, _NOOP_PROVIDERS):
                self._recheck_at = now + _RECHECK_SECONDS
                return None
            tracer = self._tracer = provider.get_tracer(SCOPE, __version__)
        return tracer


def _base_attributes(guard: _Guard, circuit_state: str) -> dict[str, Any]:
    return {
        "db.system.name": "redis",
        "redisguard.operation": guard.name,
        "redisguard.breaker": guard.breaker.name,
        "redisguard.circuit_state": circuit_state,
    }


def _qualname(exc: BaseException) -> str:
    """The exception's class as ``error.type`` wants it (builtins without a module prefix)."""
    cls = type(exc)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _record_exception(span: trace.Span, exc: BaseException) -> None:
    """``record_exception`` with URL passwords masked in the message and the stack trace."""
    span.record_exception(
        exc,
        attributes={
            "exception.message": redact_text(str(exc)),
            "exception.stacktrace": redact_text("".join(traceback.format_exception(exc))),
        },
    )


class GuardSpan:
    """The span of one guarded call (possibly None) and the recording of its outcome.

    ``outer`` spans are started by a success-traced wrapper before the call; inner steps adopt
    them (so they are never ended early) and the wrapper ends them with ``close(force=True)``.
    """

    __slots__ = ("_token", "finished", "guard", "outer", "span", "started")

    def __init__(
        self, guard: _Guard, span: trace.Span | None, started: float, *, outer: bool = False
    ) -> None:
        self.guard = guard
        self.span = span
        self.started = started
        self.outer = outer
        self.finished = False
        self._token: object | None = None
        if span is not None:
            self._token = otel_context.attach(trace.set_span_in_context(span))

    def finish(
        self,
        outcome: str,
        attempts: int,
        exc: BaseException | None,
        *,
        short_circuited: bool = False,
        record_duration: bool = True,
    ) -> None:
        """Record the outcome (the first one recorded wins) and end the span if it is ours."""
        if self.finished:
            return
        self.finished = True
        try:
            self._record(outcome, attempts, exc, short_circuited, record_duration)
        except Exception:
            _telemetry_failed("GuardSpan.finish")
        self.close()

    def _record(
        self,
        outcome: str,
        attempts: int,
        exc: BaseException | None,
        short_circuited: bool,
        record_duration: bool,
    ) -> None:
        if record_duration:
            self.guard.telemetry.instruments.duration.record(
                time.perf_counter() - self.started,
                {"operation": self.guard.name, "result": outcome},
            )
        span = self.span
        if span is not None and span.is_recording():
            span.set_attribute("redisguard.outcome", outcome)
            span.set_attribute("redisguard.attempts", attempts)
            span.set_attribute("redisguard.short_circuited", short_circuited)
            if exc is not None:
                span.set_attribute("error.type", _qualname(exc))
                _record_exception(span, exc)
                _mark_chaos(span, exc)
            if outcome != "success":
                description = f"{type(exc).__name__}: {exc}" if exc is not None else outcome
                span.set_status(Status(StatusCode.ERROR, _short(description)))
            if outcome == "fallback":
                span.add_event("redisguard.fallback", {"redisguard.attempts": attempts})

    def close(self, *, force: bool = False) -> None:
        """Detach and end the span (idempotent); an outer span only when forced."""
        if self.outer and not force:
            return
        span, self.span = self.span, None
        if span is None:
            return
        try:
            if self._token is not None:
                token, self._token = self._token, None
                otel_context.detach(token)  # type: ignore[arg-type]
            span.end()
        except Exception:
            _telemetry_failed("GuardSpan.close")


_last_failure_log = [0.0]


def _telemetry_failed(where: str) -> None:
    """A tracer or meter raised: log it (at most once a minute), never fail the call."""
    now = time.monotonic()
    if now >= _last_failure_log[0]:
        _last_failure_log[0] = now + 60.0
        logger.exception(
            "redisguard telemetry failed in %s; the call goes on without it", where,
            extra={"category": "telemetry"},
        )


def _short(text: str, limit: int = 200) -> str:
    text = redact_text(text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _mark_chaos(span: trace.Span, exc: BaseException | None) -> None:
    """Mark ``span`` when ``exc`` was injected by ``redisguard.chaos``."""
    kind = getattr(exc, CHAOS_MARK, None)
    if kind is not None:
        span.set_attribute("redisguard.chaos", True)
        span.set_attribute("redisguard.chaos_kind", kind)


def mark_active_span_chaos(kind: str) -> None:
    """A fault is being injected: mark the guard's span if it is already open (a traced
    success, or a retry under a degraded span); an injected error marks its span itself."""
    guard_span = _active_guard_span.get()
    span = guard_span.span if guard_span is not None else trace.get_current_span()
    if span is None or not span.is_recording():
        return
    name = getattr(span, "name", None)
    if guard_span is None and not (isinstance(name, str) and name.startswith("redisguard ")):
        return  # the caller's own span: not ours to mark
    try:
        span.set_attribute("redisguard.chaos", True)
        span.set_attribute("redisguard.chaos_kind", kind)
    except Exception:
        _telemetry_failed("mark_active_span_chaos")


def start_degraded(
    guard: _Guard, ticket: int, started: float, exc: BaseException | None = None
) -> GuardSpan:
    """Open (or adopt) the span for a call whose first attempt failed.

    The span starts retroactively at the call's start and becomes current for the retries and
    the fallback, so their own spans (e.g. redis command spans) nest under it.
    """
    active = _active_guard_span.get()
    if active is not None:
        return active
    tracer = guard.telemetry.tracer(fresh=True)
    if tracer is None:
        return GuardSpan(guard, None, started)
    circuit_state = "closed" if ticket == NORMAL else "half-open"
    start_ns = time.time_ns() - int((time.perf_counter() - started) * 1e9)
    try:
        span = tracer.start_span(
            guard.span_name,
            kind=SpanKind.INTERNAL,
            attributes=_base_attributes(guard, circuit_state),
            start_time=start_ns,
        )
        if exc is not None and span.is_recording():
            _mark_chaos(span, exc)
        return GuardSpan(guard, span, started)
    except Exception:
        _telemetry_failed("start_degraded")
        return GuardSpan(guard, None, started)


_CIRCUIT_OPEN = Status(StatusCode.ERROR, "circuit open")


def record_short_circuit(guard: _Guard, exc: BaseException | None) -> None:
    """A span for a call answered without touching Redis (circuit open)."""
    active = _active_guard_span.get()
    if active is not None:
        active.finish(
            "fallback" if exc is None else "error", 0, exc, short_circuited=True,
            record_duration=False,
        )
        return
    tracer = guard.telemetry.tracer()
    if tracer is None:
        return
    # One start/end with every attribute given up front: the cheapest complete span.
    try:
        span = tracer.start_span(guard.span_name, attributes=_short_circuit_attributes(guard, exc))
        if span.is_recording():
            if exc is not None:
                _record_exception(span, exc)
            span.set_status(_CIRCUIT_OPEN)
        span.end()
    except Exception:
        _telemetry_failed("record_short_circuit")


def _short_circuit_attributes(guard: _Guard, exc: BaseException | None) -> dict[str, Any]:
    breaker = guard.breaker
    # A write guard short-circuited while the main side is closed: its write side answered.
    write = guard.side is not breaker and breaker.state_code == 0
    key = (breaker.write_side.state_code + 3 if write else breaker.state_code, exc is None)
    cache = guard.span_attributes
    attributes = cache.get(key)
    if attributes is None:
        state = breaker.write_side.current_state if write else breaker.current_state
        attributes = _base_attributes(guard, state)
        attributes["redisguard.side"] = "write" if write else "main"
        attributes["redisguard.outcome"] = "fallback" if exc is None else "error"
        attributes["redisguard.attempts"] = 0
        attributes["redisguard.short_circuited"] = True
        if exc is not None:
            attributes["error.type"] = _qualname(exc)
        cache[key] = attributes
    return attributes


def record_propagated(guard: _Guard, ticket: int, started: float, exc: BaseException) -> None:
    """A span for a first attempt that raised an error the guard does not handle."""
    start_degraded(guard, ticket, started, exc).finish("error", 1, exc, record_duration=False)


def begin_traced(guard: _Guard, started: float) -> tuple[GuardSpan, object] | None:
    """Start the span of a success-traced call; None when tracing is off."""
    tracer = guard.telemetry.tracer()
    if tracer is None:
        return None
    try:
        span = tracer.start_span(
            guard.span_name,
            kind=SpanKind.INTERNAL,
            attributes=_base_attributes(guard, guard.breaker.current_state),
        )
        outer = GuardSpan(guard, span, started, outer=True)
    except Exception:
        _telemetry_failed("begin_traced")
        return None
    return outer, _active_guard_span.set(outer)


def end_traced(handle: tuple[GuardSpan, object], exc: BaseException | None) -> None:
    """Finish a success-traced call: a plain success unless an inner step said otherwise."""
    outer, token = handle
    _active_guard_span.reset(token)  # type: ignore[arg-type]
    if exc is None:
        outer.finish("success", 1, None, record_duration=False)
    elif isinstance(exc, Exception):
        outer.finish("error", 1, exc, record_duration=False)
    outer.close(force=True)


def record_rejected(guard: _Guard, exc: BaseException | None) -> None:
    """A span for a call the bulkhead turned away (no attempt, the breaker not told)."""
    active = _active_guard_span.get()
    if active is not None:
        active.finish(
            "fallback" if exc is None else "error", 0, exc, short_circuited=True,
            record_duration=False,
        )
        return
    tracer = guard.telemetry.tracer()
    if tracer is None:
        return
    try:
        attributes = _base_attributes(guard, guard.breaker.current_state)
        attributes["redisguard.outcome"] = "fallback" if exc is None else "error"
        attributes["redisguard.attempts"] = 0
        attributes["redisguard.short_circuited"] = True
        attributes["redisguard.rejected_by"] = "bulkhead"
        if exc is not None:
            attributes["error.type"] = _qualname(exc)
        span = tracer.start_span(guard.span_name, attributes=attributes)
        if span.is_recording():
            if exc is not None:
                _record_exception(span, exc)
            span.set_status(_BULKHEAD_FULL)
        span.end()
    except Exception:
        _telemetry_failed("record_rejected")


_BULKHEAD_FULL = Status(StatusCode.ERROR, "bulkhead full")
