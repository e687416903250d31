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
``name`` label. After a failover the promoted replica owns the slots and gets its own breaker.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ._breaker import Breaker, get_breaker
from ._config import BreakerConfig
from ._errors import ConfigError

__all__ = ["node_breaker", "node_breaker_name"]


class _Node(Protocol):
    host: str
    port: int


class _ClusterClient(Protocol):
    """What :func:`node_breaker` needs: sync and asyncio ``RedisCluster`` both qualify."""

    def get_node_from_key(self, key: Any, replica: bool = ...) -> Any: ...


def node_breaker_name(prefix: str, host: str, port: int) -> str:
    """The registered name of the breaker for one cluster node."""
    return f"{prefix}:{host}:{port}"


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
        node: _Node | None = client.get_node_from_key(value)
        if node is None:  # slots not known yet: the client will discover them on first use
            return get_breaker(f"{prefix}:unknown", config)
        return get_breaker(node_breaker_name(prefix, node.host, node.port), config)

    return select
