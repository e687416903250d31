"""Build redis-py clients whose timeouts are explicit, whose own retry is off, and that recover.

redis-py 8.x ``Redis()`` retries 10 times with backoff by default: a refused connection takes
~4 s to fail and a paused server ~58 s. A guard that retries on top multiplies that. The
clients built here leave every retry decision to ``@redis_guarded``, and add what the design
document's Node client had and redis-py lacks:

* URL validation at startup (``ConfigError`` naming the problem, password redacted);
* fail-fast startup, or ``wait=`` seconds of wait-for-ready with the seed's backoff;
* connected / ready / reconnecting / closed logs (a custom ``connection_class`` overriding
  ``on_connect_check_health()`` and ``disconnect()``: redis-py has no such events);
* a background recovery prober (:mod:`redisguard._prober`) that PINGs every
  ``probe_interval`` while a breaker is open, drops the pooled connections the outage
  killed, and half-opens the client's breakers as soon as Redis answers again;
* ``close()`` / ``aclose()`` that stop the prober and drain the pool.

Supported targets: ``redis://``, ``rediss://``, ``unix://``; Sentinel as
``redis+sentinel://[[user]:password@]host:port[,host:port...]/service_name[/db]`` or
``sentinels=[...]`` + ``service_name=``; Cluster as ``redis+cluster://host:port[,...]`` or
``cluster=True``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import warnings
import weakref
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast, overload
from urllib.parse import unquote, urlsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.asyncio.retry
import redis.asyncio.sentinel
import redis.cluster
import redis.connection
import redis.sentinel
import tenacity
from redis.backoff import NoBackoff
from redis.retry import Retry

from ._breaker import Breaker, get_breaker
from ._classify import ErrorKind, classify_error
from ._compat import (
    ASYNC_CONNECTION_CLOSES_ON_GC,
    CLUSTER_OPTIONS,
    close_dropped_connection,
    connect_outside_pool_lock,
)
from ._errors import ConfigError, RedisguardError, RedisguardWarning, RedisUnavailableError
from ._prober import SEED_BACKOFF, ProbePlan, TaskProber, ThreadProber, resolve_probe_interval
from ._redact import redact_text, redact_url
from ._stale import EPOCH_ATTRIBUTE, adrop_stale, drop_stale

__all__ = [
    "DEFAULT_URL",
    "AsyncGuardedRedis",
    "AsyncGuardedRedisCluster",
    "GuardedRedis",
    "GuardedRedisCluster",
    "aconnect",
    "client_options",
    "connect",
    "validate_url",
]

logger = logging.getLogger("redisguard")
DEFAULT_URL = "redis://localhost:6379/0"
_SCHEMES = {"redis", "rediss", "unix"}
_SENTINEL = "redis+sentinel"
_CLUSTER = "redis+cluster"
_ALL_SCHEMES = "redis://, rediss://, unix://, redis+sentinel://, redis+cluster://"

BreakerSpec = str | Breaker


# -- URL validation (no I/O) ---------------------------------------------------------------
@dataclass(frozen=True)
class _Target:
    """Where a client connects, parsed and validated."""

    kind: Literal["standalone", "sentinel", "cluster"]
    url: str
    shown: str
    nodes: tuple[tuple[str, int], ...] = ()
    service_name: str | None = None
    db: int = 0
    username: str | None = None
    password: str | None = None


def _untyped(fn: Any) -> Any:
    """redis-py leaves some constructors untyped; call them through ``Any``."""
    return fn


def _bad(shown: str, problem: str) -> ConfigError:
    return ConfigError(f"invalid Redis URL {shown}: {problem}")


def _parse_db(shown: str, text: str) -> int:
    if text and (not text.isdigit() or int(text) > 1_000_000):
        raise _bad(shown, f"database {text!r} is not a number")
    return int(text) if text else 0


def _parse_nodes(shown: str, hosts: str, default_port: int) -> tuple[tuple[str, int], ...]:
    nodes = []
    for item in hosts.split(","):
        host, sep, port_text = item.strip().rpartition(":")
        if not sep:
            host, port_text = item.strip(), str(default_port)
        host = host.strip("[]")
        if not host:
            raise _bad(shown, f"no host in {item!r}")
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise _bad(shown, f"port {port_text!r} out of range")
        nodes.append((host, int(port_text)))
    return tuple(nodes)


def _parse_multi(url: str, shown: str, scheme: str) -> _Target:
    """Parse ``redis+sentinel://`` and ``redis+cluster://`` (several comma-separated hosts)."""
    rest = url[len(scheme) + 3 :]
    netloc, _, path = rest.partition("/")
    path, _, query = path.partition("?")
    if query:
        raise _bad(shown, f"{scheme}:// takes no query options; pass keyword arguments")
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, sep, secret = userinfo.partition(":")
        username, password = (unquote(user) or None), (unquote(secret) if sep else None)
        if not sep:  # a lone userinfo is a legacy bare password
            username, password = None, unquote(user)
    if not hosts:
        raise _bad(shown, "no host")
    parts = [p for p in path.split("/") if p]
    if scheme == _SENTINEL:
        nodes = _parse_nodes(shown, hosts, 26379)
        if not parts:
            raise _bad(shown, "redis+sentinel:// needs the service name as its path")
        if len(parts) > 2:
            raise _bad(shown, "expected /service_name[/db]")
        db = _parse_db(shown, parts[1] if len(parts) == 2 else "")
        return _Target("sentinel", url, shown, nodes, parts[0], db, username, password)
    nodes = _parse_nodes(shown, hosts, 6379)
    if parts and _parse_db(shown, "/".join(parts)) != 0:
        raise _bad(shown, "Redis Cluster only has database 0")
    return _Target("cluster", url, shown, nodes, None, 0, username, password)


