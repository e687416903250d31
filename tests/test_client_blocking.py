"""Blocking commands and pubsub on connect()/aconnect() clients wait their own timeout."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

import redisguard
from redisguard import Breaker, BreakerConfig, redis_guarded
from redisguard._client import blocking_timeout
from redisguard.testing import RedisServer

pytestmark = pytest.mark.timeout(60)

# connect()'s default socket_timeout is 0.25 s: every wait below is well past it.
WAIT = 1.0


@pytest.mark.parametrize(
    ("args", "seconds"),
    [
        (("BLPOP", "a", "b", 1), 1.0),
        (("brpop", "a", "0.5"), 0.5),
        ((b"BRPOPLPUSH", b"a", b"b", b"2"), 2.0),
        (("BLMOVE", "a", "b", "LEFT", "RIGHT", 3), 3.0),
        (("BZPOPMIN", "z", 0), 0.0),
        (("BZPOPMAX", "z", 1.5), 1.5),
        (("BLMPOP", 4, 2, "a", "b", "LEFT", "COUNT", 9), 4.0),
        (("BZMPOP", "0.25", 1, "z", "MIN"), 0.25),
        (("XREAD", "COUNT", 1, "BLOCK", 1500, "STREAMS", "s", "$"), 1.5),
        (("XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "s", ">"), 0.0),
        (("WAIT", 1, 2000), 2.0),
        (("WAITAOF", 1, 0, 500), 0.5),
        (("Blpop", "a", 1), 1.0),  # any spelling of the name
    ],
)
def test_blocking_timeout_reads_each_commands_own_timeout(
    args: tuple[Any, ...], seconds: float
) -> None:
    """Each blocking command's server-side timeout is found where that command puts it."""
    assert blocking_timeout(args) == seconds


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("GET", "k"),
        ("XREAD", "COUNT", 1, "STREAMS", "BLOCK", "$"),  # a stream called BLOCK, no BLOCK option
        ("XREAD", "STREAMS", "s", "$"),
        ("BLPOP", "k", "soon"),  # malformed: the server refuses it at once
        ("BLPOP", "k", -1),
        ("BLPOP",),
    ],
)
def test_blocking_timeout_is_none_for_commands_that_do_not_block(args: tuple[Any, ...]) -> None:
    """Non-blocking and malformed commands keep the connection's socket timeout."""
    assert blocking_timeout(args) is None


@pytest.fixture
def client(redis_server: RedisServer) -> Iterator[redisguard.GuardedRedis]:
    """A connect() client with the default 0.25 s socket timeout."""
    made = redisguard.connect(redis_server.url, prober=False)
    yield made
    made.close()


def _later(seconds: float, action: Any) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


def test_idle_blpop_waits_its_timeout_and_is_not_a_failure(client: redisguard.GuardedRedis) -> None:
    """BLPOP 1 s on an empty list returns None after ~1 s; the guard counts no failure."""
    breaker = Breaker("queue", BreakerConfig(failure_threshold=1))

    @redis_guarded(name="pop", fallback="fallback", breaker=breaker)
    def pop() -> object:
        return client.blpop(["empty"], timeout=WAIT)

    began = time.perf_counter()
    assert pop() is None
    took = time.perf_counter() - began
    assert WAIT * 0.9 <= took < WAIT + 2.0
    assert breaker.failure_total == 0
    assert breaker.current_state == "closed"
    assert client.ping()  # the connection's own timeout is back to normal


