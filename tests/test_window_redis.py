"""Slow-call and failure-rate breaking against a real redis-server behind a FaultProxy."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio

import redisguard
from redisguard import Breaker, BreakerConfig, SlowCallsError, redis_guarded
from redisguard._prober import ping_proves_recovery
from redisguard.testing import FaultProxy, RedisServer

pytestmark = pytest.mark.timeout(30)

SOCKET_TIMEOUT = 0.25
LATENCY_MS = 30
RESET_TIMEOUT = 0.5
SLOW = BreakerConfig(
    slow_call_duration=0.010,
    slow_call_rate_threshold=50,
    minimum_calls=10,
    sliding_window_size=20,
    reset_timeout=RESET_TIMEOUT,
    half_open_max_attempts=1,
)


@pytest.fixture
def client(fault_proxy: FaultProxy) -> Iterator[redis.Redis]:
    """A sync client through the proxy (explicit timeouts, no redis-py retry)."""
    client = redisguard.connect(
        fault_proxy.url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
    )
    client.set("k", "v")
    yield client
    client.close()


@pytest.fixture
async def aclient(fault_proxy: FaultProxy) -> AsyncIterator[redis.asyncio.Redis]:
    """An asyncio client through the proxy."""
    client = await redisguard.aconnect(
        fault_proxy.url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
    )
    await client.set("k", "v")
    yield client
    await client.aclose()


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98]


def test_latency_opens_the_slow_call_breaker_and_heals(
    client: redis.Redis, fault_proxy: FaultProxy
) -> None:
    """30 ms latency opens it after minimum_calls; fallbacks are then fast; it closes after."""
    breaker = Breaker("slow-sync", SLOW)

    @redis_guarded(name="slow.get", fallback="fallback", breaker=breaker, retry=None)
    def get() -> object:
        return client.get("k")

    assert get() == b"v"
    fault_proxy.latency(LATENCY_MS)
    answers = []
    while breaker.current_state == "closed":
        answers.append(get())
        assert len(answers) <= SLOW.minimum_calls
    assert answers == [b"v"] * len(answers)  # every slow call succeeded
    assert len(answers) >= SLOW.minimum_calls // 2  # 1 fast call, then slow ones reach 50%
    cause = breaker.opened_by
    assert isinstance(cause, SlowCallsError)
    assert cause.rate >= 50
    assert cause.threshold == 50
    assert not ping_proves_recovery(cause)

    durations = []
    for _ in range(200):
        began = time.perf_counter()
        assert get() == "fallback"
        durations.append(time.perf_counter() - began)
    assert p99(durations) < 0.002

    # Still slow when the reset timeout ends: the slow trial re-opens it.
    time.sleep(breaker.seconds_until_retry() or 0.0)
    time.sleep(0.02)
    assert get() == b"v"
    assert breaker.current_state == "open"
    assert "half-open trial" in str(breaker.opened_by)

    fault_proxy.latency(0)
    # A trial over 10 ms re-opens it: on a loaded machine one can be, so a few rounds.
    for _ in range(5):
        time.sleep((breaker.seconds_until_retry() or 0.0) + 0.02)
        assert get() == b"v"
        if breaker.current_state == "closed":
            break
    assert breaker.current_state == "closed"
    assert breaker.stats().window_calls == 0


async def test_async_latency_opens_the_slow_call_breaker_and_heals(
    aclient: redis.asyncio.Redis, fault_proxy: FaultProxy
) -> None:
    """The asyncio guard times the awaited call the same way."""
    breaker = Breaker("slow-async", SLOW)

    @redis_guarded(name="slow.aget", fallback="fallback", breaker=breaker, retry=None)
    async def get() -> object:
        return await aclient.get("k")

    assert await get() == b"v"
    fault_proxy.latency(LATENCY_MS)
    calls = 0
    while breaker.current_state == "closed":
        assert await get() == b"v"
        calls += 1
        assert calls <= SLOW.minimum_calls
    assert isinstance(breaker.opened_by, SlowCallsError)
    began = time.perf_counter()
    assert [await get() for _ in range(100)] == ["fallback"] * 100
    assert time.perf_counter() - began < 0.1

    fault_proxy.latency(0)
    for _ in range(5):  # a trial over 10 ms (a loaded machine) re-opens it: a few rounds
        await asyncio.sleep((breaker.seconds_until_retry() or 0.0) + 0.02)
        assert await get() == b"v"
        if breaker.current_state == "closed":
            break
    assert breaker.current_state == "closed"


def test_fast_redis_never_trips_the_slow_call_breaker(client: redis.Redis) -> None:
    """Loopback GETs stay far below 10 ms: 300 calls leave it closed with no slow calls."""
    breaker = Breaker("fast", SLOW)

    @redis_guarded(name="fast.get", fallback="fallback", breaker=breaker, retry=None)
    def get() -> object:
        return client.get("k")

    assert [get() for _ in range(300)] == [b"v"] * 300
    stats = breaker.stats()
    assert stats.state == "closed"
    assert stats.window_calls == 20  # the last 20 calls (count-based, per-call buckets)
    assert stats.slow_call_rate is not None
    assert stats.slow_call_rate < 50


def test_failure_rate_mode_opens_at_the_rate_not_before_minimum_calls(
    client: redis.Redis, redis_server: RedisServer
) -> None:
    """Every other call refused: it opens on the 10th call (50% of 10), not before."""
    breaker = Breaker(
        "rate",
        BreakerConfig(
            failure_threshold=2,  # ignored in failure-rate mode
            failure_rate_threshold=50,
            minimum_calls=10,
            sliding_window_size=10,
            reset_timeout=30,
        ),
    )
    dead = redisguard.connect(
        "redis://127.0.0.1:1",
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=0.2,
        check=False,
    )

    @redis_guarded(name="rate.get", fallback="fallback", breaker=breaker, retry=None)
    def get(target: redis.Redis) -> object:
        return target.get("k")

    try:
        answers = []
        for call in range(1, 11):
            answers.append(get(client if call % 2 else dead))
            assert breaker.current_state == ("open" if call == 10 else "closed"), call
        assert answers == [b"v", "fallback"] * 5
        assert isinstance(breaker.opened_by, redis.ConnectionError)
        assert ping_proves_recovery(breaker.opened_by)  # the prober may half-open it early
        assert get(client) == "fallback"
    finally:
        dead.close()


def test_prober_leaves_a_slow_call_opening_to_the_reset_timeout(
    fault_proxy: FaultProxy,
) -> None:
    """PINGs answer through a 30 ms proxy, but prove nothing about latency: it stays open."""
    breaker = Breaker(
        "slow-probed", BreakerConfig(slow_call_duration=0.01, minimum_calls=3, reset_timeout=600)
    )
    client = redisguard.connect(fault_proxy.url, breakers=[breaker], socket_timeout=SOCKET_TIMEOUT)
    try:
        fault_proxy.latency(LATENCY_MS)
        for _ in range(3):
            breaker.call(client.get, "k")
        assert isinstance(breaker.opened_by, SlowCallsError)
        time.sleep(0.5)  # a prober that PINGed would have half-opened it by now
        assert breaker.current_state == "open"
        assert client.prober is not None
        assert not client.prober.running
    finally:
        client.close()
