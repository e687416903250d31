"""The write side of a breaker: its state machine and the guards' access (no server needed).

The errors below are redis-py's own classes, raised by the guarded function as redis-py would
raise them; tests against a real server are in ``test_sides_redis.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pybreaker
import pytest
from conftest import BreakerFactory, FakeClock
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from redis import exceptions as rx

import redisguard
from redisguard import Breaker, ConfigError, Failure, _sides, redis_guarded
from redisguard import _breaker as breaker_module
from redisguard._sides import WriteEvent, refusal_cause

OOM = "OOM command not allowed when used memory > 'maxmemory'."
MISCONF = "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist"


def oom() -> BaseException:
    return rx.OutOfMemoryError(OOM)


def readonly() -> BaseException:
    return rx.ReadOnlyError("You can't write against a read only replica.")


def misconf() -> BaseException:
    return rx.ResponseError(MISCONF)


class Server:
    """What the guarded functions meet: an error to raise (or None), and a call count."""

    def __init__(self) -> None:
        self.error: Callable[[], BaseException] | None = None
        self.calls = 0

    def __call__(self, *args: Any) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error()
        return "ok"


def guards(breaker: Breaker, server: Server) -> dict[str, Callable[[], Any]]:
    """One guard per access kind, each recording the Failure its fallback saw."""
    out: dict[str, Callable[[], Any]] = {}
    for access in ("read", "write", "delete", "both"):

        def fallback() -> Failure | None:
            return redisguard.current_failure()

        out[access] = redis_guarded(
            name=f"t.{access}", fallback=fallback, breaker=breaker, retry=None, access=access
        )(server)
    return out


def test_codes_match_the_breakers() -> None:
    """_sides keeps its own copy of the state and ticket codes: they must agree."""
    assert (_sides.CLOSED, _sides.HALF_OPEN, _sides.OPEN) == (
        breaker_module.CLOSED,
        breaker_module.HALF_OPEN,
        breaker_module.OPEN,
    )
    assert (_sides.NORMAL, _sides.REJECT) == (breaker_module.NORMAL, breaker_module.REJECT)
    assert _sides.STATES == breaker_module.STATE_NAMES


@pytest.mark.parametrize("bad", ["readonly", "READ", "", None, 1, "rw"])
def test_access_is_validated(bad: object) -> None:
    """An unknown access is a ConfigError that names the value."""
    with pytest.raises(ConfigError, match=repr(bad).replace("(", r"\(")) as info:
        redis_guarded(name="x", access=bad)  # type: ignore[call-overload]
    assert "access" in str(info.value)


def test_refusal_causes() -> None:
    """OOM, READONLY and MISCONF are recognised by class or reply code."""
    assert refusal_cause(oom()) == "OOM"
    assert refusal_cause(readonly()) == "READONLY"
    assert refusal_cause(misconf()) == "MISCONF"
    assert refusal_cause(rx.ResponseError("OOM command not allowed ... script: abc")) == "OOM"
    assert refusal_cause(None) == "manual"
    assert refusal_cause(ValueError("x")) == "ValueError"


def test_write_side_opens_after_the_threshold_and_reads_go_on(
    make_breaker: BreakerFactory,
) -> None:
    """failure_threshold refusals open the write side; the main side stays closed."""
    breaker = make_breaker(failure_threshold=3)
    server = Server()
    g = guards(breaker, server)
    server.error = oom
    for _ in range(2):
        failure = g["write"]()
        assert failure.kind is redisguard.ErrorKind.WRITE_REFUSED
        assert failure.side == "write"
        assert not failure.circuit_open
    assert breaker.write_state == "closed"
    g["both"]()
    assert breaker.write_state == "open"
    assert breaker.write_side.cause == "OOM"
    assert isinstance(breaker.write_side.opened_by, rx.OutOfMemoryError)
    assert breaker.write_side.opened_by.__traceback__ is None
    assert breaker.current_state == "closed"
    assert breaker.failure_total == 0
    server.error = None
    calls = server.calls
    for access in ("write", "both"):
        failure = g[access]()
        assert failure.circuit_open
        assert failure.side == "write"
        assert failure.exception is None
        assert failure.attempts == 0
    assert server.calls == calls  # no I/O
    assert g["read"]() == "ok"
    assert g["delete"]() == "ok"  # OOM spares deletes
    assert server.calls == calls + 2
    assert breaker.write_side.rejected_count == 2
    assert breaker.rejected_count == 0  # the main side's count is unchanged


def test_a_successful_write_restarts_the_run(make_breaker: BreakerFactory) -> None:
    """Refusals only open the write side when no write succeeded between them."""
    breaker = make_breaker(failure_threshold=2)
    server = Server()
    g = guards(breaker, server)
    for _ in range(5):
        server.error = oom
        g["write"]()
        server.error = None
        assert g["write"]() == "ok"
    assert breaker.write_state == "closed"
    # Reads and deletes that succeed in between prove nothing about writes.
    server.error = oom
    g["write"]()
    server.error = None
    g["read"]()
    g["delete"]()
    server.error = oom
    g["write"]()
    assert breaker.write_state == "open"


def test_refusals_older_than_the_window_drop_out(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """Only refusals inside monitoring_window count towards opening."""
    breaker = make_breaker(failure_threshold=2, monitoring_window=10)
    server = Server()
    g = guards(breaker, server)
    server.error = oom
    g["write"]()
    clock.advance(11)
    g["write"]()
    assert breaker.write_state == "closed"
    assert breaker.stats().write_refusal_count == 1
    g["write"]()
    assert breaker.write_state == "open"


@pytest.mark.parametrize("error", [readonly, misconf])
def test_readonly_and_misconf_block_deletes_too(
    make_breaker: BreakerFactory, error: Callable[[], BaseException]
) -> None:
    """A refusal that also refuses deletes blocks delete guards; reads still go on."""
    breaker = make_breaker(failure_threshold=1)
    server = Server()
    g = guards(breaker, server)
    server.error = error
    g["write"]()
    assert breaker.write_state == "open"
    assert breaker.write_side.cause in ("READONLY", "MISCONF")
    server.error = None
    calls = server.calls
    failure = g["delete"]()
    assert failure.circuit_open
    assert failure.side == "write"
    assert server.calls == calls
    assert g["read"]() == "ok"


def test_half_open_trials_close_or_reopen_it(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """After reset_timeout trial writes run; success_threshold successes close it; a refused
    trial re-opens it."""
    breaker = make_breaker(failure_threshold=1, reset_timeout=5, success_threshold=2)
    server = Server()
    g = guards(breaker, server)
    server.error = oom
    g["write"]()
    clock.advance(5)
    calls = server.calls
    g["write"]()  # a refused trial
    assert server.calls == calls + 1
    assert breaker.write_state == "open"
    assert g["write"]().circuit_open
    clock.advance(5)
    server.error = None
    assert g["write"]() == "ok"
    assert breaker.write_state == "half-open"
    assert g["both"]() == "ok"
    assert breaker.write_state == "closed"
    assert breaker.write_side.cause is None
    assert breaker.stats().write_refusal_count == 0


def test_half_open_admits_at_most_the_trial_slots(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """half_open_max_attempts write trials at once; a slot held too long starts a new round."""
    breaker = make_breaker(
        failure_threshold=1, reset_timeout=5, half_open_max_attempts=2, half_open_trial_timeout=3
    )
    gate = breaker.write_side.write_gate
    breaker.write_side.open(oom())
    clock.advance(5)
    first, second, third = gate._admit(), gate._admit(), gate._admit()
    assert first < -1
    assert second < -1
    assert third == breaker_module.REJECT
    assert breaker.write_state == "half-open"
    clock.advance(3)
    fresh = gate._admit()  # both slots held past the trial timeout: a new round
    assert fresh < -1
    assert fresh != first
    gate._on_success(first, False)  # a late outcome of the old round is ignored
    assert breaker.write_state == "half-open"
    gate._on_success(fresh, False)
    assert breaker.write_state == "closed"


def test_a_trial_that_fails_otherwise_frees_its_slot(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """A write trial cut by a connectivity error is the main side's business."""
    breaker = make_breaker(failure_threshold=2, reset_timeout=5, half_open_max_attempts=1)
    server = Server()
    g = guards(breaker, server)
    breaker.write_side.open(oom())
    clock.advance(5)
    server.error = lambda: rx.ConnectionError("Connection refused")
    g["write"]()
    assert breaker.write_state == "half-open"
    assert breaker.fail_counter == 1
    server.error = None
    assert g["write"]() == "ok"  # the slot was freed
    assert breaker.write_state == "closed"


