"""Web servers (uvicorn, gunicorn) running the examples in a subprocess, for the HTTP tests.

Each server runs in its own session (process group), with a free loopback port and its
output in a log file; :meth:`ServerProcess.close` ends the whole group (the master and every
worker it forked or spawned) by the group id of the process the test started, never by name.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

from redisguard.testing import free_port

ROOT = Path(__file__).resolve().parent.parent
TESTS = ROOT / "tests"


class ServerProcess:
    """A web server started with ``argv`` (``{port}`` replaced), serving once ``ready_path`` does.

    Args:
        argv: The command; ``{port}`` in an item is replaced by a free loopback port.
        env: Variables added to this process's environment.
        log_path: Where the server's stdout and stderr go (read back on a failed start).
        ready_path: Polled until it answers 200.
        startup_timeout: Seconds to wait for that.
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        ready_path: str = "/live",
        startup_timeout: float = 20.0,
    ) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        command = [item.replace("{port}", str(self.port)) for item in argv]
        paths = (str(TESTS), str(ROOT), os.environ.get("PYTHONPATH"))
        path = os.pathsep.join(p for p in paths if p)
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, "PYTHONPATH": path, **env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: close() ends every worker
            )
        self.http = httpx.Client(base_url=self.base_url, timeout=5.0)
        deadline = time.monotonic() + startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"{command[:3]} exited at start-up: {self.log_tail()}")
            try:
                if self.http.get(ready_path).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.close()
        raise RuntimeError(f"{command[:3]} did not start: {self.log_tail()}")

    def log_tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def close(self) -> None:
        """SIGTERM the server's process group, SIGKILL it if it outlives 10 s."""
        self.http.close()
        if self.proc.poll() is None or _group_alive(self.proc.pid):
            _signal_group(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            deadline = time.monotonic() + 10
            while _group_alive(self.proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _group_alive(self.proc.pid):
                _signal_group(self.proc.pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - a group we started is ours
        return True
    return True


def uvicorn_argv(app: str, *, workers: int | None = None, factory: bool = True) -> list[str]:
    """``python -m uvicorn APP`` on 127.0.0.1:{port}, quiet, lifespan on, no websockets."""
    argv = [sys.executable, "-m", "uvicorn", app]
    if factory:
        argv.append("--factory")
    argv += ["--host", "127.0.0.1", "--port", "{port}", "--log-level", "warning"]
    argv += ["--lifespan", "on", "--ws", "none"]
    if workers is not None:
        argv += ["--workers", str(workers)]
    return argv


def gunicorn_argv(app: str, *, workers: int, preload: bool = False) -> list[str]:
    """``python -m gunicorn APP -w N`` (sync workers) on 127.0.0.1:{port}, quiet; with
    ``preload`` the master loads the app before it forks the workers (``--preload``)."""
    return [
        sys.executable, "-m", "gunicorn", app,
        "--workers", str(workers),
        "--bind", "127.0.0.1:{port}",
        "--log-level", "warning",
        "--graceful-timeout", "5",
        *(["--preload"] if preload else []),
    ]  # fmt: skip