def _parse_url(url: str) -> _Target:
    if not isinstance(url, str) or not url:
        raise ConfigError(f"Redis URL must be a non-empty string, got {url!r}")
    shown = redact_url(url)
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in (_SENTINEL, _CLUSTER):
        return _parse_multi(url, shown, scheme)
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _bad(shown, redact_text(str(exc))) from None
    if parts.scheme not in _SCHEMES:
        raise _bad(shown, f"scheme {parts.scheme!r} is not one of {_ALL_SCHEMES}")
    if parts.scheme == "unix":
        if not parts.path:
            raise _bad(shown, "unix:// needs a socket path")
        return _Target("standalone", url, shown)
    if not parts.hostname:
        raise _bad(shown, "no host")
    if port is not None and not 0 < port < 65536:
        raise _bad(shown, f"port {port} out of range")
    db = _parse_db(shown, parts.path.lstrip("/"))
    return _Target("standalone", url, shown, ((parts.hostname, port or 6379),), None, db)


def validate_url(url: str) -> str:
    """Check a Redis URL's scheme, hosts, ports and database; return it unchanged.

    Accepts ``redis://``, ``rediss://``, ``unix://``,
    ``redis+sentinel://host:port[,host:port]/service_name[/db]`` and
    ``redis+cluster://host:port[,host:port]``.

    Raises:
        ConfigError: naming the problem; the password is redacted in the message.
    """
    _parse_url(url)
    return url


def _resolve(
    url: str | None,
    sentinels: Sequence[str | tuple[str, int]] | None,
    service_name: str | None,
    cluster: bool | None,
) -> _Target:
    """Combine the URL (or ``$REDIS_URL``) with the explicit Sentinel/Cluster arguments."""
    if sentinels is not None:
        if url is not None:
            raise ConfigError("give either a URL or sentinels=[...], not both")
        if not service_name:
            raise ConfigError("sentinels=[...] needs service_name=")
        hosts = ",".join(s if isinstance(s, str) else f"{s[0]}:{s[1]}" for s in sentinels)
        if not hosts:
            raise ConfigError("sentinels=[...] is empty")
        return _parse_url(f"{_SENTINEL}://{hosts}/{service_name}")
    target = _parse_url(url if url is not None else os.environ.get("REDIS_URL") or DEFAULT_URL)
    if service_name is not None and target.kind != "sentinel":
        raise ConfigError(
            f"service_name= needs a redis+sentinel:// URL or sentinels=[...], got {target.shown}"
        )
    if service_name is not None and service_name != target.service_name:
        raise ConfigError(f"service_name={service_name!r} contradicts {target.shown}")
    if target.kind == "cluster" and not cluster:
        raise ConfigError(
            f"{target.shown} is a cluster URL: call connect(..., cluster=True) "
            "(a cluster client has a different type)"
        )
    if cluster and target.kind == "sentinel":
        raise ConfigError("cluster=True cannot be combined with Sentinel")
    if cluster and target.kind == "standalone":
        if target.url.startswith("unix:"):
            raise ConfigError("cluster=True needs a TCP URL")
        return _Target("cluster", target.url, target.shown, target.nodes)
    return target


def client_options(
    *, socket_timeout: float, socket_connect_timeout: float, **overrides: Any
) -> dict[str, Any]:
    """The keyword arguments redisguard gives redis-py: explicit timeouts, retry off."""
    for label, value in (
        ("socket_timeout", socket_timeout),
        ("socket_connect_timeout", socket_connect_timeout),
    ):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigError(f"{label} must be a positive number of seconds, got {value!r}")
    options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_connect_timeout,
        "socket_keepalive": True,
        "health_check_interval": 0,
    }
    options.update(overrides)
    return options


