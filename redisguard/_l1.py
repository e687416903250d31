"""A bounded in-process LRU of values last confirmed by Redis, for serving stale.

:class:`L1` keeps ``(value, stored_at, size)`` per key, bounded by a number of entries and/or
a total of bytes (the size each ``put`` declares: the serialized size, so the bound tracks
what Redis held, not Python's object overhead). The least recently *put or served* entry is
evicted first. It is thread-safe: one lock guards the map, held only for the few dict
operations of a call, never across I/O (callers do their Redis call first, then ``put``).

Invalidation and the race it must win: a reader that GETs an old value from Redis, then puts
it into the L1 *after* a concurrent invalidation removed it, would bring the old value back.
So every removal (:meth:`L1.discard`, :meth:`L1.block`, :meth:`L1.unblock`, :meth:`L1.clear`)
bumps :attr:`L1.version`, and a reader passes the version it read *before* its Redis call
as ``put(..., since=version)``: the put is dropped if anything was removed meanwhile (a global
counter: conservative, and removals are rare).

Blocked keys: while an invalidation could not reach Redis, :meth:`L1.block` removes the entry
and keeps the key from being put or served until :meth:`L1.unblock`. At most ``max_entries``
keys are blocked; past that the oldest block is forgotten (its entry is already gone, so only
a later put from Redis can bring a value back).

API (all methods thread-safe, none does I/O)::

    l1 = L1(max_entries=10_000, max_bytes=None)
    version = l1.version                         # read before the Redis call
    l1.put(key, value, size=len(raw), since=version)  -> bool (False: dropped)
    l1.get(key) -> Entry | None                  # Entry(value, stored_at, size); LRU touch
    l1.peek(key) -> Entry | None                 # no LRU touch
    l1.discard(key) -> bool                      # removed?
    l1.block(key) / l1.unblock(key) / l1.is_blocked(key) / l1.blocked()
    l1.age(entry) -> seconds since entry.stored_at (on the L1's clock)
    l1.clear(); len(l1); l1.nbytes
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple

from ._errors import ConfigError
from ._fork import after_fork

__all__ = ["L1", "Entry"]


class Entry(NamedTuple):
    """One L1 entry: the value, when it was put (the L1's clock), its declared size."""

    value: Any
    stored_at: float
    size: int


_new_entry = tuple.__new__  # Entry(...) without the NamedTuple's Python-level __new__


def _bound(label: str, value: int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{label} must be a positive integer or None, got {value!r}")
    return value


class L1:
    """A bounded, thread-safe LRU of ``(value, stored_at, size)``.

    Args:
        max_entries: At most this many entries (None: no entry bound). Also bounds the
            number of blocked keys (10,000 when None).
        max_bytes: At most this many bytes, summed over the sizes given to :meth:`put`
            (None: no byte bound). An entry larger than ``max_bytes`` is not stored.
        clock: Seconds, monotonic; ``stored_at`` is on this clock.

    Raises:
        ConfigError: a bound that is not a positive integer, or both bounds None.
    """

    __slots__ = (
        "__weakref__",
        "_blocked",
        "_clock",
        "_entries",
        "_lock",
        "_nbytes",
        "max_blocked",
        "max_bytes",
        "max_entries",
        "version",
    )

    def __init__(
        self,
        max_entries: int | None = 10_000,
        max_bytes: int | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_entries = _bound("max_entries", max_entries)
        self.max_bytes = _bound("max_bytes", max_bytes)
        if self.max_entries is None and self.max_bytes is None:
            raise ConfigError("an L1 needs max_entries, max_bytes or both (got neither)")
        if not callable(clock):
            raise TypeError(f"clock must be callable, got {clock!r}")
        self.max_blocked = self.max_entries or 10_000
        self._clock = clock
        self._entries: OrderedDict[Hashable, Entry] = OrderedDict()
        self._blocked: OrderedDict[Hashable, None] = OrderedDict()
        self._nbytes = 0
        self._lock = threading.Lock()
        #: Bumped by every removal; pass the value read before a Redis call to :meth:`put`.
        self.version = 0
        after_fork(self, L1._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return (
            f"<L1 {len(self._entries)} entries, {self._nbytes} bytes "
            f"(max_entries={self.max_entries}, max_bytes={self.max_bytes})>"
        )

    @property
    def nbytes(self) -> int:
        """The sum of the sizes of the entries held."""
        return self._nbytes

    def now(self) -> float:
        """The L1's clock (what ``stored_at`` is measured on)."""
        return self._clock()

    def put(self, key: Hashable, value: Any, size: int = 0, *, since: int | None = None) -> bool:
        """Store ``value`` as confirmed now; evict the least recently used past the bounds.

        Args:
            key: The key.
            value: The value (kept as is; never copied).
            size: Its size in bytes for ``max_bytes`` (the serialized length).
            since: :attr:`version` read before the Redis call that produced ``value``; the
                put is dropped if an entry was removed since. None: always put.

        Returns:
            Whether it was stored (False: blocked key, removed since ``since``, or larger
            than ``max_bytes``).
        """
        max_bytes = self.max_bytes
        if max_bytes is not None and size > max_bytes:
            return False
        entry = _new_entry(Entry, (value, self._clock(), size))
        entries = self._entries
        with self._lock:
            if (since is not None and since != self.version) or (
                self._blocked and key in self._blocked
            ):
                return False
            old = entries.pop(key, None)
            if old is not None:
                self._nbytes -= old.size
            entries[key] = entry
            self._nbytes += size
            if (self.max_entries is not None and len(entries) > self.max_entries) or (
                max_bytes is not None and self._nbytes > max_bytes
            ):
                self._evict()
        return True

    def _evict(self) -> None:
        """Drop least recently used entries until within bounds (caller holds the lock)."""
        entries, max_entries, max_bytes = self._entries, self.max_entries, self.max_bytes
        while entries and (
            (max_entries is not None and len(entries) > max_entries)
            or (max_bytes is not None and self._nbytes > max_bytes)
        ):
            _, old = entries.popitem(last=False)
            self._nbytes -= old.size

    def get(self, key: Hashable) -> Entry | None:
        """The entry for ``key`` (marked most recently used), or None.

        Takes no lock: each step is one dict operation, atomic under the GIL for keys whose
        hash and equality are builtin (str, bytes, int, tuples of them).
        """
        entries = self._entries
        entry = entries.get(key)
        if entry is not None:
            try:  # noqa: SIM105 - contextlib.suppress costs more than the rest of get()
                entries.move_to_end(key)
            except KeyError:  # removed meanwhile: still the value we read
                pass
        return entry

    def peek(self, key: Hashable) -> Entry | None:
        """The entry for ``key`` without touching its LRU position, or None."""
        return self._entries.get(key)

    def age(self, entry: Entry) -> float:
        """Seconds since ``entry`` was put, on the L1's clock."""
        return self._clock() - entry.stored_at

    def discard(self, key: Hashable) -> bool:
        """Remove ``key``'s entry; True if there was one. Bumps :attr:`version`."""
        with self._lock:
            self.version += 1
            return self._remove(key)

    def _remove(self, key: Hashable) -> bool:
        old = self._entries.pop(key, None)
        if old is None:
            return False
        self._nbytes -= old.size
        return True

    def block(self, key: Hashable) -> None:
        """Remove ``key``'s entry and refuse to put or serve it until :meth:`unblock`."""
        with self._lock:
            self.version += 1
            self._remove(key)
            self._blocked[key] = None
            self._blocked.move_to_end(key)
            while len(self._blocked) > self.max_blocked:
                self._blocked.popitem(last=False)

    def unblock(self, key: Hashable) -> None:
        """Let ``key`` be put again (its invalidation reached Redis). Bumps :attr:`version`."""
        with self._lock:
            self.version += 1
            self._blocked.pop(key, None)

    def is_blocked(self, key: Hashable) -> bool:
        """Whether ``key`` is blocked (an invalidation has not reached Redis yet)."""
        return bool(self._blocked) and key in self._blocked

    def blocked(self) -> list[Hashable]:
        """The blocked keys, oldest block first."""
        with self._lock:
            return list(self._blocked)

    def clear(self) -> None:
        """Remove every entry (blocks stay). Bumps :attr:`version`."""
        with self._lock:
            self.version += 1
            self._entries.clear()
            self._nbytes = 0
