"""The background recovery prober: PING Redis while a breaker is open, half-open it on answer.

A breaker opened by an outage waits ``reset_timeout`` (30 s by default) before it admits a
trial call, even when Redis came back after one second. The design document's client
resets the circuit on the client's "ready" event; redis-py has no such event, so a client
built by :func:`redisguard.connect` carries a prober instead:

* it starts lazily, when one of the client's breakers opens (a pybreaker listener);
* it PINGs Redis every ``probe_interval`` (100 ms by default, +-10 % jitter so that a fleet
  of clients does not probe in step) for as long as the outage lasts, so recovery is
  noticed within one interval however long Redis was gone. Each PING is bounded by the
  client's socket timeout, so a paused Redis holds the prober for at most one interval
  plus that timeout. A probe that only found its connection dead (reset or closed by the
  peer, not refused) is repeated at once on a new connection, once;
* the seed's backoff (100 ms doubling to 10 s) now only paces the "Redis reconnecting" log
  messages, so a long outage does not flood the logs;
* as soon as Redis answers it drops the client's idle pooled connections that predate the
  outage (:mod:`redisguard._stale`: a killed or reset server left them dead, and redis.asyncio
  can hand such a connection to the first call), then calls ``breaker.half_open()`` on
  every open breaker, so the next real call is a trial call instead of a fallback;
* it only does this for a breaker opened by a failure that an answered PING proves healed
  (:func:`ping_proves_recovery`: connectivity, LOADING, BUSY). A PING answers just as well
  when the command itself cannot run -- an ACL user allowed PING but not SET (NOPERM), a
  replica refusing writes (READONLY), OOM, MISCONF, MASTERDOWN, CLUSTERDOWN -- and
  half-opening then would defeat ``reset_timeout``; such a breaker, and one opened by hand
  (``Breaker.open()``), waits ``reset_timeout`` out;
* it ends when no breaker is open any more, and is stopped (thread joined, task cancelled)
  when the client is closed.

The policy (:class:`ProbePlan`: when to probe, when to log) does no I/O;
:class:`ThreadProber` and :class:`TaskProber` only differ in how they PING, refresh the pool
and sleep. The prober is never on the call path: a guarded call does not touch it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

import pybreaker
import tenacity
from redis import exceptions as rx

from ._breaker import OPEN, Breaker
from ._classify import _error_code
from ._config import _check_number, _env_number
from ._fork import after_fork
from ._guard import _describe
from ._transport import closed_transport_error

__all__ = [
    "DEFAULT_PROBE_INTERVAL",
    "PROBE_INTERVAL_ENV",
    "SEED_BACKOFF",
    "ProbePlan",
    "TaskProber",
    "ThreadProber",
    "connection_dropped",
    "ping_proves_recovery",
    "resolve_probe_interval",
]

T = TypeVar("T")
logger = logging.getLogger("redisguard")

#: The design document's reconnect strategy: 100 ms, 200 ms, 400 ms ... capped at 10 s. It
#: paces wait-for-ready and the prober's "Redis reconnecting" messages, not recovery detection.
SEED_BACKOFF = tenacity.wait_exponential(multiplier=0.1, max=10.0)
_SEED_FIRST, _SEED_MAX = 0.1, 10.0  # SEED_BACKOFF's numbers, for the log pacing below

#: Seconds between recovery PINGs while a breaker is open.
DEFAULT_PROBE_INTERVAL = 0.1
#: The environment variable (milliseconds) read when ``probe_interval`` is not given.
PROBE_INTERVAL_ENV = "REDISGUARD_PROBE_INTERVAL"
_INTERVAL_LOW, _INTERVAL_HIGH = 0.01, 60.0  # seconds
_JITTER = 0.1  # each sleep is the interval +-10 %


def resolve_probe_interval(
    value: float | None, env: Mapping[str, str] | None = None
) -> float:
    """The probe interval in seconds: ``value``, else ``$REDISGUARD_PROBE_INTERVAL`` (ms), else 0.1.

    Raises:
        ConfigError: naming ``probe_interval`` or the variable, when it is not a number
            between 10 ms and 60 s.
    """
    if value is not None:
        _check_number(
            "probe_interval", value, integer=False, low=_INTERVAL_LOW, high=_INTERVAL_HIGH
        )
        return float(value)
    from_env = _env_number(
        os.environ if env is None else env,
        PROBE_INTERVAL_ENV,
        integer=False,
        low=_INTERVAL_LOW * 1e3,
        high=_INTERVAL_HIGH * 1e3,
        scale=1e-3,
    )
    return DEFAULT_PROBE_INTERVAL if from_env is None else from_env


# Connection errors that a PING answering does not disprove: credentials, permissions, and
# the local pool (Redis may be fine, the client is out of connections).
_NOT_CONNECTIVITY = (rx.AuthenticationError, rx.AuthorizationError, rx.MaxConnectionsError)
# What an established connection dies of; redis-py's message when the server sent EOF.
_DROPPED = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
_SERVER_CLOSED = "Connection closed by server"


def ping_proves_recovery(exc: BaseException | None) -> bool:
    """Whether an answered PING proves that the failure ``exc`` has healed.

    True for connectivity (a redis ``ConnectionError`` other than authentication,
    authorization or a full local pool; a redis ``TimeoutError``; the builtin
    ``TimeoutError``, ``ConnectionError`` and ``OSError``; ``asyncio.TimeoutError``), for
    LOADING (``BusyLoadingError``, a ``ConnectionError``) and for BUSY (a script past
    ``lua-time-limit``: PING itself answers BUSY until it ends). False for everything a PING
    cannot see -- NOPERM, READONLY, OOM, MISCONF, MASTERDOWN, CLUSTERDOWN, TRYAGAIN, data
    errors -- and for ``None`` (a breaker opened by hand or by a storage).
    """
    if exc is None:
        return False
    if isinstance(exc, rx.ConnectionError):
        return not isinstance(exc, _NOT_CONNECTIVITY)
    if isinstance(exc, rx.ResponseError):
        # redis-py has no class for BUSY; the reply's error code is its first word.
        return _error_code(exc) == "BUSY"
    # OSError: the builtin TimeoutError and ConnectionError. asyncio.TimeoutError (an
    # asyncio.wait_for deadline, e.g. areadiness' PING) is the builtin TimeoutError from 3.11
    # but its own class on 3.10, where it would otherwise keep the breaker open until
    # reset_timeout: the classifier counts it as a failure, so it can open the breaker.
    return isinstance(exc, rx.TimeoutError | OSError | asyncio.TimeoutError)


def connection_dropped(exc: BaseException) -> bool:
    """Whether a failed PING only proves that *its connection* died, not that Redis is down.

    True when the peer reset or closed a connection that had been established (reset by
    peer, a broken pipe, redis-py's "Connection closed by server.", a write to a transport
    the peer closed): a new connection may well be answered. False for a refused or
    unreachable connect, a timeout, LOADING and the like, which a new connection would meet
    again.
    """
    if not isinstance(exc, rx.ConnectionError) or isinstance(
        exc, (rx.BusyLoadingError, *_NOT_CONNECTIVITY)
    ):
        return False
    if closed_transport_error(exc) or str(exc).startswith(_SERVER_CLOSED):
        return True
    seen: BaseException | None = exc
    for _ in range(4):  # redis-py raises its error while handling the socket's
        seen = (seen.__cause__ or seen.__context__) if seen is not None else None
        if isinstance(seen, _DROPPED):
            return True
    return False


def _probeable(breaker: Breaker) -> bool:
    """Open, and opened by a failure that an answered PING proves healed."""
    return breaker.state_code == OPEN and ping_proves_recovery(breaker.opened_by)


class _OpenListener(pybreaker.CircuitBreakerListener):
    """Wakes the prober when one of its breakers opens for a reason a PING can disprove."""

    def __init__(self, on_open: Callable[[], None]) -> None:
        self._on_open = on_open

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        if (
            new_state.name == pybreaker.STATE_OPEN
            and getattr(old_state, "name", None) != pybreaker.STATE_OPEN
            and ping_proves_recovery(getattr(cb, "opened_by", None))
        ):
            self._on_open()


class ProbePlan:
    """What the prober does, without doing any I/O itself.

    Args:
        breakers: The breakers that guard calls to this client's Redis.
        target: The redacted URL, for log messages.
        on_lost: Called when probing starts (the client marks the connection as lost).
        on_answer: Called when Redis answers a probe.
        interval: Seconds between PINGs (each sleep is jittered by +-10 %).
        clock: A monotonic clock (tests pass a fake one).
        rand: Returns a float in [0, 1) (tests pass a fixed one).
    """

    def __init__(
        self,
        breakers: Sequence[Breaker],
        target: str,
        on_lost: Callable[[], None] = lambda: None,
        on_answer: Callable[[], None] = lambda: None,
        *,
        interval: float = DEFAULT_PROBE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        rand: Callable[[], float] = random.random,
    ) -> None:
        self.breakers = tuple(breakers)
        self.target = target
        self.interval = interval
        self.stopping = False
        self.probes = 0
        self.last_error = "no answer"
        self._on_lost = on_lost
        self._on_answer = on_answer
        self._clock = clock
        self._rand = rand
        self._listener = _OpenListener(self.wake)
        self._wake: Callable[[], None] = lambda: None
        self._again_now = False  # the last probe only found a dead connection
        self._was_again = False  # ... and the probe before it too: back to the interval
        self._run_probes = 0  # probes in the current run
        self._messages = 0  # "Redis reconnecting" messages in the current run
        self._next_message = 0.0

    def attach(self, wake: Callable[[], None]) -> None:
        """Listen to the breakers; ``wake`` starts the driver (it must be idempotent).

        A breaker that is already open (another client's outage, or a host-shared breaker
        another worker opened before this one started) makes no transition this client would
        hear, so probing starts now.
        """
        self._wake = wake
        for breaker in self.breakers:
            breaker.add_listener(self._listener)
        if self.needed():
            self.wake()

    def detach(self) -> None:
        """Stop listening; the driver is told to stop at its next step."""
        self.stopping = True
        for breaker in self.breakers:
            with contextlib.suppress(ValueError):
                breaker.remove_listener(self._listener)

    def wake(self) -> None:
        if not self.stopping:
            self._on_lost()
            self._wake()

    def needed(self) -> bool:
        """True while the client is open for business and a breaker a PING can heal is open."""
        return not self.stopping and any(_probeable(b) for b in self.breakers)

    def elected(self) -> bool:
        """Whether this process PINGs now: yes, unless every breaker a PING can heal is
        host-shared (``redisguard._host``) and another live process holds the host's prober
        lease -- one prober per host is enough. Taking or renewing the lease is a short
        host transaction, no I/O."""
        shared = []
        for breaker in self.breakers:
            if _probeable(breaker):
                if not breaker.is_host_shared:
                    return True
                shared.append(breaker)
        return not shared or any(b.claim_prober() for b in shared)  # type: ignore[attr-defined]

    def finished(self) -> None:
        """Probing stopped: give up the host prober leases this process holds."""
        for breaker in self.breakers:
            if breaker.is_host_shared:
                breaker.release_prober()  # type: ignore[attr-defined]

    def started(self) -> None:
        """A probing run begins: the log pacing starts over."""
        self._run_probes = 0
        self._messages = 0
        self._next_message = self._clock()
        self._again_now = self._was_again = False

    def next_delay(self) -> float:
        """Seconds to sleep before the next PING: the interval, +-10 % jitter.

        0 once after a probe that only found its connection dead (:func:`connection_dropped`,
        e.g. reset by the very heal that brings Redis back): the next PING opens a new one.
        """
        if self._again_now and not self._was_again:
            self._again_now, self._was_again = False, True
            return 0.0
        self._again_now = self._was_again = False
        return self.interval * (1.0 + _JITTER * (2.0 * self._rand() - 1.0))

    def answered(self) -> bool:
        """Redis answered: half-open every breaker a PING can heal. Returns True (done)."""
        self._on_answer()
        for breaker in self.breakers:
            if _probeable(breaker):
                breaker.half_open()
                logger.info(
                    "Redis answered the recovery probe; breaker %s is half-open",
                    breaker.name,
                    extra={"category": "redis", "breaker": breaker.name, "target": self.target},
                )
        return True

    def failed(self, exc: BaseException) -> bool:
        """A probe failed: log it if a message is due; True when probing is no longer needed."""
        self.last_error = _describe(exc)
        self._again_now = connection_dropped(exc)
        self._run_probes += 1
        now = self._clock()
        if now >= self._next_message:
            # The seed's backoff paces the messages: 0.1 s, 0.2 s, 0.4 s ... then every 10 s.
            self._messages += 1
            gap = min(_SEED_FIRST * 2.0 ** (self._messages - 1), _SEED_MAX)
            # On the seed's schedule (0, 0.1, 0.3, 0.7 ... s into the outage), not drifting
            # by a probe each time; a prober that fell behind starts a fresh gap.
            self._next_message += gap
            if self._next_message <= now:
                self._next_message = now + gap
            logger.info(
                "Redis reconnecting (probe %d, every %.0f ms; next message in %.1f s): %s",
                self._run_probes,
                self.interval * 1e3,
                gap,
                self.last_error,
                extra={
                    "category": "redis",
                    "retries": self._run_probes,
                    "delay": self.interval,
                    "target": self.target,
                },
            )
        return not self.needed()


def _weakly(ping: Callable[[], T]) -> Callable[[], Callable[[], T] | None]:
    """A reference to ``ping`` that does not keep its client alive.

    The shared breaker holds the prober's listener, and the listener holds the prober. A
    strong ``client.ping`` there would keep every client ever built alive, with its pool
    and server connections; a bound method is held through a ``WeakMethod`` instead.
    """
    if inspect.ismethod(ping):
        return weakref.WeakMethod(ping)
    return lambda: ping


class ThreadProber:
    """Runs a :class:`ProbePlan` in a daemon thread (for sync clients).

    It holds the client's ``ping`` weakly, and is fork-safe: in a child made by
    ``os.fork()`` its thread state is reset, and probing restarts there if a breaker is open.

    Args:
        plan: The policy.
        ping: PINGs Redis, raising on failure (bounded by the client's socket timeout).
        refresh: Called when Redis answers, before the breakers half-open: drops the pool's
            connections that predate the outage. Its errors are logged, never raised.
    """

    def __init__(
        self,
        plan: ProbePlan,
        ping: Callable[[], object],
        refresh: Callable[[], object] | None = None,
    ) -> None:
        self.plan = plan
        self._ping = _weakly(ping)
        self._refresh = refresh
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        plan.attach(self.wake)
        after_fork(self, ThreadProber._after_fork)

    @property
    def running(self) -> bool:
        """True while the probing thread is alive."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    def wake(self) -> None:
        """Start probing unless a probing thread already runs."""
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(
                target=self._run, name=f"redisguard-prober[{self.plan.target}]", daemon=True
            )
            self._thread.start()

    def _attempt(self) -> bool:
        if not self.plan.needed():
            return True
        if not self.plan.elected():
            return False  # another process probes for the host; look again next interval
        ping = self._ping()
        if ping is None:  # the client was garbage-collected
            self.abandon()
            return True
        self.plan.probes += 1
        try:
            ping()
        except Exception as exc:
            ping = None  # the traceback must not keep the client alive
            return self.plan.failed(exc)
        ping = None
        if self._refresh is not None:
            try:
                self._refresh()
            except Exception:  # the pool's bookkeeping must not stop recovery
                logger.exception("redisguard: refreshing the connection pool failed")
        return self.plan.answered()

    def _run(self) -> None:
        while True:
            self.plan.started()
            # Every interval for as long as it takes; the wait returns early on close().
            while not self._attempt() and not self._stop.wait(self.plan.next_delay()):
                pass
            with self._lock:
                # Decided under the lock, so a breaker that opens right now either sees the
                # thread still registered (and we loop) or no thread (and starts one).
                if self._stop.is_set() or not self.plan.needed():
                    self._thread = None
                    self.plan.finished()
                    return

    def abandon(self) -> None:
        """Stop probing without waiting (the client is gone); safe from any thread."""
        self.plan.detach()
        self._stop.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop probing and wait for the thread to end."""
        self.abandon()
        with self._lock:
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def _after_fork(self) -> None:
        """In a forked child: the parent's thread and lock are not ours; probe afresh."""
        stopped = self._stop.is_set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = None
        if stopped:
            self._stop.set()
        elif self.plan.needed():
            self.wake()


class TaskProber:
    """Runs a :class:`ProbePlan` as an asyncio task on the client's event loop.

    It holds the client's ``ping`` weakly. In a child made by ``os.fork()`` the task, which
    belongs to the parent's loop, is forgotten.

    Args:
        plan: The policy.
        ping: Returns an awaitable that PINGs Redis, raising on failure.
        loop: The loop the client lives on.
        timeout: Upper bound on one PING.
        refresh: Awaited when Redis answers, before the breakers half-open: drops the
            pool's connections that predate the outage. Its errors are logged, never raised.
    """

    def __init__(
        self,
        plan: ProbePlan,
        ping: Callable[[], Awaitable[object]],
        loop: asyncio.AbstractEventLoop,
        timeout: float,
        refresh: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.plan = plan
        self._ping = _weakly(ping)
        self._refresh = refresh
        self._loop = loop
        self._timeout = timeout
        self._task: asyncio.Task[None] | None = None
        plan.attach(self.wake)
        after_fork(self, TaskProber._after_fork)

    @property
    def running(self) -> bool:
        """True while the probing task is alive."""
        return self._task is not None and not self._task.done()

    def wake(self) -> None:
        """Start probing (from any thread) unless a probing task already runs."""
        self._on_loop(self._start)

    def _on_loop(self, fn: Callable[[], object]) -> None:
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        if current is self._loop:
            fn()
        elif not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(fn)

    def _start(self) -> None:
        if self.running or self.plan.stopping:
            return
        self._task = self._loop.create_task(self._run(), name="redisguard-prober")

    async def _attempt(self) -> bool:
        if not self.plan.needed():
            return True
        if not self.plan.elected():
            return False  # another process probes for the host; look again next interval
        ping = self._ping()
        if ping is None:  # the client was garbage-collected
            self.abandon()
            return True
        self.plan.probes += 1
        try:
            await asyncio.wait_for(ping(), self._timeout)
        except Exception as exc:
            ping = None  # the traceback must not keep the client alive
            return self.plan.failed(exc)
        ping = None
        if self._refresh is not None:
            try:
                await self._refresh()
            except Exception:  # the pool's bookkeeping must not stop recovery
                logger.exception("redisguard: refreshing the connection pool failed")
        return self.plan.answered()

    async def _run(self) -> None:
        while True:
            self.plan.started()
            done = await self._attempt()
            while not done:  # every interval for as long as it takes; aclose() cancels
                await asyncio.sleep(self.plan.next_delay())
                done = await self._attempt()
            if not self.plan.needed():
                self.plan.finished()
                return

    def abandon(self) -> None:
        """Stop probing without waiting (the client is gone); safe from any thread."""
        self.plan.detach()
        task = self._task
        if task is not None and not task.done():
            self._on_loop(task.cancel)

    async def stop(self) -> None:
        """Stop probing: cancel the task and wait for it."""
        self.plan.detach()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _after_fork(self) -> None:
        """In a forked child: the task runs on the parent's loop; forget it."""
        self._task = None