@pytest.mark.requires_redis(7, 0, reason="BLMPOP")
def test_blocking_commands_wait_past_the_socket_timeout(
    client: redisguard.GuardedRedis, redis_server: RedisServer
) -> None:
    """BRPOP, BZPOPMIN, BLMOVE, BLMPOP, XREAD/XREADGROUP BLOCK and WAIT wait their own time."""
    raw: Any = client
    client.xgroup_create("stream", "group", id="$", mkstream=True)
    calls: dict[str, Callable[[], Any]] = {
        "brpop": lambda: client.brpop(["empty"], timeout=0.6),
        "bzpopmin": lambda: client.bzpopmin(["zempty"], timeout=0.6),
        "blmove": lambda: raw.blmove("empty", "dst", 0.6, "LEFT", "RIGHT"),
        "blmpop": lambda: raw.execute_command("BLMPOP", 0.6, 1, "empty", "LEFT"),
        "xread": lambda: client.xread({"stream": "$"}, block=600),
        "xreadgroup": lambda: client.xreadgroup("group", "me", {"stream": ">"}, block=600),
        "wait": lambda: client.wait(1, 600),  # no replica will ever acknowledge
    }
    for name, call in calls.items():
        began = time.perf_counter()
        result = call()
        took = time.perf_counter() - began
        assert 0.5 <= took < 3.0, (name, took)
        assert not result, (name, result)


def test_blpop_with_timeout_zero_waits_until_an_element_arrives(
    client: redisguard.GuardedRedis, redis_server: RedisServer
) -> None:
    """BLPOP 0 (forever) has no client-side timeout: it returns when a producer pushes."""
    producer = redis.Redis(**redis_server.client_kwargs())
    timer = _later(0.8, lambda: producer.rpush("jobs", "job-1"))
    try:
        began = time.perf_counter()
        assert client.blpop(["jobs"], timeout=0) == (b"jobs", b"job-1")
        assert time.perf_counter() - began >= 0.7
    finally:
        timer.join()
        producer.close()


def test_a_paused_server_still_times_out_a_blocking_command(
    client: redisguard.GuardedRedis, redis_server: RedisServer
) -> None:
    """BLPOP 0.5 s against a paused server raises TimeoutError after its wait plus a margin."""
    client.ping()
    redis_server.pause()
    try:
        began = time.perf_counter()
        with pytest.raises(redis.TimeoutError):
            client.blpop(["empty"], timeout=0.5)
        assert 0.5 <= time.perf_counter() - began < 2.0
    finally:
        redis_server.resume()


def test_pubsub_listen_idles_then_receives(
    client: redisguard.GuardedRedis, redis_server: RedisServer
) -> None:
    """listen() stays idle for 1 s without TimeoutError, then yields the message."""
    raw: Any = client
    pubsub = raw.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe("news")
    publisher = redis.Redis(**redis_server.client_kwargs())
    timer = _later(WAIT, lambda: publisher.publish("news", "hello"))
    try:
        began = time.perf_counter()
        message = next(m for m in pubsub.listen() if m["type"] == "message")
        assert message["data"] == b"hello"
        assert time.perf_counter() - began >= WAIT * 0.9
        # get_message with a timeout longer than the socket's returns None, no TimeoutError.
        assert pubsub.get_message(timeout=WAIT) is None
    finally:
        timer.join()
        pubsub.close()
        publisher.close()


async def test_async_blocking_commands_and_pubsub(redis_server: RedisServer) -> None:
    """On aconnect() clients BLPOP, XREAD BLOCK and pubsub listen() wait their own time."""
    client: Any = await redisguard.aconnect(redis_server.url, prober=False)
    pubsub: Any = client.pubsub(ignore_subscribe_messages=True)
    publisher = redis.Redis(**redis_server.client_kwargs())
    try:
        calls: list[Callable[[], Any]] = [
            lambda: client.blpop(["empty"], timeout=WAIT),
            lambda: client.xread({"stream": "$"}, block=int(WAIT * 1000)),
        ]
        for call in calls:
            began = time.perf_counter()
            assert not await call()
            assert WAIT * 0.9 <= time.perf_counter() - began < WAIT + 2.0
        assert await client.ping()
        await pubsub.subscribe("news")
        loop = asyncio.get_running_loop()
        loop.call_later(WAIT, publisher.publish, "news", "hello")
        began = time.perf_counter()
        async for message in pubsub.listen():
            if message["type"] == "message":
                break
        assert message["data"] == b"hello"
        assert time.perf_counter() - began >= WAIT * 0.9
        assert await pubsub.get_message(timeout=WAIT) is None
    finally:
        await pubsub.aclose()
        await client.aclose()
        publisher.close()
