"""The host segment: one breaker's state in a small file that every process on a host maps.

A breaker built with ``BreakerConfig(shared=...)`` (or ``REDISGUARD_SHARED_BREAKERS``) keeps
its state -- closed/open/half-open, when it opened and why, the run of failures, the
half-open trial slots, the recovery prober's lease -- in a file under ``/dev/shm`` (tmpfs:
memory, never disk), mapped with ``mmap(MAP_SHARED)`` by every process that uses the same
breaker name in the same namespace. See :mod:`redisguard._host` for the semantics.

**Reading** a field is a memory read: the guard's happy path reads the state byte and the
"failures to clear" byte through a ``memoryview``, with no lock and no system call.

**Writing** happens only on state transitions, failures, trial bookkeeping and prober
leases, inside a *transaction*: ``flock(LOCK_EX)`` on the file (the kernel drops it when its
holder dies, SIGKILL included), then the record is copied to a backup area and the holder's
pid is written as ``dirty``; the changes are made; ``dirty`` is cleared (the commit) and the
lock released. A holder killed in between leaves ``dirty`` set: the next holder copies the
backup back (rollback), so the record is never seen half-changed by a writer.
A lock-free reader may see a value that is then rolled back; the worst that does is one
fallback or one extra trial call.

**Who may open it.** The file is created with mode 0600 (``O_NOFOLLOW``, ``O_CLOEXEC``) and
used only if it is owned by the effective uid and has no group or other permission bits; a
file that fails this check is refused with a :class:`~redisguard.ConfigError` that names it,
never used. Its name is ``redisguard-<uid>-<breaker>-<digest>`` where the digest covers the
breaker name and the namespace; its header holds a fingerprint of the breaker's
configuration, and a segment with another fingerprint (a previous deployment's) is unlinked
and replaced, never reused.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import logging
import mmap
import os
import re
import stat
import struct
import sys
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ._errors import ConfigError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: host-shared breakers are unavailable
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from ._config import BreakerConfig

__all__ = [
    "DIR_ENV",
    "LAYOUT_VERSION",
    "SHARED_ENV",
    "HostSegment",
    "derive_namespace",
    "fingerprint",
    "parse_shared",
    "segment_path",
]

logger = logging.getLogger("redisguard")

SHARED_ENV = "REDISGUARD_SHARED_BREAKERS"
DIR_ENV = "REDISGUARD_SHARED_DIR"
DEFAULT_DIR = "/dev/shm"
LAYOUT_VERSION = 2
MAX_RING = 4096  # failure_threshold a host-shared breaker accepts (one slot per failure)
PID_SLOTS = 64  # processes that may hold half-open trial slots at once
_MAGIC = b"RGHOST\x00\x01"
_ON = frozenset({"1", "true", "yes", "on"})
_OFF = frozenset({"", "0", "false", "no", "off"})
_NAMESPACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/-]{0,127}")

# -- layout (little-endian; every field naturally aligned) -------------------------------------
# header
_OFF_MAGIC, _OFF_VERSION, _OFF_READY, _OFF_FINGERPRINT, _OFF_DIRTY = 0, 8, 12, 16, 48
# the record (copied to the backup area at the start of every transaction)
REC = 64
STATE = REC + 0  # u8: 0 closed, 1 half-open, 2 open
FAILING = REC + 1  # u8: 1 while the failure ring holds entries (the happy path's clear check)
CAUSE_KIND = REC + 2  # u8: see redisguard._host (what opened it)
SLOW_OPENED = REC + 3  # u8
TRIALS = REC + 4  # u32: half-open trial slots held
SEQ = REC + 8  # u64: transitions so far (processes adopt when theirs differs)
GENERATION = REC + 16  # u64: half-open round
OPENED_AT = REC + 24  # f64: monotonic (CLOCK_MONOTONIC is one clock for the whole host)
TRIAL_ADMITTED_AT = REC + 32  # f64
TRIAL_SUCCESSES = REC + 40  # u32
RING_LEN = REC + 44  # u32
RING_HEAD = REC + 48  # u32
CAUSE_LEN = REC + 52  # u32
LAST_CHANGE = REC + 56  # f64: wall clock
PROBER_PID = REC + 64  # u32
TRANSITIONS_BY = REC + 68  # u32: the pid that made the last transition
PROBER_SEEN = REC + 72  # f64: monotonic heartbeat of the prober lease
CAUSE_TEXT = REC + 80  # 240 bytes of UTF-8
CAUSE_MAX = 240
# the write side (redisguard._sides), host-wide too
W = CAUSE_TEXT + CAUSE_MAX
W_STATE = W + 0  # u8
W_WRITE_GATE = W + 1  # u8: what write guards read on the happy path: max(main, write side)
W_DELETE_GATE = W + 2  # u8: the same for delete guards (OOM spares deletes)
W_SPARES = W + 3  # u8
W_TRIALS = W + 4  # u32
W_GENERATION = W + 8  # u64
W_OPENED_AT = W + 16  # f64: monotonic
W_TRIAL_ADMITTED_AT = W + 24  # f64
W_TRIAL_SUCCESSES = W + 32  # u32
W_RING_LEN = W + 36  # u32
W_RING_HEAD = W + 40  # u32
W_CAUSE_LEN = W + 44  # u32: the cause word ("OOM", "READONLY"...)
W_CAUSE = W + 48  # 16 bytes
W_CAUSE_MAX = 16
W_TEXT_LEN = W + 64  # u32: the refusal's text (rebuilds opened_by)
W_TEXT = W + 72  # 200 bytes
W_TEXT_MAX = 200
PIDS = W_TEXT + W_TEXT_MAX  # PID_SLOTS x (u32 pid, u32 trial slots held)
RING = PIDS + PID_SLOTS * 8  # ring of failure timestamps (f64, monotonic), then the write
# side's ring of refusal timestamps: each failure_threshold slots

_U8, _U32, _U64, _F64 = (struct.Struct(f) for f in ("<B", "<I", "<Q", "<d"))


def parse_shared(raw: str, *, source: str) -> bool | str:
    """``REDISGUARD_SHARED_BREAKERS``: ``1``/``true``/``yes``/``on`` is True, ``0``/``false``/
    ``no``/``off``/empty is False, anything else is a namespace.

    Raises:
        ConfigError: a namespace that is not 1-128 of ``A-Z a-z 0-9 . _ : @ / -``.
    """
    value = raw.strip()
    if value.lower() in _ON:
        return True
    if value.lower() in _OFF:
        return False
    check_namespace(value, source=source)
    return value


def check_namespace(value: str, *, source: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a valid namespace."""
    if not isinstance(value, str) or not _NAMESPACE.fullmatch(value):
        raise ConfigError(
            f"{source} must be 1/true/yes/on, 0/false/no/off, or a namespace of 1-128 "
            f"letters, digits and . _ : @ / - (starting with a letter or digit), got {value!r}"
        )


