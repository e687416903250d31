"""Tests for redisguard.testing.FaultProxy, between real clients and a real redis-server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from redisguard.testing import FaultProxy, RedisServer

NO_RETRY = Retry(NoBackoff(), 0)
ASYNC_NO_RETRY = AsyncRetry(NoBackoff(), 0)


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    """One server for the module: the proxy is what the tests break, never the server."""
    with RedisServer() as srv:
        yield srv


@pytest.fixture
def proxy(server: RedisServer) -> Iterator[FaultProxy]:
    """A started proxy in front of the module's server."""
    with FaultProxy.for_server(server) as prx:
        yield prx


def _client(proxy: FaultProxy, **kwargs: Any) -> redis.Redis:
    """A sync client through the proxy, without retries."""
    return redis.Redis(**proxy.client_kwargs(), retry=NO_RETRY, **kwargs)


def _async_client(proxy: FaultProxy, **kwargs: Any) -> redis.asyncio.Redis:
    """An asyncio client through the proxy, without retries."""
    return redis.asyncio.Redis(**proxy.client_kwargs(), retry=ASYNC_NO_RETRY, **kwargs)


def _raw(port: int) -> socket.socket:
    """A raw TCP connection to 127.0.0.1:port with a 2 s timeout."""
    return socket.create_connection(("127.0.0.1", port), timeout=2)


def _wait_for(predicate: Any, timeout: float = 2.0) -> bool:
    """Poll ``predicate()`` until true or ``timeout``; return its last value."""
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.005)
    return bool(predicate())


def test_forwards_commands_and_counts_connections(proxy: FaultProxy) -> None:
    """Commands pass through unchanged and the proxy counts its live connections."""
    assert proxy.url == f"redis://127.0.0.1:{proxy.port}/0"
    client = _client(proxy)
    try:
        client.set("proxied", "yes")
        assert client.get("proxied") == b"yes"
        assert proxy.connections == 1
    finally:
        client.close()
    assert _wait_for(lambda: proxy.connections == 0)


def test_forwards_bytes_sent_before_the_upstream_is_connected(proxy: FaultProxy) -> None:
    """A request sent the instant the client connects reaches the server (Python 3.10 too)."""
    for _ in range(20):
        with _raw(proxy.port) as sock:
            sock.sendall(b"PING\r\n")
            assert sock.recv(64) == b"+PONG\r\n"


def test_blackhole_times_out_and_heal_recovers(proxy: FaultProxy) -> None:
    """Under blackhole() a client with socket_timeout times out; after heal() it works again."""
    client = _client(proxy, socket_timeout=0.3)
    try:
        assert client.ping() is True
        proxy.blackhole()
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            client.ping()
        assert time.monotonic() - started >= 0.25
        with pytest.raises(redis.TimeoutError):
            client.ping()  # a fresh connection is accepted but gets nothing either
        proxy.heal()
        assert client.ping() is True
    finally:
        client.close()


def test_blackhole_swallows_the_server_closing(server: RedisServer, proxy: FaultProxy) -> None:
    """A server-side close is not forwarded during a blackhole, only once healed."""
    with _raw(proxy.port) as sock:
        sock.sendall(b"CLIENT ID\r\n")
        client_id = int(sock.recv(64)[1:-2])
        proxy.blackhole()
        admin = redis.Redis(**server.client_kwargs(), retry=NO_RETRY)
        try:
            assert admin.client_kill_filter(_id=str(client_id)) == 1
        finally:
            admin.close()
        sock.settimeout(0.2)
        with pytest.raises(TimeoutError):
            sock.recv(64)
        proxy.heal()
        sock.settimeout(2)
        assert sock.recv(64) == b""


def test_reset_sends_rst_and_new_connections_work(proxy: FaultProxy) -> None:
    """reset() aborts live connections with RST (not FIN) and returns how many it hit."""
    with _raw(proxy.port) as first, _raw(proxy.port) as second:
        for sock in (first, second):
            sock.sendall(b"PING\r\n")
            assert sock.recv(64) == b"+PONG\r\n"
        assert proxy.connections == 2
        assert proxy.reset() == 2
        assert proxy.connections == 0
        with pytest.raises(ConnectionResetError):
            first.recv(64)
    with _raw(proxy.port) as third:
        third.sendall(b"PING\r\n")
        assert third.recv(64) == b"+PONG\r\n"


def test_reset_during_a_request_raises_connection_error_sync(proxy: FaultProxy) -> None:
    """A sync client whose request is in flight when reset() hits gets ConnectionError."""
    client = _client(proxy, socket_timeout=5)
    try:
        assert client.ping() is True
        proxy.blackhole()  # hold the request so the reset lands while it waits
        timer = threading.Timer(0.1, proxy.reset)
        timer.start()
        with pytest.raises(redis.ConnectionError):
            client.ping()
        timer.join()
        proxy.heal()
        assert client.ping() is True
    finally:
        client.close()


async def test_reset_raises_connection_error_async(proxy: FaultProxy) -> None:
    """An asyncio client's pooled connection, once reset, fails with ConnectionError once."""
    client = _async_client(proxy)
    try:
        assert await client.ping() is True
        proxy.reset()
        with pytest.raises(redis.ConnectionError):
            await client.ping()
        assert await client.ping() is True
    finally:
        await client.aclose()


