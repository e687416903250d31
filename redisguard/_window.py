"""Failure-rate and slow-call windows: the resilience4j-style rules a breaker can open on.

A :class:`CallWindow` counts the outcomes of a closed breaker's calls over the last
``sliding_window_size`` calls (count-based) or the last ``monitoring_window`` seconds
(time-based) and says when the circuit should open:

* **failure-rate mode** (``failure_rate_threshold`` set): when at least that percent of the
  window's calls failed -- instead of after ``failure_threshold`` consecutive failures;
* **slow-call breaking** (``slow_call_duration`` set, in either mode): when at least
  ``slow_call_rate_threshold`` percent of the window's calls succeeded, but slower than
  ``slow_call_duration``.

Neither rate is judged before the window holds ``minimum_calls`` calls, and rates are judged
when a failure or a slow call is recorded (a fast success can only lower them).

How it is kept cheap (the guard inlines :meth:`CallWindow.note_fast` after a fast success,
see :meth:`CallWindow.fast_success`; the breaker calls the other hooks, see
``Breaker._on_success``):

* Every recorded call takes a number from an ``itertools.count`` -- one atomic C call in
  CPython, no lock. A fast success does only that (plus, time-based, a clock read and, once
  per bucket, an atomic store of the bucket's first call number). So the number of calls in
  the window is exact for a count-based window and exact up to calls racing across a bucket
  boundary for a time-based one: **success counts may be off by the few calls in flight at a
  bucket's start**, which moves a rate by a fraction of a percent and is accepted.
* Failures and slow calls are rare by design and are recorded under the breaker's gate, in
  a ring of buckets of their own that the lock-free path never writes: **failure and
  slow-call counts are exact**.
* Buckets: ten across the window (a count-based window of fewer than 20 calls uses one call
  per bucket). A time-based window covers the current bucket and the nine before it, so it
  spans between 90% and 100% of ``monitoring_window``; a count-based one covers the whole
  buckets that hold the last ``sliding_window_size`` calls, so it holds at least that many
  and at most one bucket more. Judging sums at most a few dozen buckets: O(1) per call.

A call's outcome is one of: a fast success, a slow success, or a failure (a failure is never
also slow: a call that times out is a failure). The window records only calls admitted while
the circuit was closed (not half-open trials), and starts empty each time the circuit closes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ._config import BreakerConfig
from ._errors import SlowCallsError

__all__ = ["BUCKETS", "CallWindow", "WindowView", "slow_trial_error"]

BUCKETS = 10
_PER_CALL_BELOW = 2 * BUCKETS  # count-based windows smaller than this use one call per bucket


@dataclass(frozen=True)
class WindowView:
    """What the window holds now (for ``Breaker.stats()``).

    Attributes:
        calls: Calls in the window.
        failures: Failed calls among them.
        slow_calls: Slow successful calls among them.
    """

    calls: int
    failures: int
    slow_calls: int

    @property
    def failure_rate(self) -> float:
        """Percent of the window's calls that failed (0 when it is empty)."""
        return 100.0 * self.failures / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        """Percent of the window's calls that were slow (0 when it is empty)."""
        return 100.0 * self.slow_calls / self.calls if self.calls else 0.0


class _Bad:
    """One bucket's failures and slow calls; written only under the breaker's gate."""

    __slots__ = ("epoch", "failures", "slow")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.failures = 0
        self.slow = 0


