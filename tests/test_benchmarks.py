"""Smoke tests of benchmarks/bench_guard.py: structure only, never performance targets.

Timings on a shared 2-core machine are too noisy to assert; these tests check that every
registered variant produces figures, that the open-circuit scenarios never reach the network,
and that ``--json`` writes the SDK rows.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _bench import load_benchmark

OPEN_SCENARIOS = ("open-circuit", "open-circuit-sdk")


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script loaded as a module (its own scenario registry)."""
    return load_benchmark("bench_guard.py")


@pytest.fixture(scope="module")
def report(bench: ModuleType) -> dict[str, Any]:
    """One tiny run of every scenario against a private redis-server (a few seconds)."""
    settings = replace(
        bench.Settings.quick(),
        rounds=5,
        round_seconds=0.01,
        latency_rounds=2,
        latency_calls=400,
        min_rounds=2,
        threads=4,
        async_tasks=16,
        io_seconds=0.0002,
    )
    result: dict[str, Any] = bench.run_benchmarks(settings)
    return result


def test_every_registered_variant_has_figures(bench: ModuleType, report: dict[str, Any]) -> None:
    """Each scenario reports each of its registered variants, in registry order, with numbers."""
    scenarios = {sc["key"]: sc for sc in report["scenarios"]}
    assert list(scenarios) == list(bench.SCENARIOS)
    for key, scenario in bench.SCENARIOS.items():
        result = scenarios[key]
        assert [v["key"] for v in result["variants"]] == [v.key for v in scenario.variants]
        for v in result["variants"]:
            if result["kind"] == "throughput":
                assert v["ratio_median"] > 0, (key, v["key"])
                assert v["ops_per_s"] > 0, (key, v["key"])
            else:
                assert v["p50_ns"] > 0, (key, v["key"])
                assert v["p99_ns"] >= v["p50_ns"], (key, v["key"])
            if v["target"] is not None:
                assert v["met"] in (True, False), (key, v["key"])
        assert result["variants"][0]["ratio_median"] in (None, 1.0)


def test_sdk_rows_are_registered_and_compared(report: dict[str, Any]) -> None:
    """The SDK-configured rows exist with targets, and the span scenario compares p50s."""
    scenarios = {sc["key"]: sc for sc in report["scenarios"]}
    for key, target in (("sync-get", 0.93), ("async-64", 0.85)):
        rows = {v["key"]: v for v in scenarios[key]["variants"]}
        assert rows["guarded-sdk"]["target"] == target
        assert rows["naive-sdk"]["target"] is None
        assert rows["naive-sdk"]["reference"]
    spans = {v["key"]: v for v in scenarios["open-circuit-sdk"]["variants"]}
    assert list(spans) == ["span", "span-min", "guarded-value", "guarded-callable", "naive"]
    assert spans["span"]["p50_ratio"] == pytest.approx(1.0)
    assert all(v["p50_ratio"] > 0 for v in spans.values())
    assert spans["guarded-value"]["target"] == 1.2


def test_globals_stay_api_only(report: dict[str, Any]) -> None:
    """SDK rows use explicit providers, so the global OpenTelemetry providers stay untouched."""
    assert report["meta"]["opentelemetry"] == "API only (no SDK configured)"


def test_open_circuit_made_no_network_io(report: dict[str, Any]) -> None:
    """Every open-circuit variant that counts its entries reached the network zero times."""
    for scenario in report["scenarios"]:
        if scenario["key"] not in OPEN_SCENARIOS:
            continue
        counted = {v["key"]: v["network_calls"] for v in scenario["variants"]}
        assert counted["guarded-value"] == 0
        assert counted["guarded-callable"] == 0
        assert all(n in (None, 0) for n in counted.values()), counted


def test_network_check_fails_when_a_call_gets_through(bench: ModuleType) -> None:
    """The latency round raises when a call enters the guarded function while measuring."""

    class Leaky:
        entered = 0

        def get(self, key: str) -> None:
            self.entered += 1

    leaky = Leaky()
    round_ = bench._latency_round(leaky.get, leaky)
    with pytest.raises(AssertionError, match="reach the network"):
        round_(3)


def test_report_table_lists_every_row(report: dict[str, Any], bench: ModuleType) -> None:
    """The printed tables name every variant and say how the SDK rows are configured."""
    text = bench.format_report(report)
    assert "InMemorySpanExporter" in text
    for scenario in report["scenarios"]:
        assert scenario["title"] in text
        for v in scenario["variants"]:
            assert v["label"] in text


def test_json_output_has_sdk_rows(bench: ModuleType, tmp_path: Path) -> None:
    """``--json`` writes the SDK span scenario with its p50 ratios."""
    out = tmp_path / "bench.json"
    assert bench.main(["--quick", "--only", "open-circuit-sdk", "--json", str(out)]) == 0
    written = json.loads(out.read_text(encoding="utf-8"))
    (scenario,) = written["scenarios"]
    assert scenario["key"] == "open-circuit-sdk"
    assert {v["key"] for v in scenario["variants"]} >= {"span-min", "guarded-value"}
    assert all(v["p50_ratio"] is not None for v in scenario["variants"])


def test_breaker_presets_turn_every_policy_on(bench: ModuleType) -> None:
    """``--breaker all`` / ``all-time``: every policy on; later items override a preset."""
    from redisguard import BreakerConfig

    every = bench._breaker_fields("all")
    config = BreakerConfig(**every)
    assert config.failure_rate_threshold == 50
    assert config.slow_call_duration == 0.25
    assert config.sliding_window_size == 100
    assert config.max_concurrent_calls == 64
    assert config.retry_budget_ratio is not None  # the budget is on by default
    timed = bench._breaker_fields("all-time,slow_call_duration=0.01")
    assert "sliding_window_size" not in timed
    assert timed["slow_call_duration"] == 0.01
    assert timed["max_concurrent_calls"] == 64
