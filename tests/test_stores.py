"""Session, token and client-registry stores against a real redis-server, sync and asyncio."""

from __future__ import annotations

import logging
import time

import pytest
import redis
from _refusals import failed_save, fill_memory, free_memory, slow_script

from redisguard import BreakerConfig, RetryPolicy, StoreUnavailableError, get_breaker
from redisguard._client import AsyncGuardedRedis, GuardedRedis, connect
from redisguard.stores import (
    AsyncClientRegistry,
    AsyncSessionStore,
    AsyncTokenStore,
    ClientExistsError,
    ClientRegistry,
    Lookup,
    SessionStore,
    TemporarilyUnavailableError,
    TokenStore,
    data_errors,
)
from redisguard.testing import RedisServer

FAST = RetryPolicy(attempts=2, backoff=0.001, max_backoff=0.002, jitter=0.0, deadline=0.3)


@pytest.fixture
def client_breaker() -> BreakerConfig:
    """The stores' tests open the shared breaker after 3 failures (conftest's ``client``)."""
    return BreakerConfig(failure_threshold=3, reset_timeout=60)


def test_twins_share_their_flows() -> None:
    """Sync and asyncio stores run the very same flow functions (only the drivers differ)."""
    assert AsyncSessionStore.get_flow is SessionStore.get_flow
    assert AsyncSessionStore.lookup_flow is SessionStore.lookup_flow
    assert AsyncTokenStore.save_flow is TokenStore.save_flow
    assert AsyncClientRegistry.register_flow is ClientRegistry.register_flow


# -- sessions -------------------------------------------------------------------------------
def test_session_roundtrip_with_ttl(client: GuardedRedis) -> None:
    """set/get/touch/delete work and the TTL is set and refreshed."""
    store = SessionStore(client, ttl=100)
    store.set("s1", {"user": "ada", "roles": ["admin"]})
    assert store.get("s1") == {"user": "ada", "roles": ["admin"]}
    assert 99_000 < client.pttl("session:s1") <= 100_000
    store.set("s1", 1, ttl=5)
    assert client.pttl("session:s1") <= 5000
    assert store.touch("s1", ttl=50) is True
    assert client.pttl("session:s1") > 5000
    assert store.touch("missing") is False
    assert store.delete("s1") is True
    assert store.delete("s1") is False
    assert store.get("s1") is None


def test_corrupt_json_is_a_data_error(
    client: GuardedRedis, caplog: pytest.LogCaptureFixture
) -> None:
    """Corrupt JSON reads as not found, is counted and logged by fingerprint, breaker untouched."""
    breaker = get_breaker("redis")
    store = SessionStore(client)
    client.set("session:secret-session-id", b"{not json")
    with caplog.at_level(logging.WARNING, logger="redisguard"):
        assert store.get("secret-session-id") is None
        assert store.get("secret-session-id", strict=True) is None
    assert data_errors()["session.get"] >= 2
    assert breaker.failure_total == 0
    assert breaker.current_state == "closed"
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "Unreadable value" in text
    assert "secret-session-id" not in text


def test_unserializable_value_raises_type_error(client: GuardedRedis) -> None:
    """A value json cannot encode raises TypeError at set and nothing is written."""
    store = SessionStore(client)
    with pytest.raises(TypeError):
        store.set("s", {"when": object()})
    with pytest.raises(TypeError):
        store.set("s", float("nan"))
    assert client.exists("session:s") == 0


def test_session_outage_semantics(client: GuardedRedis, server: RedisServer) -> None:
    """Down: get answers None (or raises with strict=True); writes raise, never fake success."""
    store = SessionStore(client, retry=FAST)
    store.set("s", {"a": 1})
    server.kill()
    assert store.get("s") is None
    with pytest.raises(TemporarilyUnavailableError) as info:
        store.get("s", strict=True)
    assert isinstance(info.value, StoreUnavailableError)
    assert info.value.retry_after >= 1
    for write in (
        lambda: store.set("s", {"a": 2}),
        lambda: store.touch("s"),
        lambda: store.delete("s"),
    ):
        with pytest.raises(TemporarilyUnavailableError):
            write()
    assert get_breaker("redis").current_state == "open"


def test_lookup_tells_not_found_from_a_fallback_before_the_breaker_opens(
    client: GuardedRedis, server: RedisServer
) -> None:
    """lookup() says degraded for the very first fallback of an outage, breaker still closed."""
    store = SessionStore(client, retry=FAST)
    store.set("s", {"a": 1})
    assert store.lookup("s") == Lookup({"a": 1})
    assert store.lookup("s").found
    missing = store.lookup("nobody")
    assert (missing.value, missing.degraded, missing.failure, missing.found) == (
        None,
        False,
        None,
        False,
    )
    server.pause()
    try:
        first = store.lookup("s")
        assert get_breaker("redis").current_state == "closed"  # 1 failure, threshold 3
        assert (first.value, first.degraded) == (None, True)
        assert first.failure is not None
        assert first.failure.operation == "session.get"
        assert first.failure.circuit_open is False
        assert first.failure.attempts >= 1
        while get_breaker("redis").current_state == "closed":
            assert store.lookup("s").degraded
        short = store.lookup("s")
        assert get_breaker("redis").current_state == "open"
        assert short.degraded
        assert short.failure is not None
        assert short.failure.circuit_open
    finally:
        server.resume()


