"""``@redis_guarded`` against a real redis-server that the tests kill, pause and restart."""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio
import redis.asyncio.retry
from _pools import checkout
from _refusals import admin, fill_memory, free_memory, slow_script
from redis import exceptions as rx
from redis.backoff import NoBackoff
from redis.retry import Retry

import redisguard
from redisguard import Breaker, BreakerConfig, ErrorKind, Failure, RetryPolicy, redis_guarded
from redisguard._observe import operations
from redisguard.testing import FaultProxy, RedisServer

pytestmark = pytest.mark.timeout(30)

SOCKET_TIMEOUT = 0.2
RESET_TIMEOUT = 0.3
RETRY = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.02, jitter=0.005, deadline=0.5)


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A sync client built by redisguard.connect (explicit timeouts, no redis-py retry)."""
    client = redisguard.connect(
        redis_server.url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
    )
    yield client
    client.close()


@pytest.fixture
async def aclient(redis_server: RedisServer) -> AsyncIterator[redis.asyncio.Redis]:
    """An asyncio client built by redisguard.aconnect."""
    client = await redisguard.aconnect(
        redis_server.url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT
    )
    yield client
    await client.aclose()


@pytest.fixture
def breaker() -> Breaker:
    """A breaker on the real monotonic clock with short, test-sized durations."""
    return Breaker(
        "redis-it",
        BreakerConfig(failure_threshold=3, reset_timeout=RESET_TIMEOUT, half_open_max_attempts=1),
    )


def snapshot(name: str) -> dict[str, int]:
    (stats,) = [s for s in operations() if s.name == name]
    return stats.snapshot()


def wait_past_reset(breaker: Breaker) -> None:
    """Sleep until the open breaker admits a trial call."""
    remaining = breaker.seconds_until_retry()
    assert remaining is not None
    time.sleep(remaining + 0.02)


# -- sync -----------------------------------------------------------------------------------
def test_kill_falls_back_opens_and_recovers_after_restart(
    redis_server: RedisServer, client: redis.Redis, breaker: Breaker
) -> None:
    """Killed: fallbacks and the breaker opens; restarted: the half-open trial closes it."""
    attempts = 0

    @redis_guarded(name="it.ping", fallback="FB", breaker=breaker, retry=RETRY)
    def ping() -> object:
        nonlocal attempts
        attempts += 1
        return client.ping()

    assert ping() is True
    redis_server.kill()
    assert ping() == "FB"  # two failures (first attempt + a retry) ...
    assert ping() == "FB"  # ... the third opens the circuit and stops the retries
    assert breaker.current_state == "open"
    assert attempts == 1 + 3

    # An open circuit answers at once without touching the network.
    durations = []
    for _ in range(200):
        began = time.perf_counter()
        assert ping() == "FB"
        durations.append(time.perf_counter() - began)
    assert attempts == 4
    assert statistics.median(durations) < 0.001
    assert max(durations) < 0.05

    redis_server.restart()
    assert ping() == "FB"  # still inside reset_timeout: no trial yet
    wait_past_reset(breaker)
    assert ping() is True
    assert breaker.current_state == "closed"
    assert snapshot("it.ping") == {"success": 2, "fallback": 203, "error": 0, "retries": 1}


def test_pause_falls_back_within_the_deadline_and_recovers(
    redis_server: RedisServer, client: redis.Redis, breaker: Breaker
) -> None:
    """A SIGSTOPped server times out each call within the deadline; after SIGCONT it recovers."""

    @redis_guarded(name="it.get", fallback=None, breaker=breaker, retry=RETRY)
    def get() -> object:
        return client.get("key")

    client.set("key", "value")
    assert get() == b"value"
    redis_server.pause()
    try:
        for _ in range(2):
            began = time.perf_counter()
            assert get() is None
            assert time.perf_counter() - began < RETRY.deadline + 0.1
        assert breaker.current_state == "open"
        began = time.perf_counter()
        assert get() is None
        assert time.perf_counter() - began < 0.01
    finally:
        redis_server.resume()
    wait_past_reset(breaker)
    assert get() == b"value"
    assert breaker.current_state == "closed"


def test_wrongtype_propagates_and_never_trips(client: redis.Redis) -> None:
    """A WRONGTYPE reply reaches the caller and does not count, even with a threshold of 1."""
    breaker = Breaker("wrongtype", BreakerConfig(failure_threshold=1))

    @redis_guarded(name="it.lpush", fallback="FB", breaker=breaker, retry=RETRY)
    def push() -> object:
        return client.lpush("a-string", "x")

    client.set("a-string", "v")
    for _ in range(3):
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            push()
    assert breaker.current_state == "closed"
    assert breaker.failure_total == 0


def test_nothing_listening_fails_fast(redis_server: RedisServer, breaker: Breaker) -> None:
    """A client made before the server died falls back at once on refused connections."""
    client = redisguard.connect(redis_server.url, socket_timeout=SOCKET_TIMEOUT)
    redis_server.kill()

    @redis_guarded(name="it.refused", fallback="FB", breaker=breaker, retry=RETRY)
    def get() -> object:
        return client.get("k")

    try:
        began = time.perf_counter()
        assert get() == "FB"
        assert time.perf_counter() - began < 0.2
    finally:
        client.close()


# -- asyncio -----------------------------------------------------------------------------------
async def test_async_kill_falls_back_opens_and_recovers(
    redis_server: RedisServer, aclient: redis.asyncio.Redis, breaker: Breaker
) -> None:
    """Async: killed server gives fallbacks and opens; after restart the trial closes it."""
    attempts = 0

    @redis_guarded(name="it.aping", fallback="FB", breaker=breaker, retry=RETRY)
    async def ping() -> object:
        nonlocal attempts
        attempts += 1
        return await aclient.ping()

    assert await ping() is True
    redis_server.kill()
    assert await ping() == "FB"
    assert await ping() == "FB"
    assert breaker.current_state == "open"
    assert attempts == 4
    durations = []
    for _ in range(200):
        began = time.perf_counter()
        assert await ping() == "FB"
        durations.append(time.perf_counter() - began)
    assert attempts == 4
    assert statistics.median(durations) < 0.001

    redis_server.restart()
    await asyncio.sleep(breaker.seconds_until_retry() or 0.0)
    await asyncio.sleep(0.02)
    assert await ping() is True
    assert breaker.current_state == "closed"


async def test_async_pause_batch_falls_back_in_one_timeout(
    redis_server: RedisServer, aclient: redis.asyncio.Redis, breaker: Breaker
) -> None:
    """20 concurrent tasks against a paused server all fall back in about one socket timeout."""

    @redis_guarded(name="it.aget", fallback="FB", breaker=breaker, retry=RETRY)
    async def get(key: str) -> object:
        return await aclient.get(key)

    await aclient.set("k", "v")
    assert await get("k") == b"v"
    redis_server.pause()
    try:
        began = time.perf_counter()
        results = await asyncio.gather(*(get("k") for _ in range(20)))
        elapsed = time.perf_counter() - began
        assert results == ["FB"] * 20
        assert elapsed < 2.5 * SOCKET_TIMEOUT  # serialized would be 20 x 0.2 s
        assert breaker.current_state == "open"
        assert snapshot("it.aget")["fallback"] == 20
    finally:
        redis_server.resume()
    await asyncio.sleep((breaker.seconds_until_retry() or 0.0) + 0.02)
    assert await get("k") == b"v"
    assert breaker.current_state == "closed"


async def test_async_wrongtype_propagates(aclient: redis.asyncio.Redis) -> None:
    """Async WRONGTYPE propagates and does not trip a threshold of 1."""
    breaker = Breaker("awrongtype", BreakerConfig(failure_threshold=1))

    @redis_guarded(name="it.alpush", fallback="FB", breaker=breaker)
    async def push() -> object:
        return await aclient.lpush("a-string", "x")

    await aclient.set("a-string", "v")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        await push()
    assert breaker.current_state == "closed"


# -- retries never apply a write twice ---------------------------------------------------------
def plain_client(kwargs: dict[str, object], timeout: float) -> redis.Redis:
    """A plain redis-py client that never retries by itself (only the guard may)."""
    return redis.Redis(
        **kwargs,  # type: ignore[arg-type]
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
    )


def warm(client: redis.Redis, connections: int) -> None:
    """Open ``connections`` pooled connections now, so a retry would not need a new one."""
    pool = client.connection_pool
    held = [checkout(pool) for _ in range(connections)]
    for conn in held:
        pool.release(conn)


def test_incr_whose_reply_is_lost_to_a_reset_runs_once(
    redis_server: RedisServer, fault_proxy: FaultProxy, breaker: Breaker
) -> None:
    """An INCR that reached Redis but lost its reply to a reset is not replayed."""
    direct = admin(redis_server)
    client = plain_client(fault_proxy.client_kwargs(), 5.0)
    assert client.ping() is True
    fault_proxy.latency(2000)  # INCR reaches Redis; its reply waits in the proxy

    def cut() -> None:
        deadline = time.monotonic() + 10
        while direct.get("counter") != b"1" and time.monotonic() < deadline:
            time.sleep(0.002)
        # Reset first: with the delay lifted first the held reply could go out before the RST.
        fault_proxy.reset()  # the reply is lost: the client sees ECONNRESET
        fault_proxy.latency(0)

    failures: list[Failure | None] = []

    def fallback() -> str:
        failures.append(redisguard.current_failure())
        return "FB"

    @redis_guarded(name="it.incr", fallback=fallback, breaker=breaker, retry=RETRY)
    def incr() -> object:
        return client.incr("counter")

    cutter = threading.Thread(target=cut)
    cutter.start()
    result = incr()
    cutter.join()
    assert direct.get("counter") == b"1"
    assert result == "FB"
    (failure,) = failures
    assert failure is not None
    assert failure.attempts == 1
    assert failure.may_have_run
    assert isinstance(failure.exception, rx.ConnectionError)
    client.close()
    direct.close()


def test_lpush_timed_out_behind_a_slow_script_is_queued_once(
    redis_server: RedisServer, breaker: Breaker
) -> None:
    """An LPUSH that timed out behind another client's script runs once, not per attempt."""
    direct = admin(redis_server)
    client = plain_client(redis_server.client_kwargs(), SOCKET_TIMEOUT)
    warm(client, 3)
    failures: list[Failure | None] = []

    def fallback() -> str:
        failures.append(redisguard.current_failure())
        return "FB"

    @redis_guarded(name="it.lpush", fallback=fallback, breaker=breaker, retry=RETRY)
    def enqueue() -> object:
        return client.lpush("jobs", "job-1")

    with slow_script(redis_server, 1.5):
        assert enqueue() == "FB"
    (failure,) = failures
    assert failure is not None
    assert isinstance(failure.exception, rx.TimeoutError)
    assert failure.attempts == 1
    assert direct.lrange("jobs", 0, -1) == [b"job-1"]
    client.close()
    direct.close()


