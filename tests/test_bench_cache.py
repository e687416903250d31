"""Smoke test of benchmarks/bench_cache.py: structure and honest counting, never targets."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from _bench import load_benchmark

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script loaded as a module."""
    return load_benchmark("bench_cache.py")


@pytest.fixture(scope="module")
def report(bench: ModuleType) -> dict[str, Any]:
    """One tiny run of every scenario against private redis-servers (a few seconds)."""
    settings = bench.Settings(
        rounds=3, round_calls=50, latency_rounds=2, latency_calls=500, flight_rounds=2
    )
    result: dict[str, Any] = bench.run_benchmarks(settings)
    return result


def test_hit_scenarios_compare_against_the_raw_get(report: dict[str, Any]) -> None:
    """Each hit scenario has the raw baseline at 1.0 and a cost for the guard and the cache."""
    for mode in ("hit_sync", "hit_async"):
        rows = report[mode]
        assert list(rows) == [
            "raw GET + json.loads",
            "@redis_guarded GET + json.loads",
            "@cached hit",
        ]
        assert rows["raw GET + json.loads"]["cost_median"] == 1.0
        for row in rows.values():
            assert row["us_per_call"] > 0


def test_stale_path_measured_without_io(report: dict[str, Any]) -> None:
    """Both stale variants report quantiles (the run fails if a call reached the client)."""
    rows = report["stale"]
    assert set(rows) == {
        "guard alone, open circuit, constant fallback",
        "@cached stale answer from the L1",
    }
    for row in rows.values():
        assert 0 < row["p50_us"] <= row["p99_pooled_us"] <= row["p999_pooled_us"]


def test_single_flight_counts_one_call_and_one_set(report: dict[str, Any]) -> None:
    """Every single-flight round ran the function once and sent one SET (server-counted)."""
    rows = report["flight_async"] + report["flight_threads"]
    assert len(rows) == 4
    assert all(row == {"calls": 1, "sets": 1} for row in rows)
    assert report["targets"]["single_flight_1_call_1_set"] is True


def test_report_prints_every_scenario(bench: ModuleType, report: dict[str, Any]) -> None:
    """The text report names each scenario and states each target."""
    text = bench.format_report(report)
    for needle in ("@cached hit", "@cached stale answer", "64 tasks", "8 threads", "targets:"):
        assert needle in text
