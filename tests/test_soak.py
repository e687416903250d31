"""The chaos soak: its invariant checks, and one full bounded run against real faults.

The fast tests feed the engine's pieces hand-made records so each check is shown to fail
when it should. ``test_soak_holds_every_invariant`` is the soak itself (about 80 s, marked
``slow``; ``REDISGUARD_SOAK_SECONDS`` makes it longer).
"""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import logging
import math
import os
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from redisguard import BreakerConfig, CircuitOpenError, RetryPolicy
from redisguard.testing import SoakConfig, SoakResult, Timeline, plot_timeline, run_soak
from redisguard.testing._soak import (
    _ABSENT,
    FAULT_KINDS,
    OUTAGE_KINDS,
    REPORT_ENV,
    SECONDS_ENV,
    CallRecord,
    FaultWindow,
    Recorder,
    SecretScanner,
    SoakRow,
    Transition,
    _analyse,
    _cycle_problems,
    _Key,
    _Op,
    _root_cause,
    _WorkerPlan,
    capture_logs,
)


def _plan(problems: list[str]) -> tuple[_WorkerPlan, Recorder]:
    recorder = Recorder()
    plan = _WorkerPlan("sync-0", random.Random(1), SecretScanner(), recorder, 2, problems)
    return plan, recorder


# -- configuration ------------------------------------------------------------------------


def test_config_bounds_follow_the_settings() -> None:
    """The latency bound is deadline + connect + read timeout + slack; recovery uses the prober."""
    config = SoakConfig(
        seconds=1,
        retry=RetryPolicy(deadline=0.5),
        socket_timeout=0.25,
        socket_connect_timeout=0.2,
        slack=0.1,
        breaker=BreakerConfig(reset_timeout=30),
    )
    assert config.latency_bound == pytest.approx(1.05)
    # One probe interval (100 ms +10 % jitter) plus one PING in flight (0.45 s), however
    # long the breaker was open.
    assert config.recovery_bound(1.0) == pytest.approx(0.11 + 0.45 + 0.1)
    assert config.recovery_bound(100.0) == pytest.approx(0.11 + 0.45 + 0.1)
    # A short reset_timeout caps it (the breaker half-opens on its own).
    short = replace(config, breaker=BreakerConfig(reset_timeout=0.2))
    assert short.recovery_bound(1.0) == pytest.approx(0.2 + 0.1)
    without = SoakConfig(seconds=1, prober=False, slack=0.1, breaker=BreakerConfig(reset_timeout=2))
    assert without.recovery_bound(1.0) == pytest.approx(2.1)


def test_config_rejects_unknown_faults_and_sub_timeout_latency() -> None:
    """A typo in a fault kind, or a 'latency outage' shorter than the timeout, is refused."""
    with pytest.raises(ValueError, match="faults"):
        SoakConfig(seconds=1, faults=("kil",))
    with pytest.raises(ValueError, match="latency_ms"):
        SoakConfig(seconds=1, latency_ms=100, socket_timeout=0.25)


@pytest.mark.parametrize("brownout_ms", [0, 250, 400])
def test_config_rejects_a_brownout_that_is_an_outage(brownout_ms: float) -> None:
    """A 'brownout' at or above the socket timeout would time out: it is refused."""
    with pytest.raises(ValueError, match="brownout_ms"):
        SoakConfig(seconds=1, brownout_ms=brownout_ms, socket_timeout=0.25)


def test_a_slow_call_opening_is_bounded_by_reset_timeout() -> None:
    """The prober does not probe a breaker opened by slow calls: its bound is reset_timeout."""
    config = SoakConfig(seconds=1, slack=0.1, breaker=BreakerConfig(reset_timeout=5))
    assert config.recovery_bound(1.0) < 2
    assert config.recovery_bound(1.0, probed=False) == pytest.approx(5.1)


def test_seconds_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """REDISGUARD_SOAK_SECONDS sets the default length; garbage is an error, not 75 s."""
    monkeypatch.setenv(SECONDS_ENV, "240")
    assert SoakConfig().seconds == 240
    monkeypatch.setenv(SECONDS_ENV, "soon")
    with pytest.raises(ValueError, match=SECONDS_ENV):
        SoakConfig()


# -- secret scanning ---------------------------------------------------------------------


