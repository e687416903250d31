"""asyncio's internal errors from a closed transport (redis-py #4287), on real transports."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from redisguard import ErrorKind, RetryPolicy, classify_error, redis_guarded
from redisguard._classify import not_applied
from redisguard._transport import closed_transport_error
from redisguard.testing import FaultProxy

BreakerFactory = Callable[..., Any]

# Only these CPython versions have the bug: earlier writelines() calls write() per chunk.
needs_writelines_bug = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="asyncio's writelines() fast path is new in 3.12"
)


class _Server:
    """A real asyncio TCP server on 127.0.0.1 that can reset or close its side of a connection."""

    def __init__(self) -> None:
        self.accepted: asyncio.Queue[asyncio.StreamWriter] = asyncio.Queue()
        self.server: asyncio.Server | None = None
        self.peers: list[asyncio.StreamWriter] = []

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self.accepted.put(writer)

    async def connect(
        self,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, asyncio.StreamWriter]:
        """Open a client connection; return its reader and writer and the server's writer."""
        if self.server is None:
            self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        peer = await asyncio.wait_for(self.accepted.get(), 5)
        self.peers.append(peer)
        return reader, writer, peer


@pytest.fixture
async def tcp() -> AsyncIterator[_Server]:
    """A real asyncio server for the test, closed afterwards."""
    server = _Server()
    yield server
    for peer in server.peers:
        peer.transport.abort()  # Server.wait_closed() waits for its connections from 3.12
    if server.server is not None:
        server.server.close()
        await server.server.wait_closed()


def _reset(peer: asyncio.StreamWriter) -> None:
    """Close the server's side with a TCP RST."""
    sock = peer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    peer.transport.abort()


