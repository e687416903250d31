"""The fallback canary: a guard's fallback run beside sampled successes of a real Redis."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from redisguard import (
    Breaker,
    BreakerConfig,
    ConfigError,
    Failure,
    _canary,
    chaos,
    current_failure,
    redis_guarded,
)

pytestmark = pytest.mark.timeout(30)

PATIENT = BreakerConfig(failure_threshold=100, reset_timeout=60)


@pytest.fixture(autouse=True)
def _fresh_counts() -> Iterator[None]:
    _canary._clear_counts()
    chaos.kill()
    yield
    chaos.kill()


def results(operation: str) -> dict[str, int]:
    """The canary's counts for one operation, zeros left out."""
    return {r: n for (op, r), n in _canary.counts().items() if op == operation and n}


def wait_for(operation: str, total: int, timeout: float = 5.0) -> dict[str, int]:
    """Poll until ``total`` canary runs of ``operation`` were counted."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counted = results(operation)
        if sum(counted.values()) >= total:
            return counted
        time.sleep(0.005)
    raise AssertionError(f"only {results(operation)} canary runs of {operation}")


async def await_for(operation: str, total: int, timeout: float = 5.0) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counted = results(operation)
        if sum(counted.values()) >= total:
            return counted
        await asyncio.sleep(0.005)
    raise AssertionError(f"only {results(operation)} canary runs of {operation}")


# -- configuration -------------------------------------------------------------------------
def lookup(key: str) -> str:
    return key


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"canary": 1.5, "fallback": None}, r"canary=\.\.\.\) must be from 0 to 1"),
        ({"canary": -0.1, "fallback": None}, "must be from 0 to 1"),
        ({"canary": "1%", "fallback": None}, "must be a share from 0 to 1"),
        ({"canary": 0.01}, "needs a fallback to run"),
        ({"canary": 0.01, "fallback": lookup}, "pass canary_side_effect_free=True"),
    ],
)
def test_bad_canary_options_fail_at_decoration(kwargs: dict[str, Any], message: str) -> None:
    """Out of range, nothing to run, or a callable fallback not declared side-effect free."""
    with pytest.raises(ConfigError, match=message):
        redis_guarded(name="k.bad", **kwargs)


def test_canary_compare_must_be_callable() -> None:
    """A comparison that cannot be called is a TypeError at decoration."""
    with pytest.raises(TypeError, match="canary_compare must be callable"):
        redis_guarded(name="k.cmp", fallback=None, canary=0.1, canary_compare=3)  # type: ignore[call-overload]


# -- sync ----------------------------------------------------------------------------------
def test_a_matching_fallback_is_counted_and_the_result_is_untouched(
    seeded_client: redis.Redis,
) -> None:
    """The canary runs on the worker thread with the call's arguments; the caller gets
    Redis's answer."""
    seen: list[tuple[str, int, Failure | None]] = []

    def fallback(key: str) -> bytes:
        seen.append((key, threading.get_ident(), current_failure()))
        return b"stale"

    @redis_guarded(name="k.match", fallback=fallback, canary=1, canary_side_effect_free=True)
    def get(key: str) -> Any:
        return seeded_client.get(key)

    assert [get("k") for _ in range(5)] == [b"real"] * 5
    assert wait_for("k.match", 5) == {"match": 5}
    assert {key for key, _, _ in seen} == {"k"}
    assert threading.get_ident() not in {ident for _, ident, _ in seen}
    failure = seen[0][2]
    assert failure is not None
    assert failure.canary
    assert not failure.circuit_open