# -- lifecycle: logs and the prober (no I/O) ------------------------------------------------
class _Lifecycle:
    """What a client knows about its connection's life; logs the transitions."""

    def __init__(self, target: _Target, breakers: Sequence[Breaker]) -> None:
        self.target = target.shown
        self.kind = target.kind
        self.breakers = tuple(breakers)
        self.state = "new"
        self.outages = 0  # grows when a breaker opens; stamps connections (see _stale)
        self.prober: ThreadProber | TaskProber | None = None
        self.sentinel: Any = None  # a Sentinel manager whose own clients we close

    def _log(self, level: int, message: str, *args: object) -> None:
        logger.log(level, message, *args, extra={"category": "redis", "target": self.target})

    def connected(self) -> None:
        """A connection finished its handshake (``on_connect_check_health``)."""
        if self.state == "lost":
            self._log(logging.INFO, "Redis connection restored: %s", self.target)
        elif self.state == "new":
            self._log(logging.INFO, "Redis connected: %s", self.target)
        else:
            self._log(logging.DEBUG, "Redis connection opened: %s", self.target)
        self.state = "ready"

    def disconnected(self, error: object) -> None:
        if error is not None and self.state != "closed":
            self._log(
                logging.WARNING,
                "Redis connection dropped: %s",
                redact_text(f"{type(error).__name__}: {error}"),
            )
        else:
            self._log(logging.DEBUG, "Redis connection closed: %s", self.target)

    def lost(self) -> None:
        """A breaker opened: the prober starts and the next connection is a reconnection."""
        if self.state != "lost":
            self.state = "lost"
            self.outages += 1
            self._log(logging.WARNING, "Redis unavailable, probing for recovery: %s", self.target)

    def plan(self, interval: float) -> ProbePlan:
        return ProbePlan(self.breakers, self.target, on_lost=self.lost, interval=interval)

    def stamp(self, connection: object) -> None:
        """A connection finished its handshake: remember in which outage epoch."""
        setattr(connection, EPOCH_ATTRIBUTE, self.outages)
        self.connected()

    def closed(self) -> None:
        if self.state != "closed":
            self.state = "closed"
            self._log(logging.INFO, "Redis client closed: %s", self.target)


def _breakers(specs: Iterable[BreakerSpec] | BreakerSpec, url: str) -> tuple[Breaker, ...]:
    """The client's breakers; one it creates and shares host-wide takes its namespace
    from ``url`` (redacted: the namespace never holds a password)."""
    if isinstance(specs, str | Breaker):
        specs = (specs,)
    out = []
    for spec in specs:
        if isinstance(spec, Breaker):
            out.append(spec)
        elif isinstance(spec, str):
            out.append(get_breaker(spec, redis_url=url))
        else:
            raise ConfigError(f"breakers= takes names or redisguard.Breaker objects, got {spec!r}")
    return tuple(out)


# -- blocking commands (no I/O) ----------------------------------------------------------------
# How each blocking command gives its server-side timeout: the last argument in seconds, the
# second in seconds, ``BLOCK <ms>`` before ``STREAMS``, or the n-th argument in milliseconds.
_LAST_S, _SECOND_S, _BLOCK_MS, _WAIT_MS, _WAITAOF_MS = range(5)
_BLOCKING_KINDS = {
    "BLPOP": _LAST_S,
    "BRPOP": _LAST_S,
    "BRPOPLPUSH": _LAST_S,
    "BLMOVE": _LAST_S,
    "BZPOPMIN": _LAST_S,
    "BZPOPMAX": _LAST_S,
    "BLMPOP": _SECOND_S,
    "BZMPOP": _SECOND_S,
    "XREAD": _BLOCK_MS,
    "XREADGROUP": _BLOCK_MS,
    "WAIT": _WAIT_MS,
    "WAITAOF": _WAITAOF_MS,
}
# Looked up with the command name exactly as given (one dict lookup per command).
_BLOCKING: dict[str | bytes, int] = {}
for _name, _kind in _BLOCKING_KINDS.items():
    for _spelling in (_name, _name.lower()):
        _BLOCKING[_spelling] = _BLOCKING[_spelling.encode()] = _kind


def _word(arg: object) -> str:
    if isinstance(arg, bytes | bytearray | memoryview):
        return bytes(arg).decode("latin-1").upper()
    return str(arg).upper()


def _number(arg: object) -> float | None:
    try:
        value = float(bytes(arg) if isinstance(arg, bytearray | memoryview) else arg)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if value >= 0 else None


def blocking_timeout(args: Sequence[object]) -> float | None:
    """The server-side timeout, in seconds, of a blocking command; None if it does not block.

    ``0.0`` means the command may block forever. Covers BLPOP, BRPOP, BRPOPLPUSH, BLMOVE,
    BZPOPMIN, BZPOPMAX, BLMPOP, BZMPOP, XREAD/XREADGROUP with BLOCK, WAIT and WAITAOF.
    A malformed timeout returns None (the server will refuse the command at once).
    """
    if not args:
        return None
    kind = _BLOCKING.get(args[0]) if isinstance(args[0], str | bytes) else None
    if kind is None:
        kind = _BLOCKING_KINDS.get(_word(args[0]))
        if kind is None:
            return None
    seconds: float | None = None
    if kind == _LAST_S and len(args) >= 3:
        seconds = _number(args[-1])
    elif kind == _SECOND_S and len(args) >= 2:
        seconds = _number(args[1])
    elif kind == _WAIT_MS and len(args) >= 3:
        seconds = _ms(_number(args[2]))
    elif kind == _WAITAOF_MS and len(args) >= 4:
        seconds = _ms(_number(args[3]))
    elif kind == _BLOCK_MS:
        for i, arg in enumerate(args[1:-1], start=1):
            word = _word(arg)
            if word == "STREAMS":
                break
            if word == "BLOCK":
                seconds = _ms(_number(args[i + 1]))
                break
    return seconds


