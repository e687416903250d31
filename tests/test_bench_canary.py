"""Smoke test of benchmarks/bench_canary.py: a tiny run of both measurements."""

from __future__ import annotations

from types import ModuleType

import pytest
from _bench import load_benchmark

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script loaded as a module."""
    return load_benchmark("bench_canary.py")


def test_canary_rows_count_runs_and_latencies(bench: ModuleType) -> None:
    """Both modes report off/on rows; only the canary rows make canary runs."""
    settings = bench.Settings(rounds=2, calls=200, tasks=4, share=0.25)
    rows = bench.run_canary(settings)
    assert [(r.mode, r.canary) for r in rows] == [
        ("sync", 0.0),
        ("sync", 0.25),
        ("asyncio", 0.0),
        ("asyncio", 0.25),
    ]
    for row in rows:
        assert row.calls == 400
        assert 0 < row.p50_us <= row.p99_us
        if row.canary:
            assert 40 <= row.canary_runs + row.dropped <= 180  # 100 expected
        else:
            assert row.canary_runs == row.dropped == 0
    assert "p99 us" in bench.format_report(rows, [])


def test_overhead_in_this_process_and_in_a_tree(bench: ModuleType) -> None:
    """The overhead is measured in-process, or in a subprocess per source tree."""
    settings = bench.Settings(overhead_calls=2_000, overhead_repeats=2)
    here = bench.run_overhead([], settings, 1)
    assert {r.mode for r in here} == {"sync", "asyncio"}
    assert all(r.best_ns > 0 for r in here)
    tree = str(bench.__file__).rsplit("/benchmarks/", 1)[0]
    rows = bench.run_overhead([tree], settings, 1)
    assert [(r.tree, r.mode) for r in rows] == [(tree, "sync"), (tree, "asyncio")]
    assert all(len(r.samples) == 2 for r in rows)
