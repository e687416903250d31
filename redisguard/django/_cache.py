"""``redisguard.django.RedisCache``: Django's built-in Redis cache, with every operation guarded.

It subclasses ``django.core.cache.backends.redis.RedisCache`` and its client class, so keys,
versions, the pickle serializer, timeouts and results are Django's own on a healthy server.
What changes:

* each server gets one :func:`redisguard.connect` client (0.25 s socket timeouts, the
  recovery prober), shared by every thread's backend instance with the same settings;
* each client operation (``get``, ``set``, ``add``...) runs under ``@redis_guarded`` with the
  name ``"<NAME>.<op>"`` on the breaker ``BREAKER``;
* while Redis is unavailable, reads miss, and writes are dropped and counted
  (``WRITE_FAILURE="drop"``) or raise :class:`TemporarilyUnavailableError`
  (``WRITE_FAILURE="raise"``). Every method whose result can tell, tells (see the table in
  :mod:`redisguard.django`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from django.core.cache.backends.base import DEFAULT_TIMEOUT
from django.core.cache.backends.redis import RedisCache as DjangoRedisCache
from django.core.cache.backends.redis import RedisCacheClient as DjangoRedisCacheClient

from redisguard._breaker import Breaker, get_breaker
from redisguard._client import GuardedRedis, connect
from redisguard._config import BreakerConfig, RetryPolicy
from redisguard._errors import ConfigError
from redisguard._guard import DEFAULT_RETRY, current_failure, redis_guarded
from redisguard._l1 import L1
from redisguard._sides import Access
from redisguard._stores_core import unavailable
from redisguard._tally import Tally

__all__ = [
    "GuardedCacheClient",
    "RedisCache",
    "close_clients",
    "dropped_writes",
    "stale_served",
]

WriteFailure = Literal["drop", "raise"]


@dataclass(frozen=True)
class _Op:
    """One client operation: what it does to Redis and what it answers during an outage.

    Attributes:
        access: Passed to ``redis_guarded(access=...)``.
        idempotent: Whether a retry after a lost reply is as good as one call.
        write: A write (``WRITE_FAILURE`` applies); reads always answer ``outage``.
        outage: What the op returns when it is answered without Redis (a write in "drop"
            mode, or a read); ``_ARG_DEFAULT`` for ``get``'s own ``default`` argument.
        always_raise: No honest value exists (``incr``): raise in either mode.
        invalidates: Which of the op's keys a failed call leaves unknown in Redis, so the
            L1 must not serve them stale: its first argument as one key (``"key"``), as
            keys (``"keys"``), or every key (``"all"``).
    """

    access: Access
    idempotent: bool
    write: bool
    outage: Any = None
    always_raise: bool = False
    invalidates: Literal["key", "keys", "all"] | None = None


_ARG_DEFAULT: Any = object()
_ALL_KEYS: Any = object()

_OPS: Mapping[str, _Op] = {
    "get": _Op("read", True, False, _ARG_DEFAULT),
    "get_many": _Op("read", True, False, {}),
    "has_key": _Op("read", True, False, False),
    # SET key value EX t: a replay stores the same value.
    "set": _Op("write", True, True, None, invalidates="key"),
    # MSET + EXPIREs in one pipeline; Django's set_many answers the keys it failed to store.
    "set_many": _Op("write", True, True, _ALL_KEYS, invalidates="keys"),
    # SET NX: a retried success would read as "already there".
    "add": _Op("write", False, True, False),
    # EXPIRE/PERSIST grow no memory: Redis runs them during an OOM.
    "touch": _Op("delete", True, True, False),
    # DEL's reply says "was there": not idempotent.
    "delete": _Op("delete", False, True, False, invalidates="key"),
    "delete_many": _Op("delete", True, True, None, invalidates="keys"),
    # EXISTS + INCRBY: no number can honestly be returned without Redis.
    "incr": _Op("write", False, True, always_raise=True, invalidates="key"),
    "clear": _Op("delete", True, True, False, invalidates="all"),
}

_dropped: dict[str, Tally] = {}
_dropped_lock = threading.Lock()


def _dropped_tally(operation: str) -> Tally:
    with _dropped_lock:
        tally = _dropped.get(operation)
        if tally is None:
            tally = _dropped[operation] = Tally()
        return tally


def dropped_writes() -> dict[str, int]:
    """Cache writes dropped because Redis was unavailable, by operation.

    For example ``{"django.cache.set": 12, "django.cache.delete": 1}``. Only
    ``WRITE_FAILURE="drop"`` drops writes; ``"raise"`` raises instead.
    """
    with _dropped_lock:
        items = sorted(_dropped.items())
    return {name: tally.value for name, tally in items}


@dataclass(frozen=True)
class _Guarding:
    """The redisguard part of a cache's OPTIONS (upper-case keys), validated."""

    breaker: str
    breaker_config: BreakerConfig | None
    name: str
    retry: RetryPolicy | None
    write_failure: WriteFailure
    socket_timeout: float
    socket_connect_timeout: float
    probe_interval: float | None
    stale_for: float | None = None
    l1_max_entries: int | None = 10_000
    l1_max_bytes: int | None = None
    operations: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def parse(cls, options: Mapping[str, Any]) -> _Guarding:
        unknown = sorted(k for k in options if k.isupper() and k not in _GUARD_KEYS)
        if unknown:
            raise ConfigError(
                f"unknown redisguard cache OPTIONS {unknown}; known: {sorted(_GUARD_KEYS)}"
            )
        breaker = options.get("BREAKER", "redis")
        if not isinstance(breaker, str) or not breaker:
            raise ConfigError(f"OPTIONS['BREAKER'] must be a breaker name, got {breaker!r}")
        config = options.get("BREAKER_CONFIG")
        if isinstance(config, Mapping):
            try:
                config = BreakerConfig(**config)
            except TypeError as exc:
                raise ConfigError(f"OPTIONS['BREAKER_CONFIG']: {exc}") from None
        elif config is not None and not isinstance(config, BreakerConfig):
            raise ConfigError(
                f"OPTIONS['BREAKER_CONFIG'] must be a dict or a BreakerConfig, got {config!r}"
            )
        name = options.get("NAME", "django.cache")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"OPTIONS['NAME'] must be a non-empty string, got {name!r}")
        retry = options.get("RETRY", DEFAULT_RETRY)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigError(f"OPTIONS['RETRY'] must be a RetryPolicy or None, got {retry!r}")
        write_failure = options.get("WRITE_FAILURE", "drop")
        if write_failure not in ("drop", "raise"):
            raise ConfigError(
                f"OPTIONS['WRITE_FAILURE'] must be 'drop' or 'raise', got {write_failure!r}"
            )
        timeouts = {}
        for key in ("SOCKET_TIMEOUT", "SOCKET_CONNECT_TIMEOUT"):
            value = options.get(key, 0.25)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"OPTIONS[{key!r}] must be a positive number, got {value!r}")
            timeouts[key] = float(value)
        interval = options.get("PROBE_INTERVAL")
        if interval is not None and (
            isinstance(interval, bool) or not isinstance(interval, int | float)
        ):
            raise ConfigError(f"OPTIONS['PROBE_INTERVAL'] must be seconds, got {interval!r}")
        stale_for = options.get("STALE_FOR")
        if stale_for is not None and (
            isinstance(stale_for, bool) or not isinstance(stale_for, int | float) or stale_for <= 0
        ):
            raise ConfigError(
                f"OPTIONS['STALE_FOR'] must be a positive number of seconds, got {stale_for!r}"
            )
        max_entries = options.get("L1_MAX_ENTRIES", 10_000)
        max_bytes = options.get("L1_MAX_BYTES")
        if stale_for is not None:
            try:
                L1(max_entries=max_entries, max_bytes=max_bytes)
            except ConfigError as exc:
                raise ConfigError(f"OPTIONS['L1_MAX_ENTRIES'/'L1_MAX_BYTES']: {exc}") from None
        operations = _parse_operations(options.get("OPERATIONS", {}))
        return cls(
            breaker,
            config,
            name,
            retry,
            write_failure,
            timeouts["SOCKET_TIMEOUT"],
            timeouts["SOCKET_CONNECT_TIMEOUT"],
            interval,
            None if stale_for is None else float(stale_for),
            max_entries,
            max_bytes,
            operations,
        )


