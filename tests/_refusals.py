"""Helpers that make a real redis-server refuse commands: a busy script, OOM, MISCONF."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis
from redis import exceptions as rx
from redis.backoff import NoBackoff
from redis.retry import Retry

from redisguard.testing import RedisServer

#: Runs for ARGV[1] microseconds without writing anything (so SCRIPT KILL can stop it).
BUSY_LOOP = """
local t0 = redis.call('TIME')
local limit = tonumber(ARGV[1])
while true do
  local t = redis.call('TIME')
  if (t[1] - t0[1]) * 1000000 + (t[2] - t0[2]) >= limit then return 1 end
end
"""


def admin(server: RedisServer, **kwargs: object) -> redis.Redis:
    """A plain client straight to the server (no guard, no retry)."""
    return redis.Redis(**server.client_kwargs(), **kwargs)  # type: ignore[arg-type]


@contextmanager
def slow_script(server: RedisServer, seconds: float, *, busy_after_ms: int = 0) -> Iterator[None]:
    """Another client runs a Lua script for ``seconds``; others wait behind it.

    With ``busy_after_ms``, other clients get ``-BUSY`` once the script ran that long (the
    block waits until they do); without, they just wait (and time out).
    """
    control = admin(server, socket_timeout=seconds + 10)
    if busy_after_ms:
        # busy-reply-threshold (Redis 7.0) by its older name, which Redis 6.2 knows too
        control.config_set("lua-time-limit", busy_after_ms)
    runner = admin(server, socket_timeout=seconds + 10)
    probe = admin(
        server, socket_timeout=0.1, socket_connect_timeout=0.1, retry=Retry(NoBackoff(), 0)
    )
    probe.ping()  # connected and handshaken before the script starts

    def run() -> None:
        with contextlib.suppress(rx.ResponseError):  # "Script killed by user..."
            runner.eval(BUSY_LOOP, 0, int(seconds * 1_000_000))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        if busy_after_ms:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    control.ping()
                except rx.ResponseError as exc:
                    if not str(exc).startswith("BUSY"):
                        raise
                    break
                time.sleep(0.01)
            else:
                raise AssertionError("the server never answered BUSY")
        else:
            # The script runs once a quick PING (on a ready connection) stops being answered.
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    probe.ping()
                except rx.TimeoutError:
                    break
                time.sleep(0.01)
            else:
                raise AssertionError("the script never started")
        yield
    finally:
        if busy_after_ms:
            with contextlib.suppress(rx.ResponseError):  # NOTBUSY: it already ended
                control.script_kill()
        thread.join(seconds + 10)
        probe.close()
        runner.close()
        control.close()


def fill_memory(server: RedisServer) -> None:
    """``maxmemory 1mb`` with ``noeviction`` over 2 MB of data: every write answers OOM."""
    control = admin(server)
    control.config_set("maxmemory-policy", "noeviction")
    value = b"x" * 10_000
    pipe = control.pipeline(transaction=False)
    for i in range(200):
        pipe.set(f"filler:{i}", value)
    pipe.execute()
    control.config_set("maxmemory", "1mb")
    try:
        control.set("probe", "x")
    except rx.OutOfMemoryError:
        return
    finally:
        control.close()
    raise AssertionError("Redis did not refuse a write")


def free_memory(server: RedisServer) -> None:
    control = admin(server)
    control.config_set("maxmemory", "0")
    control.close()


@contextmanager
def failed_save(server: RedisServer) -> Iterator[None]:
    """A BGSAVE that really fails (its directory is gone): writes then answer ``-MISCONF``.

    The server must run with ``--enable-protected-configs yes`` (``CONFIG SET dir``).
    """
    control = admin(server)
    original = str(control.config_get("dir")["dir"])
    gone = tempfile.mkdtemp(prefix="redisguard-misconf-")
    control.config_set("dir", gone)
    control.config_set("save", "3600 1")  # MISCONF needs a save point configured
    control.config_set("stop-writes-on-bgsave-error", "yes")
    shutil.rmtree(gone)  # the server's working directory no longer exists
    try:
        control.bgsave()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            info = control.info("persistence")
            if not info["rdb_bgsave_in_progress"] and info["rdb_last_bgsave_status"] == "err":
                break
            time.sleep(0.02)
        else:
            raise AssertionError("BGSAVE did not fail")
        yield
    finally:
        control.config_set("dir", original)
        control.config_set("save", "")
        control.close()
