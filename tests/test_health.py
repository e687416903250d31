"""Readiness and liveness: breaker state plus a live PING, and the ASGI endpoints."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from _refusals import failed_save

from redisguard import BreakerConfig, get_breaker
from redisguard._client import aconnect, connect
from redisguard.asgi import health_app
from redisguard.health import areadiness, liveness, readiness
from redisguard.testing import RedisServer


@pytest.fixture
def server() -> Iterator[RedisServer]:
    with RedisServer(password="pw-s3cret") as srv:
        yield srv


def test_ready_then_degraded_then_ready(server: RedisServer) -> None:
    """200 with a latency while Redis answers, 503 with the failure, 200 again after recovery."""
    breaker = get_breaker("redis", BreakerConfig(failure_threshold=2, reset_timeout=60))
    client = connect(server.url)
    try:
        ok = readiness(client)
        assert (ok.status, ok.http_status) == ("ready", 200)
        check = ok.checks["redis"]
        assert check["healthy"] is True
        assert check["state"] == "closed"
        assert check["latency_ms"] >= 0
        server.kill()
        bad = readiness(client)
        assert (bad.status, bad.http_status) == ("degraded", 503)
        assert bad.checks["redis"]["error"].startswith("ConnectionError")
        assert bad.checks["redis"]["last_failure"] is not None
        readiness(client)
        assert breaker.current_state == "open"
        opened = readiness(client).checks["redis"]
        assert opened["next_retry"] is not None
        assert opened["latency_ms"] is None
        server.restart()
        for _ in range(200):
            if readiness(client).http_status == 200:
                break
            time.sleep(0.05)
        assert readiness(client).http_status == 200
        assert breaker.current_state == "closed"
        body = json.dumps(readiness(client).as_dict(details=True))
        assert "pw-s3cret" not in body
        assert "***" in body
    finally:
        client.close()


def test_default_body_says_only_status_and_breaker_state(server: RedisServer) -> None:
    """Without details the body names no host, port, error or version; details=True does."""
    get_breaker("redis", BreakerConfig(failure_threshold=1, reset_timeout=60))
    client = connect(server.url)
    try:
        server.kill()
        result = readiness(client)
        public = result.as_dict()
        assert public == {
            "status": "degraded",
            "checks": {"redis": {"healthy": False, "state": "open", "write_state": "closed"}},
        }
        text = json.dumps(public)
        assert str(server.port) not in text
        assert "127.0.0.1" not in text
        detailed = result.as_dict(details=True)
        assert detailed["version"]
        assert f"127.0.0.1:{server.port}" in detailed["checks"]["redis"]["target"]
        assert "ConnectionError" in detailed["checks"]["redis"]["error"]
        assert liveness().as_dict() == {"status": "alive"}
        assert "version" in liveness().as_dict(details=True)
    finally:
        client.close()


def test_liveness_never_touches_redis() -> None:
    """Liveness is 200 without any client or server."""
    live = liveness()
    assert (live.status, live.http_status) == ("alive", 200)


def test_readiness_without_a_client_reports_breakers() -> None:
    """With no client, readiness reports breaker state only, and an open breaker is 503."""
    breaker = get_breaker("cache", BreakerConfig())
    assert readiness(breakers=["cache"]).http_status == 200
    breaker.open()
    result = readiness(breakers=["cache"])
    assert result.http_status == 503
    assert result.checks["cache"]["state"] == "open"


async def test_async_readiness_and_asgi_endpoints(server: RedisServer) -> None:
    """areadiness cuts the PING at its timeout; /ready and /live are served as JSON."""
    get_breaker("redis", BreakerConfig(failure_threshold=5, reset_timeout=60))
    client = await aconnect(server.url, socket_timeout=5)
    app = health_app(client, timeout=0.2)

    async def get(path: str) -> tuple[int, dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: Any) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request"}

        await app({"type": "http", "path": path, "method": "GET"}, receive, send)
        return sent[0]["status"], json.loads(sent[1]["body"])

    try:
        status, body = await get("/ready")
        assert (status, body["status"]) == (200, "ready")
        assert body["checks"] == {
            "redis": {"healthy": True, "state": "closed", "write_state": "closed"}
        }
        app.details = True
        assert str(server.port) in (await get("/ready"))[1]["checks"]["redis"]["target"]
        app.details = False
        server.pause()
        try:
            result = await areadiness(client, timeout=0.2)
            assert result.http_status == 503
            assert "TimeoutError" in result.checks["redis"]["error"]
            assert (await get("/live"))[0] == 200
            assert (await get("/ready"))[0] == 503
        finally:
            server.resume()
        assert (await get("/ready"))[0] == 200
        assert (await get("/nope"))[0] == 404
    finally:
        await client.aclose()


def test_readiness_after_a_failed_save_opens_only_the_write_side() -> None:
    """MISCONF refuses PING too: readiness reports the write side open, stays ready (200), and
    does not open the main side (reads go on)."""
    with RedisServer(args=["--enable-protected-configs", "yes"]) as srv:
        breaker = get_breaker("redis", BreakerConfig(failure_threshold=1, reset_timeout=60))
        client = connect(srv.url, prober=False)
        try:
            with failed_save(srv):
                result = readiness(client)
                assert breaker.current_state == "closed"
                assert (result.status, result.http_status) == ("ready", 200)
                check = result.checks["redis"]
                assert check["healthy"] is True
                assert check["write_state"] == "open"
                assert check["write_cause"] == "MISCONF"
                assert check["write_next_retry"] is not None
                assert "writes refused" in check["note"]
                assert result.as_dict()["writes_refused"] == ["redis"]
                assert client.get("k") is None  # reads still reach Redis
        finally:
            client.close()


async def test_areadiness_after_a_failed_save_opens_only_the_write_side() -> None:
    """The asyncio probe reads a MISCONF PING the same way."""
    with RedisServer(args=["--enable-protected-configs", "yes"]) as srv:
        breaker = get_breaker("redis", BreakerConfig(failure_threshold=1, reset_timeout=60))
        client = await aconnect(srv.url, prober=False)
        try:
            with failed_save(srv):
                result = await areadiness(client)
                assert breaker.current_state == "closed"
                assert result.http_status == 200
                assert result.checks["redis"]["write_state"] == "open"
        finally:
            await client.aclose()