def _parse_operations(operations: Any) -> dict[str, dict[str, Any]]:
    """``OPTIONS["OPERATIONS"]``: per operation, its own ``BREAKER`` and/or ``RETRY``."""
    if not isinstance(operations, Mapping):
        raise ConfigError(f"OPTIONS['OPERATIONS'] must be a dict, got {operations!r}")
    parsed = {}
    for op, tuning in operations.items():
        where = f"OPTIONS['OPERATIONS'][{op!r}]"
        if op not in _OPS:
            raise ConfigError(f"{where}: unknown operation; known: {sorted(_OPS)}")
        if not isinstance(tuning, Mapping) or not set(tuning) <= {"BREAKER", "RETRY"}:
            raise ConfigError(f"{where} must be a dict with BREAKER and/or RETRY, got {tuning!r}")
        breaker = tuning.get("BREAKER")
        if breaker is not None and (not isinstance(breaker, str) or not breaker):
            raise ConfigError(f"{where}['BREAKER'] must be a breaker name, got {breaker!r}")
        retry = tuning.get("RETRY")
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigError(f"{where}['RETRY'] must be a RetryPolicy or None, got {retry!r}")
        parsed[op] = dict(tuning)
    return parsed


_GUARD_KEYS = frozenset(
    {
        "BREAKER",
        "BREAKER_CONFIG",
        "NAME",
        "RETRY",
        "WRITE_FAILURE",
        "SOCKET_TIMEOUT",
        "SOCKET_CONNECT_TIMEOUT",
        "PROBE_INTERVAL",
        "STALE_FOR",
        "L1_MAX_ENTRIES",
        "L1_MAX_BYTES",
        "OPERATIONS",
    }
)

