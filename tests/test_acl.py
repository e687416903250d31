"""Authentication and ACLs: a wrong password is a configuration error, loudly and at once.

Every test runs a real ``redis-server`` with ``requirepass`` (and, where said, an ACL user)
and captures every log record, span and readiness body to show that neither the right nor
the wrong password, nor any session id, ends up in them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import redisguard
from redisguard import (
    Breaker,
    BreakerConfig,
    ConfigError,
    ErrorKind,
    RedisUnavailableError,
    RetryPolicy,
    StoreUnavailableError,
)
from redisguard.health import readiness
from redisguard.stores import SessionStore
from redisguard.testing import RedisServer
from redisguard.testing._soak import SecretScanner, span_text

ServerFactory = Callable[..., RedisServer]


@pytest.fixture
def server(redis_server_factory: ServerFactory, scanner: SecretScanner) -> RedisServer:
    """A server whose password is a scanned secret."""
    return redis_server_factory(password=scanner.new("password"))


def _with_credentials(server: RedisServer, userinfo: str) -> str:
    return f"redis://{userinfo}@{server.host}:{server.port}/0"


def _config_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.ERROR and getattr(r, "category", None) == "config"
    ]


def _scan_spans(scanner: SecretScanner, exporter: InMemorySpanExporter) -> int:
    finished = exporter.get_finished_spans()
    for span in finished:
        scanner.scan("span", span_text(span))
    return len(finished)


def test_connect_with_a_wrong_password_is_a_config_error_at_once(
    server: RedisServer, scanner: SecretScanner
) -> None:
    """connect() raises ConfigError on the first AUTH, without retrying, and redacts it."""
    wrong = scanner.new("password")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="rejected the credentials") as info:
        redisguard.connect(_with_credentials(server, f":{wrong}"), wait=5.0)
    # wait=5 retries transient errors for up to 5 s; a wrong password is not one.
    assert time.perf_counter() - started < 0.5
    scanner.scan("error message", str(info.value))
    assert ":***@" in str(info.value)


async def test_aconnect_with_a_wrong_password_is_a_config_error_at_once(
    server: RedisServer, scanner: SecretScanner
) -> None:
    """The asyncio twin fails the same way, just as fast."""
    wrong = scanner.new("password")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="rejected the credentials") as info:
        await redisguard.aconnect(_with_credentials(server, f":{wrong}"))
    assert time.perf_counter() - started < 0.5
    scanner.scan("error message", str(info.value))


async def test_aconnect_wait_with_a_wrong_password_is_a_config_error(
    server: RedisServer, scanner: SecretScanner
) -> None:
    """With wait=, aconnect() still reports a wrong password as ConfigError at once."""
    wrong = scanner.new("password")
    started = time.perf_counter()
    with pytest.raises(ConfigError, match="rejected the credentials"):
        await redisguard.aconnect(_with_credentials(server, f":{wrong}"), wait=5.0)
    assert time.perf_counter() - started < 0.5  # not retried for the whole wait


def test_acl_user_with_a_wrong_password_is_a_config_error(
    server: RedisServer, scanner: SecretScanner
) -> None:
    """An ACL user's wrong password is reported like requirepass's; the right one works."""
    user_password = scanner.new("password")
    with redis.Redis(**server.client_kwargs()) as admin:
        admin.execute_command("ACL", "SETUSER", "app", "on", f">{user_password}", "~*", "+@all")
    wrong = scanner.new("password")
    with pytest.raises(ConfigError) as info:
        redisguard.connect(_with_credentials(server, f"app:{wrong}"))
    scanner.scan("error message", str(info.value))
    assert "app:***@" in str(info.value)
    client = redisguard.connect(_with_credentials(server, f"app:{user_password}"), breakers=[])
    try:
        assert client.ping()
    finally:
        client.close()


def test_wrong_password_is_not_retried_logged_every_attempt_and_trips_the_breaker(
    server: RedisServer,
    scanner: SecretScanner,
    spans: tuple[TracerProvider, InMemorySpanExporter],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Each guarded call makes exactly 1 attempt and logs ERROR category="config"; after
    failure_threshold calls the breaker opens (MISCONFIGURED counts), and each trial call
    after reset_timeout logs ERROR again, so the fallback never hides it."""
    caplog.set_level(logging.DEBUG, logger="redisguard")
    provider, exporter = spans
    breaker = Breaker(
        "acl", BreakerConfig(failure_threshold=3, reset_timeout=0.3, half_open_max_attempts=1)
    )
    wrong = scanner.new("password")
    client = redisguard.connect(
        _with_credentials(server, f":{wrong}"), check=False, breakers=[breaker], prober=False
    )
    attempts = 0

    @redisguard.redis_guarded(
        name="acl.get",
        fallback="fallback",
        breaker=breaker,
        retry=RetryPolicy(attempts=5),
        tracer_provider=provider,
    )
    def get(key: str) -> bytes | str | None:
        nonlocal attempts
        attempts += 1
        return client.get(key)

    sessions = SessionStore(
        client, breaker=breaker, retry=RetryPolicy(attempts=5), tracer_provider=provider
    )
    session_id = scanner.new("session id")
    try:
        for call in range(1, 3):
            assert get(f"session:{session_id}") == "fallback"  # the fallback answers...
            assert attempts == call  # ...after exactly one attempt
            assert len(_config_records(caplog)) == call  # ...and ERROR says why, each time
        with pytest.raises(StoreUnavailableError) as info:
            sessions.set(session_id, {"user": 1})
        assert info.value.attempts == 1
        assert len(_config_records(caplog)) == 3
        assert breaker.current_state == "open"

        # Open: answered without I/O, so nothing new to log at ERROR...
        assert sessions.get(session_id) is None
        assert len(_config_records(caplog)) == 3
        # ...until reset_timeout: the trial call fails the same way and says so again.
        time.sleep(0.35)
        assert get(f"session:{session_id}") == "fallback"
        assert attempts == 3
        assert len(_config_records(caplog)) == 4
        assert breaker.current_state == "open"

        record = _config_records(caplog)[-1]
        assert record.error_type == "redis.exceptions.AuthenticationError"  # type: ignore[attr-defined]
        body = readiness(client, breakers=[breaker]).as_dict(details=True)
        scanner.scan("readiness body", repr(body))
        assert body["status"] == "degraded"
        scanner.scan("error message", str(info.value))
        assert _scan_spans(scanner, exporter) >= 4
    finally:
        client.close()


