"""Recovery in one probe interval: the prober PINGs every ``probe_interval``, however long Redis
was gone, and the first calls after the heal do not get a connection the outage killed."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis

import redisguard
from redisguard import Breaker, BreakerConfig, ConfigError, RetryPolicy, redis_guarded
from redisguard._prober import (
    PROBE_INTERVAL_ENV,
    SEED_BACKOFF,
    ProbePlan,
    connection_dropped,
)
from redisguard._stale import EPOCH_ATTRIBUTE, adrop_stale, drop_stale
from redisguard.testing import FaultProxy, RedisServer

pytestmark = pytest.mark.timeout(60)

FALLBACK = "fallback"
# Long enough that the seed's doubling backoff (probes at 0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3 s)
# has its next probe at 6.3 s: Redis ready at ~3.4 s would wait ~2.9 s for it.
OUTAGE = 3.3
# With a paused server each old probe also waited out the 250 ms socket timeout: probes at
# 0, 0.35, 0.8, 1.45, 2.5, 4.35 s, so a resume at ~2.85 s waited ~1.5 s for the next one.
PAUSE = 2.8
# Generous for a loaded 2-core machine, and still far below what the old backoff waited.
RECOVERED_WITHIN = 0.6


def _breaker(name: str) -> Breaker:
    return Breaker(name, BreakerConfig(failure_threshold=1, reset_timeout=600))


def _sync_get(client: redis.Redis, breaker: Breaker) -> Callable[[], object]:
    @redis_guarded(name="get", fallback=FALLBACK, breaker=breaker, retry=RetryPolicy(attempts=1))
    def get() -> object:
        return client.get("k")

    return get


def _async_get(client: Any, breaker: Breaker) -> Callable[[], Awaitable[object]]:
    @redis_guarded(name="aget", fallback=FALLBACK, breaker=breaker, retry=RetryPolicy(attempts=1))
    async def get() -> object:
        return await client.get("k")

    return get


def _first_success(get: Callable[[], object], limit: float = 10.0) -> float:
    """Seconds until ``get`` returns something other than the fallback (a call every 10 ms)."""
    started = time.monotonic()
    while get() == FALLBACK:
        assert time.monotonic() - started < limit, "no call succeeded"
        time.sleep(0.01)
    return time.monotonic() - started


async def _afirst_success(get: Callable[[], Awaitable[object]], limit: float = 10.0) -> float:
    started = time.monotonic()
    while await get() == FALLBACK:
        assert time.monotonic() - started < limit, "no call succeeded"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


# -- configuration ----------------------------------------------------------------------------
@pytest.mark.parametrize("value", [0, 0.005, 61, -1, float("nan"), "0.1", True])
def test_probe_interval_is_validated(value: Any) -> None:
    """A probe_interval outside 10 ms..60 s, or not a number, is a ConfigError naming it."""
    with pytest.raises(ConfigError, match="probe_interval"):
        redisguard.connect("redis://127.0.0.1:1/0", check=False, probe_interval=value)


async def test_aconnect_validates_probe_interval() -> None:
    """aconnect() refuses a bad probe_interval before it connects."""
    with pytest.raises(ConfigError, match="probe_interval must be between"):
        await redisguard.aconnect("redis://127.0.0.1:1/0", check=False, probe_interval=120)


def test_probe_interval_comes_from_the_environment_in_milliseconds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """$REDISGUARD_PROBE_INTERVAL (ms) sets the default; an explicit argument wins."""
    monkeypatch.setenv(PROBE_INTERVAL_ENV, "250")
    client = redisguard.connect("redis://127.0.0.1:1/0", check=False)
    explicit = redisguard.connect("redis://127.0.0.1:1/0", check=False, probe_interval=0.05)
    try:
        assert client.prober is not None
        assert client.prober.plan.interval == pytest.approx(0.25)
        assert explicit.prober is not None
        assert explicit.prober.plan.interval == pytest.approx(0.05)
    finally:
        client.close()
        explicit.close()
    monkeypatch.delenv(PROBE_INTERVAL_ENV)
    default = redisguard.connect("redis://127.0.0.1:1/0", check=False)
    try:
        assert default.prober is not None
        assert default.prober.plan.interval == pytest.approx(0.1)
    finally:
        default.close()


@pytest.mark.parametrize("raw", ["fast", "5", "60001", "-100"])
def test_bad_probe_interval_environment_is_named(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    """A bad $REDISGUARD_PROBE_INTERVAL is a ConfigError naming the variable and value."""
    monkeypatch.setenv(PROBE_INTERVAL_ENV, raw)
    with pytest.raises(ConfigError, match=PROBE_INTERVAL_ENV) as info:
        redisguard.connect("redis://127.0.0.1:1/0", check=False)
    assert repr(raw) in str(info.value)


# -- the plan, on a fake clock ----------------------------------------------------------------
class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_probes_are_jittered_around_the_interval() -> None:
    """Each sleep is the interval +-10 %, so a fleet of clients does not probe in step."""
    low = ProbePlan([], "t", interval=0.2, rand=lambda: 0.0).next_delay()
    high = ProbePlan([], "t", interval=0.2, rand=lambda: 0.999999).next_delay()
    assert low == pytest.approx(0.18)
    assert high == pytest.approx(0.22, rel=1e-5)
    delays = {ProbePlan([], "t", interval=0.2).next_delay() for _ in range(50)}
    assert len(delays) > 40
    assert all(0.18 <= d <= 0.22 for d in delays)


def test_reconnecting_messages_follow_the_seed_backoff(caplog: pytest.LogCaptureFixture) -> None:
    """200 failed probes over 20 s log 8 messages, 0.1 s doubling apart, not 200."""
    clock = _Clock()
    plan = ProbePlan([], "redis://h:1/0", interval=0.1, clock=clock)
    plan.started()
    logged_at = []
    with caplog.at_level(logging.INFO, logger="redisguard"):
        for _ in range(200):
            before = len(caplog.records)
            plan.failed(redis.ConnectionError("Error 111 connecting"))
            if len(caplog.records) > before:
                logged_at.append(round(clock.now - 100.0, 3))
            clock.now += 0.1
    # Each message comes with the first probe at or after its due time (float sums may
    # push a due time a hair past a probe): 0, then the seed backoff's 0.1 s doubling gaps.
    due = [0.0, 0.1, 0.3, 0.7, 1.5, 3.1, 6.3, 12.7]
    assert len(logged_at) == len(due)
    assert all(d - 1e-9 <= t <= d + 0.1 + 1e-9 for d, t in zip(due, logged_at, strict=True))
    assert SEED_BACKOFF.max == 10.0
    messages = [r.getMessage() for r in caplog.records]
    assert all("Redis reconnecting" in m and "every 100 ms" in m for m in messages)
    assert "next message in 10.0 s" in messages[-1]


def test_pacing_starts_over_with_each_outage(caplog: pytest.LogCaptureFixture) -> None:
    """A new probing run logs its first failure at once, whatever the previous run logged."""
    clock = _Clock()
    plan = ProbePlan([], "t", clock=clock)
    with caplog.at_level(logging.INFO, logger="redisguard"):
        plan.started()
        for _ in range(30):
            plan.failed(OSError("down"))
            clock.now += 0.1
        first_run = len(caplog.records)
        plan.started()
        plan.failed(OSError("down again"))
    assert first_run == 5  # 0, 0.1, 0.3, 0.7, 1.5
    assert len(caplog.records) == first_run + 1
    assert "probe 1," in caplog.records[-1].getMessage()


# -- real outages -----------------------------------------------------------------------------
def test_first_success_within_one_probe_after_a_long_kill(redis_server: RedisServer) -> None:
    """After a 3 s kill, a guarded call succeeds well within 0.6 s of Redis being ready."""
    breaker = _breaker("kill")
    client = redisguard.connect(redis_server.url, breakers=[breaker])
    try:
        get = _sync_get(client, breaker)
        assert get() is None
        redis_server.kill()
        assert get() == FALLBACK
        assert breaker.current_state == "open"
        time.sleep(OUTAGE)
        redis_server.restart()  # returns once Redis answers PING
        waited = _first_success(get)
    finally:
        client.close()
    print(f"kill {OUTAGE} s: first success {waited * 1e3:.0f} ms after Redis was ready")
    assert waited < RECOVERED_WITHIN


async def test_async_first_success_within_one_probe_after_a_long_pause(
    redis_server: RedisServer,
) -> None:
    """After a 2.8 s SIGSTOP, an asyncio guarded call succeeds well within 0.6 s of SIGCONT."""
    breaker = _breaker("pause")
    client = await redisguard.aconnect(redis_server.url, breakers=[breaker])
    try:
        get = _async_get(client, breaker)
        assert await get() is None
        redis_server.pause()
        try:
            assert await get() == FALLBACK
            assert breaker.current_state == "open"
            await asyncio.sleep(PAUSE)
        finally:
            redis_server.resume()
        waited = await _afirst_success(get)
    finally:
        await client.aclose()
    print(f"pause {PAUSE} s: first success {waited * 1e3:.0f} ms after SIGCONT")
    assert waited < RECOVERED_WITHIN


def test_a_long_outage_probes_often_but_logs_little(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Over a 2 s kill the prober PINGs ~20 times but logs "reconnecting" about 5 times."""
    breaker = _breaker("quiet")
    with caplog.at_level(logging.INFO, logger="redisguard"):
        client = redisguard.connect(redis_server.url, breakers=[breaker])
        try:
            redis_server.kill()
            with pytest.raises(redisguard.CircuitOpenError):
                breaker.call(client.get, "k")
            time.sleep(2.0)
            assert client.prober is not None
            probes = client.prober.plan.probes
        finally:
            client.close()
    reconnecting = [r for r in caplog.records if "Redis reconnecting" in r.getMessage()]
    print(f"2 s outage: {probes} probes, {len(reconnecting)} reconnecting messages")
    assert probes >= 10
    assert 3 <= len(reconnecting) <= 6