def test_scanner_finds_secrets_anywhere_and_reports_only_fingerprints() -> None:
    """A secret is found alone, inside a longer token and after other text; never echoed."""
    scanner = SecretScanner()
    secret = scanner.new("session id")
    scanner.scan("log", "nothing to see 0123456789abcdef")
    assert scanner.leaks == []
    scanner.scan("log", f"key=session:{secret}")
    scanner.scan("span", f"xx{secret}yyzz")
    assert [leak.source for leak in scanner.leaks] == ["log", "span"]
    assert all(secret not in leak.excerpt for leak in scanner.leaks)
    assert scanner.scanned == {"log": 2, "span": 1}


def test_log_capture_sees_extra_attributes_and_tracebacks() -> None:
    """Secrets in a record's extra fields or exception text count as leaks."""
    scanner = SecretScanner()
    secret, other = scanner.new("token"), scanner.new("password")
    with capture_logs(scanner):
        logging.getLogger("redisguard.test").debug("plain", extra={"token": secret})
        try:
            raise RuntimeError(f"boom {other}")
        except RuntimeError:
            logging.getLogger("elsewhere").exception("failed")
    assert sorted(leak.kind for leak in scanner.leaks) == ["password", "token"]


# -- the workload's bookkeeping -----------------------------------------------------------


def test_writes_track_acknowledged_and_reported_values() -> None:
    """An acked write replaces the key's value; a failed one is reported and only 'possible'."""
    problems: list[str] = []
    plan, recorder = _plan(problems)
    key = plan.sessions[0]
    plan.done(_Op("session.set", key, '{"n":1}'), 0.0, 0.001, None, None)
    failed = CircuitOpenError("open", operation="session.set", breaker="b", attempts=0)
    plan.done(_Op("session.set", key, '{"n":2}'), 0.1, 0.101, None, failed)
    assert key.acked == '{"n":1}'
    assert key.unacked == {'{"n":2}'}
    assert [c.outcome for c in recorder.calls] == ["ok", "unavailable"]
    assert recorder.calls[1].error == "CircuitOpenError"
    assert problems == []


def test_an_undocumented_exception_is_a_problem() -> None:
    """Anything but the typed redisguard errors escaping a store call fails the soak."""
    problems: list[str] = []
    plan, recorder = _plan(problems)
    plan.done(_Op("token.get", plan.tokens[0]), 0.0, 0.1, None, ConnectionError("raw"))
    assert recorder.calls[0].outcome == "error"
    assert len(problems) == 1
    assert "undocumented ConnectionError" in problems[0]


def test_reads_are_checked_against_what_the_key_may_hold() -> None:
    """A read of a value never written is a problem; 'not found' for a live session is a
    fallback, for a possibly absent one a miss."""
    problems: list[str] = []
    plan, recorder = _plan(problems)
    key = plan.sessions[0]
    plan.done(_Op("session.get", key), 0.0, 0.001, None, None)
    plan.done(_Op("session.set", key, '{"n":1}'), 0.0, 0.001, None, None)
    plan.done(_Op("session.get", key), 0.0, 0.001, None, None)
    plan.done(_Op("session.get", key), 0.0, 0.001, {"n": 1}, None)
    plan.done(_Op("session.get_strict", key), 0.0, 0.001, {"n": 7}, None)
    assert [c.outcome for c in recorder.calls] == ["miss", "ok", "fallback", "ok", "error"]
    assert len(problems) == 1
    assert "unexpected value" in problems[0]


def test_a_token_that_vanished_is_a_problem() -> None:
    """TokenStore.get never degrades to None, so None for a saved token is data loss."""
    problems: list[str] = []
    plan, _ = _plan(problems)
    key = plan.tokens[0]
    plan.done(_Op("token.save", key, "v"), 0.0, 0.001, None, None)
    plan.done(_Op("token.get", key), 0.0, 0.001, None, None)
    assert len(problems) == 1
    assert "read nothing" in problems[0]


def test_root_cause_walks_explicit_causes() -> None:
    """The innermost cause names what Redis or the network did."""
    inner = TimeoutError("read")
    outer = CircuitOpenError("x", operation="o", breaker="b", attempts=1)
    outer.__cause__ = inner
    inner.__context__ = asyncio.CancelledError()
    assert _root_cause(outer) == "TimeoutError"
    assert _root_cause(inner) == "TimeoutError"


# -- analysis -------------------------------------------------------------------------------


def _window(kind: str = "kill") -> FaultWindow:
    return FaultWindow(kind, 1, injected=1.0, healed=2.0, recovered=2.2)


