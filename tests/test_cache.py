"""``@cached`` on a real redis-server: hits, fills, serve-stale, invalidation, single-flight."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from redisguard import (
    Breaker,
    BreakerConfig,
    CircuitOpenError,
    ConfigError,
    RetryPolicy,
    TemporarilyUnavailableError,
    get_breaker,
)
from redisguard._client import AsyncGuardedRedis, GuardedRedis, aconnect, connect
from redisguard._stores_core import data_errors
from redisguard.cache import cache_stats, cached, stale_answer
from redisguard.testing import RedisServer

FAST = RetryPolicy(attempts=2, backoff=0.001, max_backoff=0.002, jitter=0.0, deadline=0.3)


@pytest.fixture
def raw(server: RedisServer) -> Iterator[redis.Redis]:
    r = redis.Redis.from_url(server.url)
    yield r
    r.close()


@pytest.fixture
def client(server: RedisServer) -> Iterator[GuardedRedis]:
    get_breaker("redis", BreakerConfig(failure_threshold=2, reset_timeout=60))
    c = connect(server.url, prober=False, socket_timeout=0.5, socket_connect_timeout=1.0)
    yield c
    c.close()


@pytest.fixture
async def aclient(server: RedisServer) -> AsyncIterator[AsyncGuardedRedis]:
    get_breaker("redis", BreakerConfig(failure_threshold=2, reset_timeout=60))
    c = await aconnect(server.url, prober=False, socket_timeout=1.0, socket_connect_timeout=2.0)
    yield c
    await c.aclose()


def _commands(raw: redis.Redis, name: str) -> int:
    stats: dict[str, Any] = raw.info("commandstats")
    return int(stats.get(f"cmdstat_{name}", {}).get("calls", 0))


def _stats(name: str) -> dict[str, int]:
    return next(s.snapshot() for s in cache_stats() if s.name == name)


# -- the happy path -------------------------------------------------------------------------
def test_miss_fills_then_hits(client: GuardedRedis, raw: redis.Redis) -> None:
    """A miss runs the function and SETs JSON with the ttl; the next call is a Redis hit."""
    calls: list[int] = []

    @cached(client, ttl=30, name="profile")
    def profile(user_id: int) -> dict[str, Any]:
        calls.append(user_id)
        return {"id": user_id, "tags": ["a"]}

    assert profile(7) == {"id": 7, "tags": ["a"]}
    assert profile(7) == {"id": 7, "tags": ["a"]}
    assert calls == [7]
    key = profile.key_for(7)
    assert key == f"cache:{__name__}.test_miss_fills_then_hits.<locals>.profile:7"
    assert raw.get(key) == b'{"id":7,"tags":["a"]}'
    assert 29_000 < raw.pttl(key) <= 30_000
    assert _stats("profile") == {"hit": 1, "miss": 1, "stale": 0, "unavailable": 0, "joined": 0}
    assert stale_answer() is None


def test_redis_stays_the_source_of_truth(client: GuardedRedis, raw: redis.Redis) -> None:
    """While Redis answers, a value changed in Redis wins over what the L1 holds."""

    @cached(client, ttl=30, stale_for=600)
    def value(n: int) -> int:
        return n

    assert value(1) == 1
    raw.set(value.key_for(1), b"99")
    assert value(1) == 99
    raw.delete(value.key_for(1))
    assert value(1) == 1  # a miss again: filled from the function, not the L1


def test_keys_normalize_keywords_and_refuse_unknown_types(client: GuardedRedis) -> None:
    """f(1, b=2) and f(1, 2) share a key; other argument types need key=."""

    @cached(client, ttl=5, prefix="c:")
    def f(a: int, b: int = 0, *, c: str = "x") -> int:
        return a + b

    assert f.key_for(1, b=2) == f.key_for(1, 2)
    assert f.key_for(1, 2, c="y").endswith(":1,2,c='y'")
    assert f.key_for("1") != f.key_for(1)
    with pytest.raises(TypeError, match=r"f: cannot build a key from an argument of type list"):
        f([1])  # type: ignore[arg-type]

    @cached(client, ttl=5, key=lambda user: f"user:{user['id']}")
    def g(user: dict[str, int]) -> int:
        return user["id"]

    assert g({"id": 3}) == 3
    assert g.key_for({"id": 3}) == "cache:user:3"


def test_serializers(client: GuardedRedis, raw: redis.Redis) -> None:
    """bytes are stored untouched; pickle keeps Python types; bad values name the key."""

    @cached(client, ttl=5, serializer="bytes")
    def blob(n: int) -> bytes:
        return b"\x00\xffraw" * n

    assert blob(2) == b"\x00\xffraw" * 2
    assert raw.get(blob.key_for(2)) == b"\x00\xffraw" * 2
    assert blob(2) == b"\x00\xffraw" * 2

    @cached(client, ttl=5, serializer="pickle")
    def tags(n: int) -> set[int]:
        return set(range(n))

    assert tags(3) == {0, 1, 2}
    assert tags(3) == {0, 1, 2}  # a hit, unpickled

    @cached(client, ttl=5)
    def bad(n: int) -> Any:
        return {n}

    with pytest.raises(TypeError, match=r"bad: cannot store the result for key 'cache:.*bad:1'"):
        bad(1)

    @cached(client, ttl=5)
    def json_bytes(n: int) -> Any:
        return b"raw"

    with pytest.raises(TypeError, match="serializer='bytes' stores them untouched"):
        json_bytes(1)

    @cached(client, ttl=5, serializer="bytes")
    def not_bytes(n: int) -> Any:
        return "text"

    with pytest.raises(TypeError, match="stores bytes only, got str"):
        not_bytes(1)


def test_corrupt_value_is_a_miss_and_is_overwritten(
    client: GuardedRedis, raw: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """Unreadable JSON in Redis is logged by fingerprint, counted, and replaced by a fill."""

    @cached(client, ttl=5, name="corrupt")
    def value(n: int) -> int:
        return n * 10

    raw.set(value.key_for(4), b"{not json")
    with caplog.at_level(logging.WARNING, logger="redisguard"):
        assert value(4) == 40
    assert raw.get(value.key_for(4)) == b"40"
    assert data_errors()["corrupt.get"] >= 1
    assert value.key_for(4) not in caplog.text
    assert get_breaker("redis").current_state == "closed"


# -- serve stale ----------------------------------------------------------------------------
def test_killed_redis_serves_stale_within_stale_for(
    client: GuardedRedis, server: RedisServer
) -> None:
    """With Redis killed, the L1 answers (age and failure visible); past stale_for it does not."""
    calls: list[int] = []

    @cached(client, ttl=30, stale_for=0.5, name="stale", retry=FAST)
    def profile(user_id: int) -> dict[str, int]:
        calls.append(user_id)
        return {"id": user_id, "call": len(calls)}

    assert profile(1) == {"id": 1, "call": 1}
    server.kill()
    answer = profile(1)
    assert answer == {"id": 1, "call": 1}
    stale = stale_answer()
    assert stale is not None
    assert stale.key == profile.key_for(1)
    assert 0 <= stale.age < 0.5
    assert stale.failure is not None
    assert stale.failure.exception is not None  # the first call reached Redis and failed
    profile(1)
    assert get_breaker("redis").current_state == "open"
    assert profile(1) == {"id": 1, "call": 1}
    stale = stale_answer()
    assert stale is not None
    assert stale.failure is not None
    assert stale.failure.circuit_open
    assert profile(2) == {"id": 2, "call": 2}  # not in the L1: the function runs
    assert stale_answer() is None
    time.sleep(0.55)
    assert profile(1) == {"id": 1, "call": 3}  # past stale_for: the function runs
    assert _stats("stale")["stale"] == 3


def test_without_stale_for_an_outage_calls_the_function_or_raises(
    client: GuardedRedis, server: RedisServer
) -> None:
    """stale_for=0 never serves stale; on_unavailable='raise' gives the guard's error."""

    @cached(client, ttl=30, retry=None)
    def calls_through(n: int) -> float:
        return time.perf_counter()

    @cached(client, ttl=30, stale_for=60, on_unavailable="raise", retry=None)
    def strict(n: int) -> int:
        return n

    first = calls_through(1)
    assert strict(5) == 5
    server.kill()
    assert calls_through(1) != first
    assert calls_through(1) != first
    assert get_breaker("redis").current_state == "open"
    assert strict(5) == 5  # in the L1, young enough
    with pytest.raises(CircuitOpenError, match=r"strict\.get. unavailable: circuit breaker"):
        strict(6)