async def test_async_calls_after_an_rst_heal_do_not_use_reset_pooled_connections(
    redis_server: RedisServer,
) -> None:
    """After a blackhole whose idle connections were reset, no call after the heal falls back.

    redis-py 8 asyncio hands reset idle connections to the next calls (each then fails with
    "Connection reset by peer"); redis-py 5.0 notices them on checkout, so there this holds
    without the prober's help.
    """
    breaker = Breaker(
        "rst", BreakerConfig(failure_threshold=1, reset_timeout=600, half_open_max_attempts=8)
    )
    with FaultProxy.for_server(redis_server) as proxy:
        client = await redisguard.aconnect(proxy.url, breakers=[breaker])
        try:
            get = _async_get(client, breaker)
            assert await asyncio.gather(*(get() for _ in range(8))) == [None] * 8
            proxy.blackhole()
            assert await get() == FALLBACK  # a timeout opens the breaker
            assert breaker.current_state == "open"
            assert proxy.reset() >= 7  # the idle pooled connections, now dead
            await asyncio.sleep(1.0)
            proxy.heal()
            deadline = time.monotonic() + 5
            while breaker.current_state != "half-open":
                assert time.monotonic() < deadline, "the prober never half-opened the breaker"
                await asyncio.sleep(0.01)
            results = await asyncio.gather(*(get() for _ in range(8)))
            results += await asyncio.gather(*(get() for _ in range(8)))
        finally:
            await client.aclose()
    assert results == [None] * 16
    assert breaker.current_state == "closed"


