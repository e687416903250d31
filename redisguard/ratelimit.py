"""A Redis-backed rate limiter that says what it does when Redis is down.

Algorithm: **GCRA** (the generic cell rate algorithm, as in redis-cell and go-redis/redis_rate),
run as one Lua script per decision (``EVALSHA``; on ``NOSCRIPT`` the script is loaded and the
call repeated once). Why GCRA rather than a sliding window:

* one key holding one number per client (a sliding-window *log* stores one entry per request,
  so memory grows with the limit; a sliding-window *counter* is an approximation);
* exact ``remaining``, ``retry_after`` and ``reset_after`` fall out of the arithmetic;
* it spreads requests (``limit`` per ``window`` with a burst of ``limit``) instead of letting a
  client spend a whole window's budget at a window boundary twice in a row;
* the script reads the Redis server's clock (``TIME``), so app servers' clock skew is irrelevant.

When Redis is unavailable (errors or an open breaker), ``on_unavailable`` decides:

``"open"`` (the default)
    allow every request (``Decision.degraded`` is True);
``"closed"``
    deny every request, with ``retry_after`` from the breaker;
``"local"``
    decide with an in-process GCRA limiter holding at most ``local_max_keys`` keys (least
    recently used evicted), so the service stays protected -- per process, not globally.

Every decision is counted in :class:`LimiterStats` (read them with :func:`limiter_stats`):
``allowed``, ``denied``, ``fail_open``, ``fail_closed``, ``local_allowed``, ``local_denied``.
A metrics exporter can publish them as ``ratelimit_decisions_total{limiter, result}``.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

from redis.exceptions import NoScriptError

from ._breaker import Breaker
from ._errors import ConfigError
from ._fork import after_fork, renew_lock_after_fork
from ._stores_core import (
    AsyncCommands,
    Flow,
    OpSpec,
    Outage,
    SyncCommands,
    adrive,
    async_ops,
    drive,
    resolve_breaker,
    retry_after,
    sync_ops,
)
from ._tally import Tally

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import TracerProvider

__all__ = [
    "GCRA_SCRIPT",
    "AsyncRateLimiter",
    "Decision",
    "LimiterStats",
    "LocalLimiter",
    "RateLimitExceeded",
    "RateLimiter",
    "gcra",
    "limiter_stats",
]

Policy = Literal["open", "closed", "local"]

#: KEYS[1] = bucket; ARGV = limit, window in ms, cost.
#: Returns {allowed 0/1, remaining, retry_after ms, reset_after ms}.
GCRA_SCRIPT = """
local limit = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local interval = period / limit
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - period
if allow_at > now then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
local ttl = math.max(1, math.ceil(new_tat - now))
redis.call('SET', KEYS[1], string.format('%.3f', new_tat), 'PX', ttl)
return {1, math.floor((now - allow_at) / interval + 1e-9), 0, math.ceil(new_tat - now)}
"""
GCRA_SHA = hashlib.sha1(GCRA_SCRIPT.encode()).hexdigest()


class Decision(NamedTuple):
    """The answer for one request (an immutable named tuple: cheap on the hot path).

    Attributes:
        allowed: Whether the request may proceed.
        remaining: Requests still allowed right now after this one.
        reset_after: Seconds until the client's budget is full again.
        degraded: True when Redis was unavailable and ``on_unavailable`` decided.
        retry_after: When denied, seconds until a request would be allowed (else 0).
        limit: The configured limit per window.
    """

    allowed: bool
    remaining: int
    reset_after: float
    degraded: bool = False
    retry_after: float = 0.0
    limit: int = 0


_EPSILON = 1e-9


class RateLimitExceeded(Exception):
    """A limiter denied a request: the web integrations answer it with 429 and Retry-After.

    Attributes:
        decision: The limiter's :class:`Decision` (``allowed`` is False).
    """

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        super().__init__(f"rate limit exceeded; retry after {self.retry_after} s")

    @property
    def retry_after(self) -> int:
        """Whole seconds for the ``Retry-After`` header (at least 1)."""
        return max(1, math.ceil(self.decision.retry_after))


def gcra(
    tat: float | None, now: float, limit: int, window: float, cost: int = 1
) -> tuple[Decision, float | None]:
    """One GCRA step in seconds (the Lua script's arithmetic, for the local limiter).

    Returns:
        The decision and the new theoretical arrival time to store (None: leave it).
    """
    interval = window / limit
    if tat is None or tat < now:
        tat = now
    new_tat = tat + interval * cost
    allow_at = new_tat - window
    # (now + w) - w can exceed now by one ulp: a request exactly at its allowance is allowed.
    if allow_at - now > _EPSILON:
        return Decision(False, 0, tat - now, retry_after=allow_at - now, limit=limit), None
    remaining = math.floor((now - allow_at) / interval + 1e-9)
    return Decision(True, remaining, new_tat - now, limit=limit), new_tat


class LocalLimiter:
    """An in-process GCRA limiter with at most ``max_keys`` keys (LRU eviction).

    Thread-safe; its lock is never held across I/O (there is none).
    """

    def __init__(
        self,
        limit: int,
        window: float,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not isinstance(max_keys, int) or max_keys < 1:
            raise ConfigError(f"local_max_keys must be a positive integer, got {max_keys!r}")
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._clock = clock
        self._tats: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()
        after_fork(self, LocalLimiter._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork

    def __len__(self) -> int:
        return len(self._tats)

    def hit(self, key: str, cost: int = 1) -> Decision:
        """Decide for ``key`` and record the hit if allowed."""
        now = self._clock()
        with self._lock:
            decision, new_tat = gcra(self._tats.get(key), now, self.limit, self.window, cost)
            if new_tat is not None:
                self._tats[key] = new_tat
                self._tats.move_to_end(key)
                while len(self._tats) > self.max_keys:
                    self._tats.popitem(last=False)
        return decision


@dataclass(eq=False)
class LimiterStats:
    """Decision counters of one limiter name (shared by limiters with the same name)."""

    name: str
    allowed: Tally = field(default_factory=Tally)
    denied: Tally = field(default_factory=Tally)
    fail_open: Tally = field(default_factory=Tally)
    fail_closed: Tally = field(default_factory=Tally)
    local_allowed: Tally = field(default_factory=Tally)
    local_denied: Tally = field(default_factory=Tally)

    RESULTS: ClassVar[tuple[str, ...]] = (
        "allowed",
        "denied",
        "fail_open",
        "fail_closed",
        "local_allowed",
        "local_denied",
    )

    def snapshot(self) -> dict[str, int]:
        """The counts as plain numbers, by result."""
        return {result: getattr(self, result).value for result in self.RESULTS}


_stats: dict[str, LimiterStats] = {}
_stats_lock = threading.Lock()
renew_lock_after_fork(__name__, "_stats_lock")


def _limiter_stats(name: str) -> LimiterStats:
    with _stats_lock:
        stats = _stats.get(name)
        if stats is None:
            stats = _stats[name] = LimiterStats(name)
        return stats


def limiter_stats() -> list[LimiterStats]:
    """Every limiter's counters, sorted by name."""
    with _stats_lock:
        return sorted(_stats.values(), key=lambda s: s.name)


_DEFAULT: Any = object()


class _LimiterCore:
    """Everything the twins share: validation, the flow, the degraded policies."""

    SPECS: ClassVar[Mapping[str, OpSpec]] = {
        # A replayed EVALSHA after a lost reply would count the request twice: it is retried
        # only for errors that prove it never ran (refused connection, BUSY, LOADING...).
        # The script SETs the bucket: a write (OOM, READONLY and MISCONF refuse it).
        "hit": OpSpec("hit", "EVALSHA", degrade=True, idempotent=False, access="write"),
        # SCRIPT LOAD of the same script returns the same SHA every time. It touches no key:
        # Redis runs it during an OOM, after a failed save and on a replica, so a read.
        "load": OpSpec("load", "SCRIPT LOAD", degrade=True, idempotent=True, access="read"),
    }

    def __init__(
        self,
        limit: int,
        window: float,
        on_unavailable: Policy,
        prefix: str,
        name: str,
        breaker: str | Breaker,
        local_max_keys: int,
        local_limit: int | None,
    ) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"limit must be a positive integer, got {limit!r}")
        if isinstance(window, bool) or not isinstance(window, int | float) or not window > 0:
            raise ConfigError(f"window must be a positive number of seconds, got {window!r}")
        if on_unavailable not in ("open", "closed", "local"):
            raise ConfigError(
                f"on_unavailable must be 'open', 'closed' or 'local', got {on_unavailable!r}"
            )
        self.limit = limit
        self.window = float(window)
        self.on_unavailable: Policy = on_unavailable
        self.prefix = prefix
        self.name = name
        self.breaker = resolve_breaker(breaker)
        self.stats = _limiter_stats(name)
        self._allowed, self._denied = self.stats.allowed, self.stats.denied
        self.local = LocalLimiter(local_limit or limit, window, local_max_keys)
        self._window_ms = max(1, round(self.window * 1000))

    def hit_flow(self, key: str, cost: int) -> Flow[Decision]:
        if not isinstance(key, str):
            raise TypeError(f"rate-limit key must be a string, got {type(key).__name__}")
        args = (GCRA_SHA, 1, self.prefix + key, self.limit, self._window_ms, cost)
        try:
            reply = yield ("hit", args)
        except NoScriptError:
            # An empty script cache (new or restarted server): load once, ask again.
            loaded = yield ("load", (GCRA_SCRIPT,))
            reply = loaded if isinstance(loaded, Outage) else (yield ("hit", args))
        if isinstance(reply, Outage):
            return self.degraded(key, cost)
        if reply[0]:
            self._allowed.add()
            return Decision(True, reply[1], reply[3] / 1000, False, 0.0, self.limit)
        self._denied.add()
        return Decision(False, 0, reply[3] / 1000, False, reply[2] / 1000, self.limit)

    def degraded(self, key: str, cost: int) -> Decision:
        """Redis is unavailable: apply ``on_unavailable`` and count the choice."""
        policy = self.on_unavailable
        if policy == "open":
            self.stats.fail_open.add()
            return Decision(True, self.limit, 0.0, True, 0.0, self.limit)
        if policy == "closed":
            self.stats.fail_closed.add()
            wait = float(retry_after(self.breaker))
            return Decision(False, 0, wait, True, wait, self.limit)
        local = self.local.hit(key, cost)
        (self.stats.local_allowed if local.allowed else self.stats.local_denied).add()
        return Decision(
            local.allowed, local.remaining, local.reset_after, True, local.retry_after, self.limit
        )


