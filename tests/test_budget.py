"""The retry budget shared by the guards on a breaker: the bucket, and guards on a real server."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from conftest import FakeClock
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from redis.backoff import NoBackoff
from redis.retry import Retry

from redisguard import (
    Breaker,
    BreakerConfig,
    ErrorKind,
    RetryPolicy,
    current_failure,
    redis_guarded,
)
from redisguard._budget import RESERVE_SECONDS, RetryBudget
from redisguard._tally import TallyGroup
from redisguard.testing import RedisServer, free_port

pytestmark = pytest.mark.timeout(30)

# Retries without waiting, so every retry a call is allowed happens at once.
FAST_RETRY = RetryPolicy(attempts=3, backoff=0, max_backoff=0, jitter=0, deadline=5.0)
NEVER_OPENS = 100_000  # failure_threshold: the budget alone limits the retries


# -- the bucket --------------------------------------------------------------------------------
def test_bucket_starts_with_the_floors_reserve_and_refills_per_second(clock: FakeClock) -> None:
    """A new budget holds ``min_per_second * RESERVE_SECONDS`` tokens and refills at the floor."""
    budget = RetryBudget(10.0, 5.0, TallyGroup(), clock)
    reserve = int(5.0 * RESERVE_SECONDS)
    assert [budget.withdraw() for _ in range(reserve + 1)] == [True] * reserve + [False]
    assert budget.denied_total == 1
    clock.advance(0.2)  # one token at 5 per second
    assert [budget.withdraw(), budget.withdraw()] == [True, False]
    clock.advance(3600)  # an idle hour still buys only the reserve
    assert budget.tokens == pytest.approx(reserve)


def test_successes_deposit_a_share_of_a_token_each(clock: FakeClock) -> None:
    """With no floor, 100 successes at 10% buy 10 retries (within the bucket's cap)."""
    successes = TallyGroup()
    tally = successes.new()
    budget = RetryBudget(10.0, 0.0, successes, clock)
    assert budget.withdraw() is False  # nothing earned yet
    tally.add(100)
    clock.advance(10.0)  # 10 successes per second: the cap is 1 token/s * RESERVE_SECONDS
    assert budget.tokens == pytest.approx(RESERVE_SECONDS * 10 * 0.1, rel=0.5)
    tally.add(1000)
    clock.advance(1.0)
    earned = budget.tokens
    assert 10 <= earned <= 100  # 10% of 1000, capped at a few seconds of the recent rate
    granted = 0
    while budget.withdraw():
        granted += 1
    assert granted == int(earned)


def test_a_tiny_floor_still_buys_a_retry(clock: FakeClock) -> None:
    """A floor below half a token per second still lets one retry through now and then."""
    budget = RetryBudget(0.0, 0.1, TallyGroup(), clock)  # a reserve of 0.2 tokens, rounded up
    assert [budget.withdraw(), budget.withdraw()] == [True, False]
    clock.advance(5.0)
    assert budget.withdraw() is False  # 0.5 tokens
    clock.advance(5.0)
    assert budget.withdraw() is True


def test_zero_ratio_and_floor_deny_every_retry(clock: FakeClock) -> None:
    """A budget of 0% and 0 per second allows no retry at all."""
    successes = TallyGroup()
    successes.new().add(1000)
    budget = RetryBudget(0.0, 0.0, successes, clock)
    clock.advance(5.0)
    assert budget.withdraw() is False


# -- guards on a breaker -----------------------------------------------------------------------
@pytest.fixture
def dead() -> Iterator[redis.Redis]:
    """A client for a port where nothing listens: every command is refused at once."""
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=Retry(NoBackoff(), 0))
    yield client
    client.close()