def _redis_target(url: str) -> str:
    """``host:port/db`` (or the socket path) of a Redis URL: no user, no password."""
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"unix:{parts.path}"
        host = parts.hostname or "localhost"
        port = parts.port or 6379
    except ValueError:
        return "unparsable-url"
    db = parts.path.strip("/") or "0"
    return f"{host}:{port}/{db}"


def derive_namespace(env: Mapping[str, str] | None = None, redis_url: str | None = None) -> str:
    """The default namespace: ``<service>@<redis host:port/db>``.

    The service is ``$OTEL_SERVICE_NAME``, else the program's name (``sys.argv[0]``); the
    Redis is ``redis_url``, else ``$REDIS_URL``, else ``localhost:6379/0`` -- never with
    its credentials. Two services on one host that guard different Redis servers with a
    breaker of the same name therefore never share state; give an explicit namespace when
    the defaults do not tell your services apart.
    """
    env = os.environ if env is None else env
    service = env.get("OTEL_SERVICE_NAME") or Path(sys.argv[0] if sys.argv else "").name
    url = redis_url or env.get("REDIS_URL") or "redis://localhost:6379/0"
    return f"{service or 'python'}@{_redis_target(url)}"


def fingerprint(name: str, namespace: str, config: BreakerConfig) -> bytes:
    """32 bytes that differ whenever the layout, name, namespace or any setting does."""
    fields = {k: v for k, v in sorted(asdict(config).items()) if k != "shared"}
    text = repr((LAYOUT_VERSION, name, namespace, sorted(fields.items())))
    return hashlib.sha256(text.encode()).digest()


