"""``redisguard demo --workload cache``: the stale path shown against a real redis-server."""

from __future__ import annotations

import json

import pytest

from redisguard._cli import main
from redisguard._demo import DemoError, DemoOptions

FAST = ["--duration", "0.6", "--reset-timeout", "0.3", "--socket-timeout", "0.1", "--rate", "150"]


def test_cache_workload_serves_stale_while_killed(capsys: pytest.CaptureFixture[str]) -> None:
    """Killed Redis: the L1 answers (stale, with its age), then Redis serves again."""
    assert main(["demo", *FAST, "--workload", "cache", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["config"]["workload"] == "cache"
    phases = {p["name"]: p for p in report["phases"]}
    assert phases["healthy"]["fallbacks"] == 0
    assert phases["healthy"]["successes"] == phases["healthy"]["calls"] > 0
    assert phases["outage (kill)"]["fallbacks"] > 0
    assert phases["outage (kill)"]["short_circuited"] > 0
    assert phases["recovery (kill)"]["recovery_s"] is not None
    assert phases["healthy again"]["fallbacks"] == 0
    assert all(p["errors"] == 0 for p in report["phases"])
    texts = [e["text"] for e in report["events"]]
    assert any(t.startswith("stale answer from the L1: p") for t in texts)
    summary = next(t for t in texts if t.startswith("cache: "))
    served = int(summary.split()[1])
    assert served > 0


def test_unknown_workload_is_refused() -> None:
    """An unknown workload is a usage error before anything starts."""
    with pytest.raises(DemoError, match="unknown workload 'queue'") as exc:
        DemoOptions(workload="queue").validate()
    assert exc.value.exit_code == 2


def test_workers_refuse_the_cache_workload(capsys: pytest.CaptureFixture[str]) -> None:
    """--workers runs the session workload only, and says so."""
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--workers", "2", "--workload", "cache"])
    assert exc.value.code == 2
    assert "drop --workload" in capsys.readouterr().err
