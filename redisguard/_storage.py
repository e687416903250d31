"""Breaker state storage: the in-memory window that decides trips, and the link to a
pybreaker ``CircuitBreakerStorage`` that a breaker writes through to.

A :class:`~redisguard.Breaker` always decides with its own :class:`WindowStorage` (failure
timestamps inside the monitoring window, in memory). When it is built with
``state_storage=`` it also mirrors every change into that storage through a
:class:`StorageLink`, and re-reads the storage's state where that is cheap enough:

* the happy path (closed, the call succeeds, no failures to clear) never touches it;
* the failure path re-reads the state first (another process may have opened it);
* admission while half-open, or while open once the local ``reset_timeout`` has elapsed,
  re-reads it too; a call refused because the circuit is open and waiting answers from
  memory.

Every :class:`StorageLink` method runs under the breaker's gate, so a slow storage slows
failures and transitions (never the happy path). ``StorageLink`` is the seam a storage
shared by every process on a host plugs into: implement its methods over that storage.

The trap: ``pybreaker.CircuitRedisStorage`` on the Redis the breaker guards fails exactly
when the breaker is needed. With Redis down, each read waits for the client's timeouts and
retries under the gate and then reports the fallback state (``closed``), and it crashes
on a client built with ``decode_responses=True``. Keep breaker state somewhere else.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pybreaker

__all__ = ["Snapshot", "StorageLink", "WindowStorage"]

logger = logging.getLogger("redisguard")


class WindowStorage(pybreaker.CircuitMemoryStorage):
    """pybreaker storage whose failure counter only counts failures inside the window.

    ``_failures`` is the deque the guard's fast path checks; it is cleared in place and
    never rebound.
    """

    def __init__(self, window: float, clock: Callable[[], float]) -> None:
        super().__init__(pybreaker.STATE_CLOSED)
        self._window = window
        self._clock = clock
        self._failures: deque[float] = deque()

    def increment_counter(self) -> None:
        self._failures.append(self._clock())

    def reset_counter(self) -> None:
        self._failures.clear()

    def seed(self, failures: int) -> None:
        """Start with ``failures`` failures recorded now (taken over from another storage)."""
        now = self._clock()
        self._failures.extend(now for _ in range(failures))

    @property
    def counter(self) -> int:
        horizon = self._clock() - self._window
        failures = self._failures
        while failures and failures[0] <= horizon:
            failures.popleft()
        return len(failures)


@dataclass(frozen=True)
class Snapshot:
    """What a storage holds when a breaker is built on it."""

    state: str
    failures: int
    successes: int
    opened_at: datetime | None


class StorageLink:
    """Write-through to, and re-reads from, a storage that is not the breaker's own.

    A storage that raises is logged and ignored: the breaker keeps deciding from memory.

    Args:
        storage: Any ``pybreaker.CircuitBreakerStorage``.
    """

    def __init__(self, storage: pybreaker.CircuitBreakerStorage) -> None:
        self.storage = storage

    def load(self) -> Snapshot:
        """Everything a new breaker takes over (an error here is the caller's to see)."""
        storage = self.storage
        state = storage.state
        return Snapshot(
            state=state,
            failures=int(storage.counter or 0),
            successes=int(storage.success_counter or 0),
            opened_at=_aware(storage.opened_at) if state == pybreaker.STATE_OPEN else None,
        )

    def read_state(self) -> tuple[str, datetime | None] | None:
        """The storage's state and, when open, its ``opened_at``; None if it failed."""
        try:
            state = self.storage.state
            opened_at = self.storage.opened_at if state == pybreaker.STATE_OPEN else None
        except Exception:
            _log_failure(self.storage, "read")
            return None
        return state, _aware(opened_at)

    def failed(self) -> None:
        """One more consecutive failure."""
        self._write("increment_counter")

    def failures_cleared(self) -> None:
        """A success ended the run of failures."""
        self._write("reset_counter")

    def trial_succeeded(self) -> None:
        """One more successful half-open trial."""
        self._write("increment_success_counter")

    def trials_restarted(self) -> None:
        """A new round of half-open trials starts from no successes."""
        self._write("reset_success_counter")

    def moved(self, state: str, opened_at: datetime | None) -> None:
        """The breaker moved to ``state`` (``opened_at`` given when it opened)."""
        try:
            storage = self.storage
            if opened_at is not None:
                storage.opened_at = opened_at
            storage.state = state
            if state == pybreaker.STATE_CLOSED:
                storage.reset_counter()
            storage.reset_success_counter()
        except Exception:
            _log_failure(self.storage, "write")

    def _write(self, method: str) -> None:
        try:
            getattr(self.storage, method)()
        except Exception:
            _log_failure(self.storage, "write")


def _aware(moment: Any) -> datetime | None:
    """A storage's ``opened_at`` as an aware datetime (naive ones are taken as UTC)."""
    if not isinstance(moment, datetime):
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=timezone.utc)


def _log_failure(storage: object, action: str) -> None:
    logger.exception(
        "breaker state storage %s failed to %s; deciding from memory",
        type(storage).__name__,
        action,
        extra={"category": "circuit-breaker"},
    )
