"""Service-layer overhead against hand-written redis-py, interleaved in one run.

Against a private redis-server on loopback:

* ``SessionStore.get`` p50 latency vs a raw ``GET`` + ``json.loads`` (target <= 1.10x);
* ``RateLimiter.hit`` throughput vs a raw ``EVALSHA`` of the same script (target >= 0.9x),
  and the number of commands the server saw per hit (``INFO commandstats``).

Rounds alternate between the variants so that drift (CPU frequency, other load) hits both.

Run: ``python benchmarks/bench_services.py [--rounds 15] [--calls 2000]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import redisguard
from redisguard._client import GuardedRedis
from redisguard.ratelimit import GCRA_SCRIPT, GCRA_SHA, RateLimiter
from redisguard.stores import SessionStore
from redisguard.testing import RedisServer


def _latencies(fn: Callable[[], object], calls: int) -> list[float]:
    clock = time.perf_counter
    out = []
    for _ in range(calls):
        started = clock()
        fn()
        out.append(clock() - started)
    return out


def _throughput(fn: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        fn()
    return calls / (time.perf_counter() - started)


def _evalsha_calls(client: GuardedRedis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name: int(stats[name]["calls"]) for name in stats}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=31)
    parser.add_argument("--calls", type=int, default=1000)
    args = parser.parse_args()

    with RedisServer() as server:
        client = redisguard.connect(server.url, prober=False)
        store = SessionStore(client)
        store.set("bench", {"user": "ada", "roles": ["admin", "dev"], "n": 42})
        key = "session:bench"

        def raw_get() -> object:
            raw = client.get(key)
            return None if raw is None else json.loads(raw)

        def guarded_get() -> object:
            return store.get("bench")

        limiter = RateLimiter(client, 10**9, 60)
        client.script_load(GCRA_SCRIPT)

        def raw_hit() -> object:
            return client.evalsha(GCRA_SHA, 1, "ratelimit:raw", 10**9, 60_000, 1)

        def guarded_hit() -> object:
            return limiter.hit("bench")

        for fn in (raw_get, guarded_get, raw_hit, guarded_hit):  # warm up
            for _ in range(200):
                fn()

        raw_p50: list[float] = []
        store_p50: list[float] = []
        raw_tput: list[float] = []
        hit_tput: list[float] = []
        for round_no in range(args.rounds):
            pairs = [(raw_get, raw_p50), (guarded_get, store_p50)]
            if round_no % 2:
                pairs.reverse()
            for fn, sink in pairs:
                sink.append(statistics.median(_latencies(fn, args.calls)))
            tputs = [(raw_hit, raw_tput), (guarded_hit, hit_tput)]
            if round_no % 2:
                tputs.reverse()
            for fn, sink in tputs:
                sink.append(_throughput(fn, args.calls))

        before = _evalsha_calls(client)
        for _ in range(1000):
            limiter.hit("count")
        after = _evalsha_calls(client)
        client.close()

    top_level = {
        name: after[name] - before.get(name, 0)
        for name in after
        if after[name] != before.get(name, 0)
        and name not in ("cmdstat_time", "cmdstat_get", "cmdstat_set", "cmdstat_info")
    }
    # Paired per-round ratios: both variants of a round ran back to back, so drift cancels.
    p50_ratio = statistics.median(g / r for g, r in zip(store_p50, raw_p50, strict=True))
    tput_ratio = statistics.median(g / r for g, r in zip(hit_tput, raw_tput, strict=True))
    print(f"rounds={args.rounds} calls/round={args.calls} (median of paired per-round ratios)")
    print(
        f"SessionStore.get p50 {statistics.median(store_p50) * 1e6:7.1f} us vs raw GET+json.loads "
        f"{statistics.median(raw_p50) * 1e6:7.1f} us -> ratio {p50_ratio:.3f}x (target <= 1.10x)"
    )
    print(
        f"RateLimiter.hit {statistics.median(hit_tput):9.0f}/s vs raw EVALSHA "
        f"{statistics.median(raw_tput):9.0f}/s -> ratio {tput_ratio:.3f}x (target >= 0.90x); "
        f"best rounds {max(hit_tput) / max(raw_tput):.3f}x"
    )
    per_hit = {name.removeprefix("cmdstat_"): n / 1000 for name, n in top_level.items()}
    print(f"top-level commands per hit (1000 hits, INFO commandstats): {per_hit}")


if __name__ == "__main__":
    main()
