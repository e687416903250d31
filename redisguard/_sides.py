"""Read/write-aware breaking: the *write side* of a breaker, and what a guard's access means.

Some refusals concern only writes. With ``maxmemory`` and ``noeviction`` Redis answers
``-OOM`` to every command that may grow memory, after a failed RDB save (with
``stop-writes-on-bgsave-error``) ``-MISCONF`` to every write, and a replica (or a master
demoted by a failover) ``-READONLY``. Reads keep being served all along. Opening the whole
breaker would throw the reads away; not breaking at all sends every write to Redis to be
refused. So each :class:`~redisguard.Breaker` has, besides its main state machine (opened by
connectivity failures, blocking every call), a small second one: the :class:`WriteSide`.

A guard declares what it does with ``@redis_guarded(access=...)``:

==========  ============================================================================
access      blocked by an open write side
==========  ============================================================================
``read``    never (a read guard does not look at the write side at all)
``write``   always
``both``    always (the default: a guard that may write is a writer)
``delete``  only when the refusal that opened it also refuses deletes: READONLY and
            MISCONF do, OOM does not (``DEL``, ``UNLINK``, ``EXPIRE``... free memory and
            carry no ``denyoom`` flag, so Redis runs them during an OOM)
==========  ============================================================================

The write side's rules mirror the main side's, with the breaker's own settings:

* closed -> open after ``failure_threshold`` write refusals (``ErrorKind.WRITE_REFUSED``),
  all inside ``monitoring_window``, with no successful write between them. A refusal is the
  server stating a condition, not a flaky symptom, but memory hovering at ``maxmemory``
  refuses one write and accepts the next: opening at once would shed every write for
  ``reset_timeout`` after a single marginal refusal. Counting costs ``failure_threshold``
  fast refused replies, no timeouts. "No write succeeded in between" is read from the write
  guards' success tallies when a refusal arrives, so the happy path does no extra work.
* open -> half-open after ``reset_timeout``; up to ``half_open_max_attempts`` trial writes
  at once (a slot held past ``half_open_trial_timeout`` starts a new round);
  ``success_threshold`` successful trials close it, a refused trial re-opens it. A trial
  that fails for another reason (a timeout...) only frees its slot: that is the main side's
  business.
* It remembers the refusal that opened it (:attr:`WriteSide.cause`: ``"OOM"``,
  ``"READONLY"``, ``"MISCONF"``, or the error's class name) until it closes.

Every write refusal is evidence, whichever guard met it, but only write and delete guards are
blocked. The main side is not told about refusals at all (Redis answered): connectivity
failures open it as before, and an open main side blocks every access.

The hot path: a guard holds a *gate* whose ``_code`` is CLOSED exactly when it may go
straight to Redis -- the breaker itself for a read guard, a :class:`SideGate` for a write or
delete guard (its ``_code`` combines both sides and is kept up to date on every transition,
under the breaker's gate lock). The wrappers test ``gate._code == CLOSED``: one attribute
check, as before. Only a non-closed gate takes the slow path (:meth:`SideGate._admit`).

Tickets stay plain ints: NORMAL (0), REJECT (-1) and main trial generations (> 0) as before;
a write-side trial is ``-1 - generation`` (-2, -3, ...), decoded by the gate's outcome hooks.

The write side lives in the process (a ``state_storage`` shares only the main side).
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

from redis import exceptions as rx

from ._classify import _error_code
from ._errors import ConfigError
from ._tally import Tally, TallyGroup

if TYPE_CHECKING:
    from ._breaker import Breaker

__all__ = ["ACCESS_KINDS", "Access", "SideGate", "WriteSide", "check_access", "refusal_cause"]

logger = logging.getLogger("redisguard")

Access = Literal["read", "write", "delete", "both"]
ACCESS_KINDS: Final = ("read", "write", "delete", "both")

# The breaker's codes (duplicated to keep this module below _breaker; checked by a test).
CLOSED, HALF_OPEN, OPEN = 0, 1, 2
NORMAL, REJECT = 0, -1
STATES = ("closed", "half-open", "open")

#: Marks a write-side event in the breaker's state-event queue (see ``Breaker._drain``).
EVENT: Final = object()


def check_access(access: object) -> Access:
    """Return ``access`` if it is one of :data:`ACCESS_KINDS`.

    Raises:
        ConfigError: naming the bad value.
    """
    if isinstance(access, str) and access in ACCESS_KINDS:
        return access  # type: ignore[return-value]
    raise ConfigError(
        f"redis_guarded(access=...) must be one of 'read', 'write', 'delete', 'both', "
        f"got {access!r}"
    )


def refusal_cause(exc: BaseException | None) -> str:
    """What refused the write: ``"OOM"``, ``"READONLY"``, ``"MISCONF"``, or the class name."""
    if exc is None:
        return "manual"
    if isinstance(exc, rx.OutOfMemoryError):
        return "OOM"
    if isinstance(exc, rx.ReadOnlyError):
        return "READONLY"
    code = _error_code(exc) if isinstance(exc, rx.ResponseError) else ""
    if code in ("OOM", "READONLY", "MISCONF"):
        return code
    return type(exc).__name__


def spares_deletes(cause: str | None) -> bool:
    """Whether writes refused for ``cause`` still let deletes through (only OOM does)."""
    return cause == "OOM"


@dataclass(frozen=True)
class WriteEvent:
    """A write-side transition, as listeners' optional ``write_state_change`` receives it."""

    old: str
    new: str
    cause: str | None


