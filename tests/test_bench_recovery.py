"""Smoke tests of benchmarks/bench_recovery.py: structure only, never the recovery targets.

Timings on a shared 2-core machine are too noisy to assert here; tests/test_recovery.py
asserts recovery itself with generous bounds.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType

import pytest
from _bench import load_benchmark

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script loaded as a module."""
    return load_benchmark("bench_recovery.py")


def test_every_fault_and_mode_reports_a_recovery(bench: ModuleType) -> None:
    """A tiny run of kill and RST, sync and asyncio: every row has figures and a table line."""
    settings = bench.Settings(
        faults=("kill", "rst"), modes=("sync", "asyncio"), reps=1, outage=1.0, after=0.6,
        warmup=0.1,
    )
    rows = bench.run_benchmarks(settings)
    assert [(r.fault, r.mode) for r in rows] == [
        ("kill", "sync"), ("kill", "asyncio"), ("rst", "sync"), ("rst", "asyncio"),
    ]
    for row in rows:
        (rep,) = row.reps
        assert rep.first_success is not None, row.fault
        assert 0 <= rep.first_success < 1.0
        assert rep.raw_first_success is not None
        assert 0.0 <= rep.fallback_share <= 1.0
        assert rep.calls_first_second > 50
        assert row.met in (True, False)
    text = bench.format_report(rows, settings)
    for row in rows:
        assert f"| {row.fault} | {row.mode} |" in text


def test_quick_main_writes_json(bench: ModuleType, tmp_path: Path) -> None:
    """``--quick --faults pause --modes sync --json`` runs and writes its row."""
    out = tmp_path / "recovery.json"
    assert bench.main(["--quick", "--faults", "pause", "--modes", "sync", "--json", str(out)]) == 0
    written = json.loads(out.read_text(encoding="utf-8"))
    (row,) = written["rows"]
    assert (row["fault"], row["mode"]) == ("pause", "sync")
    assert row["p50_s"] is not None
    assert written["settings"]["reps"] == 1


def test_unknown_fault_is_refused(bench: ModuleType) -> None:
    """A fault name the script does not know is a usage error, not a silent empty run."""
    with pytest.raises(SystemExit):
        bench.main(["--faults", "meteor"])
