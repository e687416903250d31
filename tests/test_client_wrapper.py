"""connect()/aconnect(): URL validation, startup, lifecycle logs, the recovery prober, close."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

import redisguard
from redisguard import BreakerConfig, ConfigError, RedisUnavailableError, get_breaker
from redisguard._client import (
    AsyncGuardedRedis,
    GuardedRedis,
    GuardedRedisCluster,
    aconnect,
    connect,
    validate_url,
)
from redisguard.testing import RedisServer, ServerNotFoundError, free_port
from redisguard.testing._binary import find_redis_server


def _wait_until(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def _prober_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("redisguard-prober")]


# -- URL validation ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://h:1", "scheme 'http'"),
        ("redis://:s3cret@h:99999/0", "out of range"),
        ("redis://:s3cret@h:6379/x", "database 'x'"),
        ("redis+sentinel://:s3cret@h:26379", "service name"),
        ("redis+sentinel://h:26379/mymaster/zz", "database 'zz'"),
        ("redis+sentinel://h:70000/mymaster", "out of range"),
        ("redis+cluster://:s3cret@h:7000/3", "only has database 0"),
        ("unix://", "socket path"),
    ],
)
def test_bad_urls_name_the_problem_without_the_password(url: str, problem: str) -> None:
    """A bad scheme, port or database raises ConfigError naming it, with the password masked."""
    with pytest.raises(ConfigError, match=problem) as info:
        validate_url(url)
    assert "s3cret" not in str(info.value)


def test_good_urls_are_accepted() -> None:
    """Every supported form validates and is returned unchanged."""
    for url in (
        "redis://localhost:6379/0",
        "rediss://u:p@h/2",
        "unix:///tmp/redis.sock",
        "redis+sentinel://h1:26379,h2:26380/mymaster/1",
        "redis+cluster://n1:7000,n2:7001",
    ):
        assert validate_url(url) == url


def test_default_url_comes_from_redis_url(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a URL, $REDIS_URL is used (and validated)."""
    monkeypatch.setenv("REDIS_URL", "ftp://:hunter2@nowhere")
    with pytest.raises(ConfigError, match="scheme 'ftp'") as info:
        connect()
    assert "hunter2" not in str(info.value)


def test_cluster_url_needs_cluster_flag() -> None:
    """A redis+cluster:// URL without cluster=True is refused, since the client type differs."""
    with pytest.raises(ConfigError, match="cluster=True"):
        connect("redis+cluster://127.0.0.1:1", check=False)


def test_explicit_sentinels_conflict_with_url() -> None:
    """sentinels= and a URL together are ambiguous."""
    with pytest.raises(ConfigError, match="not both"):
        connect("redis://127.0.0.1:1", sentinels=["127.0.0.1:26379"], service_name="m")
    with pytest.raises(ConfigError, match="service_name"):
        connect(sentinels=["127.0.0.1:26379"])


# -- startup ----------------------------------------------------------------------------------
def test_startup_fails_fast_by_default() -> None:
    """With nothing listening, connect() raises RedisUnavailableError at once."""
    port = free_port()
    started = time.perf_counter()
    with pytest.raises(RedisUnavailableError, match="not reachable"):
        connect(f"redis://:pw@127.0.0.1:{port}/0")
    assert time.perf_counter() - started < 1.0
    assert not _prober_threads()


def test_wait_for_ready_retries_until_redis_starts(caplog: pytest.LogCaptureFixture) -> None:
    """wait= retries the startup PING with backoff and succeeds once Redis comes up."""
    srv = RedisServer()
    timer = threading.Timer(0.4, srv.start)
    timer.start()
    try:
        with caplog.at_level(logging.INFO, logger="redisguard"):
            client = connect(f"redis://127.0.0.1:{srv.port}/0", wait=5.0)
        assert client.ping()
        assert any("Redis not ready" in r.getMessage() for r in caplog.records)
        client.close()
    finally:
        timer.join()
        srv.stop()


def test_wait_for_ready_gives_up_at_the_deadline() -> None:
    """wait= stops retrying before its deadline and raises RedisUnavailableError."""
    started = time.perf_counter()
    with pytest.raises(RedisUnavailableError):
        connect(f"redis://127.0.0.1:{free_port()}/0", wait=0.5)
    assert 0.2 < time.perf_counter() - started < 1.5


def test_client_is_a_redis_with_retry_off(server: RedisServer) -> None:
    """connect() returns a redis.Redis subclass whose own retry makes no extra attempts."""
    client = connect(server.url, decode_responses=True)
    try:
        assert isinstance(client, redis.Redis)
        assert isinstance(client, GuardedRedis)
        client.set("k", "v")
        assert client.get("k") == "v"
        retry = client.connection_pool.connection_kwargs["retry"]
        assert retry._retries == 0
        assert client.target == server.url
        assert client.breakers == (get_breaker("redis"),)
    finally:
        client.close()


