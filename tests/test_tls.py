"""TLS: the guarded stores over ``rediss://`` with a throwaway CA, through real faults.

The server listens on TLS only (``--port 0 --tls-port``), with a password and the AOF on;
clients trust the test CA through ``ssl_ca_certs``. Every log record, span and readiness body
produced while it is killed and paused is scanned for the password and the session ids.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis.backoff import NoBackoff
from redis.retry import Retry

import redisguard
from redisguard import Breaker, BreakerConfig, ConfigError, StoreUnavailableError
from redisguard.health import areadiness, readiness
from redisguard.stores import AsyncSessionStore, SessionStore
from redisguard.testing import RedisServer, ServerNotFoundError, SoakConfig, run_soak
from redisguard.testing._soak import (
    OUTAGE_KINDS,
    SecretScanner,
    span_text,
)

ServerFactory = Callable[..., RedisServer]

# Failed TLS connects leak sockets outside redisguard: CPython 3.11's ssl.SSLSocket._create
# does not close the socket when the peer resets before the handshake (the pre-handshake
# recv raises ECONNRESET: a server killed behind the proxy), and an asyncio SSL handshake cut
# by a timeout can leave its transport unclosed. Garbage-collected at each test's teardown
# (below), under this filter, so they cannot surface in a later test.
pytestmark = pytest.mark.filterwarnings("ignore:unclosed:ResourceWarning")

SOCKET_TIMEOUT = 0.25
# A call is bounded by the retry deadline (0.5 s) plus one attempt that cannot be cut short
# (connect 0.25 s + read 0.25 s: the TLS handshake is part of the connect), plus 0.35 s of
# scheduling slack: the soak's bound.
LATENCY_BOUND = SoakConfig(seconds=1).latency_bound
# The prober PINGs 0.1 s after the breaker opens, doubling: an outage of ~1 s is seen again
# at most ~1.1 s after Redis returns, plus one PING in flight and slack.
RECOVERY_BOUND = SoakConfig(seconds=1).recovery_bound(1.5)


@pytest.fixture(autouse=True)
def _needs_tls() -> Iterator[None]:
    """Skip when this redis-server build cannot serve TLS; collect leaked sockets after."""
    try:
        supported = RedisServer.supports_tls()
    except ServerNotFoundError:
        supported = True  # the server fixtures skip (or fail under REDISGUARD_REQUIRE_REDIS)
    if not supported:
        pytest.skip("this redis-server build has no TLS support")
    yield
    gc.collect()


@pytest.fixture
def server(redis_server_factory: ServerFactory, scanner: SecretScanner) -> RedisServer:
    """A TLS-only server with a scanned password and appendfsync always."""
    return redis_server_factory(tls=True, appendonly=True, password=scanner.new("password"))


def _breaker(name: str) -> Breaker:
    return Breaker(name, BreakerConfig(failure_threshold=3, reset_timeout=30))


def _timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    try:
        return fn(), time.perf_counter() - started
    except StoreUnavailableError as exc:
        return exc, time.perf_counter() - started


def _until(fn: Callable[[], bool], timeout: float) -> float:
    """Call ``fn`` until it returns True; return the seconds it took (fail after timeout)."""
    started = time.perf_counter()
    while not fn():
        assert time.perf_counter() - started < timeout, f"not within {timeout:.2f} s"
        time.sleep(0.01)
    return time.perf_counter() - started


def _drive_outage(sessions: SessionStore, session_id: str, breaker: Breaker) -> None:
    """During an outage: reads fall back to None, writes raise, each within the bound."""
    for _ in range(6):
        value, took = _timed(lambda: sessions.get(session_id))
        assert value is None
        assert took <= LATENCY_BOUND
        error, took = _timed(lambda: sessions.set(session_id, {"lost": True}))
        assert isinstance(error, StoreUnavailableError)
        assert took <= LATENCY_BOUND
    assert breaker.current_state == "open"


def test_sync_stores_over_tls_survive_kill_and_pause(
    server: RedisServer,
    scanner: SecretScanner,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """Over rediss://, a kill and a pause give fallbacks within the bound; once Redis is back
    the prober closes the breaker, and the acknowledged session survived the crash."""
    provider, exporter = spans
    breaker = _breaker("tls-sync")
    transitions: list[tuple[str, str]] = []

    class Listener(redisguard.LoggingListener):
        def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
            transitions.append((old_state.name, new_state.name))

    breaker.add_listener(Listener())
    assert server.url.startswith("rediss://")
    client = redisguard.connect(
        server.url,
        ssl_ca_certs=str(server.tls_ca_path),
        socket_timeout=SOCKET_TIMEOUT,
        breakers=[breaker],
    )
    try:
        sessions = SessionStore(client, breaker=breaker, tracer_provider=provider)
        session_id = scanner.new("session id")
        sessions.set(session_id, {"user": 42})

        for fault, heal in ((server.kill, server.restart), (server.pause, server.resume)):
            fault()
            _drive_outage(sessions, session_id, breaker)
            scanner.scan("readiness body", repr(readiness(client).as_dict(details=True)))
            heal()
            took = _until(lambda: sessions.get(session_id) == {"user": 42}, RECOVERY_BOUND)
            assert breaker.current_state == "closed", took

        cycle = [("closed", "open"), ("open", "half-open"), ("half-open", "closed")]
        assert transitions == cycle * 2
        body = readiness(client).as_dict(details=True)
        assert body["status"] == "ready"
        scanner.scan("readiness body", repr(body))
    finally:
        client.close()
    finished = exporter.get_finished_spans()
    assert finished
    for span in finished:
        scanner.scan("span", span_text(span))


async def test_async_stores_over_tls_survive_a_kill(
    server: RedisServer, scanner: SecretScanner
) -> None:
    """The asyncio client over rediss:// falls back during a kill and recovers after it."""
    breaker = _breaker("tls-async")
    client = await redisguard.aconnect(
        server.url,
        ssl_ca_certs=str(server.tls_ca_path),
        socket_timeout=SOCKET_TIMEOUT,
        breakers=[breaker],
    )
    try:
        sessions = AsyncSessionStore(client, breaker=breaker)
        session_id = scanner.new("session id")
        await sessions.set(session_id, {"user": 7})
        server.kill()
        for _ in range(6):
            started = time.perf_counter()
            assert await sessions.get(session_id) is None
            assert time.perf_counter() - started <= LATENCY_BOUND
        assert breaker.current_state == "open"
        scanner.scan("readiness body", repr((await areadiness(client)).as_dict(details=True)))
        server.restart()

        async def back() -> bool:
            return bool(await sessions.get(session_id) == {"user": 7})

        await _auntil(back, RECOVERY_BOUND)
        assert breaker.current_state == "closed"
    finally:
        await client.aclose()