def _ms(value: float | None) -> float | None:
    return None if value is None else value / 1000.0


def _read_timeout(args: Sequence[object], socket_timeout: float | None) -> object:
    """The read timeout for the reply to ``args``: ``_NORMAL`` unless the command blocks."""
    if socket_timeout is None:
        return _NORMAL
    seconds = blocking_timeout(args)
    if seconds is None:
        return _NORMAL
    return None if seconds == 0 else seconds + socket_timeout


_NORMAL = object()  # read with the connection's own socket_timeout


def _pubsub_read(kwargs: dict[str, Any]) -> bool:
    """A PubSub read that redis-py < 8.1 does with the socket timeout instead of none.

    Only PubSub passes ``push_request=True, disconnect_on_error=False``; redis-py 8.1 also
    passes a ``timeout`` itself (None/inf to block), older versions pass nothing.
    """
    return (
        kwargs.get("push_request") is True
        and kwargs.get("disconnect_on_error") is False
        and kwargs.get("timeout") is None
    )


def _sync_connection_class(base: type[Any], life: _Lifecycle) -> type[Any]:
    """A subclass of redis-py's connection class ``base`` that reports to ``life``.

    Blocking commands (BLPOP, XREAD BLOCK, WAIT ...) read their reply with their own
    server-side timeout plus ``socket_timeout`` (0: no timeout) instead of
    ``socket_timeout``, so an idle queue consumer never looks like an outage.
    """

    class GuardedConnection(base):  # type: ignore[misc]
        _redisguard_wait: object = _NORMAL
        socket_timeout: float | None  # redis-py's (a property in 8.x sync)

        if hasattr(base, "on_connect_check_health"):

            def on_connect_check_health(self, check_health: bool = True) -> None:
                super().on_connect_check_health(check_health)
                life.stamp(self)

        else:  # redis-py 5.x: the handshake hook is on_connect()

            def on_connect(self) -> None:
                super().on_connect()
                life.stamp(self)

        def disconnect(self, *args: Any, **kwargs: Any) -> None:
            live = self._sock is not None  # redis-py < 8 has no is_connected
            super().disconnect(*args, **kwargs)
            if live:
                life.disconnected(kwargs.get("error", args[0] if args else None))

        def send_command(self, *args: Any, **kwargs: Any) -> None:
            if args and args[0] in _BLOCKING:
                self._redisguard_wait = _read_timeout(args, self.socket_timeout)
            super().send_command(*args, **kwargs)

        def read_response(self, *args: Any, **kwargs: Any) -> Any:
            wait = self._redisguard_wait
            if wait is _NORMAL:
                if not (kwargs and "timeout" not in kwargs and _pubsub_read(kwargs)):
                    return super().read_response(*args, **kwargs)
                wait = None
            else:
                self._redisguard_wait = _NORMAL
            sock = self._sock
            if sock is None:
                return super().read_response(*args, **kwargs)
            saved = sock.gettimeout()
            sock.settimeout(wait)
            try:
                return super().read_response(*args, **kwargs)
            finally:
                if self._sock is sock:  # not disconnected meanwhile
                    sock.settimeout(saved)

    GuardedConnection.__name__ = GuardedConnection.__qualname__ = f"Guarded{base.__name__}"
    return GuardedConnection


