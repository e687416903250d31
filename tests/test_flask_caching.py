"""The Flask-Caching backend against a real redis-server that dies and returns."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from flask import Flask
from flask_caching import Cache

from redisguard import BreakerConfig, RetryPolicy, connect, get_breaker
from redisguard.flask_caching import RedisCache
from redisguard.testing import RedisServer

FAST = RetryPolicy(attempts=2, backoff=0.001, max_backoff=0.002, jitter=0.0, deadline=0.3)


@pytest.fixture
def server() -> Iterator[RedisServer]:
    get_breaker("redis", BreakerConfig(failure_threshold=3, reset_timeout=60))
    with RedisServer() as srv:
        yield srv


def _app(server: RedisServer) -> tuple[Flask, Cache, list[int]]:
    app = Flask("cached")
    cache = Cache(
        app,
        config={
            "CACHE_TYPE": "redisguard.flask_caching.RedisCache",
            "CACHE_REDIS_URL": server.url,
            "CACHE_KEY_PREFIX": "fc:",
            "CACHE_DEFAULT_TIMEOUT": 60,
            "CACHE_OPTIONS": {"retry": FAST, "connect": {"prober": False}},
        },
    )
    calls: list[int] = []

    @app.get("/slow")
    @cache.cached()
    def slow() -> str:
        calls.append(1)
        return f"computed {len(calls)}"

    return app, cache, calls


def test_same_results_as_flask_caching_on_a_healthy_server(server: RedisServer) -> None:
    """get/set/add/has/many/inc/dec/delete/clear answer as Flask-Caching's RedisCache does."""
    app, cache, calls = _app(server)
    with app.app_context():
        backend = cache.cache
        assert isinstance(backend, RedisCache)
        assert cache.set("a", {"x": 1}) is True
        assert cache.get("a") == {"x": 1}
        assert cache.add("a", 2) is False
        assert cache.add("b", 2) is True
        assert cache.has("b") is True
        assert cache.get_many("a", "b", "c") == [{"x": 1}, 2, None]
        assert cache.cache.inc("n") == 1
        assert cache.cache.dec("n", 3) == -2
        assert cache.delete("b") is True
        assert cache.delete("b") is False
        assert cache.clear() is True
        assert cache.get("a") is None
    raw = connect(server.url, prober=False)
    try:
        web = app.test_client()
        assert web.get("/slow").text == "computed 1"
        assert web.get("/slow").text == "computed 1"  # served from Redis
        assert any(key.startswith(b"fc:") for key in raw.scan_iter("*"))
    finally:
        raw.close()
    assert calls == [1]


def test_an_outage_answers_misses_and_false_fast(server: RedisServer) -> None:
    """Down: reads miss, writes say False, views compute; once open, calls take microseconds."""
    app, cache, calls = _app(server)
    web = app.test_client()
    assert web.get("/slow").text == "computed 1"
    server.kill()
    with app.app_context():
        assert cache.get("a") is None
        assert cache.set("a", 1) is False
        assert cache.add("z", 1) is False
        assert cache.get_many("a", "b") == [None, None]
        assert cache.has("a") is False
        assert cache.cache.inc("n") is None
        assert cache.delete("a") is False
        assert cache.delete_many("a", "b") == []
        assert get_breaker("redis").current_state == "open"
        started = time.perf_counter()
        for _ in range(100):
            assert cache.get("a") is None
        assert (time.perf_counter() - started) / 100 < 0.002
    assert web.get("/slow").status_code == 200  # computed again, never a 500
    assert len(calls) == 2
    server.restart()
    get_breaker("redis").reset()
    with app.app_context():
        assert cache.set("a", 1) is True
        assert cache.get("a") == 1


def test_a_host_name_is_refused() -> None:
    """The backend needs a client (or CACHE_REDIS_URL through the factory), not a host name."""
    with pytest.raises(TypeError, match="CACHE_REDIS_URL"):
        RedisCache("localhost")
