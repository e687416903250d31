"""The chaos soak: the guarded stores under repeated real faults, with nothing lost or leaked.

A bounded run (``REDISGUARD_SOAK_SECONDS``, 75 s by default) against a ``redis-server`` with
``appendonly yes`` + ``appendfsync always`` reached through a :class:`FaultProxy`:

* a **workload** of sync threads and asyncio tasks doing mixed session and token reads and
  writes through :mod:`redisguard.stores`, each worker owning its keys so it knows what every
  key may hold;
* a **fault scheduler** injecting each fault kind repeatedly (kill/restart, pause/resume,
  blackhole/heal, RST bursts, latency above the socket timeout, LOADING, a *brownout*:
  latency below the socket timeout, and *OOM*: ``maxmemory`` with ``noeviction``, so Redis
  refuses writes and still serves reads);
* a **recorder** of every call (start, latency, outcome), every breaker transition (a
  pybreaker listener), and every fault window;
* a **secret scanner** that sees every log record (root logger, DEBUG, message and every
  ``extra`` attribute), every span (attributes, events, status), every readiness body and
  every error message, and reports any password, session id or token value it finds;
* a **verifier** that reads every key back after the last fault.

:func:`run_soak` returns a :class:`SoakResult`: the per-fault summary table (also as data),
the list of violated invariants (empty on success) and the raw timeline for
:func:`redisguard.testing.plot_timeline`. Nothing here needs pytest.

The invariants, and the bounds they use (all derived from the configuration):

* **typed errors only**: a call returns, or raises ``StoreUnavailableError`` /
  ``RedisUnavailableError`` / ``CircuitOpenError``; anything else is a violation.
* **durability**: after the run each key holds its last acknowledged value, or a value of a
  write its caller was told had failed (such a write may still have reached Redis: its reply
  was lost, or it sat in a paused server's socket buffer). An acknowledged write that is
  neither there nor overwritten that way is lost. A read during the run is checked the same
  way.
* **reported failures**: every write either returned or raised one of those typed errors.
* **breaker cycle**: during each outage the breaker goes closed -> open -> half-open ->
  closed, and every opening (in any window) ends closed. During OOM the main side stays
  closed (reads go on) and the *write side* makes that cycle instead.
* **latency**: no call takes longer than ``deadline + socket_connect_timeout +
  socket_timeout + slack``. A sync attempt cannot be interrupted, and the retry loop only
  starts an attempt that, judging by the slowest attempt so far, ends before the deadline:
  one attempt started just in time can still need a full connect and one full read. Async
  retries are cut at the deadline, but the first attempt is not.
* **recovery**: after Redis returns, a call succeeds within one probe interval (``1.1 x
  probe_interval``: the prober's jitter, however long Redis was gone) plus one PING in
  flight of ``connect + read`` timeout, or within ``reset_timeout`` without the prober,
  plus ``slack``. A breaker opened by slow calls (a brownout) is not probed: it waits
  ``reset_timeout``. After OOM, recovery is the first *acknowledged write* (reads never
  stopped).

A brownout and OOM are not outages (Redis answers): the breaker need not open, but any
opening must end closed, and nothing may be lost or unreported.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import math
import os
import random
import re
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, Any, Literal, TypeVar

import pybreaker
import redis

from redisguard._breaker import CLOSED, Breaker, get_breaker
from redisguard._client import aconnect, connect
from redisguard._config import BreakerConfig, RetryPolicy
from redisguard._errors import RedisUnavailableError
from redisguard._prober import resolve_probe_interval
from redisguard._redact import fingerprint
from redisguard.testing._oom import allow_writes, refuse_writes
from redisguard.testing._plot import Timeline, plot_timeline
from redisguard.testing._proxy import FaultProxy
from redisguard.testing._server import RedisServer

__all__ = [
    "FAULT_KINDS",
    "OUTAGE_KINDS",
    "SECONDS_ENV",
    "UNPROBED_KINDS",
    "WRITE_FAULT_KINDS",
    "CallRecord",
    "FaultWindow",
    "SecretScanner",
    "SoakConfig",
    "SoakResult",
    "SoakRow",
    "Transition",
    "run_soak",
]

T = TypeVar("T")

#: Total soak time in seconds (default 75); CI should leave it unset.
SECONDS_ENV = "REDISGUARD_SOAK_SECONDS"
#: When set, the summary table (markdown) is written to this file.
REPORT_ENV = "REDISGUARD_SOAK_REPORT"
DEFAULT_SECONDS = 75.0

#: How long the soak's clients wait for their first PING: a loaded machine can take more than
#: one 0.25 s connect timeout for a TLS handshake, and the run has not started yet.
STARTUP_WAIT = 10.0

FAULT_KINDS: tuple[str, ...] = (
    "kill",
    "pause",
    "blackhole",
    "reset",
    "latency",
    "loading",
    "brownout",
    "oom",
)
#: Faults after which Redis answers nothing: the breaker must open and recover.
#: ``reset`` is a blip (each connection fails once, a retry on a new one succeeds);
#: ``brownout`` (slow but answering) and ``oom`` (writes refused, reads served) are not outages.
OUTAGE_KINDS: frozenset[str] = frozenset({"kill", "pause", "blackhole", "latency", "loading"})
#: Faults that refuse only writes that store data (deletes still run during OOM): the
#: breaker's write side must open and close again, the main side must not open, and
#: recovery is the first acknowledged store.
WRITE_FAULT_KINDS: frozenset[str] = frozenset({"oom"})
#: Faults whose opening an answered PING cannot disprove (slow calls, refused writes): the
#: recovery prober leaves the breaker alone and it waits out ``reset_timeout``.
UNPROBED_KINDS: frozenset[str] = frozenset({"brownout", "oom"})

Outcome = Literal["ok", "miss", "fallback", "unavailable", "error"]
_ABSENT = "<absent>"
_PROBER_JITTER = 1.1  # the prober sleeps its interval +-10 %


# ------------------------------------------------------------------------- configuration


def _default_seconds() -> float:
    raw = os.environ.get(SECONDS_ENV, "").strip()
    if not raw:
        return DEFAULT_SECONDS
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{SECONDS_ENV} must be a number of seconds, got {raw!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{SECONDS_ENV} must be positive, got {raw!r}")
    return value


@dataclass(frozen=True)
class SoakConfig:
    """How long, how hard and with what settings the soak runs.

    Attributes:
        seconds: Time budget for the fault schedule (``$REDISGUARD_SOAK_SECONDS`` or 75).
            Every fault kind runs at least once, so the real run may be a little longer.
        faults: The fault kinds, scheduled round-robin in a shuffled order per round.
        hold: Seconds each fault is held before it is healed.
        settle: Healthy seconds after each recovery.
        tls: Run the server with TLS and connect through ``rediss://`` with the test CA.
        sync_workers: Threads in the workload.
        async_workers: asyncio tasks in the workload (on one event loop thread).
        keys_per_worker: Sessions and tokens each worker owns.
        think: Pause between a worker's calls, in seconds.
        socket_timeout: redis-py read timeout.
        socket_connect_timeout: redis-py connect timeout.
        retry: The stores' retry policy (its ``deadline`` bounds caller latency).
        breaker: The breaker's settings. ``reset_timeout`` (4 s) is long enough that after
            an outage the recovery prober, not the timeout, is what brings the breaker back
            (a 1 s outage must recover within ~2 s), and short enough for the openings no
            PING can disprove -- slow calls (brownout) and the write side (OOM) -- which
            wait it out. Slow-call breaking: calls over 50 ms, at 50% of the last 50 calls,
            once 20 were seen (the brownout adds 100 ms; a time window of seconds would
            be full of the fast calls before it). The duration is not lower:
            the first trial call after a restart pays the reconnect (connect, AUTH, HELLO,
            TLS), 20-40 ms on a loaded 2-core machine, and a slow trial re-opens the breaker
            for ``reset_timeout``.
        prober: Run the clients' recovery probers.
        latency_ms: Delay added by the ``latency`` fault (above the socket timeout: an
            outage, not a slowdown).
        brownout_ms: Delay added by the ``brownout`` fault (below the socket timeout: every
            call succeeds, slowly; the breaker's slow-call rate opens it).
        slack: Scheduling allowance added to the latency and recovery bounds (a loaded
            2-core CI machine runs ~10 threads and a fsync per write).
        capture_spans: Route spans to a scanning exporter (needs ``opentelemetry-sdk``).
        seed: Seeds the fault order and the workload's choices.
    """

    seconds: float = field(default_factory=_default_seconds)
    faults: tuple[str, ...] = FAULT_KINDS
    hold: float = 1.0
    settle: float = 0.4
    tls: bool = False
    sync_workers: int = 3
    async_workers: int = 4
    keys_per_worker: int = 12
    think: float = 0.004
    socket_timeout: float = 0.25
    socket_connect_timeout: float = 0.25
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    breaker: BreakerConfig = field(
        default_factory=lambda: BreakerConfig(
            failure_threshold=3,
            reset_timeout=4.0,
            monitoring_window=10.0,
            half_open_max_attempts=1,
            slow_call_duration=0.05,
            slow_call_rate_threshold=50.0,
            minimum_calls=20,
            sliding_window_size=50,
        )
    )
    prober: bool = True
    latency_ms: float = 600.0
    brownout_ms: float = 100.0
    slack: float = 0.35
    capture_spans: bool = True
    seed: int | None = None

    def __post_init__(self) -> None:
        unknown = set(self.faults) - set(FAULT_KINDS)
        if unknown or not self.faults:
            raise ValueError(f"faults must be a non-empty subset of {FAULT_KINDS}: {unknown}")
        if self.latency_ms / 1000 <= self.socket_timeout:
            raise ValueError("latency_ms must exceed socket_timeout: the fault is an outage")
        if not 0 < self.brownout_ms / 1000 < self.socket_timeout:
            raise ValueError(
                f"brownout_ms must be positive and below socket_timeout (a slowdown, not an "
                f"outage), got {self.brownout_ms!r}"
            )

    @property
    def latency_bound(self) -> float:
        """The longest a call may take, in seconds (see the module docstring)."""
        return self.retry.deadline + self.socket_connect_timeout + self.socket_timeout + self.slack

    def recovery_bound(self, open_for: float, *, probed: bool = True) -> float:
        """How soon after Redis returns a call must succeed, given how long it was open.

        ``probed=False``: the breaker was opened by something a PING cannot disprove (slow
        calls), so only ``reset_timeout`` brings it back.
        """
        timeout_path = self.breaker.reset_timeout
        if not self.prober or not probed:
            return timeout_path + self.slack
        # One probe interval, however long the breaker was open (``open_for`` no longer counts).
        step = resolve_probe_interval(None) * _PROBER_JITTER
        in_flight = self.socket_connect_timeout + self.socket_timeout
        return min(timeout_path, step + in_flight) + self.slack


# ------------------------------------------------------------------------------ records


@dataclass(frozen=True)
class CallRecord:
    """One workload call. Times are seconds since the start of the run.

    Attributes:
        start: When the call started.
        latency: How long it took.
        worker: Which worker made it (``sync-0``, ``async-2``...).
        op: ``session.set``, ``session.get``, ``token.save``...
        outcome: ``ok`` (Redis answered: a write acknowledged, a read checked);
            ``fallback`` (a session read answered "not found" for a key that holds a value:
            the documented degradation); ``miss`` (a session read answered "not found" for a
            key that may be absent: a miss or a fallback, the API cannot tell);
            ``unavailable`` (a documented typed error was raised); ``error`` (anything else,
            or a read that returned what the key cannot hold).
        error: The exception's class name, if any.
        cause: The class name of the innermost exception in the ``__cause__`` /
            ``__context__`` chain (what Redis or the network did), if any.
        write: Whether the call was a write.
    """

    start: float
    latency: float
    worker: str
    op: str
    outcome: Outcome
    error: str = ""
    cause: str = ""
    write: bool = False

    @property
    def end(self) -> float:
        """When the call returned."""
        return self.start + self.latency


@dataclass(frozen=True)
class Transition:
    """A real breaker state change at ``at`` seconds (``cause``: for an opening, the class
    name of the breaker's ``opened_by``, e.g. ``SlowCallsError``)."""

    at: float
    old: str
    new: str
    cause: str = ""


@dataclass
class FaultWindow:
    """One injected fault: injected, healed (Redis back) and recovered (a call succeeded)."""

    kind: str
    index: int
    injected: float
    healed: float = math.nan
    recovered: float = math.nan
    closed: float = math.nan
    next_injected: float = math.inf

    @property
    def recovery(self) -> float:
        """Seconds from healed to the first successful call (NaN if none)."""
        return self.recovered - self.healed

    @property
    def end(self) -> float:
        """When the window stops counting calls as affected."""
        ends = [t for t in (self.recovered, self.closed, self.healed) if not math.isnan(t)]
        return max(ends) if ends else self.injected


@dataclass(frozen=True)
class SoakRow:
    """One line of the summary table (``kind="none"``: calls outside any fault window)."""

    kind: str
    faults: int
    ops: int
    ok: int
    fallbacks: int
    unavailable: int
    errors: int
    p99_ms: float
    max_ms: float
    recovery_ms_median: float
    recovery_ms_max: float
    breaker_cycles: int
    causes: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


# ------------------------------------------------------------------------ secret scanning


_STANDARD_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


@dataclass(frozen=True)
class Leak:
    """A secret found where it must not be. ``secret`` is a fingerprint, never the value."""

    source: str
    kind: str
    secret: str
    excerpt: str


class SecretScanner:
    """Generates distinctive random secrets and finds them in any text it is shown.

    Secrets are 26 lowercase base32 characters (128 random bits), so any run of such
    characters in a text is checked window by window against the set: a leaked value is
    found wherever it sits, even inside a longer token.
    """

    LENGTH = 26
    _RUN = re.compile(r"[a-z2-7]{26,}")

    def __init__(self) -> None:
        self._secrets: dict[str, str] = {}
        self._lock = threading.Lock()
        self.leaks: list[Leak] = []
        self.scanned: dict[str, int] = {}

    def new(self, kind: str) -> str:
        """A fresh secret of ``kind`` (``password``, ``session id``, ``token``...)."""
        value = base64.b32encode(os.urandom(16)).decode().lower().rstrip("=")
        self._secrets[value] = kind
        return value

    def scan(self, source: str, text: str) -> None:
        """Record a :class:`Leak` for every secret inside ``text``."""
        self.scanned[source] = self.scanned.get(source, 0) + 1
        length = self.LENGTH
        for match in self._RUN.finditer(text):
            run = match.group()
            for i in range(len(run) - length + 1):
                kind = self._secrets.get(run[i : i + length])
                if kind is not None:
                    self._leak(source, kind, run[i : i + length], text)

    def _leak(self, source: str, kind: str, secret: str, text: str) -> None:
        excerpt = text.replace(secret, f"<{kind} {fingerprint(secret)}>")[:300]
        with self._lock:
            if len(self.leaks) < 100:
                self.leaks.append(Leak(source, kind, fingerprint(secret), excerpt))


class _ScanningLogHandler(logging.Handler):
    """Formats every record (message, every ``extra`` attribute, traceback) and scans it."""

    def __init__(self, scanner: SecretScanner) -> None:
        super().__init__(logging.DEBUG)
        self._scanner = scanner
        self._formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_RECORD_ATTRS}
            parts = [record.getMessage(), repr(extras)]
            if record.exc_info:
                parts.append(self._formatter.formatException(record.exc_info))
            if record.stack_info:
                parts.append(record.stack_info)
            self._scanner.scan("log", "\n".join(parts))
        except Exception:  # a handler must never break the code that logs
            self.handleError(record)


def span_text(span: Any) -> str:
    """Everything a finished SDK span carries as text: name, attributes, events, status."""
    parts = [span.name, repr(dict(span.attributes or {}))]
    for event in span.events:
        parts.append(f"{event.name} {dict(event.attributes or {})!r}")
    if span.status.description:
        parts.append(span.status.description)
    return "\n".join(parts)


def _span_exporter(scanner: SecretScanner) -> Any:
    """A span exporter that scans each span as it ends and keeps nothing (bounded memory)."""
    from opentelemetry.sdk.trace.export import (  # noqa: PLC0415 - the SDK is optional
        SpanExporter,
        SpanExportResult,
    )

    class ScanningSpanExporter(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            for span in spans:
                scanner.scan("span", span_text(span))
            return SpanExportResult.SUCCESS

    return ScanningSpanExporter()


@contextlib.contextmanager
def capture_logs(scanner: SecretScanner) -> Iterator[None]:
    """Scan every log record (root logger at DEBUG) inside the block."""
    root = logging.getLogger()
    handler = _ScanningLogHandler(scanner)
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def tracer_provider_for(scanner: SecretScanner) -> Any:
    """An explicit SDK ``TracerProvider`` whose spans all go through ``scanner``."""
    from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415 - optional SDK
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: PLC0415

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(_span_exporter(scanner)))
    return provider


# ------------------------------------------------------------------------------ recorder


class _TransitionListener(pybreaker.CircuitBreakerListener):
    def __init__(self, recorder: Recorder) -> None:
        self._recorder = recorder

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        old = getattr(old_state, "name", None)
        if old is not None and old != new_state.name:
            opened_by = getattr(cb, "opened_by", None) if new_state.name == "open" else None
            cause = "" if opened_by is None else type(opened_by).__name__
            self._recorder.transition(old, new_state.name, cause)

    def write_state_change(self, cb: Any, event: Any) -> None:
        """The write side moved (redisguard._sides: opened by refused writes)."""
        if event.old != event.new:
            self._recorder.write_transition(event.old, event.new)


class Recorder:
    """Collects calls, breaker transitions and fault windows (thread-safe appends)."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.calls: list[CallRecord] = []
        self.transitions: list[Transition] = []
        self.windows: list[FaultWindow] = []
        self.last_ok_start = -1.0
        self.last_ok_store_start = -1.0
        self.write_transitions: list[Transition] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.t0

    def call(self, record: CallRecord) -> None:
        self.calls.append(record)
        if record.outcome == "ok" and record.start > self.last_ok_start:
            self.last_ok_start = record.start
        if (
            record.outcome == "ok"
            and record.op in _STORES
            and record.start > self.last_ok_store_start
        ):
            self.last_ok_store_start = record.start

    def transition(self, old: str, new: str, cause: str = "") -> None:
        with self._lock:
            self.transitions.append(Transition(self.now(), old, new, cause))

    def write_transition(self, old: str, new: str) -> None:
        with self._lock:
            self.write_transitions.append(Transition(self.now(), old, new))

    def listener(self) -> pybreaker.CircuitBreakerListener:
        """A pybreaker listener recording this breaker's real transitions."""
        return _TransitionListener(self)


# ------------------------------------------------------------------------------ workload

_WRITES = frozenset({"session.set", "session.delete", "token.save", "token.revoke"})
#: The writes that store data: refused during OOM (deletes free memory and still run).
_STORES = frozenset({"session.set", "token.save"})
# (op, weight): mostly reads and writes of values, a few deletes and revocations.
_MIX = (
    ("session.set", 6),
    ("session.get", 6),
    ("session.get_strict", 3),
    ("session.delete", 1),
    ("token.save", 4),
    ("token.get", 5),
    ("token.revoke", 1),
)
_TYPED = (RedisUnavailableError,)  # StoreUnavailableError and CircuitOpenError subclass it


@dataclass
class _Key:
    """What one owned key may hold: the last acknowledged value and every unacknowledged one."""

    ident: str
    acked: str = _ABSENT
    unacked: set[str] = field(default_factory=set)

    def allowed(self) -> set[str]:
        return {self.acked, *self.unacked}


@dataclass(frozen=True)
class _Op:
    name: str
    key: _Key
    value: str = ""


class _WorkerPlan:
    """One worker's choices and bookkeeping, shared by the sync and async loops (no I/O)."""

    def __init__(
        self,
        name: str,
        rng: random.Random,
        scanner: SecretScanner,
        recorder: Recorder,
        keys: int,
        problems: list[str],
    ) -> None:
        self.name = name
        self._rng = rng
        self._scanner = scanner
        self._recorder = recorder
        self._problems = problems
        self.sessions = [_Key(scanner.new("session id")) for _ in range(keys)]
        self.tokens = [_Key(scanner.new("token id")) for _ in range(keys)]
        self._ops = [op for op, _ in _MIX]
        self._weights = [w for _, w in _MIX]
        self._seq = 0

    def next(self) -> _Op:
        name = self._rng.choices(self._ops, self._weights)[0]
        if name.startswith("session"):
            key = self._rng.choice(self.sessions)
            self._seq += 1
            value = json.dumps({"w": self.name, "n": self._seq}, separators=(",", ":"))
        else:
            key = self._rng.choice(self.tokens)
            value = self._scanner.new("token")
        return _Op(name, key, value)

    def done(
        self, op: _Op, start: float, end: float, result: Any, exc: BaseException | None
    ) -> None:
        """Classify the outcome, check a read against what the key may hold, record it."""
        outcome: Outcome = "ok"
        error = cause = ""
        write = op.name in _WRITES
        if exc is not None:
            error, cause = type(exc).__name__, _root_cause(exc)
            self._scanner.scan("error message", f"{error}: {exc}")
            if isinstance(exc, _TYPED):
                outcome = "unavailable"
            else:
                outcome = "error"
                self._problem(f"{op.name} raised an undocumented {error}: {exc}")
            if write:
                op.key.unacked.add(_ABSENT if op.name.endswith(("delete", "revoke")) else op.value)
        elif write:
            op.key.acked = _ABSENT if op.name.endswith(("delete", "revoke")) else op.value
            op.key.unacked.clear()
        else:
            outcome = self._check_read(op, result)
        self._recorder.call(
            CallRecord(start, end - start, self.name, op.name, outcome, error, cause, write)
        )

    def _check_read(self, op: _Op, result: Any) -> Outcome:
        if op.name.startswith("session"):
            seen = _ABSENT if result is None else json.dumps(result, separators=(",", ":"))
        else:
            seen = _ABSENT if result is None else str(result.value)
        allowed = op.key.allowed()
        if op.name == "session.get" and seen == _ABSENT:
            # The documented degradation answers "not found": certain only for a key that
            # holds a value.
            return "miss" if _ABSENT in allowed else "fallback"
        if seen in allowed:
            return "ok"
        self._problem(
            f"{op.name} read {'nothing' if seen == _ABSENT else 'an unexpected value'} for "
            f"key {fingerprint(op.key.ident)} ({len(allowed)} value(s) allowed)"
        )
        return "error"

    def abandoned(self, op: _Op) -> None:
        """The call was cancelled mid-flight (at shutdown): a write may or may not have landed."""
        if op.name in _WRITES:
            op.key.unacked.add(_ABSENT if op.name.endswith(("delete", "revoke")) else op.value)

    def _problem(self, message: str) -> None:
        if len(self._problems) < 200:
            self._problems.append(f"{self.name}: {message}")


_TOKEN_TTL = 3600.0
_SESSION_TTL = 3600.0


class _Gate:
    """Lets the scheduler hold new calls and wait for those in flight (no call starts after
    :meth:`close` returns until :meth:`open`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = True
        self._inside = 0

    def enter(self) -> bool:
        with self._lock:
            if not self._open:
                return False
            self._inside += 1
            return True

    def leave(self) -> None:
        with self._lock:
            self._inside -= 1

    def close(self, timeout: float) -> None:
        with self._lock:
            self._open = False
        deadline = time.monotonic() + timeout
        while self._inside and time.monotonic() < deadline:
            time.sleep(0.001)

    def open(self) -> None:
        with self._lock:
            self._open = True


def _root_cause(exc: BaseException) -> str:
    """The innermost explicit cause; an asyncio timeout stops at its TimeoutError."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = exc.__cause__
        if inner is None and not exc.__suppress_context__:
            inner = exc.__context__
        if inner is None or isinstance(inner, asyncio.CancelledError):
            break
        exc = inner
    return type(exc).__name__


def _sync_call(stores: tuple[Any, Any], op: _Op) -> Any:
    sessions, tokens = stores
    name, ident = op.name, op.key.ident
    if name == "session.set":
        return sessions.set(ident, json.loads(op.value))
    if name == "session.get":
        return sessions.get(ident)
    if name == "session.get_strict":
        return sessions.get(ident, strict=True)
    if name == "session.delete":
        return sessions.delete(ident)
    if name == "token.save":
        return tokens.save(ident, op.value, ttl=_TOKEN_TTL)
    if name == "token.get":
        return tokens.get(ident)
    return tokens.revoke(ident)


async def _async_call(stores: tuple[Any, Any], op: _Op) -> Any:
    sessions, tokens = stores
    name, ident = op.name, op.key.ident
    if name == "session.set":
        return await sessions.set(ident, json.loads(op.value))
    if name == "session.get":
        return await sessions.get(ident)
    if name == "session.get_strict":
        return await sessions.get(ident, strict=True)
    if name == "session.delete":
        return await sessions.delete(ident)
    if name == "token.save":
        return await tokens.save(ident, op.value, ttl=_TOKEN_TTL)
    if name == "token.get":
        return await tokens.get(ident)
    return await tokens.revoke(ident)


# ----------------------------------------------------------------------------- the result


@dataclass
class SoakResult:
    """Everything a soak run produced.

    Attributes:
        config: The configuration it ran with.
        rows: The summary table, one row per fault kind plus ``none`` (no fault).
        problems: Violated invariants, human-readable; empty means the soak passed.
        leaks: Secrets found in logs, spans, readiness bodies or error messages.
        calls: Every workload call.
        transitions: Every real breaker transition.
        windows: Every injected fault.
        duration: Wall time of the run in seconds.
        scanned: How many log records, spans, readiness bodies and error messages were
            scanned for secrets.
        keys_checked: Keys read back by the verifier.
        unacked_landed: Keys whose final value came from a write reported as failed.
        write_transitions: Every transition of the breaker's write side.
    """

    config: SoakConfig
    rows: list[SoakRow]
    problems: list[str]
    leaks: list[Leak]
    calls: list[CallRecord]
    transitions: list[Transition]
    windows: list[FaultWindow]
    duration: float
    scanned: dict[str, int]
    keys_checked: int
    unacked_landed: int
    write_transitions: list[Transition] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no invariant was violated and no secret leaked."""
        return not self.problems and not self.leaks

    def table(self) -> str:
        """The summary as a markdown table."""
        head = (
            "| fault | injected | ops | fallbacks | unavailable | errors | p99 ms | max ms "
            "| recovery ms (median / max) | breaker cycles |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
        )
        lines = [head]
        for r in self.rows:
            recovery = (
                "-"
                if math.isnan(r.recovery_ms_max)
                else f"{r.recovery_ms_median:.0f} / {r.recovery_ms_max:.0f}"
            )
            lines.append(
                f"| {r.kind} | {r.faults} | {r.ops} | {r.fallbacks} | {r.unavailable} "
                f"| {r.errors} | {r.p99_ms:.1f} | {r.max_ms:.1f} | {recovery} "
                f"| {r.breaker_cycles} |"
            )
        return "\n".join(lines)

    def footer(self) -> str:
        """One paragraph: run length, bounds, verification and scanning totals."""
        c = self.config
        scanned = ", ".join(f"{source}: {n}" for source, n in sorted(self.scanned.items()))
        return (
            f"{len(self.calls)} calls in {self.duration:.0f} s "
            f"({c.sync_workers} threads + {c.async_workers} asyncio tasks"
            f"{', TLS' if c.tls else ''}); latency bound {c.latency_bound * 1000:.0f} ms; "
            f"{self.keys_checked} keys verified, {self.unacked_landed} held a write reported "
            f"as failed; scanned {scanned}; leaks: {len(self.leaks)}; "
            f"problems: {len(self.problems)}. Recovery: from the heal to the first successful "
            f"call (after oom, the first value stored again)."
        )

    def causes(self) -> str:
        """Per fault kind, what the failed calls ran into (innermost exception types)."""
        lines = []
        for row in self.rows:
            if row.causes:
                found = ", ".join(f"{name} {n}" for name, n in row.causes.items())
                lines.append(f"- {row.kind}: {found}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        """The summary, problems and leaks as JSON-ready data."""
        return {
            "rows": [r.as_dict() for r in self.rows],
            "problems": list(self.problems),
            "leaks": [leak.__dict__ for leak in self.leaks],
            "duration": self.duration,
            "calls": len(self.calls),
            "latency_bound": self.config.latency_bound,
            "keys_checked": self.keys_checked,
            "unacked_landed": self.unacked_landed,
            "scanned": dict(self.scanned),
            "tls": self.config.tls,
        }

    def timeline(self) -> Timeline:
        """The run as a :class:`~redisguard.testing.Timeline` for :func:`plot_timeline`."""
        states = [(0.0, "closed")] + [(t.at, t.new) for t in self.transitions]
        outages = [(w.injected, w.healed, w.kind) for w in self.windows if not math.isnan(w.healed)]
        return Timeline(
            calls=[(c.start, c.latency, c.outcome) for c in self.calls],
            states=states,
            outages=outages,
            end=self.duration,
            title=f"redisguard chaos soak{' (TLS)' if self.config.tls else ''}",
        )


# ------------------------------------------------------------------------------ analysis


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[index]


def _window_of(windows: Sequence[FaultWindow], call: CallRecord) -> FaultWindow | None:
    """The fault window a call overlaps (a call that began just before a fault counts)."""
    for window in windows:
        if call.start <= window.end and call.end >= window.injected:
            return window
    return None


def _closed_after(window: FaultWindow, transitions: Sequence[Transition]) -> float:
    """When the breaker was (again) closed once Redis returned; NaN if not before the next fault.

    If it was already closed when Redis returned (a blip it rode out, or a quick flap), that
    is the time of its last close, else of the first close after.
    """
    before = [t for t in transitions if window.injected <= t.at <= window.healed]
    if not before or before[-1].new == "closed":
        return before[-1].at if before else window.healed
    closes = [
        t.at
        for t in transitions
        if t.new == "closed" and window.healed < t.at < window.next_injected
    ]
    return min(closes, default=math.nan)


def _cycle_problems(
    window: FaultWindow,
    transitions: Sequence[Transition],
    outage: bool,
    config: SoakConfig,
    what: str = "the breaker",
) -> tuple[bool, list[str]]:
    """Whether the window saw a full closed->open->half-open->closed cycle, and violations.

    ``what`` names the state machine in messages (``"the write side"``).
    """
    until = min(window.end + 0.05, window.next_injected)
    inside = [t for t in transitions if window.injected <= t.at <= until]
    label = f"{window.kind} #{window.index}"
    path = [(t.old, t.new) for t in inside]
    opened = ("closed", "open") in path
    complete = False
    if opened:
        first = path.index(("closed", "open"))
        rest = path[first + 1 :]
        if ("open", "half-open") in rest:
            after = rest[rest.index(("open", "half-open")) + 1 :]
            complete = ("half-open", "closed") in after
    problems = []
    if outage and not opened:
        problems.append(f"{label}: {what} never opened during the outage")
    if inside and inside[-1].new != "closed":
        problems.append(f"{label}: {what} ended {inside[-1].new}, not closed")
    elif opened and not complete:
        problems.append(f"{label}: no closed -> open -> half-open -> closed cycle: {path}")
    if not math.isnan(window.recovery) and opened:
        last_open = max(
            (t.at for t in inside if t.new == "open" and t.at <= window.healed),
            default=window.injected,
        )
        # Slow calls re-open for reset_timeout, and no PING disproves them: counted from the
        # last such opening (a slow trial after the heal: the reconnect made it slow).
        slow = [t.at for t in inside if t.new == "open" and t.cause == "SlowCallsError"]
        if slow or window.kind in UNPROBED_KINDS:
            since = max([window.healed, *slow]) - window.healed
            bound = since + config.recovery_bound(0.0, probed=False)
        else:
            bound = config.recovery_bound(window.healed - last_open)
        if window.recovery > bound:
            problems.append(
                f"{label}: first success {window.recovery * 1000:.0f} ms after Redis returned "
                f"(bound {bound * 1000:.0f} ms)"
            )
    return complete, problems


def _analyse(config: SoakConfig, recorder: Recorder, problems: list[str]) -> list[SoakRow]:
    windows = recorder.windows
    for window, following in zip(windows, [*windows[1:], None], strict=True):
        window.next_injected = math.inf if following is None else following.injected
        writes_only = window.kind in WRITE_FAULT_KINDS
        ok_after = [
            c.end
            for c in recorder.calls
            if c.outcome == "ok"
            and c.start >= window.healed
            and (c.op in _STORES or not writes_only)
        ]
        if ok_after:
            window.recovered = min(ok_after)
        else:
            what = "store" if writes_only else "call"
            problems.append(f"{window.kind} #{window.index}: no {what} succeeded after it healed")
        window.closed = _closed_after(window, recorder.transitions)
    for what, moves in (
        ("breaker", recorder.transitions),
        ("write side", recorder.write_transitions),
    ):
        if moves and moves[-1].new != "closed":
            problems.append(f"the run ended with the {what} {moves[-1].new}")
    by_kind: dict[str, list[CallRecord]] = {kind: [] for kind in (*config.faults, "none")}
    for call in recorder.calls:
        owner = _window_of(windows, call)
        by_kind[owner.kind if owner else "none"].append(call)
        if call.latency > config.latency_bound:
            problems.append(
                f"{call.worker} {call.op} took {call.latency * 1000:.0f} ms at "
                f"t={call.start:.2f}s (bound {config.latency_bound * 1000:.0f} ms, "
                f"{owner.kind if owner else 'no fault'})"
            )
    rows = []
    for kind, calls in by_kind.items():
        kind_windows = [w for w in windows if w.kind == kind]
        cycles = 0
        for window in kind_windows:
            if kind in WRITE_FAULT_KINDS:
                # The main side must stay closed (reads go on); the write side cycles.
                _, found = _cycle_problems(window, recorder.transitions, False, config)
                problems.extend(f"{p} (writes were refused, reads were not)" for p in found)
                if any(
                    t.new == "open" and window.injected <= t.at <= window.end
                    for t in recorder.transitions
                ):
                    problems.append(f"{kind} #{window.index}: the breaker's main side opened")
                complete, found = _cycle_problems(
                    window, recorder.write_transitions, True, config, "the write side"
                )
            else:
                complete, found = _cycle_problems(
                    window, recorder.transitions, kind in OUTAGE_KINDS, config
                )
            cycles += complete
            problems.extend(found)
        recoveries = [w.recovery * 1000 for w in kind_windows if not math.isnan(w.recovery)]
        latencies = [c.latency * 1000 for c in calls]
        rows.append(
            SoakRow(
                kind=kind,
                faults=len(kind_windows),
                ops=len(calls),
                ok=sum(c.outcome == "ok" for c in calls),
                fallbacks=sum(c.outcome == "fallback" for c in calls),
                unavailable=sum(c.outcome == "unavailable" for c in calls),
                errors=sum(c.outcome == "error" for c in calls),
                p99_ms=_percentile(latencies, 0.99),
                max_ms=max(latencies, default=math.nan),
                recovery_ms_median=statistics.median(recoveries) if recoveries else math.nan,
                recovery_ms_max=max(recoveries, default=math.nan),
                breaker_cycles=cycles,
                causes=dict(Counter(c.cause for c in calls if c.cause).most_common()),
            )
        )
    return rows


# ------------------------------------------------------------------------------- engine


class _AsyncSide:
    """The asyncio half of the workload: one event loop in a thread, its client and tasks."""

    def __init__(
        self,
        soak: _Soak,
        plans: Sequence[_WorkerPlan],
    ) -> None:
        self._soak = soak
        self._plans = plans
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="soak-async", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the asyncio side of the soak did not start")
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        self._thread.join(30)
        if self._error is not None:
            raise self._error

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:
            self._error = exc
            self._ready.set()

    async def _run(self) -> None:
        soak = self._soak
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        client = await aconnect(soak.url, wait=STARTUP_WAIT, **soak.client_options())
        try:
            stores = soak.stores(client, asynchronous=True)
            self._ready.set()
            tasks = [asyncio.create_task(self._worker(plan, stores)) for plan in self._plans]
            tasks.append(asyncio.create_task(self._readiness(client)))
            await self._stop.wait()
            # Workers finish their current call (its outcome is recorded); readiness is
            # cancelled. Whatever is still running after the latency bound is cancelled
            # too, and its write counted as unacknowledged.
            tasks[-1].cancel()
            _, pending = await asyncio.wait(tasks, timeout=soak.config.latency_bound + 1)
            for task in pending:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        finally:
            await client.aclose()

    async def _worker(self, plan: _WorkerPlan, stores: tuple[Any, Any]) -> None:
        soak = self._soak
        recorder, think, gate = soak.recorder, soak.config.think, soak.gate
        assert self._stop is not None
        while not self._stop.is_set():
            if not gate.enter():
                await asyncio.sleep(0.005)
                continue
            op = plan.next()
            start = recorder.now()
            try:
                result = await _async_call(stores, op)
            except asyncio.CancelledError:
                plan.abandoned(op)
                raise
            except BaseException as exc:
                plan.done(op, start, recorder.now(), None, exc)
            else:
                plan.done(op, start, recorder.now(), result, None)
            finally:
                gate.leave()
            await asyncio.sleep(think)

    async def _readiness(self, client: Any) -> None:
        from redisguard.health import areadiness  # noqa: PLC0415 - optional module

        while True:
            body = await areadiness(client, timeout=self._soak.config.socket_timeout)
            self._soak.scanner.scan("readiness body", json.dumps(body.as_dict(details=True)))
            await asyncio.sleep(0.25)


class _Soak:
    """One soak run: owns the server, the proxy, the clients and the threads."""

    def __init__(self, config: SoakConfig, out: IO[str] | None) -> None:
        self.config = config
        self.out = out
        self.rng = random.Random(config.seed)
        self.scanner = SecretScanner()
        self.recorder = Recorder()
        self.problems: list[str] = []
        self.password = self.scanner.new("password")
        self.breaker_name = f"soak-{fingerprint(self.password, 8)}"
        self.breaker: Breaker = get_breaker(self.breaker_name, config.breaker)
        self._listener = self.recorder.listener()
        self.breaker.add_listener(self._listener)
        self.tracer_provider: Any = None
        self.server = RedisServer(appendonly=True, password=self.password, tls=config.tls)
        self.proxy: FaultProxy | None = None
        self.url = ""
        self._stop = threading.Event()
        self.gate = _Gate()

    # -- plumbing shared by both sides ------------------------------------------------------
    def client_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "socket_timeout": self.config.socket_timeout,
            "socket_connect_timeout": self.config.socket_connect_timeout,
            "breakers": [self.breaker],
            "prober": self.config.prober,
        }
        if self.config.tls:
            options["ssl_ca_certs"] = str(self.server.tls_ca_path)
        return options

    def stores(self, client: Any, *, asynchronous: bool) -> tuple[Any, Any]:
        from redisguard import stores  # noqa: PLC0415 - keeps testing importable alone

        session_cls = stores.AsyncSessionStore if asynchronous else stores.SessionStore
        token_cls = stores.AsyncTokenStore if asynchronous else stores.TokenStore
        common: dict[str, Any] = {
            "breaker": self.breaker,
            "retry": self.config.retry,
            "tracer_provider": self.tracer_provider,
        }
        sessions = session_cls(client, prefix="soak:s:", ttl=_SESSION_TTL, **common)
        tokens = token_cls(client, prefix="soak:t:", **common)
        return sessions, tokens

    def say(self, text: str) -> None:
        if self.out is not None:
            print(text, file=self.out, flush=True)

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> SoakResult:
        config = self.config
        if config.capture_spans:
            self.tracer_provider = tracer_provider_for(self.scanner)
        started = time.monotonic()
        with capture_logs(self.scanner), self.server:
            with FaultProxy.for_server(self.server) as proxy:
                self.proxy = proxy
                self.url = proxy.url
                self._drive()
            keys_checked, landed = self._verify()
        self.breaker.remove_listener(self._listener)
        rows = _analyse(config, self.recorder, self.problems)
        leaks = list(self.scanner.leaks)
        for leak in leaks:
            self.problems.append(f"{leak.kind} {leak.secret} leaked into a {leak.source}")
        return SoakResult(
            config=config,
            rows=rows,
            problems=self.problems,
            leaks=leaks,
            calls=self.recorder.calls,
            transitions=self.recorder.transitions,
            windows=self.recorder.windows,
            duration=time.monotonic() - started,
            scanned=dict(self.scanner.scanned),
            keys_checked=keys_checked,
            unacked_landed=landed,
            write_transitions=self.recorder.write_transitions,
        )

    def _drive(self) -> None:
        config = self.config
        plans = [
            _WorkerPlan(
                f"{mode}-{i}",
                random.Random(self.rng.random()),
                self.scanner,
                self.recorder,
                config.keys_per_worker,
                self.problems,
            )
            for mode, count in (("sync", config.sync_workers), ("async", config.async_workers))
            for i in range(count)
        ]
        self.plans = plans
        client = connect(self.url, wait=STARTUP_WAIT, **self.client_options())
        threads: list[threading.Thread] = []
        async_side = _AsyncSide(self, plans[config.sync_workers :])
        try:
            stores = self.stores(client, asynchronous=False)
            for plan in plans[: config.sync_workers]:
                threads.append(self._thread(self._sync_worker, plan, stores))
            threads.append(self._thread(self._sync_readiness, client))
            async_side.start()
            self._sleep(config.settle)
            self._schedule()
        finally:
            self._stop.set()
            for thread in threads:
                thread.join(30)
            try:
                async_side.stop()
            finally:
                client.close()

    def _thread(self, target: Callable[..., None], *args: Any) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, daemon=True, name="soak-sync")
        thread.start()
        return thread

    def _sleep(self, seconds: float) -> None:
        time.sleep(max(seconds, 0.0))

    def _sync_worker(self, plan: _WorkerPlan, stores: tuple[Any, Any]) -> None:
        recorder, think, gate = self.recorder, self.config.think, self.gate
        while not self._stop.is_set():
            if not gate.enter():
                self._stop.wait(0.005)
                continue
            op = plan.next()
            start = recorder.now()
            try:
                result = _sync_call(stores, op)
            except BaseException as exc:
                plan.done(op, start, recorder.now(), None, exc)
            else:
                plan.done(op, start, recorder.now(), result, None)
            finally:
                gate.leave()
            self._stop.wait(think)

    def _sync_readiness(self, client: Any) -> None:
        from redisguard.health import readiness  # noqa: PLC0415 - optional module

        while not self._stop.is_set():
            body = readiness(client)
            self.scanner.scan("readiness body", json.dumps(body.as_dict(details=True)))
            self._stop.wait(0.25)

    # -- faults ---------------------------------------------------------------------------------
    def _schedule(self) -> None:
        config = self.config
        deadline = time.monotonic() + config.seconds
        index = 0
        done: set[str] = set()
        while True:
            order = list(config.faults)
            self.rng.shuffle(order)
            for kind in order:
                if time.monotonic() >= deadline and done >= set(config.faults):
                    return
                index += 1
                self._inject(kind, index)
                done.add(kind)

    def _inject(self, kind: str, index: int) -> None:
        config, server = self.config, self.server
        proxy = self.proxy
        assert proxy is not None
        window = FaultWindow(kind, index, self.recorder.now())
        self.recorder.windows.append(window)
        if kind == "kill":
            server.kill()
            self._sleep(config.hold)
            server.restart()
        elif kind == "pause":
            server.pause()
            self._sleep(config.hold)
            server.resume()
        elif kind == "blackhole":
            proxy.blackhole()
            self._sleep(config.hold)
            proxy.heal()
        elif kind == "latency":
            proxy.latency(config.latency_ms)
            self._sleep(config.hold)
            proxy.heal()
        elif kind == "brownout":
            proxy.latency(config.brownout_ms)
            self._sleep(config.hold)
            proxy.heal()
        elif kind == "oom":
            with self._admin() as admin:
                refuse_writes(admin)
                self._sleep(config.hold)
                allow_writes(admin)
        elif kind == "reset":
            end = time.monotonic() + config.hold
            while time.monotonic() < end:
                proxy.reset()
                self._sleep(0.05)
        else:  # loading
            self._loading()
        window.healed = self.recorder.now()
        if kind == "loading":
            server.wait_until_loaded()  # removes the filler, re-enables the AOF
        waited = self._await_recovery(window)
        self.say(
            f"  {kind:<9} #{index:<3} held {window.healed - window.injected:5.2f} s, "
            f"breaker {self.breaker.current_state} {(waited - window.healed) * 1000:6.0f} ms "
            "after Redis returned"
        )
        self._sleep(config.settle)

    def _loading(self) -> None:
        # RedisServer.start_loading() snapshots with SAVE, then kills and restarts from that
        # RDB with the AOF off: a write acknowledged between the SAVE and the kill would be
        # lost (a toolkit limitation, not a redisguard one). The workload holds its calls
        # for those few milliseconds, then meets the server while it answers -LOADING.
        self.gate.close(timeout=self.config.latency_bound + 1)
        try:
            self.server.start_loading(self.config.hold)
        finally:
            self.gate.open()
        deadline = time.monotonic() + self.config.hold * 5 + 10
        while self.server.is_loading and time.monotonic() < deadline:
            time.sleep(0.005)

    def _await_recovery(self, window: FaultWindow) -> float:
        """Wait until a call that started after ``healed`` succeeded and the breaker closed.

        After a fault that refused only writes, the call must store a value and the write
        side must be closed too.
        """
        probed = window.kind not in UNPROBED_KINDS
        bound = self.config.recovery_bound(window.healed - window.injected, probed=probed)
        limit = time.monotonic() + bound + 5
        recorder, breaker = self.recorder, self.breaker
        stores = window.kind in WRITE_FAULT_KINDS
        while time.monotonic() < limit:
            last = recorder.last_ok_store_start if stores else recorder.last_ok_start
            closed = breaker.state_code == CLOSED and breaker.write_state == "closed"
            if last >= window.healed and closed:
                break
            time.sleep(0.005)
        return recorder.now()

    @contextlib.contextmanager
    def _admin(self) -> Iterator[Any]:
        """A plain redis-py client straight to the server (no proxy, no guard)."""
        client = redis.Redis(**self.server.client_kwargs(), socket_timeout=5)
        try:
            yield client
        finally:
            client.close()

    # -- verification ---------------------------------------------------------------------
    def _verify(self) -> tuple[int, int]:
        """Read every owned key back, directly (no proxy, no faults); return (keys, landed)."""
        from redisguard import stores  # noqa: PLC0415

        server = self.server
        if not server.is_running:
            server.restart()
        if server.is_paused:
            server.resume()
        breaker = Breaker(f"{self.breaker_name}-verify", BreakerConfig())
        options = self.client_options() | {
            "breakers": [breaker],
            "prober": False,
            "socket_timeout": 2.0,
        }
        client = connect(server.url, **options)
        checked = landed = 0
        try:
            sessions = stores.SessionStore(client, prefix="soak:s:", breaker=breaker, retry=None)
            tokens = stores.TokenStore(client, prefix="soak:t:", breaker=breaker, retry=None)
            for plan in self.plans:
                for key in plan.sessions:
                    raw = sessions.get(key.ident, strict=True)
                    seen = _ABSENT if raw is None else json.dumps(raw, separators=(",", ":"))
                    landed += self._judge("session", plan, key, seen)
                    checked += 1
                for key in plan.tokens:
                    token = tokens.get(key.ident)
                    seen = _ABSENT if token is None else token.value
                    landed += self._judge("token", plan, key, seen)
                    checked += 1
        finally:
            client.close()
        return checked, landed

    def _judge(self, what: str, plan: _WorkerPlan, key: _Key, seen: str) -> bool:
        if seen == key.acked:
            return False
        if seen in key.unacked:
            return True
        state = "missing" if seen == _ABSENT else "a value that was never acknowledged"
        self.problems.append(
            f"{plan.name}: {what} {fingerprint(key.ident)} holds {state}; its last "
            f"acknowledged write was {'a delete' if key.acked == _ABSENT else 'a value'} "
            f"(lost acknowledged write)"
        )
        return False


# ------------------------------------------------------------------------------ entry points


def run_soak(
    config: SoakConfig | None = None,
    *,
    out: IO[str] | None = sys.stdout,
    report: str | Path | None = None,
    plot: str | Path | None = None,
) -> SoakResult:
    """Run the chaos soak and print its summary table.

    Args:
        config: Settings; ``SoakConfig()`` (75 s or ``$REDISGUARD_SOAK_SECONDS``) by default.
        out: Where progress and the table are printed (None: silent).
        report: Write the markdown table here; default ``$REDISGUARD_SOAK_REPORT`` if set.
        plot: Also draw the timeline chart here (``.svg`` or ``.png``; needs matplotlib).

    Returns:
        The :class:`SoakResult`; ``result.ok`` tells whether every invariant held.

    Raises:
        ServerNotFoundError: No ``redis-server`` executable.
        ImportError: ``plot`` was given without matplotlib installed.
    """
    config = config or SoakConfig()
    soak = _Soak(config, out)
    soak.say(
        f"redisguard chaos soak: {config.seconds:.0f} s of {', '.join(config.faults)}"
        f"{' over TLS' if config.tls else ''}"
    )
    result = soak.run()
    soak.say("")
    soak.say(result.table())
    soak.say("")
    soak.say(result.footer())
    soak.say("Failed calls by innermost cause:")
    soak.say(result.causes())
    for problem in result.problems[:20]:
        soak.say(f"PROBLEM: {problem}")
    target = report if report is not None else os.environ.get(REPORT_ENV) or None
    if target:
        Path(target).write_text(f"{result.table()}\n\n{result.footer()}\n")
    if plot is not None:
        plot_timeline(result, plot)
    return result


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The soak's command-line options (shared by ``redisguard soak`` and this module)."""
    parser.add_argument("--seconds", type=float, default=None, help="fault schedule length")
    parser.add_argument("--tls", action="store_true", help="run against a TLS server")
    parser.add_argument("--fault", action="append", choices=FAULT_KINDS, help="repeatable")
    parser.add_argument("--plot", default=None, help="write a timeline chart (.svg/.png)")
    parser.add_argument("--report", default=None, help="write the markdown table here")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    parser.add_argument("--seed", type=int, default=None)


def run_from_args(args: argparse.Namespace) -> int:
    """Run the soak as the parsed options say; 0 when every invariant held, else 1."""
    config = SoakConfig(tls=args.tls, seed=args.seed)
    if args.seconds is not None:
        config = replace(config, seconds=args.seconds)
    if args.fault:
        config = replace(config, faults=tuple(dict.fromkeys(args.fault)))
    result = run_soak(
        config, out=None if args.json else sys.stdout, report=args.report, plot=args.plot
    )
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m redisguard.testing._soak [--seconds N] [--tls] [--plot FILE] [--json]``."""
    parser = argparse.ArgumentParser(description="redisguard chaos soak")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
