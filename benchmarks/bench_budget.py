"""How many attempts reach Redis per caller call during an outage, retry budget off vs on?

Callers (threads, or asyncio tasks) each make a guarded, idempotent GET every 10 ms against a
private ``redis-server``. After a healthy warm-up, Redis fails for ``outage`` seconds, then
comes back; we count, for every call that overlaps the outage or the 2 s after the heal (a
call that began just before the outage and retried into it included), how many attempts it
made. The guarded function's body runs once per attempt and
bumps its caller's own counter, so the count is exact (no sampling, no shared counter).

Faults:

- ``blackhole``: a :class:`~redisguard.testing.FaultProxy` accepts connections and forwards
  nothing (every attempt times out after the client's ``socket_timeout``);
- ``kill``: the server is SIGKILLed (connections are refused at once) and restarted on the
  same port.

Every row uses a fresh breaker on the default policy (5 failures open it, default retry
policy: 3 attempts) with a short ``reset_timeout`` (1 s), so half-open trials happen during
the outage and recovery happens inside the 2-s window; "budget off" sets
``retry_budget_ratio=None``, "budget on" keeps the default (10% + 10/s). The "tolerant"
rows use a breaker that does not open (``failure_threshold=100000``): the budget is then the
only brake on retries.

Run it::

    python benchmarks/bench_budget.py            # about 2 minutes
    python benchmarks/bench_budget.py --quick    # a smoke run of a few seconds
    python benchmarks/bench_budget.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import redis
import redis.asyncio
import redis.asyncio.retry
from _common import StatusLine, no_redis_server, write_json
from redis.backoff import NoBackoff
from redis.retry import Retry

from redisguard import Breaker, BreakerConfig, RetryPolicy, redis_guarded
from redisguard.testing import FaultProxy, RedisServer

__all__ = ["Row", "Settings", "format_report", "main", "run_benchmarks"]

Fault = Literal["blackhole", "kill"]
Mode = Literal["threads", "asyncio"]
_KEY = "bench:budget"
SOCKET_TIMEOUT = 0.1
RESET_TIMEOUT = 1.0
AFTER_HEAL = 2.0
TARGET = 1.1  # attempts per caller call, 64 callers, outage + 2 s after


@dataclass(frozen=True)
class Settings:
    """How long each phase lasts and which rows run."""

    warmup: float = 1.0
    outage: float = 2.0
    after: float = AFTER_HEAL
    interval: float = 0.01  # seconds between one caller's calls
    callers: tuple[int, ...] = (1, 8, 64)
    async_callers: tuple[int, ...] = (64,)
    faults: tuple[Fault, ...] = ("blackhole", "kill")
    tolerant_callers: tuple[int, ...] = (64,)

    @classmethod
    def quick(cls) -> Settings:
        """A smoke run: short phases, few rows."""
        return cls(
            warmup=0.2,
            outage=0.4,
            after=0.4,
            callers=(8,),
            async_callers=(8,),
            tolerant_callers=(),
        )


@dataclass
class Row:
    """One run: a fault, a number of callers, a breaker profile, budget off or on."""

    fault: Fault
    mode: Mode
    callers: int
    profile: str
    budget: bool
    outage_calls: int = 0
    outage_attempts: int = 0
    after_calls: int = 0
    after_attempts: int = 0
    after_successes: int = 0
    retries_denied: int = 0
    target: float | None = None
    met: bool | None = None
    per_call: float = field(init=False, default=0.0)

    def finish(self) -> None:
        calls = self.outage_calls + self.after_calls
        attempts = self.outage_attempts + self.after_attempts
        self.per_call = attempts / calls if calls else 0.0
        if self.target is not None:
            self.met = self.per_call <= self.target


class Caller:
    """One caller's exact tallies; the guarded body bumps ``attempts`` once per attempt."""

    __slots__ = ("attempts", "tallies")

    def __init__(self) -> None:
        self.attempts = 0
        # phase -> [calls, attempts, successes]
        self.tallies: dict[str, list[int]] = {"outage": [0, 0, 0], "after": [0, 0, 0]}

    def note(self, phase: str | None, attempts: int, ok: bool) -> None:
        if phase is not None:
            tally = self.tallies[phase]
            tally[0] += 1
            tally[1] += attempts
            tally[2] += ok


class Clock:
    """The phase boundaries of one run, on ``time.monotonic``."""

    def __init__(self) -> None:
        self.outage_at = float("inf")
        self.heal_at = float("inf")
        self.end_at = float("inf")
        self.stop = threading.Event()

    def phase(self, started: float, finished: float) -> str | None:
        """The window a call belongs to: any call that overlaps the outage or the time after
        it (one that began before the outage but retried into it included)."""
        if finished < self.outage_at or started >= self.end_at:
            return None
        return "outage" if started < self.heal_at else "after"


