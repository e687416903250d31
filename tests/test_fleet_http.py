"""A fleet over real HTTP: ``gunicorn -w 8`` (the Flask example; also with ``--preload``) and
``uvicorn --workers 4`` (the Starlette example, spawned workers) with host-shared breakers,
while their redis-server is paused, resumed, killed and restarted.

Every worker answers with an ``x-worker-pid`` header (tests/_fleet_apps.py), so "every
worker" below means every process the server started, each heard from.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from _services import ServerProcess, gunicorn_argv, uvicorn_argv

from redisguard import BreakerConfig
from redisguard.testing import RedisServer

WORKER_HEADER = "x-worker-pid"
SOCKET_TIMEOUT = 0.25  # connect()'s default, which both examples use
SLOW = 0.2  # a request this slow waited on a Redis socket timeout
CONFIG = BreakerConfig()  # both examples' breaker: defaults from the environment


@dataclass(frozen=True)
class Answer:
    """One HTTP exchange."""

    path: str
    start: float  # time.monotonic()
    latency: float
    status: int
    pid: int
    body: Any

    @property
    def end(self) -> float:
        return self.start + self.latency

    @property
    def redis_state(self) -> str | None:
        """The breaker state a /ready answer reports."""
        if not isinstance(self.body, dict):
            return None
        check = self.body.get("checks", {}).get("redis", {})
        return check.get("state") if isinstance(check, dict) else None


class Fleet:
    """HTTP to a multi-worker server: one new connection per request (so the kernel spreads
    them over the workers), every answer kept."""

    def __init__(self, server: ServerProcess, workers: int) -> None:
        self.server = server
        self.workers = workers
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._ids = iter(range(10**9))
        self._local = threading.local()
        self._clients: list[httpx.Client] = []
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="fleet-poll")

    def _client(self) -> httpx.Client:
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is None:
            limits = httpx.Limits(max_keepalive_connections=0)
            client = httpx.Client(base_url=self.server.base_url, timeout=10.0, limits=limits)
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def request(self, method: str, path: str, **kwargs: Any) -> Answer:
        with self._lock:
            client_id = f"fleet-{next(self._ids)}"  # its own rate-limit budget
        headers = {"connection": "close", "x-client-id": client_id}
        client = self._client()  # building one takes a while: not part of the latency
        start = time.monotonic()
        response = client.request(method, path, headers=headers, **kwargs)
        latency = time.monotonic() - start
        try:
            body = response.json()
        except ValueError:
            body = response.text
        answer = Answer(
            path, start, latency, response.status_code, int(response.headers[WORKER_HEADER]), body
        )
        with self._lock:
            self.answers.append(answer)
        return answer

    def every_worker(
        self, path: str, accept: Callable[[Answer], bool], timeout: float
    ) -> dict[int, Answer]:
        """Poll ``path`` from ``workers`` threads at once until every worker's latest answer
        is accepted; return those answers. Fails the test after ``timeout`` seconds."""
        latest: dict[int, Answer] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = self._pool.map(lambda _: self.request("GET", path), range(self.workers))
            for answer in batch:
                if answer.pid not in latest or answer.start > latest[answer.pid].start:
                    latest[answer.pid] = answer
            if len(latest) >= self.workers and all(accept(a) for a in latest.values()):
                assert len(latest) == self.workers, f"more workers than started: {latest}"
                return latest
            time.sleep(0.02)
        refused = {pid: (a.status, a.redis_state) for pid, a in latest.items() if not accept(a)}
        pytest.fail(
            f"{path}: after {timeout} s heard from {len(latest)}/{self.workers} workers; "
            f"not accepted: {refused}"
        )

    def close(self) -> None:
        self._pool.shutdown()
        for client in self._clients:
            client.close()


class Load:
    """``threads`` callers, each GETting a session every ``period`` seconds."""

    def __init__(self, fleet: Fleet, threads: int, period: float = 0.05) -> None:
        self.fleet = fleet
        self.period = period
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                self.fleet.request("GET", "/sessions/fleet")
            except BaseException as exc:  # reported by __exit__
                self.errors.append(exc)
                return
            self.stop.wait(self.period)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(15)
        assert not self.errors, self.errors


def _ready(answer: Answer) -> bool:
    return answer.status == 200 and answer.redis_state == "closed"


def _open_and_fast(answer: Answer) -> bool:
    """/ready says open, at once: the worker rejects instead of waiting on Redis."""
    return answer.status == 503 and answer.redis_state == "open" and answer.latency < SLOW


SERVERS = {
    # name: (argv, workers)
    "gunicorn": (gunicorn_argv("_fleet_apps:wsgi_app()", workers=8), 8),
    # the app, its client and its breaker are built in the master, then forked
    "gunicorn-preload": (gunicorn_argv("_fleet_apps:wsgi_app()", workers=8, preload=True), 8),
    "uvicorn": (uvicorn_argv("_fleet_apps:asgi_app", workers=4), 4),
}


@pytest.fixture
def fleet_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[RedisServer, Fleet]]:
    """A private redis-server and the named server's workers on it, host-shared breakers on."""
    argv, workers = SERVERS[request.param]
    shared_dir = tmp_path / "segments"
    shared_dir.mkdir()
    with RedisServer() as redis_server:
        env = {
            "REDIS_URL": redis_server.url,
            "REDISGUARD_SHARED_BREAKERS": "1",
            "REDISGUARD_SHARED_DIR": str(shared_dir),  # this test's own segments
            "RATE_POLICY": "open",
            "RATE_LIMIT": "1000",
        }
        server = ServerProcess(argv, env, tmp_path / f"{request.param}.log", startup_timeout=30)
        fleet = Fleet(server, workers)
        try:
            yield redis_server, fleet
        finally:
            fleet.close()
            server.close()
            log = server.log_tail(4000)
            assert "Traceback" not in log, log


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fleet_server", list(SERVERS), indirect=True)
def test_the_fleet_trips_and_recovers_together(fleet_server: tuple[RedisServer, Fleet]) -> None:
    """Paused then killed: never a 500, the host's slow requests stay within the threshold
    plus one per worker, every worker reports open at once, and every worker closes again."""
    redis_server, fleet = fleet_server
    workers = fleet.workers
    assert fleet.request("PUT", "/sessions/fleet", json={"n": 1}).status in (200, 204)
    fleet.every_worker("/ready", _ready, timeout=20)  # every worker connected, closed

    # -- pause: replies never come, every call that reaches Redis waits a socket timeout -----
    with Load(fleet, threads=workers):
        time.sleep(0.5)
        fault_at = time.monotonic()
        redis_server.pause()
        try:
            time.sleep(2 * SOCKET_TIMEOUT + 0.1)
            fleet.every_worker("/ready", _open_and_fast, timeout=3)
            opened_at = time.monotonic()
            time.sleep(max(0.0, fault_at + 3.0 - time.monotonic()))
        finally:
            redis_server.resume()
        heal_at = time.monotonic()
        fleet.every_worker("/ready", _ready, timeout=10)
        closed_at = time.monotonic()
    outage = [a for a in fleet.answers if a.end >= fault_at and a.start < heal_at]
    slow = [a for a in outage if a.latency >= SLOW]
    assert len(slow) <= CONFIG.failure_threshold + workers, (
        f"{len(slow)} slow requests across {workers} workers during the pause: "
        f"{sorted((round(a.start - fault_at, 3), a.pid) for a in slow)}"
    )
    sessions = [a for a in outage if a.path == "/sessions/fleet"]
    assert any(a.status == 404 for a in sessions)  # answered by the fallback
    assert opened_at - fault_at < 4.0
    assert closed_at - heal_at < 10.0

    # -- kill and restart on the same port -------------------------------------------------
    with Load(fleet, threads=workers):
        time.sleep(0.3)
        killed_at = time.monotonic()
        redis_server.kill()
        fleet.every_worker("/ready", _open_and_fast, timeout=5)
        redis_server.restart()
        fleet.every_worker("/ready", _ready, timeout=15)
    after_kill = [a for a in fleet.answers if a.start >= killed_at and a.path == "/sessions/fleet"]
    assert any(a.status == 404 for a in after_kill)
    assert fleet.request("GET", "/sessions/fleet").status in (200, 404)  # Redis serves again

    statuses = {(a.path, a.status) for a in fleet.answers}
    assert not [s for s in statuses if s[1] >= 500 and s[0] != "/ready"], statuses
    assert {a.pid for a in fleet.answers} == set(fleet.every_worker("/live", _alive, timeout=5))


def _alive(answer: Answer) -> bool:
    return answer.status == 200