def segment_path(name: str, namespace: str, directory: str | None = None) -> Path:
    """Where the segment of breaker ``name`` in ``namespace`` lives."""
    base = Path(directory or os.environ.get(DIR_ENV) or DEFAULT_DIR)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:32]
    digest = hashlib.sha256(f"{namespace}\0{name}".encode()).hexdigest()[:20]
    return base / f"redisguard-{os.geteuid()}-{safe}-{digest}"


def _size(ring: int) -> tuple[int, int]:
    """(record end, file size): the record, then its backup."""
    end = RING + 16 * ring
    return end, end + (end - REC)


class Ring:
    """A ring of monotonic timestamps in the segment (a run of failures or of refusals),
    with the few ``deque`` operations the breaker uses. Changes happen under the host lock;
    :meth:`count` only reads.

    Args:
        segment: The segment.
        length_at, head_at: Offsets of its u32 length and head.
        base: Offset of its first slot.
        flag_at: Offset of a byte kept at 1 while the ring holds entries, or None.
    """

    __slots__ = ("_base", "_flag", "_head", "_len", "_seg", "_size")

    def __init__(
        self, segment: HostSegment, length_at: int, head_at: int, base: int, flag_at: int | None
    ) -> None:
        self._seg, self._len, self._head, self._base = segment, length_at, head_at, base
        self._flag, self._size = flag_at, segment.ring

    def __len__(self) -> int:
        return self._seg.u32(self._len)

    def __getitem__(self, index: int) -> float:
        if index != 0 or not len(self):
            raise IndexError("a host ring only gives its oldest entry, [0], when not empty")
        return self._seg.f64(self._base + 8 * self._seg.u32(self._head))

    def count(self, horizon: float) -> int:
        """Entries newer than ``horizon`` (read-only: no lock needed)."""
        seg, length, head = self._seg, len(self), self._seg.u32(self._head)
        count = 0
        for i in range(length - 1, -1, -1):  # newest first; they are in time order
            if seg.f64(self._base + 8 * ((head + i) % self._size)) <= horizon:
                break
            count += 1
        return count

    def append(self, moment: float) -> None:
        """Add an entry (the oldest is dropped when the ring is full)."""
        seg, length, head = self._seg, len(self), self._seg.u32(self._head)
        if length == self._size:
            head = (head + 1) % self._size
            length -= 1
        seg.set_f64(self._base + 8 * ((head + length) % self._size), moment)
        seg.set_u32(self._head, head)
        seg.set_u32(self._len, length + 1)
        if self._flag is not None:
            seg.set_u8(self._flag, 1)

    def popleft(self) -> float:
        oldest = self[0]
        seg = self._seg
        seg.set_u32(self._head, (seg.u32(self._head) + 1) % self._size)
        seg.set_u32(self._len, len(self) - 1)
        if self._flag is not None and not len(self):
            seg.set_u8(self._flag, 0)
        return oldest

    def clear(self) -> None:
        self._seg.set_u32(self._len, 0)
        self._seg.set_u32(self._head, 0)
        if self._flag is not None:
            self._seg.set_u8(self._flag, 0)


class _Head(ctypes.Structure):
    """The record's first two bytes, read as attributes straight from the mapping."""

    _fields_ = [("_code", ctypes.c_uint8), ("failing", ctypes.c_uint8)]


class _Gate(ctypes.Structure):
    """One gate byte, read as ``._code``."""

    _fields_ = [("_code", ctypes.c_uint8)]


