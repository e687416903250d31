"""Brownouts and OOM: raw redis-py, the guard as on ``main``, and the guard with slow-call
breaking and read/write sides, side by side in one run.

Against a private ``redis-server`` on a free loopback port, reached through a
:class:`~redisguard.testing.FaultProxy`:

* **brownout**: the proxy adds 30 ms to every reply (below the 250 ms socket timeout). One
  sync caller loops on ``GET`` for a few seconds. Reported per variant: the no-fault rate just
  before the fault, the time from the fault to the breaker opening, the caller's p99 once
  open (target <= 2 ms) and the throughput while open relative to the no-fault rate (target
  >= 0.9x). Variants: raw redis-py; ``@redis_guarded`` with a fallback and no slow-call
  settings (main's behaviour); the same guard on a breaker with ``slow_call_duration=10 ms``,
  ``slow_call_rate_threshold=50``, ``minimum_calls=20``, ``sliding_window_size=40``. Every
  breaker has ``reset_timeout=1 s``, so the open phase includes a slow trial call a second.
* **busy**: another connection runs ``DEBUG SLEEP 0.05`` in a loop (a slow command or a big
  ``KEYS`` blocking the server); the same three variants.
* **oom**: ``maxmemory`` 1 byte with ``noeviction``; 4 caller threads do 80% ``GET`` / 20%
  ``SET`` with a fallback for a few seconds. Reported: raw errors reaching callers (target 0),
  the share of ``GET`` answered by Redis (target >= 99%), ``SET`` falling back and ``SET``
  reaching Redis. Variants: raw redis-py; the guard with the default ``access`` (main's
  behaviour); ``access="read"`` on the ``GET`` guard and ``access="write"`` on the ``SET``
  guard.

Rounds alternate the variants (raw, before, after, raw, ...) so drift hits all alike; a figure
is the median over rounds, a p99 is over the pooled calls. Run it::

    python benchmarks/bench_brownout.py            # about 1 minute
    python benchmarks/bench_brownout.py --quick    # smoke run, ~15 s
    python benchmarks/bench_brownout.py --json out.json --only brownout,oom
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import pybreaker
import redis
from _common import (
    StatusLine,
    exit_status,
    missed_variants,
    muted_logs,
    no_redis_server,
    write_json,
)
from redis.backoff import NoBackoff
from redis.retry import Retry

import redisguard
from redisguard import Breaker, BreakerConfig, RetryPolicy, redis_guarded
from redisguard.testing import FaultProxy, RedisServer
from redisguard.testing._oom import allow_writes, refuse_writes

__all__ = ["SCENARIOS", "Settings", "format_report", "main", "run_benchmarks"]

SOCKET_TIMEOUT = 0.25
LATENCY_MS = 30.0
BUSY_SLEEP = 0.05
RESET_TIMEOUT = 1.0
#: The slow-call settings of the "after" brownout variant.
#: A count-based window: a time-based one would hold the thousands of fast calls made in
#: the seconds before the fault, and take that long to reach 50% slow.
SLOW_CALLS: dict[str, Any] = {
    "slow_call_duration": 0.010,
    "slow_call_rate_threshold": 50.0,
    "minimum_calls": 20,
    "sliding_window_size": 40,
}
P99_OPEN_TARGET_MS = 2.0
OPEN_RATE_TARGET = 0.9
GET_SERVED_TARGET = 0.99
_FALLBACK = b"cached"
_KEYS = [f"bench:k{i}" for i in range(64)]
SCENARIOS = ("brownout", "busy", "oom")


@dataclass(frozen=True)
class Settings:
    """How long to measure.

    Attributes:
        rounds: Interleaved rounds (each variant once per round).
        baseline_seconds: The no-fault run before each fault.
        fault_seconds: How long each variant runs under the fault.
        oom_threads: Caller threads in the OOM scenario.
    """

    rounds: int
    baseline_seconds: float
    fault_seconds: float
    oom_threads: int = 4

    @classmethod
    def quick(cls) -> Settings:
        """A smoke run (numbers too noisy to judge targets)."""
        return cls(rounds=1, baseline_seconds=0.3, fault_seconds=1.5)

    @classmethod
    def default(cls) -> Settings:
        """The measuring run: about a minute."""
        return cls(rounds=3, baseline_seconds=1.0, fault_seconds=4.0)


# -- clients and guards ----------------------------------------------------------------------
def _client(port: int) -> redis.Redis:
    """A raw redis-py client with explicit timeouts and no redis-py retry (the README's advice)."""
    return redis.Redis(
        host="127.0.0.1",
        port=port,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )


_serial = iter(range(1_000_000))


def _breaker(label: str, **slow: Any) -> Breaker:
    """A fresh private breaker, so no variant inherits another's state."""
    config = BreakerConfig(reset_timeout=RESET_TIMEOUT, **slow)
    return Breaker(f"bench-brownout-{label}-{next(_serial)}", config)


class _Opened(pybreaker.CircuitBreakerListener):
    """Remembers when the breaker first opened (monotonic seconds)."""

    def __init__(self) -> None:
        self.at: float | None = None

    def state_change(self, cb: Any, old_state: Any, new_state: Any) -> None:
        if new_state.name == pybreaker.STATE_OPEN and self.at is None:
            self.at = time.monotonic()


@dataclass
class _Caller:
    """One variant's GET function, and how to tell a fallback from a Redis answer."""

    label: str
    key: str
    get: Callable[[str], Any]
    breaker: Breaker | None = None
    opened: _Opened | None = None
    close: Callable[[], None] = lambda: None


def _get_caller(key: str, port: int) -> _Caller:
    client = _client(port)
    if key == "raw":
        return _Caller("raw redis-py", key, client.get, close=client.close)
    slow = SLOW_CALLS if key == "after" else {}
    breaker = _breaker(key, **slow)
    opened = _Opened()
    breaker.add_listener(opened)
    get = redis_guarded(name="bench.get", fallback=_FALLBACK, breaker=breaker, retry=RetryPolicy())(
        client.get
    )
    label = (
        "guarded + slow-call breaking (10 ms, 50% of 40 calls)"
        if key == "after"
        else "guarded, main (no slow-call settings)"
    )
    return _Caller(label, key, get, breaker, opened, client.close)


# -- measuring -------------------------------------------------------------------------------
@dataclass
class _Run:
    """One variant's calls in one round (times in monotonic seconds)."""

    baseline_rate: float
    injected: float
    opened: float | None
    starts: list[float] = field(default_factory=list)
    ns: list[int] = field(default_factory=list)
    fallbacks: int = 0
    ended: float = 0.0


def _loop(get: Callable[[str], Any], seconds: float, run: _Run | None = None) -> int:
    """Call ``get`` in a closed loop for ``seconds``; return the number of calls."""
    clock, perf = time.monotonic, time.perf_counter_ns
    end = clock() + seconds
    n = 0
    key = _KEYS[0]
    while True:
        started = clock()
        if started >= end:
            return n
        t0 = perf()
        value = get(key)
        took = perf() - t0
        n += 1
        if run is not None:
            run.starts.append(started)
            run.ns.append(took)
            run.fallbacks += value is _FALLBACK


def _brownout_round(
    caller: _Caller, fault: contextlib.AbstractContextManager[Any], settings: Settings
) -> _Run:
    began = time.monotonic()
    base = _loop(caller.get, settings.baseline_seconds)
    rate = base / (time.monotonic() - began)
    if caller.opened is not None:
        caller.opened.at = None  # only an opening under the fault counts
    with fault:
        run = _Run(rate, time.monotonic(), None)
        _loop(caller.get, settings.fault_seconds, run)
        run.ended = time.monotonic()
    run.opened = caller.opened.at if caller.opened is not None else None
    return run


def _quantile_ms(ns: Sequence[int], q: float) -> float | None:
    if not ns:
        return None
    ordered = sorted(ns)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] / 1e6