def test_wrong_password_is_a_config_error() -> None:
    """Rejected credentials at startup are a ConfigError, not an outage."""
    with RedisServer(password="right") as srv:
        url = f"redis://:wrong@127.0.0.1:{srv.port}/0"
        with pytest.raises(ConfigError, match="credentials") as info:
            connect(url)
        assert "wrong" not in str(info.value)


def test_lifecycle_is_logged(server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """Connected, unavailable/reconnecting, restored and closed are logged."""
    get_breaker("redis", BreakerConfig(failure_threshold=1, reset_timeout=60))
    with caplog.at_level(logging.INFO, logger="redisguard"):
        client = connect(server.url)
        server.kill()
        with pytest.raises(redisguard.CircuitOpenError):
            get_breaker("redis").call(client.get, "k")
        server.restart()
        assert _wait_until(lambda: get_breaker("redis").current_state == "half-open")
        client.close()
    messages = [r.getMessage() for r in caplog.records]
    for needle in (
        "Redis connected",
        "probing for recovery",
        "Redis reconnecting",
        "Redis connection restored",
        "Redis client closed",
    ):
        assert any(needle in m for m in messages), needle


# -- the prober -------------------------------------------------------------------------------
def test_prober_half_opens_the_breaker_as_soon_as_redis_answers(server: RedisServer) -> None:
    """After a restart the breaker is half-open within the backoff, long before reset_timeout."""
    breaker = get_breaker("redis", BreakerConfig(failure_threshold=1, reset_timeout=600))
    client = connect(server.url)
    try:
        server.kill()
        with pytest.raises(redisguard.CircuitOpenError):
            breaker.call(client.get, "k")
        assert breaker.current_state == "open"
        assert client.prober is not None
        assert _wait_until(lambda: client.prober is not None and client.prober.running, 1)
        time.sleep(0.3)
        server.restart()
        assert _wait_until(lambda: breaker.current_state == "half-open", 3.0)
        assert breaker.call(client.ping)
        assert breaker.current_state == "closed"
        assert _wait_until(lambda: not _prober_threads(), 2.0)
    finally:
        client.close()


def test_one_prober_per_client_and_it_restarts_on_reopen(server: RedisServer) -> None:
    """Two breakers opening start one probing thread, and a second outage starts it again."""
    first = get_breaker("a", BreakerConfig(failure_threshold=1, reset_timeout=600))
    second = get_breaker("b", BreakerConfig(failure_threshold=1, reset_timeout=600))
    client = connect(server.url, breakers=["a", "b"])
    try:
        for _ in range(2):
            server.kill()
            for breaker in (first, second):
                with pytest.raises(redisguard.CircuitOpenError):
                    breaker.call(client.get, "k")
            assert len(_prober_threads()) == 1
            server.restart()
            assert _wait_until(
                lambda: first.current_state == second.current_state == "half-open", 3.0
            )
            first.call(client.ping)
            second.call(client.ping)
    finally:
        client.close()
    assert not _prober_threads()


def test_prober_can_be_turned_off(server: RedisServer) -> None:
    """prober=False leaves the breaker open until reset_timeout."""
    breaker = get_breaker("redis", BreakerConfig(failure_threshold=1, reset_timeout=600))
    client = connect(server.url, prober=False)
    try:
        server.kill()
        with pytest.raises(redisguard.CircuitOpenError):
            breaker.call(client.get, "k")
        server.restart()
        time.sleep(0.5)
        assert breaker.current_state == "open"
        assert client.prober is None
        assert not _prober_threads()
    finally:
        client.close()


def test_close_stops_a_running_prober(server: RedisServer) -> None:
    """close() during an outage stops the probing thread and drains the pool."""
    breaker = get_breaker("redis", BreakerConfig(failure_threshold=1, reset_timeout=600))
    client = connect(server.url)
    server.kill()
    with pytest.raises(redisguard.CircuitOpenError):
        breaker.call(client.get, "k")
    assert _prober_threads()
    started = time.perf_counter()
    client.close()
    assert time.perf_counter() - started < 1.0
    assert not _prober_threads()
    pool = client.connection_pool
    assert not pool._in_use_connections
    assert not any(c._sock is not None for c in pool._available_connections)


# -- asyncio ----------------------------------------------------------------------------------
async def test_async_prober_and_aclose(server: RedisServer) -> None:
    """The asyncio twin half-opens the breaker after a restart, and aclose() ends its task."""
    breaker = get_breaker("redis", BreakerConfig(failure_threshold=1, reset_timeout=600))
    client = await aconnect(server.url)
    assert isinstance(client, AsyncGuardedRedis)
    server.kill()
    with pytest.raises(redisguard.CircuitOpenError):
        await breaker.acall(client.get, "k")
    assert client.prober is not None
    assert client.prober.running
    server.restart()
    for _ in range(150):
        if breaker.current_state == "half-open":
            break
        await asyncio.sleep(0.02)
    assert breaker.current_state == "half-open"
    assert await breaker.acall(client.ping)
    server.kill()
    with pytest.raises(redisguard.CircuitOpenError):
        await breaker.acall(client.get, "k")
    await client.aclose()
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "redisguard-prober"]


