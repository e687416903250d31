"""Redaction, tested rather than assumed: secrets never reach logs, spans, health or errors.

Each test uses distinctive random secrets (:class:`~redisguard.testing._soak.SecretScanner`):
the Redis password, session ids, token ids and token values. Everything an operator could
see is captured and scanned: every log record on the root logger at DEBUG (message, every
``extra`` attribute, traceback), every span on an explicit tracer provider (attributes,
events, status), every readiness body, every exception message and ``repr``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import redisguard
from redisguard import Breaker, BreakerConfig, RedisUnavailableError, RetryPolicy
from redisguard.health import areadiness, readiness
from redisguard.stores import (
    AsyncSessionStore,
    AsyncTokenStore,
    ClientRegistry,
    SessionStore,
    TokenStore,
)
from redisguard.testing import FaultProxy, RedisServer
from redisguard.testing._soak import SecretScanner, span_text

ServerFactory = Callable[..., RedisServer]
FAST = RetryPolicy(attempts=2, deadline=0.3)


@pytest.fixture
def server(redis_server_factory: ServerFactory, scanner: SecretScanner) -> RedisServer:
    """A server whose password is a scanned secret."""
    return redis_server_factory(password=scanner.new("password"))


def _scan_spans(scanner: SecretScanner, exporter: InMemorySpanExporter) -> int:
    finished = exporter.get_finished_spans()
    for span in finished:
        scanner.scan("span", span_text(span))
    return len(finished)


def _errors(fn: Callable[[], object], scanner: SecretScanner) -> None:
    """Call ``fn``; scan the message and repr of a RedisUnavailableError it raises."""
    try:
        fn()
    except RedisUnavailableError as exc:
        scanner.scan("error message", f"{exc} {exc!r} {exc.__cause__!r}")


def test_sync_stores_leak_nothing_through_an_outage(
    server: RedisServer,
    scanner: SecretScanner,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """Sessions, tokens and client registrations through healthy, blackholed, killed and
    restarted Redis: no password, session id, token id or token value appears anywhere."""
    provider, exporter = spans
    breaker = Breaker("redaction", BreakerConfig(failure_threshold=2, reset_timeout=0.2))
    with FaultProxy.for_server(server) as proxy:
        client = redisguard.connect(
            proxy.url, socket_timeout=0.15, socket_connect_timeout=0.15, breakers=[breaker]
        )
        try:
            common = {"breaker": breaker, "retry": FAST, "tracer_provider": provider}
            sessions = SessionStore(client, **common)
            tokens = TokenStore(client, **common)
            registry = ClientRegistry(client, **common)

            @redisguard.redis_guarded(
                name="profile.get", fallback="none", breaker=breaker, tracer_provider=provider
            )
            def profile(session_id: str) -> str:
                return str(client.get(f"profile:{session_id}"))

            session_id, token_id = scanner.new("session id"), scanner.new("token id")
            token_value, client_id = scanner.new("token"), scanner.new("client id")
            registry.register({"name": "first"}, client_id=client_id)

            def traffic() -> None:
                _errors(lambda: sessions.set(session_id, {"csrf": token_value}), scanner)
                _errors(lambda: sessions.get(session_id, strict=True), scanner)
                _errors(lambda: sessions.touch(session_id), scanner)
                _errors(lambda: tokens.save(token_id, token_value, ttl=60), scanner)
                _errors(lambda: tokens.get(token_id), scanner)
                fresh = scanner.new("client id")
                _errors(lambda: registry.register({"name": "x"}, client_id=fresh), scanner)
                _errors(lambda: registry.get(client_id), scanner)
                profile(session_id)
                scanner.scan("readiness body", repr(readiness(client).as_dict(details=True)))

            traffic()
            token = tokens.get(token_id)
            assert token is not None
            scanner.scan("repr", repr(token))  # Token's repr hides the value
            for fault, heal in ((proxy.blackhole, proxy.heal), (server.kill, server.restart)):
                fault()
                for _ in range(3):
                    traffic()
                heal()
                time.sleep(0.25)  # past reset_timeout: the next calls are trials
                traffic()
            scanner.scan("repr", f"{client!r} {client.target} {breaker.stats().as_dict()}")
        finally:
            client.close()
    assert _scan_spans(scanner, exporter) > 10


async def test_async_stores_leak_nothing_through_an_outage(
    server: RedisServer,
    scanner: SecretScanner,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    """The asyncio stores and areadiness() keep the same secrets out through a kill."""
    provider, exporter = spans
    breaker = Breaker("redaction-async", BreakerConfig(failure_threshold=2))
    client = await redisguard.aconnect(server.url, socket_timeout=0.15, breakers=[breaker])
    try:
        sessions = AsyncSessionStore(client, breaker=breaker, retry=FAST, tracer_provider=provider)
        tokens = AsyncTokenStore(client, breaker=breaker, retry=FAST, tracer_provider=provider)
        session_id, token_id = scanner.new("session id"), scanner.new("token id")
        token_value = scanner.new("token")
        await sessions.set(session_id, {"n": 1})
        await tokens.save(token_id, token_value, ttl=60)
        server.kill()
        for _ in range(4):
            assert await sessions.get(session_id) is None
            try:
                await tokens.save(token_id, token_value, ttl=60)
            except RedisUnavailableError as exc:
                scanner.scan("error message", f"{exc} {exc!r} {exc.__cause__!r}")
            scanner.scan("readiness body", repr((await areadiness(client)).as_dict(details=True)))
    finally:
        await client.aclose()
    assert _scan_spans(scanner, exporter) > 0


def test_config_errors_never_show_the_password(server: RedisServer, scanner: SecretScanner) -> None:
    """A wrong password, a bad port or a bad database: the message shows *** instead."""
    wrong = scanner.new("password")
    base = f"{server.host}:{server.port}"
    for url in (
        f"redis://:{wrong}@{base}/0",
        f"redis://user:{wrong}@{base}/0",
        f"redis://:{wrong}@{server.host}:99999/0",
        f"redis://:{wrong}@{base}/notadb",
        f"rediss+bogus://:{wrong}@{base}/0",
    ):
        with pytest.raises(redisguard.ConfigError) as info:
            redisguard.connect(url, breakers=[])
        scanner.scan("error message", f"{info.value} {info.value!r}")
        assert "***" in str(info.value)


def test_redact_text_masks_every_url_password_form() -> None:
    """Free text with URLs whose password has an '@' or sits in ?password= is masked."""
    scanner = SecretScanner()
    secret = scanner.new("password")
    for text in (
        f"failed: redis://:ab@{secret}@127.0.0.1:6379/0",
        f"failed: rediss://user:x@y@{secret}@h:1/0",
        f"failed: redis://127.0.0.1:6379/0?password={secret}",
    ):
        scanner.scan("error message", redisguard._redact.redact_text(text))
    assert scanner.leaks == []
