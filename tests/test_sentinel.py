"""Guarded calls through a Sentinel-managed client while a real Sentinel fails the master over.

Each test starts a master, a replica and one Sentinel (``redis_sentinel`` fixture:
down-after 500 ms), kills the master and keeps calling. Two guarded functions share the
client: ``write`` uses a breaker that opens (the application's view: fallbacks, then
recovery), ``observe`` uses a breaker that never opens, so every call reaches redis-py and
the sequence of errors a failover produces is recorded. The client object is never
rebuilt: recovery on the promoted replica happens inside redis-py's Sentinel pool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

import redisguard
from redisguard import BreakerConfig, ErrorKind, RetryPolicy, get_breaker, redis_guarded
from redisguard.testing import RedisServer, SentinelTopology

# redis-py leaves these untyped; calling them through Any keeps mypy --strict quiet.
SyncSentinel: Any = redis.sentinel.Sentinel
AsyncSentinel: Any = redis.asyncio.sentinel.Sentinel
TIMEOUT = 0.25
# Opens after 3 failures and admits a trial call 0.2 s later: the failover, not the
# breaker, then decides how long the application degrades.
FAST = BreakerConfig(failure_threshold=3, reset_timeout=0.2)
NEVER_OPENS = BreakerConfig(failure_threshold=1_000_000, reset_timeout=60)
# Sentinel needs ~0.5 s to notice and ~1 s to promote (BRIEF §3): 10 s is a generous bound.
FAILOVER_BOUND = 10.0
POLL = 0.01


@dataclass
class Timeline:
    """What the guarded calls saw after the master was killed."""

    killed_at: float = field(default_factory=time.monotonic)
    observed: list[str] = field(default_factory=list)  # error types seen by `observe`, deduped
    fallbacks: int = 0
    write_errors: list[type[BaseException]] = field(default_factory=list)
    recovered_after: float | None = None

    def saw(self, exc: BaseException | None) -> None:
        """Record an error type seen by the observer, once per run of the same type."""
        name = "ok" if exc is None else type(exc).__name__
        if not self.observed or self.observed[-1] != name:
            self.observed.append(name)

    def report(self, label: str) -> None:
        """Print the measured time to recovery (shown with ``pytest -s`` / ``-rP``)."""
        print(
            f"\n[{label}] master killed -> guarded write succeeds on the promoted replica "
            f"after {self.recovered_after:.3f} s; {self.fallbacks} fallbacks; "
            f"errors seen: {' -> '.join(self.observed)}"
        )


def _sync_kwargs() -> dict[str, Any]:
    return {
        "socket_timeout": TIMEOUT,
        "socket_connect_timeout": TIMEOUT,
        "retry": Retry(NoBackoff(), 0),
    }


@pytest.fixture(params=["redis-py", "connect"])
def sync_client(
    request: pytest.FixtureRequest, redis_sentinel: SentinelTopology
) -> Iterator[redis.Redis]:
    """A master client found through Sentinel: redis-py's own, or ``redisguard.connect``."""
    if request.param == "connect":
        breaker = get_breaker("redis", FAST)
        client: redis.Redis = redisguard.connect(
            redis_sentinel.url, socket_timeout=TIMEOUT, breakers=[breaker]
        )
    else:
        sentinel = SyncSentinel(
            [redis_sentinel.sentinel_address], sentinel_kwargs=_sync_kwargs(), **_sync_kwargs()
        )
        client = sentinel.master_for(redis_sentinel.service_name, **_sync_kwargs())
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(params=["redis-py", "aconnect"])
async def async_client(
    request: pytest.FixtureRequest, redis_sentinel: SentinelTopology
) -> AsyncIterator[redis.asyncio.Redis]:
    """The asyncio twin of ``sync_client``."""
    sentinels: list[redis.asyncio.Redis] = []
    if request.param == "aconnect":
        breaker = get_breaker("redis", FAST)
        client: redis.asyncio.Redis = await redisguard.aconnect(
            redis_sentinel.url, socket_timeout=TIMEOUT, breakers=[breaker]
        )
    else:
        sentinel = AsyncSentinel(
            [redis_sentinel.sentinel_address], sentinel_kwargs=_sync_kwargs(), **_sync_kwargs()
        )
        sentinels = sentinel.sentinels
        client = sentinel.master_for(redis_sentinel.service_name, **_sync_kwargs())
    try:
        yield client
    finally:
        await client.aclose()
        for s in sentinels:
            await s.aclose()