def test_paused_redis_serves_stale_after_the_timeout(
    client: GuardedRedis, server: RedisServer
) -> None:
    """A paused Redis times out once, then the open breaker answers from the L1 at once."""

    @cached(client, ttl=30, stale_for=60, retry=None)
    def value(n: int) -> int:
        return n

    assert value(3) == 3
    server.pause()
    try:
        assert value(3) == 3
        stale = stale_answer()
        assert stale is not None
        assert stale.failure is not None
        assert isinstance(stale.failure.exception, redis.TimeoutError | TimeoutError)
        value(3)
        started = time.perf_counter()
        for _ in range(100):
            assert value(3) == 3
        assert time.perf_counter() - started < 0.4  # not one socket timeout (0.5 s) in all
    finally:
        server.resume()


async def test_async_serves_stale_and_fills(
    aclient: AsyncGuardedRedis, server: RedisServer
) -> None:
    """The asyncio twin: fill, hit, then stale answers with the server killed."""
    calls: list[int] = []

    @cached(aclient, ttl=30, stale_for=60, retry=None)
    async def profile(user_id: int) -> list[int]:
        calls.append(user_id)
        await asyncio.sleep(0)
        return [user_id, len(calls)]

    assert await profile(1) == [1, 1]
    assert await profile(1) == [1, 1]
    server.kill()
    for _ in range(3):
        assert await profile(1) == [1, 1]
        assert stale_answer() is not None
    assert await profile(2) == [2, 2]
    assert calls == [1, 2]


