"""Per-node circuit breakers for Redis Cluster.

One breaker for a whole cluster is wrong in both directions: a dead shard opens it and every
healthy shard's keys fall back too, or the healthy shards' successes keep clearing its failure
count and the dead shard never trips it. :func:`node_breaker` gives each master node its own
breaker, chosen per call from the key, so a dead shard opens only its own breaker::

    cluster = redis.cluster.RedisCluster(host="127.0.0.1", port=7000, retry=Retry(NoBackoff(), 0))

    @redis_guarded(name="cache.get", fallback=None, breaker=node_breaker(cluster))
    def cache_get(key: str) -> bytes | None:
        return cluster.get(key)

The node breakers are ordinary registered breakers named ``"<prefix>:<host>:<port>"``, so they
appear in :func:`redisguard.breakers`, in readiness output and in the metrics with their own
``name`` label. After a failover the promoted replica owns the slots and gets its own breaker;
:func:`master_breakers` lists the breakers of the current masters only.

An open node breaker sends no command, so the client learns of a failover (it refreshes its
slot map after a failed command) only from the first trial call after ``reset_timeout``: that
call still goes to the dead node and fails, the next one goes to the promoted replica. Keep
``reset_timeout`` of node breakers short (a few seconds).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, Protocol

from redis.exceptions import SlotNotCoveredError

from ._breaker import Breaker, breakers, forget_breaker, get_breaker
from ._config import BreakerConfig
from ._errors import ConfigError

__all__ = [
    "master_breakers",
    "node_address",
    "node_breaker",
    "node_breaker_name",
    "prune_node_breakers",
]

# Which node each node breaker stands for, so readiness can PING that node alone.
_addresses: weakref.WeakKeyDictionary[Breaker, tuple[str, int]] = weakref.WeakKeyDictionary()


class _Node(Protocol):
    host: str
    port: int


class _ClusterClient(Protocol):
    """What :func:`node_breaker` needs: sync and asyncio ``RedisCluster`` both qualify."""

    def get_node_from_key(self, key: Any, replica: bool = ...) -> Any: ...


class _KnowsPrimaries(Protocol):
    def get_primaries(self) -> Any: ...


def node_breaker_name(prefix: str, host: str, port: int) -> str:
    """The registered name of the breaker for one cluster node."""
    return f"{prefix}:{host}:{port}"


def _node_breaker(prefix: str, host: str, port: int, config: BreakerConfig | None) -> Breaker:
    breaker = get_breaker(node_breaker_name(prefix, host, port), config)
    _addresses[breaker] = (host, port)
    return breaker


def node_address(breaker: Breaker) -> tuple[str, int] | None:
    """The ``(host, port)`` of the Cluster node a node breaker stands for, else None."""
    return _addresses.get(breaker)


def prune_node_breakers(client: _KnowsPrimaries) -> list[str]:
    """Forget node breakers whose node is no longer a master the client routes to.

    After a failover the dead master's breaker gets no more calls and would stay open in
    :func:`redisguard.breakers` (and in readiness and the state gauge) forever. Call this
    after the client has refreshed its slot map, e.g. from a periodic health task.

    Returns:
        The names of the breakers forgotten.
    """
    live = {(node.host, node.port) for node in client.get_primaries()}
    gone = [b.name for b in breakers() if (addr := _addresses.get(b)) and addr not in live]
    return [name for name in gone if forget_breaker(name)]


def node_breaker(
    client: _ClusterClient,
    *,
    key: int | str = 0,
    prefix: str = "redis",
    config: BreakerConfig | None = None,
) -> Callable[..., Breaker]:
    """A breaker selector for ``@redis_guarded(breaker=...)``: the key's master node's breaker.

    Args:
        client: A ``redis.cluster.RedisCluster`` or ``redis.asyncio.cluster.RedisCluster``.
        key: Where the key is among the guarded function's arguments: a position (default 0;
            use 1 for methods, whose argument 0 is ``self``) or a keyword name.
        prefix: Breaker names are ``"<prefix>:<host>:<port>"``.
        config: Config for newly created node breakers (``BreakerConfig.from_env()`` if None).

    Raises:
        ConfigError: ``key`` is neither a non-negative position nor a name.
    """
    if isinstance(key, bool) or not (
        (isinstance(key, int) and key >= 0) or (isinstance(key, str) and key)
    ):
        raise ConfigError(f"key must be an argument position or name, got {key!r}")

    def select(*args: Any, **kwargs: Any) -> Breaker:
        try:
            value = kwargs[key] if isinstance(key, str) else args[key]
        except (IndexError, KeyError):
            raise TypeError(
                f"node_breaker(key={key!r}): the guarded call has no such argument"
            ) from None
        try:
            node: _Node | None = client.get_node_from_key(value)
        except SlotNotCoveredError:
            # No slot map yet (an asyncio client before its first command) or a slot no
            # node serves: let the call through on a shared breaker; the client discovers
            # the slots on first use, or the call fails and is counted there.
            node = None
        if node is None:
            return get_breaker(f"{prefix}:unknown", config)
        return _node_breaker(prefix, node.host, node.port, config)

    return select


def master_breakers(
    client: _KnowsPrimaries, *, prefix: str = "redis", config: BreakerConfig | None = None
) -> list[Breaker]:
    """The breakers of the masters the client currently routes to (no I/O), sorted by name.

    After a failover the dead master's breaker receives no more calls and keeps its last
    state (open) in :func:`redisguard.breakers`; report health from this list instead::

        readiness(breakers=master_breakers(cluster))

    Args:
        client: A sync or asyncio ``RedisCluster`` (its cached slot map is read).
        prefix: As for :func:`node_breaker`.
        config: Config for breakers created here (``BreakerConfig.from_env()`` if None).
    """
    found = [
        _node_breaker(prefix, node.host, node.port, config) for node in client.get_primaries()
    ]
    return sorted(found, key=lambda b: b.name)
