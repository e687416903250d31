"""redisguard.fastapi against a real redis-server: lifespan, dependencies, probes, errors."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request, Response

from redisguard import BreakerConfig, get_breaker
from redisguard.asgi import RATE_LIMIT_BODY, UNAVAILABLE_BODY
from redisguard.fastapi import (
    Client,
    Limiter,
    RateLimit,
    Redisguard,
    Registry,
    Sessions,
    Tokens,
    guarded,
)
from redisguard.testing import RedisServer


@pytest.fixture
def server() -> Iterator[RedisServer]:
    get_breaker("redis", BreakerConfig(failure_threshold=5, reset_timeout=60))
    with RedisServer() as srv:
        yield srv


def _app(guard: Redisguard) -> FastAPI:
    app = FastAPI(lifespan=guard.lifespan)
    guard.install(app)

    @app.get("/sessions/{sid}", dependencies=[RateLimit])
    async def get_session(sid: str, sessions: Sessions) -> dict[str, Any]:
        found = await sessions.lookup(sid)
        return {"value": found.value, "degraded": found.degraded}

    @app.put("/tokens/{tid}", status_code=204)
    async def put_token(tid: str, tokens: Tokens) -> Response:
        await tokens.save(tid, "secret-value", ttl=60)
        return Response(status_code=204)

    @app.get("/clients/{cid}")
    async def get_client(cid: str, registry: Registry) -> Any:
        return await registry.get(cid)

    @app.get("/limit")
    async def limit(limiter: Limiter, client: Client) -> dict[str, Any]:
        return {"limit": limiter.limit, "pong": await client.ping()}

    return app


@contextlib.contextmanager
def serve(app: FastAPI, *, lifespan: str = "on") -> Iterator[httpx.Client]:
    """Serve ``app`` with uvicorn in a thread on a free loopback port (real HTTP).

    (Starlette's TestClient is not used: newer Starlette deprecates it over httpx.)
    """
    # The listening socket is ours, closed here: uvicorn 0.30 (the lowest supported) does not
    # always close the one it binds, and the garbage collector then reports it in a later test.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        lifespan=lifespan,
        log_level="warning",
        log_config=None,  # uvicorn's records reach pytest's caplog
        ws="none",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0) as web:
            yield web
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def _guard(server: RedisServer, **options: Any) -> Redisguard:
    return Redisguard(server.url, connect={"prober": False, "check": False}, **options)


def test_lifespan_dependencies_and_probes(server: RedisServer) -> None:
    """The client lives for the lifespan; /ready says only status and state; not in OpenAPI."""
    guard = _guard(server, rate_limit=3)
    with serve(_app(guard)) as web:
        assert web.get("/limit").json() == {"limit": 3, "pong": True}
        ready = web.get("/ready")
        assert (ready.status_code, ready.headers["cache-control"]) == (200, "no-store")
        assert ready.json() == {
            "status": "ready",
            "checks": {"redis": {"healthy": True, "state": "closed", "write_state": "closed"}},
        }
        assert web.get("/live").json() == {"status": "alive"}
        paths = web.get("/openapi.json").json()["paths"]
        assert "/ready" not in paths
        assert "/sessions/{sid}" in paths
        server.kill()
        down = web.get("/ready")
        assert down.status_code == 503
        assert str(server.port) not in down.text
        assert "Error" not in down.text
        assert web.get("/live").status_code == 200
    with serve(_app(_guard(server, details=True))) as web:
        detailed = web.get("/ready").json()
        assert str(server.port) in detailed["checks"]["redis"]["target"]
        assert "Error" in detailed["checks"]["redis"]["error"]


def test_outage_is_a_503_with_retry_after(server: RedisServer) -> None:
    """A store error in any route becomes 503 + Retry-After through the installed handler."""
    with serve(_app(_guard(server))) as web:
        assert web.put("/tokens/t").status_code == 204
        server.kill()
        for response in (web.put("/tokens/t"), web.get("/clients/c")):
            assert response.status_code == 503
            assert response.json() == UNAVAILABLE_BODY
            assert int(response.headers["retry-after"]) >= 1


def test_lookup_is_degraded_from_the_first_fallback(server: RedisServer) -> None:
    """A paused Redis: the first lookup already says degraded while the breaker is closed."""
    with serve(_app(_guard(server, rate_limit=100, on_unavailable="local"))) as web:
        assert web.get("/sessions/nobody").json() == {"value": None, "degraded": False}
        server.pause()
        try:
            assert web.get("/sessions/s").json() == {"value": None, "degraded": True}
            assert get_breaker("redis").current_state == "closed"
        finally:
            server.resume()


def test_rate_limit_dependency(server: RedisServer) -> None:
    """RateLimit answers 429 with the seed body; a None key and exempt paths are not limited."""
    guard = _guard(server, rate_limit=2, key=lambda scope: scope["path_params"].get("sid"))
    with serve(_app(guard)) as web:
        answers = [web.get("/sessions/a").status_code for _ in range(3)]
        assert answers == [200, 200, 429]
        denied = web.get("/sessions/a")
        assert denied.content == RATE_LIMIT_BODY
        assert int(denied.headers["retry-after"]) >= 1
        assert web.get("/sessions/b").status_code == 200  # its own key


def test_misuse_is_named(server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    """Bad arguments, a missing lifespan or limiter say what is wrong."""
    with pytest.raises(ValueError, match="rate_limit"):
        Redisguard(rate_limit=-1)
    with pytest.raises(TypeError, match="key"):
        Redisguard(key="ip")  # type: ignore[arg-type]
    with pytest.raises(RuntimeError, match="lifespan"):
        guarded(Request({"type": "http", "state": {}}))
    with serve(_app(_guard(server)), lifespan="off") as web:
        assert web.get("/clients/c").status_code == 500
    assert "FastAPI(lifespan=guard.lifespan)" in caplog.text
    with serve(_app(_guard(server))) as web:
        assert web.get("/clients/c").json() is None
        # Last: uvicorn closes the connection after an unhandled error.
        assert web.get("/limit").status_code == 500
    assert "Redisguard(rate_limit=...)" in caplog.text