# -- invalidation ---------------------------------------------------------------------------
def test_invalidate_deletes_from_redis_and_the_l1(
    client: GuardedRedis, raw: redis.Redis, server: RedisServer
) -> None:
    """invalidate() says whether Redis had the key; the L1 no longer answers for it."""
    version = [0]

    @cached(client, ttl=30, stale_for=60, retry=None)
    def value(n: int) -> int:
        version[0] += 1
        return version[0]

    assert value(1) == 1
    assert value.invalidate(1) is True
    assert raw.get(value.key_for(1)) is None
    assert value.invalidate(1) is False
    server.kill()
    assert value(1) == 2  # nothing stale in the L1: the function runs


def test_invalidate_while_down_raises_and_blocks_the_l1(
    client: GuardedRedis, raw: redis.Redis, server: RedisServer
) -> None:
    """A DEL that did not reach Redis raises; the L1 stops serving the key; the next call
    that finds Redis back sends the DEL first."""
    quick = get_breaker("quick", BreakerConfig(failure_threshold=2, reset_timeout=0.2))
    version = [0]

    @cached(client, ttl=30, stale_for=60, retry=None, breaker=quick)
    def value(n: int) -> int:
        version[0] += 1
        return version[0]

    assert value(1) == 1
    server.pause()
    try:
        assert value(1) == 1  # stale, after a timeout
        with pytest.raises(TemporarilyUnavailableError, match="did not reach Redis"):
            value.invalidate(1)
        assert quick.current_state == "open"
        assert value(1) == 2  # not served from the L1 any more
        assert stale_answer() is None
        assert value(1) == 3  # and a fill during the block does not land in the L1
    finally:
        server.resume()
    time.sleep(0.25)  # the breaker half-opens
    assert raw.get(value.key_for(1)) == b"1"  # the old value is still in Redis...
    assert value(1) == 4  # ...until the pending DEL goes first
    assert value(1) == 4
    assert raw.get(value.key_for(1)) == b"4"


# -- single-flight --------------------------------------------------------------------------
async def test_single_flight_64_tasks_one_call_one_set(
    aclient: AsyncGuardedRedis, raw: redis.Redis
) -> None:
    """64 tasks missing one key together: 1 function call and 1 SET at the server."""
    calls = 0

    @cached(aclient, ttl=30, name="flight")
    async def slow(n: int) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return n * 2

    assert await aclient.ping()
    raw.config_resetstat()
    results = await asyncio.gather(*(slow(21) for _ in range(64)))
    assert results == [42] * 64
    assert calls == 1
    assert _commands(raw, "set") == 1
    assert _stats("flight")["miss"] == 1


