"""Read/write-aware breaking against a real redis-server: OOM, MISCONF, READONLY, an outage.

Numbers printed here (``-s``) are the ones quoted in the docs: raw errors reaching callers,
the share of GETs served by Redis, and the commands that reached Redis per kind.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from _refusals import admin, failed_save, fill_memory, free_memory
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from redisguard import Breaker, BreakerConfig, ErrorKind, RetryPolicy, redis_guarded
from redisguard._client import aconnect, connect
from redisguard.ratelimit import RateLimiter
from redisguard.stores import SessionStore, TemporarilyUnavailableError, TokenStore
from redisguard.testing import RedisServer

RESET = 0.3
THRESHOLD = 3
WINDOW = 1.0  # seconds of traffic during the refusal
TIMEOUT = 0.5


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer(args=["--enable-protected-configs", "yes"]) as srv:
        yield srv


@pytest.fixture
def breaker() -> Breaker:
    return Breaker("sides", BreakerConfig(failure_threshold=THRESHOLD, reset_timeout=RESET))


def sync_client(server: RedisServer) -> redis.Redis:
    return redis.Redis(
        **server.client_kwargs(),  # type: ignore[arg-type]
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )


def async_client(server: RedisServer) -> redis.asyncio.Redis:
    return redis.asyncio.Redis(
        **server.client_kwargs(),
        socket_timeout=TIMEOUT,
        socket_connect_timeout=TIMEOUT,
        retry=AsyncRetry(NoBackoff(), 0),
    )


def calls(server: RedisServer) -> Callable[[str], int]:
    """Read how often Redis ran a command (INFO commandstats), from a separate connection."""
    control = admin(server)

    def count(command: str) -> int:
        stats: dict[str, Any] = control.info("commandstats")
        entry = stats.get(f"cmdstat_{command}", {})
        # Refused commands (OOM, MISCONF, READONLY) count as rejected_calls, not calls.
        return int(entry.get("calls", 0)) + int(entry.get("rejected_calls", 0))

    return count


class Tally:
    """What the callers saw during the refusal."""

    def __init__(self) -> None:
        self.raw_errors = 0
        self.reads = self.reads_served = 0
        self.writes = self.writes_fallback = 0
        self.deletes = self.deletes_fallback = 0

    def report(self, label: str, sets: int, dels: int) -> None:
        print(
            f"\n{label}: {self.writes} writes ({self.writes_fallback} fallbacks, {sets} SETs "
            f"reached Redis), {self.reads} reads ({self.reads_served} served by Redis, "
            f"{100 * self.reads_served / max(1, self.reads):.1f}%), {self.deletes} deletes "
            f"({self.deletes_fallback} fallbacks, {dels} DELs reached Redis), "
            f"{self.raw_errors} raw errors"
        )


def sync_guards(client: redis.Redis, breaker: Breaker) -> dict[str, Callable[..., Any]]:
    retry = RetryPolicy(attempts=2, backoff=0, max_backoff=0, jitter=0, deadline=0.5)

    @redis_guarded(name="s.set", fallback="FB", breaker=breaker, retry=retry, access="write")
    def write(key: str) -> Any:
        return client.set(key, "v")

    @redis_guarded(name="s.get", fallback="FB", breaker=breaker, retry=retry, access="read")
    def read(key: str) -> Any:
        return client.get(key)

    @redis_guarded(name="s.del", fallback="FB", breaker=breaker, retry=retry, access="delete")
    def delete(key: str) -> Any:
        return client.delete(key)

    return {"write": write, "read": read, "delete": delete}


def drive(guards: dict[str, Callable[..., Any]], seconds: float) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + seconds
    i = 0
    while time.monotonic() < deadline:
        i += 1
        try:
            tally.writes += 1
            tally.writes_fallback += guards["write"](f"w:{i}") == "FB"
            tally.reads += 1
            tally.reads_served += guards["read"]("present") == b"v"
            tally.deletes += 1
            tally.deletes_fallback += guards["delete"](f"absent:{i}") == "FB"
        except Exception:
            tally.raw_errors += 1
        time.sleep(0.002)
    return tally


def wait_closed(breaker: Breaker, write: Callable[[], Any]) -> None:
    deadline = time.monotonic() + 5
    while write() == "FB":
        assert time.monotonic() < deadline, f"the write side never closed: {breaker.write_side!r}"
        time.sleep(0.02)
    assert breaker.write_state == "closed"


def test_oom_sheds_writes_serves_reads_and_deletes(server: RedisServer, breaker: Breaker) -> None:
    """During an OOM: writes fall back (no raw error), GETs and DELs reach Redis; after the
    memory is freed and reset_timeout passed, a trial write closes the write side."""
    client = sync_client(server)
    client.set("present", "v")
    guards = sync_guards(client, breaker)
    count = calls(server)
    fill_memory(server)
    try:
        sets, dels = count("set"), count("del")
        tally = drive(guards, WINDOW)
        sets, dels = count("set") - sets, count("del") - dels
        assert breaker.write_state in ("open", "half-open")
        assert breaker.write_side.cause == "OOM"
        assert breaker.current_state == "closed"
        assert breaker.failure_total == 0
    finally:
        free_memory(server)
    tally.report("sync OOM", sets, dels)
    assert tally.raw_errors == 0
    assert tally.reads_served / tally.reads >= 0.99
    assert tally.deletes_fallback == 0
    assert dels == tally.deletes
    # THRESHOLD refusals opened it; then one refused trial per reset_timeout at most.
    assert sets <= THRESHOLD + WINDOW / RESET + 1
    assert tally.writes_fallback == tally.writes
    wait_closed(breaker, lambda: guards["write"]("after"))
    assert client.get("after") == b"v"
    client.close()


async def test_async_oom_sheds_writes_serves_reads_and_deletes(
    server: RedisServer, breaker: Breaker
) -> None:
    """The asyncio twin: 16 tasks at once during an OOM; the write side closes afterwards."""
    client = async_client(server)
    await client.set("present", "v")

    @redis_guarded(name="a.set", fallback="FB", breaker=breaker, retry=None, access="write")
    async def write(key: str) -> Any:
        return await client.set(key, "v")

    @redis_guarded(name="a.get", fallback="FB", breaker=breaker, retry=None, access="read")
    async def read(key: str) -> Any:
        return await client.get(key)

    @redis_guarded(name="a.del", fallback="FB", breaker=breaker, retry=None, access="delete")
    async def delete(key: str) -> Any:
        return await client.delete(key)

    tally = Tally()

    async def worker(n: int) -> None:
        deadline = time.monotonic() + WINDOW
        i = 0
        while time.monotonic() < deadline:
            i += 1
            try:
                # Await first: "x += await ..." would read x before the await and lose the
                # other tasks' increments.
                wrote, got = await write(f"w:{n}:{i}"), await read("present")
                deleted = await delete(f"absent:{n}:{i}")
                tally.writes += 1
                tally.writes_fallback += wrote == "FB"
                tally.reads += 1
                tally.reads_served += got == b"v"
                tally.deletes += 1
                tally.deletes_fallback += deleted == "FB"
            except Exception:
                tally.raw_errors += 1
            await asyncio.sleep(0.002)

    count = calls(server)
    fill_memory(server)
    try:
        sets, dels = count("set"), count("del")
        await asyncio.gather(*(worker(n) for n in range(16)))
        sets, dels = count("set") - sets, count("del") - dels
        assert breaker.write_side.cause == "OOM"
        assert breaker.current_state == "closed"
    finally:
        free_memory(server)
    tally.report("asyncio OOM, 16 tasks", sets, dels)
    assert tally.raw_errors == 0
    assert tally.reads_served / tally.reads >= 0.99
    assert tally.deletes_fallback == 0
    assert dels == tally.deletes
    # Concurrent first writes may all be refused before the side opens: at most one per task.
    assert sets <= 16 + (WINDOW / RESET + 1) * breaker.config.half_open_max_attempts
    assert tally.writes_fallback == tally.writes
    deadline = time.monotonic() + 5
    while await write("after") == "FB":
        assert time.monotonic() < deadline, "the write side never closed"
        await asyncio.sleep(0.02)
    assert breaker.write_state == "closed"
    await client.aclose()


def test_misconf_blocks_deletes_but_serves_reads(server: RedisServer, breaker: Breaker) -> None:
    """After a failed save writes and deletes fall back (DEL is refused too); reads go on."""
    client = sync_client(server)
    client.set("present", "v")
    guards = sync_guards(client, breaker)
    count = calls(server)
    with failed_save(server):
        for i in range(THRESHOLD):
            assert guards["write"](f"w:{i}") == "FB"
        assert (breaker.write_state, breaker.write_side.cause) == ("open", "MISCONF")
        dels = count("del")
        tally = drive(guards, 0.3)
        assert count("del") == dels  # no DEL reached Redis
        assert tally.deletes_fallback == tally.deletes
        assert tally.reads_served == tally.reads
        assert tally.raw_errors == 0
        assert breaker.current_state == "closed"
    wait_closed(breaker, lambda: guards["write"]("after"))
    client.close()


def test_readonly_replica_blocks_writes_and_deletes(
    redis_server_factory: Callable[..., RedisServer], breaker: Breaker
) -> None:
    """A node turned replica (REPLICAOF) refuses writes and deletes: both fall back, GETs are
    served; promoted back, the write side closes after reset_timeout."""
    primary = redis_server_factory(args=["--repl-diskless-sync-delay", "0"])
    node = redis_server_factory()
    client = sync_client(node)
    with admin(primary) as p:
        p.set("present", "v")
    guards = sync_guards(client, breaker)
    client.execute_command("REPLICAOF", primary.host, str(primary.port))
    try:
        deadline = time.monotonic() + 5
        while client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica never synced"
            time.sleep(0.01)
        tally = drive(guards, 0.5)
        assert (breaker.write_state, breaker.write_side.cause) == ("open", "READONLY")
        assert tally.raw_errors == 0
        assert tally.reads_served == tally.reads
        assert tally.writes_fallback == tally.writes
        assert tally.deletes_fallback >= tally.deletes - THRESHOLD
        assert breaker.current_state == "closed"
    finally:
        client.execute_command("REPLICAOF", "NO", "ONE")
    wait_closed(breaker, lambda: guards["write"]("after"))
    client.close()


def test_an_outage_still_opens_both(server: RedisServer, breaker: Breaker) -> None:
    """A killed server opens the main side: reads, writes and deletes all fall back."""
    client = sync_client(server)
    guards = sync_guards(client, breaker)
    server.kill()
    for i in range(THRESHOLD):
        guards["read"](f"k{i}")
    assert breaker.current_state == "open"
    assert breaker.write_state == "closed"
    for kind in ("read", "write", "delete"):
        assert guards[kind]("k") == "FB"
    client.close()


def test_stores_and_limiter_declare_their_access(server: RedisServer) -> None:
    """During an OOM the session store reads, touches and deletes through Redis; its sets and
    the limiter's script stop reaching Redis once the write side is open."""
    breaker = Breaker("store", BreakerConfig(failure_threshold=2, reset_timeout=60))
    client = connect(server.url, prober=False, breakers=[breaker])
    sessions = SessionStore(client, breaker=breaker, retry=None)
    tokens = TokenStore(client, breaker=breaker, retry=None)
    limiter = RateLimiter(client, 100, 60, on_unavailable="open", breaker=breaker, name="l")
    sessions.set("s1", {"user": 1})
    tokens.save("t1", "secret", ttl=60)
    assert limiter.hit("k").allowed
    count = calls(server)
    fill_memory(server)
    try:
        for _ in range(2):
            with pytest.raises(TemporarilyUnavailableError):
                sessions.set("s2", {"user": 2})
        assert breaker.write_state == "open"
        before = {c: count(c) for c in ("set", "get", "pexpire", "del", "evalsha")}
        with pytest.raises(TemporarilyUnavailableError):
            sessions.set("s2", {"user": 2})
        assert sessions.get("s1") == {"user": 1}
        assert sessions.touch("s1") is True
        assert tokens.revoke("t1") is True
        assert sessions.delete("s1") is True
        decision = limiter.hit("k")
        after = {c: count(c) for c in before}
    finally:
        free_memory(server)
        client.close()
    assert decision.degraded
    assert decision.allowed
    assert after["set"] == before["set"]
    assert after["evalsha"] == before["evalsha"]
    assert after["get"] == before["get"] + 1
    assert after["pexpire"] == before["pexpire"] + 1
    assert after["del"] == before["del"] + 2
    assert breaker.current_state == "closed"