def test_a_mismatch_is_counted_and_logged_without_values(
    seeded_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A fallback of the wrong type is a mismatch, logged at WARNING by type only."""

    @redis_guarded(
        name="k.mismatch", fallback="secret-str", canary=1, breaker=Breaker("k.m", PATIENT)
    )
    def get(key: str) -> Any:
        return seeded_client.get(key)

    with caplog.at_level(logging.WARNING, logger="redisguard"):
        assert get("k") == b"real"
        assert wait_for("k.mismatch", 1) == {"mismatch": 1}
    (record,) = [r for r in caplog.records if getattr(r, "category", "") == "canary"]
    assert record.levelno == logging.WARNING
    assert "does not match" in record.getMessage()
    assert "(str)" in record.getMessage()
    assert "(bytes)" in record.getMessage()
    assert "secret" not in record.getMessage()
    assert "real" not in record.getMessage()


def test_a_raising_fallback_is_an_error(
    seeded_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A fallback that raises is counted as an error and logged with its traceback."""

    def broken(key: str) -> bytes:
        raise KeyError(key)

    @redis_guarded(name="k.raise", fallback=broken, canary=1, canary_side_effect_free=True)
    def get(key: str) -> Any:
        return seeded_client.get(key)

    with caplog.at_level(logging.WARNING, logger="redisguard"):
        assert get("k") == b"real"
        assert wait_for("k.raise", 1) == {"error": 1}
    (record,) = [r for r in caplog.records if getattr(r, "category", "") == "canary"]
    assert "the fallback raised KeyError" in record.getMessage()
    assert record.exc_info is not None


def test_a_custom_comparison(seeded_client: redis.Redis) -> None:
    """canary_compare(redis_result, fallback_result) decides; a raising one is an error."""

    def compare(result: Any, fallback_result: Any) -> bool:
        if fallback_result == "boom":
            raise ValueError("bad compare")
        return bool(result == fallback_result)

    answers = iter([b"real", b"stale", "boom"])

    @redis_guarded(
        name="k.custom",
        fallback=lambda key: next(answers),
        canary=1,
        canary_compare=compare,
        canary_side_effect_free=True,
    )
    def get(key: str) -> Any:
        return seeded_client.get(key)

    for _ in range(3):
        get("k")
    assert wait_for("k.custom", 3) == {"match": 1, "mismatch": 1, "error": 1}


def test_only_successes_are_sampled(seeded_client: redis.Redis) -> None:
    """When Redis fails (here: chaos) the real fallback answers and no canary runs."""

    @redis_guarded(
        name="k.fail", fallback=b"fb", canary=1, retry=None, breaker=Breaker("k.f", PATIENT)
    )
    def get(key: str) -> Any:
        return seeded_client.get(key)

    chaos.enable("op=k.fail,outage=30s")
    assert get("k") == b"fb"
    chaos.kill()
    assert get("k") == b"real"
    assert wait_for("k.fail", 1) == {"match": 1}
    time.sleep(0.05)
    assert results("k.fail") == {"match": 1}


def test_sampling_share(seeded_client: redis.Redis) -> None:
    """canary=0.1 runs the fallback for about a tenth of the successes."""

    @redis_guarded(name="k.share", fallback=b"fb", canary=0.1)
    def get(key: str) -> Any:
        return seeded_client.get(key)

    for _ in range(400):
        get("k")
    time.sleep(0.2)
    runs = sum(results("k.share").values())
    assert 15 <= runs <= 80  # 40 expected


def test_a_full_worker_drops_runs_and_never_blocks(seeded_client: redis.Redis) -> None:
    """With the worker stuck, the queue fills, further runs are dropped, callers never wait."""
    release = threading.Event()

    def stuck(key: str) -> bytes:
        release.wait(10)
        return b"fb"

    @redis_guarded(name="k.full", fallback=stuck, canary=1, canary_side_effect_free=True)
    def get(key: str) -> Any:
        return seeded_client.get(key)

    slowest = 0.0
    try:
        for _ in range(_canary.MAX_QUEUE + 50):
            started = time.perf_counter()
            assert get("k") == b"real"
            slowest = max(slowest, time.perf_counter() - started)
        assert results("k.full").get("dropped", 0) >= 40
    finally:
        release.set()
    assert slowest < 0.1
    wait_for("k.full", _canary.MAX_QUEUE + 50)


def test_metrics_export_canary_results(seeded_client: redis.Redis) -> None:
    """redisguard_canary_checks_total{operation,result} on the meter provider."""
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])

    @redis_guarded(name="k.metric", fallback=1, canary=1, meter_provider=meter_provider)
    def get(key: str) -> Any:
        return seeded_client.get(key)

    get("k")
    wait_for("k.metric", 1)
    data = reader.get_metrics_data()
    assert data is not None
    values = {
        tuple(sorted((p.attributes or {}).items())): p.value  # type: ignore[union-attr]
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "redisguard_canary_checks"
        for p in m.data.data_points
    }
    assert values[(("operation", "k.metric"), ("result", "mismatch"))] == 1
    meter_provider.shutdown()