def test_single_flight_threads(client: GuardedRedis, raw: redis.Redis) -> None:
    """8 threads missing one key together: 1 function call and 1 SET."""
    calls = 0
    gate = threading.Barrier(8)

    @cached(client, ttl=30)
    def slow(n: int) -> int:
        nonlocal calls
        calls += 1
        time.sleep(0.05)
        return n + 1

    raw.config_resetstat()
    results: list[int] = []

    def worker() -> None:
        gate.wait()
        results.append(slow(1))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [2] * 8
    assert calls == 1
    assert _commands(raw, "set") == 1


async def test_single_flight_shares_the_error(aclient: AsyncGuardedRedis) -> None:
    """When the one run raises, every waiter gets that error and nothing is cached."""
    calls = 0
    running = asyncio.Event()

    @cached(aclient, ttl=30)
    async def broken(n: int) -> int:
        nonlocal calls
        calls += 1
        running.set()
        await asyncio.sleep(0.05)
        raise LookupError(f"no {n}")

    leader = asyncio.ensure_future(broken(1))
    await running.wait()  # the others find its flight before they even GET
    results = await asyncio.gather(leader, *(broken(1) for _ in range(9)), return_exceptions=True)
    assert all(isinstance(r, LookupError) for r in results)
    assert calls == 1
    assert await aclient.get(broken.key_for(1)) is None


async def test_a_cancelled_leader_hands_over(aclient: AsyncGuardedRedis) -> None:
    """If the task running the function is cancelled, a waiter runs it instead."""
    calls = 0

    @cached(aclient, ttl=30)
    async def slow(n: int) -> int:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)
        return n

    leader = asyncio.create_task(slow(1))
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(slow(1))
    await asyncio.sleep(0.01)
    leader.cancel()
    assert await waiter == 1
    assert calls == 2
    with pytest.raises(asyncio.CancelledError):
        await leader