def test_a_complete_breaker_cycle_passes() -> None:
    """closed -> open -> half-open -> closed inside the window, in bound, is no problem."""
    transitions = [
        Transition(1.1, "closed", "open"),
        Transition(2.1, "open", "half-open"),
        Transition(2.15, "half-open", "closed"),
    ]
    complete, problems = _cycle_problems(_window(), transitions, True, SoakConfig(seconds=1))
    assert complete
    assert problems == []


@pytest.mark.parametrize(
    ("transitions", "message"),
    [
        ([], "never opened"),
        ([Transition(1.1, "closed", "open")], "ended open"),
        (
            [Transition(1.1, "closed", "open"), Transition(2.1, "open", "closed")],
            "no closed -> open -> half-open -> closed",
        ),
    ],
)
def test_broken_breaker_cycles_are_reported(transitions: list[Transition], message: str) -> None:
    """An outage that never opens, stays open, or skips half-open fails the soak."""
    _, problems = _cycle_problems(_window(), transitions, True, SoakConfig(seconds=1))
    assert any(message in p for p in problems), problems


def test_slow_recovery_is_reported() -> None:
    """A first success later than the prober's bound after Redis returned fails the soak."""
    window = FaultWindow("pause", 1, injected=1.0, healed=2.0, recovered=9.0)
    transitions = [
        Transition(1.1, "closed", "open"),
        Transition(8.9, "open", "half-open"),
        Transition(8.95, "half-open", "closed"),
    ]
    _, problems = _cycle_problems(window, transitions, True, SoakConfig(seconds=1))
    assert any("after Redis returned" in p for p in problems), problems


def test_analysis_attributes_calls_and_flags_slow_ones() -> None:
    """Calls overlapping a fault count for it; one over the latency bound is a problem."""
    config = SoakConfig(seconds=1, faults=("kill",))
    recorder = Recorder()
    recorder.windows.append(FaultWindow("kill", 1, injected=1.0, healed=2.0))
    recorder.transitions += [
        Transition(1.1, "closed", "open"),
        Transition(2.05, "open", "half-open"),
        Transition(2.06, "half-open", "closed"),
    ]
    recorder.calls += [
        CallRecord(0.5, 0.001, "sync-0", "session.get", "ok"),
        CallRecord(0.99, 0.3, "sync-0", "session.set", "unavailable", "X", "Y", write=True),
        CallRecord(1.5, 5.0, "async-0", "token.get", "unavailable"),
        CallRecord(2.1, 0.001, "async-0", "token.get", "ok"),
    ]
    problems: list[str] = []
    rows = {row.kind: row for row in _analyse(config, recorder, problems)}
    assert rows["kill"].ops == 3
    assert rows["kill"].unavailable == 2
    assert rows["kill"].breaker_cycles == 1
    assert rows["kill"].recovery_ms_max == pytest.approx(101, abs=1)
    assert rows["none"].ops == 1
    assert len(problems) == 1
    assert "took 5000 ms" in problems[0]


def test_oom_recovery_is_the_first_acknowledged_write() -> None:
    """Reads never stopped during OOM: its recovery waits for a write, and none is a problem."""
    config = SoakConfig(seconds=1, faults=("oom",))
    recorder = Recorder()
    recorder.windows.append(FaultWindow("oom", 1, injected=1.0, healed=2.0))
    recorder.calls += [
        CallRecord(1.5, 0.001, "sync-0", "session.set", "unavailable", "E", "OOM", write=True),
        CallRecord(2.01, 0.001, "sync-0", "session.get", "ok"),
        CallRecord(2.3, 0.001, "sync-0", "token.save", "ok", write=True),
    ]
    recorder.write_transitions += [
        Transition(1.2, "closed", "open"),
        Transition(2.25, "open", "half-open"),
        Transition(2.3, "half-open", "closed"),
    ]
    problems: list[str] = []
    rows = {row.kind: row for row in _analyse(config, recorder, problems)}
    assert problems == []
    assert rows["oom"].recovery_ms_max == pytest.approx(301, abs=1)
    assert rows["oom"].breaker_cycles == 1  # the write side's
    recorder.calls.pop()  # no value was stored after the heal (a delete does not count)
    recorder.calls.append(CallRecord(2.3, 0.001, "sync-0", "token.revoke", "ok", write=True))
    problems = []
    _analyse(config, recorder, problems)
    assert "oom #1: no store succeeded after it healed" in problems


