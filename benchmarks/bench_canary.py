"""Does the fallback canary cost the caller anything? And does chaos cost anything when off?

Two measurements:

- ``canary``: p50/p99 of a guarded ``GET`` against a private ``redis-server``, with
  ``canary=0`` (off) and ``canary=share`` (default 1%), in alternating rounds so machine
  load hits both alike. The fallback is a callable that does a little work (a dict lookup
  and a small JSON round-trip), declared ``canary_side_effect_free``. Sync: one caller
  thread (the canary runs on its worker thread). asyncio: ``tasks`` concurrent callers (the
  canary runs in a task after the caller has its result). Each row also reports how many
  canary runs were made and dropped.
- ``overhead``: ns per call of a guarded function that does no I/O (the guard's own cost),
  sync and asyncio, with chaos never enabled. With ``--tree PATH`` (repeatable) the same
  measurement runs in a subprocess per source tree (``PYTHONPATH=PATH``), alternating
  between trees, so two checkouts (e.g. main and a branch) compare back to back.

Run it::

    python benchmarks/bench_canary.py                    # under a minute
    python benchmarks/bench_canary.py --quick            # a smoke run of a few seconds
    python benchmarks/bench_canary.py --only overhead --tree /work/main --tree .
    python benchmarks/bench_canary.py --json out.json
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import subprocess
import sys
import time
import timeit
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import redis
import redis.asyncio
from redis.backoff import NoBackoff
from redis.retry import Retry

from redisguard import Breaker, BreakerConfig, redis_guarded
from redisguard.testing import RedisServer

__all__ = [
    "LatencyRow",
    "OverheadRow",
    "Settings",
    "format_report",
    "main",
    "measure_overhead",
    "run_canary",
]

_KEY = "bench:canary"
_VALUE = json.dumps({"user": 42, "roles": ["a", "b"], "name": "x" * 40})
_LOCAL = {_KEY: _VALUE.encode()}


@dataclass(frozen=True)
class Settings:
    """How long to measure."""

    rounds: int = 20
    calls: int = 2_000  # per round and variant (sync); asyncio: per task
    tasks: int = 16
    share: float = 0.01
    overhead_calls: int = 200_000
    overhead_repeats: int = 7


@dataclass
class LatencyRow:
    """One mode and canary setting: the per-call latencies of every round pooled."""

    mode: str
    canary: float
    calls: int
    p50_us: float
    p99_us: float
    canary_runs: int = 0
    dropped: int = 0


@dataclass
class OverheadRow:
    """ns per guarded no-I/O call (best of the repeats, and their median)."""

    tree: str
    mode: str
    best_ns: float
    median_ns: float
    samples: list[float] = field(default_factory=list)


def _fallback(key: str) -> bytes:
    """A fallback with a little work in it: a local lookup and a JSON round-trip."""
    value = _LOCAL.get(key, b"{}")
    return json.dumps(json.loads(value)).encode()


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _canary_counts(operation: str) -> tuple[int, int]:
    from redisguard import _canary

    counts = _canary.counts()
    runs = sum(n for (op, r), n in counts.items() if op == operation and r != "dropped")
    return runs, counts.get((operation, "dropped"), 0)


def _guarded(name: str, share: float, get: Callable[[str], Any]) -> Callable[[str], Any]:
    """``get`` guarded on a breaker of its own, with the canary on ``share`` of its calls."""
    guarded: Callable[[str], Any] = redis_guarded(
        name=name,
        fallback=_fallback,
        breaker=Breaker(name, BreakerConfig()),
        canary=share,
        canary_side_effect_free=True,
    )(get)
    return guarded


def _sync_rows(server: RedisServer, settings: Settings) -> list[LatencyRow]:
    client = redis.Redis(
        **server.client_kwargs(),  # type: ignore[arg-type]
        socket_timeout=1.0,
        retry=Retry(NoBackoff(), 0),
    )
    client.set(_KEY, _VALUE)
    variants: dict[float, Callable[[str], Any]] = {}
    for share in (0.0, settings.share):
        name = f"bench.sync.{share}"

        def get(key: str) -> Any:
            return client.get(key)

        variants[share] = _guarded(name, share, get)
    samples: dict[float, list[float]] = {share: [] for share in variants}
    clock = time.perf_counter_ns
    for number in range(settings.rounds):
        for share, fn in _in_order(variants, number):
            out = samples[share]
            gc.collect()
            for _ in range(settings.calls):
                began = clock()
                fn(_KEY)
                out.append((clock() - began) / 1000)
    client.close()
    time.sleep(0.2)  # let the worker drain before counting
    return [_row("sync", share, samples[share], f"bench.sync.{share}") for share in variants]


async def _async_rows(server: RedisServer, settings: Settings) -> list[LatencyRow]:
    client = redis.asyncio.Redis(
        **server.client_kwargs(),  # type: ignore[arg-type]
        socket_timeout=1.0,
        max_connections=settings.tasks,
    )
    await client.set(_KEY, _VALUE)
    variants: dict[float, Callable[[str], Any]] = {}
    for share in (0.0, settings.share):
        name = f"bench.async.{share}"

        async def get(key: str) -> Any:
            return await client.get(key)

        variants[share] = _guarded(name, share, get)
    samples: dict[float, list[float]] = {share: [] for share in variants}
    clock = time.perf_counter_ns
    per_task = max(1, settings.calls // settings.tasks)

    async def caller(fn: Callable[[str], Any], out: list[float]) -> None:
        for _ in range(per_task):
            began = clock()
            await fn(_KEY)
            out.append((clock() - began) / 1000)

    for number in range(settings.rounds):
        for share, fn in _in_order(variants, number):
            gc.collect()
            await asyncio.gather(*(caller(fn, samples[share]) for _ in range(settings.tasks)))
    await asyncio.sleep(0.2)
    await client.aclose()
    return [_row("asyncio", share, samples[share], f"bench.async.{share}") for share in variants]


def _in_order(
    variants: dict[float, Callable[[str], Any]], number: int
) -> list[tuple[float, Callable[[str], Any]]]:
    """Off first in even rounds, on first in odd ones: no variant always runs second."""
    items = list(variants.items())
    return items if number % 2 == 0 else items[::-1]


def _row(mode: str, share: float, values: list[float], operation: str) -> LatencyRow:
    runs, dropped = _canary_counts(operation)
    return LatencyRow(
        mode=mode,
        canary=share,
        calls=len(values),
        p50_us=round(statistics.median(values), 1),
        p99_us=round(_percentile(values, 0.99), 1),
        canary_runs=runs,
        dropped=dropped,
    )


def run_canary(settings: Settings) -> list[LatencyRow]:
    """The canary's latency rows (sync, then asyncio) against a private redis-server."""
    with RedisServer() as server:
        rows = _sync_rows(server, settings)
        rows += asyncio.run(_async_rows(server, settings))
    return rows


