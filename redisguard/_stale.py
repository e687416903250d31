"""Drop a client's idle pooled connections that predate an outage, once Redis answers again.

After a kill or a TCP reset, the connections idle in a redis-py pool are dead. The sync pool
notices on checkout (it checks the socket and reconnects), but redis.asyncio can hand such a
connection to the first calls after the heal, which then fail with "Connection closed by
server" or "Error 104 ... reset by peer" and re-open a half-open breaker. So when the
recovery prober sees Redis answer, it calls :func:`drop_stale` / :func:`adrop_stale` before it
half-opens the breakers.

Which connections predate the outage: the client's connection class stamps each connection
with the client's outage count when its handshake completes (``_redisguard_epoch``); the
outage count grows when a breaker opens. An idle connection with an older stamp is stale.
Connections made since (the probe's own, for one) are kept.

How, without breaking a connection in use and without holding a lock across I/O: the stale
connections are taken out of the pool's idle list (under the pool's lock for sync pools;
asyncio pools are only touched between two awaits), disconnected outside any lock, and put
back at the cold end of the idle list, where they reconnect when next used. Connections in
use are never in the idle list, so they are never touched. Pools without an idle list of
this shape (``BlockingConnectionPool`` on sync redis-py, cluster clients) are left alone.
"""

from __future__ import annotations

import contextlib
from typing import Any

__all__ = ["EPOCH_ATTRIBUTE", "adrop_stale", "drop_stale"]

#: Set on each connection by the client's connection class at the end of its handshake.
EPOCH_ATTRIBUTE = "_redisguard_epoch"


def _is_stale(connection: Any, epoch: int, connected: bool) -> bool:
    return connected and getattr(connection, EPOCH_ATTRIBUTE, -1) < epoch


def _idle_list(pool: Any) -> list[Any] | None:
    idle = getattr(pool, "_available_connections", None)
    return idle if isinstance(idle, list) else None


def drop_stale(pool: Any, epoch: int) -> int:
    """Disconnect the idle connections of a sync pool stamped before ``epoch``.

    Returns:
        How many connections were disconnected.
    """
    idle = _idle_list(pool)
    lock = getattr(pool, "_lock", None)
    if idle is None or lock is None:
        return 0
    with lock:
        stale = [c for c in idle if _is_stale(c, epoch, getattr(c, "_sock", None) is not None)]
        for connection in stale:
            idle.remove(connection)
    try:
        for connection in stale:  # outside the lock: nobody else can take them now
            with contextlib.suppress(Exception):
                connection.disconnect()
    finally:
        with lock:
            if pool._available_connections is idle:  # not reset meanwhile (a fork)
                idle[:0] = stale  # the cold end: pop() takes live connections first
    return len(stale)


async def adrop_stale(pool: Any, epoch: int) -> int:
    """The asyncio twin of :func:`drop_stale` for a ``redis.asyncio`` pool.

    Returns:
        How many connections were disconnected.
    """
    idle = _idle_list(pool)
    if idle is None:
        return 0
    # No await between choosing and removing: no other task can check one out meanwhile.
    stale = [c for c in idle if _is_stale(c, epoch, getattr(c, "_writer", None) is not None)]
    for connection in stale:
        idle.remove(connection)
    try:
        for connection in stale:
            with contextlib.suppress(Exception):
                # nowait: the peer is gone; do not wait for a close handshake.
                await connection.disconnect(nowait=True)
    finally:
        if pool._available_connections is idle:
            idle[:0] = stale
    return len(stale)