def test_connectivity_opens_the_main_side_which_blocks_every_access(
    make_breaker: BreakerFactory,
) -> None:
    """Connection errors open the main side; reads, writes and deletes all fall back."""
    breaker = make_breaker(failure_threshold=2)
    server = Server()
    g = guards(breaker, server)
    server.error = lambda: rx.ConnectionError("Connection refused")
    g["read"]()
    g["write"]()
    assert breaker.current_state == "open"
    assert breaker.write_state == "closed"
    calls = server.calls
    for access in ("read", "write", "delete", "both"):
        failure = g[access]()
        assert failure.circuit_open
        assert failure.side == "main"
    assert server.calls == calls


def test_both_sides_open_rejects_on_the_main_side_first(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """With both sides open a write is answered by the main side; when the main side is back
    the write side still holds writes until its own trials."""
    breaker = make_breaker(failure_threshold=1, reset_timeout=5)
    server = Server()
    g = guards(breaker, server)
    breaker.write_side.open(oom())
    clock.advance(2)
    breaker.open()
    assert g["write"]().side == "main"
    breaker.close()
    assert g["write"]().side == "write"
    clock.advance(3)
    assert g["write"]() == "ok"
    assert breaker.write_state == "closed"


def test_write_trial_during_a_main_trial_is_a_main_trial_only(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """While both sides are half-open a write is one main trial; the write side waits."""
    breaker = make_breaker(failure_threshold=1, reset_timeout=5, half_open_max_attempts=1)
    server = Server()
    g = guards(breaker, server)
    breaker.write_side.open(oom())
    breaker.open()
    clock.advance(5)
    assert g["write"]() == "ok"
    assert breaker.current_state == "closed"
    assert breaker.write_state == "half-open"
    assert g["write"]() == "ok"
    assert breaker.write_state == "closed"


def test_read_guards_never_look_at_the_write_side(make_breaker: BreakerFactory) -> None:
    """A read guard holds the breaker itself; its refusals still tell the write side."""
    breaker = make_breaker(failure_threshold=1)
    server = Server()
    read = redis_guarded(name="r", fallback=None, breaker=breaker, access="read")(server)
    assert read.__redisguard__.side is breaker  # type: ignore[attr-defined]
    write = redis_guarded(name="w", fallback=None, breaker=breaker, access="write")(server)
    assert write.__redisguard__.side is breaker.write_side.write_gate  # type: ignore[attr-defined]
    server.error = misconf  # e.g. PING after a failed save
    assert read() is None
    assert breaker.write_state == "open"
    assert breaker.current_state == "closed"


def test_without_a_fallback_the_error_names_the_write_side(make_breaker: BreakerFactory) -> None:
    """A write guard with no fallback raises CircuitOpenError saying the write side is open."""
    breaker = make_breaker(failure_threshold=1)
    server = Server()
    write = redis_guarded(name="w", breaker=breaker, retry=None, access="write")(server)
    server.error = oom
    with pytest.raises(redisguard.RedisUnavailableError):
        write()
    with pytest.raises(redisguard.CircuitOpenError, match=r"write side .* is open \(OOM\)"):
        write()


def test_constant_fallback_is_given_without_io(make_breaker: BreakerFactory) -> None:
    """A plain-value fallback is answered by an open write side without calling anything."""
    breaker = make_breaker(failure_threshold=1)
    server = Server()
    write = redis_guarded(name="w", fallback="FB", breaker=breaker, access="write")(server)
    server.error = oom
    assert write() == "FB"
    server.error = None
    assert [write() for _ in range(3)] == ["FB"] * 3
    assert server.calls == 1


async def test_async_guards_share_the_write_side(make_breaker: BreakerFactory) -> None:
    """asyncio guards open, respect and close the same write side."""
    breaker = make_breaker(failure_threshold=2)
    server = Server()

    async def call() -> str:
        return server()

    write = redis_guarded(name="aw", fallback="FB", breaker=breaker, access="write")(call)
    delete = redis_guarded(name="ad", fallback="FB", breaker=breaker, access="delete")(call)
    server.error = oom
    assert [await write(), await write()] == ["FB", "FB"]
    assert breaker.write_state == "open"
    server.error = None
    assert await write() == "FB"
    assert await delete() == "ok"
    assert server.calls == 3


def test_listeners_and_logs_see_the_write_side(
    make_breaker: BreakerFactory, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """write_state_change reaches listeners that have it (with the cause) and is logged;
    pybreaker's state_change is not called for the write side."""
    events: list[WriteEvent] = []
    main_events: list[tuple[str, str]] = []

    class Listener(pybreaker.CircuitBreakerListener):
        def state_change(self, cb: Any, old: Any, new: Any) -> None:
            main_events.append((old.name, new.name))

        def write_state_change(self, cb: Any, event: WriteEvent) -> None:
            events.append(event)

    breaker = make_breaker(failure_threshold=1, reset_timeout=5)
    breaker.add_listener(Listener())
    breaker.add_listener(redisguard.LoggingListener())
    server = Server()
    g = guards(breaker, server)
    caplog.set_level(logging.INFO, logger="redisguard")
    server.error = readonly
    g["write"]()
    clock.advance(5)
    server.error = None
    g["write"]()
    assert [(e.old, e.new, e.cause) for e in events] == [
        ("closed", "open", "READONLY"),
        ("open", "half-open", "READONLY"),
        ("half-open", "closed", None),
    ]
    assert main_events == []
    opened = [r for r in caplog.records if "write side opened" in r.getMessage()]
    assert len(opened) == 1
    assert opened[0].levelno == logging.ERROR
    assert "(READONLY)" in opened[0].getMessage()
    assert opened[0].cause == "READONLY"  # type: ignore[attr-defined]
    assert any("write side closed" in r.getMessage() for r in caplog.records)


def test_stats_show_both_sides(make_breaker: BreakerFactory, clock: FakeClock) -> None:
    """stats() carries the write side's state, cause, counts and next retry."""
    breaker = make_breaker(failure_threshold=1, reset_timeout=5)
    server = Server()
    g = guards(breaker, server)
    assert breaker.stats().write_state == "closed"
    server.error = misconf
    g["write"]()
    g["write"]()
    stats = breaker.stats()
    assert stats.state == "closed"
    assert (stats.write_state, stats.write_cause) == ("open", "MISCONF")
    assert stats.write_rejected_count == 1
    assert stats.write_next_retry_time is not None
    body = stats.as_dict()
    assert body["write_state"] == "open"
    assert isinstance(body["write_next_retry_time"], str)
    breaker.reset()
    stats = breaker.stats()
    assert (stats.write_state, stats.write_rejected_count) == ("closed", 0)
    assert breaker.write_side.rejected_total == 1  # metrics' totals never go back


def test_manual_open_blocks_deletes(make_breaker: BreakerFactory) -> None:
    """write_side.open() without a cause blocks writes and deletes until closed."""
    breaker = make_breaker()
    server = Server()
    g = guards(breaker, server)
    breaker.write_side.open()
    assert breaker.write_side.cause == "manual"
    assert g["delete"]().circuit_open
    assert g["read"]() == "ok"
    breaker.write_side.close()
    assert g["delete"]() == "ok"
    assert server.calls == 2


def test_metrics_and_spans_show_the_write_side(
    make_breaker: BreakerFactory, clock: FakeClock
) -> None:
    """A second gauge and two counters carry the write side; the existing series are unchanged;
    a short-circuit span says which side answered."""
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    breaker = make_breaker("m", failure_threshold=1, reset_timeout=5)
    server = Server()
    write = redis_guarded(
        name="m.w",
        fallback="FB",
        breaker=breaker,
        access="write",
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )(server)

    def series() -> dict[str, dict[frozenset[Any], Any]]:
        out: dict[str, dict[frozenset[Any], Any]] = {}
        data = reader.get_metrics_data()
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    for point in metric.data.data_points:
                        key = frozenset((point.attributes or {}).items())
                        out.setdefault(metric.name, {})[key] = getattr(point, "value", None)
        return out

    name = frozenset({("name", "m")})
    try:
        server.error = oom
        write()
        write()
        got = series()
        assert got["circuit_breaker_state"][name] == 0
        assert got["circuit_breaker_write_state"][name] == 2
        assert got["circuit_breaker_write_refusals"][name] == 1
        assert got["circuit_breaker_write_rejections"][name] == 1
        assert got["circuit_breaker_rejections"][name] == 0
        assert got["circuit_breaker_failures"][name] == 0
        spans = [s for s in exporter.get_finished_spans() if s.attributes]
        short = [s for s in spans if (s.attributes or {}).get("redisguard.short_circuited")]
        assert short[-1].attributes is not None
        assert short[-1].attributes["redisguard.side"] == "write"
        assert short[-1].attributes["redisguard.circuit_state"] == "open"
        clock.advance(5)
        server.error = None
        write()
        assert series()["circuit_breaker_write_state"][name] == 0
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()