# One connect() client per (server, settings): Django builds a backend per thread, and each
# client has its own pool and prober thread.
_clients: dict[tuple[str, str], GuardedRedis] = {}
_clients_lock = threading.Lock()


def _shared_client(
    url: str, breakers: tuple[Breaker, ...], guarding: _Guarding, kwargs: dict[str, Any]
) -> Any:
    ids = [id(breaker) for breaker in breakers]
    key = (url, repr((ids, guarding, sorted(kwargs.items(), key=lambda kv: kv[0]))))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = connect(
                url,
                check=False,
                breakers=breakers,
                socket_timeout=guarding.socket_timeout,
                socket_connect_timeout=guarding.socket_connect_timeout,
                probe_interval=guarding.probe_interval,
                **kwargs,
            )
        return client


# One L1 per (servers, settings), shared by every thread's backend instance, as the clients.
_l1s: dict[str, L1] = {}


def _shared_l1(servers: list[str], guarding: _Guarding) -> L1:
    key = repr((servers, guarding))
    with _clients_lock:
        l1 = _l1s.get(key)
        if l1 is None:
            l1 = _l1s[key] = L1(
                max_entries=guarding.l1_max_entries, max_bytes=guarding.l1_max_bytes
            )
        return l1


_stale_served = Tally()


def stale_served() -> int:
    """Cache reads answered from the L1 (``STALE_FOR``) because Redis was unavailable."""
    return _stale_served.value


def close_clients() -> None:
    """Close every shared client (their pools and probers); the next call reconnects."""
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
        _l1s.clear()
    for client in clients:
        client.close()


