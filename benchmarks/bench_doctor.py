"""Validate ``redisguard doctor``'s outage prediction against a measured outage.

``outage`` (the default): for each scenario, N worker threads serve "requests" in a closed
loop (each request sleeps ``--request-ms`` of work and makes ``--calls`` guarded ``GET``s with
a fallback) against a private redis-server, through one ``redisguard.connect()`` client.
After ``--healthy`` seconds the server is paused (SIGSTOP) for ``--outage`` seconds, then
resumed. Every request's completion time is recorded, and the script prints, per worker:

* the measured healthy rate, and the request time and call latency measured then (the
  model's two inputs that describe this machine, not the outage);
* the predicted and measured time until the breaker opened;
* the predicted and measured requests/s once open (half-open trials included) and over the
  whole outage, with the relative error.

Scenarios: ``shared`` (all workers share one breaker: the threads of one process) and
``per-worker`` (each worker its own breaker: one sync worker per process).

``load-rate``: how fast redis-server loads its RDB (the constants of
``redisguard.doctor.LOAD_KEYS_PER_SECOND`` / ``LOAD_BYTES_PER_SECOND``): fill a private
server, SAVE, restart it on the same directory and read "DB loaded from disk: X seconds" from
its log, for many small keys and for fewer large ones.

Run: ``PYTHONPATH=. python benchmarks/bench_doctor.py [outage|load-rate] [--quick]
[--json out.json]``
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis
from _common import write_json

import redisguard
from redisguard import Breaker, BreakerConfig, RetryPolicy, redis_guarded
from redisguard._predict import ClientSettings, Workload, predict
from redisguard.testing import RedisServer


@dataclass(frozen=True)
class Scenario:
    """One outage run."""

    name: str
    workers: int
    shared: bool
    failure_threshold: int
    reset_timeout: float
    half_open_max_attempts: int = 3


SCENARIOS = (
    Scenario("shared", workers=8, shared=True, failure_threshold=5, reset_timeout=0.5),
    Scenario("per-worker", workers=8, shared=False, failure_threshold=3, reset_timeout=0.5),
)


@dataclass
class Row:
    """Prediction and measurement for one scenario (rates per worker, requests/s)."""

    scenario: str
    workers: int
    workers_per_breaker: int
    healthy_predicted: float
    healthy_measured: float
    request_time_ms: float
    call_latency_ms: float
    time_to_open_predicted: float
    time_to_open_measured: float
    open_predicted: float
    open_measured: float
    outage_predicted: float
    outage_measured: float
    capacity_loss_predicted: float
    capacity_loss_measured: float

    @property
    def outage_error(self) -> float:
        """Relative error of the whole-outage rate."""
        return self.outage_predicted / self.outage_measured - 1

    @property
    def open_error(self) -> float:
        """Relative error of the open-phase rate."""
        return self.open_predicted / self.open_measured - 1


def run_scenario(
    scenario: Scenario,
    *,
    calls: int,
    request_ms: float,
    socket_timeout: float,
    healthy: float,
    outage: float,
) -> Row:
    """Run one outage against a private server; return the prediction beside the measurement."""
    config = BreakerConfig(
        failure_threshold=scenario.failure_threshold,
        reset_timeout=scenario.reset_timeout,
        half_open_max_attempts=scenario.half_open_max_attempts,
    )
    retry = RetryPolicy()
    count = 1 if scenario.shared else scenario.workers
    breakers = [Breaker(f"bench-doctor-{scenario.name}-{i}", config) for i in range(count)]
    opened: dict[str, float] = {}
    lock = threading.Lock()

    class Watch:
        def state_change(self, cb: Any, old: Any, new: Any) -> None:
            if getattr(new, "name", str(new)) == "open":
                with lock:
                    opened.setdefault(cb.name, time.perf_counter())

    for breaker in breakers:
        breaker.add_listener(Watch())
    with RedisServer() as server:
        client = redisguard.connect(
            server.url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            breakers=breakers,
            max_connections=scenario.workers * 4,
        )
        client.set("bench:key", b"x" * 100)
        done: list[list[float]] = [[] for _ in range(scenario.workers)]
        call_ns: list[int] = []
        work_ns: list[int] = []
        stop = threading.Event()
        measuring = threading.Event()

        def worker(index: int) -> None:
            breaker = breakers[index % len(breakers)]

            @redis_guarded(name="bench.get", breaker=breaker, fallback=None, retry=retry)
            def get(key: str) -> bytes | None:
                return client.get(key)

            mine = done[index]
            while not stop.is_set():
                began = time.perf_counter_ns()
                time.sleep(request_ms / 1000)
                if measuring.is_set():
                    work_ns.append(time.perf_counter_ns() - began)
                for _ in range(calls):
                    began = time.perf_counter_ns()
                    get("bench:key")
                    if measuring.is_set() and breaker.current_state == "closed":
                        call_ns.append(time.perf_counter_ns() - began)
                mine.append(time.perf_counter())

        threads = [
            threading.Thread(target=worker, args=(i,), daemon=True) for i in range(scenario.workers)
        ]
        for thread in threads:
            thread.start()
        time.sleep(0.3)  # warm up the pool
        measuring.set()
        healthy_from = time.perf_counter()
        time.sleep(healthy)
        measuring.clear()
        paused_at = time.perf_counter()
        server.pause()
        time.sleep(outage)
        resumed_at = time.perf_counter()
        server.resume()
        time.sleep(0.3)
        stop.set()
        for thread in threads:
            thread.join(5)
        client.close()
    latency = statistics.median(call_ns) / 1e9 if call_ns else 0.0005
    workers = scenario.workers
    healthy_count = sum(sum(healthy_from <= t < paused_at for t in w) for w in done)
    healthy_rate = healthy_count / (paused_at - healthy_from) / workers
    request_time = statistics.mean(work_ns) / 1e9
    opens = [t - paused_at for t in opened.values() if t >= paused_at]
    time_to_open = statistics.mean(opens) if opens else float("nan")
    outage_count = sum(sum(paused_at <= t < resumed_at for t in w) for w in done)
    open_from = paused_at + (max(opens) if opens else 0.0)
    open_count = sum(sum(open_from <= t < resumed_at for t in w) for w in done)
    prediction = predict(
        Workload(
            rate=healthy_rate * workers / 2,
            workers=workers,
            calls_per_request=calls,
            request_time=request_time,
            workers_per_breaker=workers if scenario.shared else 1,
        ),
        ClientSettings(socket_timeout=socket_timeout, socket_connect_timeout=socket_timeout),
        config,
        retry,
        outage=resumed_at - paused_at,
        call_latency=latency,
    )
    outage_rate = outage_count / (resumed_at - paused_at) / workers
    return Row(
        scenario=scenario.name,
        workers=workers,
        workers_per_breaker=prediction.workers_per_breaker,
        healthy_predicted=prediction.healthy_per_worker,
        healthy_measured=healthy_rate,
        request_time_ms=request_time * 1000,
        call_latency_ms=latency * 1000,
        time_to_open_predicted=prediction.time_to_open,
        time_to_open_measured=time_to_open,
        open_predicted=prediction.open_per_worker,
        open_measured=open_count / (resumed_at - open_from) / workers,
        outage_predicted=prediction.outage_per_worker,
        outage_measured=outage_rate,
        capacity_loss_predicted=prediction.capacity_loss,
        capacity_loss_measured=1 - outage_rate / healthy_rate,
    )


def format_rows(rows: list[Row]) -> str:
    """The side-by-side table (Markdown)."""
    lines = [
        "| scenario | workers/breaker | healthy req/s/worker: predicted / measured | "
        "time to open: predicted / "
        "measured | open req/s/worker: predicted / measured | whole outage req/s/worker: "
        "predicted / measured (error) | capacity loss: predicted / measured |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.scenario} | {r.workers_per_breaker} | "
            f"{r.healthy_predicted:.1f} / {r.healthy_measured:.1f} | "
            f"{r.time_to_open_predicted:.2f} s / {r.time_to_open_measured:.2f} s | "
            f"{r.open_predicted:.1f} / {r.open_measured:.1f} ({r.open_error:+.1%}) | "
            f"{r.outage_predicted:.1f} / {r.outage_measured:.1f} ({r.outage_error:+.1%}) | "
            f"{r.capacity_loss_predicted:.1%} / {r.capacity_loss_measured:.1%} |"
        )
    return "\n".join(lines)


# -- load rate -----------------------------------------------------------------------------
def measure_load(keys: int, value_size: int) -> dict[str, float]:
    """Fill a private server with ``keys`` values of ``value_size`` bytes, SAVE, restart it
    on the same directory and read the load time from its log."""
    with (
        tempfile.TemporaryDirectory(prefix="bench-doctor-") as directory,
        RedisServer(directory=directory) as server,
    ):
        r = redis.Redis(**server.client_kwargs())
        pipe = r.pipeline(transaction=False)
        for i in range(keys):
            pipe.set(f"k:{i}", os.urandom(value_size))
            if i % 2000 == 1999:
                pipe.execute()
        pipe.execute()
        dataset = int(r.info("memory")["used_memory_dataset"])
        r.save()
        r.close()
        server.restart()
        assert server.log_path is not None
        loads = re.findall(r"DB loaded from disk: ([0-9.]+) seconds", server.log_path.read_text())
        rdb = (Path(directory) / "dump.rdb").stat().st_size
    return {
        "keys": keys,
        "value_size": value_size,
        "dataset_bytes": dataset,
        "rdb_bytes": rdb,
        "load_seconds": float(loads[-1]),
    }


def load_rates(quick: bool) -> list[dict[str, float]]:
    """The load measurements, small keys then large values."""
    if quick:
        return [measure_load(20_000, 40), measure_load(2_000, 1000)]
    return [measure_load(1_000_000, 40), measure_load(131_072, 1000)]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; print the table."""
    parser = argparse.ArgumentParser(description=__doc__.partition("\n")[0])
    parser.add_argument("mode", nargs="?", choices=("outage", "load-rate"), default="outage")
    parser.add_argument("--quick", action="store_true", help="short phases (smoke test)")
    parser.add_argument("--calls", type=int, default=2, help="guarded calls per request")
    parser.add_argument("--request-ms", type=float, default=20.0)
    parser.add_argument("--socket-timeout", type=float, default=0.1)
    parser.add_argument("--outage", type=float, default=6.0, help="seconds paused")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.mode == "load-rate":
        results = load_rates(args.quick)
        for item in results:
            print(
                f"{item['keys']:>9} keys of {item['value_size']:>4} B: dataset "
                f"{item['dataset_bytes'] / 1e6:7.1f} MB, RDB {item['rdb_bytes'] / 1e6:7.1f} MB, "
                f"loaded in {item['load_seconds']:.3f} s"
            )
        write_json(args.json, results)
        return 0
    outage = 1.5 if args.quick else args.outage
    healthy = 0.7 if args.quick else 2.0
    rows = [
        run_scenario(
            scenario,
            calls=args.calls,
            request_ms=args.request_ms,
            socket_timeout=args.socket_timeout,
            healthy=healthy,
            outage=outage,
        )
        for scenario in SCENARIOS
    ]
    print(format_rows(rows))
    write_json(args.json, [asdict(r) for r in rows])
    return 0


if __name__ == "__main__":
    sys.exit(main())
