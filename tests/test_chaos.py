"""``redisguard.chaos``: faults injected where guarded calls reach a real redis-server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from _refusals import admin, fill_memory, free_memory, slow_script
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis import exceptions as rx
from redis.backoff import NoBackoff
from redis.retry import Retry

import redisguard
from redisguard import (
    Breaker,
    BreakerConfig,
    ConfigError,
    ErrorKind,
    RetryPolicy,
    _chaos,
    chaos,
    classify_error,
    redis_guarded,
)
from redisguard._classify import not_applied
from redisguard.testing import RedisServer, free_port

pytestmark = pytest.mark.timeout(30)

RETRY = RetryPolicy(attempts=3, backoff=0.001, max_backoff=0.002, jitter=0.001, deadline=0.5)
PATIENT = BreakerConfig(failure_threshold=100, reset_timeout=60)


@pytest.fixture(autouse=True)
def _chaos_off(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each test starts and ends with chaos off and REDISGUARD_CHAOS* unset."""
    monkeypatch.delenv(_chaos.CHAOS_ENV, raising=False)
    monkeypatch.delenv(_chaos.KILL_ENV, raising=False)
    chaos.kill()
    _chaos._clear_counts()
    yield
    chaos.kill()


# -- the spec ------------------------------------------------------------------------------
def test_spec_parses_rules_scopes_and_units() -> None:
    """A spec is rules of scope + fault; durations take ms, s or m."""
    faults = chaos.parse_spec(
        "op=session.get,error=timeout,latency=250ms,p=0.05; breaker=cache,outage=30s;"
        " all,latency=1s,p=0.01"
    )
    assert faults == (
        chaos.Fault(operation="session.get", error="timeout", latency_ms=250.0, p=0.05),
        chaos.Fault(breaker="cache", outage=30.0),
        chaos.Fault(latency_ms=1000.0, p=0.01),
    )
    assert [f.kind for f in faults] == ["timeout", "outage", "latency"]


@pytest.mark.parametrize(
    ("spec", "part"),
    [
        ("op=a,error=timeout,p=1", "p must be above 0 and at most 0.25"),
        ("op=a,error=timeout,p=0", "p must be above 0"),
        ("op=a,error=timeout,p=lots", "p must be a number, got 'lots'"),
        ("op=a,error=timeout", "give p=SHARE"),
        ("op=a,eror=timeout,p=0.1", "unknown field 'eror'"),
        ("op=a,error=segfault,p=0.1", "error must be one of refused, timeout"),
        ("error=timeout,p=0.1", "give a scope"),
        ("all,op=a,error=timeout,p=0.1", "give a scope"),
        ("op=a,p=0.1", "give an error, a latency or an outage"),
        ("op=a,outage=2h", "outage must be a duration"),
        ("op=a,outage=11m", "outage must be above 0 and at most 600 s"),
        ("op=a,outage=10s,p=0.1", "drop p"),
        ("op=a,latency=11s,p=0.1", "latency_ms must be between 0 and 10000"),
        ("op=a,latency,p=0.1", "'latency' is not key=value"),
        ("op=a,op=b,latency=1ms,p=0.1", "'op' given twice"),
        (" ; ", "has no rules"),
    ],
)
def test_bad_spec_names_the_variable_and_the_part(spec: str, part: str) -> None:
    """Every mistake is a ConfigError naming REDISGUARD_CHAOS, the rule and what is wrong."""
    with pytest.raises(ConfigError, match="REDISGUARD_CHAOS") as info:
        chaos.parse_spec(spec)
    assert part in str(info.value)


def test_fault_validates_in_code_too() -> None:
    """A Fault built in code is checked like a spec (the caps apply)."""
    with pytest.raises(ConfigError, match=r"p must be above 0 and at most 0\.25"):
        chaos.Fault(operation="a", error="busy", p=0.5)
    with pytest.raises(ConfigError, match="outage must be above 0 and at most 600"):
        chaos.Fault(outage=3600)
    with pytest.raises(TypeError, match="needs at least one fault"):
        chaos.enable()


