"""redisguard.flask against a real redis-server: probes, error handlers, limits, lookups."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask, jsonify

from redisguard import BreakerConfig, get_breaker
from redisguard._client import GuardedRedis
from redisguard.asgi import RATE_LIMIT_BODY, UNAVAILABLE_BODY
from redisguard.flask import (
    Redisguard,
    guarded,
    limiter,
    rate_limit,
    registry,
    sessions,
    tokens,
)
from redisguard.testing import RedisServer


@pytest.fixture
def client_breaker() -> BreakerConfig:
    """The Flask tests open the shared breaker after 5 failures (conftest's ``client``)."""
    return BreakerConfig(failure_threshold=5, reset_timeout=60)


def _app(**options: Any) -> Flask:
    app = Flask("flask_test")
    Redisguard(app, **options)

    @app.get("/sessions/<sid>")
    def get_session(sid: str) -> Any:
        found = sessions().lookup(sid)
        return jsonify(value=found.value, degraded=found.degraded)

    @app.put("/tokens/<tid>")
    def put_token(tid: str) -> Any:
        tokens().save(tid, "secret-value", ttl=60)
        return "", 204

    @app.get("/clients/<cid>")
    def get_client(cid: str) -> Any:
        return jsonify(registry().get(cid))

    return app


def test_probes_say_only_status_and_state_unless_details(
    client: GuardedRedis, server: RedisServer
) -> None:
    """/ready names no host or error by default; details=True does; /live stays 200."""
    web = _app(client=client).test_client()
    ready = web.get("/ready")
    assert (ready.status_code, ready.headers["Cache-Control"]) == (200, "no-store")
    assert ready.get_json() == {
        "status": "ready",
        "checks": {"redis": {"healthy": True, "state": "closed", "write_state": "closed"}},
    }
    assert web.get("/live").get_json() == {"status": "alive"}
    server.kill()
    down = web.get("/ready")
    assert down.status_code == 503
    assert str(server.port) not in down.get_data(as_text=True)
    assert "Error" not in down.get_data(as_text=True)
    assert web.get("/live").status_code == 200
    detailed = _app(client=client, details=True).test_client().get("/ready").get_json()
    assert str(server.port) in detailed["checks"]["redis"]["target"]
    assert "Error" in detailed["checks"]["redis"]["error"]
    assert "version" in detailed


def test_outage_is_a_503_with_retry_after(client: GuardedRedis, server: RedisServer) -> None:
    """A store error in any view becomes 503 + Retry-After, never a 500."""
    web = _app(client=client).test_client()
    assert web.put("/tokens/t").status_code == 204
    server.kill()
    for response in (web.put("/tokens/t"), web.get("/clients/c")):
        assert response.status_code == 503
        assert response.get_json() == UNAVAILABLE_BODY
        assert int(response.headers["Retry-After"]) >= 1


def test_lookup_is_degraded_from_the_first_fallback(
    client: GuardedRedis, server: RedisServer
) -> None:
    """A paused Redis: the first lookup already says degraded while the breaker is closed."""
    web = _app(client=client).test_client()
    assert web.get("/sessions/nobody").get_json() == {"value": None, "degraded": False}
    server.pause()
    try:
        assert web.get("/sessions/s").get_json() == {"value": None, "degraded": True}
        assert get_breaker("redis").current_state == "closed"
    finally:
        server.resume()


def test_every_request_but_the_probes_is_limited(client: GuardedRedis) -> None:
    """rate_limit= limits each client; the probes are never limited; 429 has the seed body."""
    web = _app(client=client, rate_limit=2, window=60).test_client()
    answers = [web.get("/sessions/x").status_code for _ in range(3)]
    assert answers == [200, 200, 429]
    denied = web.get("/sessions/x")
    assert denied.data == RATE_LIMIT_BODY
    assert int(denied.headers["Retry-After"]) >= 1
    assert {web.get("/ready").status_code for _ in range(4)} == {200}


def test_per_view_limits(client: GuardedRedis) -> None:
    """limit_every_request=False: only views calling rate_limit() are limited, by their key."""
    app = _app(client=client, rate_limit=1, window=60, limit_every_request=False)

    @app.get("/limited")
    def limited() -> Any:
        decision = rate_limit("fixed-key")
        assert decision is not None
        return jsonify(remaining=decision.remaining, limit=limiter().limit)

    web = app.test_client()
    assert web.get("/limited").get_json() == {"remaining": 0, "limit": 1}
    assert web.get("/limited").status_code == 429
    assert {web.get("/sessions/x").status_code for _ in range(3)} == {200}


def test_url_from_the_app_config(server: RedisServer) -> None:
    """Without url= or client=, REDISGUARD_URL from app.config is used."""
    app = Flask("configured")
    app.config["REDISGUARD_URL"] = server.url
    Redisguard(app, connect={"prober": False})
    with app.app_context():
        try:
            assert guarded().client.ping() is True
        finally:
            guarded().client.close()


def test_misuse_is_named(client: GuardedRedis) -> None:
    """Bad arguments, a second init_app, and use without the extension say what is wrong."""
    with pytest.raises(ValueError, match="rate_limit"):
        Redisguard(rate_limit=0)
    with pytest.raises(TypeError, match="key"):
        Redisguard(key="ip")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="client= or url="):
        Redisguard(client=client, url="redis://127.0.0.1:1")
    app = _app(client=client)
    with pytest.raises(RuntimeError, match="already set up"):
        Redisguard(app, client=client)
    with app.app_context(), pytest.raises(RuntimeError, match="no limiter"):
        limiter()
    with Flask("bare").app_context(), pytest.raises(RuntimeError, match="not set up"):
        sessions()