def _async_connection_class(base: type[Any], life: _Lifecycle) -> type[Any]:
    """The asyncio twin of :func:`_sync_connection_class`."""

    class GuardedConnection(base):  # type: ignore[misc]
        _redisguard_wait: object = _NORMAL
        socket_timeout: float | None  # redis-py's (a property in 8.x sync)

        if hasattr(base, "on_connect_check_health"):

            async def on_connect_check_health(self, check_health: bool = True) -> None:
                await super().on_connect_check_health(check_health)
                life.stamp(self)

        else:  # redis-py 5.x: the handshake hook is on_connect()

            async def on_connect(self) -> None:
                await super().on_connect()
                life.stamp(self)

        if not ASYNC_CONNECTION_CLOSES_ON_GC:  # redis-py 5.0.1: see _compat

            def __del__(self) -> None:
                close_dropped_connection(self)

        async def disconnect(self, *args: Any, **kwargs: Any) -> None:
            live = getattr(self, "_writer", None) is not None  # no is_connected before 8
            await super().disconnect(*args, **kwargs)
            if live:
                life.disconnected(kwargs.get("error"))

        def send_command(self, *args: Any, **kwargs: Any) -> Awaitable[None]:
            # A plain method returning redis-py's coroutine: no extra frame per command.
            if args and args[0] in _BLOCKING:
                self._redisguard_wait = _read_timeout(args, self.socket_timeout)
            return cast(Awaitable[None], super().send_command(*args, **kwargs))

        async def read_response(self, *args: Any, **kwargs: Any) -> Any:
            wait = self._redisguard_wait
            if wait is _NORMAL:
                if not (kwargs and _pubsub_read(kwargs)):
                    return await super().read_response(*args, **kwargs)
                wait = None
            else:
                self._redisguard_wait = _NORMAL
            # redis.asyncio reads with self.socket_timeout; an explicit timeout= would turn a
            # hung server into a None reply, so the attribute is swapped for this read only.
            saved = self.socket_timeout
            self.socket_timeout = cast(float | None, wait)
            try:
                return await super().read_response(*args, **kwargs)
            finally:
                self.socket_timeout = saved

    GuardedConnection.__name__ = GuardedConnection.__qualname__ = f"Guarded{base.__name__}"
    return GuardedConnection


# -- the client classes ---------------------------------------------------------------------
class _GuardedInfo:
    """What redisguard adds to a redis-py client: its breakers, target and prober."""

    _redisguard: _Lifecycle | None = None

    @property
    def breakers(self) -> tuple[Breaker, ...]:
        """The breakers whose recovery this client's prober drives."""
        return self._redisguard.breakers if self._redisguard else ()

    @property
    def target(self) -> str:
        """Where this client connects, with the password redacted (safe to log or show)."""
        return self._redisguard.target if self._redisguard else "<unknown>"

    @property
    def prober(self) -> ThreadProber | TaskProber | None:
        """The background recovery prober, or None when disabled."""
        return self._redisguard.prober if self._redisguard else None

    def __repr__(self) -> str:
        # redis-py < 7.4 shows the pool's connection kwargs, password included.
        return f"<{type(self).__module__}.{type(self).__qualname__}({self.target})>"


class GuardedRedis(_GuardedInfo, redis.Redis):
    """A ``redis.Redis`` built by :func:`connect`; ``close()`` also stops the prober."""

    def close(self) -> None:
        life = self._redisguard
        if life is not None and isinstance(life.prober, ThreadProber):
            life.prober.stop()
        super().close()
        if life is not None:
            if life.sentinel is not None:
                for sentinel in life.sentinel.sentinels:
                    sentinel.close()
            life.closed()


class GuardedRedisCluster(_GuardedInfo, redis.cluster.RedisCluster):
    """A ``redis.cluster.RedisCluster`` built by ``connect(cluster=True)``."""

    def close(self) -> None:
        life = self._redisguard
        if life is not None and isinstance(life.prober, ThreadProber):
            life.prober.stop()
        super().close()
        if life is not None:
            life.closed()


