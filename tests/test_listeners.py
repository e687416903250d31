"""Breaker listeners: the defaults, swapping them, user listeners, and failing listeners."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pybreaker
import pytest
import redis
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from redis.backoff import NoBackoff
from redis.retry import Retry

from redisguard import (
    BreakerConfig,
    LoggingListener,
    OpenTelemetryListener,
    get_breaker,
    redis_guarded,
)
from redisguard.testing import RedisServer, free_port

FAST = BreakerConfig(failure_threshold=2, reset_timeout=0.1)


class Recorder(pybreaker.CircuitBreakerListener):
    """A user's own listener: records every state change as ``"old>new"``."""

    def __init__(self) -> None:
        self.changes: list[str] = []

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        self.changes.append(f"{old_state.name}>{new_state.name}")


class Exploding(pybreaker.CircuitBreakerListener):
    """A listener whose every hook raises."""

    def before_call(self, cb: pybreaker.CircuitBreaker, func: Any, *args: Any, **kw: Any) -> None:
        raise RuntimeError("before_call exploded")

    def success(self, cb: pybreaker.CircuitBreaker) -> None:
        raise RuntimeError("success exploded")

    def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
        raise RuntimeError("failure exploded")

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: Any, new_state: Any) -> None:
        raise RuntimeError("state_change exploded")


def client_for(url: str) -> redis.Redis:
    """A plain redis-py client: explicit timeouts, its own retry off."""
    client: redis.Redis = redis.Redis.from_url(
        url, socket_timeout=0.25, socket_connect_timeout=0.25, retry=Retry(NoBackoff(), 0)
    )
    return client


@pytest.fixture
def meter() -> Iterator[tuple[MeterProvider, InMemoryMetricReader]]:
    """An explicit meter provider with an in-memory reader."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    yield provider, reader
    provider.shutdown()


def transitions(reader: InMemoryMetricReader, name: str) -> dict[str, int]:
    """Non-zero ``circuit_breaker_transitions`` of breaker ``name`` as ``"from>to": n``."""
    out: dict[str, int] = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name != "circuit_breaker_transitions":
                    continue
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    value = getattr(point, "value", 0)
                    if attributes["name"] == name and value:
                        out[f"{attributes['from']}>{attributes['to']}"] = int(value)
    return out


def cycle(breaker_name: str, redis_server: RedisServer, **guard: Any) -> list[Any]:
    """Drive a breaker closed -> open -> half-open -> open -> half-open -> closed for real."""
    client = client_for(redis_server.url)

    def read() -> Any:
        return client.get("k")

    get: Callable[[], Any] = redis_guarded(
        name=f"{breaker_name}.get", breaker=breaker_name, fallback="FB", retry=None, **guard
    )(read)

    answers = [get()]
    redis_server.kill()
    answers += [get(), get(), get()]  # two failures open it, the third is rejected
    time.sleep(0.15)
    answers.append(get())  # failed probe: re-opened
    redis_server.start()
    time.sleep(0.15)
    answers.append(get())  # good probe: closed
    return answers


def test_default_listeners_are_attached_to_registered_breakers() -> None:
    """get_breaker() breakers come with one OpenTelemetryListener and one LoggingListener."""
    breaker = get_breaker("sessions")
    kinds = sorted(type(listener).__name__ for listener in breaker.listeners)
    assert kinds == ["LoggingListener", "OpenTelemetryListener"]
    assert get_breaker("other").listeners[0] is not breaker.listeners[0]


def test_a_user_listener_receives_exactly_the_real_transitions(
    redis_server: RedisServer,
) -> None:
    """A user's listener sees every real state change, in order, and no closed -> closed."""
    breaker = get_breaker("redis", FAST)
    recorder = Recorder()
    breaker.add_listener(recorder)
    breaker.close()  # already closed: pybreaker itself would report closed -> closed

    answers = cycle("redis", redis_server)

    assert answers == [None, "FB", "FB", "FB", "FB", None]
    assert recorder.changes == [
        "closed>open",
        "open>half-open",
        "half-open>open",
        "open>half-open",
        "half-open>closed",
    ]
    breaker.close()
    assert len(recorder.changes) == 5


