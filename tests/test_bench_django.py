"""Smoke test of benchmarks/bench_django.py: it runs, and its rows say what happened."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from _bench import load_benchmark

pytest.importorskip("django_redis")
pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script loaded as a module."""
    return load_benchmark("bench_django.py")


@pytest.fixture(scope="module")
def report(bench: ModuleType) -> dict[str, Any]:
    """One tiny run against a private redis-server (a few seconds)."""
    result: dict[str, Any] = bench.run_benchmarks(
        bench.Settings(rounds=2, calls=50, open_calls=200, slow_calls=1)
    )
    return result


def test_healthy_rows_compare_every_backend_to_djangos(report: dict[str, Any]) -> None:
    """get and set each have a ratio per backend; the baseline's own ratio is exactly 1."""
    rows = report["healthy"]
    assert [row["operation"] for row in rows] == ["get", "set"]
    for row in rows:
        assert set(row["ratio"]) == {"builtin", "redisguard", "redisguard+stale", "django-redis"}
        assert row["ratio"]["builtin"] == 1.0
        assert all(ratio > 0 for ratio in row["ratio"].values())


def test_paused_rows_say_what_the_caller_saw(report: dict[str, Any]) -> None:
    """Once open, redisguard misses fast; the others pay the 250 ms socket timeout."""
    rows = {row["variant"]: row for row in report["paused"]}
    guarded, ignoring, builtin = rows["redisguard"], rows["django-redis"], rows["builtin"]
    assert guarded["outcome"] == "miss"
    assert guarded["calls"] == 200
    assert guarded["calls_until_open"] >= 1
    assert guarded["p50_ms"] < 5
    stale = rows["redisguard+stale"]
    assert stale["outcome"] == "hit (stale)"
    assert stale["p50_ms"] < 5
    assert ignoring["outcome"] == "miss"
    assert ignoring["p50_ms"] >= 240
    assert builtin["outcome"] == "raised TimeoutError"
    assert builtin["p50_ms"] >= 240
