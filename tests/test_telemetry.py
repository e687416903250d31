"""OpenTelemetry spans and metrics of guarded calls, against real redis-server processes.

Every test passes explicit providers (``tracer_provider=`` / ``meter_provider=``) backed by
``InMemorySpanExporter`` and ``InMemoryMetricReader``; the global providers are never set in
this process (see tests/test_telemetry_global.py for the "SDK configured later" case).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import redis
import redis.asyncio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

import redisguard
from redisguard import BreakerConfig, RetryPolicy, _telemetry, get_breaker, redis_guarded
from redisguard._telemetry import DURATION_BUCKETS, TRACE_SUCCESS_ENV
from redisguard.testing import RedisServer, free_port

NO_RETRY: RetryPolicy | None = None
# Retries without waiting, so a test's second attempt follows its first at once.
FAST_RETRY = RetryPolicy(attempts=3, backoff=0, max_backoff=0, jitter=0, deadline=2.0)
PATIENT = BreakerConfig(failure_threshold=100, reset_timeout=60)


@dataclass
class Otel:
    """Explicit SDK providers with in-memory exporters, and readers for their output."""

    exporter: InMemorySpanExporter
    tracer_provider: TracerProvider
    reader: InMemoryMetricReader
    meter_provider: MeterProvider

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """Finished spans, optionally only those called ``name``."""
        spans = list(self.exporter.get_finished_spans())
        return spans if name is None else [s for s in spans if s.name == name]

    def metrics(self) -> dict[str, dict[frozenset[tuple[str, Any]], Any]]:
        """Collect now: metric name -> frozen attributes -> data point."""
        out: dict[str, dict[frozenset[tuple[str, Any]], Any]] = {}
        data = self.reader.get_metrics_data()
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    points = out.setdefault(metric.name, {})
                    for point in metric.data.data_points:
                        points[frozenset((point.attributes or {}).items())] = point
        return out

    def value(self, name: str, attributes: Mapping[str, str]) -> Any:
        """The current value of one series (KeyError if the series does not exist)."""
        return self.metrics()[name][frozenset(attributes.items())].value

    def guarded(self, **kwargs: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """``redis_guarded`` wired to these providers."""
        decorator: Callable[[Callable[..., Any]], Callable[..., Any]] = redis_guarded(
            tracer_provider=self.tracer_provider, meter_provider=self.meter_provider, **kwargs
        )
        return decorator


@pytest.fixture
def otel() -> Iterator[Otel]:
    """Fresh SDK providers for one test, shut down afterwards."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield Otel(exporter, tracer_provider, reader, meter_provider)
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture
def dead_url() -> str:
    """A loopback URL where nothing listens (connections are refused at once)."""
    return f"redis://127.0.0.1:{free_port()}/0"


def client_for(url: str, socket_timeout: float = 0.25) -> redis.Redis:
    """A plain redis-py client with explicit timeouts and its own retry off.

    Not ``redisguard.connect()``: its recovery prober would move breakers on its own and
    make the exact transition counts below depend on timing.
    """
    client: redis.Redis = redis.Redis.from_url(
        url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=socket_timeout,
        retry=Retry(NoBackoff(), 0),
    )
    return client


def op(name: str, result: str) -> dict[str, str]:
    return {"operation": name, "result": result}


# -- metrics -----------------------------------------------------------------------------------
def test_every_series_exists_at_zero_once_decorated(otel: Otel) -> None:
    """Decorating registers every breaker and operation series at 0 before any call."""
    get_breaker("cache", PATIENT)
    get_breaker("unused")  # a breaker no operation uses yet is exported too

    @otel.guarded(name="price.get", breaker="cache", fallback=None)
    def get_price() -> None:
        raise AssertionError("never called")

    metrics = otel.metrics()
    breaker = frozenset({("name", "cache")})
    for name in (
        "circuit_breaker_state",
        "circuit_breaker_failures",
        "circuit_breaker_successes",
        "circuit_breaker_rejections",
    ):
        assert metrics[name][breaker].value == 0, name
        assert metrics[name][frozenset({("name", "unused")})].value == 0, name
    transitions = metrics["circuit_breaker_transitions"]
    assert {dict(k)["from"] + ">" + dict(k)["to"] for k in transitions} == {
        "closed>open",
        "closed>half-open",
        "open>half-open",
        "open>closed",
        "half-open>open",
        "half-open>closed",
    }
    assert all(p.value == 0 for p in transitions.values())
    for result in ("success", "fallback", "error"):
        assert metrics["redis_operations"][frozenset(op("price.get", result).items())].value == 0
    assert metrics["redis_operation_retries"][frozenset({("operation", "price.get")})].value == 0
    failures = metrics["redis_operation_failures"]
    assert {dict(k)["kind"] for k in failures} == {
        "transient",
        "misconfigured",
        "write_refused",
        "rejected",
    }
    assert all(p.value == 0 for p in failures.values())
    assert otel.spans() == []