async def test_async_lookup_tells_not_found_from_a_fallback(
    aclient: AsyncGuardedRedis, server: RedisServer
) -> None:
    """The asyncio lookup() answers the same: degraded for a fallback, not for a miss."""
    store = AsyncSessionStore(aclient, retry=FAST)
    await store.set("s", "v")
    assert await store.lookup("s") == Lookup("v")
    assert await store.lookup("nobody") == Lookup(None)
    server.pause()
    try:
        first = await store.lookup("s")
        assert get_breaker("redis").current_state == "closed"
        assert first.degraded
        assert first.failure is not None
        assert not first.failure.circuit_open
    finally:
        server.resume()


def test_data_errors_propagate(client: GuardedRedis) -> None:
    """A WRONGTYPE error is not an outage: it reaches the caller and the breaker ignores it."""
    client.rpush("session:list", "x")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        SessionStore(client).get("list")
    assert get_breaker("redis").failure_total == 0


async def test_async_session_store(aclient: AsyncGuardedRedis, server: RedisServer) -> None:
    """The asyncio twin behaves the same, including the outage semantics."""
    store = AsyncSessionStore(aclient, ttl=10, retry=FAST)
    await store.set("s", [1, 2])
    assert await store.get("s") == [1, 2]
    assert await store.touch("s") is True
    server.kill()
    assert await store.get("s") is None
    with pytest.raises(TemporarilyUnavailableError):
        await store.get("s", strict=True)
    with pytest.raises(TemporarilyUnavailableError):
        await store.set("s", [3])
    with pytest.raises(TemporarilyUnavailableError):
        await store.delete("s")


# -- tokens ---------------------------------------------------------------------------------
def test_token_store_save_get_revoke_expiry(client: GuardedRedis) -> None:
    """Tokens round-trip with metadata, expire, revoke; the key never contains the token id."""
    store = TokenStore(client)
    token = store.save("opaque-token-id", "at-value", ttl=60, metadata={"scope": "read"})
    assert "at-value" not in repr(token)
    got = store.get("opaque-token-id")
    assert got is not None
    assert (got.value, dict(got.metadata)) == ("at-value", {"scope": "read"})
    assert 55 < got.expires_in <= 60
    assert not any(b"opaque-token-id" in k for k in client.keys("*"))
    store.save("short", "v", ttl=0.05)
    time.sleep(0.1)
    assert store.get("short") is None
    assert store.revoke("opaque-token-id") is True
    assert store.get("opaque-token-id") is None
    assert store.revoke("opaque-token-id") is False