class CallWindow:
    """The failure and slow-call counts of a breaker's recent calls.

    ``note_fast()`` is lock-free; every other method runs under the breaker's gate.

    Args:
        config: ``failure_rate_threshold``, ``minimum_calls``, ``sliding_window_size``,
            ``monitoring_window``, ``slow_call_duration``, ``slow_call_rate_threshold``.
        clock: The breaker's monotonic clock in seconds (time-based windows only).
    """

    __slots__ = (
        "_bad",
        "_clock",
        "_count_based",
        "_edge",
        "_firsts",
        "_inverse_width",
        "_newest",
        "_numbers",
        "_origin",
        "_per_bucket",
        "_size",
        "_slots",
        "failure_rate",
        "minimum_calls",
        "note_fast",
        "slow_after",
        "slow_duration",
        "slow_rate",
    )

    def __init__(self, config: BreakerConfig, clock: Callable[[], float]) -> None:
        #: Percent of failures that opens the circuit; None in consecutive mode.
        self.failure_rate = config.failure_rate_threshold
        self.slow_rate = config.slow_call_rate_threshold
        self.slow_duration = config.slow_call_duration
        #: Seconds above which a success is slow (infinite: slow-call breaking is off).
        self.slow_after = (
            math.inf if config.slow_call_duration is None else config.slow_call_duration
        )
        self.minimum_calls = config.minimum_calls
        self._clock = clock
        self._numbers = itertools.count()
        self._origin = 0  # calls numbered below this were recorded before the last reset
        size = config.sliding_window_size
        self._count_based = size is not None
        if size is not None:
            self._size = size
            self._per_bucket = 1 if size < _PER_CALL_BELOW else size // BUCKETS
            slots = -(-size // self._per_bucket) + 1  # every bucket the last `size` calls touch
            self._inverse_width = 0.0
        else:
            self._size = 0
            self._per_bucket = 0
            slots = BUCKETS
            self._inverse_width = BUCKETS / config.monitoring_window
        self._slots = slots
        self._bad: list[_Bad] = [_Bad(-1) for _ in range(slots)]
        # Time-based: (epoch, number of the bucket's first call), stored atomically, lock-free.
        self._firsts: list[tuple[int, int]] = [(-1, 0)] * slots
        self._newest = -1
        self._edge = 0.0  # time-based: when the newest bucket ends
        #: A fast success (lock-free): count it as a call in the window. Count-based, that
        #: is only taking a number (one C call).
        self.note_fast: Callable[[], object] = (
            self._numbers.__next__ if self._count_based else self._note_timed
        )

    # -- recording ---------------------------------------------------------------------------
    def fast_success(self) -> tuple[float, Iterator[int], Callable[[], float] | None]:
        """What the windowed guard inlines after a success: ``(slow_after, numbers, clock)``.

        A closed success with no failure run to clear, no listener to call and no count to
        add, taking at most ``slow_after`` seconds, is recorded by the guard itself, without
        a call into this class (no extra Python frame)::

            number = next(numbers)
            if clock is not None and clock() >= window._edge:
                window._turn(number)

        which is :meth:`note_fast`. ``clock`` is None for a count-based window (taking a
        number is all it needs). Anything else goes to ``Breaker._on_success``.
        """
        return self.slow_after, self._numbers, None if self._count_based else self._clock

    def _note_timed(self) -> None:
        """``note_fast`` of a time-based window: a number, and a new bucket when one is due."""
        number = next(self._numbers)
        if self._clock() >= self._edge:
            self._turn(number)

    def slow(self) -> SlowCallsError | None:
        """A slow success (under the gate); the reason to open, or None."""
        bad, number = self._record()
        bad.slow += 1
        return self._slow_verdict(number)

    def failure(self) -> bool:
        """A failure (under the gate); whether the failure rate says open.

        In consecutive mode the call is counted (it lowers the slow-call rate), and False is
        returned: ``failure_threshold`` decides.
        """
        bad, number = self._record()
        bad.failures += 1
        if self.failure_rate is None:
            return False
        view = self._view(number + 1)
        return (
            view.calls >= self.minimum_calls
            and view.failures * 100 >= self.failure_rate * view.calls
        )

    def _slow_verdict(self, number: int) -> SlowCallsError | None:
        """Whether the slow-call rate, just after call ``number``, says open (and why)."""
        view = self._view(number + 1)
        if view.calls < self.minimum_calls or view.slow_calls * 100 < self.slow_rate * view.calls:
            return None
        assert self.slow_duration is not None
        return SlowCallsError(
            f"slow calls: {view.slow_call_rate:.1f}% of the last {view.calls} calls took longer "
            f"than {self.slow_duration * 1000:g} ms "
            f"(slow_call_rate_threshold {self.slow_rate:g}%)",
            rate=view.slow_call_rate,
            threshold=self.slow_rate,
            calls=view.calls,
            slow_call_duration=self.slow_duration,
        )

    def reset(self) -> None:
        """Start empty (under the gate; the circuit closed)."""
        self._origin = self._peek()
        for bad in self._bad:
            bad.epoch = -1
        self._firsts = [(-1, 0)] * self._slots
        self._newest = -1
        self._edge = 0.0

    def view(self) -> WindowView:
        """The window's counts now (under the gate)."""
        return self._view(self._peek())

    # -- internals -------------------------------------------------------------------------
    def _record(self) -> tuple[_Bad, int]:
        """Number a failed or slow call and find its bucket (under the gate)."""
        number = next(self._numbers)
        epoch = number // self._per_bucket if self._count_based else self._turn(number)
        bad = self._bad[epoch % self._slots]
        if bad.epoch != epoch:
            bad.epoch = epoch
            bad.failures = bad.slow = 0
        return bad, number

    def _turn(self, number: int) -> int:
        """Time-based: the current bucket's epoch; call ``number`` starts it if it is new."""
        epoch = int(self._clock() * self._inverse_width)
        if epoch > self._newest:
            # A racing thread may store its own (epoch, number) here too: the window then
            # starts a few calls off (the success counts are approximate by that much).
            self._firsts[epoch % self._slots] = (epoch, number)
            self._newest = epoch
            self._edge = (epoch + 1) / self._inverse_width
        return epoch

    def _view(self, next_number: int) -> WindowView:
        """Counts over the window that ends before call number ``next_number``."""
        if self._count_based:
            last = next_number - 1
            oldest = max(0, last - self._size + 1) // self._per_bucket
            newest = last // self._per_bucket
            start = max(self._origin, oldest * self._per_bucket)
        else:
            newest = int(self._clock() * self._inverse_width)
            oldest = newest - BUCKETS + 1
            firsts = [n for e, n in self._firsts if oldest <= e <= newest]
            start = max(self._origin, min(firsts)) if firsts else next_number
        failures = slow = 0
        for bad in self._bad:
            if oldest <= bad.epoch <= newest:
                failures += bad.failures
                slow += bad.slow
        return WindowView(calls=max(0, next_number - start), failures=failures, slow_calls=slow)

    def _peek(self) -> int:
        """The next call number, without taking it (``itertools.count`` shows it in its repr)."""
        return int(repr(self._numbers)[6:-1])


def slow_trial_error(elapsed: float, window: CallWindow) -> SlowCallsError:
    """Why a half-open trial that succeeded slowly re-opens the circuit."""
    assert window.slow_duration is not None
    return SlowCallsError(
        f"slow calls: a half-open trial call took {elapsed * 1000:.1f} ms, longer than "
        f"slow_call_duration {window.slow_duration * 1000:g} ms",
        rate=100.0,
        threshold=window.slow_rate,
        calls=1,
        slow_call_duration=window.slow_duration,
    )
