"""The bulkhead (``max_concurrent_calls``): threads and asyncio tasks, a real redis-server."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.retry
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from redis.backoff import NoBackoff
from redis.retry import Retry

from redisguard import (
    Breaker,
    BreakerConfig,
    BulkheadFullError,
    ErrorKind,
    Failure,
    RedisUnavailableError,
    current_failure,
    redis_guarded,
)
from redisguard._bulkhead import Bulkhead
from redisguard.testing import RedisServer, free_port

pytestmark = pytest.mark.timeout(30)

HOLD = 5.0  # upper bound on how long a test keeps a call inside the guard


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain sync client with explicit timeouts and redis-py's retry off."""
    client = redis.Redis.from_url(redis_server.url, socket_timeout=1.0, retry=Retry(NoBackoff(), 0))
    yield client
    client.close()


@pytest.fixture
async def aclient(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """A plain asyncio client with explicit timeouts and redis-py's retry off."""
    client = redis.asyncio.Redis.from_url(
        redis_server.url, socket_timeout=1.0, retry=redis.asyncio.retry.Retry(NoBackoff(), 0)
    )
    yield client
    await client.aclose()


def bulkhead_breaker(limit: int, wait: float = 0.0, **config: Any) -> Breaker:
    return Breaker("bulkhead", BreakerConfig(max_concurrent_calls=limit, max_wait_for_slot=wait,
                                             **config))


class Gauge:
    """Counts the calls inside the guarded function and the most seen at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.entered = 0

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.entered += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def rejected_failure() -> Failure:
    return Failure(
        operation="held",
        breaker="bulkhead",
        exception=None,
        kind=ErrorKind.REJECTED,
        circuit_open=False,
        attempts=0,
    )


def test_threads_over_the_limit_fall_back_at_once_and_the_breaker_counts_nothing(
    client: redis.Redis,
) -> None:
    """With 2 slots and 6 threads, 2 calls reach Redis and 4 fall back with kind REJECTED."""
    breaker = bulkhead_breaker(2, failure_threshold=1)
    gauge, release, inside = Gauge(), threading.Event(), threading.Barrier(3)

    @redis_guarded(name="held", breaker=breaker, fallback=lambda: ("fallback", current_failure()))
    def held() -> Any:
        gauge.enter()
        try:
            client.get("k")
            inside.wait(HOLD)
            release.wait(HOLD)
            return "redis"
        finally:
            gauge.leave()

    holders = [threading.Thread(target=held) for _ in range(2)]
    for t in holders:
        t.start()
    inside.wait(HOLD)  # both slots are taken now
    assert breaker.stats().bulkhead_in_flight == 2
    started = time.perf_counter()
    rejected = [held() for _ in range(4)]
    elapsed = time.perf_counter() - started
    release.set()
    for t in holders:
        t.join(HOLD)
    assert rejected == [("fallback", rejected_failure())] * 4
    assert elapsed < 0.5  # answered at once, not after the holders finished
    assert gauge.peak == 2
    assert gauge.entered == 2
    stats = breaker.stats()
    assert stats.state == "closed"
    assert stats.failure_count == 0
    assert stats.success_count == 2
    assert stats.rejected_count == 0  # the breaker's own rejections: circuit open only
    assert stats.bulkhead_rejected_count == 4
    assert stats.bulkhead_in_flight == 0
    assert breaker.failure_total == 0


async def test_tasks_over_the_limit_fall_back_at_once(aclient: redis.asyncio.Redis) -> None:
    """With 3 slots and 10 concurrent tasks, 3 reach Redis and 7 fall back (REJECTED)."""
    breaker = bulkhead_breaker(3)
    gauge, release = Gauge(), asyncio.Event()

    async def fallback() -> Any:
        return current_failure()

    @redis_guarded(name="held", breaker=breaker, fallback=fallback)
    async def held() -> Any:
        gauge.enter()
        try:
            await aclient.get("k")
            await release.wait()
            return "redis"
        finally:
            gauge.leave()

    tasks = [asyncio.create_task(held()) for _ in range(10)]
    pending = set(tasks)
    while len(tasks) - len(pending) < 7:  # the rejected ones finish at once
        _, pending = await asyncio.wait(
            pending, timeout=HOLD, return_when=asyncio.FIRST_COMPLETED
        )
    assert gauge.entered == 3
    assert breaker.stats().bulkhead_in_flight == 3
    release.set()
    results = await asyncio.gather(*tasks)
    assert results.count("redis") == 3
    assert results.count(rejected_failure()) == 7
    assert gauge.peak == 3
    stats = breaker.stats()
    assert (stats.bulkhead_rejected_count, stats.bulkhead_in_flight) == (7, 0)
    assert (stats.failure_count, stats.success_count) == (0, 3)


def test_without_fallback_a_rejected_call_raises_bulkhead_full(client: redis.Redis) -> None:
    """No fallback: BulkheadFullError, a RedisUnavailableError with 0 attempts."""
    breaker = bulkhead_breaker(1)
    release, inside = threading.Event(), threading.Event()

    @redis_guarded(name="held", breaker=breaker)
    def held() -> Any:
        client.get("k")
        inside.set()
        release.wait(HOLD)
        return "redis"

    holder = threading.Thread(target=held)
    holder.start()
    assert inside.wait(HOLD)
    with pytest.raises(BulkheadFullError) as info:
        held()
    release.set()
    holder.join(HOLD)
    assert isinstance(info.value, RedisUnavailableError)
    error = info.value
    assert (error.operation, error.breaker, error.attempts) == ("held", "bulkhead", 0)
    assert "bulkhead" in str(info.value)
    assert held() == "redis"  # the slot is free again


def test_a_thread_waits_for_a_slot_up_to_max_wait(client: redis.Redis) -> None:
    """A call waits for a slot freed within ``max_wait_for_slot``, else falls back after it."""
    breaker = bulkhead_breaker(1, wait=2.0)
    inside, hold_for = threading.Event(), [0.15]

    @redis_guarded(name="held", breaker=breaker, fallback="fallback")
    def held() -> str:
        client.get("k")
        inside.set()
        time.sleep(hold_for[0])
        return "redis"

    holder = threading.Thread(target=held)
    holder.start()
    assert inside.wait(HOLD)
    started = time.perf_counter()
    assert held() == "redis"  # waited for the holder's slot
    assert 0.05 < time.perf_counter() - started < 1.5
    holder.join(HOLD)

    short = bulkhead_breaker(1, wait=0.1)
    short_inside = threading.Event()

    @redis_guarded(name="held", breaker=short, fallback="fallback")
    def held_long() -> str:
        client.get("k")
        short_inside.set()
        time.sleep(0.6)
        return "redis"

    holder = threading.Thread(target=held_long)
    holder.start()
    assert short_inside.wait(HOLD)
    started = time.perf_counter()
    assert held_long() == "fallback"
    waited = time.perf_counter() - started
    holder.join(HOLD)
    assert 0.09 < waited < 0.5
    assert short.stats().bulkhead_rejected_count == 1


async def test_a_task_awaits_a_slot_without_blocking_the_loop(
    aclient: redis.asyncio.Redis,
) -> None:
    """An async call waiting for a slot awaits: other tasks keep running meanwhile."""
    breaker = bulkhead_breaker(1, wait=2.0)
    inside = asyncio.Event()

    @redis_guarded(name="held", breaker=breaker, fallback="fallback")
    async def held() -> str:
        await aclient.get("k")
        inside.set()
        await asyncio.sleep(0.2)
        return "redis"

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    tick_task = asyncio.create_task(ticker())
    first = asyncio.create_task(held())
    await inside.wait()
    started = time.perf_counter()
    assert await held() == "redis"
    waited = time.perf_counter() - started
    tick_task.cancel()
    assert await first == "redis"
    assert 0.1 < waited < 1.5
    assert ticks >= 5  # the loop ran other tasks while the call waited
    assert breaker.stats().bulkhead_rejected_count == 0


async def test_a_task_rejected_after_max_wait(aclient: redis.asyncio.Redis) -> None:
    """An async call that finds no slot within ``max_wait_for_slot`` falls back."""
    breaker = bulkhead_breaker(1, wait=0.1)
    inside = asyncio.Event()

    @redis_guarded(name="held", breaker=breaker, fallback="fallback")
    async def held() -> str:
        await aclient.get("k")
        inside.set()
        await asyncio.sleep(0.6)
        return "redis"

    first = asyncio.create_task(held())
    await inside.wait()
    started = time.perf_counter()
    assert await held() == "fallback"
    assert 0.09 < time.perf_counter() - started < 0.5
    assert await first == "redis"


def test_slot_is_released_after_errors_and_fallbacks(redis_server: RedisServer) -> None:
    """A data error, an outage's fallback and a bug each give the one slot back."""
    breaker = bulkhead_breaker(1, failure_threshold=100)
    live = redis.Redis.from_url(redis_server.url, socket_timeout=1.0, retry=Retry(NoBackoff(), 0))
    dead = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    try:
        live.set("text", "x")

        @redis_guarded(name="hincr", breaker=breaker, fallback="fallback", retry=None)
        def wrongtype() -> Any:
            return live.hincrby("text", "f", 1)

        @redis_guarded(name="dead", breaker=breaker, fallback="fallback", retry=None)
        def outage() -> Any:
            return dead.get("k")

        @redis_guarded(name="bug", breaker=breaker, fallback="fallback")
        def bug() -> Any:
            raise KeyError("bug")

        for _ in range(3):
            with pytest.raises(redis.ResponseError):
                wrongtype()
            assert outage() == "fallback"
            with pytest.raises(KeyError):
                bug()
        assert breaker.stats().bulkhead_in_flight == 0
        assert breaker.stats().bulkhead_rejected_count == 0
    finally:
        live.close()
        dead.close()


async def test_slot_is_released_when_a_task_is_cancelled(aclient: redis.asyncio.Redis) -> None:
    """Cancelling a task inside the guard, or waiting for a slot, leaks no slot."""
    breaker = bulkhead_breaker(1, wait=5.0)
    inside = asyncio.Event()

    @redis_guarded(name="held", breaker=breaker, fallback="fallback")
    async def held(seconds: float) -> str:
        await aclient.get("k")
        inside.set()
        await asyncio.sleep(seconds)
        return "redis"

    holder = asyncio.create_task(held(10.0))
    await inside.wait()
    waiter = asyncio.create_task(held(0.0))
    await asyncio.sleep(0.05)  # the waiter is polling for the slot now
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert breaker.stats().bulkhead_in_flight == 1
    holder.cancel()
    with pytest.raises(asyncio.CancelledError):
        await holder
    assert breaker.stats().bulkhead_in_flight == 0
    assert await held(0.0) == "redis"
    stats = breaker.stats()
    assert (stats.failure_count, stats.bulkhead_rejected_count) == (0, 0)


def test_metrics_show_rejections_and_calls_in_flight(client: redis.Redis) -> None:
    """``redis_bulkhead_rejections{breaker}`` and ``redis_bulkhead_in_flight{breaker}``."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        breaker = bulkhead_breaker(1)
        inside, release = threading.Event(), threading.Event()

        @redis_guarded(name="held", breaker=breaker, fallback="fallback", meter_provider=provider)
        def held() -> str:
            client.get("k")
            inside.set()
            release.wait(HOLD)
            return "redis"

        def values() -> dict[str, Any]:
            out: dict[str, Any] = {}
            data = reader.get_metrics_data()
            for rm in data.resource_metrics if data else ():
                for sm in rm.scope_metrics:
                    for metric in sm.metrics:
                        for point in metric.data.data_points:
                            if dict(point.attributes or {}) == {"breaker": "bulkhead"}:
                                out[metric.name] = point.value
            return out

        holder = threading.Thread(target=held)
        holder.start()
        assert inside.wait(HOLD)
        assert held() == "fallback"
        assert held() == "fallback"
        during = values()
        release.set()
        holder.join(HOLD)
        after = values()
    finally:
        provider.shutdown()
    assert during["redis_bulkhead_rejections"] == 2
    assert during["redis_bulkhead_in_flight"] == 1
    assert after["redis_bulkhead_in_flight"] == 0
    assert after["redis_retries_denied"] == 0


def test_bulkhead_off_adds_no_wrapper_layer() -> None:
    """Without ``max_concurrent_calls`` the guard is the plain wrapper (nothing extra to run);
    with it, a variant of the wrapper that holds the slot itself (still one layer)."""

    def get() -> None:
        return None

    async def aget() -> None:
        return None

    def code(fn: object) -> object:
        return fn.__code__  # type: ignore[attr-defined]

    for fn in (get, aget):
        plain = redis_guarded(name="plain", breaker=Breaker("off"))(fn)
        other = redis_guarded(name="other", breaker=Breaker("off2"))(fn)
        limited = redis_guarded(name="limited", breaker=bulkhead_breaker(4))(fn)
        assert plain.__wrapped__ is fn  # type: ignore[attr-defined]
        assert limited.__wrapped__ is fn  # type: ignore[attr-defined]
        assert code(plain) is code(other)
        assert code(limited) is not code(plain)
    assert Breaker("off").stats().bulkhead_in_flight is None


def test_many_threads_never_exceed_the_limit() -> None:
    """16 threads hammering a 3-slot bulkhead: never more than 3 inside, no slot lost."""
    bulkhead = Bulkhead(3, max_wait=0.01)
    gauge, stop = Gauge(), time.monotonic() + 0.5

    def hammer() -> None:
        while time.monotonic() < stop:
            if bulkhead.acquire():
                gauge.enter()
                time.sleep(0.0005)
                gauge.leave()
                bulkhead.release()

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(HOLD)
    assert 1 <= gauge.peak <= 3
    assert bulkhead.in_flight == 0
    assert bulkhead.rejected_total > 0
