"""Smoke test of benchmarks/bench_brownout.py: structure and behaviour, never timing targets.

One small run of every scenario against the script's own private redis-server (about 30 s).
What is asserted is what the faults must do whatever the machine's speed: the slow-call
breaker opens under a brownout and a busy server while main's guard never does, and under
OOM raw redis-py callers see errors while guarded ones see none and keep reading from Redis.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _bench import load_benchmark


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script loaded as a module."""
    return load_benchmark("bench_brownout.py")


@pytest.fixture(scope="module")
def report(bench: ModuleType) -> dict[str, Any]:
    """One small run of every scenario.

    The fault lasts 3 s: a busy server answers a GET about every 51 ms, so the window's
    ``minimum_calls=20`` alone takes just over 1 s to fill; 1.2 s was too close on slow
    machines (CI saw the busy variant not trip in time).
    """
    settings = bench.Settings(rounds=1, baseline_seconds=0.2, fault_seconds=3.0, oom_threads=2)
    result: dict[str, Any] = bench.run_benchmarks(settings)
    return result


def _rows(report: dict[str, Any], key: str) -> dict[str, dict[str, Any]]:
    (scenario,) = [sc for sc in report["scenarios"] if sc["key"] == key]
    return {v["key"]: v for v in scenario["variants"]}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("scenario", ["brownout", "busy"])
def test_slow_call_breaking_opens_and_main_does_not(report: dict[str, Any], scenario: str) -> None:
    """Only the slow-call variant trips; once open most of its calls are fallbacks."""
    rows = _rows(report, scenario)
    assert list(rows) == ["raw", "before", "after"]
    assert rows["raw"]["trip_s"] is None
    assert rows["before"]["trip_s"] is None
    assert rows["before"]["fallback_share"] == 0
    assert rows["after"]["trip_s"] is not None
    assert rows["after"]["trip_s"] > 0
    assert rows["after"]["fallback_share"] > 0.5
    for row in rows.values():
        assert row["no_fault_ops_per_s"] > 0
        assert row["p99_ms"] is not None
        assert row["met"] in (True, False, None)
    assert rows["after"]["met"] in (True, False)


@pytest.mark.timeout(120)
def test_oom_guarded_callers_see_no_raw_errors_and_keep_reading(
    report: dict[str, Any],
) -> None:
    """Raw SETs raise OOM to callers; guarded ones fall back, and GETs are served by Redis."""
    rows = _rows(report, "oom")
    assert rows["raw"]["raw_errors"] == rows["raw"]["sets"] > 0
    for key in ("before", "after"):
        assert rows[key]["raw_errors"] == 0, key
        assert rows[key]["sets_fallback"] == rows[key]["sets"] > 0, key
        assert rows[key]["gets_served_share"] == 1.0, key
    # The write side opens: most refused SETs no longer reach Redis at all.
    assert rows["after"]["sets_reaching_redis"] < rows["after"]["sets"] / 2
    assert rows["before"]["sets_reaching_redis"] == rows["before"]["sets"]


def test_report_table_and_json(report: dict[str, Any], bench: ModuleType, tmp_path: Path) -> None:
    """The printed tables name every variant; the report is JSON-ready."""
    text = bench.format_report(report)
    for scenario in report["scenarios"]:
        assert scenario["title"] in text
        for v in scenario["variants"]:
            assert v["label"] in text
    out = tmp_path / "bench.json"
    out.write_text(json.dumps(report))
    assert json.loads(out.read_text())["meta"]["slow_calls"]["minimum_calls"] == 20


def test_unknown_scenario_is_refused(bench: ModuleType) -> None:
    """--only with a typo exits 2 before starting anything."""
    assert bench.main(["--only", "brownot"]) == 2