def test_n_fallbacks_give_n_spans_and_n_counts(otel: Otel, dead_url: str) -> None:
    """N fallbacks from a refused connection give N fallback spans and a count of exactly N."""
    get_breaker("redis", PATIENT)
    client = client_for(dead_url)

    @otel.guarded(name="session.get", fallback="stale", retry=NO_RETRY)
    def get_session() -> Any:
        return client.get("session:1")

    n = 7
    assert [get_session() for _ in range(n)] == ["stale"] * n
    spans = otel.spans("redisguard session.get")
    assert len(spans) == n
    assert all(s.attributes and s.attributes["redisguard.outcome"] == "fallback" for s in spans)
    assert otel.value("redis_operations", op("session.get", "fallback")) == n
    assert otel.value("redis_operations", op("session.get", "success")) == 0
    assert otel.value("redis_operations", op("session.get", "error")) == 0
    assert otel.value("circuit_breaker_failures", {"name": "redis"}) == n
    assert otel.value("circuit_breaker_state", {"name": "redis"}) == 0
    failures = {"operation": "session.get", "kind": "transient"}
    assert otel.value("redis_operation_failures", failures) == n
    assert otel.value("redis_operation_failures", {**failures, "kind": "misconfigured"}) == 0


def test_wrong_password_counts_as_a_misconfigured_failure(
    otel: Otel, redis_server_factory: Callable[..., RedisServer]
) -> None:
    """An authentication error is counted under kind="misconfigured", once per call (no retry)."""
    server = redis_server_factory(password="right-password")
    get_breaker("redis", PATIENT)
    client = client_for(f"redis://:wrong-password@127.0.0.1:{server.port}/0")

    @otel.guarded(name="secret.get", fallback=None, retry=FAST_RETRY)
    def get_secret() -> Any:
        return client.get("secret")

    assert [get_secret() for _ in range(3)] == [None] * 3
    kinds = {"operation": "secret.get", "kind": "misconfigured"}
    assert otel.value("redis_operation_failures", kinds) == 3  # not retried: one attempt each
    assert otel.value("redis_operation_failures", {**kinds, "kind": "transient"}) == 0
    assert otel.value("redis_operation_retries", {"operation": "secret.get"}) == 0


def test_fallback_span_carries_the_documented_attributes(otel: Otel, dead_url: str) -> None:
    """A fallback span has its name, attributes, exception event, fallback event and ERROR."""
    get_breaker("sessions", PATIENT)
    client = client_for(dead_url)

    @otel.guarded(name="session.get", breaker="sessions", fallback=None, retry=FAST_RETRY)
    def get_session() -> Any:
        return client.get("session:1")

    assert get_session() is None
    (span,) = otel.spans()
    assert span.name == "redisguard session.get"
    assert span.kind is SpanKind.INTERNAL
    assert dict(span.attributes or {}) == {
        "db.system.name": "redis",
        "redisguard.operation": "session.get",
        "redisguard.breaker": "sessions",
        "redisguard.circuit_state": "closed",
        "redisguard.outcome": "fallback",
        "redisguard.attempts": 3,
        "redisguard.short_circuited": False,
        "error.type": "redis.exceptions.ConnectionError",
    }
    assert span.status.status_code is StatusCode.ERROR
    assert "ConnectionError" in (span.status.description or "")
    events = {e.name: dict(e.attributes or {}) for e in span.events}
    assert events["exception"]["exception.type"] == "redis.exceptions.ConnectionError"
    assert events["redisguard.fallback"] == {"redisguard.attempts": 3}
    # The retried call is one span, however many attempts it took.
    assert otel.value("redis_operation_retries", {"operation": "session.get"}) == 1