def _summarise_brownout(label: str, key: str, runs: Sequence[_Run]) -> dict[str, Any]:
    """Time to trip, p99 and throughput once open (or over the whole fault if it never
    opened), relative to the no-fault rate."""
    trips, ratios, rates, pooled = [], [], [], []
    for run in runs:
        since = run.opened if run.opened is not None else run.injected
        if run.opened is not None:
            trips.append(run.opened - run.injected)
        calls = [ns for t, ns in zip(run.starts, run.ns, strict=True) if t >= since]
        pooled.extend(calls)
        rate = len(calls) / max(run.ended - since, 1e-9)
        rates.append(rate)
        ratios.append(rate / run.baseline_rate)
    opened_every_round = len(trips) == len(runs)
    p99 = _quantile_ms(pooled, 0.99)
    ratio = statistics.median(ratios)
    row: dict[str, Any] = {
        "key": key,
        "label": label,
        "no_fault_ops_per_s": statistics.median(r.baseline_rate for r in runs),
        "trip_s": statistics.median(trips) if opened_every_round else None,
        "opened_rounds": len(trips),
        "p99_ms": p99,
        "p50_ms": _quantile_ms(pooled, 0.5),
        "ops_per_s": statistics.median(rates),
        "ratio": ratio,
        "fallback_share": sum(r.fallbacks for r in runs) / max(sum(len(r.ns) for r in runs), 1),
        "met": None,
    }
    if key == "after":
        row["met"] = bool(
            opened_every_round
            and p99 is not None
            and p99 <= P99_OPEN_TARGET_MS
            and ratio >= OPEN_RATE_TARGET
        )
    return row


