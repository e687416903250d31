"""The default classification of exceptions, over the real redis-py exception classes."""

from __future__ import annotations

import asyncio

import pytest
from redis import exceptions as rx
from redis.sentinel import MasterNotFoundError, SlaveNotFoundError

from redisguard import CircuitOpenError, ErrorKind, RedisUnavailableError, classify_error

TRANSIENT, MISCONFIGURED, REJECTED, PROPAGATE = (
    ErrorKind.TRANSIENT,
    ErrorKind.MISCONFIGURED,
    ErrorKind.REJECTED,
    ErrorKind.PROPAGATE,
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
    (rx.ReadOnlyError("You can't write against a read only replica."), TRANSIENT),
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
    (rx.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."), PROPAGATE),
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


def test_unrelated_subclass_of_a_transient_error_is_transient() -> None:
    """A user subclass of redis ConnectionError is still a connection error."""

    class ProxyDown(rx.ConnectionError):
        pass

    assert classify_error(ProxyDown("proxy down")) is TRANSIENT


def test_auth_errors_win_over_their_connection_error_base() -> None:
    """AuthenticationError subclasses ConnectionError, yet it is never TRANSIENT."""
    assert issubclass(rx.AuthenticationError, rx.ConnectionError)
    assert classify_error(rx.AuthenticationError("WRONGPASS")) is MISCONFIGURED