def _breaker(profile: str, budget: bool) -> Breaker:
    threshold = 100_000 if profile == "tolerant" else 5
    config = BreakerConfig(
        failure_threshold=threshold,
        reset_timeout=RESET_TIMEOUT,
        retry_budget_ratio=10.0 if budget else None,
    )
    return Breaker(f"bench-budget-{profile}-{budget}", config)


_MISS = object()  # the fallback: the call did not get a value from Redis


def _run_threads(
    port: int,
    callers: int,
    breaker: Breaker,
    clock: Clock,
    interval: float,
    drive: Callable[[], Any],
) -> list[Caller]:
    client = redis.Redis(
        port=port,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        retry=Retry(NoBackoff(), 0),
    )

    @redis_guarded(name="bench.budget.get", breaker=breaker, fallback=_MISS, idempotent=True,
                   retry=RetryPolicy())
    def get(caller: Caller) -> Any:
        caller.attempts += 1
        return client.get(_KEY)

    def work(caller: Caller) -> None:
        next_at = time.monotonic()
        while not clock.stop.is_set():
            started = time.monotonic()
            before = caller.attempts
            ok = get(caller) is not _MISS
            caller.note(clock.phase(started, time.monotonic()), caller.attempts - before, ok)
            next_at = max(next_at + interval, time.monotonic())
            clock.stop.wait(max(0.0, next_at - time.monotonic()))

    pool = [Caller() for _ in range(callers)]
    threads = [threading.Thread(target=work, args=(c,), daemon=True) for c in pool]
    try:
        for t in threads:
            t.start()
        drive()
    finally:
        clock.stop.set()
        for t in threads:
            t.join(5.0)
        client.close()
    return pool


async def _run_tasks(
    port: int,
    callers: int,
    breaker: Breaker,
    clock: Clock,
    interval: float,
    drive: Callable[[], Any],
) -> list[Caller]:
    client = redis.asyncio.Redis(
        port=port,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        retry=redis.asyncio.retry.Retry(NoBackoff(), 0),
    )

    @redis_guarded(name="bench.budget.aget", breaker=breaker, fallback=_MISS, idempotent=True,
                   retry=RetryPolicy())
    async def get(caller: Caller) -> Any:
        caller.attempts += 1
        return await client.get(_KEY)

    async def work(caller: Caller) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not clock.stop.is_set():
            started = time.monotonic()
            before = caller.attempts
            ok = await get(caller) is not _MISS
            caller.note(clock.phase(started, time.monotonic()), caller.attempts - before, ok)
            next_at = max(next_at + interval, loop.time())
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    pool = [Caller() for _ in range(callers)]
    tasks = [asyncio.create_task(work(c)) for c in pool]
    try:
        await asyncio.to_thread(drive)
    finally:
        clock.stop.set()
        await asyncio.gather(*tasks)
        await client.aclose()
    return pool


class Lab:
    """The private server, the proxy in front of it, and the faults."""

    def __init__(self, stack: ExitStack) -> None:
        self.server = stack.enter_context(RedisServer())
        self.proxy = stack.enter_context(FaultProxy.for_server(self.server))
        seed = redis.Redis(port=self.server.port)
        seed.set(_KEY, "v")
        seed.close()

    def port(self, fault: Fault) -> int:
        # A kill is seen directly (refused connections); a blackhole needs the proxy.
        return self.proxy.port if fault == "blackhole" else self.server.port

    @contextmanager
    def fault(self, fault: Fault) -> Iterator[None]:
        if fault == "blackhole":
            self.proxy.blackhole()
            try:
                yield
            finally:
                self.proxy.heal()
        else:
            self.server.kill()
            try:
                yield
            finally:
                self.server.restart()


def _drive(lab: Lab, fault: Fault, settings: Settings, clock: Clock) -> None:
    """Run the phases: warm-up, outage, heal, the window after; then stop the callers."""
    time.sleep(settings.warmup)
    clock.outage_at = time.monotonic()
    with lab.fault(fault):
        time.sleep(settings.outage)
    clock.heal_at = time.monotonic()  # Redis is ready again (restart waits for PING)
    clock.end_at = clock.heal_at + settings.after
    time.sleep(settings.after + 0.05)
    clock.stop.set()