class AsyncGuardedRedis(_GuardedInfo, redis.asyncio.Redis):  # type: ignore[misc]
    """A ``redis.asyncio.Redis`` built by :func:`aconnect`; ``aclose()`` stops the prober."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        life = self._redisguard
        if life is not None and isinstance(life.prober, TaskProber):
            await life.prober.stop()
        await super().aclose(close_connection_pool)
        if life is not None:
            if life.sentinel is not None:
                for sentinel in life.sentinel.sentinels:
                    await sentinel.aclose()
            life.closed()


class AsyncGuardedRedisCluster(  # type: ignore[misc]
    _GuardedInfo, redis.asyncio.cluster.RedisCluster
):
    """A ``redis.asyncio.cluster.RedisCluster`` built by ``aconnect(cluster=True)``."""

    async def aclose(self) -> None:
        life = self._redisguard
        if life is not None and isinstance(life.prober, TaskProber):
            await life.prober.stop()
        await super().aclose()
        if life is not None:
            life.closed()


# -- building (sync and asyncio differ only in classes and awaits) ---------------------------
# A user's own redis-py retry (any of these) is honoured, with a RedisguardWarning.
_USER_RETRY_OPTIONS = ("retry", "retry_on_error", "retry_on_timeout")


def _no_retry(asyncio_client: bool) -> Retry | redis.asyncio.retry.Retry:
    """redis-py's retry switched off, in the class the client's connections call.

    An asyncio connection awaits ``retry.call_with_retry``; given the sync class its
    failure callback (disconnect, reconnect, resubscribe) never runs.
    """
    if asyncio_client:
        return redis.asyncio.retry.Retry(NoBackoff(), 0)
    return Retry(NoBackoff(), 0)


def _options(
    target: _Target,
    socket_timeout: float,
    socket_connect_timeout: float,
    kwargs: dict[str, Any],
    *,
    asyncio_client: bool = False,
) -> dict[str, Any]:
    options = client_options(
        socket_timeout=socket_timeout, socket_connect_timeout=socket_connect_timeout, **kwargs
    )
    given = [name for name in _USER_RETRY_OPTIONS if kwargs.get(name) not in (None, False)]
    if given:
        warnings.warn(
            f"redisguard: {', '.join(given)}= is honoured, but redis-py's retry stacks under "
            "the guard's retries and multiplies the latency of every failed call "
            "(a paused server then takes attempts x retries x socket_timeout); "
            "leave retrying to @redis_guarded(retry=RetryPolicy(...))",
            RedisguardWarning,
            stacklevel=3,
        )
    else:
        options["retry"] = _no_retry(asyncio_client)
    if target.kind != "standalone":
        if target.password is not None:
            options.setdefault("password", target.password)
        if target.username is not None:
            options.setdefault("username", target.username)
    return options


def _sentinel_kwargs(
    options: dict[str, Any], given: dict[str, Any] | None, *, asyncio_client: bool = False
) -> dict[str, Any]:
    out = {
        "socket_timeout": options["socket_timeout"],
        "socket_connect_timeout": options["socket_connect_timeout"],
        "retry": _no_retry(asyncio_client),
    }
    out.update(given or {})
    return out


def _release_when_collected(client: object, prober: ThreadProber | TaskProber) -> None:
    """When a client is garbage-collected without ``close()``, detach and stop its prober.

    The prober holds the client only weakly, so a dropped client is collected like a plain
    ``redis.Redis`` (redis-py then closes its pool); this takes its listener off the shared
    breakers and ends its thread or task.
    """
    weakref.finalize(client, prober.abandon).atexit = False


def _check_wait(check: bool, wait: float | None) -> None:
    if wait is None:
        return
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not wait > 0:
        raise ConfigError(f"wait must be a positive number of seconds, got {wait!r}")
    if not check:
        raise ConfigError("wait= needs check=True (it waits for the startup PING)")


def _ready_retrying_options(target: _Target, wait: float) -> dict[str, Any]:
    """tenacity options for wait-for-ready: the seed's backoff until ``wait`` seconds pass."""

    def before_sleep(rs: tenacity.RetryCallState) -> None:
        exc = rs.outcome.exception() if rs.outcome else None
        logger.info(
            "Redis not ready (attempt %d), retrying in %.1f s: %s",
            rs.attempt_number,
            rs.upcoming_sleep,
            redact_text(f"{type(exc).__name__}: {exc}"),
            extra={
                "category": "redis",
                "target": target.shown,
                "retries": rs.attempt_number,
                "delay": rs.upcoming_sleep,
            },
        )

    return {
        "wait": SEED_BACKOFF,
        "stop": tenacity.stop_before_delay(wait),
        "retry": tenacity.retry_if_exception(lambda e: classify_error(e) is ErrorKind.TRANSIENT),
        "before_sleep": before_sleep,
        "reraise": True,
    }


def _startup_error(shown: str, exc: BaseException) -> RedisguardError:
    """A startup failure: ConfigError for what a retry cannot fix, else RedisUnavailableError."""
    if isinstance(exc, redis.AuthenticationError | redis.exceptions.AuthorizationError):
        return ConfigError(f"Redis at {shown} rejected the credentials: {redact_text(str(exc))}")
    if classify_error(exc) is ErrorKind.MISCONFIGURED:
        return ConfigError(
            f"Redis at {shown} cannot be used as configured: {redact_text(str(exc))}"
        )
    return RedisUnavailableError(
        f"Redis at {shown} is not reachable: {type(exc).__name__}: {redact_text(str(exc))}",
        operation="connect",
        breaker="",
        attempts=1,
    )


@overload
def connect(
    url: str | None = ...,
    *,
    socket_timeout: float = ...,
    socket_connect_timeout: float = ...,
    check: bool = ...,
    wait: float | None = ...,
    sentinels: Sequence[str | tuple[str, int]] | None = ...,
    service_name: str | None = ...,
    sentinel_kwargs: dict[str, Any] | None = ...,
    cluster: Literal[True],
    breakers: Iterable[BreakerSpec] | BreakerSpec = ...,
    prober: bool = ...,
    probe_interval: float | None = ...,
    **kwargs: Any,
) -> GuardedRedisCluster: ...


@overload
def connect(
    url: str | None = ...,
    *,
    socket_timeout: float = ...,
    socket_connect_timeout: float = ...,
    check: bool = ...,
    wait: float | None = ...,
    sentinels: Sequence[str | tuple[str, int]] | None = ...,
    service_name: str | None = ...,
    sentinel_kwargs: dict[str, Any] | None = ...,
    cluster: Literal[False] | None = ...,
    breakers: Iterable[BreakerSpec] | BreakerSpec = ...,
    prober: bool = ...,
    probe_interval: float | None = ...,
    **kwargs: Any,
) -> GuardedRedis: ...