def test_oom_must_cycle_the_write_side_and_not_the_main_side() -> None:
    """During OOM the write side must open and close; the main side opening is a problem."""
    config = SoakConfig(seconds=1, faults=("oom",))
    recorder = Recorder()
    recorder.windows.append(FaultWindow("oom", 1, injected=1.0, healed=2.0))
    recorder.calls.append(CallRecord(2.3, 0.001, "sync-0", "session.set", "ok", write=True))
    recorder.transitions += [
        Transition(1.1, "closed", "open"),
        Transition(2.1, "open", "half-open"),
        Transition(2.2, "half-open", "closed"),
    ]
    problems: list[str] = []
    _analyse(config, recorder, problems)
    assert "oom #1: the breaker's main side opened" in problems
    assert "oom #1: the write side never opened during the outage" in problems
    recorder.write_transitions.append(Transition(1.2, "closed", "open"))
    problems = []
    _analyse(config, recorder, problems)
    assert "the run ended with the write side open" in problems


def test_result_table_and_data() -> None:
    """The table has one line per row and the JSON form round-trips."""
    row = SoakRow("kill", 2, 10, 5, 1, 4, 0, 1.5, 2.5, 300, 400, 2, {"ConnectionError": 3})
    result = SoakResult(
        config=SoakConfig(seconds=1),
        rows=[row],
        problems=[],
        leaks=[],
        calls=[],
        transitions=[],
        windows=[],
        duration=1.0,
        scanned={"log": 3},
        keys_checked=4,
        unacked_landed=0,
    )
    table = result.table().splitlines()
    assert len(table) == 3
    assert table[2] == "| kill | 2 | 10 | 1 | 4 | 0 | 1.5 | 2.5 | 300 / 400 | 2 |"
    assert json.loads(json.dumps(result.as_dict()))["rows"][0]["causes"] == {"ConnectionError": 3}
    assert result.ok
    assert "ConnectionError 3" in result.causes()


def test_verifier_flags_a_lost_acknowledged_write() -> None:
    """A key holding neither its last acked value nor a reported-failed one is a loss."""
    from redisguard.testing._soak import _Soak

    soak = _Soak.__new__(_Soak)
    soak.problems = []
    plan, _ = _plan([])
    key = _Key("k", acked='{"n":2}', unacked={'{"n":3}'})
    assert soak._judge("session", plan, key, '{"n":3}') is True
    assert soak._judge("session", plan, key, '{"n":2}') is False
    assert soak.problems == []
    soak._judge("session", plan, key, '{"n":1}')
    soak._judge("session", plan, key, _ABSENT)
    assert len(soak.problems) == 2
    assert all("lost acknowledged write" in p for p in soak.problems)


# -- the soak ---------------------------------------------------------------------------------


