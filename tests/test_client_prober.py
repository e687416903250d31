"""The recovery prober cuts ``reset_timeout`` short only for failures a PING can prove healed."""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis
from redis import exceptions as rx

import redisguard
from redisguard import Breaker, BreakerConfig, RetryPolicy, redis_guarded
from redisguard._prober import ping_proves_recovery
from redisguard.testing import RedisServer

pytestmark = pytest.mark.timeout(60)

ServerFactory = Callable[..., RedisServer]


@pytest.mark.parametrize(
    "exc",
    [
        rx.ConnectionError("Error 111 connecting"),
        rx.TimeoutError("Timeout reading from socket"),
        rx.BusyLoadingError("Redis is loading the dataset in memory"),
        rx.ResponseError("BUSY Redis is busy running a script. You can only call SCRIPT KILL"),
        builtins.TimeoutError(),
        asyncio.TimeoutError(),  # its own class on Python 3.10 (areadiness' wait_for)
        builtins.ConnectionResetError(104, "reset by peer"),
        OSError(113, "No route to host"),
        rx.ConnectionError("The previous master is now a slave"),  # Sentinel's own READONLY
    ],
    ids=lambda e: f"{type(e).__name__}:{str(e)[:12]}",
)
def test_ping_proves_recovery_from_connectivity_loading_and_busy(exc: BaseException) -> None:
    """A PING that answers proves a connectivity, LOADING or BUSY failure healed."""
    assert ping_proves_recovery(exc) is True


@pytest.mark.parametrize(
    "exc",
    [
        None,  # opened manually (Breaker.open()) or by a storage
        rx.NoPermissionError("NOPERM this user has no permissions to run the 'set' command"),
        rx.ReadOnlyError("READONLY You can't write against a read only replica."),
        rx.OutOfMemoryError("OOM command not allowed when used memory > 'maxmemory'."),
        rx.ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's failing"),
        rx.MasterDownError("MASTERDOWN Link with MASTER is down"),
        rx.ClusterDownError("CLUSTERDOWN The cluster is down"),
        rx.TryAgainError("TRYAGAIN Multiple keys request during rehashing of slot"),
        rx.AuthenticationError("invalid username-password pair"),
        rx.AuthorizationError("NOAUTH"),
        rx.MaxConnectionsError("Too many connections"),
        rx.ResponseError("BUSYKEY Target key name already exists."),
        rx.ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
        ValueError("the function's own bug"),
    ],
    ids=lambda e: "None" if e is None else f"{type(e).__name__}:{str(e)[:12]}",
)
def test_ping_does_not_prove_recovery_from_what_ping_cannot_see(exc: BaseException | None) -> None:
    """Permissions, READONLY, OOM, MISCONF, MASTERDOWN, CLUSTERDOWN and manual opens wait."""
    assert ping_proves_recovery(exc) is False


def _server_calls(admin: redis.Redis, command: str) -> int:
    """Every ``command`` the server saw: executed, failed or rejected before execution."""
    stats: dict[str, Any] = admin.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0)) + int(stats.get("rejected_calls", 0))


def _hammer(write: Callable[[], object], seconds: float) -> int:
    """Call ``write`` every 10 ms for ``seconds``; return how many calls were made."""
    calls = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        write()
        calls += 1
        time.sleep(0.01)
    return calls


def _guarded_set(client: redis.Redis, breaker: Breaker) -> Callable[[], object]:
    @redis_guarded(name="set", fallback="fallback", breaker=breaker, retry=RetryPolicy(attempts=1))
    def write() -> object:
        return client.set("k", "v")

    return write