class GuardedCacheClient(DjangoRedisCacheClient):  # type: ignore[misc]
    """Django's ``RedisCacheClient`` on redisguard clients, each operation guarded."""

    def __init__(
        self,
        servers: list[str],
        *,
        guarding: _Guarding,
        serializer: Any = None,
        pool_class: Any = None,
        parser_class: Any = None,
        **options: Any,
    ) -> None:
        if pool_class is not None:
            raise ConfigError(
                "OPTIONS['pool_class'] is not supported by redisguard.django.RedisCache: "
                "redisguard.connect() builds the pool (pass pool options such as "
                "max_connections instead)"
            )
        super().__init__(servers, serializer=serializer, parser_class=parser_class, **options)
        self.breaker = get_breaker(guarding.breaker, guarding.breaker_config)
        self.guarding = guarding
        self._op_breakers = {
            op: get_breaker(tuning["BREAKER"], guarding.breaker_config)
            for op, tuning in guarding.operations.items()
            if tuning.get("BREAKER")
        }
        #: Every breaker this cache's operations use (the prober drives them all).
        self.breakers = tuple(dict.fromkeys([self.breaker, *self._op_breakers.values()]))
        self._connect_options = dict(self._pool_options)
        self._clients: dict[int, Any] = {}
        self.l1 = None if guarding.stale_for is None else _shared_l1(servers, guarding)
        if parser_class is None:  # connect()'s own default parser, not Django's override
            self._connect_options.pop("parser_class", None)
        for op, spec in _OPS.items():
            method = getattr(self, op)  # the class's (or Django's) bound method
            fallback = self._fallback(op, spec)
            tuning = guarding.operations.get(op, {})
            guard = redis_guarded(
                name=f"{guarding.name}.{op}",
                fallback=fallback,
                breaker=self._op_breakers.get(op, self.breaker),
                retry=tuning.get("RETRY", guarding.retry),
                idempotent=spec.idempotent,
                access=spec.access,
            )
            setattr(self, op, guard(method))

    def _fallback(self, op: str, spec: _Op) -> Callable[..., Any]:
        answer = self._outage_answer(op, spec)
        l1, invalidates = self.l1, spec.invalidates
        if l1 is None or invalidates is None:
            return answer

        def forget(*args: Any, **kwargs: Any) -> Any:
            # The write may or may not have reached Redis: never serve these keys stale.
            if invalidates == "all":
                l1.clear()
            else:
                for key in [args[0]] if invalidates == "key" else list(args[0]):
                    l1.block(key)
            return answer(*args, **kwargs)

        return forget

    def _outage_answer(self, op: str, spec: _Op) -> Callable[..., Any]:
        breaker = self._op_breakers.get(op, self.breaker)
        operation = f"{self.guarding.name}.{op}"
        if spec.always_raise or (spec.write and self.guarding.write_failure == "raise"):

            def refuse(*args: Any, **kwargs: Any) -> Any:
                raise unavailable(f"cache {operation}", breaker, current_failure(), operation)

            return refuse
        if not spec.write:
            if self.l1 is not None and op == "get":
                return self._stale_get
            if self.l1 is not None and op == "get_many":
                return self._stale_get_many
            if spec.outage is _ARG_DEFAULT:
                return _default_argument
            value = spec.outage
            return lambda *args, **kwargs: type(value)() if isinstance(value, dict) else value
        tally = _dropped_tally(operation)
        outage = spec.outage

        def drop(*args: Any, **kwargs: Any) -> Any:
            tally.add()
            if outage is _ALL_KEYS:
                return list(args[0])
            return outage

        return drop

    # -- serve stale (STALE_FOR) -------------------------------------------------------------
    def _stale(self, key: str) -> tuple[bool, Any]:
        l1, stale_for = self.l1, self.guarding.stale_for
        assert l1 is not None
        assert stale_for is not None
        entry = l1.get(key)
        if entry is None or l1.age(entry) > stale_for:
            return False, None
        _stale_served.add()
        # The L1 keeps the serialized value: each caller gets its own copy, as from Redis.
        return True, self._serializer.loads(entry.value)

    def _stale_get(self, key: str, default: Any) -> Any:
        found, value = self._stale(key)
        return value if found else default

    def _stale_get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        answers = {}
        for key in keys:
            found, value = self._stale(key)
            if found:
                answers[key] = value
        return answers

    def _keep(self, since: int, key: str, raw: Any) -> None:
        """Remember what Redis answered for ``key`` (``raw`` None: it has nothing)."""
        assert self.l1 is not None
        if raw is None:
            if self.l1.peek(key) is not None:
                self.l1.discard(key)
        else:
            self.l1.put(key, raw, size=len(raw) if isinstance(raw, bytes) else 8, since=since)

    def get(self, key: str, default: Any) -> Any:
        """Django's ``get``; with ``STALE_FOR``, what Redis answered is kept in the L1."""
        if self.l1 is None:
            return super().get(key, default)
        since = self.l1.version
        raw = self.get_client(key).get(key)
        self._keep(since, key, raw)
        return default if raw is None else self._serializer.loads(raw)

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        """Django's ``get_many``; with ``STALE_FOR``, the answers are kept in the L1."""
        if self.l1 is None:
            return super().get_many(keys)  # type: ignore[no-any-return]
        keys = list(keys)
        since = self.l1.version
        raws = self.get_client(None).mget(keys)
        answers = {}
        for key, raw in zip(keys, raws, strict=True):
            self._keep(since, key, raw)
            if raw is not None:
                answers[key] = self._serializer.loads(raw)
        return answers

    def _written(self, keys: Iterable[str]) -> None:
        """A write reached Redis: the L1 forgets the keys (the next read refills them)."""
        if self.l1 is not None:
            for key in keys:
                self.l1.unblock(key)
                self.l1.discard(key)

    def set(self, key: str, value: Any, timeout: int | None) -> None:
        """Django's ``set``."""
        super().set(key, value, timeout)
        self._written([key])

    def add(self, key: str, value: Any, timeout: int | None) -> bool:
        """Django's ``add``."""
        added: bool = super().add(key, value, timeout)
        if added:
            self._written([key])
        return added

    def delete(self, key: str) -> bool:
        """Django's ``delete``."""
        deleted: bool = super().delete(key)
        self._written([key])
        return deleted

    def delete_many(self, keys: Iterable[str]) -> None:
        """Django's ``delete_many``."""
        keys = list(keys)
        super().delete_many(keys)
        self._written(keys)

    def incr(self, key: str, delta: int) -> int:
        """Django's ``incr``."""
        value: int = super().incr(key, delta)
        self._written([key])
        return value

    def clear(self) -> bool:
        """Django's ``clear``."""
        cleared: bool = super().clear()
        if self.l1 is not None:
            self.l1.clear()
        return cleared

    def get_client(self, key: Any = None, *, write: bool = False) -> Any:
        """The shared guarded client of the server Django's policy picks."""
        index = self._get_connection_pool_index(write)
        client = self._clients.get(index)
        if client is None:
            client = self._clients[index] = _shared_client(
                self._servers[index], self.breakers, self.guarding, self._connect_options
            )
        return client

    def clients(self) -> list[Any]:
        """Every server's client (for the readiness probe)."""
        return [
            _shared_client(url, self.breakers, self.guarding, self._connect_options)
            for url in self._servers
        ]

    def set_many(self, data: Mapping[str, Any], timeout: int | None) -> list[str]:
        """Django's, answering the keys not stored: [] once the pipeline ran."""
        super().set_many(data, timeout)
        self._written(data)
        return []


