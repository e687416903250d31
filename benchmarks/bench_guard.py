"""How much does ``@redis_guarded`` cost? Interleaved comparisons against raw redis-py.

Every scenario runs its variants in alternating rounds (raw, guarded, naive, raw, guarded,
naive, ...) against the same private ``redis-server``, so drift in CPU frequency or machine
load hits all variants alike. A throughput scenario reports, per variant, the median of the
per-round ratios ``baseline time / variant time`` (1.00 = as fast as the baseline). A latency
scenario reports p50/p99 of per-call times measured with ``time.perf_counter_ns``.

Run it::

    python benchmarks/bench_guard.py            # default mode, about 1-2 minutes
    python benchmarks/bench_guard.py --quick    # smoke run, a few seconds
    python benchmarks/bench_guard.py --json out.json --only sync-get,open-circuit

Scenarios and variants live in a registry (:data:`SCENARIOS`); add a variant (for example
"guarded, OpenTelemetry SDK configured") with :func:`add_variant` without touching the harness.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import os
import platform
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal, TypeVar

import pybreaker
import redis
import redis.asyncio
import tenacity
from _common import (
    StatusLine,
    exit_status,
    missed_variants,
    muted_logs,
    no_redis_server,
    write_json,
)
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode
from redis.exceptions import OutOfMemoryError

import redisguard
from redisguard import Breaker, BreakerConfig, RetryPolicy, redis_guarded
from redisguard._compat import wait_exponential_jitter

__all__ = [
    "BREAKER_FIELDS",
    "BREAKER_PRESETS",
    "SCENARIOS",
    "Env",
    "LatencyRound",
    "Scenario",
    "ScenarioResult",
    "Sdk",
    "Settings",
    "ThroughputRound",
    "Variant",
    "VariantResult",
    "add_variant",
    "bench_breaker",
    "call_loop",
    "main",
    "register",
    "run_benchmarks",
    "sdk",
]

T = TypeVar("T")
#: Runs ``n`` operations and returns the elapsed seconds (throughput scenarios).
ThroughputRound = Callable[[int], float]
#: Runs ``n`` operations and returns each call's duration in nanoseconds (latency scenarios).
LatencyRound = Callable[[int], list[int]]

# The exceptions a hand-written composition would retry (what the guard classifies TRANSIENT).
_RETRYABLE = (redis.ConnectionError, redis.TimeoutError, TimeoutError)
_KEY = "bench:session"
_VALUE = b"x" * 64


# -- settings and environment ----------------------------------------------------------------
@dataclass(frozen=True)
class Settings:
    """How long to measure.

    Many short rounds beat a few long ones on a busy machine: a burst of load spoils a few
    rounds, and the median of the per-round ratios ignores them.

    Attributes:
        rounds: Interleaved rounds per throughput scenario (each variant runs once per round).
        round_seconds: Target duration of one variant's round (sized from a warm-up).
        latency_rounds: Interleaved rounds per latency scenario.
        latency_calls: Calls per variant per round in latency scenarios.
        async_tasks: Concurrent tasks in the asyncio scenario.
        threads: Threads in the threaded scenario.
        io_seconds: The simulated I/O wait inside each threaded call.
        min_rounds: The fewest rounds a throughput scenario with long rounds gets.
    """

    rounds: int
    round_seconds: float
    latency_rounds: int
    latency_calls: int
    async_tasks: int = 64
    threads: int = 8
    io_seconds: float = 0.001
    min_rounds: int = 5

    @classmethod
    def quick(cls) -> Settings:
        """A smoke run for CI: seconds, numbers too noisy to judge targets."""
        return cls(
            rounds=15, round_seconds=0.02, latency_rounds=3, latency_calls=2_000, min_rounds=3
        )

    @classmethod
    def default(cls) -> Settings:
        """The measuring run: about 1-2 minutes on a 2-core machine."""
        return cls(rounds=201, round_seconds=0.03, latency_rounds=15, latency_calls=20_000)

    def for_scenario(self, scenario: Scenario) -> tuple[int, float]:
        """Rounds and round length for ``scenario``: the same total time, longer rounds if
        the scenario needs them (task and thread start-up must not dominate a round)."""
        seconds = max(self.round_seconds, scenario.min_round_seconds)
        rounds = max(self.min_rounds, round(self.rounds * self.round_seconds / seconds))
        return rounds, seconds


@dataclass
class Env:
    """What a variant's ``build`` gets: the server, the settings, cleanup and an event loop.

    Attributes:
        url: A ``redis://`` URL of the benchmark's server (loopback).
        settings: The run's settings.
        stack: Register cleanups here; they run when the scenario ends.
    """

    url: str
    settings: Settings
    stack: contextlib.ExitStack
    _loop: asyncio.AbstractEventLoop | None = None
    _hooks: list[Callable[[], None]] = field(default_factory=list)
    _network: list[Callable[[], int]] = field(default_factory=list)

    def between_rounds(self, hook: Callable[[], None]) -> None:
        """Run ``hook`` before and after each round of the variant being built, untimed.

        For example ``exporter.clear`` so that finished spans do not pile up across rounds.
        """
        self._hooks.append(hook)

    def count_network(self, entries: Callable[[], int]) -> None:
        """Report how many calls of the variant being built reached the network so far.

        The harness stores the difference over the measured rounds as ``network_calls``.
        """
        self._network.append(entries)

    def _take(self) -> tuple[list[Callable[[], None]], list[Callable[[], int]]]:
        hooks, network = self._hooks, self._network
        self._hooks, self._network = [], []
        return hooks, network

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The scenario's event loop, shared by all its async variants (closed at the end)."""
        if self._loop is None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self.stack.callback(loop.close)
        return self._loop

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` to completion on the scenario's loop."""
        return self.loop.run_until_complete(coro)

    def client(self, **overrides: Any) -> redis.Redis:
        """A sync client built like ``redisguard.connect`` (timeouts explicit, retry off)."""
        client: redis.Redis = redisguard.connect(self.url, socket_timeout=1.0, **overrides)
        self.stack.callback(client.close)
        return client

    def aclient(self, **overrides: Any) -> redis.asyncio.Redis:
        """An asyncio client built like ``redisguard.aconnect``; closed with the scenario."""
        client: redis.asyncio.Redis = self.run(
            redisguard.aconnect(self.url, socket_timeout=1.0, **overrides)
        )
        self.stack.callback(lambda: self.run(client.aclose()))
        return client


# -- the registry ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Variant:
    """One contender in a scenario.

    Attributes:
        key: Short identifier (``raw``, ``guarded``, ``naive``...).
        label: What the table shows.
        build: Prepares the variant (clients, decorators) and returns its round function:
            for throughput scenarios ``(n) -> seconds``, for latency scenarios
            ``(n) -> per-call nanoseconds``.
        target: Throughput: the minimum ratio to the baseline. Latency: the maximum p99 in
            nanoseconds, or, in a scenario with ``compare_p50``, the maximum ratio of the
            variant's p50 to the baseline's p50. None for reference-only variants.
        reference: The figure the design brief measured for this variant, shown for comparison.
    """

    key: str
    label: str
    build: Callable[[Env], Callable[[int], Any]]
    target: float | None = None
    reference: str = ""


@dataclass
class Scenario:
    """A workload measured with several variants; the first variant is the baseline.

    ``min_round_seconds`` lengthens the rounds of scenarios with per-round start-up costs
    (tasks, threads); the number of rounds shrinks to keep the scenario's total time.
    ``compare_p50`` makes a latency scenario report each variant's p50 relative to the
    baseline's (median over rounds of the per-round ratio) and judge targets on that ratio.
    ``calls_scale`` scales the settings' calls per round (for slower latency scenarios).
    """

    key: str
    title: str
    kind: Literal["throughput", "latency"]
    variants: list[Variant] = field(default_factory=list)
    min_round_seconds: float = 0.0
    compare_p50: bool = False
    calls_scale: float = 1.0


SCENARIOS: dict[str, Scenario] = {}


def register(scenario: Scenario) -> Scenario:
    """Add a scenario to the registry (run in registration order)."""
    if scenario.key in SCENARIOS:
        raise ValueError(f"scenario {scenario.key!r} is already registered")
    SCENARIOS[scenario.key] = scenario
    return scenario


def add_variant(scenario: str, variant: Variant) -> None:
    """Append ``variant`` to a registered scenario (e.g. an "SDK configured" variant)."""
    variants = SCENARIOS[scenario].variants
    if any(v.key == variant.key for v in variants):
        raise ValueError(f"variant {variant.key!r} already exists in {scenario!r}")
    variants.append(variant)


# -- helpers shared by variants --------------------------------------------------------------
def _naive_retrying() -> tenacity.Retrying:
    """What a hand-written composition builds per call: tenacity with jittered backoff."""
    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(3),
        wait=wait_exponential_jitter(multiplier=0.025, maximum=0.2, jitter=0.025),
        retry=tenacity.retry_if_exception_type(_RETRYABLE),
        reraise=True,
    )


def call_loop(fn: Callable[[str], Any], key: str = _KEY) -> ThroughputRound:
    """A round that calls ``fn(key)`` ``n`` times; every sync variant uses the same loop."""

    def round_(n: int) -> float:
        began = time.perf_counter()
        for _ in range(n):
            fn(key)
        return time.perf_counter() - began

    return round_


#: Extra BreakerConfig fields for every scenario's breaker (``--breaker``), e.g. to measure
#: the happy path with failure-rate and slow-call breaking on.
BREAKER_FIELDS: dict[str, Any] = {}


def bench_breaker(name: str, *, threshold: int = 5, reset: float = 30.0) -> Breaker:
    """A private breaker (not in the registry) so scenarios never share state."""
    config = BreakerConfig(failure_threshold=threshold, reset_timeout=reset, **BREAKER_FIELDS)
    return Breaker(name, config)


#: ``--breaker`` presets: every policy on (failure-rate mode, slow-call breaking, a bulkhead
#: wider than any scenario's concurrency, the retry budget), count-based or time-based window.
BREAKER_PRESETS: dict[str, dict[str, Any]] = {
    "all": {
        "failure_rate_threshold": 50,
        "slow_call_duration": 0.25,
        "minimum_calls": 20,
        "sliding_window_size": 100,
        "max_concurrent_calls": 64,
    },
    "all-time": {
        "failure_rate_threshold": 50,
        "slow_call_duration": 0.25,
        "minimum_calls": 20,
        "max_concurrent_calls": 64,
    },
}


def _field_value(raw: str) -> Any:
    """A ``--breaker`` value: None, a bool, an int, a float or (failing those) the text."""
    words = {"none": None, "true": True, "false": False}
    if raw.lower() in words:
        return words[raw.lower()]
    try:
        value = float(raw)
    except ValueError:
        return raw
    return int(value) if value.is_integer() and "." not in raw else value


def _breaker_fields(text: str) -> dict[str, Any]:
    """``--breaker 'failure_rate_threshold=50,slow_call_duration=0.01'``: BreakerConfig fields
    (numbers, ``none``, ``true``/``false``, or a word such as ``shared=bench``: a host-shared
    breaker in namespace ``bench``), checked by building a BreakerConfig. A preset name
    (``all``, ``all-time``: :data:`BREAKER_PRESETS`) adds its fields; later items override
    them."""
    fields: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        if item in BREAKER_PRESETS:
            fields.update(BREAKER_PRESETS[item])
            continue
        key, sep, raw = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"--breaker expects FIELD=VALUE, got {item!r}")
        fields[key.strip()] = _field_value(raw.strip())
    try:
        BreakerConfig(**fields)
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"--breaker: {exc}") from None
    return fields


# -- scenario: 1 thread, sync GET ------------------------------------------------------------
def _sync_raw(env: Env) -> ThroughputRound:
    client = env.client()
    client.set(_KEY, _VALUE)
    return call_loop(client.get)


def _sync_guarded(env: Env) -> ThroughputRound:
    client = env.client()

    @redis_guarded(name="bench.sync.get", fallback=None, breaker=bench_breaker("bench-sync"))
    def get(key: str) -> bytes | str | None:
        return client.get(key)

    return call_loop(get)


def _sync_naive(env: Env) -> ThroughputRound:
    client = env.client()
    cb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)

    def get(key: str) -> bytes | str | None:
        try:
            for attempt in _naive_retrying():
                with attempt:
                    value: bytes | str | None = cb.call(client.get, key)
                    return value
        except (*_RETRYABLE, pybreaker.CircuitBreakerError):
            return None
        raise AssertionError("unreachable: reraise=True")  # pragma: no cover

    return call_loop(get)


register(
    Scenario(
        key="sync-get",
        title="sync GET, 1 thread, loopback, closed breaker",
        kind="throughput",
        variants=[
            Variant("raw", "raw redis-py", _sync_raw),
            Variant("guarded", "@redis_guarded", _sync_guarded, target=0.97),
            Variant(
                "naive",
                "pybreaker call + tenacity Retrying per call",
                _sync_naive,
                reference="0.85",
            ),
        ],
    )
)


# -- scenario: asyncio, 64 tasks -------------------------------------------------------------
def _async_round(env: Env, get: Callable[[str], Awaitable[Any]]) -> ThroughputRound:
    tasks = env.settings.async_tasks

    async def worker(calls: int) -> None:
        for _ in range(calls):
            await get(_KEY)

    async def many(n: int) -> float:
        per_task = max(1, n // tasks)
        began = time.perf_counter()
        await asyncio.gather(*(worker(per_task) for _ in range(tasks)))
        return (time.perf_counter() - began) * n / (per_task * tasks)

    return lambda n: env.run(many(n))


def _aclient(env: Env) -> redis.asyncio.Redis:
    # One connection per task, created during the warm-up round, so rounds measure GETs only.
    return env.aclient(max_connections=env.settings.async_tasks * 2)


def _async_raw(env: Env) -> ThroughputRound:
    client = _aclient(env)

    async def seed() -> None:
        await client.set(_KEY, _VALUE)

    env.run(seed())
    return _async_round(env, client.get)


def _async_guarded(env: Env) -> ThroughputRound:
    client = _aclient(env)

    @redis_guarded(name="bench.async.get", fallback=None, breaker=bench_breaker("bench-async"))
    async def get(key: str) -> bytes | str | None:
        return await client.get(key)

    return _async_round(env, get)


def _async_naive(env: Env) -> ThroughputRound:
    client = _aclient(env)

    @tenacity.retry(
        stop=tenacity.stop_after_attempt(3),
        wait=wait_exponential_jitter(multiplier=0.025, maximum=0.2, jitter=0.025),
        retry=tenacity.retry_if_exception_type(_RETRYABLE),
        reraise=True,
    )
    async def get(key: str) -> bytes | str | None:
        return await client.get(key)

    return _async_round(env, get)


register(
    Scenario(
        key="async-64",
        title="asyncio, 64 tasks doing GETs on redis.asyncio",
        kind="throughput",
        min_round_seconds=0.1,
        variants=[
            Variant("raw", "raw redis.asyncio", _async_raw),
            Variant("guarded", "@redis_guarded (async def)", _async_guarded, target=0.90),
            Variant("naive", "tenacity async @retry", _async_naive, reference="0.49"),
        ],
    )
)


# -- scenario: 8 threads, 1 ms of simulated I/O inside the call ------------------------------
def _threaded_round(env: Env, call: Callable[[], Any]) -> ThroughputRound:
    threads = env.settings.threads

    def round_(n: int) -> float:
        per_thread = max(1, n // threads)
        marks: list[float] = []
        barrier = threading.Barrier(threads, action=lambda: marks.append(time.perf_counter()))

        def worker() -> None:
            barrier.wait()
            for _ in range(per_thread):
                call()

        pool = [threading.Thread(target=worker) for _ in range(threads)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
        elapsed = time.perf_counter() - marks[0]
        return elapsed * n / (per_thread * threads)

    return round_


def _io_call(env: Env) -> Callable[[], None]:
    seconds = env.settings.io_seconds

    def io() -> None:
        time.sleep(seconds)

    return io


def _threads_plain(env: Env) -> ThroughputRound:
    return _threaded_round(env, _io_call(env))


def _threads_guarded(env: Env) -> ThroughputRound:
    io = _io_call(env)
    guarded = redis_guarded(
        name="bench.threads.io", fallback=None, breaker=bench_breaker("bench-threads")
    )(io)
    return _threaded_round(env, guarded)


def _threads_pybreaker(env: Env) -> ThroughputRound:
    io = _io_call(env)
    cb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
    return _threaded_round(env, lambda: cb.call(io))


register(
    Scenario(
        key="threads-io",
        title="8 threads, 1 ms simulated I/O inside the guarded call",
        kind="throughput",
        min_round_seconds=0.1,
        variants=[
            Variant("plain", "unguarded", _threads_plain),
            Variant("guarded", "@redis_guarded", _threads_guarded, target=0.95),
            Variant(
                "pybreaker", "pybreaker CircuitBreaker.call", _threads_pybreaker, reference="0.15"
            ),
        ],
    )
)


# -- variants: bulkhead and retry budget on ---------------------------------------------------
def policy_breaker(name: str, limit: int) -> Breaker:
    """A private breaker with a bulkhead wider than the scenario's concurrency (so it never
    rejects: these rows measure its cost) and the retry budget on (its default)."""
    config = BreakerConfig(max_concurrent_calls=limit, retry_budget_ratio=10.0)
    return Breaker(name, config)


def _sync_guarded_policies(env: Env) -> ThroughputRound:
    client = env.client()

    @redis_guarded(
        name="bench.sync.get.policies", fallback=None, breaker=policy_breaker("bench-sync-p", 8)
    )
    def get(key: str) -> bytes | str | None:
        return client.get(key)

    return call_loop(get)


def _async_guarded_policies(env: Env) -> ThroughputRound:
    client = _aclient(env)
    limit = env.settings.async_tasks * 2

    @redis_guarded(
        name="bench.async.get.policies",
        fallback=None,
        breaker=policy_breaker("bench-async-p", limit),
    )
    async def get(key: str) -> bytes | str | None:
        return await client.get(key)

    return _async_round(env, get)


def _threads_guarded_policies(env: Env) -> ThroughputRound:
    breaker = policy_breaker("bench-threads-p", env.settings.threads * 2)
    guarded = redis_guarded(name="bench.threads.io.policies", fallback=None, breaker=breaker)(
        _io_call(env)
    )
    return _threaded_round(env, guarded)


_POLICIES = "bulkhead + retry budget on"
add_variant(
    "sync-get",
    Variant("guarded-bulkhead", f"@redis_guarded, {_POLICIES}", _sync_guarded_policies,
            target=0.97),
)
add_variant(
    "async-64",
    Variant("guarded-bulkhead", f"@redis_guarded (async), {_POLICIES}", _async_guarded_policies,
            target=0.90),
)
add_variant(
    "threads-io",
    Variant("guarded-bulkhead", f"@redis_guarded, {_POLICIES}", _threads_guarded_policies,
            target=0.95),
)


# -- scenario: open circuit, fallback latency ------------------------------------------------
def _closed_port() -> int:
    """A loopback port with nothing listening (connecting to it is refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class _NoIOGuard:
    """Counts entries into the guarded function: any entry would be network I/O."""

    def __init__(self, env: Env) -> None:
        self.entered = 0
        self.client = redisguard.connect(
            f"redis://127.0.0.1:{_closed_port()}/0", socket_timeout=0.2, check=False
        )
        env.stack.callback(self.client.close)
        env.count_network(lambda: self.entered)

    def get(self, key: str) -> bytes | str | None:
        self.entered += 1
        return self.client.get(key)


def _latency_round(fn: Callable[[str], Any], guard: _NoIOGuard | None = None) -> LatencyRound:
    def round_(n: int) -> list[int]:
        clock = time.perf_counter_ns
        samples = [0] * n
        before = guard.entered if guard is not None else 0
        for i in range(n):
            began = clock()
            fn(_KEY)
            samples[i] = clock() - began
        if guard is not None and guard.entered != before:
            raise AssertionError(
                f"the open circuit let {guard.entered - before} call(s) reach the network"
            )
        return samples

    return round_


def _trip(fn: Callable[[str], Any], breaker: Breaker) -> None:
    """Fail calls against the closed port until the breaker opens (bounded)."""
    deadline = time.monotonic() + 10.0
    while breaker.current_state != "open":
        if time.monotonic() > deadline:
            raise RuntimeError("the breaker did not open against a closed port")
        fn(_KEY)


def _open_guarded(fallback: Any, name: str) -> Callable[[Env], LatencyRound]:
    def build(env: Env) -> LatencyRound:
        guard = _NoIOGuard(env)
        breaker = bench_breaker(f"bench-{name}", threshold=3, reset=3600.0)
        fn = redis_guarded(
            name=f"bench.open.{name}",
            fallback=fallback,
            breaker=breaker,
            retry=RetryPolicy(attempts=3, backoff=0.0, max_backoff=0.0, jitter=0.0),
        )(guard.get)
        _trip(fn, breaker)
        return _latency_round(fn, guard)

    return build


def _open_write_side(fallback: Any, name: str) -> Callable[[Env], LatencyRound]:
    """A write guard whose breaker's write side is open (as after OOM refusals)."""

    def build(env: Env) -> LatencyRound:
        guard = _NoIOGuard(env)
        breaker = bench_breaker(f"bench-write-{name}", threshold=3, reset=3600.0)
        fn = redis_guarded(
            name=f"bench.open.write.{name}",
            fallback=fallback,
            breaker=breaker,
            access="write",
            retry=RetryPolicy(attempts=3, backoff=0.0, max_backoff=0.0, jitter=0.0),
        )(guard.get)
        breaker.write_side.open(OutOfMemoryError("command not allowed when used memory"))
        return _latency_round(fn, guard)

    return build


def _open_pybreaker(env: Env) -> LatencyRound:
    guard = _NoIOGuard(env)
    cb = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=3600)

    def get(key: str) -> bytes | str | None:
        try:
            value: bytes | str | None = cb.call(guard.get, key)
        except (*_RETRYABLE, pybreaker.CircuitBreakerError):
            return None
        return value

    while cb.current_state != "open":
        get(_KEY)
    return _latency_round(get, guard)


def _timer_floor(env: Env) -> LatencyRound:
    def nothing(key: str) -> None:
        return None

    return _latency_round(nothing)


def _stale(key: str) -> bytes:
    return b"stale"


register(
    Scenario(
        key="open-circuit",
        title="open circuit: per-call latency of the fallback path, no network I/O",
        kind="latency",
        variants=[
            Variant("floor", "timer floor (empty function)", _timer_floor),
            Variant(
                "guarded-value",
                "@redis_guarded, fallback value",
                _open_guarded(None, "value"),
                target=5_000,
            ),
            Variant(
                "guarded-callable",
                "@redis_guarded, fallback callable",
                _open_guarded(_stale, "callable"),
                target=5_000,
            ),
            Variant(
                "write-value",
                "@redis_guarded(access='write'), write side open, fallback value",
                _open_write_side(None, "value"),
                target=5_000,
            ),
            Variant(
                "write-callable",
                "@redis_guarded(access='write'), write side open, fallback callable",
                _open_write_side(_stale, "callable"),
                target=5_000,
            ),
            Variant(
                "pybreaker",
                "pybreaker open, except -> fallback",
                _open_pybreaker,
                reference="5.2/10.5 us",
            ),
        ],
    )
)



def _open_guarded_bulkhead(env: Env) -> LatencyRound:
    guard = _NoIOGuard(env)
    config = BreakerConfig(failure_threshold=3, reset_timeout=3600.0, max_concurrent_calls=8)
    breaker = Breaker("bench-open-bulkhead", config)
    fn = redis_guarded(
        name="bench.open.bulkhead",
        fallback=None,
        breaker=breaker,
        retry=RetryPolicy(attempts=3, backoff=0.0, max_backoff=0.0, jitter=0.0),
    )(guard.get)
    _trip(fn, breaker)
    return _latency_round(fn, guard)


add_variant(
    "open-circuit",
    Variant(
        "guarded-bulkhead",
        f"@redis_guarded, fallback value, {_POLICIES}",
        _open_guarded_bulkhead,
        target=5_000,
    ),
)


# -- OpenTelemetry SDK configured ------------------------------------------------------------
# Explicit providers passed to each variant (the globals stay untouched, so the rows above keep
# measuring the API-only mode): a TracerProvider exporting through SimpleSpanProcessor into an
# InMemorySpanExporter, and a MeterProvider with an InMemoryMetricReader. Every SDK variant gets
# its own, identically configured pair; the exporter is cleared between rounds.
@dataclass(frozen=True)
class Sdk:
    """One variant's SDK setup.

    Attributes:
        tracer_provider: SDK tracer provider, spans exported synchronously into ``spans``.
        meter_provider: SDK meter provider read on demand by ``reader``.
        spans: The in-memory exporter (cleared before and after every round).
        reader: The in-memory metric reader (never collected while measuring).
    """

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    spans: InMemorySpanExporter
    reader: InMemoryMetricReader

    def tracer(self) -> trace.Tracer:
        """A tracer for hand-written variants (what an application would use)."""
        return self.tracer_provider.get_tracer("bench")

    def counter(self) -> metrics.Counter:
        """A synchronous counter, as a hand-written composition counts each call."""
        return self.meter_provider.get_meter("bench").create_counter("naive_operations")


def sdk(env: Env) -> Sdk:
    """Configure an SDK for the variant being built; shut down when the scenario ends."""
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    env.stack.callback(meter_provider.shutdown)
    env.stack.callback(tracer_provider.shutdown)
    env.between_rounds(spans.clear)
    return Sdk(tracer_provider, meter_provider, spans, reader)


def _no_spans(telemetry: Sdk) -> Callable[[], None]:
    """A between-rounds check: the closed-circuit happy path must not start spans."""

    def check() -> None:
        if telemetry.spans.get_finished_spans():
            raise AssertionError("a successful guarded call produced a span (trace_success off)")

    return check


def _spans_per_call(round_: LatencyRound, telemetry: Sdk) -> LatencyRound:
    """Check after each (untimed) round that every call produced exactly one span."""

    def checked(n: int) -> list[int]:
        telemetry.spans.clear()
        samples = round_(n)
        made = len(telemetry.spans.get_finished_spans())
        if made != n:
            raise AssertionError(f"{n} calls produced {made} spans, expected one per call")
        return samples

    return checked


def _sync_guarded_sdk(env: Env) -> ThroughputRound:
    client = env.client()
    telemetry = sdk(env)
    env.between_rounds(_no_spans(telemetry))

    @redis_guarded(
        name="bench.sync.get.sdk",
        fallback=None,
        breaker=bench_breaker("bench-sync-sdk"),
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    def get(key: str) -> bytes | str | None:
        return client.get(key)

    return call_loop(get)


def _sync_naive_sdk(env: Env) -> ThroughputRound:
    client = env.client()
    telemetry = sdk(env)
    tracer, counter = telemetry.tracer(), telemetry.counter()
    cb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=30)
    success = {"operation": "get", "result": "success"}
    fallback = {"operation": "get", "result": "fallback"}

    def get(key: str) -> bytes | str | None:
        with tracer.start_as_current_span("naive get"):
            try:
                for attempt in _naive_retrying():
                    with attempt:
                        value: bytes | str | None = cb.call(client.get, key)
                        counter.add(1, success)
                        return value
            except (*_RETRYABLE, pybreaker.CircuitBreakerError):
                counter.add(1, fallback)
                return None
        raise AssertionError("unreachable: reraise=True")  # pragma: no cover

    return call_loop(get)


add_variant(
    "sync-get",
    Variant("guarded-sdk", "@redis_guarded, SDK configured", _sync_guarded_sdk, target=0.93),
)
add_variant(
    "sync-get",
    Variant(
        "naive-sdk",
        "span + counter + pybreaker + tenacity, SDK",
        _sync_naive_sdk,
        reference="0.56",
    ),
)


def _async_guarded_sdk(env: Env) -> ThroughputRound:
    client = _aclient(env)
    telemetry = sdk(env)
    env.between_rounds(_no_spans(telemetry))

    @redis_guarded(
        name="bench.async.get.sdk",
        fallback=None,
        breaker=bench_breaker("bench-async-sdk"),
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    async def get(key: str) -> bytes | str | None:
        return await client.get(key)

    return _async_round(env, get)


def _async_naive_sdk(env: Env) -> ThroughputRound:
    client = _aclient(env)
    telemetry = sdk(env)
    tracer, counter = telemetry.tracer(), telemetry.counter()
    success = {"operation": "get", "result": "success"}

    @tenacity.retry(
        stop=tenacity.stop_after_attempt(3),
        wait=wait_exponential_jitter(multiplier=0.025, maximum=0.2, jitter=0.025),
        retry=tenacity.retry_if_exception_type(_RETRYABLE),
        reraise=True,
    )
    async def attempt(key: str) -> bytes | str | None:
        return await client.get(key)

    async def get(key: str) -> bytes | str | None:
        with tracer.start_as_current_span("naive get"):
            value = await attempt(key)
            counter.add(1, success)
            return value

    return _async_round(env, get)


add_variant(
    "async-64",
    Variant(
        "guarded-sdk",
        "@redis_guarded (async def), SDK configured",
        _async_guarded_sdk,
        target=0.85,
    ),
)
add_variant(
    "async-64",
    Variant(
        "naive-sdk",
        "span + counter + tenacity async @retry, SDK",
        _async_naive_sdk,
        reference="0.29",
    ),
)

# What redisguard puts on a short-circuit span (see redisguard/_telemetry.py), for the
# "minimal complete span" reference: the SDK's own cost of a span like ours.
_OPEN_ATTRIBUTES: dict[str, Any] = {
    "db.system.name": "redis",
    "redisguard.operation": "bench.open.span",
    "redisguard.breaker": "bench-open-span",
    "redisguard.circuit_state": "open",
    "redisguard.outcome": "fallback",
    "redisguard.attempts": 0,
    "redisguard.short_circuited": True,
}
_CIRCUIT_OPEN = Status(StatusCode.ERROR, "circuit open")


def _bare_span(env: Env) -> LatencyRound:
    tracer = sdk(env).tracer()

    def span(key: str) -> None:
        tracer.start_span("x").end()

    return _latency_round(span)


def _minimal_span(env: Env) -> LatencyRound:
    tracer = sdk(env).tracer()

    def span(key: str) -> None:
        s = tracer.start_span("redisguard bench.open.span", attributes=_OPEN_ATTRIBUTES)
        s.set_status(_CIRCUIT_OPEN)
        s.end()

    return _latency_round(span)


def _open_guarded_sdk(fallback: Any, name: str) -> Callable[[Env], LatencyRound]:
    def build(env: Env) -> LatencyRound:
        telemetry = sdk(env)
        guard = _NoIOGuard(env)
        breaker = bench_breaker(f"bench-sdk-{name}", threshold=3, reset=3600.0)
        fn = redis_guarded(
            name=f"bench.open.sdk.{name}",
            fallback=fallback,
            breaker=breaker,
            retry=RetryPolicy(attempts=3, backoff=0.0, max_backoff=0.0, jitter=0.0),
            tracer_provider=telemetry.tracer_provider,
            meter_provider=telemetry.meter_provider,
        )(guard.get)
        _trip(fn, breaker)
        return _spans_per_call(_latency_round(fn, guard), telemetry)

    return build


def _open_naive_sdk(env: Env) -> LatencyRound:
    telemetry = sdk(env)
    tracer, counter = telemetry.tracer(), telemetry.counter()
    guard = _NoIOGuard(env)
    cb = pybreaker.CircuitBreaker(fail_max=3, reset_timeout=3600)
    success = {"operation": "get", "result": "success"}
    fallback = {"operation": "get", "result": "fallback"}

    def get(key: str) -> bytes | str | None:
        with tracer.start_as_current_span("naive get") as span:
            try:
                for attempt in _naive_retrying():
                    with attempt:
                        value: bytes | str | None = cb.call(guard.get, key)
                        counter.add(1, success)
                        return value
            except (*_RETRYABLE, pybreaker.CircuitBreakerError):
                counter.add(1, fallback)
                span.set_status(_CIRCUIT_OPEN)
                return None
        raise AssertionError("unreachable: reraise=True")  # pragma: no cover

    deadline = time.monotonic() + 10.0
    while cb.current_state != "open" and time.monotonic() < deadline:
        get(_KEY)
    return _spans_per_call(_latency_round(get, guard), telemetry)


register(
    Scenario(
        key="open-circuit-sdk",
        title="open circuit, SDK configured: a span per fallback vs one bare span",
        kind="latency",
        compare_p50=True,
        # Spans cost 10-50 us each: fewer calls per round keep the scenario's time bounded.
        calls_scale=0.5,
        variants=[
            Variant("span", "bare span: start_span('x').end()", _bare_span),
            Variant(
                "span-min",
                "minimal complete span (7 attributes + status)",
                _minimal_span,
            ),
            Variant(
                "guarded-value",
                "@redis_guarded, fallback value",
                _open_guarded_sdk(None, "value"),
                target=1.2,
            ),
            Variant(
                "guarded-callable",
                "@redis_guarded, fallback callable",
                _open_guarded_sdk(_stale, "callable"),
                target=1.2,
            ),
            Variant(
                "naive",
                "open pybreaker + tenacity + span + counter",
                _open_naive_sdk,
                reference="52/139 us",
            ),
        ],
    )
)


# -- the harness ------------------------------------------------------------------------------
@dataclass
class VariantResult:
    """One variant's figures.

    Throughput scenarios fill ``ratio_*``, ``ops_per_s``, ``overhead_us`` (the median
    per-round extra wall time per operation relative to the baseline) and
    ``cpu_overhead_us`` (the same in process CPU time, which a busy machine disturbs less);
    latency scenarios fill ``p50_ns``/``p99_ns`` (medians over rounds of each round's
    quantile), ``p99_pooled_ns`` and ``p999_ns`` (over all samples), and ``p50_ratio`` (the
    median over rounds of this variant's p50 / the baseline's p50) when the scenario compares
    p50s. ``network_calls`` counts calls that reached the network during the measured rounds
    (None when the variant does not count them). ``met`` is None when the variant has no
    target.
    """

    key: str
    label: str
    target: float | None
    reference: str
    ratio_median: float | None = None
    ratio_p25: float | None = None
    ratio_p75: float | None = None
    ops_per_s: float | None = None
    overhead_us: float | None = None
    cpu_overhead_us: float | None = None
    p50_ns: int | None = None
    p99_ns: int | None = None
    p99_pooled_ns: int | None = None
    p999_ns: int | None = None
    p50_ratio: float | None = None
    network_calls: int | None = None
    met: bool | None = None


@dataclass
class ScenarioResult:
    """A scenario's variants, in registry order (the first is the baseline)."""

    key: str
    title: str
    kind: str
    rounds: int
    ops_per_round: int
    variants: list[VariantResult]


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _ops_per_round(fn: ThroughputRound, seconds: float) -> int:
    """Size a round from a warm-up of the baseline so that it lasts about ``seconds``."""
    n = 64
    while True:
        elapsed = fn(n)
        if elapsed >= 0.05 or n >= 1 << 22:
            return max(64, int(n * seconds / max(elapsed, 1e-9)))
        n *= 4


@dataclass
class _Built:
    """A built variant: its round function, its between-round hooks, its network counters."""

    fn: Callable[[int], Any]
    hooks: list[Callable[[], None]]
    network: list[Callable[[], int]]

    def run(self, n: int) -> Any:
        """An untimed round (warm-up): hooks around it."""
        self.tidy()
        try:
            return self.fn(n)
        finally:
            self.tidy()

    def tidy(self) -> None:
        for hook in self.hooks:
            hook()

    def entries(self) -> int | None:
        return sum(count() for count in self.network) if self.network else None


def _network_calls(built: _Built, before: int | None) -> int | None:
    after = built.entries()
    return None if after is None or before is None else after - before


def _run_throughput(
    scenario: Scenario,
    built: list[_Built],
    settings: Settings,
    progress: Callable[[str], None],
) -> ScenarioResult:
    rounds, seconds = settings.for_scenario(scenario)
    for b in built:  # warm-up: connections, caches, lazily created state
        b.run(256)
    n = _ops_per_round(built[0].run, seconds)
    for b in built:
        b.run(max(64, n // 4))
    k = len(built)
    times: list[list[float]] = [[] for _ in built]
    cpu: list[list[float]] = [[] for _ in built]
    cpu_clock = time.process_time
    io_before = [b.entries() for b in built]
    for r in range(rounds):
        gc.collect()
        # Rotate who goes first, so no variant always runs right after the collection.
        for j in range(k):
            i = (r + j) % k
            built[i].tidy()
            cpu_began = cpu_clock()
            times[i].append(built[i].fn(n))
            cpu[i].append(cpu_clock() - cpu_began)
            built[i].tidy()
        progress(f"  {scenario.key}: round {r + 1}/{rounds}")
    base = times[0]
    results = []
    for variant, b, before, ts, cs in zip(
        scenario.variants, built, io_before, times, cpu, strict=True
    ):
        ratios = [b0 / t for b0, t in zip(base, ts, strict=True)]
        extra_us = [(t - b0) / n * 1e6 for b0, t in zip(base, ts, strict=True)]
        extra_cpu_us = [(c - b0) / n * 1e6 for b0, c in zip(cpu[0], cs, strict=True)]
        median = statistics.median(ratios)
        results.append(
            VariantResult(
                key=variant.key,
                label=variant.label,
                target=variant.target,
                reference=variant.reference,
                ratio_median=median,
                ratio_p25=_quantile(ratios, 0.25),
                ratio_p75=_quantile(ratios, 0.75),
                ops_per_s=n / statistics.median(ts),
                overhead_us=statistics.median(extra_us),
                cpu_overhead_us=statistics.median(extra_cpu_us),
                network_calls=_network_calls(b, before),
                met=None if variant.target is None else median >= variant.target,
            )
        )
    return ScenarioResult(scenario.key, scenario.title, scenario.kind, rounds, n, results)


def _run_latency(
    scenario: Scenario,
    built: list[_Built],
    settings: Settings,
    progress: Callable[[str], None],
) -> ScenarioResult:
    n = max(100, round(settings.latency_calls * scenario.calls_scale))
    for b in built:
        b.run(min(n, 1_000))
    # Per round and variant: the samples. A round that another process preempted often has
    # a high p99; the median over rounds of each round's quantile is what the code costs.
    samples: list[list[list[int]]] = [[] for _ in built]
    rounds = settings.latency_rounds
    k = len(built)
    io_before = [b.entries() for b in built]
    for r in range(rounds):
        gc.collect()
        for j in range(k):
            i = (r + j) % k
            built[i].tidy()
            samples[i].append(sorted(built[i].fn(n)))
            built[i].tidy()
        progress(f"  {scenario.key}: round {r + 1}/{rounds}")
    base_p50s = [_quantile(round_, 0.5) for round_ in samples[0]]
    results = []
    for variant, b, before, per_round in zip(
        scenario.variants, built, io_before, samples, strict=True
    ):
        pooled = sorted(ns for round_ in per_round for ns in round_)

        def typical(q: float, per_round: list[list[int]] = per_round) -> int:
            return int(statistics.median(_quantile(round_, q) for round_ in per_round))

        p99 = typical(0.99)
        ratio = None
        if scenario.compare_p50:
            ratio = statistics.median(
                _quantile(round_, 0.5) / max(base, 1)
                for round_, base in zip(per_round, base_p50s, strict=True)
            )
        if variant.target is None:
            met = None
        elif ratio is not None:
            met = ratio <= variant.target
        else:
            met = p99 <= variant.target
        results.append(
            VariantResult(
                key=variant.key,
                label=variant.label,
                target=variant.target,
                reference=variant.reference,
                p50_ns=typical(0.50),
                p99_ns=p99,
                p99_pooled_ns=int(_quantile(pooled, 0.99)),
                p999_ns=int(_quantile(pooled, 0.999)),
                p50_ratio=ratio,
                network_calls=_network_calls(b, before),
                met=met,
            )
        )
    return ScenarioResult(scenario.key, scenario.title, scenario.kind, rounds, n, results)


def run_scenario(
    scenario: Scenario,
    url: str,
    settings: Settings,
    progress: Callable[[str], None] = lambda _: None,
) -> ScenarioResult:
    """Build every variant of ``scenario`` against ``url`` and measure them interleaved."""
    with contextlib.ExitStack() as stack:
        env = Env(url=url, settings=settings, stack=stack)
        built = []
        for variant in scenario.variants:
            fn = variant.build(env)
            built.append(_Built(fn, *env._take()))
        if scenario.kind == "throughput":
            return _run_throughput(scenario, built, settings, progress)
        return _run_latency(scenario, built, settings, progress)


@contextlib.contextmanager
def _private_server() -> Iterator[str]:
    """Start a private redis-server on a free loopback port; yield its URL."""
    from redisguard.testing import RedisServer

    with RedisServer() as server:
        yield server.url


def _otel_mode() -> str:
    tracer = trace.get_tracer_provider()
    meter = metrics.get_meter_provider()
    api_only = type(tracer).__name__.startswith(("Proxy", "NoOp")) and type(
        meter
    ).__name__.startswith(("_Proxy", "Proxy", "NoOp"))
    return "API only (no SDK configured)" if api_only else "SDK configured"


_SDK_NOTE = (
    "'SDK' rows: explicit TracerProvider(SimpleSpanProcessor(InMemorySpanExporter())) + "
    "MeterProvider(InMemoryMetricReader()) per variant"
)


def _redis_version(url: str) -> str:
    client = redisguard.connect(url)
    try:
        info: dict[str, Any] = client.info("server")
        return str(info.get("redis_version", "?"))
    finally:
        client.close()


def run_benchmarks(
    settings: Settings,
    *,
    url: str | None = None,
    only: Sequence[str] | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run the selected scenarios; return a JSON-ready report.

    Args:
        settings: Round counts and durations.
        url: A loopback server to use instead of starting a private one.
        only: Scenario keys to run (all registered ones by default).
        progress: Called with a short status line as rounds complete.

    Raises:
        KeyError: an unknown scenario key.
        AssertionError: an open-circuit variant touched the network.
    """
    keys = list(only) if only else list(SCENARIOS)
    for key in keys:
        if key not in SCENARIOS:
            raise KeyError(f"unknown scenario {key!r}; known: {', '.join(SCENARIOS)}")
    # Silence the guard's failure logs while the open-circuit scenario trips its breakers,
    # without changing the logger level the hot path checks.
    with muted_logs("redisguard"), contextlib.ExitStack() as stack:
        server_url = url if url is not None else stack.enter_context(_private_server())
        meta = {
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "redis_server": _redis_version(server_url),
            "redis_py": redis.__version__,
            "pybreaker": getattr(pybreaker, "__version__", "?"),
            "tenacity": _dist_version("tenacity"),
            "redisguard": redisguard.__version__,
            # An editable install may point at another checkout than this script's.
            "redisguard_path": os.path.dirname(redisguard.__file__ or "?"),
            "opentelemetry": _otel_mode(),
            "opentelemetry_sdk_rows": _SDK_NOTE,
            "settings": asdict(settings),
        }
        results = [
            asdict(run_scenario(SCENARIOS[key], server_url, settings, progress)) for key in keys
        ]
    return {"meta": meta, "scenarios": results}


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


# -- output -----------------------------------------------------------------------------------
def format_report(report: dict[str, Any]) -> str:
    """The human-readable tables."""
    meta = report["meta"]
    lines = [
        f"redisguard {meta['redisguard']} | Python {meta['python']} | redis-py {meta['redis_py']}"
        f" | redis-server {meta['redis_server']} | {meta['cpus']} CPUs"
        f" | OpenTelemetry globals: {meta['opentelemetry']}",
        f"redisguard imported from {meta.get('redisguard_path', '?')}",
        meta.get("opentelemetry_sdk_rows", ""),
        "throughput: ratio = median over rounds of (baseline time / variant time), IQR of "
        "those ratios;",
        "  +us/op = median extra wall time per operation, +cpu us = the same in process CPU time",
        "latency: p50/p99 = median over rounds of each round's percentile; 'all' = pooled calls",
        "",
    ]
    for sc in report["scenarios"]:
        lines.append(
            f"{sc['title']}  ({sc['rounds']} interleaved rounds of {sc['ops_per_round']:,})"
        )
        if sc["kind"] == "throughput":
            lines.append(
                f"  {'variant':<46} {'ops/s':>9} {'ratio':>6} {'IQR':>11} {'+us/op':>7} "
                f"{'+cpu us':>7} {'target':>7} {'brief':>6}"
            )
            for v in sc["variants"]:
                target = f">={v['target']:.2f}" if v["target"] is not None else ""
                status = {True: " ok", False: " MISS", None: ""}[v["met"]]
                lines.append(
                    f"  {v['label']:<46} {v['ops_per_s']:>9,.0f} {v['ratio_median']:>6.3f} "
                    f"{v['ratio_p25']:>5.2f}-{v['ratio_p75']:<5.2f} {v['overhead_us']:>+7.2f} "
                    f"{v['cpu_overhead_us']:>+7.2f} {target:>7} {v['reference']:>6}{status}"
                )
        else:
            compare = any(v["p50_ratio"] is not None for v in sc["variants"])
            ratio_head = f" {'p50/base':>8}" if compare else ""
            lines.append(
                f"  {'variant':<46} {'p50 us':>8} {'p99 us':>8} {'p99 all':>8} "
                f"{'p99.9 all':>9}{ratio_head} {'target':>10} {'brief':>10}"
            )
            for v in sc["variants"]:
                if v["target"] is None:
                    target = ""
                elif compare:
                    target = f"p50<={v['target']:g}x"
                else:
                    target = f"p99<={v['target'] / 1000:g}us"
                ratio = f" {v['p50_ratio']:>8.2f}" if compare else ""
                status = {True: " ok", False: " MISS", None: ""}[v["met"]]
                lines.append(
                    f"  {v['label']:<46} {v['p50_ns'] / 1000:>8.2f} {v['p99_ns'] / 1000:>8.2f} "
                    f"{v['p99_pooled_ns'] / 1000:>8.2f} {v['p999_ns'] / 1000:>9.2f}{ratio} "
                    f"{target:>10} {v['reference']:>10}{status}"
                )
        lines.append("")
    return "\n".join(lines)


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench_guard.py",
        description="Compare @redis_guarded against raw redis-py, interleaved in one run.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of a few seconds (too noisy to judge targets)",
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds per scenario")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--only", metavar="KEYS", help=f"comma-separated scenarios (of: {', '.join(SCENARIOS)})"
    )
    parser.add_argument("--url", help="use this loopback server instead of a private one")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--list", action="store_true", help="list scenarios and variants")
    parser.add_argument(
        "--breaker",
        metavar="FIELD=VALUE,...",
        type=_breaker_fields,
        help="BreakerConfig fields for the guarded variants' breakers, e.g. "
        "'failure_rate_threshold=50,slow_call_duration=0.01,minimum_calls=20'; the presets "
        "'all' and 'all-time' turn every policy on (count-based / time-based window): "
        + "; ".join(
            f"{name} = {','.join(f'{k}={v}' for k, v in fields.items())}"
            for name, fields in BREAKER_PRESETS.items()
        ),
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parse_args(argv)
    if args.list:
        for sc in SCENARIOS.values():
            print(f"{sc.key}: {sc.title}")
            for v in sc.variants:
                print(f"    {v.key}: {v.label}")
        return 0
    if args.url is None and no_redis_server():
        return 2
    if args.breaker:
        BREAKER_FIELDS.update(args.breaker)
        print(f"breaker fields: {BREAKER_FIELDS}")
        if BREAKER_FIELDS.get("shared") and not os.environ.get("REDISGUARD_SHARED_DIR"):
            # Host-shared breakers: segments in a private directory, not /dev/shm.
            os.environ["REDISGUARD_SHARED_DIR"] = tempfile.mkdtemp(prefix="bench-guard-")
    settings = Settings.quick() if args.quick else Settings.default()
    if args.rounds:
        settings = replace(settings, rounds=args.rounds)
    only = [key.strip() for key in args.only.split(",")] if args.only else None
    progress = StatusLine()
    try:
        report = run_benchmarks(settings, url=args.url, only=only, progress=progress)
    except KeyError as exc:
        print(exc.args[0], file=sys.stderr)
        return 2
    progress.clear()
    print(format_report(report))
    write_json(args.json, report)
    return exit_status(missed_variants(report), check=args.check)


if __name__ == "__main__":
    sys.exit(main())