# -- the errors are redis-py's own --------------------------------------------------------
@pytest.mark.parametrize(
    ("kind", "cls", "expected"),
    [
        ("refused", rx.ConnectionError, ErrorKind.TRANSIENT),
        ("timeout", rx.TimeoutError, ErrorKind.TRANSIENT),
        ("busy", rx.ResponseError, ErrorKind.TRANSIENT),
        ("loading", rx.BusyLoadingError, ErrorKind.TRANSIENT),
        ("readonly", rx.ReadOnlyError, ErrorKind.WRITE_REFUSED),
        ("oom", rx.OutOfMemoryError, ErrorKind.WRITE_REFUSED),
    ],
)
def test_injected_errors_classify_as_the_real_ones(
    kind: str, cls: type[Exception], expected: ErrorKind
) -> None:
    """Each kind is the redis-py class the real failure raises, classified the same way."""
    exc = _chaos.make_error(kind)
    assert type(exc) is cls
    assert classify_error(exc) is expected
    # Only a read timeout leaves open whether the command ran.
    assert not_applied(exc) is (kind != "timeout")


def test_injected_refusal_matches_a_real_refused_connection() -> None:
    """A refused connection: same class, same message shape, same classification."""
    real_client = redis.Redis(port=free_port(), retry=Retry(NoBackoff(), 0))
    with pytest.raises(rx.ConnectionError) as real:
        real_client.get("k")
    real_client.close()
    injected = _chaos.make_error("refused")
    assert type(injected) is type(real.value)
    assert str(real.value).endswith("Connection refused.")
    assert str(injected) == "Error 111 connecting to redisguard-chaos:0. Connection refused."
    assert classify_error(injected) is classify_error(real.value) is ErrorKind.TRANSIENT
    assert not_applied(injected)
    assert not_applied(real.value)


def test_injected_busy_and_oom_match_the_server(redis_server: RedisServer) -> None:
    """BUSY and OOM: the server's own replies and the injected ones are indistinguishable."""
    probe = admin(redis_server, socket_timeout=2)
    try:
        with (
            slow_script(redis_server, 2.0, busy_after_ms=50),
            pytest.raises(rx.ResponseError) as busy,
        ):
            probe.get("k")
        fill_memory(redis_server)
        with pytest.raises(rx.OutOfMemoryError) as oom:
            probe.set("k", "v")
        free_memory(redis_server)
    finally:
        probe.close()
    for kind, real in (("busy", busy.value), ("oom", oom.value)):
        injected = _chaos.make_error(kind)
        assert type(injected) is type(real)
        assert injected.args == real.args
        assert classify_error(injected) is classify_error(real)
        assert not_applied(injected) is not_applied(real)


# -- off by default, and free --------------------------------------------------------------
def test_off_by_default_the_guard_calls_its_function_directly(seeded_client: redis.Redis) -> None:
    """With chaos off the wrapper's closure holds the function itself: no extra call."""

    def get() -> Any:
        return seeded_client.get("k")

    guarded = redis_guarded(name="c.off", fallback=None)(get)
    guard = guarded.__redisguard__  # type: ignore[attr-defined]
    assert guard.fn_cell.cell_contents is get
    assert guarded() == b"real"
    chaos.enable(chaos.Fault(operation="c.off", error="busy", p=0.25))
    assert guard.fn_cell.cell_contents is not get
    chaos.kill()
    assert guard.fn_cell.cell_contents is get
    assert chaos.active() == ()


# -- sync ----------------------------------------------------------------------------------
def test_outage_runs_the_whole_path_and_kill_ends_it(seeded_client: redis.Redis) -> None:
    """An outage falls back, opens the breaker, is counted; kill() restores Redis at once."""
    breaker = Breaker("c.sync", BreakerConfig(failure_threshold=3, reset_timeout=60))

    @redis_guarded(name="c.get", fallback="fallback", breaker=breaker, retry=None)
    def get() -> Any:
        return seeded_client.get("k")

    @redis_guarded(name="c.other", fallback="fallback", retry=None)
    def other() -> Any:
        return seeded_client.get("k")

    chaos.enable("op=c.get,outage=30s")
    assert [get() for _ in range(5)] == ["fallback"] * 5
    assert breaker.current_state == "open"
    assert other() == b"real"  # out of scope
    assert chaos.injected() == {("c.get", "outage"): 3}  # then the open circuit answered
    chaos.kill()
    breaker.reset()
    assert get() == b"real"
    assert chaos.injected() == {("c.get", "outage"): 3}