def test_open_circuit_fallbacks_are_rejections_with_short_circuit_spans(
    otel: Otel, dead_url: str
) -> None:
    """Once open, each call is a rejection, a fallback and a short-circuited span."""
    get_breaker("redis", BreakerConfig(failure_threshold=3, reset_timeout=60))
    client = client_for(dead_url)

    @otel.guarded(name="flags.get", fallback=False, retry=NO_RETRY)
    def get_flag() -> Any:
        return client.get("flag")

    n = 10
    assert [get_flag() for _ in range(n)] == [False] * n
    spans = otel.spans()
    assert len(spans) == n
    tried, skipped = spans[:3], spans[3:]
    assert [s.attributes["redisguard.short_circuited"] for s in tried if s.attributes] == [
        False
    ] * 3
    for span in skipped:
        attributes = dict(span.attributes or {})
        assert attributes["redisguard.short_circuited"] is True
        assert attributes["redisguard.circuit_state"] == "open"
        assert attributes["redisguard.attempts"] == 0
        assert attributes["redisguard.outcome"] == "fallback"
        assert "error.type" not in attributes
        assert span.status.status_code is StatusCode.ERROR
    assert otel.value("redis_operations", op("flags.get", "fallback")) == n
    assert otel.value("circuit_breaker_failures", {"name": "redis"}) == 3
    assert otel.value("circuit_breaker_rejections", {"name": "redis"}) == n - 3
    assert otel.value("circuit_breaker_state", {"name": "redis"}) == 2


def test_open_circuit_without_fallback_is_an_error_span(otel: Otel, dead_url: str) -> None:
    """With no fallback, an open circuit raises CircuitOpenError, traced as an error."""
    breaker = get_breaker("redis", PATIENT)
    client = client_for(dead_url)

    @otel.guarded(name="flags.get", retry=NO_RETRY)
    def get_flag() -> Any:
        return client.get("flag")

    breaker.open()
    with pytest.raises(redisguard.CircuitOpenError):
        get_flag()
    (span,) = otel.spans()
    attributes = dict(span.attributes or {})
    assert attributes["redisguard.outcome"] == "error"
    assert attributes["redisguard.short_circuited"] is True
    assert attributes["error.type"] == "redisguard._errors.CircuitOpenError"
    assert [e.name for e in span.events] == ["exception"]
    assert otel.value("redis_operations", op("flags.get", "error")) == 1
    assert otel.value("circuit_breaker_rejections", {"name": "redis"}) == 1


def test_successes_are_counted_exactly_and_not_traced(
    otel: Otel, redis_server: RedisServer
) -> None:
    """N plain successes count N on both success series and produce no span."""
    client = client_for(redis_server.url)

    @otel.guarded(name="counter.incr", fallback=0)
    def incr() -> int:
        return int(client.incr("n"))

    n = 25
    assert [incr() for _ in range(n)] == list(range(1, n + 1))
    assert otel.value("redis_operations", op("counter.incr", "success")) == n
    assert otel.value("circuit_breaker_successes", {"name": "redis"}) == n
    assert otel.value("redis_operations", op("counter.incr", "fallback")) == 0
    assert otel.value("redis_operation_retries", {"operation": "counter.incr"}) == 0
    assert otel.spans() == []
    # A plain success never attempted a degraded path: nothing in the histogram.
    assert "redis_degraded_call_duration" not in otel.metrics()


def test_unavailable_without_fallback_counts_an_error(otel: Otel, dead_url: str) -> None:
    """No fallback and Redis down: RedisUnavailableError, result=error and an error span."""
    get_breaker("redis", PATIENT)
    client = client_for(dead_url)

    @otel.guarded(name="cart.get", retry=NO_RETRY)
    def get_cart() -> Any:
        return client.get("cart")

    with pytest.raises(redisguard.RedisUnavailableError):
        get_cart()
    assert otel.value("redis_operations", op("cart.get", "error")) == 1
    assert otel.value("redis_operations", op("cart.get", "fallback")) == 0
    (span,) = otel.spans()
    attributes = dict(span.attributes or {})
    assert attributes["redisguard.outcome"] == "error"
    assert attributes["error.type"] == "redis.exceptions.ConnectionError"
    assert span.status.status_code is StatusCode.ERROR


