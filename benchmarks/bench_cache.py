"""What does ``@cached`` cost? A hit against a raw GET, a stale answer, single-flight counts.

Three measurements against a private ``redis-server`` (loopback), in one run:

``hit`` (sync, 1 thread; and asyncio, 1 task)
    Variants run in alternating rounds (raw, guarded, cached, raw, ...) so drift in CPU
    frequency or machine load hits all alike: ``json.loads(client.get(key))`` (the baseline),
    the same under ``@redis_guarded`` (for reference), and a ``@cached`` hit of the same
    value. Reported: the median over many short rounds of ``variant time / baseline time``
    (the *cost*: 1.00 = as fast as the raw GET plus deserialization; target <= 1.05 for
    ``@cached``), and the CPU this process spends per call beyond the baseline's
    (``time.process_time``: the I/O wait excluded, so it stays steady on a busy machine),
    also expressed as a cost: ``1 + extra CPU / baseline wall time``.
``stale`` (Redis down, breaker open)
    The server is killed after the value is cached and the breaker opened; each call is
    answered from the in-process L1. Reported: p50/p99 per call (the median over rounds of
    each round's quantile; target p99 <= 5 us), next to the guard alone answering a constant
    fallback with its circuit open. Any call that reached the client fails the run.
``single-flight``
    64 asyncio tasks (and 8 threads) call a ``@cached`` function for the same fresh key at
    once; the function takes 10 ms. Reported per round: function calls, and ``SET``s counted
    by the server (``INFO commandstats`` after ``CONFIG RESETSTAT``); target exactly 1 and 1.

Run it::

    python benchmarks/bench_cache.py            # about a minute
    python benchmarks/bench_cache.py --quick    # a smoke run of a few seconds
    python benchmarks/bench_cache.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from typing import Any

import redis
import redis.asyncio
from _common import only_critical, write_json

import redisguard
from redisguard import Breaker, BreakerConfig, redis_guarded
from redisguard.cache import cached
from redisguard.testing import RedisServer

__all__ = ["Settings", "format_report", "main", "run_benchmarks"]

_VALUE = {"id": 42, "name": "Ada Lovelace", "roles": ["admin", "editor"], "active": True}
HIT_TARGET = 1.05
STALE_P99_TARGET_US = 5.0


@dataclass(frozen=True)
class Settings:
    """How long to measure.

    Attributes:
        rounds: Interleaved rounds of the hit scenarios.
        round_calls: Calls per variant per hit round.
        latency_rounds: Rounds of the stale scenario.
        latency_calls: Calls per variant per stale round.
        flight_rounds: Rounds of each single-flight scenario (a fresh key each).
        tasks: Concurrent asyncio tasks in the single-flight scenario.
        threads: Concurrent threads in the threaded single-flight scenario.
        work_seconds: How long the cached function takes in the single-flight scenarios.
    """

    rounds: int
    round_calls: int
    latency_rounds: int
    latency_calls: int
    flight_rounds: int
    tasks: int = 64
    threads: int = 8
    work_seconds: float = 0.01

    @classmethod
    def quick(cls) -> Settings:
        """A smoke run: seconds; the numbers are too noisy to judge targets."""
        return cls(
            rounds=5, round_calls=200, latency_rounds=3, latency_calls=2_000, flight_rounds=3
        )

    @classmethod
    def default(cls) -> Settings:
        """The measuring run: about a minute on a 2-core machine."""
        return cls(
            rounds=401,
            round_calls=150,
            latency_rounds=15,
            latency_calls=20_000,
            flight_rounds=20,
        )


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _breaker(name: str) -> Breaker:
    """A private breaker (not in the registry), so scenarios never share state."""
    return Breaker(name, BreakerConfig(failure_threshold=3, reset_timeout=3600.0))


# -- hit: interleaved rounds ------------------------------------------------------------------
def _interleave(
    variants: dict[str, Callable[[int], float]], settings: Settings
) -> dict[str, dict[str, float]]:
    """Alternating rounds; per variant the median/IQR of ``time / baseline time`` and µs/call.

    The first variant is the baseline.
    """
    names = list(variants)
    n = settings.round_calls
    for fn in variants.values():  # warm-up: connections, caches
        fn(max(50, n))
    times: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    cpu_clock = time.process_time
    for r in range(settings.rounds):
        if r % 20 == 0:
            gc.collect()
        for j in range(len(names)):  # rotate who goes first
            name = names[(r + j) % len(names)]
            began = cpu_clock()
            times[name].append(variants[name](n))
            cpu[name].append(cpu_clock() - began)
    base, base_cpu = times[names[0]], cpu[names[0]]
    out: dict[str, dict[str, float]] = {}
    for name in names:
        costs = [t / b for t, b in zip(times[name], base, strict=True)]
        extra_cpu = [(c - b) / n * 1e6 for c, b in zip(cpu[name], base_cpu, strict=True)]
        out[name] = {
            "cost_median": statistics.median(costs),
            "cost_p25": _quantile(costs, 0.25),
            "cost_p75": _quantile(costs, 0.75),
            "us_per_call": statistics.median(times[name]) / n * 1e6,
            # CPU this process spent per call beyond the baseline's (the I/O wait excluded):
            # what the variant itself costs, steadier than wall time on a busy machine.
            "extra_cpu_us": statistics.mean(extra_cpu),
        }
    base_us = out[names[0]]["us_per_call"]
    for row in out.values():
        row["cost_from_cpu"] = 1 + row["extra_cpu_us"] / base_us
    return out


def _sync_loop(fn: Callable[[], Any]) -> Callable[[int], float]:
    def round_(n: int) -> float:
        began = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - began

    return round_


def _hit_sync(url: str, settings: Settings, stack: ExitStack) -> dict[str, dict[str, float]]:
    client = redisguard.connect(url, socket_timeout=1.0, socket_connect_timeout=2.0, prober=False)
    stack.callback(client.close)
    loads: Callable[[Any], Any] = json.loads
    key = "bench:cache:raw"
    client.set(key, json.dumps(_VALUE, separators=(",", ":")))
    get: Callable[[str], Any] = client.get

    def raw() -> Any:
        return loads(get(key))

    @redis_guarded(name="bench.cache.guarded", fallback=None, breaker=_breaker("bench-guarded"))
    def guarded_get(k: str) -> bytes | str | None:
        return client.get(k)

    def guarded() -> Any:
        return loads(guarded_get(key))

    @cached(client, ttl=3600, stale_for=3600, name="bench.cache", breaker=_breaker("bench-c"))
    def profile(user_id: int) -> dict[str, Any]:
        return _VALUE

    if profile(42) != _VALUE or profile(42) != _VALUE:
        raise AssertionError("the cached function did not return the value")
    return _interleave(
        {
            "raw GET + json.loads": _sync_loop(raw),
            "@redis_guarded GET + json.loads": _sync_loop(guarded),
            "@cached hit": _sync_loop(lambda: profile(42)),
        },
        settings,
    )


def _hit_async(url: str, settings: Settings, stack: ExitStack) -> dict[str, dict[str, float]]:
    loop = asyncio.new_event_loop()
    stack.callback(loop.close)
    client = loop.run_until_complete(
        redisguard.aconnect(url, socket_timeout=1.0, socket_connect_timeout=2.0, prober=False)
    )
    stack.callback(lambda: loop.run_until_complete(client.aclose()))
    loads: Callable[[Any], Any] = json.loads
    key = "bench:cache:araw"
    loop.run_until_complete(client.set(key, json.dumps(_VALUE, separators=(",", ":"))))
    get: Callable[[str], Awaitable[Any]] = client.get

    async def raw() -> Any:
        return loads(await get(key))

    @redis_guarded(name="bench.acache.guarded", fallback=None, breaker=_breaker("bench-ag"))
    async def guarded_get(k: str) -> Any:
        return await client.get(k)

    async def guarded() -> Any:
        return loads(await guarded_get(key))

    @cached(client, ttl=3600, stale_for=3600, name="bench.acache", breaker=_breaker("bench-ac"))
    async def profile(user_id: int) -> dict[str, Any]:
        return _VALUE

    async def hit() -> Any:
        return await profile(42)

    def loop_of(fn: Callable[[], Awaitable[Any]]) -> Callable[[int], float]:
        async def many(n: int) -> float:
            began = time.perf_counter()
            for _ in range(n):
                await fn()
            return time.perf_counter() - began

        return lambda n: loop.run_until_complete(many(n))

    if loop.run_until_complete(hit()) != _VALUE:
        raise AssertionError("the cached function did not return the value")
    return _interleave(
        {
            "raw GET + json.loads": loop_of(raw),
            "@redis_guarded GET + json.loads": loop_of(guarded),
            "@cached hit": loop_of(hit),
        },
        settings,
    )


# -- stale: Redis down, breaker open ----------------------------------------------------------
class _CountingClient:
    """A client whose commands are counted: any command during the stale rounds is I/O."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.commands = 0

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.commands += 1
        execute: Callable[..., Any] = self.client.execute_command
        return execute(*args, **options)