def _default_argument(key: Any, default: Any) -> Any:
    return default


class RedisCache(DjangoRedisCache):  # type: ignore[misc]
    """A drop-in for ``django.core.cache.backends.redis.RedisCache`` that degrades.

    Upper-case OPTIONS tune redisguard; lower-case ones are Django's (``db``,
    ``serializer``, ``parser_class``, ``max_connections``...)::

        CACHES = {
            "default": {
                "BACKEND": "redisguard.django.RedisCache",
                "LOCATION": "redis://127.0.0.1:6379/1",
                "OPTIONS": {
                    "BREAKER": "redis",          # the breaker shared by every operation
                    "BREAKER_CONFIG": {"failure_threshold": 5, "reset_timeout": 30.0},
                    "NAME": "django.cache",      # operations: django.cache.get, ...set...
                    "RETRY": RetryPolicy(),      # or None: one attempt
                    "WRITE_FAILURE": "drop",     # or "raise"
                    "SOCKET_TIMEOUT": 0.25,
                    "SOCKET_CONNECT_TIMEOUT": 0.25,
                    "PROBE_INTERVAL": None,      # the recovery prober's interval (s)
                    "STALE_FOR": None,           # seconds: serve stale reads from an L1
                    "L1_MAX_ENTRIES": 10_000,    # the L1's bounds (with STALE_FOR)
                    "L1_MAX_BYTES": None,
                    # per operation: its own breaker and/or retry policy
                    "OPERATIONS": {"get": {"BREAKER": "redis-reads", "RETRY": None}},
                },
            }
        }

    Raises:
        ConfigError: an OPTIONS value is invalid or an upper-case key is unknown (at
            construction, i.e. on first use of ``caches[alias]``).
    """

    def __init__(self, server: str | list[str], params: dict[str, Any]) -> None:
        super().__init__(server, params)
        options = dict(self._options)
        for lower in ("socket_timeout", "socket_connect_timeout"):
            # Django's own backend takes these lower-case: keep such OPTIONS working.
            if lower in options:
                if lower.upper() in options:
                    raise ConfigError(f"OPTIONS has both {lower!r} and {lower.upper()!r}; give one")
                options[lower.upper()] = options.pop(lower)
        self._guarding = _Guarding.parse(options)
        self._client_options = {k: v for k, v in options.items() if not k.isupper()}
        self._class = GuardedCacheClient

    @property
    def _cache(self) -> GuardedCacheClient:
        cache = self.__dict__.get("_guarded_cache")
        if cache is None:
            cache = self.__dict__["_guarded_cache"] = GuardedCacheClient(
                self._servers, guarding=self._guarding, **self._client_options
            )
        return cache

    @property
    def breaker(self) -> Breaker:
        """The breaker guarding this cache's operations."""
        return self._cache.breaker

    def clients(self) -> list[Any]:
        """The redisguard clients of this cache's servers (for readiness probes)."""
        return self._cache.clients()

    def set_many(
        self,
        data: Mapping[Any, Any],
        timeout: float | None = DEFAULT_TIMEOUT,
        version: int | None = None,
    ) -> list[Any]:
        """As Django's, but the keys that were not stored are returned (all of them when
        Redis was unavailable and the write was dropped)."""
        if not data:
            return []
        key_map = {self.make_and_validate_key(key, version=version): key for key in data}
        safe_data = {made: data[key] for made, key in key_map.items()}
        failed: Iterable[str] = self._cache.set_many(safe_data, self.get_backend_timeout(timeout))
        return [key_map[made] for made in failed]
