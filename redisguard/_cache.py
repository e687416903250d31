"""The read-through cache behind ``@cached``: policy steps without I/O, a sync and an async shell.

One call::

    key = build the Redis key from the arguments
    GET key (guarded)           -> bytes: decode, note in the L1, return       (a hit)
                                   (the note at most every 0.1 s per key)
                                -> nil:   fill (single-flight)                 (a miss)
                                -> unavailable (the guard fell back, or the circuit is open):
        L1 entry no older than stale_for  -> return it, marked stale           (serve stale)
        else on_unavailable="call"        -> fill (single-flight)
             on_unavailable="raise"       -> the guard's error
    fill = call the function, SET key value PX ttl (guarded; a failed SET is logged and the
           value still returned), note the value in the L1.

The L1 (:mod:`redisguard._l1`) is written on fills and hits but read only when Redis is
unavailable, so on the happy path Redis stays the source of truth. A blocked key (an
invalidation that did not reach Redis) is never served from the L1; the next call for it that
finds Redis available sends the DEL first.

The shells are hand-tuned like the guard's (see "-- shells" below): a hit with the circuit
closed and a stale answer with it open run in the wrapper's own frame, with the GET guards'
admission and happy path inlined; every other case takes the general path through the guards.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import threading
import time
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from ._breaker import CLOSED, NORMAL, OPEN, REJECT, Breaker
from ._classify import Classifier
from ._codec import JsonSerializer, Serializer
from ._errors import ConfigError, TemporarilyUnavailableError
from ._flight import AsyncFlights, Flights
from ._fork import renew_lock_after_fork
from ._guard import Failure, _Guard, current_failure, redis_guarded
from ._l1 import L1
from ._redact import fingerprint
from ._stores_core import data_error_tally, retry_after
from ._tally import Tally
from ._telemetry import Telemetry, _telemetry_failed

__all__ = ["CacheCore", "CacheStats", "StaleAnswer", "cache_stats", "stale_answer"]

logger = logging.getLogger("redisguard")
OnUnavailable = Literal["call", "raise"]
_SIMPLE = (str, int, float, bool, type(None), bytes)
#: Seconds after which a hit refreshes its key's L1 entry (at most stale_for / 10).
L1_REFRESH = 0.1
_MISSING: Any = object()
_new_tuple = tuple.__new__  # a NamedTuple without its Python-level __new__


class StaleAnswer(NamedTuple):
    """A cached call was answered from the in-process L1 because Redis was unavailable.

    Attributes:
        operation: The cache's name.
        key: The Redis key.
        age: Seconds since Redis last confirmed (or was last given) the value.
        failure: Why Redis was unavailable (what :func:`redisguard.current_failure` said in
            the guard's fallback; while the circuit is open, the guard's shared
            ``circuit_open=True`` Failure).
    """

    operation: str
    key: str
    age: float
    failure: Failure | None


_stale: ContextVar[StaleAnswer | None] = ContextVar("redisguard_stale", default=None)


def stale_answer() -> StaleAnswer | None:
    """After a ``@cached`` call: the :class:`StaleAnswer` if it was served stale, else None.

    It describes the last ``@cached`` call made in this context (thread, or asyncio task)::

        profile = get_profile(user_id)
        if (stale := redisguard.cache.stale_answer()) is not None:
            response.headers["Warning"] = f'110 - "stale for {stale.age:.0f}s"'
    """
    return _stale.get()


@dataclass(eq=False)
class CacheStats:
    """Running totals of one cache (by name).

    Attributes:
        hit: Answered from Redis.
        miss: Runs of the function after Redis answered "not there" (one per single-flight,
            however many callers missed together).
        stale: Answered from the L1 while Redis was unavailable (``stale_served``).
        unavailable: Calls that found Redis unavailable and got no answer from the L1 (the
            function ran, or the guard's error was raised).
        joined: Calls that waited for another caller's fill instead of running the function.
    """

    name: str
    hit: Tally = field(default_factory=Tally)
    miss: Tally = field(default_factory=Tally)
    stale: Tally = field(default_factory=Tally)
    unavailable: Tally = field(default_factory=Tally)
    joined: Tally = field(default_factory=Tally)

    def snapshot(self) -> dict[str, int]:
        """The totals as plain numbers."""
        return {
            "hit": self.hit.value,
            "miss": self.miss.value,
            "stale": self.stale.value,
            "unavailable": self.unavailable.value,
            "joined": self.joined.value,
        }


_stats: dict[str, CacheStats] = {}
_stats_lock = threading.Lock()
renew_lock_after_fork(__name__, "_stats_lock")


def _cache_stats(name: str) -> CacheStats:
    with _stats_lock:
        found = _stats.get(name)
        if found is None:
            found = _stats[name] = CacheStats(name)
        return found


def cache_stats() -> list[CacheStats]:
    """Every cache's totals, sorted by name (exported as ``cache_lookups_total`` and
    ``cache_stale_served_total``)."""
    with _stats_lock:
        return sorted(_stats.values(), key=lambda s: s.name)


def _unavailable_marker(*args: Any, **kwargs: Any) -> Failure | None:
    """The guards' fallback: the Failure itself (a GET reply is never one)."""
    return current_failure()


