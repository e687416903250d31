"""``redisguard.django.RedisCache`` against Django's built-in backend and django-redis.

Two measurements, each against one private ``redis-server``:

* **healthy**: ``cache.get`` and ``cache.set`` throughput of Django's built-in ``RedisCache``
  (the baseline), ``redisguard.django.RedisCache`` (without and with ``STALE_FOR``, which
  keeps every read in the L1) and django-redis (``IGNORE_EXCEPTIONS``). The variants run in
  alternating rounds (builtin, redisguard, django-redis, then rotated), so drift in CPU
  frequency or machine load hits all alike; a variant's result is the median of the per-round
  ratios ``baseline time / variant time`` (1.00 = as fast as Django's own backend).
* **paused**: Redis is SIGSTOPped. Each backend has a 250 ms socket timeout. Reported per
  backend: how long the calls took until the breaker opened (redisguard only), then p50/p99
  of ``cache.get`` latency and what the caller saw (a miss, a stale hit from the L1, or the
  exception raised).

Run it::

    python benchmarks/bench_django.py            # about half a minute
    python benchmarks/bench_django.py --quick    # smoke run, a few seconds
    python benchmarks/bench_django.py --json out.json
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import django
import redis
from django.conf import settings

if not settings.configured:
    settings.configure()
    django.setup()

from _common import muted_logs, write_json
from django.core.cache.backends.redis import RedisCache as BuiltinRedisCache
from django_redis.cache import RedisCache as DjangoRedisCache

import redisguard
from redisguard import get_breaker
from redisguard.django import RedisCache, close_clients
from redisguard.testing import RedisServer

__all__ = [
    "HealthyResult",
    "PausedResult",
    "Settings",
    "backends",
    "main",
    "run_benchmarks",
]

TIMEOUT = 0.25
BREAKER = "bench.django"
VALUE = {"user": 42, "name": "ada", "roles": ["admin", "ops"], "bio": "x" * 200}


@dataclass(frozen=True)
class Settings:
    """How much to measure.

    Attributes:
        rounds: Alternating rounds per healthy operation.
        calls: Calls per variant per round.
        open_calls: ``cache.get`` calls timed once redisguard's breaker is open.
        slow_calls: Calls timed against django-redis and the built-in backend while paused
            (each costs the socket timeout).
    """

    rounds: int = 15
    calls: int = 2000
    open_calls: int = 5000
    slow_calls: int = 8

    @classmethod
    def quick(cls) -> Settings:
        """A smoke run: a few seconds."""
        return cls(rounds=3, calls=200, open_calls=500, slow_calls=2)


@dataclass
class HealthyResult:
    """One operation's throughput, per variant, relative to Django's built-in backend."""

    operation: str
    ops_per_s: dict[str, float] = field(default_factory=dict)
    ratio: dict[str, float] = field(default_factory=dict)
    ratio_min: dict[str, float] = field(default_factory=dict)


@dataclass
class PausedResult:
    """What ``cache.get`` cost a caller while Redis was paused."""

    variant: str
    calls: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    outcome: str
    until_open_ms: float | None = None
    calls_until_open: int | None = None


def backends(url: str) -> dict[str, Any]:
    """The three backends, each with a 250 ms socket (and connect) timeout."""
    builtin = BuiltinRedisCache(
        url,
        {"OPTIONS": {"socket_timeout": TIMEOUT, "socket_connect_timeout": TIMEOUT}},
    )
    guarded = RedisCache(
        url,
        {"OPTIONS": {"BREAKER": BREAKER, "SOCKET_TIMEOUT": TIMEOUT}},
    )
    stale = RedisCache(
        url,
        {"OPTIONS": {"BREAKER": BREAKER, "SOCKET_TIMEOUT": TIMEOUT, "STALE_FOR": 600}},
    )
    ignoring = DjangoRedisCache(
        url,
        {
            "OPTIONS": {
                "IGNORE_EXCEPTIONS": True,
                "SOCKET_TIMEOUT": TIMEOUT,
                "SOCKET_CONNECT_TIMEOUT": TIMEOUT,
            }
        },
    )
    return {
        "builtin": builtin,
        "redisguard": guarded,
        "redisguard+stale": stale,
        "django-redis": ignoring,
    }


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _healthy(caches: dict[str, Any], settings_: Settings) -> list[HealthyResult]:
    for cache in caches.values():
        cache.set("bench:key", VALUE)
    operations: dict[str, Callable[[Any], None]] = {
        "get": lambda cache: cache.get("bench:key"),
        "set": lambda cache: cache.set("bench:key", VALUE, 300),
    }
    names = list(caches)
    results = []
    for operation, call in operations.items():
        times: dict[str, list[float]] = {name: [] for name in names}
        for round_ in range(settings_.rounds + 1):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            for name in order:
                cache = caches[name]
                started = time.perf_counter()
                for _ in range(settings_.calls):
                    call(cache)
                if round_:  # round 0 warms every variant up
                    times[name].append(time.perf_counter() - started)
        result = HealthyResult(operation)
        for name in names:
            ratios = [b / v for b, v in zip(times["builtin"], times[name], strict=True)]
            result.ratio[name] = round(statistics.median(ratios), 3)
            result.ratio_min[name] = round(min(ratios), 3)
            result.ops_per_s[name] = round(settings_.calls / statistics.median(times[name]))
        results.append(result)
    return results


def _timed(call: Callable[[], Any], n: int) -> tuple[list[float], str]:
    timings, outcome = [], "miss"
    for _ in range(n):
        started = time.perf_counter()
        try:
            value = call()
        except Exception as exc:
            outcome = f"raised {type(exc).__name__}"
        else:
            outcome = "miss" if value is None else "hit (stale)"
        timings.append(time.perf_counter() - started)
    return timings, outcome


def _row(variant: str, timings: list[float], outcome: str, **extra: Any) -> PausedResult:
    return PausedResult(
        variant,
        len(timings),
        round(_quantile(timings, 0.5) * 1000, 4),
        round(_quantile(timings, 0.99) * 1000, 4),
        round(max(timings) * 1000, 4),
        outcome,
        **extra,
    )


def _paused(caches: dict[str, Any], server: RedisServer, s: Settings) -> list[PausedResult]:
    breaker = get_breaker(BREAKER)
    rows = []
    caches["redisguard+stale"].get("bench:key")  # the L1 keeps what a read saw
    server.pause()
    try:
        guarded = caches["redisguard"]
        started, calls = time.perf_counter(), 0
        while breaker.current_state != "open":
            guarded.get("bench:key")
            calls += 1
            if time.perf_counter() - started > 30:
                raise RuntimeError("redisguard's breaker did not open within 30 s")
        until_open = (time.perf_counter() - started) * 1000
        timings, outcome = _timed(lambda: guarded.get("bench:key"), s.open_calls)
        rows.append(
            _row(
                "redisguard",
                timings,
                outcome,
                until_open_ms=round(until_open, 1),
                calls_until_open=calls,
            )
        )
        stale = caches["redisguard+stale"]
        timings, outcome = _timed(lambda: stale.get("bench:key"), s.open_calls)
        rows.append(_row("redisguard+stale", timings, outcome))
        for name in ("django-redis", "builtin"):
            cache = caches[name]
            timings, outcome = _timed(lambda cache=cache: cache.get("bench:key"), s.slow_calls)
            rows.append(_row(name, timings, outcome))
    finally:
        server.resume()
    return rows


def run_benchmarks(settings_: Settings) -> dict[str, Any]:
    """Start a private redis-server, run both measurements, return a JSON-ready report."""
    # The outage logs are expected; muted for the run and restored after (main() also runs
    # in-process, from the tests, where later tests capture these loggers).
    with muted_logs("redisguard", "django_redis"):
        server = RedisServer().start()
        try:
            url = f"redis://127.0.0.1:{server.port}/0"
            caches = backends(url)
            healthy = _healthy(caches, settings_)
            paused = _paused(caches, server, settings_)
        finally:
            close_clients()
            redisguard.forget_breaker(BREAKER)
            server.stop()
    return {
        "settings": asdict(settings_),
        "env": {
            "python": platform.python_version(),
            "django": django.get_version(),
            "redis-py": redis.__version__,
            "socket_timeout_s": TIMEOUT,
        },
        "healthy": [asdict(r) for r in healthy],
        "paused": [asdict(r) for r in paused],
    }


def _print(report: dict[str, Any]) -> None:
    env = report["env"]
    print(
        f"Django {env['django']}, redis-py {env['redis-py']}, Python {env['python']}, "
        f"socket timeout {env['socket_timeout_s'] * 1000:.0f} ms"
    )
    print("\nhealthy: throughput relative to Django's built-in RedisCache (median of rounds)")
    for row in report["healthy"]:
        cells = ", ".join(
            f"{name} {row['ratio'][name]:.3f}x (min {row['ratio_min'][name]:.3f}, "
            f"{row['ops_per_s'][name]:,.0f} ops/s)"
            for name in row["ratio"]
        )
        print(f"  {row['operation']}: {cells}")
    print("\nRedis paused: cache.get as the caller sees it")
    for row in report["paused"]:
        opened = (
            f"; breaker open after {row['calls_until_open']} calls, {row['until_open_ms']} ms"
            if row["until_open_ms"] is not None
            else ""
        )
        print(
            f"  {row['variant']:<16} p50 {row['p50_ms']:.4f} ms, p99 {row['p99_ms']:.4f} ms, "
            f"max {row['max_ms']:.4f} ms over {row['calls']} calls: {row['outcome']}{opened}"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--json", metavar="PATH", help="also write the report as JSON")
    args = parser.parse_args(argv)
    report = run_benchmarks(Settings.quick() if args.quick else Settings())
    _print(report)
    write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