def test_wrongtype_propagates_as_an_error_span(otel: Otel, redis_server: RedisServer) -> None:
    """A WRONGTYPE reaches the caller, counts as an error and is traced, not a failure."""
    client = client_for(redis_server.url)
    client.lpush("list", "x")

    @otel.guarded(name="value.get", fallback="unused")
    def get_value() -> Any:
        return client.get("list")

    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        get_value()
    assert otel.value("redis_operations", op("value.get", "error")) == 1
    assert otel.value("redis_operations", op("value.get", "fallback")) == 0
    assert otel.value("circuit_breaker_failures", {"name": "redis"}) == 0
    (span,) = otel.spans()
    attributes = dict(span.attributes or {})
    assert attributes["redisguard.outcome"] == "error"
    assert attributes["redisguard.attempts"] == 1
    assert attributes["error.type"] == "redis.exceptions.ResponseError"
    assert span.status.status_code is StatusCode.ERROR
    assert [e.name for e in span.events] == ["exception"]


def test_success_after_retry_is_traced_and_counted(otel: Otel, redis_server: RedisServer) -> None:
    """A call whose first attempt fails and second succeeds: one success span, attempts 2."""
    client = client_for(redis_server.url)
    client.set("k", "v")
    redis_server.kill()

    @otel.guarded(name="value.get", fallback="stale", retry=FAST_RETRY)
    def get_value() -> Any:
        try:
            return client.get("k")
        except redis.ConnectionError:
            redis_server.start()  # back for the retry: the first attempt really failed
            raise

    assert get_value() is None  # the restarted server lost the key: a real answer
    (span,) = otel.spans()
    attributes = dict(span.attributes or {})
    assert attributes["redisguard.outcome"] == "success"
    assert attributes["redisguard.attempts"] == 2
    assert "error.type" not in attributes
    assert span.status.status_code is StatusCode.UNSET
    assert otel.value("redis_operations", op("value.get", "success")) == 1
    assert otel.value("redis_operation_retries", {"operation": "value.get"}) == 1
    assert otel.value("circuit_breaker_failures", {"name": "redis"}) == 1
    histogram = otel.metrics()["redis_degraded_call_duration"]
    assert histogram[frozenset(op("value.get", "success").items())].count == 1


def test_state_gauge_and_transitions_follow_every_change(
    otel: Otel, redis_server: RedisServer
) -> None:
    """The gauge reads 0/2/1/2/1/0 through a failed and a good probe; transitions are exact."""
    breaker = get_breaker("redis", BreakerConfig(failure_threshold=2, reset_timeout=0.2))
    client = client_for(redis_server.url)
    seen_inside: list[int] = []

    @otel.guarded(name="value.get", fallback="stale", retry=NO_RETRY)
    def get_value() -> Any:
        # What an exporter would read while this call runs (half-open during a probe).
        seen_inside.append(otel.value("circuit_breaker_state", {"name": "redis"}))
        return client.get("k")

    def state() -> int:
        value: int = otel.value("circuit_breaker_state", {"name": "redis"})
        return value

    def transitions() -> dict[str, int]:
        points = otel.metrics()["circuit_breaker_transitions"]
        return {f"{dict(k)['from']}>{dict(k)['to']}": p.value for k, p in points.items() if p.value}

    observed = [state()]
    redis_server.kill()
    assert [get_value(), get_value()] == ["stale", "stale"]
    observed.append(state())
    time.sleep(0.25)
    assert get_value() == "stale"  # the probe fails: re-opened
    observed.append(state())
    redis_server.start()
    time.sleep(0.25)
    assert get_value() is None  # the probe succeeds: closed
    observed.append(state())
    breaker.close()  # already closed: not a transition

    assert observed == [0, 2, 2, 0]
    assert seen_inside == [0, 0, 1, 1]
    assert transitions() == {
        "closed>open": 1,
        "open>half-open": 2,
        "half-open>open": 1,
        "half-open>closed": 1,
    }
    assert "closed>closed" not in str(otel.metrics()["circuit_breaker_transitions"])
    failed_probe = otel.spans()[-1]
    assert failed_probe.attributes
    assert failed_probe.attributes["redisguard.circuit_state"] == "half-open"


