"""A fleet on one host: N forked workers making guarded GETs while Redis fails under them.

This is what ``redisguard demo --workers N`` shows and what ``benchmarks/bench_fleet.py``
measures. Each worker is a process forked by :mod:`multiprocessing` (as gunicorn, uvicorn
``--workers`` and Celery's prefork pool make them). It builds its own
:func:`redisguard.connect` client (with its recovery prober) and a guarded ``GET`` on the
breaker :data:`BREAKER` created without a config, so the breaker reads
``REDIS_CIRCUIT_BREAKER_*`` and ``REDISGUARD_SHARED_BREAKERS``: the environment alone
decides whether the workers share one host-wide breaker (``shared=True``) or each keep
their own. Every call is recorded: when it started, how long it took, its outcome, and the
worker's breaker state just before and just after it.

:func:`run_fleet` injects one fault (``pause``: SIGSTOP/SIGCONT; ``kill``: SIGKILL and a
restart on the same port) into a private :class:`~redisguard.testing.RedisServer` and returns
a :class:`FleetRun`, whose properties are the figures the issue asks for: failed calls before
every worker was open, the time until then, trial calls, and the time from the heal until
every worker was closed again. When a worker's breaker opened or closed is taken from a
watcher thread in the worker that samples its state every 2 ms (with a host-shared breaker
the state can change while the worker's own call still waits on Redis). All times come from
``time.monotonic()``, which on Linux is one clock for every process of the host.
"""

from __future__ import annotations

import contextlib
import json
import logging
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, TextIO

import redis

from ._breaker import get_breaker
from ._client import connect
from ._config import BreakerConfig
from ._demo import DemoError, _missing_server, binary_as_dict
from ._guard import redis_guarded
from ._redact import redact_url
from ._version import __version__
from .testing import RedisServer, ServerError, ServerNotFoundError

__all__ = [
    "BREAKER",
    "FLEET_FAULTS",
    "SHARED_DIR_ENV",
    "SHARED_ENV",
    "Call",
    "FleetOptions",
    "FleetRun",
    "WorkerReport",
    "fleet_main",
    "fleet_verdict",
    "format_fleet",
    "run_fleet",
]

#: The breaker every worker guards its GET with (created from the environment in each worker).
BREAKER = "fleet"
SHARED_ENV = "REDISGUARD_SHARED_BREAKERS"
SHARED_DIR_ENV = "REDISGUARD_SHARED_DIR"
FLEET_FAULTS = ("pause", "kill")
_KEY = "redisguard-demo:fleet"
_FALLBACK = "fallback"
#: Call outcomes: answered by Redis; reached Redis and failed (timed out or refused), then
#: the fallback; answered by the fallback without reaching Redis (the breaker rejected it).
SERVED, FAILED, REJECTED = "served", "failed", "rejected"
EXIT_OK, EXIT_FAILED = 0, 1
_WATCH_EVERY = 0.002  # seconds between a worker's samples of its breaker state


@dataclass(frozen=True)
class FleetOptions:
    """One fleet run.

    Attributes:
        workers: Worker processes (forked).
        rate: Guarded GETs per second, per worker.
        fault: ``"pause"`` or ``"kill"``.
        shared: Start the workers with ``REDISGUARD_SHARED_BREAKERS=1`` (host-shared
            breakers) or ``0`` (one breaker per process).
        socket_timeout: The workers' socket and connect timeout, in seconds.
        warmup: Seconds of healthy calls before the fault.
        outage: Seconds the fault lasts.
        after: Seconds of calls after the heal.
        failure_threshold: The breaker's ``failure_threshold``.
        probe_interval: Seconds between the recovery prober's PINGs.
    """

    workers: int = 8
    rate: float = 100.0
    fault: str = "pause"
    shared: bool = True
    socket_timeout: float = 0.25
    warmup: float = 0.5
    outage: float = 5.0
    after: float = 2.0
    failure_threshold: int = 5
    probe_interval: float = 0.1

    def __post_init__(self) -> None:
        if self.fault not in FLEET_FAULTS:
            raise ValueError(f"fault must be one of {', '.join(FLEET_FAULTS)}, got {self.fault!r}")
        if isinstance(self.workers, bool) or not isinstance(self.workers, int):
            raise ValueError(f"workers must be a whole number, got {self.workers!r}")
        if not 1 <= self.workers <= 64:
            raise ValueError(f"workers must be between 1 and 64, got {self.workers!r}")
        for label in ("rate", "socket_timeout", "outage", "after", "probe_interval"):
            value = getattr(self, label)
            if not value > 0:
                raise ValueError(f"{label} must be positive, got {value!r}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {self.warmup!r}")

    @property
    def config(self) -> BreakerConfig:
        """The breaker configuration the workers get through the environment."""
        return BreakerConfig(failure_threshold=self.failure_threshold)

    def environment(self, shared_dir: str) -> dict[str, str]:
        """The variables the workers run with (the breaker reads them, no code changes)."""
        return {
            SHARED_ENV: "1" if self.shared else "0",
            SHARED_DIR_ENV: shared_dir,
            "REDIS_CIRCUIT_BREAKER_FAILURE_THRESHOLD": str(self.failure_threshold),
            "REDISGUARD_PROBE_INTERVAL": f"{self.probe_interval * 1e3:g}",
        }