async def _lost(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Wait until the client's transport has seen the reset and torn itself down."""
    with contextlib.suppress(ConnectionError):
        await asyncio.wait_for(reader.read(), 5)
    with contextlib.suppress(ConnectionError):
        await asyncio.wait_for(writer.wait_closed(), 5)


def _raised(fn: Callable[[], object]) -> BaseException:
    """Call ``fn`` and return what it raised."""
    try:
        fn()
    except BaseException as exc:  # the test inspects whatever asyncio raised
        return exc
    raise AssertionError("expected an exception")


@needs_writelines_bug
async def test_writelines_after_a_peer_reset_is_a_closed_transport_error(tcp: _Server) -> None:
    """The AttributeError asyncio raises writing to a reset connection is recognised as one."""
    reader, writer, peer = await tcp.connect()
    _reset(peer)
    await _lost(reader, writer)
    exc = _raised(lambda: writer.writelines([b"PING\r\n"]))
    assert isinstance(exc, AttributeError)
    assert closed_transport_error(exc)
    assert classify_error(exc) is ErrorKind.TRANSIENT
    assert not_applied(exc)  # the write never left the process: safe to retry any command


@needs_writelines_bug
async def test_closed_transport_error_raised_deep_in_a_call_stack_is_recognised(
    tcp: _Server,
) -> None:
    """The innermost frames decide, however deep the caller's stack is."""
    reader, writer, peer = await tcp.connect()
    _reset(peer)
    await _lost(reader, writer)

    def nested(depth: int) -> None:
        if depth:
            nested(depth - 1)
        else:
            writer.writelines([b"PING\r\n"])

    exc = _raised(lambda: nested(200))
    assert isinstance(exc, AttributeError)
    assert closed_transport_error(exc)


@needs_writelines_bug
async def test_writelines_after_close_is_a_closed_transport_error(tcp: _Server) -> None:
    """The TypeError asyncio raises writing to a transport being closed is recognised as one."""
    _, writer, _ = await tcp.connect()
    writer.close()
    exc = _raised(lambda: writer.writelines([b"PING\r\n"]))
    assert isinstance(exc, TypeError)
    assert closed_transport_error(exc)
    assert classify_error(exc) is ErrorKind.TRANSIENT
    assert not_applied(exc)  # the write never left the process: safe to retry any command
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_asyncio_error_on_an_open_transport_is_not_one(tcp: _Server) -> None:
    """A TypeError raised inside asyncio on a transport that is still open propagates."""
    _, writer, _ = await tcp.connect()
    exc = _raised(lambda: writer.write("not bytes"))  # type: ignore[arg-type]
    assert isinstance(exc, TypeError)
    assert not closed_transport_error(exc)
    assert classify_error(exc) is ErrorKind.PROPAGATE
    writer.close()
    await writer.wait_closed()


async def test_user_attribute_error_beside_a_closed_transport_is_not_one(tcp: _Server) -> None:
    """An AttributeError from the caller's own code is never masked, even with a dead transport."""
    reader, writer, peer = await tcp.connect()
    _reset(peer)
    await _lost(reader, writer)
    transport = writer.transport
    assert transport.is_closing()
    missing: Any = None

    def user_code() -> None:
        assert transport.is_closing()
        missing._add_writer()  # the same shape as asyncio's, but raised here

    exc = _raised(user_code)
    assert isinstance(exc, AttributeError)
    assert not closed_transport_error(exc)
    assert classify_error(exc) is ErrorKind.PROPAGATE


async def test_user_error_raised_through_asyncio_frames_is_not_one() -> None:
    """An error the caller's coroutine raises under asyncio.wait_for is not asyncio's own."""

    async def user_code() -> None:
        raise TypeError("'NoneType' object is not callable")

    with pytest.raises(TypeError) as info:
        await asyncio.wait_for(user_code(), 5)
    assert not closed_transport_error(info.value)
    assert classify_error(info.value) is ErrorKind.PROPAGATE


def test_other_exceptions_and_missing_tracebacks_are_not_one() -> None:
    """Errors of other types, or with no traceback, are never taken for a closed transport."""
    assert not closed_transport_error(AttributeError("'NoneType' object has no attribute 'x'"))
    assert not closed_transport_error(ConnectionResetError(104, "reset"))
    assert not closed_transport_error(ValueError())


@needs_writelines_bug
async def test_guarded_write_on_a_reset_pooled_connection_retries(
    fault_proxy: FaultProxy, make_breaker: BreakerFactory
) -> None:
    """A guarded asyncio write on a pooled connection the peer reset retries, not raises."""
    client = redis.asyncio.Redis(
        **fault_proxy.client_kwargs(), retry=Retry(NoBackoff(), 0), socket_timeout=2
    )
    breaker = make_breaker(failure_threshold=100)
    policy = RetryPolicy(attempts=3, backoff=0.001, max_backoff=0.001, jitter=0.0, deadline=5.0)

    @redis_guarded(name="set", breaker=breaker, retry=policy, fallback=None)
    async def store(key: str) -> Any:
        return await client.set(key, "v")

    try:
        await asyncio.gather(*(client.ping() for _ in range(8)))  # fill the pool
        assert fault_proxy.reset() >= 1
        await asyncio.sleep(0.2)  # let each pooled transport see its reset
        assert [await store(f"k{i}") for i in range(8)] == [True] * 8
        assert await client.get("k0") == b"v"
    finally:
        await client.aclose()


@needs_writelines_bug
async def test_a_breaker_opened_by_a_closed_transport_can_be_healed_by_a_ping(tcp: _Server) -> None:
    """opened_by remembers a closed-transport error as a reset connection, which a PING heals."""
    from redisguard import Breaker
    from redisguard._prober import ping_proves_recovery

    reader, writer, peer = await tcp.connect()
    _reset(peer)
    await _lost(reader, writer)
    exc = _raised(lambda: writer.writelines([b"PING\r\n"]))
    assert closed_transport_error(exc)
    breaker = Breaker(fail_max=1)
    breaker._on_failure(breaker._admit(), exc)
    assert breaker.current_state == "open"
    assert isinstance(breaker.opened_by, ConnectionResetError)
    assert ping_proves_recovery(breaker.opened_by)