def _latency(fn: Callable[[], Any], n: int) -> list[int]:
    clock = time.perf_counter_ns
    samples = [0] * n
    for i in range(n):
        began = clock()
        fn()
        samples[i] = clock() - began
    samples.sort()
    return samples


def _stale(settings: Settings, stack: ExitStack) -> dict[str, dict[str, float]]:
    server = stack.enter_context(RedisServer())
    client = redisguard.connect(server.url, socket_timeout=0.2, prober=False)
    stack.callback(client.close)
    counting = _CountingClient(client)
    breaker = _breaker("bench-stale")

    @cached(counting, ttl=3600, stale_for=3600, name="bench.stale", breaker=breaker, retry=None)
    def profile(user_id: int) -> dict[str, Any]:
        return _VALUE

    @redis_guarded(name="bench.stale.guard", fallback=None, breaker=breaker, retry=None)
    def guarded_get(key: str) -> bytes | str | None:
        counting.commands += 1
        return client.get(key)

    profile(42)
    server.kill()
    while breaker.current_state != "open":
        profile(42)
    before = counting.commands
    variants: dict[str, Callable[[], Any]] = {
        "guard alone, open circuit, constant fallback": lambda: guarded_get("k"),
        "@cached stale answer from the L1": lambda: profile(42),
    }
    if profile(42) != _VALUE or redisguard.cache.stale_answer() is None:
        raise AssertionError("the stale path did not answer from the L1")
    samples: dict[str, list[list[int]]] = {name: [] for name in variants}
    for fn in variants.values():
        _latency(fn, 1_000)
    for r in range(settings.latency_rounds):
        gc.collect()
        names = list(variants)
        for j in range(len(names)):
            name = names[(r + j) % len(names)]
            samples[name].append(_latency(variants[name], settings.latency_calls))
    if counting.commands != before:
        raise AssertionError(f"{counting.commands - before} command(s) reached the client")
    out: dict[str, dict[str, float]] = {}
    for name, rounds in samples.items():
        pooled = sorted(ns for round_ in rounds for ns in round_)
        out[name] = {
            "p50_us": statistics.median(_quantile(r, 0.5) for r in rounds) / 1000,
            "p99_us": statistics.median(_quantile(r, 0.99) for r in rounds) / 1000,
            "p99_pooled_us": _quantile(pooled, 0.99) / 1000,
            "p999_pooled_us": _quantile(pooled, 0.999) / 1000,
        }
    return out


