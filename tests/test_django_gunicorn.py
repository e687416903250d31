"""The test Django project under gunicorn, over real HTTP, while its Redis dies and returns."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("django")
pytest.importorskip("gunicorn")

import httpx

from redisguard.testing import RedisServer, free_port

TESTS = Path(__file__).resolve().parent


class Gunicorn:
    """``gunicorn -w 2 django_project.wsgi`` in a subprocess, and every status it answered."""

    def __init__(self, redis_url: str) -> None:
        self.port = free_port()
        env = {**os.environ, "REDIS_URL": redis_url, "PYTHONPATH": os.pathsep.join(sys.path)}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "--chdir",
                str(TESTS),
                "--bind",
                f"127.0.0.1:{self.port}",
                "--workers",
                "2",
                "--log-level",
                "warning",
                "django_project.wsgi:application",
            ],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5.0)
        self.statuses: list[int] = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited: {self.proc.stderr.read()!r}")  # type: ignore[union-attr]
            try:
                if self.http.get("/live").status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.05)
        raise RuntimeError("gunicorn did not start")

    def get(self, path: str) -> httpx.Response:
        response = self.http.get(path)
        self.statuses.append(response.status_code)
        return response

    def wait_for(self, path: str, status: int, *, times: int = 4, timeout: float = 15.0) -> bool:
        """Until ``times`` answers in a row have ``status`` (each worker has its breaker)."""
        deadline, streak = time.monotonic() + timeout, 0
        while time.monotonic() < deadline:
            streak = streak + 1 if self.get(path).status_code == status else 0
            if streak >= times:
                return True
            time.sleep(0.05)
        return False

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()


@pytest.mark.timeout(90)
def test_django_under_gunicorn_degrades_and_recovers() -> None:
    """Kill, restart, pause, resume: sessions go anonymous, saves answer 503, never a 500."""
    with RedisServer() as redis_server:
        app = Gunicorn(redis_server.url)
        try:
            assert app.get("/ready").json()["status"] == "ready"
            assert app.get("/login?name=ada").status_code == 200
            assert app.get("/session").json()["name"] == "ada"
            assert app.get("/page").status_code == 200

            redis_server.kill()
            anonymous = app.get("/session")
            assert anonymous.status_code == 200
            assert anonymous.json()["name"] is None
            refused = app.get("/login?name=eve")
            assert refused.status_code == 503
            assert int(refused.headers["retry-after"]) >= 1
            assert app.get("/page").status_code == 200
            assert app.get("/counter").status_code == 200
            assert app.wait_for("/ready", 503)
            body = app.get("/ready").json()
            assert body["checks"]["redis"]["state"] == "open"
            assert "target" not in body["checks"]["redis"]
            assert app.get("/live").status_code == 200

            redis_server.restart()
            assert app.wait_for("/ready", 200)
            assert app.get("/login?name=grace").status_code == 200
            assert app.get("/session").json()["name"] == "grace"

            redis_server.pause()
            try:
                assert app.get("/session").json()["name"] is None
                assert app.get("/login?name=eve").status_code == 503
                assert app.wait_for("/ready", 503)
            finally:
                redis_server.resume()
            assert app.wait_for("/ready", 200)
            assert app.get("/session").json()["name"] == "grace"
        finally:
            app.close()
    assert 500 not in app.statuses
    assert all(status < 500 or status == 503 for status in app.statuses)
