"""What differs between the dependency releases redisguard supports (redis-py 5.0 to 8.x,
tenacity 9.0 on).

Everything here is decided once, at import or when a client is built: nothing runs per call.
Each difference names the first release that no longer needs it, so it can go when the lower
bound in setup.cfg passes that release.
"""

from __future__ import annotations

import asyncio
import inspect
import re
import warnings
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.connection
import tenacity

__all__ = [
    "ASYNC_CONNECTION_CLOSES_ON_GC",
    "CLUSTER_OPTIONS",
    "REDIS_VERSION",
    "close_dropped_connection",
    "connect_outside_pool_lock",
    "wait_exponential_jitter",
]


def _version(text: str) -> tuple[int, int]:
    found = re.match(r"(\d+)\.(\d+)", text)
    return (int(found[1]), int(found[2])) if found else (0, 0)


REDIS_VERSION: tuple[int, int] = _version(redis.__version__)

# redis-py < 6 retries a failed cluster command ``cluster_error_retry_attempts`` times (default
# 3, refreshing the slot map in between) whatever ``retry=`` says, so a dead shard's error would
# reach the guard only after those retries, and a trial call against its open breaker could
# succeed on the promoted replica and close the dead node's breaker. redis-py 6 made ``retry=``
# govern it (and deprecated the argument).
CLUSTER_OPTIONS: dict[str, Any] = (
    {"cluster_error_retry_attempts": 0} if REDIS_VERSION < (6, 0) else {}
)


class _ConnectOutsideLock:
    """redis-py 7.2's ``get_connection``: the pool's lock covers only taking a connection."""

    _lock: Any

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        pool: Any = self
        async with self._lock:
            connection = pool.get_available_connection()
        try:
            await pool.ensure_connection(connection)
        except BaseException:
            await pool.release(connection)
            raise
        return connection


_fixed: dict[type[Any], type[Any]] = {}


def connect_outside_pool_lock(pool: Any) -> None:
    """Let an asyncio pool open connections concurrently on redis-py 5.3 to 7.1.

    Those releases connect a new connection while holding the pool's lock, so when Redis is
    paused (the kernel still accepts TCP) N concurrent calls fall back one after the other in
    N socket timeouts instead of together in one. redis-py 7.2 moved the connect out of the
    lock; this gives older pools the same ``get_connection``. Other releases, and pools that
    are not a plain ``redis.asyncio.ConnectionPool`` (e.g. ``BlockingConnectionPool``), are
    left alone.
    """
    if not (5, 3) <= REDIS_VERSION < (7, 2):
        return
    cls = type(pool)
    if not issubclass(cls, redis.asyncio.ConnectionPool) or issubclass(
        cls, redis.asyncio.BlockingConnectionPool
    ):
        return
    if cls.get_connection is not redis.asyncio.ConnectionPool.get_connection:
        return  # a pool class with its own get_connection: not ours to change
    fixed = _fixed.get(cls)
    if fixed is None:
        fixed = _fixed[cls] = type(cls.__name__, (_ConnectOutsideLock, cls), {})
        fixed.__module__ = cls.__module__
    pool.__class__ = fixed


# redis-py 5.0.1's asyncio connections have no ``__del__``: a client dropped without
# ``aclose()`` is collected with its pool and connections, but each connection's transport stays
# registered with the event loop (the selector holds its read callback), so its socket stays open
# until the loop closes. redis-py PR #2999 (the first release after 5.0.1) gave
# ``AbstractConnection`` a ``__del__`` that warns and closes the stream; older connections get the
# same from :func:`close_dropped_connection`.
ASYNC_CONNECTION_CLOSES_ON_GC: bool = hasattr(
    redis.asyncio.connection.AbstractConnection, "__del__"
)


def close_dropped_connection(connection: Any, _warn: Any = warnings.warn) -> None:
    """What newer redis-py does when an open asyncio connection is garbage-collected.

    Warns ``ResourceWarning: unclosed Connection`` (as redis-py does) and closes the stream on
    its own event loop: directly when that loop runs this thread, else via
    ``call_soon_threadsafe`` (the collection may happen in any thread). A closed loop has
    already dropped the transport, which then closes its socket itself.

    Args:
        connection: A ``redis.asyncio`` connection being finalized.
    """
    writer = getattr(connection, "_writer", None)
    if writer is None:
        return
    _warn(f"unclosed Connection {connection!r}", ResourceWarning, source=connection)
    loop = getattr(writer, "_loop", None)  # asyncio.StreamWriter's loop (3.10 to 3.13)
    try:
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            writer.close()
        else:
            loop.call_soon_threadsafe(writer.close)
    except Exception:  # a finalizer must not raise; the loop may be closing
        pass


# tenacity 9.2 renamed wait_exponential_jitter's ``initial`` to ``multiplier`` (same meaning:
# the first wait) and deprecated ``initial``; older releases know only ``initial``.
_JITTER_FIRST_WAIT = (
    "multiplier"
    if "multiplier" in inspect.signature(tenacity.wait_exponential_jitter).parameters
    else "initial"
)


def wait_exponential_jitter(
    *, multiplier: float, maximum: float, jitter: float
) -> tenacity.wait_exponential_jitter:
    """``tenacity.wait_exponential_jitter(multiplier=, max=, jitter=)`` on any tenacity 9."""
    return tenacity.wait_exponential_jitter(
        **{_JITTER_FIRST_WAIT: multiplier}, max=maximum, jitter=jitter
    )
