"""Clients dropped without close() are collected: pool released, listener off the breaker."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from typing import Any

import pytest
import redis

import redisguard
from redisguard import BreakerConfig, get_breaker
from redisguard.testing import RedisServer

pytestmark = pytest.mark.timeout(120)

CLIENTS = 200


def _connected_clients(admin: redis.Redis) -> int:
    return int(admin.info("clients")["connected_clients"])


def _settle(admin: redis.Redis, at_most: int, timeout: float = 10.0) -> int:
    """Collect garbage until the server counts at most ``at_most`` clients; return the count."""
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        count = _connected_clients(admin)
        if count <= at_most or time.monotonic() > deadline:
            return count
        time.sleep(0.05)


async def _asettle(admin: redis.Redis, at_most: int, timeout: float = 10.0) -> int:
    """:func:`_settle` that lets the event loop run the transports' close callbacks."""
    deadline = time.monotonic() + timeout
    while True:
        gc.collect()
        await asyncio.sleep(0.05)
        count = _connected_clients(admin)
        if count <= at_most or time.monotonic() > deadline:
            return count


def _prober_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("redisguard-prober")]


def test_dropped_clients_are_collected_and_release_their_connections(
    redis_server: RedisServer,
) -> None:
    """200 clients made by connect() and dropped leave no connections and no listeners."""
    breaker = get_breaker("redis")
    admin: Any = redis.Redis(**redis_server.client_kwargs())
    try:
        baseline = _connected_clients(admin)
        listeners = len(breaker.listeners)
        clients = [redisguard.connect(redis_server.url) for _ in range(CLIENTS)]
        for i, client in enumerate(clients):
            client.set(f"k{i}", "v")
        refs = [weakref.ref(client) for client in clients]
        peak = _connected_clients(admin)
        assert len(breaker.listeners) == listeners + CLIENTS
        del clients, client
        after = _settle(admin, baseline + 2)
        alive = sum(ref() is not None for ref in refs)
        print(f"connected_clients: baseline {baseline}, peak {peak}, after gc {after}")
        assert peak >= baseline + CLIENTS * 0.9  # they really held a connection each
        assert alive == 0
        assert after <= baseline + 2
        assert len(breaker.listeners) == listeners
    finally:
        admin.close()


def test_a_dropped_client_stops_its_running_prober(redis_server: RedisServer) -> None:
    """A client dropped during an outage is collected and its probing thread ends."""
    breaker = get_breaker("redis", BreakerConfig(failure_threshold=1, reset_timeout=600))
    listeners = len(breaker.listeners)
    client = redisguard.connect(redis_server.url)
    redis_server.kill()
    with pytest.raises(redisguard.CircuitOpenError):
        breaker.call(client.get, "k")
    assert _prober_threads()
    ref = weakref.ref(client)
    del client
    deadline = time.monotonic() + 10
    while ref() is not None or _prober_threads():
        assert time.monotonic() < deadline, "the dropped client or its prober lived on"
        gc.collect()
        time.sleep(0.05)
    assert len(breaker.listeners) == listeners


# redis.asyncio warns about a dropped client's unclosed connections (it closes them itself),
# exactly as for a plain redis.asyncio.Redis dropped without aclose().
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_dropped_async_clients_are_collected_and_release_their_connections(
    redis_server: RedisServer,
) -> None:
    """Clients made by aconnect() and dropped leave no connections and no listeners."""
    breaker = get_breaker("redis")
    admin: Any = redis.Redis(**redis_server.client_kwargs())
    try:
        baseline = _connected_clients(admin)
        listeners = len(breaker.listeners)
        clients = [await redisguard.aconnect(redis_server.url) for _ in range(CLIENTS // 4)]
        for i, client in enumerate(clients):
            await client.set(f"k{i}", "v")
        refs = [weakref.ref(client) for client in clients]
        peak = _connected_clients(admin)
        del clients, client
        after = await _asettle(admin, baseline + 2)
        print(f"asyncio connected_clients: baseline {baseline}, peak {peak}, after gc {after}")
        assert peak >= baseline + CLIENTS // 4
        assert sum(ref() is not None for ref in refs) == 0
        assert after <= baseline + 2
        assert len(breaker.listeners) == listeners
    finally:
        admin.close()