def test_acl_permission_denied_is_misconfigured_not_retried(
    server: RedisServer,
    scanner: SecretScanner,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A user without access to the store's keys gets NOPERM: one attempt, ERROR "config"."""
    caplog.set_level(logging.DEBUG, logger="redisguard")
    user_password = scanner.new("password")
    with redis.Redis(**server.client_kwargs()) as admin:
        admin.execute_command(
            "ACL", "SETUSER", "narrow", "on", f">{user_password}", "~other:*", "+@all"
        )
    breaker = Breaker("acl-noperm", BreakerConfig(failure_threshold=5))
    client = redisguard.connect(
        _with_credentials(server, f"narrow:{user_password}"), breakers=[breaker], prober=False
    )
    try:
        sessions = SessionStore(client, breaker=breaker, retry=RetryPolicy(attempts=4))
        session_id = scanner.new("session id")
        with pytest.raises(StoreUnavailableError) as info:
            sessions.set(session_id, {"user": 1})
        assert info.value.attempts == 1
        assert isinstance(info.value, RedisUnavailableError)
        [record] = _config_records(caplog)
        assert record.error_type == "redis.exceptions.NoPermissionError"  # type: ignore[attr-defined]
        assert redisguard.classify_error(redis.exceptions.NoPermissionError()) is (
            ErrorKind.MISCONFIGURED
        )
        assert breaker.stats().failure_count == 1
        scanner.scan("error message", str(info.value))
    finally:
        client.close()