def _check_failover(timeline: Timeline, client_port: int, topo: SentinelTopology) -> None:
    """The assertions every failover test shares."""
    assert timeline.recovered_after is not None, (
        f"no recovery within {FAILOVER_BOUND}s; seen {timeline.observed}"
    )
    # The guard answered with fallbacks while there was no master...
    assert timeline.fallbacks > 0
    assert all(issubclass(t, redis.ConnectionError) for t in timeline.write_errors)
    # ...first "refused" from the dead master, then Sentinel reporting no master at all.
    assert timeline.observed[0] == "ConnectionError"
    assert "MasterNotFoundError" in timeline.observed
    assert timeline.observed[-1] == "ok"
    # The same client object now talks to the promoted replica.
    new_master = topo.wait_for_failover()
    assert new_master is topo.replicas[0]
    assert client_port == new_master.port
    # The application's breaker opened during the failover and is closed again.
    breaker = get_breaker("redis")
    assert breaker.failure_total >= FAST.failure_threshold
    assert breaker.current_state == "closed"


def test_sync_calls_fall_back_during_failover_and_recover_on_promoted_replica(
    redis_sentinel: SentinelTopology, sync_client: redis.Redis
) -> None:
    """Sync guarded calls fall back while Sentinel fails over, then succeed on the new master."""
    client = sync_client
    timeline = Timeline()

    def note_fallback(key: str, value: str) -> bool:
        failure = redisguard.current_failure()
        assert failure is not None
        if failure.exception is not None:
            assert failure.kind is ErrorKind.TRANSIENT
            timeline.write_errors.append(type(failure.exception))
        timeline.fallbacks += 1
        return False

    @redis_guarded(name="session.write", fallback=note_fallback, breaker=get_breaker("redis", FAST))
    def write(key: str, value: str) -> bool:
        return bool(client.set(key, value))

    def note_error() -> bool:
        failure = redisguard.current_failure()
        assert failure is not None
        timeline.saw(failure.exception)
        return False

    @redis_guarded(
        name="observe",
        fallback=note_error,
        breaker=get_breaker("observer", NEVER_OPENS),
        retry=None,
    )
    def observe() -> bool:
        client.ping()
        timeline.saw(None)
        return True

    assert write("before", "1") is True
    redis_sentinel.master.kill()
    timeline.killed_at = time.monotonic()
    while time.monotonic() - timeline.killed_at < FAILOVER_BOUND:
        observe()
        if write("after", "2"):
            timeline.recovered_after = time.monotonic() - timeline.killed_at
            # Sentinel may name the promoted replica between this iteration's PING (refused
            # by the dead master) and the write; aconnect()/connect()'s recovery prober makes
            # that likely by admitting the write as soon as the new master answers it.
            # The client now writes to the new master: PING it too.
            observe()
            break
        time.sleep(POLL)
    timeline.report(f"sync {type(client).__name__}")
    pool: Any = client.connection_pool
    address = pool.get_master_address()
    _check_failover(timeline, address[1], redis_sentinel)
    assert client.get("after") == b"2"


