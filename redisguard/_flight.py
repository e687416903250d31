"""Single-flight: concurrent callers for one key share one run of the work (in-process).

:class:`Flights` serves threads, :class:`AsyncFlights` asyncio tasks (one table per event
loop, so tasks of different loops never wait on each other's futures). The first caller for a
key is the *leader* and runs the work; callers that arrive while it runs wait and get the
leader's result, or its exception. No lock is held while the work runs.

If the leader ends with a ``BaseException`` that is not an ``Exception`` (its task was
cancelled, the thread interrupted), the waiters do not inherit it: one of them becomes the
next leader and runs the work itself.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, TypeVar

from ._fork import after_fork

__all__ = ["AsyncFlights", "Flights"]

T = TypeVar("T")


class _Flight:
    __slots__ = ("done", "error", "ok", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None
        self.ok = False


class Flights:
    """Single-flight for threads."""

    __slots__ = ("__weakref__", "_flights", "_lock")

    def __init__(self) -> None:
        self._flights: dict[Hashable, _Flight] = {}
        self._lock = threading.Lock()
        after_fork(self, Flights._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()
        self._flights.clear()  # their leaders are threads the child does not have

    def __bool__(self) -> bool:
        return bool(self._flights)

    def join(self, key: Hashable) -> tuple[bool, Any]:
        """Wait for a flight for ``key`` in progress: ``(True, its value)``, or ``(False,
        None)`` when there is none (or its leader was interrupted); re-raises its error."""
        flight = self._flights.get(key)
        if flight is None:
            return False, None
        flight.done.wait()
        if flight.ok:
            return True, flight.value
        if isinstance(flight.error, Exception):
            raise flight.error
        return False, None

    def run(self, key: Hashable, work: Callable[[], T]) -> tuple[T, bool]:
        """``work()`` once for all callers that ask for ``key`` while it runs.

        Returns:
            The value, and whether this caller ran the work (False: it waited).
        """
        while True:
            with self._lock:
                flight = self._flights.get(key)
                leader = flight is None
                if flight is None:
                    flight = self._flights[key] = _Flight()
            if leader:
                return self._lead(key, flight, work), True
            flight.done.wait()
            if flight.ok:
                value: T = flight.value
                return value, False
            if isinstance(flight.error, Exception):
                raise flight.error
            # The leader was interrupted: try again (one of us leads next).

    def _lead(self, key: Hashable, flight: _Flight, work: Callable[[], T]) -> T:
        try:
            value = work()
        except BaseException as exc:
            flight.error = exc
            raise
        else:
            flight.value, flight.ok = value, True
            return value
        finally:
            with self._lock:
                if self._flights.get(key) is flight:
                    del self._flights[key]
            flight.done.set()


class _Interrupted(Exception):
    """The leader task was cancelled: a waiter takes over."""


class AsyncFlights:
    """Single-flight for asyncio tasks, one table per running loop."""

    __slots__ = ("_flights",)

    def __init__(self) -> None:
        # (loop, key) -> the leader's future. Plain dict operations only, each atomic; every
        # entry is removed when its leader ends, so no loop is kept alive.
        self._flights: dict[tuple[asyncio.AbstractEventLoop, Hashable], asyncio.Future[Any]] = {}

    def __bool__(self) -> bool:
        return bool(self._flights)

    async def join(self, key: Hashable) -> tuple[bool, Any]:
        """The asyncio twin of :meth:`Flights.join`."""
        future = self._flights.get((asyncio.get_running_loop(), key))
        if future is None:
            return False, None
        try:
            return True, await asyncio.shield(future)
        except _Interrupted:
            return False, None

    async def run(self, key: Hashable, work: Callable[[], Awaitable[T]]) -> tuple[T, bool]:
        """``await work()`` once for all tasks of this loop that ask for ``key`` meanwhile.

        Returns:
            The value, and whether this task ran the work (False: it waited).
        """
        loop = asyncio.get_running_loop()
        slot = (loop, key)
        while True:
            future = self._flights.get(slot)
            if future is None:
                break
            try:
                # shield: a waiter's cancellation must not cancel the leader's future.
                value: T = await asyncio.shield(future)
                return value, False
            except _Interrupted:
                continue
        future = loop.create_future()
        self._flights[slot] = future
        try:
            value = await work()
        except Exception as exc:
            future.set_exception(exc)
            raise
        except BaseException:
            future.set_exception(_Interrupted())
            raise
        else:
            future.set_result(value)
            return value, True
        finally:
            if self._flights.get(slot) is future:
                del self._flights[slot]
            if not future.cancelled():
                future.exception()  # retrieved: waiters may be gone; nobody must be warned
