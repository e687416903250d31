"""Per-operation counters and the hooks that report degraded calls (logs; spans come later).

Counting must cost next to nothing on the happy path, so successes only bump a
:class:`~redisguard._tally.Tally`; exporters read the totals when they collect.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._classify import ErrorKind
from ._fork import renew_lock_after_fork
from ._tally import Tally, TallyGroup

if TYPE_CHECKING:
    from ._breaker import Breaker

__all__ = ["FAILURE_KINDS", "OperationStats", "operation_stats", "operations"]

#: The :class:`~redisguard.ErrorKind` values of the failed attempts a guard handles (every kind
#: but ``propagate``), the ``kind`` label of ``redis_operation_failures_total``.
FAILURE_KINDS = tuple(kind.value for kind in ErrorKind if kind is not ErrorKind.PROPAGATE)


def _failure_tallies() -> dict[str, Tally]:
    return {kind: Tally() for kind in FAILURE_KINDS}


@dataclass(eq=False)
class OperationStats:
    """Running totals for one guarded operation name (shared by all decorators using it)."""

    name: str
    breaker_obj: Breaker
    success: TallyGroup = field(default_factory=TallyGroup)
    fallback: Tally = field(default_factory=Tally)
    error: Tally = field(default_factory=Tally)
    retries: Tally = field(default_factory=Tally)
    #: Failed attempts the guard handled, by classification (``FAILURE_KINDS``).
    failures: dict[str, Tally] = field(default_factory=_failure_tallies)

    @property
    def breaker(self) -> str:
        """The name of the breaker guarding this operation."""
        return self.breaker_obj.name

    def snapshot(self) -> dict[str, int]:
        """The totals as plain numbers."""
        return {
            "success": self.success.value,
            "fallback": self.fallback.value,
            "error": self.error.value,
            "retries": self.retries.value,
        }


_operations: dict[str, OperationStats] = {}
_lock = threading.Lock()
renew_lock_after_fork(__name__, "_lock")


def operation_stats(name: str, breaker: Breaker) -> OperationStats:
    """Return the stats object for ``name``, creating it on first use.

    Several decorators may share an operation name; the first one's breaker is reported.
    """
    with _lock:
        stats = _operations.get(name)
        if stats is None:
            stats = _operations[name] = OperationStats(name, breaker)
        return stats


def operations() -> list[OperationStats]:
    """Every registered operation, sorted by name."""
    with _lock:
        return sorted(_operations.values(), key=lambda s: s.name)


def _clear_operations() -> None:
    with _lock:
        _operations.clear()
