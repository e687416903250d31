"""Tally: an exact counter for hot paths, under threads that come and go."""

from __future__ import annotations

import asyncio
import threading
import time

from redisguard._tally import Tally, TallyGroup


def test_counts_in_one_thread() -> None:
    """add() without an argument adds one; with one, adds that amount."""
    tally = Tally()
    assert tally.value == 0
    tally.add()
    tally.add(4)
    assert tally.value == 5


def test_exact_under_concurrent_threads() -> None:
    """8 threads adding 20 000 times each lose no increment."""
    tally = Tally()
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        for _ in range(20_000):
            tally.add()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert tally.value == 160_000


def test_totals_survive_threads_that_end() -> None:
    """Counts from finished threads stay in the total, and their cells are released."""
    tally = Tally()
    for _ in range(4):
        threads = [threading.Thread(target=tally.add, args=(3,)) for _ in range(25)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    assert tally.value == 300
    # Per-thread cells are folded into the base once their thread is gone.
    deadline = time.monotonic() + 5
    while tally._cells and time.monotonic() < deadline:
        time.sleep(0.01)
    assert tally._cells == []
    assert tally.value == 300


def test_counter_steps_are_in_the_total() -> None:
    """next() on counter() adds one from any thread, next to add(), in the tally and its group."""
    group = TallyGroup()
    tally = group.new()
    counter = tally.counter()
    barrier = threading.Barrier(8)

    def work() -> None:
        barrier.wait()
        for _ in range(20_000):
            next(counter)
        tally.add(2)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert tally.value == 160_016
    assert group.value == 160_016
    assert tally.counter() is counter


async def test_exact_across_asyncio_tasks() -> None:
    """Tasks interleaving on one event loop are all counted."""
    tally = Tally()

    async def work() -> None:
        for _ in range(100):
            tally.add()
            await asyncio.sleep(0)

    await asyncio.gather(*(work() for _ in range(20)))
    assert tally.value == 2000
