"""Per-node circuit breakers on a real Redis Cluster: a dead shard opens only its own breaker.

Each test starts a cluster of 3 masters (``redis_cluster_factory``; cluster-node-timeout
1000 ms), guards writes with ``breaker=node_breaker(client)`` and kills one master. Keys are
chosen by the master that owns their slot, so every assertion names the shard it is about.
Readiness (``redisguard.health.readiness()``) and the ``circuit_breaker_state`` gauge (read
through an ``InMemoryMetricReader`` on an explicit ``MeterProvider``) show one entry per node.

The nodes run with ``cluster-require-full-coverage no`` unless a test says otherwise. With
redis' default (``yes``), one master dying without a replica makes *every* node answer
``CLUSTERDOWN`` once it is marked failed (BRIEF §3), so every shard's breaker opens, healthy
or not: per-node breakers can only keep healthy shards serving if the cluster itself keeps
serving them, which is what ``no`` does. ``test_full_coverage_cluster_goes_down_everywhere``
shows the default.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, cast

import pytest
import redis
import redis.asyncio.cluster
import redis.cluster
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from redis.backoff import NoBackoff
from redis.retry import Retry

import redisguard
from redisguard import BreakerConfig, breakers, get_breaker, redis_guarded
from redisguard._compat import CLUSTER_OPTIONS
from redisguard.cluster import (
    master_breakers,
    node_breaker,
    node_breaker_name,
    prune_node_breakers,
)
from redisguard.health import readiness
from redisguard.testing import ClusterTopology, RedisServer

ClusterFactory = Callable[..., ClusterTopology]
TIMEOUT = 0.25
# Opens after 3 failures, tries again 0.2 s later: the cluster, not the breaker, sets the pace.
FAST = BreakerConfig(failure_threshold=3, reset_timeout=0.2)
CLOSED, HALF_OPEN, OPEN = 0, 1, 2
POLL = 0.01
# A replica takes over ~2.5 s after its master dies with node-timeout 1000 ms (BRIEF §3).
FAILOVER_BOUND = 12.0
# After a connection error the asyncio cluster client refreshes its slot map and then fetches
# its COMMAND table from its default node, the first master it lists. redis-py 8.x moves the
# failed node to the end of that list first; releases without
# NodesManager.move_node_to_end_of_cached_nodes (5.0.1 has none) leave a dead default node in
# place, so every refresh fails on it and every command on every shard fails with it
# ("Error 111 connecting to <dead port>"), which no per-node breaker can prevent.
ASYNC_CLUSTER_SKIPS_DEAD_DEFAULT = hasattr(
    redis.asyncio.cluster.NodesManager, "move_node_to_end_of_cached_nodes"
)


def _client_kwargs() -> dict[str, Any]:
    return {
        "socket_timeout": TIMEOUT,
        "socket_connect_timeout": TIMEOUT,
        "retry": Retry(NoBackoff(), 0),
        **CLUSTER_OPTIONS,  # redis-py 5: its own cluster retries off too
    }


def _sync_client(topo: ClusterTopology) -> redis.cluster.RedisCluster:
    node_class: Any = redis.cluster.ClusterNode  # untyped in redis-py
    nodes = [node_class(host, port) for host, port in topo.startup_nodes]
    return redis.cluster.RedisCluster(startup_nodes=nodes, **_client_kwargs())


def _name(node: RedisServer) -> str:
    return node_breaker_name("redis", node.host, node.port)


class Metrics:
    """An explicit MeterProvider with an in-memory reader (the global one is never set)."""

    def __init__(self) -> None:
        self.reader = InMemoryMetricReader()
        self.provider = MeterProvider(metric_readers=[self.reader])

    def states(self) -> dict[str, int]:
        """``circuit_breaker_state`` by breaker name, collected now."""
        out: dict[str, int] = {}
        data = self.reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == "circuit_breaker_state":
                        for point in metric.data.data_points:
                            assert isinstance(point, NumberDataPoint)
                            out[str((point.attributes or {})["name"])] = int(point.value)
        return out


@pytest.fixture
def metrics() -> Iterator[Metrics]:
    """Fresh SDK metrics for one test, shut down afterwards."""
    m = Metrics()
    try:
        yield m
    finally:
        m.provider.shutdown()


def _keys(topo: ClusterTopology) -> dict[RedisServer, str]:
    """One key per master, chosen by the master that owns its slot."""
    return {topo.node_at(port): keys[0] for port, keys in topo.keys_by_master(1).items()}


def _wait_marked_failed(topo: ClusterTopology, dead: RedisServer, timeout: float = 8.0) -> None:
    """Wait until every surviving node flags ``dead``'s slots as failed (node-timeout passed)."""
    deadline = time.monotonic() + timeout
    survivors = [n for n in topo.nodes if n.is_running and n is not dead]
    while not all(int(topo.cluster_info(n).get("cluster_slots_fail", 0)) > 0 for n in survivors):
        assert time.monotonic() < deadline, f"{dead.port} never marked failed"
        time.sleep(0.05)