# -- telemetry ------------------------------------------------------------------------------
def test_stale_answers_are_traced_and_counted(client: GuardedRedis, server: RedisServer) -> None:
    """A stale answer gets a span with its age, and cache_stale_served counts it."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])

    @cached(
        client,
        ttl=30,
        stale_for=60,
        name="traced",
        retry=None,
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    def value(n: int) -> int:
        return n

    value(1)
    server.kill()
    value(1)
    value(1)
    stale_spans = [
        s
        for s in exporter.get_finished_spans()
        if s.attributes and s.attributes.get("redisguard.outcome") == "stale"
    ]
    assert len(stale_spans) == 2
    assert stale_spans[0].name == "redisguard traced"
    age = stale_spans[0].attributes["redisguard.cache.stale_age_s"]  # type: ignore[index]
    assert isinstance(age, float)
    assert 0 <= age < 60
    data = reader.get_metrics_data()
    assert data is not None
    points = {
        (metric.name, tuple(sorted(dict(point.attributes or {}).items()))): point.value  # type: ignore[union-attr]
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        if metric.name.startswith("cache_")
        for point in metric.data.data_points
    }
    assert points[("cache_stale_served", (("cache", "traced"),))] == 2
    assert points[("cache_lookups", (("cache", "traced"), ("result", "stale")))] == 2
    assert points[("cache_lookups", (("cache", "traced"), ("result", "miss")))] == 1


# -- configuration errors -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl": 0}, "ttl must be positive"),
        ({"ttl": "60"}, "ttl must be a number"),
        ({"ttl": 1, "stale_for": -1}, "stale_for must be >= 0"),
        ({"ttl": 1, "on_unavailable": "ignore"}, "on_unavailable must be"),
        ({"ttl": 1, "serializer": "yaml"}, "serializer must be"),
        ({"ttl": 1, "name": " "}, "name must be a non-empty string"),
        ({"ttl": 1, "max_entries": 0}, "max_entries"),
        ({"ttl": 1, "key": "user:{}"}, "key must be a callable"),
    ],
)
def test_bad_options_are_config_errors(
    client: GuardedRedis, kwargs: dict[str, Any], message: str
) -> None:
    """Each bad option raises ConfigError naming it."""
    with pytest.raises(ConfigError, match=message):
        cached(client, **kwargs)


async def test_client_must_match_the_function(
    client: GuardedRedis, aclient: AsyncGuardedRedis
) -> None:
    """An async function needs an asyncio client and a sync function a sync one."""

    async def afn() -> int:
        return 1

    def fn() -> int:
        return 1

    def gen() -> Iterator[int]:
        yield 1

    with pytest.raises(TypeError, match="needs an asyncio client"):
        cached(client, ttl=1)(afn)
    with pytest.raises(TypeError, match="needs a sync client"):
        cached(aclient, ttl=1)(fn)
    with pytest.raises(TypeError, match="cannot cache generator"):
        cached(client, ttl=1)(gen)
    with pytest.raises(TypeError, match="needs a redis-py client"):
        cached(object(), ttl=1)


def test_l1_bound_limits_what_can_be_served_stale(
    client: GuardedRedis, server: RedisServer
) -> None:
    """With max_entries=2, the least recently used value is gone when Redis goes down."""
    calls: list[int] = []

    @cached(client, ttl=30, stale_for=60, max_entries=2, retry=None)
    def value(n: int) -> list[int]:
        calls.append(n)
        return [n, len(calls)]

    for n in (1, 2, 3):
        value(n)
    server.kill()
    assert value(3) == [3, 3]
    assert stale_answer() is not None
    assert value(1) == [1, 4]  # evicted from the L1: the function ran
    assert stale_answer() is None


async def test_async_invalidate(aclient: AsyncGuardedRedis, server: RedisServer) -> None:
    """The asyncio invalidate deletes, reports, and raises while Redis is down."""

    @cached(aclient, ttl=30, stale_for=60, retry=None)
    async def value(n: int) -> int:
        return n

    assert await value(1) == 1
    assert await value.invalidate(1) is True
    assert await aclient.get(value.key_for(1)) is None
    assert await value(1) == 1
    server.kill()
    with pytest.raises(TemporarilyUnavailableError) as exc:
        await value.invalidate(1)
    assert exc.value.retry_after >= 1
    assert await value(1) == 1  # the function ran: nothing stale after the invalidation
    assert stale_answer() is None


def test_hits_refresh_the_l1(client: GuardedRedis, raw: redis.Redis, server: RedisServer) -> None:
    """A hit lands in the L1 (at most every 0.1 s): the stale answer is what Redis last said."""

    @cached(client, ttl=30, stale_for=60, retry=None)
    def value(n: int) -> int:
        return n

    assert value(1) == 1
    time.sleep(0.12)
    raw.set(value.key_for(1), b"5")
    assert value(1) == 5
    server.kill()
    assert value(1) == 5
    stale = stale_answer()
    assert stale is not None
    assert stale.age < 0.1


# -- the hit path's edges (the shells inline the guarded GET while the circuit is closed) ----
def test_data_errors_on_the_get_pass_through(client: GuardedRedis, raw: redis.Redis) -> None:
    """A GET answered with WRONGTYPE raises it to the caller; the breaker stays closed."""
    calls: list[int] = []

    @cached(client, ttl=30, stale_for=60, name="wrongtype")
    def value(n: int) -> int:
        calls.append(n)
        return n

    raw.rpush(value.key_for(1), b"x")
    for _ in range(3):
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            value(1)
    assert calls == []
    assert get_breaker("redis").current_state == "closed"
    assert get_breaker("redis").stats().failure_count == 0


def test_a_broken_classifier_is_replaced_by_the_default(
    client: GuardedRedis, server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A classify that raises is logged; the default classification still serves stale."""

    def broken(exc: BaseException) -> Any:
        raise RuntimeError("classifier bug")

    @cached(client, ttl=30, stale_for=60, retry=None, classify=broken, name="broken")
    def value(n: int) -> int:
        return n

    assert value(1) == 1
    server.kill()
    with caplog.at_level(logging.ERROR, logger="redisguard"):
        assert value(1) == 1
    assert stale_answer() is not None
    assert "classify" in caplog.text


def test_a_hit_ends_a_run_of_failures(client: GuardedRedis, server: RedisServer) -> None:
    """A failed GET counts toward the breaker; the next hit clears the count (threshold 2)."""

    @cached(client, ttl=30, stale_for=60, retry=None, name="run")
    def value(n: int) -> int:
        return n

    assert value(1) == 1
    breaker = get_breaker("redis")
    server.kill()
    assert value(1) == 1
    assert stale_answer() is not None
    failures = breaker.stats().failure_count
    assert failures >= 1
    assert breaker.current_state == "closed"
    server.restart()
    client.connection_pool.disconnect()
    assert value(1) == 1
    assert stale_answer() is None
    assert breaker.stats().failure_count == 0
    assert breaker.current_state == "closed"