# -- single-flight ----------------------------------------------------------------------------
def _set_calls(raw: redis.Redis) -> int:
    stats: dict[str, Any] = raw.info("commandstats")
    return int(stats.get("cmdstat_set", {}).get("calls", 0))


def _flight_async(url: str, settings: Settings, raw: redis.Redis) -> list[dict[str, int]]:
    calls = [0]

    async def run() -> list[dict[str, int]]:
        client = await redisguard.aconnect(
            url,
            socket_timeout=1.0,
            socket_connect_timeout=2.0,
            prober=False,
            max_connections=settings.tasks * 2,
        )
        try:

            @cached(client, ttl=60, name="bench.flight", breaker=_breaker("bench-flight"))
            async def slow(n: int) -> int:
                calls[0] += 1
                await asyncio.sleep(settings.work_seconds)
                return n

            rows = []
            for r in range(settings.flight_rounds):
                calls[0] = 0
                raw.config_resetstat()
                results = await asyncio.gather(*(slow(r) for _ in range(settings.tasks)))
                if results != [r] * settings.tasks:
                    raise AssertionError("a task got a wrong value")
                rows.append({"calls": calls[0], "sets": _set_calls(raw)})
            return rows
        finally:
            await client.aclose()

    return asyncio.run(run())


def _flight_threads(url: str, settings: Settings, raw: redis.Redis) -> list[dict[str, int]]:
    client = redisguard.connect(url, socket_timeout=1.0, socket_connect_timeout=2.0, prober=False)
    calls = [0]
    lock = threading.Lock()

    @cached(client, ttl=60, name="bench.tflight", breaker=_breaker("bench-tflight"))
    def slow(n: int) -> int:
        with lock:
            calls[0] += 1
        time.sleep(settings.work_seconds)
        return n

    rows = []
    try:
        for r in range(settings.flight_rounds):
            calls[0] = 0
            raw.config_resetstat()
            gate = threading.Barrier(settings.threads)
            results: list[int] = []

            def worker(
                r: int = r, gate: threading.Barrier = gate, results: list[int] = results
            ) -> None:
                gate.wait()
                results.append(slow(r))

            threads = [threading.Thread(target=worker) for _ in range(settings.threads)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if results != [r] * settings.threads:
                raise AssertionError("a thread got a wrong value")
            rows.append({"calls": calls[0], "sets": _set_calls(raw)})
    finally:
        client.close()
    return rows


# -- the run ----------------------------------------------------------------------------------
def run_benchmarks(settings: Settings) -> dict[str, Any]:
    """Every scenario, in one process; the report as plain data."""
    report: dict[str, Any] = {
        "settings": asdict(settings),
        "python": platform.python_version(),
        "redis_py": redis.__version__,
    }
    with only_critical("redisguard"), ExitStack() as stack:  # the stale scenario logs its outage
        server = stack.enter_context(RedisServer())
        raw = redis.Redis.from_url(server.url)
        stack.callback(raw.close)
        report["redis_server"] = raw.info("server")["redis_version"]
        report["hit_sync"] = _hit_sync(server.url, settings, stack)
        report["hit_async"] = _hit_async(server.url, settings, stack)
        report["flight_async"] = _flight_async(server.url, settings, raw)
        report["flight_threads"] = _flight_threads(server.url, settings, raw)
        with ExitStack() as own:
            report["stale"] = _stale(settings, own)
    hit = report["hit_sync"]["@cached hit"]["cost_median"]
    ahit = report["hit_async"]["@cached hit"]["cost_median"]
    hit_cpu = report["hit_sync"]["@cached hit"]["cost_from_cpu"]
    ahit_cpu = report["hit_async"]["@cached hit"]["cost_from_cpu"]
    stale_p99 = report["stale"]["@cached stale answer from the L1"]["p99_us"]
    flights = report["flight_async"] + report["flight_threads"]
    report["targets"] = {
        "hit_sync_cost<=1.05": hit <= HIT_TARGET,
        "hit_async_cost<=1.05": ahit <= HIT_TARGET,
        "hit_sync_cost_from_cpu<=1.05": hit_cpu <= HIT_TARGET,
        "hit_async_cost_from_cpu<=1.05": ahit_cpu <= HIT_TARGET,
        "stale_p99<=5us": stale_p99 <= STALE_P99_TARGET_US,
        "single_flight_1_call_1_set": all(r == {"calls": 1, "sets": 1} for r in flights),
    }
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as text tables."""
    s = report["settings"]
    lines = [
        f"Python {report['python']}, redis-py {report['redis_py']}, "
        f"redis-server {report['redis_server']} (loopback)",
        "",
        f"hit cost vs raw GET + json.loads ({s['rounds']} interleaved rounds of "
        f"{s['round_calls']} calls; median [IQR] of per-round time ratios)",
    ]
    for mode in ("hit_sync", "hit_async"):
        lines.append(f"  {'sync, 1 thread' if mode == 'hit_sync' else 'asyncio, 1 task'}:")
        for name, row in report[mode].items():
            lines.append(
                f"    {name:<34} {row['cost_median']:.3f}x "
                f"[{row['cost_p25']:.3f}-{row['cost_p75']:.3f}]  {row['us_per_call']:.1f} us/call"
                f"  extra CPU {row['extra_cpu_us']:+.2f} us/call "
                f"(= {row['cost_from_cpu']:.3f}x of the baseline's wall time)"
            )
    lines += [
        "",
        f"Redis down, breaker open ({s['latency_rounds']} rounds of {s['latency_calls']} calls; "
        "median over rounds of each round's quantile)",
    ]
    for name, row in report["stale"].items():
        lines.append(
            f"  {name:<46} p50 {row['p50_us']:.2f} us  p99 {row['p99_us']:.2f} us  "
            f"(pooled p99 {row['p99_pooled_us']:.2f}, p99.9 {row['p999_pooled_us']:.2f})"
        )
    lines += ["", f"single-flight ({s['work_seconds'] * 1000:.0f} ms of work per fill)"]
    for mode, who in (("flight_async", f"{s['tasks']} tasks"), ("flight_threads", "threads")):
        rows = report[mode]
        calls = sorted({r["calls"] for r in rows})
        sets = sorted({r["sets"] for r in rows})
        label = who if mode == "flight_async" else f"{s['threads']} {who}"
        lines.append(
            f"  {label:<10} {len(rows)} rounds: function calls per round {calls}, "
            f"SETs per round (INFO commandstats) {sets}"
        )
    lines += [
        "",
        "targets: "
        + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in report["targets"].items()),
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    args = parser.parse_args(argv)
    settings = Settings.quick() if args.quick else Settings.default()
    report = run_benchmarks(settings)
    print(format_report(report))
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
