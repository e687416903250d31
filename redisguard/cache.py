"""A read-through Redis cache that serves stale values while Redis is down: ``@cached``.

::

    from redisguard.cache import cached, stale_answer

    @cached(client, ttl=60, stale_for=600)
    def get_profile(user_id: int) -> dict:
        return db.load_profile(user_id)          # runs on a miss, once per key at a time

    get_profile(42)                              # GET cache:app.get_profile:42, else fill
    get_profile.invalidate(42)                   # DEL, and the L1 forgets it

What a call does:

* **Redis answers**: a hit returns the stored value; a miss calls the function (once for all
  concurrent callers of that key in this process: *single-flight*) and stores its result with
  ``SET ... PX ttl``. Both also note the value in a bounded in-process L1, which is *not read*
  while Redis answers: Redis stays the source of truth.
* **Redis is unavailable** (the breaker is open, or the guarded GET fell back after its
  retries): the L1 answers if it holds the key from no more than ``stale_for`` seconds ago.
  :func:`stale_answer` then returns a :class:`StaleAnswer` (the value's age and the guard's
  :class:`~redisguard.Failure`), the span ``redisguard <name>`` carries
  ``redisguard.cache.stale_age_s`` and ``cache_stale_served_total{cache}`` counts it.
  Otherwise the function is called (``on_unavailable="call"``, the default; its own
  fallbacks apply) or the guard's error is raised (``on_unavailable="raise"``:
  :class:`~redisguard.CircuitOpenError` / :class:`~redisguard.RedisUnavailableError`).
* **Invalidation**: ``fn.invalidate(*args)`` deletes the key from Redis and from the L1 and
  returns whether Redis had it. If Redis is unavailable it raises
  :class:`~redisguard.TemporarilyUnavailableError`: the delete did not happen. The key stays
  blocked in this process's L1 (never served stale) until a DEL reaches Redis, which the next
  call for that key sends first when Redis is back. Other processes' L1s are not told: an
  invalidation that reached Redis ends their *fresh* answers at once, but each may still
  serve its own stale copy during a later outage, up to its ``stale_for``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, Protocol, TypeVar, overload

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from ._breaker import Breaker
from ._cache import (
    _MISSING,
    CacheCore,
    CacheStats,
    OnUnavailable,
    StaleAnswer,
    _fn_name,
    async_wrapper,
    cache_stats,
    check_options,
    follow_chaos,
    is_async_client,
    stale_answer,
    sync_wrapper,
)
from ._classify import Classifier
from ._codec import Serializer, SerializerName, resolve_serializer
from ._config import RetryPolicy
from ._errors import ConfigError
from ._guard import _is_async
from ._l1 import L1

__all__ = [
    "AsyncCachedFunction",
    "CacheStats",
    "CachedFunction",
    "Serializer",
    "StaleAnswer",
    "cache_stats",
    "cached",
    "stale_answer",
]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)


class CachedFunction(Protocol[P, R_co]):
    """A sync function under ``@cached``: same signature, plus ``invalidate`` and ``key_for``."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co: ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> bool:
        """Delete the call's key from Redis and the L1; whether Redis had it.

        Raises:
            TemporarilyUnavailableError: the DEL did not reach Redis (the L1 will not serve
                the key until a later DEL does).
        """
        ...

    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The Redis key of a call with these arguments."""
        ...


class AsyncCachedFunction(Protocol[P, R_co]):
    """An ``async def`` under ``@cached``: ``await fn(...)``, ``await fn.invalidate(...)``."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, R_co]: ...

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> Coroutine[Any, Any, bool]:
        """The asyncio twin of :meth:`CachedFunction.invalidate`."""
        ...

    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The Redis key of a call with these arguments."""
        ...


class CacheDecorator(Protocol):
    """What ``cached(...)`` returns: keeps the signature and the return type."""

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, fn: Callable[P, Coroutine[Any, Any, R]], /
    ) -> AsyncCachedFunction[P, R]: ...

    @overload
    def __call__(self, fn: Callable[P, R], /) -> CachedFunction[P, R]: ...


def cached(
    client: Any,
    *,
    ttl: float,
    stale_for: float = 0.0,
    key: Callable[..., str] | None = None,
    name: str | None = None,
    prefix: str = "cache:",
    serializer: SerializerName | Serializer = "json",
    on_unavailable: OnUnavailable = "call",
    max_entries: int | None = 1000,
    max_bytes: int | None = None,
    breaker: str | Breaker = "redis",
    retry: RetryPolicy | None = _MISSING,
    classify: Classifier | None = None,
    trace_success: bool | None = None,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
) -> CacheDecorator:
    """Cache a function's results in Redis, and serve them stale while Redis is down.

    Works on plain and ``async def`` functions; an async function needs an asyncio client
    (``redis.asyncio.Redis``, :func:`redisguard.aconnect`), a sync one a sync client.

    Args:
        client: The redis-py client the cache reads and writes through. Its commands are
            guarded here (``@redis_guarded`` on ``<name>.get``, ``.set``, ``.delete``).
        ttl: Seconds a value lives in Redis (``SET ... PX``).
        stale_for: Seconds a value the L1 holds may still be served while Redis is
            unavailable, counted from when Redis last confirmed it (a hit; hits refresh the
            L1 entry at most every 0.1 s) or was given it (a fill). 0 (the default): never
            serve stale.
        key: Builds the key from the function's arguments (``prefix`` is prepended). By
            default ``<module>.<qualname>:<args>``, from str, int, float, bool, None and bytes
            arguments (keyword arguments that could be positional count as positional);
            any other argument type raises TypeError at the call: pass ``key=`` then.
        name: The operation name in logs, spans and metrics (``<name>.get`` etc. for the
            guarded commands). Default ``cache.<qualname>``.
        prefix: Prepended to every key. Default ``"cache:"``.
        serializer: ``"json"`` (default), ``"bytes"`` (bytes stored untouched) or
            ``"pickle"`` (unsafe for data others can write: unpickling runs code), or any
            object with ``dumps(value) -> bytes`` and ``loads(bytes)``.
        on_unavailable: When Redis is unavailable and the L1 cannot answer: ``"call"`` the
            function (default) or ``"raise"`` the guard's error.
        max_entries: The L1's bound in entries (None: no entry bound).
        max_bytes: The L1's bound in serialized bytes (None: no byte bound).
        breaker: A breaker name or :class:`~redisguard.Breaker`, as for ``redis_guarded``.
        retry: A :class:`~redisguard.RetryPolicy` for the Redis commands, or None for one
            attempt; default ``RetryPolicy()``.
        classify: As for ``redis_guarded`` (default :func:`~redisguard.classify_error`).
        trace_success: As for ``redis_guarded``.
        tracer_provider: Where spans go (the global provider when None).
        meter_provider: Where metrics go (the global provider when None).

    Raises:
        ConfigError: a bad ttl, stale_for, prefix, name, on_unavailable, serializer or bound.
        TypeError: at decoration, for a non-callable, a generator, or a client that does not
            match the function (an async function needs an asyncio client, and vice versa).
    """
    ttl, stale_for = check_options(ttl, stale_for, prefix, on_unavailable)
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigError(f"@cached name must be a non-empty string, got {name!r}")
    if key is not None and not callable(key):
        raise ConfigError(f"@cached key must be a callable returning a str, got {key!r}")
    codec = resolve_serializer(serializer)
    async_client = is_async_client(client)
    l1 = L1(max_entries, max_bytes)

    def decorate(fn: Any) -> Any:
        if not callable(fn):
            raise TypeError(f"@cached needs a function, got {fn!r}")
        if inspect.isgeneratorfunction(fn) or inspect.isasyncgenfunction(fn):
            raise TypeError(f"@cached cannot cache generator {_fn_name(fn)}: cache a list")
        is_async = _is_async(fn)
        if is_async != async_client:
            raise TypeError(
                f"@cached {_fn_name(fn)}: "
                + (
                    "an async function needs an asyncio client (redis.asyncio.Redis)"
                    if is_async
                    else "a sync function needs a sync client (redis.Redis), not an asyncio one"
                )
            )
        core = CacheCore(
            fn,
            client,
            is_async=is_async,
            ttl=ttl,
            stale_for=stale_for,
            key=key,
            prefix=prefix,
            name=name or f"cache.{_fn_name(fn)}",
            serializer=codec,
            on_unavailable=on_unavailable,
            l1=l1,
            breaker=breaker,
            retry=retry,
            classify=classify,
            trace_success=trace_success,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )
        shell = (async_wrapper if is_async else sync_wrapper)(core)
        follow_chaos(core, shell)
        return shell

    return decorate