def test_degraded_duration_histogram_has_explicit_buckets_and_only_degraded_calls(
    otel: Otel, redis_server: RedisServer
) -> None:
    """Only calls that tried Redis and failed are timed, in seconds, in DURATION_BUCKETS."""
    get_breaker("redis", BreakerConfig(failure_threshold=2, reset_timeout=60))
    client = client_for(redis_server.url, socket_timeout=0.1)

    @otel.guarded(name="value.get", fallback="stale", retry=NO_RETRY)
    def get_value() -> Any:
        return client.get("k")

    assert get_value() is None  # a success: not timed
    redis_server.pause()
    try:
        assert [get_value() for _ in range(5)] == ["stale"] * 5  # 2 timeouts, 3 short-circuits
    finally:
        redis_server.resume()
    histogram = otel.metrics()["redis_degraded_call_duration"]
    assert set(histogram) == {frozenset(op("value.get", "fallback").items())}
    (point,) = histogram.values()
    assert isinstance(point, HistogramDataPoint)
    assert tuple(point.explicit_bounds) == DURATION_BUCKETS
    assert point.count == 2
    # Each timed call waited for the 0.1 s socket timeout, so both land above 0.1 s.
    assert 0.2 <= point.sum < 2.0
    assert sum(point.bucket_counts[: DURATION_BUCKETS.index(0.1) + 1]) == 0


# -- spans --------------------------------------------------------------------------------------
def test_success_spans_only_when_switched_on(otel: Otel, redis_server: RedisServer) -> None:
    """Plain successes are untraced by default and traced with trace_success=True."""
    client = client_for(redis_server.url)

    @otel.guarded(name="quiet.get", fallback=None)
    def quiet() -> Any:
        return client.get("k")

    @otel.guarded(name="loud.get", fallback=None, trace_success=True)
    def loud() -> Any:
        return client.get("k")

    quiet()
    loud()
    (span,) = otel.spans()
    assert span.name == "redisguard loud.get"
    assert dict(span.attributes or {}) == {
        "db.system.name": "redis",
        "redisguard.operation": "loud.get",
        "redisguard.breaker": "redis",
        "redisguard.circuit_state": "closed",
        "redisguard.outcome": "success",
        "redisguard.attempts": 1,
        "redisguard.short_circuited": False,
    }
    assert span.status.status_code is StatusCode.UNSET
    assert span.events == ()