def test_latency_delays_each_round_trip(proxy: FaultProxy) -> None:
    """latency(50) adds at least 50 ms per round trip; heal() removes it."""
    client = _client(proxy)
    try:
        client.ping()
        proxy.latency(50)
        started = time.monotonic()
        client.ping()
        assert time.monotonic() - started >= 0.05
        proxy.heal()
        fastest = 1.0
        for _ in range(3):  # best of three: one scheduling hiccup must not fail the test
            started = time.monotonic()
            client.ping()
            fastest = min(fastest, time.monotonic() - started)
        assert fastest < 0.04
    finally:
        client.close()


def test_latency_preserves_order(proxy: FaultProxy) -> None:
    """Delayed replies keep their order, so a pipeline of 200 INCRs reads back 1..200."""
    client = _client(proxy)
    try:
        client.delete("counter")
        proxy.latency(5)
        pipe = client.pipeline(transaction=False)
        for _ in range(200):
            pipe.incr("counter")
        assert pipe.execute() == list(range(1, 201))
    finally:
        client.close()


def test_heal_releases_delayed_replies_at_once(proxy: FaultProxy) -> None:
    """Replies queued behind a long latency are sent as soon as heal() is called."""
    with _raw(proxy.port) as sock:
        proxy.latency(5000)
        sock.sendall(b"PING\r\n")
        time.sleep(0.05)
        started = time.monotonic()
        proxy.heal()
        assert sock.recv(64) == b"+PONG\r\n"
        assert time.monotonic() - started < 1.0


async def test_async_client_through_faults(proxy: FaultProxy) -> None:
    """An asyncio client passes through, times out under blackhole, and recovers after heal."""
    client = _async_client(proxy, socket_timeout=0.3)
    try:
        await client.set("async", "1")
        assert await client.get("async") == b"1"
        proxy.blackhole()
        with pytest.raises(redis.TimeoutError):
            await client.get("async")
        proxy.heal()
        assert await client.get("async") == b"1"
    finally:
        await client.aclose()


def test_password_server_through_url_proxy() -> None:
    """for_url() keeps credentials in the proxied URL but never in repr()."""
    with RedisServer(password="s3cret") as srv, FaultProxy.for_url(srv.url) as prx:
        assert prx.url == f"redis://:s3cret@127.0.0.1:{prx.port}/0"
        assert "s3cret" not in repr(prx)
        assert prx.upstream == ("127.0.0.1", srv.port)
        client = redis.from_url(prx.url)
        try:
            assert client.ping() is True
        finally:
            client.close()


def test_upstream_down_resets_clients(server: RedisServer) -> None:
    """With nothing listening upstream, clients of the proxy get a ConnectionError."""
    with RedisServer() as doomed, FaultProxy.for_server(doomed) as prx:
        doomed.kill()
        client = _client(prx, socket_timeout=2)
        try:
            with pytest.raises(redis.ConnectionError):
                client.ping()
        finally:
            client.close()


def test_stop_closes_connections_and_listener(proxy: FaultProxy) -> None:
    """stop() drops live connections and frees the port; stopping again is harmless."""
    client = _client(proxy, socket_timeout=1)
    try:
        assert client.ping() is True
        proxy.stop()
        assert not proxy.is_running
        with pytest.raises(redis.ConnectionError):
            client.ping()
        proxy.stop()
    finally:
        client.close()


def test_restart_reuses_the_port(server: RedisServer) -> None:
    """stop() refuses connections; start() again serves on the same port and URL."""
    with FaultProxy.for_server(server) as prx:
        url = prx.url
        prx.stop()
        with pytest.raises(ConnectionRefusedError):
            _raw(prx.port).close()
        prx.start()
        assert prx.url == url
        client = redis.from_url(prx.url)
        try:
            assert client.ping() is True
        finally:
            client.close()


def test_tls_passes_through() -> None:
    """A proxy in front of a TLS server forwards the TLS session; client_kwargs() carries the CA."""
    if not RedisServer.supports_tls():
        pytest.skip("this redis-server build has no TLS support")
    pytest.importorskip("trustme")
    with RedisServer(tls=True) as srv, FaultProxy.for_server(srv) as prx:
        assert prx.url.startswith("rediss://127.0.0.1:")
        client = redis.Redis(**prx.client_kwargs(), retry=NO_RETRY, socket_timeout=0.3)
        try:
            assert client.ping() is True
            prx.blackhole()
            with pytest.raises(redis.TimeoutError):
                client.ping()
        finally:
            client.close()


def test_faults_set_before_start_apply(server: RedisServer) -> None:
    """A fault set before start() is in force from the first connection."""
    prx = FaultProxy(server.host, server.port)
    prx.blackhole()
    with prx:
        client = _client(prx, socket_timeout=0.2)
        try:
            with pytest.raises(redis.TimeoutError):
                client.ping()
        finally:
            client.close()


def test_faults_can_be_switched_from_another_thread(proxy: FaultProxy) -> None:
    """Fault switches are thread-safe: a blackhole set from a worker thread takes effect."""
    worker = threading.Thread(target=proxy.blackhole)
    worker.start()
    worker.join()
    assert "blackhole" in repr(proxy)
    client = _client(proxy, socket_timeout=0.2)
    try:
        with pytest.raises(redis.TimeoutError):
            client.ping()
    finally:
        client.close()


def test_negative_latency_is_rejected(proxy: FaultProxy) -> None:
    """latency() refuses negative delays."""
    with pytest.raises(ValueError, match=">= 0"):
        proxy.latency(-1)


def test_for_url_rejects_unix_sockets() -> None:
    """for_url() only accepts TCP redis:// and rediss:// URLs."""
    with pytest.raises(ValueError, match="redis://"):
        FaultProxy.for_url("unix:///tmp/redis.sock")
