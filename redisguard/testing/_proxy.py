"""A TCP proxy that injects network faults between a client and a Redis server.

:class:`FaultProxy` listens on a free 127.0.0.1 port and forwards every connection
to an upstream ``(host, port)``. It runs its own asyncio event loop in a daemon
thread, so sync tests, async tests (on their own loop) and other threads can all
use it, and its fault switches take effect before the call that sets them returns.

Faults:

* :meth:`~FaultProxy.blackhole`: connections are accepted but no byte is
  forwarded in either direction (clients hit their ``socket_timeout``).
* :meth:`~FaultProxy.reset`: every live connection gets a TCP RST (clients see
  ``ECONNRESET``); new connections are forwarded again.
* :meth:`~FaultProxy.latency`: every chunk the server sends back is delayed, so
  each request/response round trip takes that much longer.
* :meth:`~FaultProxy.heal`: back to clean forwarding.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import socket
import struct
import threading
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

from redisguard.testing._ports import LOOPBACK

if TYPE_CHECKING:
    from redisguard.testing._server import RedisServer

__all__ = ["FaultProxy"]

_T = TypeVar("_T")
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST
_CALL_TIMEOUT = 10.0


class FaultProxy:
    """A fault-injecting TCP proxy on 127.0.0.1 in front of ``(upstream_host, upstream_port)``.

    Use it as a context manager or call :meth:`start` / :meth:`stop`. Point clients
    at :attr:`url` (or :meth:`client_kwargs`). Fault methods may be called from any
    thread, before or after :meth:`start`.

    Args:
        upstream_host: Host of the real server (loopback unless you mean otherwise).
        upstream_port: Port of the real server.
        port: Port to listen on; by default the kernel picks a free one at the
            first :meth:`start` (no race: the proxy binds it itself).
    """

    host: str = LOOPBACK

    def __init__(self, upstream_host: str, upstream_port: int, *, port: int | None = None) -> None:
        self.upstream: tuple[str, int] = (upstream_host, upstream_port)
        self._port: int | None = port or None
        self._scheme = "redis"
        self._userinfo = ""
        self._path = "/0"
        self._query = ""
        self._client_extra: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._loop_thread_id: int | None = None
        self._pairs: set[_Pair] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        # Read on the loop thread for every chunk; written only on the loop thread.
        self._blackholed = False
        self._delay = 0.0

    # ---------------------------------------------------------------- constructors

    @classmethod
    def for_server(cls, server: RedisServer, *, port: int | None = None) -> FaultProxy:
        """Build a proxy in front of a :class:`RedisServer` (not started yet).

        :attr:`url` and :meth:`client_kwargs` keep the server's password and TLS
        settings (TLS passes through the proxy untouched).
        """
        proxy = cls(server.host, server.port, port=port)
        proxy._adopt_url(server.url)
        proxy._client_extra = {
            k: v for k, v in server.client_kwargs().items() if k not in {"host", "port"}
        }
        return proxy

    @classmethod
    def for_url(cls, url: str, *, port: int | None = None) -> FaultProxy:
        """Build a proxy in front of the server a ``redis://`` or ``rediss://`` URL names.

        Raises:
            ValueError: Not a TCP Redis URL.
        """
        parts = urlsplit(url)
        if parts.scheme not in {"redis", "rediss"} or not parts.hostname:
            raise ValueError("expected a redis:// or rediss:// URL with a host")
        proxy = cls(parts.hostname, parts.port or 6379, port=port)
        proxy._adopt_url(url)
        if parts.password is not None:
            proxy._client_extra["password"] = parts.password
        if parts.username:
            proxy._client_extra["username"] = parts.username
        if parts.scheme == "rediss":
            proxy._client_extra["ssl"] = True
        return proxy

    def _adopt_url(self, url: str) -> None:
        parts = urlsplit(url)
        self._scheme = parts.scheme
        userinfo, _, _ = parts.netloc.rpartition("@")
        self._userinfo = f"{userinfo}@" if userinfo else ""
        self._path = parts.path or "/0"
        self._query = parts.query

    # ------------------------------------------------------------------ properties

    @property
    def port(self) -> int:
        """The port the proxy listens on (known once started, or if given)."""
        if self._port is None:
            raise RuntimeError("the proxy picks its port in start()")
        return self._port

    @property
    def url(self) -> str:
        """The upstream's URL (scheme, credentials, database) with the proxy's address."""
        netloc = f"{self._userinfo}{self.host}:{self.port}"
        return urlunsplit((self._scheme, netloc, self._path, self._query, ""))

    @property
    def connections(self) -> int:
        """Number of client connections currently open through the proxy."""
        return len(self._pairs)

    @property
    def is_running(self) -> bool:
        """True between :meth:`start` and :meth:`stop`."""
        return self._loop is not None

    def client_kwargs(self) -> dict[str, Any]:
        """Return redis-py keyword arguments for a client that goes through the proxy."""
        return {"host": self.host, "port": self.port, **self._client_extra}

    def __repr__(self) -> str:
        faults = []
        if self._blackholed:
            faults.append("blackhole")
        if self._delay:
            faults.append(f"latency={self._delay * 1000:g}ms")
        state = " ".join(faults) or "clean"
        address = f"{self.host}:{self._port}" if self._port else "not started"
        upstream = f"{self.upstream[0]}:{self.upstream[1]}"
        return f"<FaultProxy {address} -> {upstream} {state}>"

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> FaultProxy:
        if not self.is_running:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> FaultProxy:
        """Start listening; returns ``self``.

        After a :meth:`stop`, starting again reuses the same port, so ``stop()``
        then ``start()`` simulates a server that refuses connections for a while.

        Raises:
            RuntimeError: Already running.
            OSError: The port could not be bound.
        """
        with self._lock:
            if self._loop is not None:
                raise RuntimeError(f"{self!r} is already running")
            loop = asyncio.new_event_loop()
            ready: concurrent.futures.Future[int] = concurrent.futures.Future()
            thread = threading.Thread(
                target=self._run, args=(loop, ready), name="redisguard-fault-proxy", daemon=True
            )
            thread.start()
            try:
                self._port = ready.result(timeout=_CALL_TIMEOUT)
            except BaseException:
                thread.join(_CALL_TIMEOUT)
                raise
            self._loop, self._thread = loop, thread
            return self

    def stop(self) -> None:
        """Close the listener and every connection (abruptly); safe to call twice."""
        with self._lock:
            loop, thread = self._loop, self._thread
            if loop is None or thread is None:
                return
            loop.call_soon_threadsafe(loop.stop)
            thread.join(_CALL_TIMEOUT)
            self._loop = self._thread = None

    def _run(self, loop: asyncio.AbstractEventLoop, ready: concurrent.futures.Future[int]) -> None:
        """Thread body: serve until stop(), then close everything so nothing leaks."""
        asyncio.set_event_loop(loop)
        try:
            server = loop.run_until_complete(
                loop.create_server(
                    lambda: _ClientSide(self), LOOPBACK, self._port or 0, reuse_address=True
                )
            )
        except BaseException as exc:
            loop.close()
            ready.set_exception(exc)
            return
        self._server = server
        self._loop_thread_id = threading.get_ident()
        ready.set_result(server.sockets[0].getsockname()[1])
        try:
            loop.run_forever()
        finally:
            server.close()
            for pair in list(self._pairs):
                pair.abort()
            self._pairs.clear()
            for task in list(self._tasks):
                task.cancel()
            # Let cancellations and connection_lost callbacks run before closing.
            loop.run_until_complete(asyncio.sleep(0))
            loop.run_until_complete(server.wait_closed())
            if self._tasks:
                loop.run_until_complete(asyncio.wait(list(self._tasks)))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._server = None

    # ------------------------------------------------------------------ faults

    def blackhole(self) -> None:
        """Accept connections but forward nothing, in either direction, until :meth:`heal`.

        Bytes sent meanwhile are dropped, so a connection that carried traffic
        during the blackhole is out of step afterwards; redis-py discards a
        connection after a timeout, so it recovers by itself.
        """
        self._apply(self._set_blackhole)

    def reset(self) -> int:
        """Send a TCP RST to every live connection (both ends); new ones are forwarded.

        Returns:
            The number of client connections that were reset.
        """
        return self._apply(self._reset_all)

    def latency(self, ms: float) -> None:
        """Delay every chunk the upstream sends back by ``ms`` milliseconds.

        Each request/response round trip therefore takes at least ``ms`` longer.
        Order is preserved. ``latency(0)`` removes the delay.

        Raises:
            ValueError: ``ms`` is negative.
        """
        if ms < 0:
            raise ValueError("latency must be >= 0 ms")
        delay = ms / 1000.0
        self._apply(lambda: setattr(self, "_delay", delay))

    def heal(self) -> None:
        """Stop all faults: forward cleanly, with no delay (queued replies go out now)."""
        self._apply(self._heal)

    def _set_blackhole(self) -> None:
        self._blackholed = True

    def _reset_all(self) -> int:
        pairs = list(self._pairs)
        self._pairs.clear()
        for pair in pairs:
            pair.abort()
        return len(pairs)

    def _heal(self) -> None:
        self._blackholed = False
        self._delay = 0.0
        for pair in list(self._pairs):
            pair.heal()

    def _apply(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the proxy's loop and wait for it (directly when not running)."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread_id:
            return fn()
        done: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:  # handed to the calling thread
                done.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return done.result(timeout=_CALL_TIMEOUT)


class _Pair:
    """One proxied connection: the client transport, the upstream one, delayed replies."""

    __slots__ = (
        "_timer",
        "client",
        "client_closed",
        "early",
        "loop",
        "pending",
        "proxy",
        "upstream",
        "upstream_closed",
    )

    def __init__(self, proxy: FaultProxy, client: asyncio.Transport) -> None:
        self.proxy = proxy
        self.loop = asyncio.get_running_loop()
        self.client = client
        self.upstream: asyncio.Transport | None = None
        self.client_closed = False
        self.upstream_closed = False
        # Client bytes that arrived before the upstream connection existed. connection_made
        # pauses reading, but Python 3.10's transport re-adds its reader right after
        # connection_made (3.11 made _add_reader honour pause_reading), so bytes can come.
        self.early: list[bytes] | None = []
        # Delayed replies as (due time, chunk); a None chunk means "then close".
        self.pending: collections.deque[tuple[float, bytes | None]] = collections.deque()
        self._timer: asyncio.TimerHandle | None = None

    async def connect(self) -> None:
        """Open the upstream connection, then let client bytes flow."""
        host, port = self.proxy.upstream
        try:
            transport, _ = await self.loop.create_connection(
                lambda: _UpstreamSide(self), host, port
            )
        except OSError:
            # Upstream down: the client sees its connection reset, as with a dead server.
            self.abort()
            self.proxy._pairs.discard(self)
            return
        if self.client_closed:
            transport.close()
            return
        self.upstream = transport
        early, self.early = self.early, None
        for data in early or ():
            self.from_client(data)
        self.client.resume_reading()

    # -- data path (kept short: it runs for every chunk) --

    def from_client(self, data: bytes) -> None:
        upstream = self.upstream
        if upstream is None:
            if self.early is not None:
                self.early.append(data)  # forwarded (or blackholed) once connected
        elif not self.proxy._blackholed:
            upstream.write(data)

    def from_upstream(self, data: bytes) -> None:
        proxy = self.proxy
        if proxy._blackholed:
            return
        if proxy._delay or self.pending:
            self._enqueue(data)
        else:
            self.client.write(data)

    def _enqueue(self, data: bytes) -> None:
        due = self.loop.time() + self.proxy._delay
        if self.pending:
            due = max(due, self.pending[-1][0])  # never overtake an earlier chunk
        self.pending.append((due, data))
        if self._timer is None:
            self._timer = self.loop.call_at(due, self._flush_due)

    def _flush_due(self, *, everything: bool = False) -> None:
        self._timer = None
        # asyncio may run a timer a hair before its due time; don't reschedule for that.
        now = self.loop.time() + 1e-6
        while self.pending and (everything or self.pending[0][0] <= now):
            _, data = self.pending.popleft()
            if data is None:
                self.client.close()
            elif not self.proxy._blackholed:
                self.client.write(data)
        if self.pending:
            self._timer = self.loop.call_at(self.pending[0][0], self._flush_due)

    # -- lifecycle --

    def upstream_gone(self) -> None:
        """The server closed its side: close the client too, after queued replies."""
        self.upstream_closed = True
        if self.proxy._blackholed:
            return  # a blackhole forwards nothing, not even the close; heal() does it
        if self.pending:
            self.pending.append((self.pending[-1][0], None))
        else:
            self.client.close()

    def client_gone(self) -> None:
        """The client closed or was reset: drop the pair and close the upstream side."""
        self.client_closed = True
        self.early = None
        self.proxy._pairs.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.pending.clear()
        if self.upstream is not None:
            self.upstream.close()

    def heal(self) -> None:
        if self.upstream_closed:
            self.client.close()
        self._flush_due(everything=True)

    def abort(self) -> None:
        """Reset both connections (RST, not FIN)."""
        for transport in (self.client, self.upstream):
            if transport is None or transport.is_closing():
                continue
            sock = transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            transport.abort()


class _ClientSide(asyncio.Protocol):
    """Protocol for the connection a client opened to the proxy."""

    def __init__(self, proxy: FaultProxy) -> None:
        self._proxy = proxy
        self._pair: _Pair | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.pause_reading()  # until the upstream connection exists
        pair = self._pair = _Pair(self._proxy, transport)
        self._proxy._pairs.add(pair)
        task = asyncio.get_running_loop().create_task(pair.connect())
        self._proxy._tasks.add(task)
        task.add_done_callback(self._proxy._tasks.discard)

    def data_received(self, data: bytes) -> None:
        assert self._pair is not None
        self._pair.from_client(data)

    def eof_received(self) -> bool:
        return False  # close our side; connection_lost closes the upstream

    def connection_lost(self, exc: Exception | None) -> None:
        if self._pair is not None:
            self._pair.client_gone()

    def pause_writing(self) -> None:
        if self._pair is not None and self._pair.upstream is not None:
            self._pair.upstream.pause_reading()

    def resume_writing(self) -> None:
        if self._pair is not None and self._pair.upstream is not None:
            self._pair.upstream.resume_reading()


class _UpstreamSide(asyncio.Protocol):
    """Protocol for the proxy's connection to the upstream server."""

    def __init__(self, pair: _Pair) -> None:
        self._pair = pair

    def data_received(self, data: bytes) -> None:
        self._pair.from_upstream(data)

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._pair.upstream_gone()

    def pause_writing(self) -> None:
        self._pair.client.pause_reading()

    def resume_writing(self) -> None:
        self._pair.client.resume_reading()