def test_prober_keeps_an_acl_refusal_waiting_out_reset_timeout(
    redis_server: RedisServer,
) -> None:
    """A user allowed PING but not SET opens the breaker once; PINGs do not re-admit SETs."""
    with redis.Redis(**redis_server.client_kwargs()) as admin:
        admin.execute_command(
            "ACL", "SETUSER", "pinger", "on", ">pinger-pw", "~*", "+ping", "+client"
        )
        breaker = Breaker("acl-ping-only", BreakerConfig(failure_threshold=1, reset_timeout=30))
        url = f"redis://pinger:pinger-pw@{redis_server.host}:{redis_server.port}/0"
        client = redisguard.connect(url, breakers=[breaker])
        try:
            before = _server_calls(admin, "set")
            calls = _hammer(_guarded_set(client, breaker), 2.0)
            reached = _server_calls(admin, "set") - before
        finally:
            client.close()
    print(f"ACL PING-only user: {reached} of {calls} guarded SETs reached Redis")
    assert calls > 50
    assert 1 <= reached <= 2
    assert breaker.current_state == "open"


def test_prober_keeps_a_readonly_replica_waiting_out_reset_timeout(
    redis_server_factory: ServerFactory,
) -> None:
    """A client pointed at a replica opens the write side once on READONLY; nothing re-admits
    writes before reset_timeout (the prober is not even started: the main side stays closed)."""
    primary = redis_server_factory()
    replica = redis_server_factory(args=["--replicaof", primary.host, str(primary.port)])
    with redis.Redis(**replica.client_kwargs()) as admin:
        deadline = time.monotonic() + 10
        while admin.info("replication").get("master_link_status") != "up":
            assert time.monotonic() < deadline, "the replica never synced"
            time.sleep(0.02)
        breaker = Breaker("replica", BreakerConfig(failure_threshold=1, reset_timeout=30))
        client = redisguard.connect(replica.url, breakers=[breaker])
        try:
            before = _server_calls(admin, "set")
            calls = _hammer(_guarded_set(client, breaker), 2.0)
            reached = _server_calls(admin, "set") - before
        finally:
            client.close()
    print(f"READONLY replica: {reached} of {calls} guarded SETs reached Redis")
    assert calls > 50
    assert 1 <= reached <= 2
    assert breaker.current_state == "closed"
    assert breaker.write_state == "open"
    assert client.prober is not None
    assert not client.prober.running


def test_prober_still_cuts_a_connectivity_outage_short(redis_server: RedisServer) -> None:
    """A breaker opened by a refused connection half-opens as soon as Redis answers again."""
    breaker = Breaker("outage", BreakerConfig(failure_threshold=1, reset_timeout=600))
    client = redisguard.connect(redis_server.url, breakers=[breaker])
    try:
        redis_server.kill()
        with pytest.raises(redisguard.CircuitOpenError):
            breaker.call(client.get, "k")
        assert isinstance(breaker.opened_by, rx.ConnectionError)
        redis_server.restart()
        deadline = time.monotonic() + 5
        while breaker.current_state != "half-open":
            assert time.monotonic() < deadline, "the prober never half-opened the breaker"
            time.sleep(0.02)
    finally:
        client.close()


def test_prober_leaves_a_manually_opened_breaker_open(redis_server: RedisServer) -> None:
    """Breaker.open() by an operator is not undone by the prober's PING."""
    breaker = Breaker("manual", BreakerConfig(failure_threshold=1, reset_timeout=600))
    client = redisguard.connect(redis_server.url, breakers=[breaker])
    try:
        breaker.open()
        time.sleep(0.5)
        assert breaker.current_state == "open"
        assert client.prober is not None
        assert not client.prober.running
    finally:
        client.close()


def test_a_client_made_while_its_breaker_is_open_probes_at_once(
    redis_server: RedisServer,
) -> None:
    """No transition happens for a client made after its breaker opened (another client's
    outage, or a host-shared breaker another worker opened before this one started), so the
    prober cannot wait for one: it starts with the client."""
    breaker = redisguard.Breaker("late-client", redisguard.BreakerConfig(failure_threshold=1))
    breaker._on_failure(0, rx.ConnectionError("Connection refused"))
    assert breaker.current_state == "open"
    client = redisguard.connect(redis_server.url, breakers=(breaker,), probe_interval=0.05)
    try:
        deadline = time.monotonic() + 5
        while breaker.current_state == "open" and time.monotonic() < deadline:
            time.sleep(0.02)
        assert breaker.current_state == "half-open"
    finally:
        client.close()