def test_retries_meet_the_fault_too(seeded_client: redis.Redis) -> None:
    """A refusal proves nothing ran, so it is retried (and injected again); a read
    timeout is not retried for a guard not declared idempotent."""

    @redis_guarded(name="c.refused", fallback=None, retry=RETRY, breaker=Breaker("b1", PATIENT))
    def refused() -> Any:
        return seeded_client.get("k")

    @redis_guarded(name="c.timeout", fallback=None, retry=RETRY, breaker=Breaker("b2", PATIENT))
    def timed_out() -> Any:
        return seeded_client.get("k")

    chaos.enable("op=c.refused,outage=30s", "op=c.timeout,outage=30s,error=timeout")
    assert refused() is None
    assert timed_out() is None
    assert chaos.injected() == {("c.refused", "outage"): 3, ("c.timeout", "outage"): 1}
    failure_kinds = refused.__redisguard__.stats  # type: ignore[attr-defined]
    assert failure_kinds.retries.value == 1


def test_write_refusals_open_only_the_write_side(seeded_client: redis.Redis) -> None:
    """Injected OOM is a refused write: write guards fall back, reads still reach Redis."""
    breaker = Breaker("c.sides", BreakerConfig(failure_threshold=2, reset_timeout=60))

    @redis_guarded(name="c.set", fallback=False, breaker=breaker, access="write")
    def put() -> Any:
        return seeded_client.set("k2", "v")

    @redis_guarded(name="c.read", fallback=None, breaker=breaker, access="read")
    def read() -> Any:
        return seeded_client.get("k")

    chaos.enable(chaos.Fault(breaker="c.sides", error="oom", p=0.25), seed=1)
    results = [put() for _ in range(40)]
    assert False in results
    assert breaker.write_side.state_code == 2  # open
    assert breaker.current_state == "closed"
    chaos.kill()
    assert read() == b"real"
    assert put() is False  # the write side is still open: answered without Redis


def test_write_refusals_spare_the_guards_a_real_one_spares(seeded_client: redis.Redis) -> None:
    """A real OOM refuses only commands that may grow memory, and a real replica only writes:
    an injected OOM reaches write guards (not reads, not deletes), READONLY every guard but
    reads. Scoped to a whole breaker, the rehearsal matches the server's behaviour."""
    breaker = Breaker("c.scoped", BreakerConfig(failure_threshold=50, reset_timeout=60))
    guards = {
        access: redis_guarded(
            name=f"c.scoped.{access}", fallback="fell back", breaker=breaker, retry=None,
            access=access,
        )(lambda: seeded_client.get("k"))
        for access in ("read", "write", "delete", "both")
    }
    for error, refused in (("oom", {"write", "both"}), ("readonly", {"write", "delete", "both"})):
        chaos.enable(f"breaker=c.scoped,error={error},p=0.25", seed=3)
        answers = {access: {guard() for _ in range(40)} for access, guard in guards.items()}
        chaos.kill()
        breaker.reset()
        for access, seen in answers.items():
            assert ("fell back" in seen) is (access in refused), (error, access, seen)


def test_probability_and_latency_with_a_seed(seeded_client: redis.Redis) -> None:
    """About p of the calls get the latency; a seed makes the rehearsal reproducible."""

    @redis_guarded(name="c.slow", fallback=None)
    def get() -> Any:
        return seeded_client.get("k")

    def run() -> tuple[int, float]:
        chaos.kill()
        _chaos._clear_counts()
        chaos.enable("op=c.slow,latency=20ms,p=0.25", seed=7)
        started = time.perf_counter()
        assert all(get() == b"real" for _ in range(80))
        elapsed = time.perf_counter() - started
        return chaos.injected()[("c.slow", "latency")], elapsed

    first, elapsed = run()
    assert 8 <= first <= 32  # 80 calls at p=0.25: 20 expected
    assert elapsed >= first * 0.02
    assert run()[0] == first


def test_guards_built_later_and_breaker_scope(seeded_client: redis.Redis) -> None:
    """A guard decorated after enable() is injected into too; breaker scope is exact."""
    chaos.enable("breaker=c.scope,outage=30s,error=loading")

    @redis_guarded(name="c.late", fallback="fb", breaker=Breaker("c.scope", PATIENT), retry=None)
    def late() -> Any:
        return seeded_client.get("k")

    @redis_guarded(name="c.elsewhere", fallback="fb", breaker=Breaker("c.x", PATIENT))
    def elsewhere() -> Any:
        return seeded_client.get("k")

    assert late() == "fb"
    assert elsewhere() == b"real"


