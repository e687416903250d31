"""The default classification of exceptions, over the real redis-py exception classes."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.retry
from _pools import acheckout, checkout
from _refusals import fill_memory, free_memory
from redis import exceptions as rx
from redis.backoff import NoBackoff
from redis.retry import Retry
from redis.sentinel import MasterNotFoundError, SlaveNotFoundError

from redisguard import CircuitOpenError, ErrorKind, RedisUnavailableError, classify_error
from redisguard._classify import not_applied
from redisguard.testing import RedisServer
from redisguard.testing._ports import LOOPBACK, free_port


def _auth(server: RedisServer) -> dict[str, Any]:
    return {"password": server.password} if server.password else {}


TRANSIENT, MISCONFIGURED, REJECTED, PROPAGATE, WRITE_REFUSED = (
    ErrorKind.TRANSIENT,
    ErrorKind.MISCONFIGURED,
    ErrorKind.REJECTED,
    ErrorKind.PROPAGATE,
    ErrorKind.WRITE_REFUSED,
)

TABLE: list[tuple[BaseException, ErrorKind]] = [
    # Redis is unavailable: retried, counted, answered by the fallback.
    (rx.ConnectionError("Error 111 connecting to 127.0.0.1:6380. Connection refused."), TRANSIENT),
    (rx.BusyLoadingError("Redis is loading the dataset in memory"), TRANSIENT),
    (MasterNotFoundError("No master found for 'mymaster'"), TRANSIENT),
    (SlaveNotFoundError("No slave found for 'mymaster'"), TRANSIENT),
    (rx.TimeoutError("Timeout reading from socket"), TRANSIENT),
    (TimeoutError(), TRANSIENT),  # the builtin one, raised by asyncio.timeout / wait_for
    (ConnectionResetError(104, "Connection reset by peer"), TRANSIENT),
    (rx.ClusterDownError("The cluster is down"), TRANSIENT),
    (rx.MasterDownError("Link with MASTER is down"), TRANSIENT),
    (rx.TryAgainError("Multiple keys request during rehashing of slot"), TRANSIENT),
    (rx.ReadOnlyError("You can't write against a read only replica."), WRITE_REFUSED),
    # "Cannot serve now" replies redis-py raises as a plain ResponseError: by error code.
    (rx.ResponseError("BUSY Redis is busy running a script."), TRANSIENT),
    (rx.ResponseError("MASTERDOWN Link with MASTER is down"), TRANSIENT),  # redis-py 5.x
    (rx.ResponseError("TRYAGAIN Multiple keys request during rehashing"), TRANSIENT),
    (rx.ResponseError("CLUSTERDOWN The cluster is down"), TRANSIENT),
    # Writes refused while reads work: fallback, not retried, not counted (for now).
    (rx.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), WRITE_REFUSED),
    (rx.ResponseError("MISCONF Redis is configured to save RDB snapshots"), WRITE_REFUSED),
    # Configuration problems: never retried, still answered by the fallback.
    (rx.AuthenticationError("invalid username-password pair"), MISCONFIGURED),
    (rx.AuthorizationError("NOAUTH Authentication required."), MISCONFIGURED),
    (rx.NoPermissionError("this user has no permissions to run the 'get' command"), MISCONFIGURED),
    # A local limit, not Redis being down: fallback, but the breaker is not told.
    (rx.MaxConnectionsError("Too many connections"), REJECTED),
    (RedisUnavailableError("gave up", operation="x", breaker="b", attempts=1), REJECTED),
    (CircuitOpenError("inner circuit open", operation="x", breaker="b", attempts=0), REJECTED),
    # Data errors and the function's own bugs: propagate unchanged, never counted.
    (rx.ResponseError("WRONGTYPE Operation against a key holding the wrong kind"), PROPAGATE),
    (rx.DataError("Invalid input of type: 'dict'."), PROPAGATE),
    (rx.NoScriptError("No matching script. Please use EVAL."), PROPAGATE),
    (rx.WatchError("Watched variable changed."), PROPAGATE),
    (rx.ResponseError("BUSYGROUP Consumer Group name already exists"), PROPAGATE),
    (rx.ResponseError("BUSYKEY Target key name already exists."), PROPAGATE),
    (rx.ExecAbortError("Transaction discarded because of previous errors."), PROPAGATE),
    (ValueError("bad input"), PROPAGATE),
    (KeyError("missing"), PROPAGATE),
    (asyncio.CancelledError(), PROPAGATE),
    (KeyboardInterrupt(), PROPAGATE),
    (SystemExit(1), PROPAGATE),
]


@pytest.mark.parametrize(
    ("exc", "kind"), TABLE, ids=[f"{type(e).__name__}-{k.name}" for e, k in TABLE]
)
def test_default_classification(exc: BaseException, kind: ErrorKind) -> None:
    """Each redis-py (and builtin) exception gets the kind BRIEF section 3 assigns it."""
    assert classify_error(exc) is kind


@pytest.mark.parametrize(
    ("message", "kind"),
    [
        (
            "Error running script (call to f_219bb33e7c6773035c720850383aa2ebb63d9904): "
            "@user_script:1: @user_script: 1: -OOM command not allowed when used memory > "
            "'maxmemory'.",
            ErrorKind.WRITE_REFUSED,
        ),
        (
            "Error running script (call to f_219bb33e7c6773035c720850383aa2ebb63d9904): "
            "@user_script:1: @user_script: 1: -READONLY You can't write against a read only "
            "replica.",
            ErrorKind.WRITE_REFUSED,
        ),
        (
            "@user_script: 1: -OOM command not allowed when used memory > 'maxmemory'.",
            ErrorKind.WRITE_REFUSED,
        ),
        (
            "Error running script (call to f_00): @user_script:3: @user_script: 3: -BUSY x y",
            ErrorKind.TRANSIENT,
        ),
        # A script's own error, or one of a command with no refusal code: the script's bug.
        (
            "Error running script (call to f_00): @user_script:1: user_script:1: boom",
            ErrorKind.PROPAGATE,
        ),
        (
            "Error running script (call to f_00): @user_script:2: @user_script: 2: -WRONGTYPE "
            "Operation against a key holding the wrong kind of value",
            ErrorKind.PROPAGATE,
        ),
    ],
)
def test_redis_6_script_errors_are_classified_by_the_wrapped_reply(
    message: str, kind: ErrorKind
) -> None:
    """Redis < 7 wraps the reply of a command a script called: its code decides, and a
    refusal proves the script never wrote (Redis refuses only before a script's first write)."""
    exc = rx.ResponseError(message)
    assert classify_error(exc) is kind
    assert not_applied(exc) is (kind is not ErrorKind.PROPAGATE)


def test_unrelated_subclass_of_a_transient_error_is_transient() -> None:
    """A user subclass of redis ConnectionError is still a connection error."""

    class ProxyDown(rx.ConnectionError):
        pass

    assert classify_error(ProxyDown("proxy down")) is TRANSIENT


def test_auth_errors_win_over_their_connection_error_base() -> None:
    """AuthenticationError subclasses ConnectionError, yet it is never TRANSIENT."""
    assert issubclass(rx.AuthenticationError, rx.ConnectionError)
    assert classify_error(rx.AuthenticationError("WRONGPASS")) is MISCONFIGURED


# -- not_applied: which errors prove the command never ran (real redis-py, real server) -------
def _client(port: int, timeout: float = 0.2, **kwargs: Any) -> redis.Redis:
    return redis.Redis(
        host=LOOPBACK,
        port=port,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 0),
        **kwargs,
    )