def _assert_charged_only_to(dead: str) -> None:
    """The dead node's breaker counted its failures; no other breaker counted any."""
    failures = {b.name: b.failure_total for b in breakers()}
    assert failures[dead] >= FAST.failure_threshold
    assert not {name: n for name, n in failures.items() if name != dead and n}, failures


def _fail_until_open_sync(
    write: Callable[[str], bool], dead_key: str, dead: str, healthy_keys: list[str]
) -> None:
    """Write to a dead shard until its breaker opens, checking where each failure is charged.

    Exactly ``failure_threshold`` writes must fall back, each counted by the dead node's own
    breaker (never ``redis:unknown`` or a healthy node's), while the healthy shards' writes
    succeed in between.
    """
    breaker = get_breaker(dead)
    for failures in range(1, FAST.failure_threshold + 1):
        assert breaker.current_state == "closed"
        assert write(dead_key) is False
        assert breaker.failure_total == failures, "a failure was charged to another breaker"
        assert all(write(key) for key in healthy_keys)
    assert breaker.state_code == OPEN


async def _fail_until_open(
    write: Callable[[str], Awaitable[bool]], dead_key: str, dead: str, healthy_keys: list[str]
) -> None:
    """The asyncio twin of :func:`_fail_until_open_sync`."""
    breaker = get_breaker(dead)
    for failures in range(1, FAST.failure_threshold + 1):
        assert breaker.current_state == "closed"
        assert await write(dead_key) is False
        assert breaker.failure_total == failures, "a failure was charged to another breaker"
        assert all([await write(key) for key in healthy_keys])
    assert breaker.state_code == OPEN


def test_dead_master_opens_only_its_breaker_and_its_replica_takes_over(
    redis_cluster_factory: ClusterFactory, metrics: Metrics
) -> None:
    """Only the dead shard falls back; after the replica's promotion its keys succeed again."""
    topo = redis_cluster_factory(replicas=1)
    client = _sync_client(topo)

    @redis_guarded(
        name="cache.set",
        fallback=False,
        breaker=node_breaker(client, config=FAST),
        retry=None,
        meter_provider=metrics.provider,
    )
    def write(key: str) -> bool:
        return bool(client.set(key, "v"))

    try:
        keys = _keys(topo)
        assert all(write(key) for key in keys.values())
        assert {b.name for b in breakers()} == {_name(node) for node in keys}
        victim = min(keys, key=lambda n: n.port)
        healthy = {node: key for node, key in keys.items() if node is not victim}

        victim.kill()
        killed = time.monotonic()
        _fail_until_open_sync(write, keys[victim], _name(victim), list(healthy.values()))

        # Only the dead node's breaker is open, in the registry, readiness and metrics.
        states = {b.name: b.current_state for b in breakers()}
        assert states == {_name(node): "open" if node is victim else "closed" for node in keys}
        ready = readiness()
        assert ready.status == "degraded"
        assert ready.http_status == 503
        assert {name: check["healthy"] for name, check in ready.checks.items()} == {
            _name(node): node is not victim for node in keys
        }
        assert metrics.states() == {
            _name(node): OPEN if node is victim else CLOSED for node in keys
        }

        # The replica is promoted: same client object, the shard's keys work again.
        while not write(keys[victim]):
            assert time.monotonic() - killed < FAILOVER_BOUND, "the shard did not recover"
            assert all(write(key) for key in healthy.values())
            time.sleep(POLL)
        recovered_after = time.monotonic() - killed
        heir = topo.wait_for_failover(victim)
        print(
            f"\n[cluster, replica] master {victim.port} killed -> its keys succeed on the "
            f"promoted replica {heir.port} after {recovered_after:.3f} s"
        )
        node = cast(Any, client).get_node_from_key(keys[victim])
        assert (node.host, node.port) == (heir.host, heir.port)
        # The new master has its own, closed breaker; the dead node's breaker gets no more
        # traffic and keeps its last state, so readiness over all breakers stays degraded.
        assert get_breaker(_name(heir)).current_state == "closed"
        assert metrics.states()[_name(heir)] == CLOSED
        assert get_breaker(_name(victim)).current_state in {"open", "half-open"}
        assert all(write(key) for key in healthy.values())
        # Readiness over the current masters' breakers is "ready" again.
        current = master_breakers(client)
        assert {b.name for b in current} == {_name(heir), *(_name(n) for n in healthy)}
        assert readiness(breakers=current).status == "ready"
        assert readiness().status == "degraded"  # every registered breaker: the stale one too
        # Pruning forgets the replaced node's breaker, so plain readiness is ready again.
        assert prune_node_breakers(client) == [_name(victim)]
        assert readiness().status == "ready"
        assert prune_node_breakers(client) == []
    finally:
        client.close()