# -- overhead ------------------------------------------------------------------------------
def measure_overhead(settings: Settings) -> dict[str, list[float]]:
    """ns per call of a guarded no-I/O function in this process, sync and asyncio."""

    @redis_guarded(name="bench.noop", fallback=None, breaker=Breaker("bench.noop", BreakerConfig()))
    def noop(key: str) -> str:
        return key

    @redis_guarded(
        name="bench.anoop", fallback=None, breaker=Breaker("bench.anoop", BreakerConfig())
    )
    async def anoop(key: str) -> str:
        return key

    n = settings.overhead_calls
    sync_ns = [
        t * 1e9 / n
        for t in timeit.repeat(lambda: noop("k"), number=n, repeat=settings.overhead_repeats)
    ]

    async def drive() -> float:
        began = time.perf_counter()
        for _ in range(n):
            await anoop("k")
        return (time.perf_counter() - began) * 1e9 / n

    loop = asyncio.new_event_loop()
    try:
        async_ns = [loop.run_until_complete(drive()) for _ in range(settings.overhead_repeats)]
    finally:
        loop.close()
    return {"sync": sync_ns, "asyncio": async_ns}


def _overhead_in(tree: str, settings: Settings) -> dict[str, list[float]]:
    """:func:`measure_overhead` in a subprocess importing redisguard from ``tree``."""
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    code = (
        "import json, sys, runpy; "
        f"m = runpy.run_path({os.path.abspath(__file__)!r}); "
        f"s = m['Settings'](overhead_calls={settings.overhead_calls}, "
        f"overhead_repeats={settings.overhead_repeats}); "
        "print(json.dumps(m['measure_overhead'](s)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run_overhead(trees: Sequence[str], settings: Settings, alternations: int) -> list[OverheadRow]:
    """Per-call overhead per tree, alternating trees ``alternations`` times."""
    if not trees:
        data = measure_overhead(settings)
        return [_overhead_row("(this process)", mode, values) for mode, values in data.items()]
    pooled: dict[tuple[str, str], list[float]] = {}
    for _ in range(alternations):
        for tree in trees:
            for mode, values in _overhead_in(tree, settings).items():
                pooled.setdefault((tree, mode), []).extend(values)
    return [_overhead_row(tree, mode, values) for (tree, mode), values in pooled.items()]


def _overhead_row(tree: str, mode: str, values: list[float]) -> OverheadRow:
    return OverheadRow(
        tree=tree,
        mode=mode,
        best_ns=round(min(values), 1),
        median_ns=round(statistics.median(values), 1),
        samples=[round(v, 1) for v in values],
    )


def format_report(latency: Sequence[LatencyRow], overhead: Sequence[OverheadRow]) -> str:
    lines = []
    if latency:
        lines.append("canary: p50/p99 of a guarded GET, canary off vs on")
        lines.append(
            f"{'mode':<8} {'canary':>7} {'calls':>7} {'p50 us':>8} {'p99 us':>8} "
            f"{'runs':>6} {'dropped':>8}"
        )
        for row in latency:
            lines.append(
                f"{row.mode:<8} {row.canary:>7.3f} {row.calls:>7} {row.p50_us:>8.1f} "
                f"{row.p99_us:>8.1f} {row.canary_runs:>6} {row.dropped:>8}"
            )
    if overhead:
        lines.append("overhead: ns per guarded no-I/O call (chaos off)")
        lines.append(f"{'tree':<40} {'mode':<8} {'best':>8} {'median':>8}")
        for o in overhead:
            lines.append(f"{o.tree:<40} {o.mode:<8} {o.best_ns:>8.1f} {o.median_ns:>8.1f}")
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run of a few seconds")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--only", choices=("canary", "overhead"), help="run one of the two measurements"
    )
    parser.add_argument("--share", type=float, default=0.01, help="the canary share (0.01)")
    parser.add_argument(
        "--tree",
        action="append",
        default=[],
        metavar="PATH",
        help="measure the overhead with redisguard imported from PATH (repeat to compare)",
    )
    parser.add_argument(
        "--alternations", type=int, default=3, help="overhead: passes over the trees (3)"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    settings = Settings(share=args.share)
    if args.quick:
        settings = Settings(
            rounds=2,
            calls=200,
            tasks=4,
            share=args.share,
            overhead_calls=20_000,
            overhead_repeats=3,
        )
    latency = [] if args.only == "overhead" else run_canary(settings)
    overhead = (
        []
        if args.only == "canary"
        else run_overhead(args.tree, settings, 1 if args.quick else args.alternations)
    )
    print(format_report(latency, overhead))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {
                    "latency": [asdict(r) for r in latency],
                    "overhead": [asdict(o) for o in overhead],
                },
                fh,
                indent=2,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
