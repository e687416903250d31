"""connect() / aconnect(): URL validation, fail-fast startup, explicit timeouts, retry off."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio
from _pools import retries

import redisguard
from redisguard import ConfigError, RedisUnavailableError
from redisguard._client import validate_url
from redisguard.testing import RedisServer

pytestmark = pytest.mark.timeout(30)

SECRET = "s3cret-pw"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (f"http://app:{SECRET}@127.0.0.1:6380/0", "scheme 'http'"),
        (f"redis://:{SECRET}@127.0.0.1:99999/0", "out of range"),
        (f"redis://:{SECRET}@127.0.0.1:0/0", "port 0 out of range"),
        (f"redis://:{SECRET}@127.0.0.1:port/0", "Port could not be cast to integer"),
        (f"redis://:{SECRET}@/0", "no host"),
        (f"redis://:{SECRET}@127.0.0.1:6380/zero", "database 'zero' is not a number"),
        ("unix://", "needs a socket path"),
        ("", "non-empty string"),
    ],
)
def test_bad_url_names_the_problem_without_the_password(url: str, problem: str) -> None:
    """A bad URL raises ConfigError that says what is wrong and masks the password."""
    with pytest.raises(ConfigError) as info:
        redisguard.connect(url)
    message = str(info.value)
    assert problem in message
    assert SECRET not in message
    if SECRET in url:
        assert "***" in message


def test_non_string_url_is_refused() -> None:
    """A URL that is not a string is a ConfigError."""
    with pytest.raises(ConfigError, match="non-empty string"):
        validate_url(6379)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6380/0",
        "rediss://u:p@cache.internal",
        "unix:///run/redis.sock",
        "redis://h",
    ],
)
def test_valid_urls_pass_unchanged(url: str) -> None:
    """validate_url returns a good URL as it was given."""
    assert validate_url(url) == url


@pytest.mark.parametrize("name", ["socket_timeout", "socket_connect_timeout"])
@pytest.mark.parametrize("value", [0, -1.0, True, "1", None])
def test_timeouts_must_be_positive_numbers(name: str, value: Any) -> None:
    """Timeouts are required to be positive numbers of seconds; the error names the option."""
    with pytest.raises(ConfigError, match=name):
        redisguard.connect("redis://127.0.0.1:6380/0", check=False, **{name: value})




def test_explicit_timeouts_and_no_client_retry() -> None:
    """The client gets the given timeouts and redis-py's own retry is off (no I/O needed)."""
    client = redisguard.connect(
        "redis://127.0.0.1:6380/0", socket_timeout=0.7, socket_connect_timeout=0.3, check=False
    )
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == 0.7
        assert kwargs["socket_connect_timeout"] == 0.3
        assert retries(kwargs["retry"]) == 0
    finally:
        client.close()


def test_url_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, redis_server: RedisServer
) -> None:
    """Without a url argument, connect() uses $REDIS_URL."""
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    client = redisguard.connect(decode_responses=True)
    try:
        client.set("k", "v")
        assert client.get("k") == "v"  # extra kwargs reach redis-py
    finally:
        client.close()


def test_default_url_without_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without $REDIS_URL the default is localhost:6379 (not contacted with check=False)."""
    monkeypatch.delenv("REDIS_URL", raising=False)
    # No check and no prober: nothing may ever touch the machine's own Redis on 6379.
    client = redisguard.connect(check=False, prober=False)
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert (kwargs["host"], kwargs["port"]) == ("localhost", 6379)
    finally:
        client.close()


def test_connect_checks_and_logs_a_redacted_url(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """A successful connect PINGs once and logs the URL with the password masked."""
    server = redis_server_factory(password=SECRET)
    with caplog.at_level(logging.INFO, logger="redisguard"):
        client = redisguard.connect(server.url)
    try:
        assert client.ping() is True
    finally:
        client.close()
    messages = [r.getMessage() for r in caplog.records]
    assert any("Redis ready" in m and "***" in m for m in messages)
    assert all(SECRET not in m for m in messages)


def test_startup_fails_fast_when_nothing_listens(redis_server: RedisServer) -> None:
    """connect() raises RedisUnavailableError at once when the server is down."""
    url = redis_server.url
    redis_server.kill()
    began = time.perf_counter()
    with pytest.raises(RedisUnavailableError) as info:
        redisguard.connect(url)
    assert time.perf_counter() - began < 0.5
    assert "not reachable" in str(info.value)
    assert isinstance(info.value.__cause__, redis.ConnectionError)


def test_check_false_does_not_connect(redis_server: RedisServer) -> None:
    """With check=False, connect() returns a client even when the server is down."""
    url = redis_server.url
    redis_server.kill()
    client = redisguard.connect(url, check=False)
    try:
        with pytest.raises(redis.ConnectionError):
            client.ping()
    finally:
        client.close()


def test_wrong_password_is_a_config_error(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """Rejected credentials raise ConfigError, with the password masked."""
    server = redis_server_factory(password=SECRET)
    wrong = server.url.replace(SECRET, "not-the-" + SECRET)
    with pytest.raises(ConfigError) as info:
        redisguard.connect(wrong)
    assert "rejected the credentials" in str(info.value)
    assert SECRET not in str(info.value)


def test_paused_server_times_out_once_not_ten_times(redis_server: RedisServer) -> None:
    """Against a SIGSTOPped server a command fails after one socket timeout (no hidden retry)."""
    client = redisguard.connect(redis_server.url, socket_timeout=0.2)
    redis_server.pause()
    try:
        began = time.perf_counter()
        with pytest.raises(redis.TimeoutError):
            client.get("k")
        assert time.perf_counter() - began < 0.5
    finally:
        redis_server.resume()
        client.close()


async def test_aconnect_works_and_is_async(redis_server: RedisServer) -> None:
    """aconnect() returns a checked redis.asyncio client."""
    client = await redisguard.aconnect(redis_server.url, decode_responses=True)
    try:
        assert isinstance(client, redis.asyncio.Redis)
        await client.set("k", "v")
        assert await client.get("k") == "v"
        assert retries(client.connection_pool.connection_kwargs["retry"]) == 0
    finally:
        await client.aclose()


async def test_aconnect_fails_fast(redis_server: RedisServer) -> None:
    """aconnect() raises RedisUnavailableError at once when the server is down."""
    url = redis_server.url
    redis_server.kill()
    began = time.perf_counter()
    with pytest.raises(RedisUnavailableError, match="not reachable"):
        await redisguard.aconnect(url)
    assert time.perf_counter() - began < 0.5


async def test_aconnect_wrong_password(redis_server_factory: Callable[..., RedisServer]) -> None:
    """aconnect() turns rejected credentials into a ConfigError without the password."""
    server = redis_server_factory(password=SECRET)
    with pytest.raises(ConfigError) as info:
        await redisguard.aconnect(server.url.replace(SECRET, "wrong"))
    assert SECRET not in str(info.value)


async def test_aconnect_validates_first() -> None:
    """aconnect() validates the URL before any I/O."""
    with pytest.raises(ConfigError, match="scheme"):
        await redisguard.aconnect(f"http://:{SECRET}@127.0.0.1:6380")


async def test_async_paused_server_times_out_once(redis_server: RedisServer) -> None:
    """An asyncio command against a paused server fails after one socket timeout."""
    client = await redisguard.aconnect(redis_server.url, socket_timeout=0.2)
    redis_server.pause()
    try:
        began = time.perf_counter()
        with pytest.raises(redis.TimeoutError):
            await client.get("k")
        assert time.perf_counter() - began < 0.5
    finally:
        redis_server.resume()
        await client.aclose()