def test_every_wrapper_variant_is_injected(seeded_client: redis.Redis) -> None:
    """Policy wrappers (window, bulkhead), success tracing and breaker selectors too."""
    windowed = Breaker(
        "c.window",
        BreakerConfig(failure_rate_threshold=50, minimum_calls=100, sliding_window_size=100),
    )
    bulkheaded = Breaker("c.bulk", BreakerConfig(max_concurrent_calls=4, failure_threshold=100))
    per_call = Breaker("c.selected", PATIENT)

    def get() -> Any:
        return seeded_client.get("k")

    guards = [
        redis_guarded(name="c.v1", fallback="fb", breaker=windowed, retry=None)(get),
        redis_guarded(name="c.v2", fallback="fb", breaker=bulkheaded, retry=None)(get),
        redis_guarded(name="c.v3", fallback="fb", trace_success=True, retry=None)(get),
        redis_guarded(name="c.v4", fallback="fb", breaker=lambda: per_call, retry=None)(get),
    ]
    assert [g() for g in guards] == [b"real"] * 4
    chaos.enable("all,outage=30s,error=loading")
    assert [g() for g in guards] == ["fb"] * 4
    chaos.kill()
    assert [g() for g in guards] == [b"real"] * 4
    assert set(chaos.injected()) == {(f"c.v{i}", "outage") for i in range(1, 5)}