# -- dropping stale connections, directly -----------------------------------------------------
def _sync_pool_with(
    client: redis.Redis, count: int
) -> tuple[Any, list[Any]]:
    pool: Any = client.connection_pool
    taken = [pool.get_connection() if _NO_NAME else pool.get_connection("GET")
             for _ in range(count)]
    return pool, taken


_NO_NAME = tuple(int(p) for p in redis.__version__.split(".")[:2]) >= (5, 3)


def test_drop_stale_keeps_connections_in_use_and_fresh_ones(redis_server: RedisServer) -> None:
    """Only idle connections from before the outage are disconnected; the pool stays whole."""
    client = redisguard.connect(redis_server.url, prober=False)
    try:
        pool, (in_use, old_idle, fresh_idle) = _sync_pool_with(client, 3)
        for connection in (in_use, old_idle):
            setattr(connection, EPOCH_ATTRIBUTE, 0)
        setattr(fresh_idle, EPOCH_ATTRIBUTE, 1)
        pool.release(old_idle)
        pool.release(fresh_idle)
        assert drop_stale(pool, 1) == 1
        assert old_idle._sock is None
        assert fresh_idle._sock is not None
        assert in_use._sock is not None
        assert pool._available_connections == [old_idle, fresh_idle]  # stale at the cold end
        assert in_use in pool._in_use_connections
        in_use.send_command("PING")
        assert in_use.read_response() in (b"PONG", "PONG")
        pool.release(in_use)
        assert client.get("k") is None
    finally:
        client.close()