async def test_async_calls_fall_back_during_failover_and_recover_on_promoted_replica(
    redis_sentinel: SentinelTopology, async_client: redis.asyncio.Redis
) -> None:
    """Asyncio guarded calls fall back while Sentinel fails over, then succeed on the new master."""
    client = async_client
    timeline = Timeline()

    def note_fallback(key: str, value: str) -> bool:
        failure = redisguard.current_failure()
        assert failure is not None
        if failure.exception is not None:
            timeline.write_errors.append(type(failure.exception))
        timeline.fallbacks += 1
        return False

    @redis_guarded(name="session.write", fallback=note_fallback, breaker=get_breaker("redis", FAST))
    async def write(key: str, value: str) -> bool:
        return bool(await client.set(key, value))

    def note_error() -> bool:
        failure = redisguard.current_failure()
        assert failure is not None
        timeline.saw(failure.exception)
        return False

    @redis_guarded(
        name="observe",
        fallback=note_error,
        breaker=get_breaker("observer", NEVER_OPENS),
        retry=None,
    )
    async def observe() -> bool:
        await client.ping()
        timeline.saw(None)
        return True

    assert await write("before", "1") is True
    redis_sentinel.master.kill()
    timeline.killed_at = time.monotonic()
    while time.monotonic() - timeline.killed_at < FAILOVER_BOUND:
        await observe()
        if await write("after", "2"):
            timeline.recovered_after = time.monotonic() - timeline.killed_at
            # Sentinel may name the promoted replica between this iteration's PING (refused
            # by the dead master) and the write; aconnect()/connect()'s recovery prober makes
            # that likely by admitting the write as soon as the new master answers it.
            # The client now writes to the new master: PING it too.
            await observe()
            break
        await asyncio.sleep(POLL)
    timeline.report(f"async {type(client).__name__}")
    pool: Any = client.connection_pool
    address = await pool.get_master_address()
    _check_failover(timeline, address[1], redis_sentinel)
    assert await client.get("after") == b"2"


def test_readonly_error_from_a_demoted_master_is_unavailable(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A write to a demoted master (READONLY) falls back and opens only the write side."""
    # No 5 s wait before the full sync (redis 7's default repl-diskless-sync-delay).
    new_master = redis_server_factory(args=["--repl-diskless-sync-delay", "0"])
    old_master = redis_server_factory()
    # A client that still points at the old master's address (stale config, DNS, or a pool
    # that outlived a failover): redis-py's Sentinel client turns READONLY into a
    # ConnectionError itself, a plain client shows the raw ReadOnlyError.
    client = redis.Redis(**old_master.client_kwargs(), **_sync_kwargs())
    control: Any = client
    seen: list[BaseException | None] = []

    def fallback(key: str) -> str:
        failure = redisguard.current_failure()
        assert failure is not None
        seen.append(failure.exception)
        return "fallback"

    breaker = get_breaker("redis", BreakerConfig(failure_threshold=3, reset_timeout=0.1))
    retry = RetryPolicy(attempts=3, backoff=0, max_backoff=0, jitter=0, deadline=1.0)

    @redis_guarded(name="write", fallback=fallback, breaker=breaker, retry=retry)
    def write(key: str) -> str:
        client.set(key, "v")
        return "written"

    @redis_guarded(name="read", fallback="fallback", breaker=get_breaker("reads", FAST))
    def read(key: str) -> str:
        return "read" if client.get(key) is None else "found"

    try:
        assert write("k") == "written"
        control.execute_command("REPLICAOF", new_master.host, str(new_master.port))
        # Wait for the sync, as after a real demotion: while it loads the master's data the
        # node answers LOADING (BusyLoadingError), not READONLY.
        deadline = time.monotonic() + 5.0
        while client.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the demoted node never synced"
            time.sleep(0.01)
        # Only writes are refused by the demoted node; reads still succeed (below).
        assert [write("k") for _ in range(3)] == ["fallback"] * 3
        assert isinstance(seen[-1], redis.exceptions.ReadOnlyError)
        assert breaker.failure_total == 0  # refused writes are not the main side's business
        assert breaker.current_state == "closed"
        assert (breaker.write_state, breaker.write_side.cause) == ("open", "READONLY")
        assert write("k") == "fallback"
        assert seen[-1] is None  # answered by the open write side, without I/O
        # It serves the new master's data (where "k" was never written).
        assert read("k") == "read"
        # Promote it back: after reset_timeout the trial write succeeds and closes the circuit.
        control.execute_command("REPLICAOF", "NO", "ONE")
        deadline = time.monotonic() + 2.0
        while write("k") != "written":
            assert time.monotonic() < deadline, "write did not recover after REPLICAOF NO ONE"
            time.sleep(0.02)
        assert breaker.current_state == "closed"
        assert breaker.write_state == "closed"
    finally:
        client.close()