# -- faults ------------------------------------------------------------------------------------
@contextlib.contextmanager
def _latency(proxy: FaultProxy) -> Iterator[None]:
    proxy.latency(LATENCY_MS)
    try:
        yield
    finally:
        proxy.heal()


@contextlib.contextmanager
def _busy(server: RedisServer) -> Iterator[None]:
    """Another connection runs ``DEBUG SLEEP 0.05`` back to back (the server is busy)."""
    stop = threading.Event()
    sleeper = redis.Redis(**server.client_kwargs(), socket_timeout=5)
    # redis-py types execute_command loosely; the call sends one command and waits for it.
    send: Callable[..., Any] = sleeper.execute_command

    def run() -> None:
        while not stop.is_set():
            send("DEBUG", "SLEEP", BUSY_SLEEP)

    thread = threading.Thread(target=run, name="bench-busy", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        sleeper.close()


@contextlib.contextmanager
def _oom(server: RedisServer) -> Iterator[None]:
    admin = redis.Redis(**server.client_kwargs(), socket_timeout=5)
    try:
        refuse_writes(admin)
        yield
    finally:
        allow_writes(admin)
        admin.close()


def _run_slow(
    scenario: str,
    fault: Callable[[], contextlib.AbstractContextManager[Any]],
    port: int,
    settings: Settings,
    progress: Callable[[str], None],
) -> dict[str, Any]:
    keys = ("raw", "before", "after")
    runs: dict[str, list[_Run]] = {k: [] for k in keys}
    labels: dict[str, str] = {}
    for r in range(settings.rounds):
        for key in keys:
            progress(f"{scenario}: round {r + 1}/{settings.rounds} {key}")
            caller = _get_caller(key, port)
            labels[key] = caller.label
            try:
                runs[key].append(_brownout_round(caller, fault(), settings))
            finally:
                caller.close()
            time.sleep(0.05)
    return {
        "key": scenario,
        "variants": [_summarise_brownout(labels[k], k, runs[k]) for k in keys],
    }


# -- OOM ---------------------------------------------------------------------------------------
@dataclass
class _OomCounts:
    gets: int = 0
    gets_served: int = 0
    sets: int = 0
    sets_fallback: int = 0
    sets_reaching_redis: int = 0
    raw_errors: int = 0
    calls: int = 0
    seconds: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, other: _OomCounts) -> None:
        with self.lock:
            for name in ("gets", "gets_served", "sets", "sets_fallback", "raw_errors", "calls"):
                setattr(self, name, getattr(self, name) + getattr(other, name))