@pytest.fixture
def live(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A plain client for the live server, redis-py's retry off."""
    client = redis.Redis.from_url(redis_server.url, socket_timeout=1.0, retry=Retry(NoBackoff(), 0))
    yield client
    client.close()


def budget_breaker(clock: FakeClock, ratio: float | None, floor: float) -> Breaker:
    config = BreakerConfig(
        failure_threshold=NEVER_OPENS, retry_budget_ratio=ratio, retry_budget_min_per_second=floor
    )
    return Breaker("budget", config, clock=clock)


def failing_guard(breaker: Breaker, dead: redis.Redis, attempts: list[int]) -> Any:
    @redis_guarded(
        name="dead.get",
        breaker=breaker,
        retry=FAST_RETRY,
        fallback=current_failure,
    )
    def get() -> Any:
        attempts.append(1)
        return dead.get("k")

    return get


def test_spent_budget_sends_failing_calls_to_the_fallback_without_retrying(
    clock: FakeClock, dead: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """With 2 tokens: the first call retries twice, the next ones fall back after 1 attempt."""
    breaker = budget_breaker(clock, 10.0, 1.0)  # reserve: 1/s * 2 s = 2 tokens
    attempts: list[int] = []
    get = failing_guard(breaker, dead, attempts)
    first = get()
    assert (first.attempts, first.retry_denied) == (3, False)
    with caplog.at_level(logging.WARNING, logger="redisguard"):
        denied = [get() for _ in range(3)]
    assert [(f.attempts, f.retry_denied, f.kind) for f in denied] == [
        (1, True, ErrorKind.TRANSIENT)
    ] * 3
    assert all(f.circuit_open is False and f.exception is not None for f in denied)
    assert len(attempts) == 3 + 3
    assert breaker.stats().retries_denied_count == 3
    assert breaker.stats().state == "closed"
    denials = [r for r in caplog.records if getattr(r, "retry_denied", False)]
    assert len(denials) == 3
    assert "retry budget" in denials[0].getMessage()


def test_budget_refills_with_time(clock: FakeClock, dead: redis.Redis) -> None:
    """Once spent, the floor adds a token per second: one more retry after a second."""
    breaker = budget_breaker(clock, 10.0, 1.0)
    attempts: list[int] = []
    get = failing_guard(breaker, dead, attempts)
    get()
    assert get().retry_denied
    clock.advance(1.0)
    refilled = get()
    assert (refilled.attempts, refilled.retry_denied) == (2, True)  # one token, one retry


def test_successes_of_every_guard_on_the_breaker_fund_the_retries(
    clock: FakeClock, dead: redis.Redis, live: redis.Redis
) -> None:
    """Successes of a healthy guard deposit tokens that another guard on the breaker spends."""
    breaker = budget_breaker(clock, 10.0, 0.0)  # no floor: only successes buy retries
    attempts: list[int] = []
    get = failing_guard(breaker, dead, attempts)
    assert get().retry_denied  # nothing earned yet

    @redis_guarded(name="live.get", breaker=breaker)
    def healthy() -> Any:
        return live.get("k")

    for _ in range(200):
        healthy()
    clock.advance(10.0)  # 20 successes/s: 10% of them for RESERVE_SECONDS, just under 4 tokens
    funded = [get() for _ in range(3)]
    assert [(f.attempts, f.retry_denied) for f in funded] == [(3, False), (2, True), (1, True)]
    assert breaker.stats().retries_denied_count == 3


def test_budget_off_retries_every_failing_call(clock: FakeClock, dead: redis.Redis) -> None:
    """``retry_budget_ratio=None``: every call makes all its attempts, nothing is denied."""
    breaker = budget_breaker(clock, None, 0.0)
    attempts: list[int] = []
    get = failing_guard(breaker, dead, attempts)
    assert [get().attempts for _ in range(20)] == [3] * 20
    assert breaker._budget is None
    assert breaker.stats().retries_denied_count == 0


def test_the_success_path_leaves_the_budget_alone(clock: FakeClock, live: redis.Redis) -> None:
    """Successes cost the budget nothing: it is only read when a retry asks for a token."""
    breaker = budget_breaker(clock, 10.0, 10.0)
    budget = breaker._budget
    assert budget is not None
    before = (budget._seen, budget._at, budget._tokens)

    @redis_guarded(name="live.get", breaker=breaker)
    def healthy() -> Any:
        return live.get("k")

    for _ in range(50):
        healthy()
    assert (budget._seen, budget._at, budget._tokens) == before


def test_denied_retries_are_a_metric(clock: FakeClock, dead: redis.Redis) -> None:
    """``redis_retries_denied{breaker}`` counts the denials."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        breaker = budget_breaker(clock, 0.0, 0.0)

        @redis_guarded(
            name="dead.get", breaker=breaker, retry=FAST_RETRY, fallback=None,
            meter_provider=provider,
        )
        def get() -> Any:
            return dead.get("k")

        for _ in range(4):
            assert get() is None
        data = reader.get_metrics_data()
        points = {
            metric.name: point.value
            for rm in (data.resource_metrics if data else ())
            for sm in rm.scope_metrics
            for metric in sm.metrics
            for point in metric.data.data_points
            if dict(point.attributes or {}) == {"breaker": "budget"}
        }
    finally:
        provider.shutdown()
    assert points["redis_retries_denied"] == 4
    assert "redis_bulkhead_rejections" not in points  # no bulkhead on this breaker
