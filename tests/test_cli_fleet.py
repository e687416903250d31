"""``redisguard demo --workers N``: forked workers sharing one host-wide breaker, real Redis."""

from __future__ import annotations

import json

import pytest

from redisguard._cli import main
from redisguard.testing._binary import find_redis_server

pytestmark = [
    pytest.mark.timeout(90),
    # Python 3.12+ warns that forking a multi-threaded process may deadlock; the demo forks
    # its workers on purpose (as gunicorn does) and they only use their own state.
    pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning"),
]

WORKERS = 4
THRESHOLD = 3  # the demo's --failure-threshold default
FAST = ["--duration", "1.5", "--rate", "160"]


def test_fleet_demo_pause_json(capsys: pytest.CaptureFixture[str]) -> None:
    """Paused: every worker opens within two socket timeouts of the fault after at most the
    threshold plus one call per worker timed out; one round of trials closes them all."""
    assert main(["demo", "--workers", str(WORKERS), *FAST, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True, report["problems"]
    assert report["problems"] == []
    assert report["fault"] == "pause"
    assert report["shared"] is True
    assert report["workers"] == WORKERS
    assert len(report["host_segments"]) == 1  # one segment, shared by every worker
    assert None not in report["opened_s"]
    assert report["failed_before_all_open"] <= THRESHOLD + WORKERS
    assert report["all_open_s"] <= 2 * 0.2  # the demo's --socket-timeout default
    assert report["trials"] <= 3  # half_open_max_attempts
    assert None not in report["closed_s"]
    assert report["all_closed_at_end"] is True
    assert report["errors"] == []
    assert report["redis_server"]["path"] == find_redis_server().path


def test_fleet_demo_kill_prints_every_worker(capsys: pytest.CaptureFixture[str]) -> None:
    """Killed and restarted: the table has a row per worker, the host-wide counts and OK."""
    assert main(["demo", "--workers", "3", *FAST, "--fault", "kill"]) == 0
    out = capsys.readouterr().out
    assert "3 forked workers" in out
    assert f"; {find_redis_server().describe()})" in out
    assert "REDISGUARD_SHARED_BREAKERS=1" in out
    assert "Redis killed (SIGKILL)" in out
    assert "Redis restarted on the same port" in out
    lines = out.splitlines()
    header = lines.index("worker  pid      opened after fault  closed after heal  calls")
    rows = [line.split() for line in lines[header + 1 : header + 4]]
    assert [row[0] for row in rows] == ["0", "1", "2"]
    assert all(row[3] == "ms" and row[5] == "ms" for row in rows)  # opened and closed
    assert "breakers host-shared" in out
    assert "OK: the fleet tripped together" in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--url", "redis://127.0.0.1:1/0"], "drop --url"),
        (["--fault", "blackhole"], "pause or kill"),
        (["--workers", "65"], "at most 64"),
    ],
)
def test_fleet_demo_usage_errors(
    extra: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the fleet mode cannot do is a usage error (exit 2) that says why."""
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--workers", "2", *extra])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err


def test_fleet_demo_workers_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    """--workers 0 is refused by the argument parser."""
    with pytest.raises(SystemExit):
        main(["demo", "--workers", "0"])
    assert "must be positive" in capsys.readouterr().err