def test_listeners_see_the_cached_get(client: GuardedRedis) -> None:
    """With a breaker listener, each call's GET is reported to it (before_call, success)."""
    seen: list[str] = []

    class Listener:
        def before_call(self, cb: Any, func: Any, *args: Any, **kwargs: Any) -> None:
            seen.append("before")

        def success(self, cb: Any) -> None:
            seen.append("success")

        def failure(self, cb: Any, exc: BaseException) -> None:
            seen.append("failure")

        def state_change(self, cb: Any, old: Any, new: Any) -> None:
            pass

    @cached(client, ttl=30, name="listened")
    def value(n: int) -> int:
        return n

    value(1)
    breaker = get_breaker("redis")
    listener = Listener()
    breaker.add_listener(listener)
    try:
        seen.clear()
        assert value(1) == 1
        assert "before" in seen
        assert "success" in seen
    finally:
        breaker.remove_listener(listener)


async def test_async_hit_path_edges(aclient: AsyncGuardedRedis, server: RedisServer) -> None:
    """asyncio: WRONGTYPE passes through, a broken classifier falls back to the default."""
    raw = redis.Redis.from_url(server.url)

    def broken(exc: BaseException) -> Any:
        raise RuntimeError("classifier bug")

    @cached(aclient, ttl=30, stale_for=60, retry=None, classify=broken, name="aedges")
    async def value(n: int) -> int:
        return n

    try:
        raw.rpush(value.key_for(2), b"x")
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            await value(2)
        assert await value(1) == 1
        assert await value(1) == 1
        assert stale_answer() is None
        server.kill()
        assert await value(1) == 1
        assert stale_answer() is not None
    finally:
        raw.close()


def test_half_open_trials_from_the_cached_get(client: GuardedRedis, server: RedisServer) -> None:
    """With the circuit open, a call after reset_timeout is a trial: a failed one serves
    stale and reopens; once Redis is back, the trial's hit closes the circuit."""
    breaker = Breaker("cache-trials", BreakerConfig(failure_threshold=1, reset_timeout=0.2))

    @cached(client, ttl=30, stale_for=60, retry=None, breaker=breaker, name="trials")
    def value(n: int) -> int:
        return n * 2

    assert value(1) == 2
    server.kill()
    assert value(1) == 2
    assert breaker.current_state == "open"
    time.sleep(0.25)
    assert value(1) == 2  # the trial fails: stale, and the circuit reopens
    stale = stale_answer()
    assert stale is not None
    assert breaker.current_state == "open"
    server.restart()  # empty: give it a value only Redis has
    with redis.Redis.from_url(server.url) as fresh:
        fresh.set(value.key_for(1), b"7")
    client.connection_pool.disconnect()
    time.sleep(0.25)
    assert value(1) == 7  # the trial hits
    assert stale_answer() is None
    assert breaker.current_state == "closed"
    assert _stats("trials")["hit"] == 1


async def test_async_half_open_trial(aclient: AsyncGuardedRedis, server: RedisServer) -> None:
    """asyncio: a trial after reset_timeout hits and closes the circuit."""
    breaker = Breaker("acache-trials", BreakerConfig(failure_threshold=1, reset_timeout=0.2))

    @cached(aclient, ttl=30, stale_for=60, retry=None, breaker=breaker, name="atrials")
    async def value(n: int) -> int:
        return n * 2

    assert await value(1) == 2
    server.kill()
    assert await value(1) == 2
    assert breaker.current_state == "open"
    assert await value(1) == 2
    assert stale_answer() is not None
    await asyncio.sleep(0.25)
    assert await value(1) == 2  # the trial fails: stale, and the circuit reopens
    assert breaker.current_state == "open"
    server.restart()
    with redis.Redis.from_url(server.url) as fresh:
        fresh.set(value.key_for(1), b"7")
    await aclient.connection_pool.disconnect()
    await asyncio.sleep(0.25)
    assert await value(1) == 7
    assert stale_answer() is None
    assert breaker.current_state == "closed"