def connect(
    url: str | None = None,
    *,
    socket_timeout: float = 0.25,
    socket_connect_timeout: float = 0.25,
    check: bool = True,
    wait: float | None = None,
    sentinels: Sequence[str | tuple[str, int]] | None = None,
    service_name: str | None = None,
    sentinel_kwargs: dict[str, Any] | None = None,
    cluster: bool | None = None,
    breakers: Iterable[BreakerSpec] | BreakerSpec = ("redis",),
    prober: bool = True,
    probe_interval: float | None = None,
    **kwargs: Any,
) -> GuardedRedis | GuardedRedisCluster:
    """A sync client for ``url`` (default ``$REDIS_URL``, else ``redis://localhost:6379``).

    The result is a :class:`GuardedRedis` (a ``redis.Redis``), or a
    :class:`GuardedRedisCluster` with ``cluster=True``: use it exactly like redis-py.

    Args:
        url: ``redis://``, ``rediss://``, ``unix://``, ``redis+sentinel://`` or
            ``redis+cluster://`` (the last needs ``cluster=True``).
        socket_timeout: Seconds to wait for a reply; keep it at or below your retry deadline.
        socket_connect_timeout: Seconds to wait for a TCP connect.
        check: PING once now and fail fast if Redis does not answer.
        wait: Instead of failing at once, retry the startup PING with the seed's backoff
            (100 ms doubling to 10 s) for up to this many seconds.
        sentinels: Sentinel addresses (``"host:port"`` or ``(host, port)``), instead of a URL.
        service_name: The Sentinel service (master group) name.
        sentinel_kwargs: Connection options for the Sentinels themselves.
        cluster: Connect to a Redis Cluster.
        breakers: The breakers (names or objects) guarding calls to this Redis; the prober
            half-opens them when Redis answers again.
        prober: Run the background recovery prober (default on).
        probe_interval: Seconds between the prober's PINGs while a breaker is open (10 ms
            to 60 s, +-10 % jitter); default ``$REDISGUARD_PROBE_INTERVAL`` (milliseconds),
            else 0.1. Recovery is noticed within one interval, however long the outage.
        **kwargs: Passed to redis-py (e.g. ``decode_responses=True``, ``max_connections``).

    Raises:
        ConfigError: the URL, a timeout or the credentials are invalid.
        RedisUnavailableError: ``check`` is true and Redis did not answer in time.
    """
    target = _resolve(url, sentinels, service_name, cluster)
    _check_wait(check, wait)
    interval = resolve_probe_interval(probe_interval)
    options = _options(target, socket_timeout, socket_connect_timeout, kwargs)
    life = _Lifecycle(target, _breakers(breakers, target.shown))
    client: GuardedRedis | GuardedRedisCluster
    if target.kind == "cluster":
        nodes = [_untyped(redis.cluster.ClusterNode)(h, p) for h, p in target.nodes]
        if target.url.startswith("rediss"):
            options.setdefault("ssl", True)
        options = {**CLUSTER_OPTIONS, **options}
        client = GuardedRedisCluster(startup_nodes=nodes, **options)
    elif target.kind == "sentinel":
        sentinel = _untyped(redis.sentinel.Sentinel)(
            list(target.nodes),
            sentinel_kwargs=_sentinel_kwargs(options, sentinel_kwargs),
            **options,
        )
        life.sentinel = sentinel
        assert target.service_name is not None
        client = sentinel.master_for(
            target.service_name,
            redis_class=GuardedRedis,
            connection_class=_sync_connection_class(redis.sentinel.SentinelManagedConnection, life),
            db=target.db,
        )
    else:
        base = _untyped(redis.connection.parse_url)(target.url).get(
            "connection_class", redis.Connection
        )
        options["connection_class"] = _sync_connection_class(base, life)
        client = cast(GuardedRedis, GuardedRedis.from_url(target.url, **options))
    client._redisguard = life
    if check:
        try:
            if wait is None:
                client.ping()
            else:
                tenacity.Retrying(**_ready_retrying_options(target, wait))(client.ping)
        except redis.RedisError as exc:
            client.close()
            raise _startup_error(target.shown, exc) from exc
        logger.info("Redis ready: %s", target.shown, extra={"category": "redis"})
    if prober and life.breakers:
        found = getattr(client, "connection_pool", None)  # a cluster client has one per node
        pool = weakref.ref(found) if found is not None else None

        def refresh() -> None:
            live = pool() if pool is not None else None
            if live is not None:
                drop_stale(live, life.outages)

        life.prober = ThreadProber(life.plan(interval), client.ping, refresh)
        _release_when_collected(client, life.prober)
    return client