# -- asyncio -------------------------------------------------------------------------------
async def test_async_fallback_runs_after_the_caller_has_its_result(
    seeded_aclient: redis.asyncio.Redis,
) -> None:
    """An async fallback runs in a task that starts after the guarded call returned, in a
    fresh context (the caller's current_failure/span do not leak in)."""
    order: list[str] = []

    async def fallback(key: str) -> bytes:
        order.append("fallback")
        failure = current_failure()
        assert failure is not None
        assert failure.canary
        return b"x"

    @redis_guarded(name="k.async", fallback=fallback, canary=1, canary_side_effect_free=True)
    async def get(key: str) -> Any:
        return await seeded_aclient.get(key)

    assert await get("k") == b"real"
    order.append("caller")
    assert await await_for("k.async", 1) == {"match": 1}
    assert order == ["caller", "fallback"]


async def test_async_guard_runs_a_sync_fallback_off_the_loop(
    seeded_aclient: redis.asyncio.Redis,
) -> None:
    """A sync fallback of an async guard runs on the worker thread, not on the event loop."""
    loop_thread = threading.get_ident()
    threads: list[int] = []

    def fallback(key: str) -> Any:
        threads.append(threading.get_ident())
        time.sleep(0.05)  # would stall the loop if it ran there
        return None

    @redis_guarded(name="k.async-sync", fallback=fallback, canary=1, canary_side_effect_free=True)
    async def get(key: str) -> Any:
        return await seeded_aclient.get(key)

    started = time.perf_counter()
    assert await get("k") == b"real"
    await asyncio.sleep(0)
    ticks = 0
    while time.perf_counter() - started < 0.04:
        await asyncio.sleep(0.001)
        ticks += 1
    assert ticks >= 10  # the loop kept turning while the fallback slept
    assert await await_for("k.async-sync", 1) == {"match": 1}
    assert threads
    assert loop_thread not in threads


async def test_a_sync_fallback_returning_a_coroutine_runs_it_on_the_loop(
    seeded_aclient: redis.asyncio.Redis,
) -> None:
    """As the guard awaits such a fallback's result, the canary runs it on the caller's loop."""
    loop_thread = threading.get_ident()
    ran_on: list[int] = []

    async def later(key: str) -> bytes:
        ran_on.append(threading.get_ident())
        return b"x"

    def plain(key: str) -> Any:
        return later(key)

    @redis_guarded(name="k.coro2", fallback=plain, canary=1, canary_side_effect_free=True)
    async def get2(key: str) -> Any:
        return await seeded_aclient.get(key)

    assert await get2("k") == b"real"
    assert await await_for("k.coro2", 1) == {"match": 1}
    assert ran_on == [loop_thread]


async def test_async_raising_fallback_and_task_cap(seeded_aclient: redis.asyncio.Redis) -> None:
    """Exceptions are counted; beyond MAX_TASKS runs in flight, runs are dropped."""
    gate = asyncio.Event()

    async def fallback(key: str) -> bytes:
        await gate.wait()
        raise RuntimeError("broken fallback")

    @redis_guarded(name="k.acap", fallback=fallback, canary=1, canary_side_effect_free=True)
    async def get(key: str) -> Any:
        return await seeded_aclient.get(key)

    for _ in range(_canary.MAX_TASKS + 10):
        assert await get("k") == b"real"
    assert results("k.acap") == {"dropped": 10}
    gate.set()
    assert await await_for("k.acap", _canary.MAX_TASKS + 10) == {
        "dropped": 10,
        "error": _canary.MAX_TASKS,
    }