async def test_async_incr_whose_reply_is_lost_to_a_reset_runs_once(
    redis_server: RedisServer, fault_proxy: FaultProxy, breaker: Breaker
) -> None:
    """The asyncio twin: an INCR whose reply a reset lost is not sent again."""
    direct = admin(redis_server)
    client = redis.asyncio.Redis(
        **fault_proxy.client_kwargs(),
        socket_timeout=5.0,
        retry=redis.asyncio.retry.Retry(NoBackoff(), 0),
    )
    assert await client.ping() is True
    fault_proxy.latency(2000)

    def cut() -> None:
        deadline = time.monotonic() + 10
        while direct.get("counter") != b"1" and time.monotonic() < deadline:
            time.sleep(0.002)
        fault_proxy.reset()  # first: with the delay lifted first the reply could go out
        fault_proxy.latency(0)

    @redis_guarded(name="it.aincr", fallback="FB", breaker=breaker, retry=RETRY)
    async def incr() -> object:
        return await client.incr("counter")

    cutter = threading.Thread(target=cut)
    cutter.start()
    result = await incr()
    cutter.join()
    assert direct.get("counter") == b"1"
    assert result == "FB"
    await client.aclose()
    direct.close()


def test_refused_connection_is_retried_for_a_non_idempotent_guard(
    redis_server: RedisServer, breaker: Breaker
) -> None:
    """A refused connection proves INCR never ran, so even a non-idempotent guard retries it."""
    client = plain_client(redis_server.client_kwargs(), SOCKET_TIMEOUT)
    redis_server.kill()
    calls = 0

    @redis_guarded(name="it.incr-down", fallback="FB", breaker=breaker, retry=RETRY)
    def incr() -> object:
        nonlocal calls
        calls += 1
        return client.incr("counter")

    assert incr() == "FB"
    assert calls == RETRY.attempts
    client.close()