async def test_adrop_stale_keeps_connections_in_use_and_fresh_ones(
    redis_server: RedisServer,
) -> None:
    """The asyncio twin: idle pre-outage connections are closed, the rest are untouched."""
    client: Any = await redisguard.aconnect(redis_server.url, prober=False)
    try:
        pool = client.connection_pool
        name: tuple[str, ...] = () if _NO_NAME else ("GET",)
        in_use, old_idle, fresh_idle = [await pool.get_connection(*name) for _ in range(3)]
        for connection in (in_use, old_idle):
            setattr(connection, EPOCH_ATTRIBUTE, 0)
        setattr(fresh_idle, EPOCH_ATTRIBUTE, 1)
        await pool.release(old_idle)
        await pool.release(fresh_idle)
        assert await adrop_stale(pool, 1) == 1
        assert old_idle._writer is None
        assert fresh_idle._writer is not None
        assert in_use._writer is not None
        assert pool._available_connections == [old_idle, fresh_idle]
        await in_use.send_command("PING")
        assert await in_use.read_response() in (b"PONG", "PONG")
        await pool.release(in_use)
        assert await client.get("k") is None
    finally:
        await client.aclose()


# -- which failed probes are repeated at once -------------------------------------------------
def _raised_while(handling: BaseException, exc: BaseException) -> BaseException:
    """``exc`` as redis-py raises it: inside the handler of the socket's ``handling``."""
    exc.__context__ = handling
    return exc


def _reset() -> BaseException:
    return _raised_while(
        ConnectionResetError(104, "reset"), redis.ConnectionError("Error while reading")
    )


@pytest.mark.parametrize(
    ("exc", "dropped"),
    [
        (_reset(), True),
        (_raised_while(BrokenPipeError(32, "pipe"), redis.ConnectionError("Error 32")), True),
        (redis.ConnectionError("Connection closed by server."), True),
        (_raised_while(ConnectionRefusedError(111, "no"), redis.ConnectionError("E 111")), False),
        (redis.TimeoutError("Timeout reading from socket"), False),
        (redis.BusyLoadingError("Connection closed by server."), False),
        (redis.AuthenticationError("invalid password"), False),
        (TimeoutError(), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_only_a_dropped_connection_is_probed_again_at_once(
    exc: BaseException, dropped: bool
) -> None:
    """A reset or closed connection proves nothing about Redis; refused and timeouts do."""
    assert connection_dropped(exc) is dropped


def test_a_dropped_connection_is_retried_once_then_the_interval_resumes() -> None:
    """After a reset probe the next PING goes at once; two in a row fall back to the interval."""
    plan = ProbePlan([], "t", interval=0.1, rand=lambda: 0.5)
    reset = redis.ConnectionError("Connection closed by server.")
    plan.started()
    plan.failed(reset)
    assert plan.next_delay() == 0.0
    plan.failed(reset)
    assert plan.next_delay() == pytest.approx(0.1)
    plan.failed(redis.ConnectionError("Error 111 connecting"))
    assert plan.next_delay() == pytest.approx(0.1)
    plan.failed(reset)
    assert plan.next_delay() == 0.0
