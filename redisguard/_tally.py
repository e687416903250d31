"""An exact event counter for hot paths: no lock on write, no lost increments.

``x += 1`` on a shared attribute can lose increments between threads, and a lock would cost
more than the rest of the happy path. Each thread increments its own cell; readers (metric
exporters, ``stats()``) sum the cells under a lock. When a thread ends, its cell is folded into
a base total, so memory stays bounded however many threads come and go. A hot path that adds
one at a time steps :meth:`Tally.counter` instead, an ``itertools.count`` (one C call, atomic
under the GIL, as the window's call numbers are); the total includes its steps.

Fork-safe: a thread's end is noted without taking the lock (in a child made by
``os.fork()`` the other threads' cells are retired while the child is being set up, and a
lock another thread held at that moment is never released), and each tally resets its
lock in the child and folds the cells of threads the child does not have into its base.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections.abc import Iterator

from ._fork import after_fork

__all__ = ["Tally", "TallyGroup"]


class _Cell:
    __slots__ = ("n",)

    def __init__(self) -> None:
        self.n = 0


class _Owner:
    """Lives in the thread-local; its finalizer retires the cell when the thread ends."""

    __slots__ = ("__weakref__", "cell")

    def __init__(self, cell: _Cell) -> None:
        self.cell = cell


class Tally:
    """A counter that is cheap and exact under threads and asyncio."""

    __slots__ = ("__weakref__", "_base", "_cells", "_local", "_lock", "_ones", "_retired")

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._cells: list[_Cell] = []
        self._retired: list[_Cell] = []  # cells of ended threads, not yet folded
        self._base = 0
        self._ones = itertools.count()  # adds of one from hot paths (see counter())
        after_fork(self, Tally._after_fork)

    def add(self, amount: int = 1) -> None:
        """Add ``amount`` (default 1) from the calling thread."""
        try:
            cell: _Cell = self._local.owner.cell
        except AttributeError:
            cell = self._new_cell()
        cell.n += amount

    def counter(self) -> Iterator[int]:
        """An ``itertools.count`` whose steps this tally includes: ``next(counter)`` adds one.

        What a hot path uses instead of :meth:`add` (the guard counts every success this way):
        one C call, atomic under CPython's GIL as the window's call numbers are, with no
        Python frame and no thread-local lookup. Never rebound, not even after a fork.
        """
        return self._ones

    def _new_cell(self) -> _Cell:
        cell = _Cell()
        owner = _Owner(cell)
        with self._lock:
            self._fold_retired()
            self._cells.append(cell)
        # The finalizer holds the cell itself, so its final count is still readable, and only
        # a weak reference to the tally, so a dropped tally is freed even if threads live on.
        weakref.finalize(owner, _retire, weakref.ref(self), cell)
        self._local.owner = owner
        return cell

    def _retire(self, cell: _Cell) -> None:
        self._retired.append(cell)  # atomic; the cell still counts until folded

    def _fold_retired(self) -> None:
        """Fold the cells of ended threads into the base (caller holds the lock)."""
        retired = self._retired
        while retired:
            cell = retired.pop()
            if any(c is cell for c in self._cells):  # not folded already (after a fork)
                self._base += cell.n
                self._cells.remove(cell)

    @property
    def value(self) -> int:
        """The total added so far, from every thread."""
        with self._lock:
            self._fold_retired()
            ones = int(repr(self._ones)[6:-1])  # "count(N)": N is the next value, not taken
            return self._base + sum(cell.n for cell in self._cells) + ones

    def _after_fork(self) -> None:
        """In a forked child only the forking thread lives: keep its cell, fold the rest."""
        self._lock = threading.Lock()
        owner = getattr(self._local, "owner", None)
        mine = None if owner is None else owner.cell
        self._fold_retired()
        for cell in self._cells:
            if cell is not mine:
                self._base += cell.n
        self._cells = [] if mine is None else [mine]


def _retire(tally_ref: weakref.ref[Tally], cell: _Cell) -> None:
    """Fold a finished thread's cell into its tally, if the tally still exists."""
    tally = tally_ref()
    if tally is not None:
        tally._retire(cell)


class TallyGroup:
    """The sum of several tallies, so one event is counted once but reported in two places.

    A guarded success bumps only its guard's tally; the operation's and the breaker's totals
    are groups that include it.
    """

    __slots__ = ("__weakref__", "_lock", "_members")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: list[Tally] = []
        after_fork(self, TallyGroup._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork

    def attach(self, tally: Tally) -> Tally:
        """Include ``tally`` in this group's total (idempotent); return it."""
        with self._lock:
            if not any(member is tally for member in self._members):
                self._members.append(tally)
        return tally

    def new(self) -> Tally:
        """A fresh tally that is part of this group."""
        return self.attach(Tally())

    @property
    def value(self) -> int:
        """The sum of every member's total."""
        with self._lock:
            members = list(self._members)
        return sum(member.value for member in members)