async def test_async_store_serves_reads_during_oom(server: RedisServer) -> None:
    """The asyncio store: its get is served and its delete reaches Redis during an OOM."""
    from redisguard.stores import AsyncSessionStore

    breaker = Breaker("astore", BreakerConfig(failure_threshold=1, reset_timeout=60))
    client = await aconnect(server.url, prober=False, breakers=[breaker])
    store = AsyncSessionStore(client, breaker=breaker, retry=None)
    await store.set("s1", {"user": 1})
    await store.set("s2", {"user": 2})
    fill_memory(server)
    try:
        with pytest.raises(TemporarilyUnavailableError):
            await store.set("s3", {"user": 3})
        assert breaker.write_state == "open"
        assert await store.get("s1") == {"user": 1}
        assert await store.delete("s2") is True
    finally:
        free_memory(server)
        await client.aclose()


def test_refusal_kind_reaches_the_fallback(server: RedisServer, breaker: Breaker) -> None:
    """The refused attempt's Failure says WRITE_REFUSED on the write side; later ones say the
    write side answered without I/O."""
    from redisguard import current_failure

    client = sync_client(server)
    seen: list[Any] = []

    @redis_guarded(
        name="f.set",
        fallback=lambda: seen.append(current_failure()),
        breaker=breaker,
        access="write",
    )
    def write() -> Any:
        return client.set("k", "v")

    fill_memory(server)
    try:
        for _ in range(THRESHOLD + 1):
            write()
    finally:
        free_memory(server)
        client.close()
    assert seen[0].kind is ErrorKind.WRITE_REFUSED
    assert seen[0].side == "write"
    assert not seen[0].circuit_open
    assert seen[-1].circuit_open
    assert seen[-1].side == "write"