def _is_failure(reply: Any) -> bool:
    return reply.__class__ is Failure or reply is DOWN


class _Down:
    """The open-circuit GET guard's fallback value."""

    def __repr__(self) -> str:
        return "<Redis unavailable>"


DOWN: Any = _Down()


def _render(value: Any, fn_name: str, what: str) -> str:
    """One argument of a default key: its repr (quoted strings cannot collide with ``,``)."""
    if isinstance(value, _SIMPLE):
        return repr(value)
    raise TypeError(
        f"@cached {fn_name}: cannot build a key from {what} of type {type(value).__name__} "
        "(the default key takes str, int, float, bool, None and bytes arguments); pass "
        "key=lambda ...: ... to build it yourself"
    )


class CacheCore:
    """One decorated function's cache: configuration, guarded commands, policy steps."""

    def __init__(
        self,
        fn: Callable[..., Any],
        client: Any,
        *,
        is_async: bool,
        ttl: float,
        stale_for: float,
        key: Callable[..., str] | None,
        prefix: str,
        name: str,
        serializer: Serializer,
        on_unavailable: OnUnavailable,
        l1: L1,
        breaker: str | Breaker,
        retry: Any,
        classify: Classifier | None,
        trace_success: bool | None,
        tracer_provider: TracerProvider | None,
        meter_provider: MeterProvider | None,
    ) -> None:
        self.fn = fn
        self.fn_name = _fn_name(fn)
        self.name = name
        self.ttl_ms = max(1, round(ttl * 1000))
        self.stale_for = stale_for
        #: A hit refreshes the key's L1 entry only if it is at least this old.
        self.refresh = min(L1_REFRESH, stale_for / 10)
        self.serializer = serializer
        self.dumps = serializer.dumps
        # bytes, or str (decode_responses); the default JSON codec's loads is json.loads itself
        self.loads: Callable[[Any], Any] = (
            json.loads if type(serializer) is JsonSerializer else serializer.loads
        )
        self.on_unavailable = on_unavailable
        self.l1 = l1
        self.prefix = prefix
        self.custom_key = key
        self.base = f"{prefix}{fn.__module__}.{self.fn_name}:"
        self.signature: inspect.Signature | None = None
        self.stats = _cache_stats(name)
        self.telemetry = Telemetry(tracer_provider, meter_provider)
        self.flights = Flights()
        self.aflights = AsyncFlights()
        options: dict[str, Any] = {
            "breaker": breaker,
            "fallback": _unavailable_marker,
            "trace_success": trace_success,
            "tracer_provider": tracer_provider,
            "meter_provider": meter_provider,
        }
        if retry is not _MISSING:
            options["retry"] = retry
        if classify is not None:
            options["classify"] = classify
        get, put, delete = _commands(client, is_async, self.ttl_ms)
        #: The unguarded GET and the client's execute_command, for the shells' inlined hit.
        self.raw_get, self.execute = get, client.execute_command
        # DEL's reply is what invalidate() returns: a replay after a lost reply would say 0.
        guarded: Callable[..., Callable[..., Any]] = redis_guarded
        self.get: Callable[..., Any] = guarded(
            name=f"{name}.get", idempotent=True, access="read", **options
        )(get)
        self.set: Callable[..., Any] = guarded(
            name=f"{name}.set", idempotent=True, access="write", **options
        )(put)
        self.delete: Callable[..., Any] = guarded(
            name=f"{name}.delete", idempotent=False, access="delete", **options
        )(delete)
        # While the breaker is open, a twin of the GET guard (same name, so the same
        # operation stats) with a constant fallback: the guard's cheapest path, no context
        # variable, no fallback call. Its answer means "the circuit was not closed".
        self.get_open: Callable[..., Any] = guarded(
            name=f"{name}.get", idempotent=True, access="read", **{**options, "fallback": DOWN}
        )(get)
        self.guard: _Guard = getattr(self.get, "__redisguard__")  # noqa: B009
        self.gate = self.guard.side
        self.breaker: Breaker = self.guard.breaker
        self.open_guard: _Guard = getattr(self.get_open, "__redisguard__")  # noqa: B009
        #: The shells may inline the GET guards' admission and happy path (reading ``_code``
        #: from state); the open-circuit guard answers a rejection with DOWN, uncalled.
        self.inline = (
            self.guard.inlinable()
            and self.open_guard.inlinable()
            and not self.open_guard.call_fallback
        )
        self.state = self.guard.state_source()
        #: The L1's clock is the guard's (perf_counter): one reading serves both.
        self.same_clock = l1._clock is time.monotonic and _same_clocks()

    # -- keys ----------------------------------------------------------------------------
    def key_for(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """The Redis key of a call with these arguments."""
        if self.custom_key is not None:
            made = self.custom_key(*args, **kwargs)
            if not isinstance(made, str) or not made:
                raise TypeError(
                    f"@cached {self.fn_name}: key= must return a non-empty str, got {made!r}"
                )
            return self.prefix + made
        if not kwargs and len(args) == 1:
            cls = args[0].__class__
            if cls is int or cls is str:  # the common case, without the generic rendering
                return self.base + repr(args[0])
        if kwargs:
            args, kwargs = self._normalize(args, kwargs)
        text = ",".join([_render(a, self.fn_name, "an argument") for a in args])
        if kwargs:
            rendered = [
                f"{k}={_render(v, self.fn_name, f'argument {k!r}')}"
                for k, v in sorted(kwargs.items())
            ]
            text = ",".join([text, *rendered]) if text else ",".join(rendered)
        return self.base + text

    def _normalize(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        """Keyword arguments that could be positional become positional (one key per call)."""
        if self.signature is None:
            self.signature = inspect.signature(self.fn)
        bound = self.signature.bind(*args, **kwargs)
        return bound.args, bound.kwargs

    # -- policy steps (no I/O) -----------------------------------------------------------
    def decode(self, key: str, raw: bytes | str) -> Any:
        """The value in ``raw``; ``_MISSING`` for a value that cannot be read (a data error,
        answered as a miss and overwritten by the fill)."""
        try:
            return self.loads(raw)
        except Exception as exc:
            operation = f"{self.name}.get"
            data_error_tally(operation).add()
            logger.warning(
                "Unreadable cached value treated as a miss (%s, key %s): %s",
                operation,
                fingerprint(key),
                type(exc).__name__,
                extra={"category": "cache", "operation": operation, "key": fingerprint(key)},
            )
            return _MISSING

    def encode(self, key: str, value: Any) -> bytes:
        try:
            data = self.dumps(value)
        except (TypeError, ValueError) as exc:
            raise TypeError(
                f"@cached {self.fn_name}: cannot store the result for key {key!r} with "
                f"serializer {getattr(self.serializer, 'name', self.serializer)!r}: {exc}"
            ) from exc
        if not isinstance(data, bytes):
            raise TypeError(
                f"@cached {self.fn_name}: serializer {self.serializer!r} returned "
                f"{type(data).__name__}, not bytes, for key {key!r}"
            )
        return data

    def hit(self, key: str, value: Any, size: int, version: int, started: float) -> None:
        """Count a hit and refresh the key's L1 entry, at most every ``refresh`` seconds.

        The entry then holds a value Redis confirmed at its ``stored_at`` (never a younger
        claim than the truth), and most hits skip the L1's lock. Without stale_for the L1
        serves nothing, so hits leave it alone.
        """
        self.stats.hit.add()
        if self.stale_for > 0:
            entry = self.l1._entries.get(key)
            if entry is None or started - entry.stored_at >= self.refresh:
                self.l1.put(key, value, size, since=version)

    def filled(self, key: str, value: Any, data: bytes, reply: Any, version: int) -> None:
        """Note a fill: the value lands in the L1 even if the SET failed (it is fresh)."""
        if _is_failure(reply):
            logger.info(
                "Cached value not stored in Redis (Redis unavailable) for %s",
                self.name,
                extra={"category": "cache", "operation": self.name},
            )
        self.l1.put(key, value, len(data), since=version)

    def joined(self, key: str, started: float) -> Any:
        """A fill that finished after this call's GET began: its value, else ``_MISSING``."""
        entry = self.l1.peek(key)
        if entry is not None and entry.stored_at >= started:
            self.stats.joined.add()
            return entry.value
        return _MISSING

    def stale(self, key: str, failure: Any) -> Any:
        """The L1's answer while Redis is unavailable, or ``_MISSING`` (then fill or raise).

        ``failure``: the guard's Failure, or ``DOWN`` from the open-circuit GET guard.
        """
        if failure is DOWN:
            failure = self.guard.open_failure
        l1 = self.l1
        entry = l1.get(key) if self.stale_for > 0 else None
        if entry is not None:
            now = l1._clock()
            age = now - entry.stored_at
            if age <= self.stale_for:
                self.stats.stale.add()
                _stale.set(_new_tuple(StaleAnswer, (self.name, key, age, failure)))
                telemetry = self.telemetry
                # Telemetry.tracer()'s own once-a-second recheck, inlined (both monotonic).
                if telemetry._tracer is not None or now >= telemetry._recheck_at:
                    self._trace_stale(key, age, failure)
                return entry.value
        self.stats.unavailable.add()
        if self.on_unavailable == "raise":
            failure = failure or self.guard.open_failure
            raise self.guard.unavailable(failure) from failure.exception
        return _MISSING

    def _trace_stale(self, key: str, age: float, failure: Failure | None) -> None:
        try:
            tracer = self.telemetry.tracer()
            if tracer is None:
                return
            attributes: dict[str, Any] = {
                "db.system.name": "redis",
                "redisguard.operation": self.name,
                "redisguard.breaker": self.breaker.name,
                "redisguard.circuit_state": self.breaker.current_state,
                "redisguard.outcome": "stale",
                "redisguard.cache.stale_age_s": age,
                "redisguard.cache.key": fingerprint(key),
                "redisguard.short_circuited": failure is not None and failure.circuit_open,
            }
            tracer.start_span(f"redisguard {self.name}", attributes=attributes).end()
            current = trace.get_current_span()
            if current.is_recording():
                current.set_attribute("redisguard.cache.stale_age_s", age)
        except Exception:
            _telemetry_failed("cache stale span")

    def deleted(self, key: str, reply: Any) -> Failure | None:
        """A blocked key's pending DEL came back: None if it reached Redis (the key is
        unblocked), else the guard's Failure."""
        if _is_failure(reply):
            return reply  # type: ignore[no-any-return]
        self.l1.unblock(key)
        return None

    def invalidated(self, key: str, reply: Any) -> bool:
        """``invalidate()``'s DEL came back: whether Redis had the key; raises if it failed."""
        if _is_failure(reply):
            raise self.invalidation_failed(key, reply)
        self.l1.unblock(key)
        return bool(reply)

    def finish(self, cached: Callable[..., Any], invalidate: Callable[..., Any]) -> None:
        """Give the wrapper its ``invalidate`` and ``key_for``."""
        key_for = self.key_for
        cached.invalidate = invalidate  # type: ignore[attr-defined]
        cached.key_for = lambda *a, **k: key_for(a, k)  # type: ignore[attr-defined]
        cached.__redisguard_cache__ = self  # type: ignore[attr-defined]

    def invalidation_failed(self, key: str, failure: Failure | None) -> TemporarilyUnavailableError:
        reason = "circuit open" if failure is None or failure.circuit_open else "Redis failed"
        return TemporarilyUnavailableError(
            f"cache {self.name!r}: invalidation of {key!r} did not reach Redis ({reason}); "
            "this process will not serve the old value from its L1, and will send the DEL "
            "on the next call for the key that finds Redis available; Redis (and other "
            "processes) still hold the old value until then or until its ttl",
            operation=f"{self.name}.delete",
            breaker=self.breaker.name,
            attempts=0 if failure is None else failure.attempts,
            retry_after=retry_after(self.breaker),
        )


def _same_clocks() -> bool:
    """Whether ``time.monotonic`` and ``time.perf_counter`` read the same clock (Linux)."""
    mono, perf = time.get_clock_info("monotonic"), time.get_clock_info("perf_counter")
    return mono.implementation == perf.implementation


def _fn_name(fn: Any) -> str:
    return str(getattr(fn, "__qualname__", None) or type(fn).__qualname__)


def _commands(
    client: Any, is_async: bool, ttl_ms: int
) -> tuple[Callable[..., Any], Callable[..., Any], Callable[..., Any]]:
    execute = client.execute_command
    if is_async:

        async def aget(key: str) -> Any:
            return await execute("GET", key)

        async def aset(key: str, data: bytes) -> Any:
            return await execute("SET", key, data, "PX", ttl_ms)

        async def adelete(key: str) -> Any:
            return await execute("DEL", key)

        return aget, aset, adelete

    def get(key: str) -> Any:
        return execute("GET", key)

    def put(key: str, data: bytes) -> Any:
        return execute("SET", key, data, "PX", ttl_ms)

    def delete(key: str) -> Any:
        return execute("DEL", key)

    return get, put, delete


def follow_chaos(core: CacheCore, shell: Callable[..., Any]) -> None:
    """While chaos (``redisguard._chaos``) injects into the cache's GET guards, ``shell``
    takes the general path: its inlined hit and stale answer skip the guard's function,
    which is where the faults go in. A hook on each guard flips the shell's ``inline``
    closure cell when injection starts and stops; nothing is read per call."""
    if not core.inline:
        return
    code = shell.__code__
    cell = (shell.__closure__ or ())[code.co_freevars.index("inline")]
    guards = (core.guard, core.open_guard)

    def hook(_: bool) -> None:
        cell.cell_contents = all(
            g.fn_cell is None or g.fn_cell.cell_contents is g.fn for g in guards
        )

    for guard in guards:
        guard.chaos_hooks.append(hook)
    hook(False)  # chaos may be on already: the guards were registered when made


# -- shells ----------------------------------------------------------------------------------
# Both shells inline the two hot cases, as the guard's own shells do; everything else (a
# single-flight in progress, blocked keys, a half-open circuit, listeners, policies that need
# the guard's own shell) takes the general path.
# - A hit, circuit closed: the key of a single int/str argument is rendered in place, the
#   guarded GET runs the guard's closed-circuit happy path (see _Guard.inlinable) around
#   client.execute_command directly, the hit is counted and noted in the L1 in place.
# - A stale answer, circuit open: the open-circuit GET guard's admission and constant
#   fallback run in place (its counts and short-circuit span), then the L1 answers; the
#   StaleAnswer of the previous call is replaced, not cleared first. A half-open trial it
#   admits runs that guard's happy path in place.
# The tallies are bumped as Tally.add does, without its frame.
def sync_wrapper(core: CacheCore) -> Callable[..., Any]:  # noqa: PLR0915 - closures, inlined
    fn, l1, flights, get, key_for = core.fn, core.l1, core.flights, core.get, core.key_for
    loads, clock, gate, get_open = core.loads, l1._clock, core.gate, core.get_open
    guard, breaker, execute, raw_get = core.guard, core.breaker, core.execute, core.raw_get
    inline, state, failed, same_clock = core.inline, core.state, guard.failed, core.same_clock
    open_guard, admit = core.open_guard, gate._admit
    open_failed, open_constant = open_guard.failed, open_guard.constant_fallback
    open_success_add = open_guard.success.add
    failures = breaker._window_storage._failures  # cleared in place, never rebound
    on_success, perf = gate._on_success, time.perf_counter
    success_add, success_local = guard.success.add, guard.success._local
    hit_add, hit_local = core.stats.hit.add, core.stats.hit._local
    stale_add, stale_local = core.stats.stale.add, core.stats.stale._local
    entries, put, refresh, stale_for = l1._entries, l1.put, core.refresh, core.stale_for
    flight_table, blocked = flights._flights, l1._blocked  # both changed in place only
    base, simple, name, telemetry = core.base, core.custom_key is None, core.name, core.telemetry
    stale_get, stale_set = _stale.get, _stale.set

    def fill(
        key: str, args: tuple[Any, ...], kwargs: dict[str, Any], version: int, miss: bool
    ) -> Any:
        def work() -> Any:
            if miss:
                core.stats.miss.add()
            value = fn(*args, **kwargs)
            data = core.encode(key, value)
            core.filled(key, value, data, core.set(key, data), version)
            return value

        value, led = flights.run(key, work)
        if not led:
            core.stats.joined.add()
        return value

    def missed(
        key: str, args: tuple[Any, ...], kwargs: dict[str, Any], version: int, started: float
    ) -> Any:
        """Redis answered "not there" (or an unreadable value): the value of a fill that
        finished meanwhile, else fill."""
        value = core.joined(key, started)
        if value is not _MISSING:
            return value
        return fill(key, args, kwargs, version, True)

    def answer(
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        raw: Any,
        version: int,
        started: float,
    ) -> Any:
        """The GET's reply: a hit, a miss, or Redis unavailable."""
        cls = raw.__class__
        if cls is bytes or cls is str:
            try:
                value = loads(raw)
            except Exception:
                value = core.decode(key, raw)  # logs and counts; _MISSING
            if value is not _MISSING:
                core.hit(key, value, len(raw), version, started)
                return value
        elif raw is not None:
            value = core.stale(key, raw)
            if value is not _MISSING:
                return value
            return fill(key, args, kwargs, version, False)
        return missed(key, args, kwargs, version, started)

    def general(key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if stale_get() is not None:
            stale_set(None)
        if flight_table:
            found, value = flights.join(key)
            if found:
                core.stats.joined.add()
                return value
        if blocked and l1.is_blocked(key):
            failure = core.deleted(key, core.delete(key))  # the pending DEL goes first
            if failure is not None:
                core.stale(key, failure)  # blocked: never served; counts, or raises
                return fill(key, args, kwargs, l1.version, False)
        version, started = l1.version, clock()
        raw = get(key) if gate._code != OPEN else get_open(key)
        return answer(key, args, kwargs, raw, version, started)

    @functools.wraps(fn)
    def cached(*args: Any, **kwargs: Any) -> Any:  # noqa: PLR0915 - inlined on purpose
        if (
            simple
            and not kwargs
            and len(args) == 1
            and ((cls := args[0].__class__) is int or cls is str)
        ):
            key = base + repr(args[0])  # key_for's common case
        else:
            key = key_for(args, kwargs)
        if flight_table or blocked:
            return general(key, args, kwargs)
        if state._code == CLOSED and inline and not breaker._wants_call_events:
            if stale_get() is not None:
                stale_set(None)
            version, started = l1.version, clock()
            began = started if same_clock else perf()
            try:
                raw = execute("GET", key)
            except BaseException as exc:
                raw = failed(raw_get, (key,), {}, NORMAL, exc, began)
            else:
                if failures or breaker._wants_call_events:
                    on_success(NORMAL, False, 0.0)
                try:
                    success_local.owner.cell.n += 1
                except AttributeError:
                    success_add()
            cls = raw.__class__
            if cls is bytes or cls is str:
                try:
                    value = loads(raw)
                except Exception:
                    value = core.decode(key, raw)  # logs and counts; _MISSING
                if value is not _MISSING:
                    try:
                        hit_local.owner.cell.n += 1
                    except AttributeError:
                        hit_add()
                    if stale_for > 0:  # CacheCore.hit's L1 refresh
                        entry = entries.get(key)
                        if entry is None or started - entry[1] >= refresh:
                            put(key, value, len(raw), since=version)
                    return value
                return missed(key, args, kwargs, version, started)
            return answer(key, args, kwargs, raw, version, started)
        if gate._code != OPEN or not inline or breaker._wants_call_events:
            return general(key, args, kwargs)
        # The open-circuit GET guard (get_open), inlined: admission, then its constant
        # fallback's accounting on a rejection, or its happy path for an admitted trial.
        ticket = admit()
        if ticket == REJECT:
            open_constant()  # counts, logs at DEBUG, the short-circuit span; always True
            # No GET: the version only guards a fill's put, started only a Redis reply.
            raw, version, started = DOWN, l1.version, 0.0
        else:
            version, started = l1.version, clock()
            began = started if same_clock else perf()
            try:
                raw = execute("GET", key)
            except BaseException as exc:
                raw = open_failed(raw_get, (key,), {}, ticket, exc, began)
            else:
                if ticket or failures or breaker._wants_call_events:
                    on_success(ticket, False, 0.0)
                open_success_add()
        if raw is DOWN and stale_for > 0:  # CacheCore.stale's answer
            entry = entries.get(key)
            if entry is not None:
                now = clock()
                age = now - entry[1]
                if age <= stale_for:
                    try:  # noqa: SIM105 - L1.get's LRU touch
                        entries.move_to_end(key)
                    except KeyError:
                        pass
                    try:
                        stale_local.owner.cell.n += 1
                    except AttributeError:
                        stale_add()
                    failure = guard.open_failure
                    stale_set(_new_tuple(StaleAnswer, (name, key, age, failure)))
                    # Telemetry.tracer()'s own once-a-second recheck (both monotonic).
                    if telemetry._tracer is not None or now >= telemetry._recheck_at:
                        core._trace_stale(key, age, failure)
                    return entry[0]
        if stale_get() is not None:
            stale_set(None)
        return answer(key, args, kwargs, raw, version, started)

    def invalidate(*args: Any, **kwargs: Any) -> bool:
        key = key_for(args, kwargs)
        l1.block(key)  # first: nothing stale is served while the DEL is in flight
        return core.invalidated(key, core.delete(key))

    core.finish(cached, invalidate)
    return cached


def async_wrapper(core: CacheCore) -> Callable[..., Any]:  # noqa: PLR0915 - closures, inlined
    fn, l1, flights, get, key_for = core.fn, core.l1, core.aflights, core.get, core.key_for
    loads, clock, gate, get_open = core.loads, l1._clock, core.gate, core.get_open
    guard, breaker, execute, raw_get = core.guard, core.breaker, core.execute, core.raw_get
    inline, state, failed, same_clock = core.inline, core.state, guard.afailed, core.same_clock
    open_guard, admit = core.open_guard, gate._admit
    open_afailed, open_constant = open_guard.afailed, open_guard.constant_fallback
    open_success_add = open_guard.success.add
    failures = breaker._window_storage._failures  # cleared in place, never rebound
    on_success, perf = gate._on_success, time.perf_counter
    success_add, success_local = guard.success.add, guard.success._local
    hit_add, hit_local = core.stats.hit.add, core.stats.hit._local
    stale_add, stale_local = core.stats.stale.add, core.stats.stale._local
    entries, put, refresh, stale_for = l1._entries, l1.put, core.refresh, core.stale_for
    flight_table, blocked = flights._flights, l1._blocked  # both changed in place only
    base, simple, name, telemetry = core.base, core.custom_key is None, core.name, core.telemetry
    stale_get, stale_set = _stale.get, _stale.set

    async def fill(
        key: str, args: tuple[Any, ...], kwargs: dict[str, Any], version: int, miss: bool
    ) -> Any:
        async def work() -> Any:
            if miss:
                core.stats.miss.add()
            value = await fn(*args, **kwargs)
            data = core.encode(key, value)
            core.filled(key, value, data, await core.set(key, data), version)
            return value

        value, led = await flights.run(key, work)
        if not led:
            core.stats.joined.add()
        return value

    async def missed(
        key: str, args: tuple[Any, ...], kwargs: dict[str, Any], version: int, started: float
    ) -> Any:
        value = core.joined(key, started)
        if value is not _MISSING:
            return value
        return await fill(key, args, kwargs, version, True)

    async def answer(
        key: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        raw: Any,
        version: int,
        started: float,
    ) -> Any:
        cls = raw.__class__
        if cls is bytes or cls is str:
            try:
                value = loads(raw)
            except Exception:
                value = core.decode(key, raw)  # logs and counts; _MISSING
            if value is not _MISSING:
                core.hit(key, value, len(raw), version, started)
                return value
        elif raw is not None:
            value = core.stale(key, raw)
            if value is not _MISSING:
                return value
            return await fill(key, args, kwargs, version, False)
        return await missed(key, args, kwargs, version, started)

    async def general(key: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if stale_get() is not None:
            stale_set(None)
        if flight_table:
            found, value = await flights.join(key)
            if found:
                core.stats.joined.add()
                return value
        if blocked and l1.is_blocked(key):
            failure = core.deleted(key, await core.delete(key))  # the pending DEL goes first
            if failure is not None:
                core.stale(key, failure)  # blocked: never served; counts, or raises
                return await fill(key, args, kwargs, l1.version, False)
        version, started = l1.version, clock()
        raw = await (get(key) if gate._code != OPEN else get_open(key))
        return await answer(key, args, kwargs, raw, version, started)

    @functools.wraps(fn)
    async def cached(*args: Any, **kwargs: Any) -> Any:  # noqa: PLR0915 - inlined on purpose
        if (
            simple
            and not kwargs
            and len(args) == 1
            and ((cls := args[0].__class__) is int or cls is str)
        ):
            key = base + repr(args[0])  # key_for's common case
        else:
            key = key_for(args, kwargs)
        if flight_table or blocked:
            return await general(key, args, kwargs)
        if state._code == CLOSED and inline and not breaker._wants_call_events:
            if stale_get() is not None:
                stale_set(None)
            version, started = l1.version, clock()
            began = started if same_clock else perf()
            try:
                raw = await execute("GET", key)
            except BaseException as exc:
                raw = await failed(raw_get, (key,), {}, NORMAL, exc, began)
            else:
                if failures or breaker._wants_call_events:
                    on_success(NORMAL, False, 0.0)
                try:
                    success_local.owner.cell.n += 1
                except AttributeError:
                    success_add()
            cls = raw.__class__
            if cls is bytes or cls is str:
                try:
                    value = loads(raw)
                except Exception:
                    value = core.decode(key, raw)  # logs and counts; _MISSING
                if value is not _MISSING:
                    try:
                        hit_local.owner.cell.n += 1
                    except AttributeError:
                        hit_add()
                    if stale_for > 0:  # CacheCore.hit's L1 refresh
                        entry = entries.get(key)
                        if entry is None or started - entry[1] >= refresh:
                            put(key, value, len(raw), since=version)
                    return value
                return await missed(key, args, kwargs, version, started)
            return await answer(key, args, kwargs, raw, version, started)
        if gate._code != OPEN or not inline or breaker._wants_call_events:
            return await general(key, args, kwargs)
        # The open-circuit GET guard (get_open), inlined: admission, then its constant
        # fallback's accounting on a rejection, or its happy path for an admitted trial.
        ticket = admit()
        if ticket == REJECT:
            open_constant()  # counts, logs at DEBUG, the short-circuit span; always True
            # No GET: the version only guards a fill's put, started only a Redis reply.
            raw, version, started = DOWN, l1.version, 0.0
        else:
            version, started = l1.version, clock()
            began = started if same_clock else perf()
            try:
                raw = await execute("GET", key)
            except BaseException as exc:
                raw = await open_afailed(raw_get, (key,), {}, ticket, exc, began)
            else:
                if ticket or failures or breaker._wants_call_events:
                    on_success(ticket, False, 0.0)
                open_success_add()
        if raw is DOWN and stale_for > 0:  # CacheCore.stale's answer
            entry = entries.get(key)
            if entry is not None:
                now = clock()
                age = now - entry[1]
                if age <= stale_for:
                    try:  # noqa: SIM105 - L1.get's LRU touch
                        entries.move_to_end(key)
                    except KeyError:
                        pass
                    try:
                        stale_local.owner.cell.n += 1
                    except AttributeError:
                        stale_add()
                    failure = guard.open_failure
                    stale_set(_new_tuple(StaleAnswer, (name, key, age, failure)))
                    # Telemetry.tracer()'s own once-a-second recheck (both monotonic).
                    if telemetry._tracer is not None or now >= telemetry._recheck_at:
                        core._trace_stale(key, age, failure)
                    return entry[0]
        if stale_get() is not None:
            stale_set(None)
        return await answer(key, args, kwargs, raw, version, started)

    async def invalidate(*args: Any, **kwargs: Any) -> bool:
        key = key_for(args, kwargs)
        l1.block(key)  # first: nothing stale is served while the DEL is in flight
        return core.invalidated(key, await core.delete(key))

    core.finish(cached, invalidate)
    return cached


def check_options(
    ttl: float, stale_for: float, prefix: str, on_unavailable: str
) -> tuple[float, float]:
    for label, value in (("ttl", ttl), ("stale_for", stale_for)):
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ConfigError(f"@cached {label} must be a number of seconds, got {value!r}")
    if not ttl > 0:
        raise ConfigError(f"@cached ttl must be positive, got {ttl!r}")
    if stale_for < 0:
        raise ConfigError(
            f"@cached stale_for must be >= 0 (0: never serve stale), got {stale_for!r}"
        )
    if not isinstance(prefix, str):
        raise ConfigError(f"@cached prefix must be a string, got {prefix!r}")
    if on_unavailable not in ("call", "raise"):
        raise ConfigError(
            f"@cached on_unavailable must be 'call' or 'raise', got {on_unavailable!r}"
        )
    return float(ttl), float(stale_for)


def is_async_client(client: Any) -> bool:
    execute = getattr(client, "execute_command", None)
    if not callable(execute):
        raise TypeError(f"@cached needs a redis-py client (with execute_command), got {client!r}")
    return inspect.iscoroutinefunction(execute)