def test_the_kill_switch_variable(
    seeded_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REDISGUARD_CHAOS_KILL=1 ends chaos at the next call and keeps it from starting."""

    @redis_guarded(name="c.kill", fallback="fb", retry=None, breaker=Breaker("c.k", PATIENT))
    def get() -> Any:
        return seeded_client.get("k")

    chaos.enable("op=c.kill,outage=30s")
    assert get() == "fb"
    monkeypatch.setenv("REDISGUARD_CHAOS_KILL", "1")
    assert get() == b"real"
    assert chaos.active() == ()
    with pytest.raises(ConfigError, match="REDISGUARD_CHAOS_KILL is set"):
        chaos.enable("op=c.kill,outage=30s")


def test_the_spec_variable(seeded_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    """REDISGUARD_CHAOS is read when the first guard is built; a bad one fails decoration."""
    monkeypatch.setattr(_chaos._state, "env_read", False)
    monkeypatch.setenv("REDISGUARD_CHAOS", "op=c.env,outage=30s,error=readonly")

    @redis_guarded(name="c.env", fallback="fb", retry=None, breaker=Breaker("c.e", PATIENT))
    def get() -> Any:
        return seeded_client.get("k")

    assert get() == "fb"
    assert chaos.active() == (chaos.Fault(operation="c.env", outage=30.0, error="readonly"),)
    chaos.kill()
    monkeypatch.setattr(_chaos._state, "env_read", False)
    monkeypatch.setenv("REDISGUARD_CHAOS", "op=c.env,error=timeout,p=0.9")
    with pytest.raises(ConfigError, match=r"REDISGUARD_CHAOS rule 1 .*at most 0\.25"):
        redis_guarded(name="c.env2", fallback=None)(get)
    with pytest.raises(ConfigError, match="REDISGUARD_CHAOS rule 1"):  # not read once and forgotten
        redis_guarded(name="c.env3", fallback=None)(get)


def test_spans_and_metrics_mark_the_rehearsal(seeded_client: redis.Redis) -> None:
    """The degraded span says redisguard.chaos=true; the metric counts by operation, kind."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])

    @redis_guarded(
        name="c.otel",
        fallback=None,
        retry=None,
        breaker=Breaker("c.o", PATIENT),
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    def get() -> Any:
        return seeded_client.get("k")

    chaos.enable("op=c.otel,outage=30s,error=busy")
    assert get() is None
    chaos.kill()
    assert get() == b"real"
    (span,) = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["redisguard.chaos"] is True
    assert span.attributes["redisguard.chaos_kind"] == "outage"
    assert span.attributes["redisguard.outcome"] == "fallback"
    assert _metric(reader, "redisguard_chaos_injected", operation="c.otel", kind="outage") == 1
    tracer_provider.shutdown()
    meter_provider.shutdown()


def test_latency_marks_a_traced_success(seeded_client: redis.Redis) -> None:
    """With success spans on, a call that only got latency is marked too."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))

    @redis_guarded(
        name="c.traced", fallback=None, trace_success=True, tracer_provider=tracer_provider
    )
    def get() -> Any:
        return seeded_client.get("k")

    chaos.enable(chaos.Fault(operation="c.traced", latency_ms=1, p=0.25), seed=3)
    for _ in range(20):
        assert get() == b"real"
    marked = [
        s
        for s in exporter.get_finished_spans()
        if s.attributes and "redisguard.chaos" in s.attributes
    ]
    assert len(marked) == chaos.injected()[("c.traced", "latency")] > 0
    tracer_provider.shutdown()


def _metric(reader: InMemoryMetricReader, name: str, **attributes: str) -> Any:
    """The value of one series of an observable counter, collected now."""
    data = reader.get_metrics_data()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    if dict(point.attributes or {}) == attributes:
                        return point.value  # type: ignore[union-attr]
    raise KeyError((name, attributes))


# -- asyncio -------------------------------------------------------------------------------
async def test_async_outage_fallback_and_kill(seeded_aclient: redis.asyncio.Redis) -> None:
    """The asyncio twin: errors are injected in the coroutine, latency with asyncio.sleep."""
    breaker = Breaker("c.async", BreakerConfig(failure_threshold=2, reset_timeout=60))

    @redis_guarded(name="c.aget", fallback="fb", breaker=breaker, retry=RETRY)
    async def get() -> Any:
        return await seeded_aclient.get("k")

    chaos.enable("op=c.aget,outage=30s,error=busy")
    assert await get() == "fb"
    assert breaker.current_state == "open"
    assert chaos.injected() == {("c.aget", "outage"): 2}  # BUSY proves nothing ran: retried
    chaos.kill()
    breaker.reset()
    assert await get() == b"real"

    chaos.enable("op=c.aget,latency=30ms,p=0.25", seed=5)
    started = time.perf_counter()
    # Concurrent calls: the injected latency does not block the loop.
    results = await asyncio.gather(*(get() for _ in range(40)))
    elapsed = time.perf_counter() - started
    assert results == [b"real"] * 40
    assert chaos.injected()[("c.aget", "latency")] > 0
    assert elapsed < 0.03 * chaos.injected()[("c.aget", "latency")]


async def test_async_timeout_with_latency_is_a_slow_timeout(
    seeded_aclient: redis.asyncio.Redis,
) -> None:
    """error=timeout plus latency: the call waits, then times out, and falls back."""

    @redis_guarded(name="c.aslow", fallback="fb", retry=None, breaker=Breaker("c.as", PATIENT))
    async def get() -> Any:
        return await seeded_aclient.get("k")

    chaos.enable("op=c.aslow,outage=30s,error=timeout,latency=50ms")
    started = time.perf_counter()
    assert await get() == "fb"
    assert time.perf_counter() - started >= 0.05


def test_redisguard_exports_chaos() -> None:
    """The module is importable as redisguard.chaos."""
    assert redisguard.chaos is chaos


def test_chaos_reaches_the_hits_of_a_cached_function(seeded_client: redis.Redis) -> None:
    """``@cached`` inlines its GET guard's happy path; while chaos injects into that guard
    the cache takes the guard's own path, so a hit meets the fault like any GET."""
    from redisguard.cache import cached

    calls: list[int] = []

    @cached(seeded_client, ttl=60, name="chaos-prof")
    def profile(user: int) -> dict[str, int]:
        calls.append(user)
        return {"user": user}

    assert profile(7) == {"user": 7}
    assert profile(7) == {"user": 7}  # a hit: the source is not called
    assert calls == [7]
    chaos.enable("op=chaos-prof.get,outage=30s")
    try:
        assert profile(7) == {"user": 7}  # the GET met the outage: the source answers
        assert calls == [7, 7]
        assert chaos.injected().get(("chaos-prof.get", "outage"), 0) >= 1
    finally:
        chaos.kill()
    calls.clear()
    assert profile(7) == {"user": 7}
    assert calls == []  # a hit again, straight from Redis