def test_a_refused_connection_proves_nothing_ran() -> None:
    """Error 111 is raised while connecting: the command was never sent."""
    with pytest.raises(rx.ConnectionError) as info:
        _client(free_port()).incr("k")
    assert not_applied(info.value)


async def test_an_async_refused_connection_proves_nothing_ran() -> None:
    """The asyncio client's connect errors are recognised by their frames too."""
    client = redis.asyncio.Redis(
        host=LOOPBACK, port=free_port(), retry=redis.asyncio.retry.Retry(NoBackoff(), 0)
    )
    with pytest.raises(rx.ConnectionError) as info:
        await client.incr("k")
    assert not_applied(info.value)
    await client.aclose()


def test_a_handshake_timeout_proves_nothing_ran(redis_server: RedisServer) -> None:
    """A connect that times out in the handshake (paused server) never sent the command."""
    client = _client(redis_server.port, **_auth(redis_server))
    redis_server.pause()
    try:
        with pytest.raises(rx.TimeoutError) as info:
            client.incr("k")
    finally:
        redis_server.resume()
    assert not_applied(info.value)


async def test_an_asyncio_timeout_during_connect_proves_nothing_ran(
    redis_server: RedisServer,
) -> None:
    """asyncio.timeout cutting a connect (paused server) is proof; cutting a read is not."""
    client = redis.asyncio.Redis(
        host=LOOPBACK,
        port=redis_server.port,
        retry=redis.asyncio.retry.Retry(NoBackoff(), 0),
        **_auth(redis_server),
    )
    warm = redis.asyncio.Redis(
        host=LOOPBACK,
        port=redis_server.port,
        retry=redis.asyncio.retry.Retry(NoBackoff(), 0),
        **_auth(redis_server),
    )
    try:
        assert await warm.ping() is True
        redis_server.pause()
        try:
            # asyncio.TimeoutError is the builtin TimeoutError from 3.11 only.
            with pytest.raises((TimeoutError, asyncio.TimeoutError)) as connecting:
                await asyncio.wait_for(client.incr("k"), 0.2)
            with pytest.raises((TimeoutError, asyncio.TimeoutError)) as reading:
                await asyncio.wait_for(warm.incr("k"), 0.2)
        finally:
            redis_server.resume()
        assert not_applied(connecting.value)
        assert not not_applied(reading.value)
    finally:  # a half-open connection left to the GC warns in a later test
        await client.aclose()
        await warm.aclose()


