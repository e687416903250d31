"""Recovery after an outage: time from "Redis ready" to the first successful guarded call.

For each fault -- ``kill`` (SIGKILL, then a restart on the same port), ``pause``
(SIGSTOP/SIGCONT), ``rst`` (a proxy blackholes the traffic, then sends a TCP RST on every
connection, idle pooled ones included, and heals) and ``loading`` (the server restarts and
answers ``-LOADING`` for the outage) -- and for sync and asyncio callers, each repetition:

1. builds a fresh ``redisguard.connect()`` / ``aconnect()`` client and a fresh breaker with
   the default settings, and starts 4 callers (threads or tasks), each making a guarded
   ``GET`` every 10 ms with a fallback; a raw redis-py client (retry off, same timeouts)
   makes a plain ``GET`` every 10 ms beside them: the floor;
2. injects the fault for ``--outage`` seconds (default 2.0 s, plus 0.45 s more on each
   further repetition, so that the heal meets an old-style backoff prober in different
   phases; from 1.5 s into an outage the seed's doubling backoff slept 1.6 s between
   probes), then heals it and notes when Redis is ready (``restart()``/``resume()``/
   ``heal()`` returned; for ``loading``, the first PONG);
3. keeps calling for ``--after`` seconds and reports the time from ready to the first
   guarded success, and the share of guarded calls started in the first second after ready
   that got the fallback.

The table shows the median over ``--reps`` repetitions (min-max in brackets). Targets (issue
9): p50 <= 200 ms for each fault, <= 10 % fallbacks in the first second after the heal.

Before/after: run the same script against an older checkout (``PYTHONPATH=<old> python
benchmarks/bench_recovery.py``); it only uses ``connect()``/``aconnect()`` defaults, so it runs
unchanged on code that predates ``probe_interval``.

Run: ``PYTHONPATH=. python benchmarks/bench_recovery.py [--quick] [--faults kill,rst]
[--modes sync,asyncio] [--reps 3] [--json out.json] [--check]``
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import redis
import redis.asyncio
from _common import only_critical, write_json
from redis.backoff import NoBackoff

import redisguard
from redisguard import Breaker, BreakerConfig, redis_guarded
from redisguard.testing import FaultProxy, RedisServer

FAULTS = ("kill", "pause", "rst", "loading")
MODES = ("sync", "asyncio")
FALLBACK = "fallback"
TARGET_P50_S = 0.200
TARGET_FALLBACK_SHARE = 0.10
_TIMEOUTS: dict[str, Any] = {"socket_timeout": 0.25, "socket_connect_timeout": 0.25}


@dataclass(frozen=True)
class Settings:
    """How long and how often to measure."""

    faults: tuple[str, ...] = FAULTS
    modes: tuple[str, ...] = MODES
    reps: int = 3
    outage: float = 2.0
    stagger: float = 0.45  # added to the outage on each further repetition
    after: float = 1.2
    warmup: float = 0.3
    callers: int = 4
    period: float = 0.01

    @classmethod
    def quick(cls) -> Settings:
        """One repetition of each, a shorter outage: a smoke run, numbers are noisy."""
        return cls(reps=1, outage=1.6, after=1.05, warmup=0.2)


@dataclass
class Rep:
    """One repetition: when Redis was ready and what the callers saw."""

    first_success: float | None  # seconds after ready, guarded
    raw_first_success: float | None  # seconds after ready, raw redis-py
    fallback_share: float  # guarded calls started in [ready, ready + 1 s] that fell back
    calls_first_second: int


@dataclass
class Row:
    """Every repetition of one fault and mode, and their medians."""

    fault: str
    mode: str
    reps: list[Rep] = field(default_factory=list)

    @property
    def p50(self) -> float | None:
        values = [r.first_success for r in self.reps]
        return None if None in values else statistics.median(v for v in values if v is not None)

    @property
    def raw_p50(self) -> float | None:
        values = [r.raw_first_success for r in self.reps if r.raw_first_success is not None]
        return statistics.median(values) if values else None

    @property
    def fallback_share(self) -> float:
        return statistics.median(r.fallback_share for r in self.reps)

    @property
    def met(self) -> bool:
        p50 = self.p50
        return (
            p50 is not None
            and p50 <= TARGET_P50_S
            and self.fallback_share <= TARGET_FALLBACK_SHARE
        )


# -- the outage --------------------------------------------------------------------------------
class Outage:
    """One fault against one server (through a proxy for ``rst``); blocking calls."""

    def __init__(self, fault: str, server: RedisServer, proxy: FaultProxy | None) -> None:
        self.fault = fault
        self.server = server
        self.proxy = proxy

    @property
    def url(self) -> str:
        return self.proxy.url if self.proxy is not None else self.server.url

    def start(self, outage: float) -> None:
        if self.fault == "kill":
            self.server.kill()
        elif self.fault == "pause":
            self.server.pause()
        elif self.fault == "rst":
            assert self.proxy is not None
            self.proxy.blackhole()
        else:  # loading: restart, answering -LOADING for about the outage
            self.server.start_loading(outage)

    def heal(self) -> float:
        """End the fault; return the monotonic time at which Redis was ready."""
        if self.fault == "kill":
            self.server.restart()
        elif self.fault == "pause":
            self.server.resume()
        elif self.fault == "rst":
            assert self.proxy is not None
            self.proxy.reset()  # every connection, the idle pooled ones included
            self.proxy.heal()
        else:
            return self._first_pong()
        return time.monotonic()

    def _first_pong(self) -> float:
        with redis.Redis(**self.server.client_kwargs(), **_TIMEOUTS) as probe:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    probe.ping()
                    ready = time.monotonic()
                    break
                except redis.RedisError:
                    time.sleep(0.002)
            else:
                raise RuntimeError("the server never finished loading")
        self.server.wait_until_loaded()  # removes the loading filler
        return ready


@contextmanager
def _servers(fault: str) -> Iterator[tuple[RedisServer, FaultProxy | None]]:
    with RedisServer() as server:
        if fault == "rst":
            with FaultProxy.for_server(server) as proxy:
                yield server, proxy
        else:
            yield server, None


# -- what the callers saw ----------------------------------------------------------------------
Sample = tuple[float, bool]  # (started, succeeded)


def _summarise(guarded: list[Sample], raw: list[Sample], ready: float) -> Rep:
    def first(samples: list[Sample]) -> float | None:
        times = [t for t, ok in samples if ok and t >= ready]
        return min(times) - ready if times else None

    window = [ok for t, ok in guarded if ready <= t < ready + 1.0]
    share = (window.count(False) / len(window)) if window else 1.0
    return Rep(first(guarded), first(raw), share, len(window))


def _raw_sync(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, retry=redis.retry.Retry(NoBackoff(), 0), **_TIMEOUTS)


def _raw_async(url: str) -> redis.asyncio.Redis:
    retry = redis.asyncio.retry.Retry(NoBackoff(), 0)
    return redis.asyncio.Redis.from_url(url, retry=retry, **_TIMEOUTS)


def run_sync(outage: Outage, settings: Settings, name: str, seconds: float) -> Rep:
    breaker = Breaker(name, BreakerConfig())
    client = redisguard.connect(outage.url, breakers=[breaker])
    raw = _raw_sync(outage.url)

    @redis_guarded(name=name, fallback=FALLBACK, breaker=breaker)
    def get() -> object:
        return client.get("k")

    def raw_get() -> object:
        try:
            return raw.get("k")
        except redis.RedisError:
            return FALLBACK

    stop = threading.Event()
    guarded: list[Sample] = []
    raw_samples: list[Sample] = []

    def caller(fn: Callable[[], object], out: list[Sample]) -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            started = time.monotonic()
            out.append((started, fn() != FALLBACK))
            next_at = max(next_at + settings.period, time.monotonic())
            stop.wait(next_at - time.monotonic())

    threads = [
        threading.Thread(target=caller, args=(get, guarded)) for _ in range(settings.callers)
    ]
    threads.append(threading.Thread(target=caller, args=(raw_get, raw_samples)))
    try:
        for thread in threads:
            thread.start()
        time.sleep(settings.warmup)
        outage.start(seconds)
        time.sleep(seconds)
        ready = outage.heal()
        time.sleep(max(0.0, ready + settings.after - time.monotonic()))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        client.close()
        raw.close()
    return _summarise(guarded, raw_samples, ready)


async def _run_async(outage: Outage, settings: Settings, name: str, seconds: float) -> Rep:
    breaker = Breaker(name, BreakerConfig())
    client = await redisguard.aconnect(outage.url, breakers=[breaker])
    raw = _raw_async(outage.url)

    @redis_guarded(name=name, fallback=FALLBACK, breaker=breaker)
    async def get() -> object:
        return await client.get("k")

    async def raw_get() -> object:
        try:
            return await raw.get("k")
        except redis.RedisError:
            return FALLBACK

    stop = asyncio.Event()
    guarded: list[Sample] = []
    raw_samples: list[Sample] = []

    async def caller(fn: Callable[[], Any], out: list[Sample]) -> None:
        next_at = time.monotonic()
        while not stop.is_set():
            started = time.monotonic()
            out.append((started, await fn() != FALLBACK))
            next_at = max(next_at + settings.period, time.monotonic())
            await asyncio.sleep(next_at - time.monotonic())

    tasks = [asyncio.create_task(caller(get, guarded)) for _ in range(settings.callers)]
    tasks.append(asyncio.create_task(caller(raw_get, raw_samples)))
    try:
        await asyncio.sleep(settings.warmup)
        await asyncio.to_thread(outage.start, seconds)
        await asyncio.sleep(seconds)
        ready = await asyncio.to_thread(outage.heal)
        await asyncio.sleep(max(0.0, ready + settings.after - time.monotonic()))
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
        await raw.aclose()
    return _summarise(guarded, raw_samples, ready)


def _run_loop(coro: Coroutine[Any, Any, Rep]) -> Rep:
    """``asyncio.run()`` without touching the thread's current loop.

    ``asyncio.run()`` ends with ``set_event_loop(None)``, which drops a loop that a caller
    (pytest-asyncio leaves a fresh one after each async test) set and still owns: it is then
    garbage-collected unclosed, a ResourceWarning in someone else's test.
    """
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        try:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()


def run_benchmarks(
    settings: Settings, progress: Callable[[str], None] = lambda line: None
) -> list[Row]:
    """Every fault x mode x repetition; a fresh server per fault and mode."""
    rows = []
    for fault in settings.faults:
        for mode in settings.modes:
            row = Row(fault, mode)
            with _servers(fault) as (server, proxy):
                outage = Outage(fault, server, proxy)
                for rep in range(settings.reps):
                    name = f"bench-{fault}-{mode}-{rep}"
                    seconds = settings.outage + rep * settings.stagger
                    if mode == "sync":
                        result = run_sync(outage, settings, name, seconds)
                    else:
                        result = _run_loop(_run_async(outage, settings, name, seconds))
                    row.reps.append(result)
                    progress(f"  {fault:8} {mode:8} rep {rep + 1}: {_ms(result.first_success)}")
            rows.append(row)
    return rows


# -- report ------------------------------------------------------------------------------------
def _ms(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds * 1e3:.0f} ms"


def _range(values: Sequence[float | None]) -> str:
    known = [v for v in values if v is not None]
    if not known:
        return ""
    return f"[{min(known) * 1e3:.0f}-{max(known) * 1e3:.0f}]"


def format_report(rows: list[Row], settings: Settings) -> str:
    lines = [
        f"redisguard {redisguard.__version__} from {redisguard.__file__}",
        f"redis-py {redis.__version__}, Python {sys.version.split()[0]}; outage "
        f"{settings.outage:.2f} s + {settings.stagger:.2f} s per further rep, "
        f"{settings.reps} rep(s), {settings.callers} callers x "
        f"1 GET / {settings.period * 1e3:.0f} ms",
        "",
        "| fault | callers | ready -> first success, p50 [min-max] | raw redis-py p50 "
        "| fallbacks in 1st s after ready | target met |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        firsts = [r.first_success for r in row.reps]
        lines.append(
            f"| {row.fault} | {row.mode} | {_ms(row.p50)} {_range(firsts)} "
            f"| {_ms(row.raw_p50)} | {row.fallback_share * 100:.0f} % "
            f"| {'yes' if row.met else 'NO'} |"
        )
    lines.append("")
    lines.append(
        f"targets: p50 <= {TARGET_P50_S * 1e3:.0f} ms, <= {TARGET_FALLBACK_SHARE * 100:.0f} % "
        "fallbacks in the first second after the heal"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 rep, 1.6 s outage (~30 s)")
    parser.add_argument("--faults", default=",".join(FAULTS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--reps", type=int)
    parser.add_argument("--outage", type=float, help="seconds (default 2.0)")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    settings = Settings.quick() if args.quick else Settings()
    faults = tuple(f for f in args.faults.split(",") if f)
    modes = tuple(m for m in args.modes.split(",") if m)
    unknown = set(faults) - set(FAULTS) | set(modes) - set(MODES)
    if unknown:
        parser.error(f"unknown fault or mode: {', '.join(sorted(unknown))}")
    settings = replace(settings, faults=faults, modes=modes)
    if args.reps is not None:
        settings = replace(settings, reps=args.reps)
    if args.outage is not None:
        settings = replace(settings, outage=args.outage)
    started = time.monotonic()
    with only_critical("redisguard"):
        rows = run_benchmarks(settings, progress=lambda line: print(line, file=sys.stderr))
    print(format_report(rows, settings))
    print(f"took {time.monotonic() - started:.0f} s")
    if args.json:
        data = [
            {
                "fault": r.fault,
                "mode": r.mode,
                "p50_s": r.p50,
                "raw_p50_s": r.raw_p50,
                "fallback_share": r.fallback_share,
                "met": r.met,
                "reps": [asdict(rep) for rep in r.reps],
            }
            for r in rows
        ]
        write_json(args.json, {"settings": asdict(settings), "rows": data})
    return 1 if args.check and not all(r.met for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