def test_idempotent_guard_retries_a_timeout(redis_server: RedisServer, breaker: Breaker) -> None:
    """idempotent=True: a read that timed out behind a slow script is retried."""
    client = plain_client(redis_server.client_kwargs(), SOCKET_TIMEOUT)
    warm(client, 3)
    calls = 0

    @redis_guarded(
        name="it.get-idem", fallback="FB", breaker=breaker, retry=RETRY, idempotent=True
    )
    def read() -> object:
        nonlocal calls
        calls += 1
        return client.get("k")

    with slow_script(redis_server, 1.5):
        assert read() == "FB"
    assert calls >= 2
    client.close()


def test_busy_reply_is_retried_by_a_non_idempotent_guard_and_counted(
    redis_server: RedisServer, breaker: Breaker
) -> None:
    """BUSY proves the command was refused: a non-idempotent INCR retries, then falls back."""
    client = plain_client(redis_server.client_kwargs(), 2.0)
    calls = 0
    failures: list[Failure | None] = []

    def fallback() -> str:
        failures.append(redisguard.current_failure())
        return "FB"

    @redis_guarded(name="it.incr-busy", fallback=fallback, breaker=breaker, retry=RETRY)
    def incr() -> object:
        nonlocal calls
        calls += 1
        return client.incr("counter")

    with slow_script(redis_server, 5.0, busy_after_ms=20):
        assert incr() == "FB"
    (failure,) = failures
    assert failure is not None
    assert failure.kind is ErrorKind.TRANSIENT
    assert not failure.may_have_run
    assert calls >= 2
    assert breaker.stats().failure_count == calls
    assert admin(redis_server).get("counter") is None
    client.close()