def _check(result: SoakResult, config: SoakConfig) -> None:
    assert result.problems == []
    assert result.leaks == []
    rows = {row.kind: row for row in result.rows}
    for kind in config.faults:
        row = rows[kind]
        assert row.faults >= 1, kind
        # Each fault bit: callers saw failures, and the documented degradation answered.
        assert row.unavailable > 0, kind
        if kind in OUTAGE_KINDS:
            assert row.breaker_cycles == row.faults, kind
            assert row.max_ms <= config.latency_bound * 1000, kind
    assert rows["none"].errors == 0
    assert result.keys_checked == (config.sync_workers + config.async_workers) * (
        2 * config.keys_per_worker
    )
    # Everything that could carry a secret was looked at.
    for source in ("log", "span", "readiness body", "error message"):
        assert result.scanned.get(source, 0) > 0, source


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.requires_redis(7, 0, reason="the loading fault: loading-process-events-interval-bytes")
def test_soak_holds_every_invariant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under repeated faults of every kind, nothing escapes, is lost, leaks or stays broken.

    Bounds (from the configuration, see redisguard.testing._soak): each call
    <= deadline 0.5 s + connect 0.25 s + read 0.25 s + slack 0.35 s = 1.35 s; after Redis
    returns a call succeeds within min(10 s, time open + 0.1 s) + 0.5 s + 0.35 s.
    """
    report = tmp_path / "soak.md"
    if not os.environ.get(REPORT_ENV):
        monkeypatch.setenv(REPORT_ENV, str(report))
    else:
        report = Path(os.environ[REPORT_ENV])
    config = SoakConfig()
    out = io.StringIO()
    result = run_soak(config, out=out)
    print(out.getvalue())
    _check(result, config)
    rows = {row.kind: row for row in result.rows}
    # Repeatedly: every kind at least twice in the default 75 s.
    assert all(rows[kind].faults >= 2 for kind in FAULT_KINDS)
    # The faults produced what they claim to.
    assert "BusyLoadingError" in rows["loading"].causes
    assert "ConnectionError" in rows["kill"].causes
    for kind in ("pause", "blackhole", "latency"):
        assert "TimeoutError" in rows[kind].causes, kind
    assert "OutOfMemoryError" in rows["oom"].causes
    assert rows["brownout"].breaker_cycles == rows["brownout"].faults  # slow-call breaking
    assert report.read_text().startswith("| fault |")
    assert not math.isnan(rows["kill"].recovery_ms_max)


@pytest.mark.timeout(120)
def test_brownout_and_oom_soak() -> None:
    """A short soak of the two non-outage faults: nothing lost or unreported, the slow-call
    breaker cycles through each brownout, reads go on and writes come back after OOM."""
    base = SoakConfig(seconds=1)
    config = SoakConfig(
        seconds=1,
        faults=("brownout", "oom"),
        breaker=replace(base.breaker, reset_timeout=1.5),
        seed=3,
    )
    result = run_soak(config, out=None)
    _check(result, config)
    rows = {row.kind: row for row in result.rows}
    assert rows["brownout"].breaker_cycles == rows["brownout"].faults
    assert rows["brownout"].max_ms < config.latency_bound * 1000
    assert "OutOfMemoryError" in rows["oom"].causes
    # The write side cycled (the analysis checks that the main side never opened).
    assert rows["oom"].breaker_cycles == rows["oom"].faults
    assert [t for t in result.write_transitions if t.new == "open"]
    assert not math.isnan(rows["oom"].recovery_ms_max)
    reads = [c for c in result.calls if not c.write and _in(result, c, "oom")]
    assert reads
    assert all(c.outcome in ("ok", "miss") for c in reads)  # every read served by Redis


def _in(result: SoakResult, call: CallRecord, kind: str) -> bool:
    return any(
        w.kind == kind and w.injected <= call.start and call.end <= w.healed for w in result.windows
    )


# -- the timeline chart -------------------------------------------------------------------

_TIMELINE = Timeline(
    calls=[(0.1, 0.0004, "ok"), (1.2, 0.25, "unavailable"), (1.3, 0.00002, "fallback")]
    + [(2.1 + i / 100, 0.0005, "ok") for i in range(20)],
    states=[(0.0, "closed"), (1.2, "open"), (2.0, "half-open"), (2.05, "closed")],
    outages=[(1.0, 2.0, "kill")],
    end=3.0,
    title="test",
)


def test_plot_timeline_writes_svg_and_png(tmp_path: Path) -> None:
    """The chart is a real SVG document or PNG image, chosen by the file suffix."""
    pytest.importorskip("matplotlib")
    svg = plot_timeline(_TIMELINE, tmp_path / "run.svg")
    text = svg.read_text()
    assert text.lstrip().startswith("<?xml")
    assert "<svg" in text
    assert "kill" in text  # the outage label
    png = plot_timeline(_TIMELINE, tmp_path / "run.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_plot_timeline_accepts_a_soak_result(tmp_path: Path) -> None:
    """Anything with a timeline() method (a SoakResult) can be drawn directly."""
    pytest.importorskip("matplotlib")

    class Result:
        def timeline(self) -> Timeline:
            return _TIMELINE

    assert plot_timeline(Result(), tmp_path / "r.svg").stat().st_size > 1000


def test_plot_timeline_rejects_other_formats(tmp_path: Path) -> None:
    """Only .svg and .png are written; the check happens before matplotlib is needed."""
    with pytest.raises(ValueError, match=r"\.svg or \.png"):
        plot_timeline(_TIMELINE, tmp_path / "chart.pdf")


def test_plot_timeline_without_matplotlib_names_the_extra(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without matplotlib the error says which extra to install."""
    real = importlib.import_module

    def fake(name: str, package: str | None = None) -> Any:
        if name.startswith("matplotlib"):
            raise ImportError(f"No module named {name!r}")
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", fake)
    with pytest.raises(ImportError, match=r"redisguard\[plot\]"):
        plot_timeline(_TIMELINE, tmp_path / "chart.svg")