class Call(NamedTuple):
    """One guarded GET in one worker."""

    start: float  # time.monotonic()
    duration: float  # seconds
    outcome: str  # SERVED, FAILED or REJECTED
    before: str  # the worker's breaker state just before the call
    after: str  # ... and just after it

    @property
    def end(self) -> float:
        return self.start + self.duration

    @property
    def reached_redis(self) -> bool:
        return self.outcome != REJECTED


@dataclass
class WorkerReport:
    """What one worker saw."""

    index: int
    pid: int
    calls: list[Call]
    shared: bool  # Breaker.stats().shared
    host_segment: str | None  # Breaker.stats().host_segment
    trial_calls: int = 0  # Breaker.stats().trial_count: half-open trials this worker admitted
    error: str | None = None  # an exception that escaped a call (never expected)
    # (monotonic time, state) each time the watcher thread saw the breaker state change
    transitions: list[tuple[float, str]] = field(default_factory=list)

    def opened_at(self, fault_at: float) -> float | None:
        """When this worker's breaker state was first seen not closed after the fault
        (monotonic), by the worker's watcher thread: from then on it rejects new calls."""
        for at, state in self.transitions:
            if at >= fault_at and state != "closed":
                return at
        return None

    def closed_at(self, heal_at: float) -> float | None:
        """When this worker's breaker state was first seen closed again after the heal."""
        for at, state in self.transitions:
            if at >= heal_at and state == "closed":
                return at
        return None

    def observed_open_at(self, fault_at: float) -> float | None:
        """When this worker's own calls first saw the breaker not closed after the fault: a
        call admitted just before the breaker opened ends a socket timeout later."""
        for call in self.calls:
            if call.end < fault_at:
                continue
            if call.before != "closed" and call.start >= fault_at:
                return call.start
            if call.after != "closed":
                return call.end
        return None

    @property
    def final_state(self) -> str | None:
        return self.calls[-1].after if self.calls else None


