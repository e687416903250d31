"""Smoke test of benchmarks/bench_budget.py: structure and honest counting, never targets."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest
from _bench import load_benchmark

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script loaded as a module."""
    return load_benchmark("bench_budget.py")


@pytest.fixture(scope="module")
def report(bench: ModuleType) -> dict[str, Any]:
    """One tiny run of every kind of row against a private redis-server (a few seconds)."""
    settings = bench.Settings(
        warmup=0.2,
        outage=0.8,
        after=0.3,
        callers=(2,),
        async_callers=(2,),
        tolerant_callers=(2,),
    )
    result: dict[str, Any] = bench.run_benchmarks(settings)
    return result


def test_every_row_runs_budget_off_then_on(report: dict[str, Any]) -> None:
    """Each fault, mode and breaker profile has a budget-off row followed by a budget-on row."""
    rows = report["rows"]
    assert len(rows) == 2 * 3 * 2
    for off, on in zip(rows[::2], rows[1::2], strict=True):
        for key in ("fault", "mode", "profile", "callers"):
            assert off[key] == on[key]
        assert (off["budget"], on["budget"]) == (False, True)
    for row in rows:
        assert row["outage_calls"] > 0, row
        assert row["after_calls"] > 0, row


def test_retries_are_counted_as_attempts(report: dict[str, Any]) -> None:
    """Without a budget and with a breaker that stays closed, an outage's calls retry."""
    for row in report["rows"]:
        if row["profile"] == "tolerant" and not row["budget"]:
            assert row["outage_attempts"] >= 1.5 * row["outage_calls"], row
        if row["retries_denied"]:
            assert row["budget"], row


def test_table_names_every_row(bench: ModuleType, report: dict[str, Any]) -> None:
    """The printed table has a line per row."""
    text = bench.format_report(report)
    assert text.count("tolerant") >= 4
    assert "blackhole" in text
    assert "kill" in text