def test_oom_falls_back_without_retry_or_counting(
    redis_server: RedisServer, breaker: Breaker, caplog: pytest.LogCaptureFixture
) -> None:
    """OOM is WRITE_REFUSED: fallback at once, no retry, only the write side told, a WARNING."""
    client = plain_client(redis_server.client_kwargs(), 2.0)
    failures: list[Failure | None] = []
    calls = 0

    def fallback() -> str:
        failures.append(redisguard.current_failure())
        return "FB"

    @redis_guarded(
        name="it.set-oom", fallback=fallback, breaker=breaker, retry=RETRY, idempotent=True
    )
    def write() -> object:
        nonlocal calls
        calls += 1
        return client.set("k", "v")

    fill_memory(redis_server)
    try:
        results = [write() for _ in range(5)]
    finally:
        free_memory(redis_server)
    assert results == ["FB"] * 5
    assert calls == 3  # failure_threshold refusals opened the write side: no more I/O
    assert failures[0] is not None
    assert failures[0].kind is ErrorKind.WRITE_REFUSED
    assert failures[-1] is not None
    assert failures[-1].circuit_open
    assert breaker.stats().failure_count == 0
    assert breaker.current_state == "closed"
    assert breaker.write_state == "open"
    assert "Redis refused a write (not retried)" in caplog.text
    time.sleep(RESET_TIMEOUT)
    assert write() is True  # the trial write closes the write side
    assert breaker.write_state == "closed"
    client.close()