@dataclass
class FleetRun:
    """One run: the options, when the fault began and healed, and every worker's calls."""

    options: FleetOptions
    fault_at: float
    heal_at: float
    workers: list[WorkerReport] = field(default_factory=list)

    def _opened(self) -> list[float | None]:
        return [w.opened_at(self.fault_at) for w in self.workers]

    @property
    def opened_s(self) -> list[float | None]:
        """Per worker, seconds from the fault until it saw its breaker open."""
        return [None if t is None else t - self.fault_at for t in self._opened()]

    @property
    def all_open_s(self) -> float | None:
        """Seconds from the fault until every worker had seen its breaker open."""
        opened = self._opened()
        if not opened or None in opened:
            return None
        return max(t for t in opened if t is not None) - self.fault_at

    @property
    def all_observed_open_s(self) -> float | None:
        """Seconds from the fault until every worker's own calls had seen the breaker open
        (the last call admitted before the opening has ended)."""
        observed = [w.observed_open_at(self.fault_at) for w in self.workers]
        if not observed or None in observed:
            return None
        return max(t for t in observed if t is not None) - self.fault_at

    @property
    def failed_before_all_open(self) -> int:
        """Calls across the host that reached Redis and failed (timed out, refused) between
        the fault and the moment every worker was open (the whole outage if one never was)."""
        opened = self._opened()
        until = (
            self.heal_at
            if not opened or None in opened
            else max(t for t in opened if t is not None)
        )
        return sum(
            1
            for w in self.workers
            for c in w.calls
            if c.outcome == FAILED and c.end >= self.fault_at and c.start < until
        )

    @property
    def failed_total(self) -> int:
        """Calls that reached Redis and failed, from the fault to the end of the run."""
        return sum(
            1
            for w in self.workers
            for c in w.calls
            if c.outcome == FAILED and c.end >= self.fault_at
        )

    @property
    def failed_call_s(self) -> float | None:
        """The median duration of those failed calls (a socket timeout when paused)."""
        durations = [
            c.duration
            for w in self.workers
            for c in w.calls
            if c.outcome == FAILED and c.end >= self.fault_at
        ]
        return statistics.median(durations) if durations else None

    @property
    def trials(self) -> int:
        """Half-open trial calls across the host: what each worker's breaker admitted as a
        trial (``stats().trial_count``; no outage precedes the fault). The prober half-opens
        a breaker only once Redis answers again and ``reset_timeout`` outlasts the run, so
        these are the trial calls after the heal."""
        return sum(w.trial_calls for w in self.workers)

    def _closed(self) -> list[float | None]:
        return [w.closed_at(self.heal_at) for w in self.workers]

    @property
    def closed_s(self) -> list[float | None]:
        """Per worker, seconds from the heal until it saw its breaker closed again."""
        return [None if t is None else t - self.heal_at for t in self._closed()]

    @property
    def all_closed_s(self) -> float | None:
        """Seconds from the heal until every worker had seen its breaker closed again."""
        closed = self._closed()
        if not closed or None in closed:
            return None
        return max(t for t in closed if t is not None) - self.heal_at

    @property
    def all_closed_at_end(self) -> bool:
        return bool(self.workers) and all(w.final_state == "closed" for w in self.workers)

    @property
    def calls(self) -> int:
        return sum(len(w.calls) for w in self.workers)

    @property
    def errors(self) -> list[str]:
        return [f"worker {w.index}: {w.error}" for w in self.workers if w.error]

    @property
    def shared(self) -> bool:
        """Whether every worker's breaker reported itself host-shared."""
        return bool(self.workers) and all(w.shared for w in self.workers)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready figures (times in seconds)."""
        return {
            "fault": self.options.fault,
            "shared_requested": self.options.shared,
            "shared": self.shared,
            "workers": len(self.workers),
            "calls": self.calls,
            "failed_before_all_open": self.failed_before_all_open,
            "failed_total": self.failed_total,
            "failed_call_s": self.failed_call_s,
            "all_open_s": self.all_open_s,
            "all_observed_open_s": self.all_observed_open_s,
            "opened_s": self.opened_s,
            "trials": self.trials,
            "all_closed_s": self.all_closed_s,
            "closed_s": self.closed_s,
            "all_closed_at_end": self.all_closed_at_end,
            "host_segments": sorted({w.host_segment for w in self.workers if w.host_segment}),
            "errors": self.errors,
        }


# -- the worker process -------------------------------------------------------------------------
def _worker(
    index: int,
    url: str,
    options: FleetOptions,
    ready: Any,
    stop: Any,
    out: Any,
) -> None:
    """Body of one worker process: guarded GETs at ``options.rate`` until ``stop`` is set."""
    logging.getLogger("redisguard").setLevel(logging.CRITICAL)  # the outage logs are expected
    calls: list[Call] = []
    error: str | None = None
    breaker = get_breaker(BREAKER)  # created without a config: it reads the environment
    transitions: list[tuple[float, str]] = []
    done = threading.Event()

    def watch() -> None:
        # The state as every new call would find it, sampled every 2 ms: it changes while
        # this worker's own call may still be waiting on Redis.
        last = None
        while not done.is_set():
            state = breaker.current_state
            if state != last:
                transitions.append((time.monotonic(), state))
                last = state
            done.wait(_WATCH_EVERY)

    watcher = threading.Thread(target=watch, name="redisguard-fleet-watch", daemon=True)
    client = None
    try:
        client = connect(
            url,
            socket_timeout=options.socket_timeout,
            socket_connect_timeout=options.socket_timeout,
            breakers=(breaker,),
        )
        entered = False

        @redis_guarded(name="fleet.get", breaker=breaker, fallback=_FALLBACK)
        def get() -> object:
            nonlocal entered
            entered = True
            return client.get(_KEY)

        period = 1.0 / options.rate
        ready.wait()
        watcher.start()
        next_at = time.monotonic()
        while not stop.is_set():
            before = breaker.current_state
            entered = False
            start = time.monotonic()
            value = get()
            duration = time.monotonic() - start
            after = breaker.current_state
            outcome = SERVED if value != _FALLBACK else FAILED if entered else REJECTED
            calls.append(Call(start, duration, outcome, before, after))
            next_at = max(next_at + period, time.monotonic())
            stop.wait(next_at - time.monotonic())
    except Exception as exc:  # reported to the parent, which fails the run
        error = f"{type(exc).__name__}: {exc}"
        ready.abort()  # the parent must not wait for a worker that will never be ready
    finally:
        done.set()
        if watcher.is_alive():
            watcher.join()
        stats = breaker.stats()
        out.put(
            WorkerReport(
                index=index,
                pid=os.getpid(),
                calls=calls,
                shared=bool(getattr(stats, "shared", False)),
                host_segment=getattr(stats, "host_segment", None),
                trial_calls=stats.trial_count,
                error=error,
                transitions=transitions,
            )
        )
        if client is not None:
            client.close()


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set ``values`` in ``os.environ`` (the forked workers inherit them), then restore."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


def _inject(server: RedisServer, fault: str) -> None:
    if fault == "pause":
        server.pause()
    else:
        server.kill()


def _heal(server: RedisServer, fault: str) -> None:
    if fault == "pause":
        server.resume()
    else:
        server.restart()


def run_fleet(
    server: RedisServer,
    options: FleetOptions,
    *,
    shared_dir: str | None = None,
    on_fault: Any = None,
    on_heal: Any = None,
) -> FleetRun:
    """Fork ``options.workers`` workers against ``server``, fail it, heal it, collect calls.

    Args:
        server: A running private server; it is paused or killed and restarted.
        options: What to run.
        shared_dir: ``REDISGUARD_SHARED_DIR`` for the workers; None uses a fresh temporary
            directory, removed afterwards, so a run never shares state with another.
        on_fault: Called (no arguments) right after the fault is injected.
        on_heal: Called right after the server is ready again.

    Raises:
        RuntimeError: a worker did not report back.
    """
    with contextlib.ExitStack() as stack:
        if shared_dir is None:
            shared_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="rg-fleet-"))
        with _environment(options.environment(shared_dir)):
            return _run(server, options, on_fault, on_heal)
    raise AssertionError("unreachable")  # pragma: no cover - ExitStack does not swallow


def _run(server: RedisServer, options: FleetOptions, on_fault: Any, on_heal: Any) -> FleetRun:
    ctx = multiprocessing.get_context("fork")
    with redis.Redis(**server.client_kwargs(), socket_timeout=5) as admin:
        admin.set(_KEY, b"value")
    ready = ctx.Barrier(options.workers + 1)
    stop = ctx.Event()
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker,
            args=(i, server.url, options, ready, stop, out),
            name=f"redisguard-fleet-{i}",
            daemon=True,
        )
        for i in range(options.workers)
    ]
    reports: list[WorkerReport] = []
    try:
        for proc in procs:
            proc.start()
        ready.wait(timeout=30)
        time.sleep(options.warmup)
        fault_at = time.monotonic()  # before the signal: the figures are measured from here
        _inject(server, options.fault)
        if on_fault is not None:
            on_fault()
        time.sleep(options.outage)
        # Stamped before the heal, as the fault is: a worker can close its breaker before a
        # resume() or restart() returns, and its closing must count from the heal.
        heal_at = time.monotonic()
        _heal(server, options.fault)
        if on_heal is not None:
            on_heal()
        time.sleep(options.after)
        stop.set()
        deadline = time.monotonic() + 30
        while len(reports) < options.workers:
            reports.append(out.get(timeout=max(0.1, deadline - time.monotonic())))
    except Exception as exc:
        raise RuntimeError(f"the fleet run failed: {type(exc).__name__}: {exc}") from exc
    finally:
        stop.set()
        if server.is_paused:
            server.resume()
        for proc in procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()
                proc.join()
        out.close()
        out.join_thread()
    reports.sort(key=lambda r: r.index)
    return FleetRun(options, fault_at, heal_at, reports)


# -- the demo -----------------------------------------------------------------------------------
def _ms(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds * 1e3:.0f} ms"


def fleet_verdict(run: FleetRun) -> tuple[bool, list[str]]:
    """Whether the fleet tripped and recovered together; the reasons it did not."""
    opt = run.options
    problems = list(run.errors)
    if not run.shared:
        problems.append("the workers' breakers are not host-shared (Breaker.stats().shared)")
    limit = opt.failure_threshold + opt.workers
    if run.failed_before_all_open > limit:
        problems.append(
            f"{run.failed_before_all_open} failed calls before every worker was open "
            f"(at most failure_threshold + workers = {limit})"
        )
    if run.all_open_s is None:
        problems.append("not every worker opened during the outage")
    elif run.all_open_s > 2 * opt.socket_timeout:
        problems.append(
            f"the last worker opened {_ms(run.all_open_s)} into the outage "
            f"(at most 2 socket timeouts = {_ms(2 * opt.socket_timeout)})"
        )
    attempts = opt.config.half_open_max_attempts
    if run.trials > attempts:
        problems.append(f"{run.trials} trial calls after the heal (at most {attempts})")
    if not run.all_closed_at_end:
        problems.append("not every worker was closed at the end")
    return not problems, problems


def format_fleet(run: FleetRun) -> str:
    """Per worker when it opened and closed, the host-wide counts, and an OK/FAIL verdict."""
    opt = run.options
    lines = [
        f"{len(run.workers)} workers x {opt.rate:g} GET/s, {opt.fault} for {opt.outage:g} s, "
        f"socket timeout {_ms(opt.socket_timeout)}, failure_threshold {opt.failure_threshold}, "
        f"breakers {'host-shared' if run.shared else 'per process'}",
        "",
        "worker  pid      opened after fault  closed after heal  calls",
    ]
    for worker, opened, closed in zip(run.workers, run.opened_s, run.closed_s, strict=True):
        lines.append(
            f"{worker.index:>6}  {worker.pid:<7}  {_ms(opened):>18}  {_ms(closed):>17}  "
            f"{len(worker.calls):>5}"
        )
    failed_kind = "timed-out" if opt.fault == "pause" else "failed (refused)"
    lines += [
        "",
        f"host-wide: {run.failed_before_all_open} {failed_kind} calls before every worker was "
        f"open (median {_ms(run.failed_call_s)} each); all open {_ms(run.all_open_s)} into "
        f"the outage (the last call admitted before that ended at "
        f"{_ms(run.all_observed_open_s)})",
        f"after the heal: {run.trials} trial call(s) host-wide; all closed "
        f"{_ms(run.all_closed_s)} after Redis was back",
    ]
    segments = sorted({w.host_segment for w in run.workers if w.host_segment})
    if segments:
        lines.append(f"shared segment: {', '.join(segments)}")
    ok, problems = fleet_verdict(run)
    if ok:
        lines.append("OK: the fleet tripped together and recovered with one round of trials.")
    else:
        lines.append("FAIL: " + "; ".join(problems))
    return "\n".join(lines)


def fleet_main(
    options: FleetOptions,
    *,
    as_json: bool = False,
    quiet: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """``redisguard demo --workers N``: run the fleet on a private server, print, verdict.

    Human output goes to ``out`` (with ``quiet`` only the table and the verdict; with
    ``as_json`` only a JSON document); errors go to ``err``.

    Returns:
        0 when the fleet tripped and recovered together, 1 when it did not (or the private
        server failed), 2 when the demo cannot run (no ``redis-server``).
    """
    out = out or sys.stdout
    err = err or sys.stderr
    live = not quiet and not as_json

    def say(text: str) -> None:
        if live:
            print(text, file=out, flush=True)

    def on_fault() -> None:
        verb = "paused (SIGSTOP)" if options.fault == "pause" else "killed (SIGKILL)"
        say(f"Redis {verb}; every worker keeps calling ...")

    def on_heal() -> None:
        verb = "resumed (SIGCONT)" if options.fault == "pause" else "restarted on the same port"
        say(f"Redis {verb}; waiting {options.after:g} s for the workers to close ...")

    try:
        try:
            server = RedisServer()
            server.start()
        except ServerNotFoundError as exc:
            raise DemoError(_missing_server(exc)) from None
        except ServerError as exc:
            raise DemoError(f"could not start redis-server: {exc}", EXIT_FAILED) from None
        with server:
            say(
                f"redisguard {__version__} demo: {options.workers} forked workers x "
                f"{options.rate:g} guarded GET/s on a private redis-server "
                f"({redact_url(server.url)}; {server.binary.describe()}), {SHARED_ENV}="
                f"{'1' if options.shared else '0'}; {options.fault} for {options.outage:g} s "
                f"after {options.warmup:g} s"
            )
            try:
                run = run_fleet(server, options, on_fault=on_fault, on_heal=on_heal)
            except RuntimeError as exc:
                raise DemoError(str(exc), EXIT_FAILED) from None
    except DemoError as exc:
        print(f"redisguard demo: {exc}", file=err)
        return exc.exit_code
    except KeyboardInterrupt:
        print("redisguard demo: interrupted", file=err)
        return 130
    ok, problems = fleet_verdict(run)
    if as_json:
        document = {
            **run.as_dict(),
            "redis_server": binary_as_dict(server.binary),
            "ok": ok,
            "problems": problems,
        }
        print(json.dumps(document, indent=2), file=out)
    else:
        print(("\n" if live else "") + format_fleet(run), file=out, flush=True)
    return EXIT_OK if ok else EXIT_FAILED