def test_token_outage_is_not_a_missing_token(
    client: GuardedRedis, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Down: get raises TemporarilyUnavailableError instead of None; values never logged."""
    store = TokenStore(client, retry=FAST)
    store.save("tid", "super-secret-token", ttl=60)
    server.kill()
    with caplog.at_level(logging.DEBUG, logger="redisguard"):
        with pytest.raises(TemporarilyUnavailableError):
            store.get("tid")
        with pytest.raises(TemporarilyUnavailableError):
            store.save("tid", "super-secret-token", ttl=60)
        with pytest.raises(TemporarilyUnavailableError):
            store.revoke("tid")
    assert "super-secret-token" not in caplog.text


async def test_async_token_store(aclient: AsyncGuardedRedis, server: RedisServer) -> None:
    """The asyncio token store round-trips and raises on an outage."""
    store = AsyncTokenStore(aclient, retry=FAST)
    await store.save("t", "v", ttl=30)
    got = await store.get("t")
    assert got is not None
    assert got.value == "v"
    assert await store.get("nope") is None
    server.kill()
    with pytest.raises(TemporarilyUnavailableError):
        await store.get("t")


# -- client registry ------------------------------------------------------------------------
def test_client_registry_roundtrip(client: GuardedRedis) -> None:
    """register/get/delete; a duplicate explicit client_id is refused."""
    registry = ClientRegistry(client)
    record = registry.register({"redirect_uris": ["https://app/cb"]})
    assert record["client_id"]
    assert isinstance(record["client_id_issued_at"], int)
    assert registry.get(record["client_id"]) == record
    registry.register({"client_name": "x"}, client_id="fixed")
    with pytest.raises(ClientExistsError):
        registry.register({"client_name": "y"}, client_id="fixed")
    assert registry.delete("fixed") is True
    assert registry.get("fixed") is None


def test_registration_outage_carries_retry_after(client: GuardedRedis, server: RedisServer) -> None:
    """Down: register raises a typed error with retry_after; a refused connect is retried."""
    registry = ClientRegistry(client)
    server.kill()
    with pytest.raises(TemporarilyUnavailableError) as info:
        registry.register({"redirect_uris": ["https://x"]})
    # SET NX is not idempotent, but a refused connection proves it never ran.
    assert info.value.attempts == 3
    assert 1 <= info.value.retry_after <= 30
    with pytest.raises(TemporarilyUnavailableError):
        registry.get("any")


async def test_async_client_registry(aclient: AsyncGuardedRedis, server: RedisServer) -> None:
    """The asyncio registry registers, and raises with retry_after once Redis is gone."""
    registry = AsyncClientRegistry(aclient)
    record = await registry.register({"redirect_uris": ["https://a"]})
    assert await registry.get(record["client_id"]) == record
    assert await registry.delete(record["client_id"]) is True
    server.kill()
    with pytest.raises(TemporarilyUnavailableError) as info:
        await registry.register({"redirect_uris": ["https://a"]})
    assert info.value.retry_after >= 1


def test_stores_use_their_own_breaker(client: GuardedRedis, server: RedisServer) -> None:
    """breaker= routes a store's calls through that breaker, leaving the default one alone."""
    own = get_breaker("sessions", BreakerConfig(failure_threshold=1, reset_timeout=60))
    store = SessionStore(client, breaker="sessions", retry=None)
    server.kill()
    assert store.get("s") is None
    assert own.current_state == "open"
    assert get_breaker("redis").failure_total == 0


def test_corrupt_values_are_exported_as_metrics() -> None:
    """store_data_errors{operation} counts corrupt values read by the stores."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from redisguard import redis_guarded
    from redisguard._stores_core import data_error_tally, data_errors

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    redis_guarded(name="metrics.anchor", fallback=None, meter_provider=provider)(lambda: None)
    data_error_tally("session.get").add(2)
    expected = data_errors()["session.get"]
    values = {
        dict(point.attributes)["operation"]: point.value
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name == "store_data_errors"
        for point in metric.data.data_points
    }
    assert values["session.get"] == expected >= 2
    provider.shutdown()


def test_strict_session_read_chains_the_redis_error(
    client: GuardedRedis, server: RedisServer
) -> None:
    """A strict read that reached Redis and failed carries the Redis error as its cause."""
    import redis as redis_py

    from redisguard import Breaker

    store = SessionStore(
        client, retry=None, breaker=Breaker("strict", BreakerConfig(failure_threshold=100))
    )
    server.kill()
    with pytest.raises(TemporarilyUnavailableError) as info:
        store.get("s", strict=True)
    assert isinstance(info.value.__cause__, redis_py.ConnectionError)


# -- "cannot serve now" replies from a real server ---------------------------------------------
def test_session_get_answers_none_while_a_script_is_busy(
    client: GuardedRedis, server: RedisServer
) -> None:
    """BUSY (a script past busy-reply-threshold): get answers None, set raises, both count."""
    store = SessionStore(client, retry=FAST)
    store.set("s1", {"user": 1})
    with slow_script(server, 5.0, busy_after_ms=20):
        assert store.get("s1") is None
        with pytest.raises(TemporarilyUnavailableError):
            store.set("s2", {"user": 2})
    assert store.breaker.stats().failure_count == 3  # 2 attempts of get, 1 of set: opened
    assert store.breaker.current_state == "open"


async def test_async_session_get_answers_none_while_a_script_is_busy(
    aclient: AsyncGuardedRedis, server: RedisServer
) -> None:
    """The asyncio store degrades the same way under BUSY."""
    store = AsyncSessionStore(aclient, retry=FAST)
    with slow_script(server, 5.0, busy_after_ms=20):
        assert await store.get("s1") is None


def test_session_set_raises_temporarily_unavailable_when_out_of_memory(
    client: GuardedRedis, server: RedisServer
) -> None:
    """OOM: set raises TemporarilyUnavailableError; reads still work; only the write side opens."""
    store = SessionStore(client, retry=FAST)
    store.set("s1", {"user": 1})
    fill_memory(server)
    try:
        for _ in range(5):  # more than the breaker's failure threshold
            with pytest.raises(TemporarilyUnavailableError) as info:
                store.set("s2", {"user": 2})
        assert info.value.retry_after == 30  # the write side's 60 s, capped at 30 s
        assert store.get("s1") == {"user": 1}
        assert store.breaker.current_state == "closed"
        assert store.breaker.write_state == "open"
    finally:
        free_memory(server)
    store.breaker.write_side.close()
    store.set("s2", {"user": 2})


def test_session_set_raises_temporarily_unavailable_after_a_failed_save() -> None:
    """MISCONF (a failed RDB save stops writes): set raises TemporarilyUnavailableError."""
    with RedisServer(args=["--enable-protected-configs", "yes"]) as server:
        c = connect(server.url, prober=False)
        store = SessionStore(c, retry=FAST)
        store.set("s1", {"user": 1})
        with failed_save(server):
            with pytest.raises(TemporarilyUnavailableError) as info:
                store.set("s2", {"user": 2})
            assert "MISCONF" in str(info.value.__cause__)
            assert store.get("s1") == {"user": 1}
        c.close()