def test_dead_master_without_replica_keeps_other_shards_serving(
    redis_cluster_factory: ClusterFactory, metrics: Metrics
) -> None:
    """With require-full-coverage off, healthy shards keep succeeding after a master fails."""
    topo = redis_cluster_factory(replicas=0)
    client = redisguard.connect(
        topo.url, cluster=True, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
    )

    @redis_guarded(
        name="cache.set",
        fallback=False,
        breaker=node_breaker(client, config=FAST),
        retry=None,
        meter_provider=metrics.provider,
    )
    def write(key: str) -> bool:
        return bool(client.set(key, "v"))

    try:
        keys = _keys(topo)
        assert all(write(key) for key in keys.values())
        victim = min(keys, key=lambda n: n.port)
        healthy = {node: key for node, key in keys.items() if node is not victim}
        victim.kill()
        # Past node-timeout the survivors mark the node failed; the cluster stays "ok".
        _wait_marked_failed(topo, victim)
        _fail_until_open_sync(write, keys[victim], _name(victim), list(healthy.values()))
        until = time.monotonic() + 0.5
        while time.monotonic() < until:
            assert write(keys[victim]) is False
            assert all(write(key) for key in healthy.values())
            time.sleep(POLL)
        for node in healthy:
            assert topo.cluster_info(node)["cluster_state"] == "ok"
        # Readiness PINGs each node through its own breaker, never a random node: once the
        # dead node's breaker admits a trial, the probe must fail on that node (not succeed on
        # a healthy one and close it), and healthy breakers never count its failures.
        dead_breaker = get_breaker(_name(victim))
        for _ in range(FAST.failure_threshold + 1):
            time.sleep(FAST.reset_timeout + 0.05)
            ready = readiness(client, breakers=[dead_breaker, *master_breakers(client)])
            assert dead_breaker.current_state == "open"
        assert ready.checks[_name(victim)]["healthy"] is False
        for node in healthy:
            check = ready.checks[_name(node)]
            assert check["healthy"] is True
            assert check["failure_count"] == 0
            assert check["latency_ms"] is not None
        assert get_breaker(_name(victim)).current_state in {"open", "half-open"}
        assert all(get_breaker(_name(node)).current_state == "closed" for node in healthy)
        states = metrics.states()
        assert states[_name(victim)] in {OPEN, HALF_OPEN}
        assert all(states[_name(node)] == CLOSED for node in healthy)
        _assert_charged_only_to(_name(victim))
    finally:
        client.close()