def test_removing_the_otel_listener_stops_transition_counts(
    redis_server: RedisServer, meter: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    """Without the OTel listener no transition is counted; a new one counts from zero."""
    provider, reader = meter
    breaker = get_breaker("redis", FAST)
    (otel_listener,) = [x for x in breaker.listeners if isinstance(x, OpenTelemetryListener)]

    breaker.remove_listener(otel_listener)
    cycle("redis", redis_server, meter_provider=provider)
    assert transitions(reader, "redis") == {}

    replacement = OpenTelemetryListener()
    breaker.add_listener(replacement)
    breaker.open()
    breaker.close()
    assert transitions(reader, "redis") == {"closed>open": 1, "open>closed": 1}


def test_otel_listener_counts_a_full_cycle(
    redis_server: RedisServer, meter: tuple[MeterProvider, InMemoryMetricReader]
) -> None:
    """The default OTel listener counts each real transition once, by from and to."""
    provider, reader = meter
    get_breaker("redis", FAST)
    cycle("redis", redis_server, meter_provider=provider)
    assert transitions(reader, "redis") == {
        "closed>open": 1,
        "open>half-open": 2,
        "half-open>open": 1,
        "half-open>closed": 1,
    }


def test_removing_the_logging_listener_silences_state_logs(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Swapping out LoggingListener removes its records; adding one back restores them."""
    breaker = get_breaker("redis", FAST)
    (logging_listener,) = [x for x in breaker.listeners if isinstance(x, LoggingListener)]
    breaker.remove_listener(logging_listener)
    caplog.set_level(logging.INFO, logger="redisguard")

    breaker.open()
    assert not [r for r in caplog.records if getattr(r, "category", "") == "circuit-breaker"]

    breaker.add_listener(LoggingListener())
    breaker.close()
    messages = [r.getMessage() for r in caplog.records]
    assert messages[-1] == "Circuit breaker closed (recovered): redis"


def test_a_raising_listener_never_breaks_a_guarded_call(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every hook of a listener may raise: calls still answer and each error is logged."""
    breaker = get_breaker("redis", FAST)
    breaker.add_listener(Exploding())
    recorder = Recorder()
    breaker.add_listener(recorder)  # listeners after the failing one still run
    caplog.set_level(logging.ERROR, logger="redisguard")

    answers = cycle("redis", redis_server)

    assert answers == [None, "FB", "FB", "FB", "FB", None]
    assert len(recorder.changes) == 5
    failures = [r for r in caplog.records if r.getMessage().startswith("breaker listener")]
    hooks = {r.getMessage().rsplit(" ", 1)[-1] for r in failures}
    assert hooks == {"before_call", "success", "failure", "state_change"}
    assert all(r.exc_info and "exploded" in str(r.exc_info[1]) for r in failures)
    assert all(getattr(r, "category", None) == "circuit-breaker" for r in failures)


def test_logging_listener_levels_and_structured_extra(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Open is ERROR, re-open WARNING, half-open and closed INFO, each with its extra fields."""
    caplog.set_level(logging.INFO, logger="redisguard")
    get_breaker("redis", FAST)
    cycle("redis", redis_server)

    records = [r for r in caplog.records if getattr(r, "category", "") == "circuit-breaker"]
    seen = [(r.levelname, r.getMessage(), getattr(r, "state", None)) for r in records]
    assert seen == [
        ("ERROR", "Circuit breaker opened: redis", "open"),
        ("INFO", "Circuit breaker entering half-open state: redis", "half-open"),
        ("WARNING", "Circuit breaker re-opened during recovery: redis", "open"),
        ("INFO", "Circuit breaker entering half-open state: redis", "half-open"),
        ("INFO", "Circuit breaker closed (recovered): redis", "closed"),
    ]
    assert [getattr(r, "previous_state", None) for r in records] == [
        "closed", "open", "half-open", "open", "half-open",
    ]
    assert all(getattr(r, "breaker", None) == "redis" for r in records)
    opened = records[0]
    assert getattr(opened, "failure_count", None) == 2
    assert getattr(opened, "reset_timeout", None) == pytest.approx(0.1)


def test_logging_listener_uses_the_given_logger(caplog: pytest.LogCaptureFixture) -> None:
    """A LoggingListener built with a logger writes there instead of "redisguard"."""
    breaker = get_breaker("redis")
    for listener in [x for x in breaker.listeners if isinstance(x, LoggingListener)]:
        breaker.remove_listener(listener)
    breaker.add_listener(LoggingListener(logging.getLogger("myapp.redis")))
    caplog.set_level(logging.INFO)
    breaker.open()
    (record,) = [r for r in caplog.records if getattr(r, "category", "") == "circuit-breaker"]
    assert record.name == "myapp.redis"
    assert record.levelno == logging.ERROR


def test_listeners_see_refused_connections_as_failures() -> None:
    """The failure hook of a user listener receives the real redis error."""
    seen: list[BaseException] = []

    class Failures(pybreaker.CircuitBreakerListener):
        def failure(self, cb: pybreaker.CircuitBreaker, exc: BaseException) -> None:
            seen.append(exc)

    get_breaker("redis", BreakerConfig(failure_threshold=10)).add_listener(Failures())
    client = client_for(f"redis://127.0.0.1:{free_port()}/0")

    @redis_guarded(name="value.get", fallback=None, retry=None)
    def get() -> object:
        return client.get("k")

    assert get() is None
    (exc,) = seen
    assert isinstance(exc, redis.ConnectionError)


def test_before_call_hook_runs_for_guarded_calls(redis_server: RedisServer) -> None:
    """A user listener's pybreaker ``before_call`` hook runs for every guarded call."""
    calls: list[str] = []

    class BeforeCall(pybreaker.CircuitBreakerListener):
        def before_call(
            self, cb: pybreaker.CircuitBreaker, func: Any, *args: Any, **kwargs: Any
        ) -> None:
            calls.append(func.__name__)

    get_breaker("redis").add_listener(BeforeCall())
    client = client_for(redis_server.url)

    @redis_guarded(name="value.get", fallback=None)
    def read_value() -> object:
        return client.get("k")

    read_value()
    read_value()
    assert calls == ["read_value", "read_value"]