class RateLimiter(_LimiterCore):
    """``limit`` requests per ``window`` seconds per key, decided atomically in Redis.

    Args:
        client: A sync redis-py client.
        limit: Requests allowed per window (also the burst size).
        window: Window length in seconds.
        on_unavailable: ``"open"`` (allow), ``"closed"`` (deny) or ``"local"`` (in-process
            limiter) while Redis is unavailable.
        prefix: Key prefix of the buckets.
        name: Names the guard operation (``{name}.hit``) and the counters.
        breaker: Breaker name or object guarding the calls.
        local_max_keys: Memory bound of the local limiter.
        local_limit: Per-process limit for ``"local"`` (default ``limit``; with N processes
            the effective limit during an outage is up to N times this).
        tracer_provider: Where this component's spans go (the global provider when None).
        meter_provider: Where this component's metrics go (the global provider when None).
    """

    def __init__(
        self,
        client: SyncCommands,
        limit: int,
        window: float,
        *,
        on_unavailable: Policy = "open",
        prefix: str = "ratelimit:",
        name: str = "ratelimit",
        breaker: str | Breaker = "redis",
        local_max_keys: int = 10_000,
        local_limit: int | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        super().__init__(
            limit, window, on_unavailable, prefix, name, breaker, local_max_keys, local_limit
        )
        self._ops = sync_ops(
            client,
            self.SPECS,
            name=name,
            breaker=self.breaker,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )

    def hit(self, key: str, cost: int = 1) -> Decision:
        """Count one request (or ``cost``) for ``key`` and decide; one Redis round trip."""
        return drive(self.hit_flow(key, cost), self._ops)


class AsyncRateLimiter(_LimiterCore):
    """The asyncio twin of :class:`RateLimiter` (same arguments)."""

    def __init__(
        self,
        client: AsyncCommands,
        limit: int,
        window: float,
        *,
        on_unavailable: Policy = "open",
        prefix: str = "ratelimit:",
        name: str = "ratelimit",
        breaker: str | Breaker = "redis",
        local_max_keys: int = 10_000,
        local_limit: int | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        super().__init__(
            limit, window, on_unavailable, prefix, name, breaker, local_max_keys, local_limit
        )
        self._ops: dict[str, Callable[..., Awaitable[Any]]] = async_ops(
            client,
            self.SPECS,
            name=name,
            breaker=self.breaker,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
        )

    async def hit(self, key: str, cost: int = 1) -> Decision:
        """See :meth:`RateLimiter.hit`."""
        return await adrive(self.hit_flow(key, cost), self._ops)
