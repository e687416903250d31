"""The in-process L1 behind serve-stale: bounds, LRU order, versions, blocks, threads."""

from __future__ import annotations

import threading

import pytest

from redisguard import ConfigError
from redisguard._l1 import L1, Entry


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_put_get_and_age() -> None:
    """A put value comes back with the time it was stored; its age follows the clock."""
    clock = Clock()
    l1 = L1(max_entries=4, clock=clock)
    assert l1.put("a", {"x": 1}, 10)
    clock.now = 102.5
    entry = l1.get("a")
    assert entry == Entry({"x": 1}, 100.0, 10)
    assert entry is not None
    assert l1.age(entry) == 2.5
    assert l1.get("missing") is None
    assert len(l1) == 1
    assert l1.nbytes == 10


def test_entry_bound_evicts_least_recently_used() -> None:
    """Past max_entries the least recently put-or-served entry goes first."""
    l1 = L1(max_entries=2)
    l1.put("a", 1)
    l1.put("b", 2)
    assert l1.get("a") is not None  # a is now the most recent
    l1.put("c", 3)
    assert l1.peek("b") is None
    assert l1.peek("a") is not None
    assert l1.peek("c") is not None
    assert len(l1) == 2


def test_byte_bound_evicts_and_refuses_oversized() -> None:
    """The declared sizes stay under max_bytes; an entry above it is not stored."""
    l1 = L1(max_entries=None, max_bytes=100)
    assert l1.put("a", "A", 60)
    assert l1.put("b", "B", 30)
    assert l1.put("c", "C", 30)  # 120 > 100: a goes
    assert l1.peek("a") is None
    assert l1.nbytes == 60
    assert not l1.put("huge", "H", 101)
    assert l1.peek("huge") is None
    assert l1.put("b", "B2", 5)  # replacing an entry replaces its size
    assert l1.nbytes == 35


def test_put_since_an_older_version_is_dropped() -> None:
    """A value read before a removal is not put back after it."""
    l1 = L1()
    version = l1.version
    l1.discard("k")  # a concurrent invalidation (even of another key)
    assert not l1.put("k", "old", since=version)
    assert l1.peek("k") is None
    assert l1.put("k", "new", since=l1.version)


def test_block_refuses_put_and_serve_until_unblocked() -> None:
    """A blocked key is removed, not stored again, and served again only after unblock."""
    l1 = L1()
    l1.put("k", "v")
    l1.block("k")
    assert l1.is_blocked("k")
    assert l1.blocked() == ["k"]
    assert l1.get("k") is None
    assert not l1.put("k", "v2")
    l1.unblock("k")
    assert not l1.is_blocked("k")
    assert l1.put("k", "v3")
    assert l1.get("k") is not None


def test_blocks_are_bounded() -> None:
    """At most max_entries keys stay blocked; the oldest block is forgotten first."""
    l1 = L1(max_entries=2)
    for key in ("a", "b", "c"):
        l1.block(key)
    assert l1.blocked() == ["b", "c"]


def test_clear_keeps_blocks() -> None:
    """clear() drops every entry and its bytes; blocked keys stay blocked."""
    l1 = L1()
    l1.put("a", 1, 3)
    l1.block("b")
    l1.clear()
    assert len(l1) == 0
    assert l1.nbytes == 0
    assert l1.is_blocked("b")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_entries": 0}, "max_entries"),
        ({"max_entries": True}, "max_entries"),
        ({"max_entries": 1.5}, "max_entries"),
        ({"max_bytes": -1}, "max_bytes"),
        ({"max_entries": None, "max_bytes": None}, "neither"),
    ],
)
def test_bad_bounds_are_config_errors(kwargs: dict[str, object], message: str) -> None:
    """Each invalid bound raises a ConfigError naming it."""
    with pytest.raises(ConfigError, match=message):
        L1(**kwargs)  # type: ignore[arg-type]


def test_threads_keep_bounds_and_byte_count_exact() -> None:
    """8 threads putting and discarding leave the counts consistent and within bounds."""
    l1 = L1(max_entries=50, max_bytes=2_000)

    def work(n: int) -> None:
        for i in range(3_000):
            key = (n * 7 + i) % 120
            if i % 5 == 0:
                l1.discard(key)
            else:
                l1.put(key, i, size=i % 40)
                l1.get((key + 1) % 120)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(l1) <= 50
    assert l1.nbytes <= 2_000
    held = [l1.peek(k) for k in range(120)]
    assert l1.nbytes == sum(e.size for e in held if e is not None)
