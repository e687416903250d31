"""connect()/aconnect() options: the right Retry class per client, and a user's retry honoured."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.retry
import redis.retry
from _pools import acheckout, checkout, retries
from redis.backoff import ExponentialBackoff

import redisguard
from redisguard import RedisguardWarning
from redisguard._client import _options, _resolve, _sentinel_kwargs
from redisguard.testing import RedisServer

pytestmark = pytest.mark.timeout(30)


def _connection_retry(client: redis.Redis) -> Any:
    """The Retry object of a connection the client's pool hands out."""
    pool: Any = client.connection_pool
    conn = checkout(pool)
    try:
        return conn.retry
    finally:
        pool.release(conn)


async def _async_connection_retry(client: redis.asyncio.Redis) -> Any:
    pool: Any = client.connection_pool
    conn = await acheckout(pool)
    try:
        return conn.retry
    finally:
        await pool.release(conn)


# -- failure mode 9: an explicit retry is honoured, with a warning ---------------------------
def test_default_client_retry_is_off_and_silent(redis_server: RedisServer) -> None:
    """Without a user retry, redis-py's own retry is off and no warning is given."""
    client = redisguard.connect(redis_server.url, prober=False)
    try:
        assert retries(_connection_retry(client)) == 0
    finally:
        client.close()


def test_explicit_retry_is_honoured_with_a_warning(redis_server: RedisServer) -> None:
    """A retry= passed to connect() reaches redis-py, and a warning says it stacks."""
    with pytest.warns(RedisguardWarning, match="stacks under the guard's retries"):
        client = redisguard.connect(
            redis_server.url, prober=False, retry=redis.retry.Retry(ExponentialBackoff(), 3)
        )
    try:
        retry = _connection_retry(client)
        assert retries(retry) == 3
        assert isinstance(retry._backoff, ExponentialBackoff)
    finally:
        client.close()


@pytest.mark.parametrize(
    "option", [{"retry_on_timeout": True}, {"retry_on_error": [redis.TimeoutError]}]
)
def test_retry_on_options_are_not_no_ops(redis_server: RedisServer, option: Any) -> None:
    """retry_on_timeout / retry_on_error get redis-py's retry again, with a warning."""
    with pytest.warns(RedisguardWarning, match="multiplies"):
        client = redisguard.connect(redis_server.url, prober=False, **option)
    try:
        retry = _connection_retry(client)
        assert retries(retry) >= 1
        assert redis.TimeoutError in retry._supported_errors
    finally:
        client.close()


async def test_async_explicit_retry_is_honoured_with_a_warning(redis_server: RedisServer) -> None:
    """aconnect() honours an explicit asyncio retry= and warns."""
    with pytest.warns(RedisguardWarning, match="stacks under the guard's retries"):
        client = await redisguard.aconnect(
            redis_server.url,
            prober=False,
            retry=redis.asyncio.retry.Retry(ExponentialBackoff(), 2),
        )
    try:
        assert retries(await _async_connection_retry(client)) == 2
    finally:
        await client.aclose()


# -- failure mode 8: asyncio clients get the asyncio Retry ------------------------------------
async def test_aconnect_uses_the_asyncio_retry_class(redis_server: RedisServer) -> None:
    """An aconnect() client's connections carry redis.asyncio.retry.Retry, retries off."""
    client = await redisguard.aconnect(redis_server.url, prober=False)
    try:
        retry = await _async_connection_retry(client)
        assert isinstance(retry, redis.asyncio.retry.Retry)
        assert retries(retry) == 0
    finally:
        await client.aclose()


def test_sentinel_options_get_the_retry_class_of_their_client() -> None:
    """The Sentinel connections of sync and asyncio clients get their own Retry class."""
    target = _resolve("redis+sentinel://127.0.0.1:26999/mymaster", None, None, None)
    for asyncio_client, retry_class in (
        (False, redis.retry.Retry),
        (True, redis.asyncio.retry.Retry),
    ):
        options = _options(target, 0.25, 0.25, {}, asyncio_client=asyncio_client)
        assert type(options["retry"]) is retry_class
        sentinel = _sentinel_kwargs(options, None, asyncio_client=asyncio_client)
        assert type(sentinel["retry"]) is retry_class


async def test_aconnect_pubsub_resubscribes_after_its_connection_is_killed(
    redis_server: RedisServer,
) -> None:
    """After CLIENT KILL TYPE pubsub, the next get_message reconnects and a message arrives."""
    client = await redisguard.aconnect(redis_server.url, prober=False)
    pubsub: Any = client.pubsub()
    admin: Any = redis.Redis(**redis_server.client_kwargs())
    try:
        await pubsub.subscribe("news")
        assert (await pubsub.get_message(timeout=1.0))["type"] == "subscribe"
        assert admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub") == 1
        errors = 0
        received = None
        deadline = time.monotonic() + 5.0
        while received is None and time.monotonic() < deadline:
            try:
                message = await pubsub.get_message(timeout=0.2)
            except redis.ConnectionError:
                errors += 1  # the kill itself may surface once, as with plain redis.asyncio
                continue
            if message is not None and message["type"] == "subscribe":
                admin.publish("news", "after the kill")
            elif message is not None and message["type"] == "message":
                received = message["data"]
            await asyncio.sleep(0)
        assert received == b"after the kill"
        assert errors <= 1
    finally:
        await pubsub.aclose()
        await client.aclose()
        admin.close()

