"""The example services, driven over real HTTP while their own redis-server dies and returns."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from _services import ROOT, ServerProcess, uvicorn_argv

from redisguard import BreakerConfig, connect, get_breaker
from redisguard.asgi import RATE_LIMIT_BODY
from redisguard.testing import RedisServer

sys.path.insert(0, str(ROOT))


#: The ASGI examples, each served by uvicorn: the same routes, the same behaviour.
APPS = {
    "starlette": "examples.asgi_service:create_app",
    "fastapi": "examples.fastapi_service:create_app",
}


class Service:
    """An ASGI example under uvicorn in a subprocess, plus every status it answered."""

    def __init__(
        self,
        app: str,
        redis_url: str,
        policy: str,
        log_path: Path,
        limit: int = 5,
        threshold: int = 2,
    ) -> None:
        env = {
            "REDIS_URL": redis_url,
            "RATE_LIMIT": str(limit),
            "RATE_WINDOW": "60",
            "RATE_POLICY": policy,
            "REDIS_CIRCUIT_BREAKER_FAILURE_THRESHOLD": str(threshold),
            # A minute: only the recovery prober can bring /ready back within the test.
            "REDIS_CIRCUIT_BREAKER_RESET_TIMEOUT": "60000",
        }
        self.server = ServerProcess(uvicorn_argv(app), env, log_path, startup_timeout=15)
        self.http = self.server.http
        self.statuses: list[int] = []

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        # Each request gets its own rate-limit budget unless the test names a client.
        kwargs.setdefault("headers", {"x-client-id": f"request-{len(self.statuses)}"})
        response = self.http.request(method, path, **kwargs)
        self.statuses.append(response.status_code)
        return response

    def wait_for(self, path: str, status: int, timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.request("GET", path).status_code == status:
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.server.close()


@pytest.fixture(params=sorted(APPS))
def start_service(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., Service]]:
    """Starts the example named by the parameter (every test runs against each ASGI app)."""
    started: list[Service] = []

    def start(redis_url: str, policy: str, limit: int = 5, threshold: int = 2) -> Service:
        log = tmp_path / f"uvicorn-{len(started)}.log"
        service = Service(APPS[request.param], redis_url, policy, log, limit, threshold)
        started.append(service)
        return service

    yield start
    for service in started:
        service.close()


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"] == "temporarily_unavailable"


@pytest.mark.timeout(90)
def test_asgi_service_degrades_and_recovers(start_service: Callable[..., Service]) -> None:
    """Kill, restart, pause, resume: never a 500; /ready, sessions, registration, limits follow."""
    with RedisServer() as redis_server:
        svc = start_service(redis_server.url, "local")
        assert svc.request("GET", "/ready").status_code == 200
        assert svc.request("PUT", "/sessions/s1", json={"user": "ada"}).status_code == 204
        assert svc.request("GET", "/sessions/s1").json() == {"session": {"user": "ada"}}
        created = svc.request("POST", "/register", json={"redirect_uris": ["https://a/cb"]})
        assert created.status_code == 201
        client_id = created.json()["client_id"]
        assert "client_secret" not in svc.request("GET", f"/clients/{client_id}").json()
        assert (
            svc.request("POST", "/tokens/t1", json={"token": "tok", "ttl": 60}).status_code == 201
        )
        assert svc.request("GET", "/tokens/t1").json()["token"] == "tok"

        # Rate limiting with Redis up: 5 per minute per client id, then the seed's 429.
        limited = [
            svc.request("GET", "/sessions/x", headers={"x-client-id": "a"}) for _ in range(6)
        ]
        assert [r.status_code for r in limited] == [404] * 5 + [429]
        assert limited[-1].content == RATE_LIMIT_BODY
        assert int(limited[-1].headers["retry-after"]) >= 1

        # -- outage: SIGKILL -----------------------------------------------------------------
        redis_server.kill()
        lookup = svc.request("GET", "/sessions/s1")
        assert lookup.status_code == 404  # the documented degradation: "not found"
        assert svc.wait_for("/ready", 503)
        ready = svc.request("GET", "/ready").json()
        assert ready["status"] == "degraded"
        assert ready["checks"]["redis"]["state"] == "open"
        assert svc.request("GET", "/sessions/s1").json()["degraded"] is True
        _assert_unavailable(svc.request("PUT", "/sessions/s1", json={"user": "bob"}))
        _assert_unavailable(svc.request("POST", "/register", json={"redirect_uris": ["https://b"]}))
        _assert_unavailable(svc.request("GET", "/tokens/t1"))
        assert svc.request("GET", "/live").status_code == 200
        # on_unavailable="local": still 5 per client, counted in-process.
        local = [svc.request("GET", "/sessions/y", headers={"x-client-id": "b"}) for _ in range(6)]
        assert [r.status_code for r in local] == [404] * 5 + [429]

        # -- recovery: the prober half-opens the breaker, /ready's PING closes it ----------
        redis_server.restart()
        assert svc.wait_for("/ready", 200, timeout=15)
        created = svc.request("POST", "/register", json={"redirect_uris": ["https://c/cb"]})
        assert created.status_code == 201
        assert svc.request("PUT", "/sessions/s2", json={"n": 2}).status_code == 204
        assert svc.request("GET", "/sessions/s2").status_code == 200

        # -- outage: SIGSTOP (replies never come; socket timeouts) ---------------------------
        redis_server.pause()
        try:
            assert svc.request("GET", "/sessions/s2").status_code == 404
            _assert_unavailable(svc.request("POST", "/register", json={"redirect_uris": ["x"]}))
            assert svc.wait_for("/ready", 503)
        finally:
            redis_server.resume()
        assert svc.wait_for("/ready", 200, timeout=15)
        assert svc.request("GET", "/sessions/s2").json() == {"session": {"n": 2}}

    assert 500 not in svc.statuses
    assert all(status < 500 or status == 503 for status in svc.statuses)


@pytest.mark.timeout(60)
def test_asgi_service_says_degraded_from_the_first_fallback(
    start_service: Callable[..., Service],
) -> None:
    """The first lookups of an outage (breaker still closed) already answer "degraded": true."""
    with RedisServer() as redis_server:
        # The default threshold (5): each paused lookup fails twice (0.25 s timeouts within the
        # 0.5 s retry deadline), so the first two fall back while the breaker is still closed.
        svc = start_service(redis_server.url, "open", limit=100, threshold=5)
        assert svc.request("PUT", "/sessions/s1", json={"user": "ada"}).status_code == 204
        missing = svc.request("GET", "/sessions/nobody")
        assert missing.json() == {"error": "session_not_found", "degraded": False}
        redis_server.pause()
        try:
            for _ in range(3):
                lookup = svc.request("GET", "/sessions/s1")
                assert lookup.status_code == 404
                assert lookup.json() == {"error": "session_not_found", "degraded": True}
        finally:
            redis_server.resume()


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("policy", "expected"), [("open", 404), ("closed", 429)])
def test_rate_limit_policy_during_an_outage(
    start_service: Callable[..., Service], policy: str, expected: int
) -> None:
    """With Redis down, "open" lets every request through and "closed" answers 429."""
    with RedisServer() as redis_server:
        svc = start_service(redis_server.url, policy, limit=2)
        redis_server.kill()
        answers = [
            svc.request("GET", "/sessions/z", headers={"x-client-id": "c"}) for _ in range(6)
        ]
        assert {r.status_code for r in answers} == {expected}
        if expected == 429:
            assert answers[0].content == RATE_LIMIT_BODY
            assert "retry-after" in answers[0].headers


def test_wsgi_service_with_flask_test_client() -> None:
    """The Flask example degrades the same way: 404 lookups, 503 writes, /ready 503 -> 200."""
    from examples.wsgi_service import create_app

    get_breaker("redis", BreakerConfig(failure_threshold=2, reset_timeout=60))
    with RedisServer() as redis_server:
        client = connect(redis_server.url)
        try:
            web = create_app(client, rate_limit=3, window=60).test_client()
            assert web.get("/ready").status_code == 200
            assert web.put("/sessions/a", json={"v": 1}).status_code == 204
            assert web.get("/sessions/a").get_json() == {"session": {"v": 1}}
            assert web.post("/register", json={"redirect_uris": ["https://a"]}).status_code == 201
            limited = [web.get("/sessions/q", headers={"x-client-id": "k"}) for _ in range(4)]
            assert [r.status_code for r in limited] == [404, 404, 404, 429]
            assert limited[-1].data == RATE_LIMIT_BODY
            nobody = web.get("/sessions/nobody", headers={"x-client-id": "n"})
            assert nobody.get_json()["degraded"] is False
            redis_server.kill()
            # The breaker is still closed after this read (one failure of two).
            first = web.get("/sessions/a", headers={"x-client-id": "f"})
            assert (first.status_code, first.get_json()["degraded"]) == (404, True)
            failed = web.put("/sessions/a", json={"v": 2})
            assert failed.status_code == 503
            assert failed.headers["Retry-After"]
            assert web.post("/register", json={}).status_code == 503
            assert web.get("/ready").status_code == 503
            assert web.get("/live").status_code == 200
            redis_server.restart()
            deadline = time.monotonic() + 10
            while web.get("/ready").status_code != 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert web.get("/ready").status_code == 200
            assert web.put("/sessions/a", json={"v": 3}).status_code == 204
        finally:
            client.close()