@overload
async def aconnect(
    url: str | None = ...,
    *,
    socket_timeout: float = ...,
    socket_connect_timeout: float = ...,
    check: bool = ...,
    wait: float | None = ...,
    sentinels: Sequence[str | tuple[str, int]] | None = ...,
    service_name: str | None = ...,
    sentinel_kwargs: dict[str, Any] | None = ...,
    cluster: Literal[True],
    breakers: Iterable[BreakerSpec] | BreakerSpec = ...,
    prober: bool = ...,
    probe_interval: float | None = ...,
    **kwargs: Any,
) -> AsyncGuardedRedisCluster: ...


@overload
async def aconnect(
    url: str | None = ...,
    *,
    socket_timeout: float = ...,
    socket_connect_timeout: float = ...,
    check: bool = ...,
    wait: float | None = ...,
    sentinels: Sequence[str | tuple[str, int]] | None = ...,
    service_name: str | None = ...,
    sentinel_kwargs: dict[str, Any] | None = ...,
    cluster: Literal[False] | None = ...,
    breakers: Iterable[BreakerSpec] | BreakerSpec = ...,
    prober: bool = ...,
    probe_interval: float | None = ...,
    **kwargs: Any,
) -> AsyncGuardedRedis: ...


async def aconnect(
    url: str | None = None,
    *,
    socket_timeout: float = 0.25,
    socket_connect_timeout: float = 0.25,
    check: bool = True,
    wait: float | None = None,
    sentinels: Sequence[str | tuple[str, int]] | None = None,
    service_name: str | None = None,
    sentinel_kwargs: dict[str, Any] | None = None,
    cluster: bool | None = None,
    breakers: Iterable[BreakerSpec] | BreakerSpec = ("redis",),
    prober: bool = True,
    probe_interval: float | None = None,
    **kwargs: Any,
) -> AsyncGuardedRedis | AsyncGuardedRedisCluster:
    """The asyncio twin of :func:`connect`: an :class:`AsyncGuardedRedis` (a
    ``redis.asyncio.Redis``) or, with ``cluster=True``, an :class:`AsyncGuardedRedisCluster`.

    The prober runs as a task on the current event loop; ``await client.aclose()`` stops it.
    """
    target = _resolve(url, sentinels, service_name, cluster)
    _check_wait(check, wait)
    interval = resolve_probe_interval(probe_interval)
    options = _options(
        target, socket_timeout, socket_connect_timeout, kwargs, asyncio_client=True
    )
    life = _Lifecycle(target, _breakers(breakers, target.shown))
    client: AsyncGuardedRedis | AsyncGuardedRedisCluster
    if target.kind == "cluster":
        nodes = [redis.asyncio.cluster.ClusterNode(h, p) for h, p in target.nodes]
        if target.url.startswith("rediss"):
            options.setdefault("ssl", True)
        options.pop("socket_keepalive", None)
        options = {**CLUSTER_OPTIONS, **options}
        client = AsyncGuardedRedisCluster(startup_nodes=nodes, **options)
    elif target.kind == "sentinel":
        sentinel = _untyped(redis.asyncio.sentinel.Sentinel)(
            list(target.nodes),
            sentinel_kwargs=_sentinel_kwargs(options, sentinel_kwargs, asyncio_client=True),
            **options,
        )
        life.sentinel = sentinel
        assert target.service_name is not None
        client = sentinel.master_for(
            target.service_name,
            redis_class=AsyncGuardedRedis,
            connection_class=_async_connection_class(
                redis.asyncio.sentinel.SentinelManagedConnection, life
            ),
            db=target.db,
        )
    else:
        base = redis.asyncio.connection.parse_url(target.url).get(
            "connection_class", redis.asyncio.connection.Connection
        )
        options["connection_class"] = _async_connection_class(base, life)
        client = cast(AsyncGuardedRedis, AsyncGuardedRedis.from_url(target.url, **options))
    client._redisguard = life
    connect_outside_pool_lock(getattr(client, "connection_pool", None))
    if check:
        try:
            if wait is None:
                await client.ping()
            else:
                # tenacity awaits only what it recognises as a coroutine function, and
                # redis.asyncio's ping() is a plain method returning an awaitable.
                async def ping() -> Any:
                    return await client.ping()

                await tenacity.AsyncRetrying(**_ready_retrying_options(target, wait))(ping)
        except redis.RedisError as exc:
            await client.aclose()
            raise _startup_error(target.shown, exc) from exc
        logger.info("Redis ready: %s", target.shown, extra={"category": "redis"})
    if prober and life.breakers:
        afound = getattr(client, "connection_pool", None)  # a cluster client has one per node
        apool = weakref.ref(afound) if afound is not None else None

        async def arefresh() -> None:
            live = apool() if apool is not None else None
            if live is not None:
                await adrop_stale(live, life.outages)

        life.prober = TaskProber(
            life.plan(interval),
            client.ping,
            asyncio.get_running_loop(),
            timeout=socket_timeout,
            refresh=arefresh,
        )
        _release_when_collected(client, life.prober)
    return client