def _oom_round(
    key: str, server: RedisServer, port: int, settings: Settings
) -> tuple[str, _OomCounts]:
    client = _client(port)
    total = _OomCounts()
    reached: list[int] = []

    def raw_set(k: str) -> Any:
        reached.append(1)  # list.append is atomic: an exact count across threads
        return client.set(k, b"v")

    if key == "raw":
        label = "raw redis-py"
        get: Callable[[str], Any] = client.get
        put: Callable[[str], Any] = raw_set
    else:
        breaker = _breaker(f"oom-{key}")
        sides: dict[str, dict[str, Any]] = {"get": {}, "set": {}}
        label = "guarded, main (access default)"
        if key == "after":
            sides = {"get": {"access": "read"}, "set": {"access": "write"}}
            label = 'guarded, access="read" / "write"'
        get = redis_guarded(
            name="bench.oom.get", fallback=_FALLBACK, breaker=breaker, **sides["get"]
        )(client.get)
        put = redis_guarded(
            name="bench.oom.set", fallback=_FALLBACK, breaker=breaker, **sides["set"]
        )(raw_set)

    def caller(seed: int) -> None:
        mine = _OomCounts()
        n = seed
        end = time.monotonic() + settings.fault_seconds
        while time.monotonic() < end:
            n += 1
            k = _KEYS[n % len(_KEYS)]
            write = n % 5 == 0
            try:
                value = put(k) if write else get(k)
            except redis.RedisError:
                value = None
                mine.raw_errors += 1
                if write:
                    mine.sets += 1
                else:
                    mine.gets += 1
                continue
            finally:
                mine.calls += 1
            if write:
                mine.sets += 1
                mine.sets_fallback += value is _FALLBACK
            else:
                mine.gets += 1
                mine.gets_served += value is not _FALLBACK
        total.add(mine)

    try:
        with _oom(server):
            started = time.monotonic()
            threads = [
                threading.Thread(target=caller, args=(i * 7,), name="bench-oom")
                for i in range(settings.oom_threads)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            total.seconds = time.monotonic() - started
    finally:
        client.close()
    total.sets_reaching_redis = len(reached)
    return label, total


def _run_oom(
    server: RedisServer, port: int, settings: Settings, progress: Callable[[str], None]
) -> dict[str, Any]:
    keys = ("raw", "before", "after")
    totals = {k: _OomCounts() for k in keys}
    labels: dict[str, str] = {}
    for r in range(settings.rounds):
        for key in keys:
            progress(f"oom: round {r + 1}/{settings.rounds} {key}")
            labels[key], counts = _oom_round(key, server, port, settings)
            totals[key].add(counts)
            totals[key].sets_reaching_redis += counts.sets_reaching_redis
            totals[key].seconds += counts.seconds
    rows = []
    for key in keys:
        t = totals[key]
        served = t.gets_served / t.gets if t.gets else None
        row: dict[str, Any] = {
            "key": key,
            "label": labels[key],
            "calls": t.calls,
            "ops_per_s": t.calls / t.seconds if t.seconds else None,
            "raw_errors": t.raw_errors,
            "gets": t.gets,
            "gets_served_share": served,
            "sets": t.sets,
            "sets_fallback": t.sets_fallback,
            "sets_reaching_redis": t.sets_reaching_redis,
            "met": None,
        }
        if key == "after":
            row["met"] = bool(t.raw_errors == 0 and served is not None and served >= 0.99)
        rows.append(row)
    return {"key": "oom", "variants": rows}


# -- the run -----------------------------------------------------------------------------------
def run_benchmarks(
    settings: Settings,
    *,
    only: Sequence[str] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run the selected scenarios against a private server; return a JSON-ready report.

    Raises:
        KeyError: an unknown scenario.
    """
    keys = list(only) if only else list(SCENARIOS)
    for key in keys:
        if key not in SCENARIOS:
            raise KeyError(f"unknown scenario {key!r}; known: {', '.join(SCENARIOS)}")
    report: dict[str, Any] = {"meta": _meta(settings), "scenarios": []}
    with (
        # The guard's fallback logs (thousands under a fault), muted without changing the
        # logger level the hot path checks.
        muted_logs("redisguard"),
        RedisServer(args=["--enable-debug-command", "yes"]) as server,
        FaultProxy.for_server(server) as proxy,
    ):
        admin = redis.Redis(**server.client_kwargs())
        report["meta"]["redis_server"] = str(admin.info("server").get("redis_version"))
        admin.mset(dict.fromkeys(_KEYS, b"v"))
        admin.close()
        for key in keys:
            if key == "brownout":
                result = _run_slow(key, lambda: _latency(proxy), proxy.port, settings, progress)
                result["title"] = (
                    f"Brownout: the proxy adds {LATENCY_MS:g} ms to every reply "
                    f"(socket_timeout {SOCKET_TIMEOUT * 1000:g} ms), 1 sync caller on GET"
                )
            elif key == "busy":
                result = _run_slow(key, lambda: _busy(server), proxy.port, settings, progress)
                result["title"] = (
                    f"Busy: another connection runs DEBUG SLEEP {BUSY_SLEEP:g} in a loop, "
                    "1 sync caller on GET"
                )
            else:
                result = _run_oom(server, proxy.port, settings, progress)
                result["title"] = (
                    "OOM: maxmemory 1 byte + noeviction, "
                    f"{settings.oom_threads} threads doing 80% GET / 20% SET with a fallback"
                )
            report["scenarios"].append(result)
    return report


def _meta(settings: Settings) -> dict[str, Any]:
    return {
        "redisguard": redisguard.__version__,
        "redisguard_path": os.path.dirname(redisguard.__file__),
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "cpus": os.cpu_count(),
        "rounds": settings.rounds,
        "fault_seconds": settings.fault_seconds,
        "reset_timeout": RESET_TIMEOUT,
        "slow_calls": SLOW_CALLS,
    }


# -- output ------------------------------------------------------------------------------------
def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def format_report(report: dict[str, Any]) -> str:
    """The human-readable tables."""
    meta = report["meta"]
    lines = [
        f"redisguard {meta['redisguard']} | Python {meta['python']} | redis-py {meta['redis_py']}"
        f" | redis-server {meta.get('redis_server', '?')} | {meta['cpus']} CPUs",
        f"redisguard imported from {meta['redisguard_path']}",
        f"{meta['rounds']} interleaved round(s) of {meta['fault_seconds']:g} s under each fault; "
        f"breakers: reset_timeout {meta['reset_timeout']:g} s",
        "",
    ]
    for sc in report["scenarios"]:
        lines.append(sc["title"])
        if sc["key"] == "oom":
            lines.append(
                f"  {'variant':<38} {'calls':>8} {'raw errors':>10} {'GET from Redis':>14} "
                f"{'SET fallback':>12} {'SET to Redis':>12}  target"
            )
            for v in sc["variants"]:
                served = _fmt(v["gets_served_share"], ".2%")
                status = {True: "ok", False: "MISS", None: ""}[v["met"]]
                target = f"0 errors, GET>=99%  {status}" if v["met"] is not None else ""
                lines.append(
                    f"  {v['label']:<38} {v['calls']:>8,} {v['raw_errors']:>10,} {served:>14} "
                    f"{v['sets_fallback']:>5,}/{v['sets']:<6,} {v['sets_reaching_redis']:>12,}"
                    f"  {target}"
                )
        else:
            lines.append(
                f"  {'variant':<54} {'no-fault/s':>10} {'trip s':>7} {'p50 ms':>7} "
                f"{'p99 ms':>7} {'ops/s':>9} {'x no-fault':>10}  target"
            )
            for v in sc["variants"]:
                status = {True: "ok", False: "MISS", None: ""}[v["met"]]
                target = f"p99<=2ms, >=0.9x  {status}" if v["met"] is not None else ""
                trip = _fmt(v["trip_s"], ".2f", "never")
                lines.append(
                    f"  {v['label']:<54} {v['no_fault_ops_per_s']:>10,.0f} {trip:>7} "
                    f"{_fmt(v['p50_ms'], '.3f'):>7} {_fmt(v['p99_ms'], '.3f'):>7} "
                    f"{v['ops_per_s']:>9,.0f} {v['ratio']:>10.2f}  {target}"
                )
            lines.append(
                "  (p50/p99/ops/s: once the breaker opened; over the whole fault if it never did)"
            )
        lines.append("")
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench_brownout.py",
        description="Brownout, busy server and OOM: raw redis-py vs the guard before/after.",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run (~15 s, noisy)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds per scenario")
    parser.add_argument("--seconds", type=float, help="seconds under each fault per variant")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--only", metavar="KEYS", help=f"comma-separated scenarios (of: {', '.join(SCENARIOS)})"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parse_args(argv)
    if no_redis_server():
        return 2
    settings = Settings.quick() if args.quick else Settings.default()
    if args.rounds:
        settings = replace(settings, rounds=args.rounds)
    if args.seconds:
        settings = replace(settings, fault_seconds=args.seconds)
    only = [key.strip() for key in args.only.split(",")] if args.only else None
    progress = StatusLine()
    try:
        report = run_benchmarks(settings, only=only, progress=progress)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    progress.clear()
    print(format_report(report))
    write_json(args.json, report)
    return exit_status(missed_variants(report), check=args.check)


if __name__ == "__main__":
    sys.exit(main())