def test_a_timeout_waiting_for_the_reply_may_have_run(redis_server: RedisServer) -> None:
    """A read timeout on a connected client: the command was sent and may have run."""
    client = _client(redis_server.port, **_auth(redis_server))
    assert client.ping() is True
    redis_server.pause()
    try:
        with pytest.raises(rx.TimeoutError) as info:
            client.incr("k")
    finally:
        redis_server.resume()
    assert not not_applied(info.value)


def test_redis_py_resending_before_a_failed_reconnect_may_have_run(
    redis_server: RedisServer,
) -> None:
    """With redis-py's own Retry, a reconnect failure can follow a sent attempt: not proof."""
    client = redis.Redis(
        host=LOOPBACK,
        port=redis_server.port,
        socket_timeout=0.2,
        socket_connect_timeout=0.2,
        retry=Retry(NoBackoff(), 1),
        **_auth(redis_server),
    )
    assert client.ping() is True
    redis_server.pause()
    try:
        with pytest.raises(rx.TimeoutError) as info:
            client.incr("k")
    finally:
        redis_server.resume()
    assert not not_applied(info.value)


def test_a_full_pool_proves_nothing_ran(redis_server: RedisServer) -> None:
    """MaxConnectionsError and BlockingConnectionPool's timeout happen before any send."""
    client = _client(redis_server.port, max_connections=1, **_auth(redis_server))
    held = checkout(client.connection_pool)
    with pytest.raises(rx.ConnectionError) as info:
        client.incr("k")
    assert not_applied(info.value)
    client.connection_pool.release(held)
    pool = redis.BlockingConnectionPool(  # type: ignore[no-untyped-call]
        host=LOOPBACK,
        port=redis_server.port,
        max_connections=1,
        timeout=0.05,
        **_auth(redis_server),
    )
    blocking = redis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 0))
    held = checkout(pool)
    with pytest.raises(rx.ConnectionError, match="No connection available") as info:
        blocking.incr("k")
    assert not_applied(info.value)
    assert classify_error(info.value) is REJECTED  # a local limit: the breaker is not told
    pool.release(held)  # type: ignore[no-untyped-call]
    pool.disconnect()


async def test_an_async_blocking_pool_timeout_is_a_local_rejection(
    redis_server: RedisServer,
) -> None:
    """asyncio BlockingConnectionPool's "No connection available" is REJECTED and not applied."""
    pool = redis.asyncio.BlockingConnectionPool(
        host=LOOPBACK,
        port=redis_server.port,
        max_connections=1,
        timeout=0.05,
        **_auth(redis_server),
    )
    client = redis.asyncio.Redis(
        connection_pool=pool, retry=redis.asyncio.retry.Retry(NoBackoff(), 0)
    )
    held = await acheckout(pool)
    with pytest.raises(rx.ConnectionError, match="No connection available") as info:
        await client.incr("k")
    assert classify_error(info.value) is REJECTED
    assert not_applied(info.value)
    await pool.release(held)
    await client.aclose()
    await pool.disconnect()


def test_a_refusal_reply_proves_nothing_ran_unless_in_a_pipeline(
    redis_server: RedisServer,
) -> None:
    """OOM refuses a lone command; inside a pipeline, earlier commands may have run."""
    client = _client(redis_server.port, timeout=2.0, **_auth(redis_server))
    fill_memory(redis_server)
    try:
        with pytest.raises(rx.OutOfMemoryError) as lone:
            client.set("k", "v")
        assert not_applied(lone.value)
        pipe = client.pipeline(transaction=False)
        pipe.delete("filler:0")
        pipe.set("k", "v")
        with pytest.raises(rx.OutOfMemoryError) as piped:
            pipe.execute()
        assert not not_applied(piped.value)
    finally:
        free_memory(redis_server)


def test_other_errors_do_not_prove_anything() -> None:
    """Data errors, bare exceptions and circuit-open errors are judged by their kind."""
    assert not not_applied(rx.ResponseError("WRONGTYPE Operation against a key"))
    assert not not_applied(rx.ResponseError("BUSYGROUP Consumer Group name already exists"))
    assert not not_applied(rx.ConnectionError("Connection closed by server."))
    assert not_applied(rx.ResponseError("BUSY Redis is busy running a script."))
    assert not_applied(CircuitOpenError("open", operation="x", breaker="b", attempts=0))