class HostSegment:
    """One breaker's mapped segment: open (or create, or replace) it and lock it.

    Args:
        path: The file (see :func:`segment_path`).
        print_: The configuration fingerprint (see :func:`fingerprint`).
        ring: Slots in the failure ring (the breaker's ``failure_threshold``).

    Raises:
        ConfigError: the directory is missing, the file is not a regular file owned by this
            user with mode 0600, or it cannot be created or mapped.
    """

    def __init__(self, path: Path, print_: bytes, ring: int) -> None:
        if not 1 <= ring <= MAX_RING:
            raise ConfigError(
                f"a host-shared breaker takes failure_threshold up to {MAX_RING}, got {ring}"
            )
        self.path = path
        self.ring = ring
        self._print = print_
        self._end, self._bytes = _size(ring)
        self.fd = -1
        for _ in range(20):  # another process may replace the file under us: try again
            fd = self._open()
            try:
                if self._attach(fd):
                    break
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)
        else:  # pragma: no cover - 20 replacements in a row
            raise ConfigError(f"host segment {path} kept being replaced; giving up")
        self.mm = mmap.mmap(self.fd, self._bytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        #: The whole segment as bytes (lock-free reads of single bytes).
        self.view = memoryview(self.mm)
        #: The state byte as an attribute, ``head._code`` (0 closed): what the guard's happy
        #: path reads, as cheap as reading a plain attribute.
        self.head = _Head.from_buffer(self.mm, STATE)
        #: True while the failure ring holds a run to clear (``bool()`` reads the byte).
        self.failing = ctypes.c_uint8.from_buffer(self.mm, FAILING)
        #: The write and delete gates' codes as attributes (``write_head._code``).
        self.write_head = _Gate.from_buffer(self.mm, W_WRITE_GATE)
        self.delete_head = _Gate.from_buffer(self.mm, W_DELETE_GATE)
        #: The run of failures (the main side) and of write refusals (the write side).
        self.failures = Ring(self, RING_LEN, RING_HEAD, RING, FAILING)
        self.refusals = Ring(self, W_RING_LEN, W_RING_HEAD, RING + 8 * ring, None)
        self.locked = False

    # -- opening -------------------------------------------------------------------------
    def _open(self) -> int:
        if fcntl is None:  # pragma: no cover - not POSIX
            raise ConfigError("host-shared breakers need a POSIX system (flock and mmap)")
        directory = self.path.parent
        if not directory.is_dir():
            raise ConfigError(
                f"host-shared breakers need the directory {directory} (set {DIR_ENV} to "
                "an existing directory, e.g. a tmpfs)"
            )
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(self.path, flags, 0o600)
        except OSError as exc:
            hint = " (a symlink is refused)" if exc.errno == errno.ELOOP else ""
            raise ConfigError(f"cannot open host segment {self.path}{hint}: {exc}") from exc
        try:
            self._check_owner(fd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _check_owner(self, fd: int) -> None:
        info = os.fstat(fd)
        mode = stat.S_IMODE(info.st_mode)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or mode & 0o077:
            raise ConfigError(
                f"refusing host segment {self.path}: owned by uid {info.st_uid} with mode "
                f"{mode:04o}; it must be a regular file owned by uid {os.geteuid()} with mode "
                "0600 (remove it, or set a different namespace)"
            )

    def _attach(self, fd: int) -> bool:
        """Under the file lock: use, initialise or replace the file. False: start over."""
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            info = os.fstat(fd)
            if info.st_nlink == 0:
                return False  # replaced while we waited for the lock
            header = os.pread(fd, 64, 0)
            if len(header) >= 48 and header[:8] == _MAGIC:
                ready = _U32.unpack_from(header, _OFF_READY)[0] == 1
                same = header[_OFF_FINGERPRINT:48] == self._print
                if ready and same and info.st_size == self._bytes:
                    self.fd = fd
                    return True
                if ready:
                    # A previous deployment's segment (another layout or configuration):
                    # unlink it; its processes keep their mapping, new ones get a new file.
                    logger.warning(
                        "redisguard: replacing host segment %s: it was made with another "
                        "configuration (a previous deployment?); its state is not reused",
                        self.path,
                        extra={"category": "circuit-breaker"},
                    )
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(self.path)
                    return False
            # New (or left half-initialised by a process that died): initialise in place.
            os.ftruncate(fd, 0)
            os.ftruncate(fd, self._bytes)
            head = bytearray(64)
            head[:8] = _MAGIC
            _U32.pack_into(head, _OFF_VERSION, LAYOUT_VERSION)
            head[_OFF_FINGERPRINT:48] = self._print
            os.pwrite(fd, bytes(head), 0)
            os.pwrite(fd, _U32.pack(1), _OFF_READY)  # last: a half-written header is not ready
            self.fd = fd
            return True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def after_fork(self) -> None:
        """In a forked child: a new open file description, so that ``flock`` excludes the
        parent (the inherited one is the parent's lock). The mapping is inherited."""
        old = self.fd
        try:
            self.fd = os.open(f"/proc/self/fd/{old}", os.O_RDWR | os.O_CLOEXEC)
        except OSError:  # pragma: no cover - no /proc: the path (it may have been replaced)
            self.fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        os.close(old)
        self.locked = False

    def close(self) -> None:
        """Unmap and close (the file stays for the other processes)."""
        del self.head, self.failing, self.write_head, self.delete_head
        with contextlib.suppress(BufferError, ValueError):
            self.view.release()
            self.mm.close()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    # -- transactions --------------------------------------------------------------------
    def lock(self) -> None:
        """Take the host lock and start a transaction (roll back a dead holder's first)."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        mm = self.mm
        if _U32.unpack_from(mm, _OFF_DIRTY)[0]:
            # Its holder died inside a transaction (the lock is only released after the
            # commit): put the record back as it was before that transaction began.
            mm[REC : self._end] = mm[self._end : self._bytes]
        mm[self._end : self._bytes] = mm[REC : self._end]
        _U32.pack_into(mm, _OFF_DIRTY, os.getpid())
        self.locked = True

    def unlock(self) -> None:
        """Commit the transaction and release the host lock."""
        self.locked = False
        _U32.pack_into(self.mm, _OFF_DIRTY, 0)
        fcntl.flock(self.fd, fcntl.LOCK_UN)

    # -- fields ----------------------------------------------------------------------------
    def u8(self, offset: int) -> int:
        return self.mm[offset]

    def set_u8(self, offset: int, value: int) -> None:
        self.mm[offset] = value

    def u32(self, offset: int) -> int:
        return int(_U32.unpack_from(self.mm, offset)[0])

    def set_u32(self, offset: int, value: int) -> None:
        _U32.pack_into(self.mm, offset, value)

    def u64(self, offset: int) -> int:
        return int(_U64.unpack_from(self.mm, offset)[0])

    def set_u64(self, offset: int, value: int) -> None:
        _U64.pack_into(self.mm, offset, value)

    def f64(self, offset: int) -> float:
        return float(_F64.unpack_from(self.mm, offset)[0])

    def set_f64(self, offset: int, value: float) -> None:
        _F64.pack_into(self.mm, offset, value)

    def text(self, length_at: int = CAUSE_LEN, at: int = CAUSE_TEXT, limit: int = CAUSE_MAX) -> str:
        """A text field (default: what opened the breaker)."""
        length = min(self.u32(length_at), limit)
        return bytes(self.mm[at : at + length]).decode("utf-8", "replace")

    def set_text(
        self, value: str, length_at: int = CAUSE_LEN, at: int = CAUSE_TEXT, limit: int = CAUSE_MAX
    ) -> None:
        data = value.encode("utf-8")[:limit]
        self.mm[at : at + len(data)] = data
        self.set_u32(length_at, len(data))

    # -- trial slots per process (under the lock) ----------------------------------------------
    def hold(self, pid: int, delta: int) -> None:
        """Count ``delta`` trial slots more (or fewer) held by ``pid``."""
        free = -1
        for i in range(PID_SLOTS):
            at = PIDS + 8 * i
            owner = self.u32(at)
            if owner == pid:
                self.set_u32(at + 4, max(0, self.u32(at + 4) + delta))
                return
            if free < 0 and (owner == 0 or self.u32(at + 4) == 0):
                free = i
        if delta > 0 and free >= 0:
            self.set_u32(PIDS + 8 * free, pid)
            self.set_u32(PIDS + 8 * free + 4, delta)

    def reclaim_dead(self) -> int:
        """Forget the trial slots of processes that no longer exist; return how many."""
        freed = 0
        for i in range(PID_SLOTS):
            at = PIDS + 8 * i
            owner, held = self.u32(at), self.u32(at + 4)
            if owner and held and not pid_alive(owner):
                freed += held
                self.set_u32(at, 0)
                self.set_u32(at + 4, 0)
        return freed

    def clear_holds(self) -> None:
        self.mm[PIDS:RING] = bytes(RING - PIDS)


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (on this host, in this pid namespace)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