async def test_async_startup_fails_fast() -> None:
    """aconnect() with nothing listening raises RedisUnavailableError."""
    with pytest.raises(RedisUnavailableError):
        await aconnect(f"redis://127.0.0.1:{free_port()}/0")


# -- Sentinel and Cluster ---------------------------------------------------------------------
@pytest.fixture
def sentinel(server: RedisServer, tmp_path: Path) -> Iterator[int]:
    """A real redis-sentinel on loopback watching ``server`` as ``mymaster``."""
    try:
        executable = find_redis_server().path
    except ServerNotFoundError as exc:
        pytest.skip(str(exc))
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\ndir {tmp_path}\n"
        f"sentinel monitor mymaster 127.0.0.1 {server.port} 1\n"
    )
    proc = subprocess.Popen(
        [executable, str(conf), "--sentinel"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        probe = redis.Redis(port=port, socket_timeout=0.5)
        assert _wait_until(lambda: _sentinel_ready(probe), 5.0)
        probe.close()
        yield port
    finally:
        proc.kill()
        proc.wait()


def _sentinel_ready(probe: redis.Redis) -> bool:
    try:
        return bool(probe.execute_command("SENTINEL", "get-master-addr-by-name", "mymaster"))  # type: ignore[no-untyped-call]
    except redis.RedisError:
        return False


def test_sentinel_url_reaches_the_master(server: RedisServer, sentinel: int) -> None:
    """A redis+sentinel:// URL resolves the master through the Sentinel and works."""
    client = connect(f"redis+sentinel://127.0.0.1:{sentinel}/mymaster/0")
    try:
        client.set("k", "v")
        assert client.get("k") == b"v"
    finally:
        client.close()
    explicit = connect(sentinels=[("127.0.0.1", sentinel)], service_name="mymaster")
    try:
        assert explicit.get("k") == b"v"
    finally:
        explicit.close()


async def test_async_sentinel(server: RedisServer, sentinel: int) -> None:
    """aconnect() with a redis+sentinel:// URL works too."""
    client = await aconnect(f"redis+sentinel://127.0.0.1:{sentinel}/mymaster")
    try:
        await client.set("k", "v")
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()


def _cluster_ok(admin: redis.Redis) -> bool:
    sock_reply = admin.execute_command("CLUSTER", "INFO")  # type: ignore[no-untyped-call]
    return "cluster_state:ok" in str(sock_reply) or "'cluster_state': 'ok'" in str(sock_reply)


@pytest.fixture
def cluster_node() -> Iterator[RedisServer]:
    """A one-node Redis Cluster owning every slot."""
    srv = RedisServer(
        port=free_port(cluster_bus=True),
        args=["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"],
    )
    with srv:
        admin = redis.Redis(port=srv.port, socket_timeout=1)
        # ADDSLOTS with every slot, not ADDSLOTSRANGE (Redis 7.0): this also runs on Redis 6.2
        admin.execute_command("CLUSTER", "ADDSLOTS", *range(16384))  # type: ignore[no-untyped-call]
        assert _wait_until(lambda: _cluster_ok(admin))
        admin.close()
        yield srv


def test_cluster_client(cluster_node: RedisServer) -> None:
    """cluster=True (or redis+cluster://) builds a RedisCluster subclass that works."""
    client = connect(f"redis+cluster://127.0.0.1:{cluster_node.port}", cluster=True)
    try:
        assert isinstance(client, GuardedRedisCluster)
        client.set("k", "v")
        assert client.get("k") == b"v"
    finally:
        client.close()
    assert not _prober_threads()


async def test_async_cluster_client(cluster_node: RedisServer) -> None:
    """aconnect(cluster=True) builds an asyncio RedisCluster that works."""
    client = await aconnect(f"redis://127.0.0.1:{cluster_node.port}", cluster=True)
    try:
        await client.set("k", "v")
        assert await client.get("k") == b"v"
    finally:
        await client.aclose()