def run_row(lab: Lab, row: Row, settings: Settings) -> Row:
    """Run one row and fill in its counts."""
    breaker = _breaker(row.profile, row.budget)
    clock = Clock()
    port = lab.port(row.fault)

    def drive() -> None:
        _drive(lab, row.fault, settings, clock)

    if row.mode == "threads":
        pool = _run_threads(port, row.callers, breaker, clock, settings.interval, drive)
    else:
        pool = asyncio.run(_run_tasks(port, row.callers, breaker, clock, settings.interval, drive))
    for caller in pool:
        row.outage_calls += caller.tallies["outage"][0]
        row.outage_attempts += caller.tallies["outage"][1]
        row.after_calls += caller.tallies["after"][0]
        row.after_attempts += caller.tallies["after"][1]
        row.after_successes += caller.tallies["after"][2]
    row.retries_denied = breaker.stats().retries_denied_count
    if row.callers >= 64 and row.budget:
        row.target = TARGET
    row.finish()
    return row


def plan(settings: Settings) -> list[Row]:
    """Every row of a run, budget off and on next to each other."""
    rows: list[Row] = []
    for fault in settings.faults:
        for mode, counts, profile in (
            ("threads", settings.callers, "default"),
            ("asyncio", settings.async_callers, "default"),
            ("threads", settings.tolerant_callers, "tolerant"),
        ):
            for n in counts:
                for budget in (False, True):
                    rows.append(Row(fault, mode, n, profile, budget))  # type: ignore[arg-type]
    return rows


def run_benchmarks(
    settings: Settings, progress: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Run every row against a private server; return the report."""
    rows = plan(settings)
    with ExitStack() as stack:
        lab = Lab(stack)
        for i, row in enumerate(rows, 1):
            if progress is not None:
                progress(f"[{i}/{len(rows)}] {row.fault} {row.mode} x{row.callers} "
                         f"{row.profile} budget={'on' if row.budget else 'off'}")
            run_row(lab, row, settings)
    return {
        "settings": asdict(settings),
        "rows": [asdict(r) for r in rows],
    }


def format_report(report: dict[str, Any]) -> str:
    """The rows as a table: attempts per call, outage and after, budget off next to on."""
    s = report["settings"]
    lines = [
        f"Attempts reaching Redis per caller call (outage {s['outage']:g} s, then "
        f"{s['after']:g} s after it heals; each caller calls every {s['interval'] * 1000:g} ms; "
        f"reset_timeout {RESET_TIMEOUT:g} s, socket_timeout {SOCKET_TIMEOUT:g} s)",
        "",
        f"  {'fault':<10}{'callers':<15}{'breaker':<10}{'budget':<8}"
        f"{'calls':>8}{'outage':>9}{'after':>9}{'all':>8}{'ok after':>10}{'denied':>8}"
        f"{'target':>9}",
    ]
    for r in report["rows"]:
        outage = r["outage_attempts"] / r["outage_calls"] if r["outage_calls"] else 0.0
        after = r["after_attempts"] / r["after_calls"] if r["after_calls"] else 0.0
        ok_after = r["after_successes"] / r["after_calls"] if r["after_calls"] else 0.0
        target = "" if r["target"] is None else f"<={r['target']:g}"
        status = {True: " ok", False: " MISS", None: ""}[r["met"]]
        lines.append(
            f"  {r['fault']:<10}{str(r['callers']) + ' ' + r['mode']:<15}{r['profile']:<10}"
            f"{'on' if r['budget'] else 'off':<8}{r['outage_calls'] + r['after_calls']:>8}"
            f"{outage:>9.3f}{after:>9.3f}{r['per_call']:>8.3f}{ok_after:>10.1%}"
            f"{r['retries_denied']:>8}{target:>9}{status}"
        )
    lines.append("")
    lines.append(
        "  outage/after/all: attempts per call in that window; ok after: calls that got "
        "a value from Redis in the 2 s after the heal; denied: retries the budget refused."
    )
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench_budget.py",
        description="Attempts per caller call during an outage, retry budget off vs on.",
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parse_args(argv)
    if no_redis_server():
        return 2
    settings = Settings.quick() if args.quick else Settings()
    log = logging.getLogger("redisguard")
    was_disabled, log.disabled = log.disabled, True  # thousands of fallbacks: keep the table
    progress = StatusLine(width=70)
    try:
        report = run_benchmarks(settings, progress)
    finally:
        log.disabled = was_disabled  # main() also runs in-process, from the tests
    progress.clear()
    print(format_report(report))
    write_json(args.json, report)
    missed = [r for r in report["rows"] if r["met"] is False]
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
