"""The bulkhead: at most N guarded calls per breaker in flight, for threads and asyncio tasks.

A slow Redis (a brownout, a big ``KEYS``) does not fail calls, it holds them. Without a limit
every worker thread, or every task of an event loop, ends up waiting on it. The bulkhead caps
how many calls of one breaker may be inside the guard at once; a call over the cap gets its
fallback at once (``ErrorKind.REJECTED``), which the breaker does not count.

The slot covers the whole guarded call, retries included, and is released on every path
(success, error, fallback, cancellation).

Cost: the slots are tokens in a pre-filled ``deque``; ``pop()`` and ``append()`` are atomic
in CPython, so taking and giving back a slot takes no lock. Only a call that finds no free
slot *and* may wait (``max_wait_for_slot > 0``) waits: a thread on a ``Condition``, a task by
polling with short ``asyncio.sleep``s (so it never blocks its event loop, and a slot freed by a
thread or by another loop wakes it as well). The guard's wrapper takes and gives back its slot
itself (:meth:`Bulkhead.slot_ops`), in its own frame: no extra wrapper layer per call.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable

from ._fork import after_fork
from ._tally import Tally

__all__ = ["Bulkhead", "bulkhead_for"]

# Polling steps of an asyncio task waiting for a slot: short at first, then at most 5 ms.
_FIRST_POLL = 0.0005
_MAX_POLL = 0.005


class Bulkhead:
    """At most ``limit`` concurrent holders; :meth:`acquire`/:meth:`aacquire` then :meth:`release`.

    Args:
        limit: How many slots there are.
        max_wait: Seconds a caller may wait for a slot when none is free (0: no wait).
    """

    __slots__ = (
        "__weakref__",
        "_cond",
        "_slots",
        "_waiters",
        "limit",
        "max_wait",
        "rejections",
    )

    def __init__(self, limit: int, max_wait: float = 0.0) -> None:
        self.limit = limit
        self.max_wait = max_wait
        self._slots: deque[None] = deque([None] * limit)
        self._cond = threading.Condition(threading.Lock())
        self._waiters = 0  # threads waiting on _cond; changed under it
        self.rejections = Tally()
        after_fork(self, Bulkhead._after_fork)

    def _after_fork(self) -> None:
        # The threads that held slots do not exist in a forked child: every slot is free.
        # Refilled in place: the wrappers hold the deque's bound methods.
        self._cond = threading.Condition(threading.Lock())
        self._waiters = 0
        self._slots.clear()
        self._slots.extend([None] * self.limit)

    @property
    def in_flight(self) -> int:
        """Slots held right now."""
        return self.limit - len(self._slots)

    @property
    def rejected_total(self) -> int:
        """Calls turned away since creation (never decreases; for metrics)."""
        return self.rejections.value

    def _notify(self) -> None:
        with self._cond:
            self._cond.notify()

    def acquire(self) -> bool:
        """Take a slot, waiting at most ``max_wait`` for one (thread); False: rejected."""
        try:
            self._slots.pop()
            return True
        except IndexError:
            return self._wait_or_reject()

    async def aacquire(self) -> bool:
        """Take a slot, awaiting at most ``max_wait`` for one (asyncio); False: rejected."""
        try:
            self._slots.pop()
            return True
        except IndexError:
            return await self._await_or_reject()

    def slot_ops(self) -> tuple[Callable[[], None], Callable[[None], None]]:
        """``(take, give)``: what the guard's wrapper inlines instead of acquire/release.

        ``take()`` raises IndexError when no slot is free (then call :meth:`_wait_or_reject`
        or :meth:`_await_or_reject`); after ``give(None)``, call :meth:`_notify` if
        ``_waiters`` is set. Both are the deque's bound methods: one C call each, no frame.
        """
        return self._slots.pop, self._slots.append

    def release(self) -> None:
        """Give a slot back (every acquire that returned True, exactly once)."""
        self._slots.append(None)
        if self._waiters:
            self._notify()

    def _wait_or_reject(self) -> bool:
        """The slow part of :meth:`acquire`: no slot was free."""
        if self.max_wait > 0 and self._wait():
            return True
        self.rejections.add()
        return False

    async def _await_or_reject(self) -> bool:
        """The slow part of :meth:`aacquire`: no slot was free."""
        if self.max_wait > 0 and await self._await():
            return True
        self.rejections.add()
        return False

    def _wait(self) -> bool:
        # A waiter is counted (under the lock) before it looks for a slot again, so a release
        # that happens after that look sees it and notifies once the waiter is in wait().
        deadline = time.monotonic() + self.max_wait
        with self._cond:
            self._waiters += 1
            try:
                while True:
                    try:
                        self._slots.pop()
                        return True
                    except IndexError:
                        pass
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    self._cond.wait(left)
            finally:
                self._waiters -= 1

    async def _await(self) -> bool:
        deadline = time.monotonic() + self.max_wait
        step = _FIRST_POLL
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.sleep(min(step, left))
            try:
                self._slots.pop()
                return True
            except IndexError:
                step = min(step * 2, _MAX_POLL)


def bulkhead_for(limit: int | None, max_wait: float) -> Bulkhead | None:
    """A bulkhead for a breaker's config, or None when ``max_concurrent_calls`` is None."""
    return None if limit is None else Bulkhead(limit, max_wait)