async def _auntil(fn: Callable[[], Awaitable[bool]], timeout: float) -> None:
    started = time.perf_counter()
    while not await fn():
        assert time.perf_counter() - started < timeout, f"not within {timeout:.2f} s"
        await asyncio.sleep(0.01)


def test_an_untrusted_certificate_fails_at_once_without_the_password(
    server: RedisServer, scanner: SecretScanner
) -> None:
    """Without the test CA, connect() fails at once, names the certificate, hides the password."""
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="CERTIFICATE_VERIFY_FAILED") as info:
        redisguard.connect(server.url, breakers=[], wait=5.0)  # not retried: a config error
    assert time.perf_counter() - started < 1.0
    scanner.scan("error message", str(info.value))
    assert ":***@" in str(info.value)


def test_an_untrusted_certificate_is_misconfigured_not_retried(server: RedisServer) -> None:
    """At run time a certificate that does not verify is answered at once, never retried."""
    client = redis.Redis.from_url(
        server.url, socket_timeout=0.5, socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0)
    )
    attempts = 0

    @redisguard.redis_guarded(
        name="tls.untrusted", fallback="fb", breaker=Breaker("tls-untrusted")
    )
    def ping() -> Any:
        nonlocal attempts
        attempts += 1
        return client.ping()

    try:
        assert ping() == "fb"
        assert attempts == 1
        assert redisguard.current_failure() is None  # only set inside the fallback
    finally:
        client.close()


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_tls_soak_holds_every_invariant() -> None:
    """A shorter soak over TLS: every fault kind once or more, nothing lost, escaped or leaked."""
    config = SoakConfig(seconds=15, tls=True)
    result = run_soak(config, out=None)
    assert result.problems == []
    assert result.leaks == []
    rows = {row.kind: row for row in result.rows}
    for kind in config.faults:
        assert rows[kind].faults >= 1, kind
        assert rows[kind].unavailable > 0, kind
        if kind in OUTAGE_KINDS:
            assert rows[kind].breaker_cycles == rows[kind].faults, kind
    assert result.scanned.get("span", 0) > 0
    assert result.scanned.get("readiness body", 0) > 0