async def test_async_cluster_client_keeps_healthy_shards_serving(
    redis_cluster_factory: ClusterFactory,
) -> None:
    """An asyncio cluster client, unused before its first guarded call, gets per-node breakers."""
    topo = redis_cluster_factory(replicas=0)
    host, port = topo.startup_nodes[0]
    # Not initialized: its slot map is empty until the first command.
    client = redis.asyncio.cluster.RedisCluster(host=host, port=port, **_client_kwargs())

    @redis_guarded(
        name="cache.set", fallback=False, breaker=node_breaker(client, config=FAST), retry=None
    )
    async def write(key: str) -> bool:
        return bool(await client.set(key, "v"))

    try:
        keys = _keys(topo)
        first = next(iter(keys.values()))
        # The selector cannot name a node yet: the call goes through a shared breaker.
        assert await write(first) is True
        assert [b.name for b in breakers()] == ["redis:unknown"]
        assert all([await write(key) for key in keys.values()])
        assert {b.name for b in breakers()} == {"redis:unknown", *(_name(n) for n in keys)}
        default = cast(Any, client).get_default_node()
        is_default = {node: (node.host, node.port) == (default.host, default.port) for node in keys}
        # The hardest master to lose is the default node, which the client refreshes from; on
        # releases that keep a dead default node (see ASYNC_CLUSTER_SKIPS_DEAD_DEFAULT) that
        # takes every shard down with it, so there the victim is another master.
        victim = min(
            keys, key=lambda n: (is_default[n] is not ASYNC_CLUSTER_SKIPS_DEAD_DEFAULT, n.port)
        )
        assert is_default[victim] is ASYNC_CLUSTER_SKIPS_DEAD_DEFAULT
        healthy = {node: key for node, key in keys.items() if node is not victim}
        victim.kill()
        _wait_marked_failed(topo, victim)
        # Counted in calls, not seconds: after each failure on the dead node the asyncio
        # client re-reads CLUSTER SLOTS and the whole COMMAND table before its next command
        # (about 50 ms of CPU here, over 0.5 s on a loaded 2-core machine).
        await _fail_until_open(write, keys[victim], _name(victim), list(healthy.values()))
        # The client rebuilt its slot map after every failure and still routes the dead
        # node's slots to it (CLUSTER SLOTS keeps a failed master's ranges), so readiness
        # over the current masters reports the dead node as unhealthy.
        node = cast(Any, client).get_node_from_key(keys[victim])
        assert (node.host, node.port) == (victim.host, victim.port)
        ready = readiness(breakers=master_breakers(client))
        assert {name: check["healthy"] for name, check in ready.checks.items()} == {
            _name(node): node is not victim for node in keys
        }
        until = time.monotonic() + 0.5
        while time.monotonic() < until:
            assert await write(keys[victim]) is False
            assert all([await write(key) for key in healthy.values()])
            await asyncio.sleep(POLL)
        assert get_breaker(_name(victim)).current_state in {"open", "half-open"}
        assert all(get_breaker(_name(node)).current_state == "closed" for node in healthy)
        _assert_charged_only_to(_name(victim))
    finally:
        await client.aclose()


def test_full_coverage_cluster_goes_down_everywhere(
    redis_cluster_factory: ClusterFactory,
) -> None:
    """With redis' default full coverage, a dead master without replica opens every breaker."""
    topo = redis_cluster_factory(replicas=0, require_full_coverage=True)
    client = _sync_client(topo)
    errors: dict[str, type[BaseException]] = {}

    def fallback(key: str) -> bool:
        failure = redisguard.current_failure()
        assert failure is not None
        if failure.exception is not None:
            errors[key] = type(failure.exception)
        return False

    @redis_guarded(
        name="cache.set", fallback=fallback, breaker=node_breaker(client, config=FAST), retry=None
    )
    def write(key: str) -> bool:
        return bool(client.set(key, "v"))

    try:
        keys = _keys(topo)
        assert all(write(key) for key in keys.values())
        victim = min(keys, key=lambda n: n.port)
        healthy = {node: key for node, key in keys.items() if node is not victim}
        victim.kill()
        killed = time.monotonic()
        while not all(get_breaker(_name(node)).state_code == OPEN for node in keys):
            assert time.monotonic() - killed < 8.0, "the healthy shards' breakers did not open"
            for key in keys.values():
                write(key)
            time.sleep(POLL)
        # Healthy shards were refused by the cluster itself, not by their own node.
        assert all(errors[key] is redis.exceptions.ClusterDownError for key in healthy.values())
        assert issubclass(errors[keys[victim]], redis.ConnectionError)
    finally:
        client.close()
