"""The retry budget: retries on a breaker may add at most a share of its recent successes.

Retries help with a blip and hurt in an outage: every caller that retries multiplies the load
on a Redis that is already struggling. Finagle and Envoy bound them with a *retry budget*;
this is one, shared by every guard on a breaker, kept as a token bucket:

- every successful call on the breaker deposits ``ratio`` of a token (10% by default);
- ``min_per_second`` tokens are added per second regardless (10 by default), so a quiet
  service can still retry a blip;
- the bucket holds at most :data:`RESERVE_SECONDS` worth of both, so an hour of successes
  does not buy an hour's worth of retries when Redis goes down;
- each retry attempt (the 2nd attempt of a call and later) withdraws one token; when none is
  left, the failing call goes to its fallback instead of retrying, and the denial is counted.

The success path pays nothing: deposits are not made per success. The breaker already counts
its successes (a :class:`~redisguard._tally.TallyGroup` read at collection time); a
withdrawal, which happens only on the failure path, reads that total and credits what was
earned since the last withdrawal. A small lock serialises withdrawals; it is never held
across I/O.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from ._fork import after_fork
from ._tally import Tally, TallyGroup

__all__ = ["RESERVE_SECONDS", "RetryBudget", "budget_for"]

#: The bucket holds at most this many seconds of deposits (at the recent success rate).
RESERVE_SECONDS = 2.0
# Time constant of the smoothed success rate that sizes the bucket.
_RATE_SECONDS = 2.0


class RetryBudget:
    """A token bucket filled lazily from a success total; :meth:`withdraw` spends a token.

    Args:
        ratio: Percent of successful calls that may be retried (10.0 = 10%).
        min_per_second: Tokens added per second whatever the successes.
        successes: The breaker's success total (only read, on withdrawal).
        clock: A monotonic clock in seconds.
    """

    __slots__ = (
        "__weakref__",
        "_at",
        "_clock",
        "_lock",
        "_rate",
        "_seen",
        "_successes",
        "_tokens",
        "denied",
        "min_per_second",
        "ratio",
    )

    def __init__(
        self,
        ratio: float,
        min_per_second: float,
        successes: TallyGroup,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ratio = ratio / 100.0
        self.min_per_second = min_per_second
        self._successes = successes
        self._clock = clock
        self._lock = threading.Lock()
        self._seen = successes.value
        self._at = clock()
        self._rate = 0.0  # smoothed successes per second
        self._tokens = self._capacity()  # start with the floor's reserve
        self.denied = Tally()
        after_fork(self, RetryBudget._after_fork)

    def _after_fork(self) -> None:
        self._lock = threading.Lock()  # another thread may have held it at the fork

    def _capacity(self) -> float:
        reserve = (self.min_per_second + self.ratio * self._rate) * RESERVE_SECONDS
        return max(reserve, 1.0) if reserve > 0 else 0.0  # a tiny floor still buys a retry

    def _refill(self) -> None:
        """Credit what was earned since the last look (under the lock)."""
        now = self._clock()
        total = self._successes.value
        elapsed = max(now - self._at, 0.0)
        new = max(total - self._seen, 0)
        self._seen, self._at = total, now
        if elapsed > 0:
            # An exponentially smoothed rate: stable however close together the looks are.
            weight = 1.0 - math.exp(-elapsed / _RATE_SECONDS)
            self._rate += weight * (new / elapsed - self._rate)
        tokens = self._tokens + new * self.ratio + elapsed * self.min_per_second
        self._tokens = min(tokens, self._capacity())

    def withdraw(self) -> bool:
        """Spend one token for a retry attempt; False (and counted) when none is left."""
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
        self.denied.add()
        return False

    @property
    def tokens(self) -> float:
        """Tokens available now (refilled first)."""
        with self._lock:
            self._refill()
            return self._tokens

    @property
    def denied_total(self) -> int:
        """Retries denied since creation (never decreases; for metrics)."""
        return self.denied.value


def budget_for(
    ratio: float | None,
    min_per_second: float,
    successes: TallyGroup,
    clock: Callable[[], float] = time.monotonic,
) -> RetryBudget | None:
    """A retry budget for a breaker's config, or None when ``retry_budget_ratio`` is None."""
    return None if ratio is None else RetryBudget(ratio, min_per_second, successes, clock)