def test_env_variable_switches_success_spans_at_decoration(
    otel: Otel, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """REDISGUARD_TRACE_SUCCESS=1 is read when decorating; an explicit False still wins."""
    client = client_for(redis_server.url)

    def get() -> Any:
        return client.get("k")

    before = otel.guarded(name="before", fallback=None)(get)
    monkeypatch.setenv(TRACE_SUCCESS_ENV, "1")
    during = otel.guarded(name="during", fallback=None)(get)
    opted_out = otel.guarded(name="opted_out", fallback=None, trace_success=False)(get)
    monkeypatch.delenv(TRACE_SUCCESS_ENV)

    for fn in (before, during, opted_out):
        fn()
    assert [s.name for s in otel.spans()] == ["redisguard during"]


def test_spans_nest_under_the_callers_current_span(
    otel: Otel, redis_server: RedisServer, dead_url: str
) -> None:
    """Fallback, short-circuit and traced-success spans are children of the caller's span."""
    get_breaker("down", BreakerConfig(failure_threshold=1, reset_timeout=60))
    up, down = client_for(redis_server.url), client_for(dead_url)

    @otel.guarded(name="up.get", fallback=None, trace_success=True)
    def get_up() -> Any:
        return up.get("k")

    @otel.guarded(name="down.get", breaker="down", fallback=None, retry=NO_RETRY)
    def get_down() -> Any:
        return down.get("k")

    tracer = otel.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("handle request") as parent:
        get_up()
        get_down()  # fails and opens the circuit
        get_down()  # short-circuited
    spans = otel.spans()
    request = next(s for s in spans if s.name == "handle request")
    ours = [s for s in spans if s.name.startswith("redisguard ")]
    assert len(ours) == 3
    for span in ours:
        assert span.parent is not None
        assert span.parent.span_id == parent.get_span_context().span_id
        assert span.context is not None
        assert request.context is not None
        assert span.context.trace_id == request.context.trace_id


@pytest.fixture
def redis_instrumented(otel: Otel) -> Iterator[None]:
    """opentelemetry-instrumentation-redis on ``otel``'s tracer provider, for one test."""
    instrumentation = pytest.importorskip("opentelemetry.instrumentation.redis")
    instrumentor = instrumentation.RedisInstrumentor()
    instrumentor.instrument(tracer_provider=otel.tracer_provider)
    try:
        yield
    finally:
        instrumentor.uninstrument()


@pytest.mark.usefixtures("redis_instrumented")
def test_redis_command_spans_nest_under_the_guard_span(
    otel: Otel, redis_server: RedisServer
) -> None:
    """With the redis instrumentation, a traced call's and a retry's GET spans are children."""
    client = client_for(redis_server.url)

    @otel.guarded(name="traced.get", fallback=None, trace_success=True)
    def traced() -> Any:
        return client.get("k")

    @otel.guarded(name="retried.get", fallback="stale", retry=FAST_RETRY)
    def retried() -> Any:
        try:
            return client.get("k")
        except redis.ConnectionError:
            redis_server.start()
            raise

    traced()
    guard = otel.spans("redisguard traced.get")[0]
    (command,) = otel.spans("GET")
    assert command.parent is not None
    assert guard.context is not None
    assert command.parent.span_id == guard.context.span_id

    otel.exporter.clear()
    redis_server.kill()
    assert retried() is None
    guard = otel.spans("redisguard retried.get")[0]
    assert guard.context is not None
    first, second = otel.spans("GET")
    # The first attempt ran before anything had failed, so before the guard span existed;
    # the retry ran inside it.
    assert first.parent is None
    assert second.parent is not None
    assert second.parent.span_id == guard.context.span_id
    assert first.status.status_code is StatusCode.ERROR
    assert second.status.status_code is StatusCode.UNSET


@pytest.mark.usefixtures("redis_instrumented")
def test_traced_degraded_call_nests_every_attempt(otel: Otel, redis_server: RedisServer) -> None:
    """With trace_success=True even the failed first attempt's GET nests under our span."""
    client = client_for(redis_server.url)

    @otel.guarded(name="value.get", fallback="stale", retry=FAST_RETRY, trace_success=True)
    def get_value() -> Any:
        try:
            return client.get("k")
        except redis.ConnectionError:
            redis_server.start()
            raise

    redis_server.kill()
    assert get_value() is None
    (guard,) = otel.spans("redisguard value.get")
    assert guard.attributes
    assert guard.attributes["redisguard.attempts"] == 2
    commands = otel.spans("GET")
    assert len(commands) == 2
    assert guard.context is not None
    assert all(c.parent is not None and c.parent.span_id == guard.context.span_id for c in commands)


def _span_text(spans: list[ReadableSpan]) -> str:
    """Everything a span exports as text: names, attributes, events, status."""
    parts: list[str] = []
    for span in spans:
        parts += [span.name, repr(dict(span.attributes or {})), str(span.status.description)]
        for event in span.events:
            parts += [event.name, repr(dict(event.attributes or {}))]
    return "\n".join(parts)


PASSWORD = "pw-Sup3r-S3cret"


@pytest.mark.usefixtures("redis_instrumented")
def test_passwords_never_reach_spans_from_redis_errors(
    otel: Otel, redis_server_factory: Callable[..., RedisServer]
) -> None:
    """Wrong-password and server-down errors leave no password in any span, ours or redis's."""
    server = redis_server_factory(password=PASSWORD)
    right = client_for(server.url)
    wrong = client_for(server.url.replace(PASSWORD, PASSWORD[::-1]))

    @otel.guarded(name="right.get", fallback=None, trace_success=True, retry=FAST_RETRY)
    def get_right() -> Any:
        return right.get("k")

    @otel.guarded(name="wrong.get", fallback=None, retry=FAST_RETRY)
    def get_wrong() -> Any:
        return wrong.get("k")

    assert get_right() is None
    assert get_wrong() is None  # AuthenticationError: a misconfiguration, not retried
    server.kill()
    assert get_right() is None
    spans = otel.spans()
    wrong_span = otel.spans("redisguard wrong.get")[0]
    assert wrong_span.attributes
    assert wrong_span.attributes["error.type"] == "redis.exceptions.AuthenticationError"
    assert len(otel.spans("redisguard right.get")) == 2
    text = _span_text(spans)
    assert PASSWORD not in text
    assert PASSWORD[::-1] not in text


def test_passwords_never_reach_spans_from_error_messages(
    otel: Otel, redis_server_factory: Callable[..., RedisServer]
) -> None:
    """An error whose message embeds the Redis URL is exported with the password masked."""
    server = redis_server_factory(password=PASSWORD)
    get_breaker("redis", PATIENT)

    @otel.guarded(name="wrapped.get", fallback=None, retry=NO_RETRY)
    def get_wrapped() -> Any:
        raise redis.ConnectionError(f"cannot reach {server.url}")

    assert get_wrapped() is None
    text = _span_text(otel.spans())
    assert "redis://***@" in text
    assert PASSWORD not in text


async def test_async_fallbacks_and_successes_are_counted_and_traced(
    otel: Otel, redis_server: RedisServer
) -> None:
    """The asyncio wrapper counts and traces exactly like the sync one."""
    client = redis.asyncio.Redis.from_url(
        redis_server.url,
        socket_timeout=0.25,
        socket_connect_timeout=0.25,
        retry=AsyncRetry(NoBackoff(), 0),
    )
    get_breaker("redis", PATIENT)

    @otel.guarded(name="async.get", fallback="stale", retry=NO_RETRY)
    async def get_value() -> Any:
        return await client.get("k")

    try:
        assert [await get_value() for _ in range(4)] == [None] * 4
        redis_server.kill()
        assert [await get_value() for _ in range(3)] == ["stale"] * 3
    finally:
        await client.aclose()
    assert otel.value("redis_operations", op("async.get", "success")) == 4
    assert otel.value("redis_operations", op("async.get", "fallback")) == 3
    spans = otel.spans()
    assert len(spans) == 3
    assert {s.attributes["redisguard.outcome"] for s in spans if s.attributes} == {"fallback"}


class _BrokenProcessor(SimpleSpanProcessor):
    """A span processor whose exporter path raises on every span start and end."""

    def __init__(self) -> None:
        super().__init__(InMemorySpanExporter())

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("tracing backend broke")

    def on_end(self, span: ReadableSpan) -> None:
        raise RuntimeError("tracing backend broke")


class _RaisingTracerProvider(TracerProvider):
    """A real SDK provider whose tracers raise from start_span (a broken instrumentation)."""

    def get_tracer(self, *args: Any, **kwargs: Any) -> Any:
        real = super().get_tracer(*args, **kwargs)

        class _Tracer:
            def start_span(self, *a: Any, **k: Any) -> Any:
                raise RuntimeError("tracer broke")

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        return _Tracer()


@pytest.mark.parametrize("provider", [_RaisingTracerProvider, "broken-processor"])
def test_a_raising_tracer_never_turns_a_fallback_into_an_error(
    provider: Any, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tracer that raises is logged; degraded, short-circuited and traced calls still answer."""
    monkeypatch.setattr(_telemetry, "_last_failure_log", [0.0])  # log this test's first failure
    if provider == "broken-processor":
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(_BrokenProcessor())
    else:
        tracer_provider = provider()
    breaker = redisguard.Breaker("broken-otel", BreakerConfig(failure_threshold=1))
    port = free_port()
    client = redis.Redis(port=port, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))

    @redis_guarded(
        name="get", breaker=breaker, fallback="FB", retry=NO_RETRY, trace_success=True,
        tracer_provider=tracer_provider,
    )
    def get() -> Any:
        return client.get("k")

    try:
        assert get() == "FB"  # degraded: refused, opens the breaker
        assert breaker.current_state == "open"
        assert get() == "FB"  # short-circuited
    finally:
        client.close()
        tracer_provider.shutdown()
    assert "telemetry failed" in caplog.text
