"""Smoke tests of benchmarks/bench_fleet.py: its structure, and issue 10's claims with margins.

The before column (one breaker per process) is asserted only where it holds on any machine
speed: every worker must see its own ``failure_threshold`` failures and send its own trial.
The after column (``REDISGUARD_SHARED_BREAKERS=1``) is asserted with margins over the targets.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _bench import load_benchmark

from redisguard import BreakerConfig

pytestmark = [
    pytest.mark.timeout(120),
    # Python 3.12+ warns that forking a multi-threaded process may deadlock; the workers are
    # forked by multiprocessing on purpose (as gunicorn does) and only use their own state.
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
]

WORKERS = 6
CONFIG = BreakerConfig()


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    """The benchmark script loaded as a module."""
    return load_benchmark("bench_fleet.py")


@pytest.fixture(scope="module")
def report(bench: ModuleType) -> dict[str, Any]:
    """One small pause run, before and after (about 10 s)."""
    settings = bench.Settings(
        faults=("pause",), reps=1, workers=WORKERS, rate=50.0, warmup=0.3, outage=2.0, after=1.0
    )
    result: dict[str, Any] = bench.run_benchmarks(settings)
    return result


def test_report_structure(bench: ModuleType, report: dict[str, Any]) -> None:
    """One row per fault, both columns, every target judged, a table line per figure."""
    (row,) = report["rows"]
    assert row["fault"] == "pause"
    assert set(row["runs"]) == {"before", "after"}
    for mode in ("before", "after"):
        (run,) = row["runs"][mode]
        assert run["workers"] == WORKERS
        assert run["calls"] > WORKERS * 50  # 50 GET/s for > 3 s, less the timed-out time
        assert run["errors"] == []
        assert 0.2 < run["failed_call_s"] < 1.0  # a socket timeout (250 ms) each
    assert set(row["targets"]) == {
        "failed_before_all_open",
        "all_open_s",
        "trials",
        "all_closed_s",
        "shared",
        "recovered",
    }
    text = bench.format_report(report)
    assert "| pause | failed calls before every worker is open |" in text
    assert "| pause | trial calls after the heal (host-wide) |" in text
    json.dumps(report)  # JSON-ready


def test_before_every_worker_trips_and_probes_alone(report: dict[str, Any]) -> None:
    """Per process: each worker needs its own threshold of timeouts and its own trial call."""
    (run,) = report["rows"][0]["runs"]["before"]
    assert run["shared"] is False
    assert run["host_segments"] == []
    assert None not in run["opened_s"]
    assert run["failed_before_all_open"] >= CONFIG.failure_threshold * WORKERS
    assert run["all_open_s"] >= CONFIG.failure_threshold * 0.25  # 5 sequential timeouts
    assert run["trials"] >= WORKERS
    assert run["all_closed_at_end"] is True


def test_after_the_fleet_trips_and_recovers_together(report: dict[str, Any]) -> None:
    """Host-shared: the host opens after the threshold (+ one call in flight per worker),
    within about two socket timeouts, and recovers with at most one round of trials."""
    row = report["rows"][0]
    (run,) = row["runs"]["after"]
    assert run["shared"] is True
    (segment,) = run["host_segments"]  # every worker attached to the same segment
    assert not segment.startswith("/dev/shm/")  # REDISGUARD_SHARED_DIR was honoured
    assert None not in run["opened_s"]
    assert run["failed_before_all_open"] <= CONFIG.failure_threshold + WORKERS + 2
    assert run["all_open_s"] <= 4 * 0.25
    assert run["trials"] <= CONFIG.half_open_max_attempts
    assert run["all_closed_at_end"] is True
    assert run["all_closed_s"] is not None
    assert run["all_closed_s"] < 1.0


def test_quick_main_writes_json(bench: ModuleType, tmp_path: Path) -> None:
    """``--quick --faults kill --workers 2 --json`` runs both columns and writes them."""
    out = tmp_path / "fleet.json"
    assert bench.main(["--quick", "--faults", "kill", "--workers", "2", "--json", str(out)]) == 0
    written = json.loads(out.read_text(encoding="utf-8"))
    (row,) = written["rows"]
    assert row["fault"] == "kill"
    assert written["settings"]["workers"] == 2
    for mode in ("before", "after"):
        (run,) = row["runs"][mode]
        assert run["all_closed_at_end"] is True
        assert run["errors"] == []


def test_bad_arguments_are_refused(bench: ModuleType) -> None:
    """An unknown fault or a non-positive count is a usage error, not a silent empty run."""
    with pytest.raises(SystemExit):
        bench.main(["--faults", "meteor"])
    with pytest.raises(SystemExit):
        bench.main(["--workers", "0"])