class SideGate:
    """What a write or delete guard consults instead of the breaker itself.

    ``_code`` is CLOSED when the call may go straight to Redis; the outcome hooks have the
    breaker's signatures and decode write-side trial tickets.
    """

    __slots__ = ("_admit", "_code", "breaker", "deletes", "side")

    def __init__(self, side: WriteSide, deletes: bool) -> None:
        self.side = side
        self.breaker = side.breaker
        self.deletes = deletes
        self._code = CLOSED
        # The slow-path admission, bound once: no extra Python frame on an open circuit.
        self._admit: Callable[[], int] = functools.partial(side.admit, deletes)

    def _on_success(self, ticket: int, count: bool = True, elapsed: float = 0.0) -> None:
        if ticket < REJECT:
            self.side.trial_succeeded(-1 - ticket)
            ticket = NORMAL
        self.breaker._on_success(ticket, count, elapsed)

    def _on_failure(self, ticket: int, exc: BaseException) -> bool:
        if ticket < REJECT:
            self.side.release(-1 - ticket)
            ticket = NORMAL
        return self.breaker._on_failure(ticket, exc)

    def _on_neutral(self, ticket: int) -> None:
        if ticket < REJECT:
            self.side.release(-1 - ticket)
        else:
            self.breaker._on_neutral(ticket)

    def _on_write_refused(self, ticket: int, exc: BaseException) -> None:
        if ticket < REJECT:
            self.side.refused(-1 - ticket, exc)
        else:
            self.breaker._on_neutral(ticket)
            self.side.refused(0, exc)


class WriteSide:
    """The write side of one breaker: closed / open / half-open, opened by write refusals.

    Reach it as ``breaker.write_side``. State moves under the breaker's gate lock (never held
    across I/O); events go through the breaker's ordered event queue.
    """

    #: The gates' class (a host-shared breaker's keep their codes in shared memory).
    _gate_class: type[SideGate] = SideGate

    def __init__(
        self, breaker: Breaker, copy_error: Callable[[BaseException], BaseException]
    ) -> None:
        self.breaker = breaker
        self._copy_error = copy_error  # the breaker's traceback-free copy (opened_by)
        self._code = CLOSED
        self._cause: str | None = None
        self._spares = False  # the cause lets deletes through (OOM)
        self._opened_by: BaseException | None = None
        self._opened_at = 0.0
        self._generation = 0
        self._trials = 0
        self._trial_admitted_at = 0.0
        self._trial_successes = 0
        self._run: deque[float] = deque()  # times of the current run of refusals
        self._mark = 0  # write successes seen at the last refusal
        self._refusal_total = 0
        #: The success tallies of every write and both guard on this breaker.
        self.successes = TallyGroup()
        self._rejections = Tally()
        self._rejection_offset = 0
        self.write_gate = self._gate_class(self, deletes=False)
        self.delete_gate = self._gate_class(self, deletes=True)
        self._refresh()

    # -- reading ---------------------------------------------------------------------------
    @property
    def state_code(self) -> int:
        """0 closed, 1 half-open, 2 open (as the main side's gauge)."""
        return self._code

    @property
    def current_state(self) -> str:
        """``"closed"``, ``"half-open"`` or ``"open"``."""
        return STATES[self._code]

    @property
    def cause(self) -> str | None:
        """What opened it (``"OOM"``, ``"READONLY"``, ``"MISCONF"``...), until it closes."""
        return self._cause

    @property
    def opened_by(self) -> BaseException | None:
        """The refusal that opened it (no traceback), until it closes; None if opened by hand."""
        return self._opened_by

    @property
    def refusal_total(self) -> int:
        """Write refusals met since creation; never decreases (for metrics)."""
        return self._refusal_total

    @property
    def rejected_total(self) -> int:
        """Write and delete calls it answered with the fallback; never decreases."""
        return self._rejections.value

    @property
    def rejected_count(self) -> int:
        """Rejected calls since creation or the breaker's last ``reset()``."""
        return self._rejections.value - self._rejection_offset

    @property
    def refusal_count(self) -> int:
        """Refusals in the current run (those that count towards opening)."""
        return len(self._run)

    def seconds_until_retry(self) -> float | None:
        """While open, seconds until trial writes are admitted; otherwise None."""
        if self._code != OPEN:
            return None
        b = self.breaker
        return max(0.0, self._opened_at + b._reset_timeout - b._clock())

    def __repr__(self) -> str:
        cause = f" ({self._cause})" if self._cause else ""
        return f"<WriteSide of {self.breaker.name!r} {self.current_state}{cause}>"

    def gate(self, access: Access) -> SideGate | None:
        """What a guard with ``access`` consults: None for a read (it uses the breaker)."""
        if access == "read":
            return None
        return self.delete_gate if access == "delete" else self.write_gate

    # -- admin -----------------------------------------------------------------------------
    def open(self, cause: BaseException | None = None) -> None:
        """Open the write side now (writes and deletes get their fallback)."""
        self._move(OPEN, cause)

    def half_open(self) -> None:
        """Admit trial writes now."""
        self._move(HALF_OPEN, None)

    def close(self) -> None:
        """Close the write side; writes go to Redis again."""
        self._move(CLOSED, None)

    def _move(self, code: int, cause: BaseException | None) -> None:
        b = self.breaker
        with b._gate:
            self._set(code, cause)
        if b._events:
            b._drain()

    def _reset(self) -> None:
        """The breaker's ``reset()``: forget the run and the counts (caller moves it)."""
        with self.breaker._gate:
            self._run.clear()
            self._rejection_offset = self._rejections.value
            self._set(CLOSED, None)

    # -- admission and outcomes --------------------------------------------------------------
    def admit(self, deletes: bool) -> int:
        """A write (or delete) call's ticket: the main side's, a write trial, or REJECT."""
        b = self.breaker
        b._sync()  # a host-shared main side may have moved in another process
        main = b._code
        if main == CLOSED:
            # The hot path of a write-refusing Redis: answer at once, no lock.
            if (
                self._code == OPEN
                and not (deletes and self._spares)
                and b._clock() < self._opened_at + b._reset_timeout
            ):
                self._rejections.add()
                return REJECT
            ticket = NORMAL
        elif main == OPEN and b._clock() < b._opened_at + b._reset_timeout:
            b._rejections.add()  # the main side's fast rejection, inlined (hot in an outage)
            return REJECT
        else:
            ticket = b._admit()
            if ticket == REJECT:
                return REJECT
        code = self._code
        if code == CLOSED or (deletes and self._spares):
            return ticket
        if code == OPEN and b._clock() < self._opened_at + b._reset_timeout:
            return self._reject(ticket)
        with b._gate:
            trial = self._admit_locked(take=ticket == NORMAL)
        if b._events:
            b._drain()
        if trial == REJECT:
            return self._reject(ticket)
        # While the main side runs its own trials, a call is a main trial only.
        return ticket if ticket != NORMAL else -1 - trial

    def _reject(self, ticket: int) -> int:
        if ticket != NORMAL:
            self.breaker._on_neutral(ticket)  # give the main trial slot back
        self._rejections.add()
        return REJECT

    def _admit_locked(self, take: bool) -> int:
        b = self.breaker
        now = b._clock()
        if self._code == OPEN:
            if now < self._opened_at + b._reset_timeout:
                return REJECT
            self._set(HALF_OPEN, None)
        if self._code == CLOSED or not take:
            return NORMAL
        config = b.config
        if self._trials >= config.half_open_max_attempts:
            if now - self._trial_admitted_at < config.half_open_trial_timeout:
                return REJECT
            self._generation += 1  # a new round; the old round's late outcomes are ignored
            self._trials = 0
            self._trial_successes = 0
            logger.warning(
                "breaker %s: every half-open write trial was held longer than %g s; "
                "starting a new round of trials",
                b.name,
                config.half_open_trial_timeout,
                extra={"category": "circuit-breaker", "breaker": b.name, "side": "write"},
            )
        self._trials += 1
        self._trial_admitted_at = now
        return self._generation

    def refused(self, trial: int, exc: BaseException) -> None:
        """A write refusal met by any guard (``trial``: its write-trial generation, or 0)."""
        b = self.breaker
        mark = self.successes.value  # outside the gate: tallies take their own locks
        with b._gate:
            self._refusal_total += 1
            code = self._code
            if code == HALF_OPEN:
                if trial > 0 and trial == self._generation:
                    self._trials -= 1
                    self._set(OPEN, exc)
            elif code == CLOSED:
                now = b._clock()
                run = self._run
                if mark != self._mark:  # a write succeeded since the last refusal
                    run.clear()
                    self._mark = mark
                window = b.config.monitoring_window
                while run and now - run[0] > window:
                    run.popleft()
                run.append(now)
                if len(run) >= b._fail_max:
                    self._set(OPEN, exc)
        if b._events:
            b._drain()

    def trial_succeeded(self, trial: int) -> None:
        b = self.breaker
        with b._gate:
            if trial == self._generation and self._code == HALF_OPEN:
                self._trials -= 1
                self._trial_successes += 1
                if self._trial_successes >= b._success_threshold:
                    self._set(CLOSED, None)
        if b._events:
            b._drain()

    def release(self, trial: int) -> None:
        """A write trial ended without saying anything about writes: free its slot."""
        with self.breaker._gate:
            if trial == self._generation and self._code == HALF_OPEN:
                self._trials -= 1

    # -- transitions (under the breaker's gate) ----------------------------------------------
    def _set(self, code: int, cause: BaseException | None) -> bool:
        b = self.breaker
        if code == OPEN:
            self._opened_at = b._clock()
            if cause is not None or self._code != OPEN:
                self._cause = refusal_cause(cause)
                self._spares = spares_deletes(self._cause)
                self._opened_by = None if cause is None else self._copy_error(cause)
        old = self._code
        if code == old:
            return False
        self._code = code
        self._trial_successes = 0
        if code == HALF_OPEN:
            self._generation += 1
            self._trials = 0
        elif code == CLOSED:
            self._run.clear()
            self._cause = None
            self._spares = False
            self._opened_by = None
        self._refresh()
        b._events.append((EVENT, WriteEvent(STATES[old], STATES[code], self._cause)))
        return True

    def _refresh(self) -> None:
        """Recompute the gates' codes; called on every transition of either side."""
        main = self.breaker._code
        code = self._code
        self.write_gate._code = max(main, code)
        self.delete_gate._code = main if self._spares else max(main, code)

    def snapshot(self) -> tuple[str, str | None, int]:
        """State, cause and the current run of refusals, for ``Breaker.stats()`` (under the
        breaker's gate)."""
        return STATES[self._code], self._cause, len(self._run)
