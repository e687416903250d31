"""One host, many workers: per-process breakers (before) against host-shared ones (after).

Issue 10's scenario. ``--workers`` (8) processes forked by :mod:`multiprocessing` each make a
guarded ``GET`` ``--rate`` (100) times a second against a private ``redis-server``: a
:func:`redisguard.connect` client (250 ms socket timeout, its recovery prober on) and
``@redis_guarded(name=..., fallback=...)`` on the breaker ``"fleet"``, which each worker
creates without a config, so it reads the environment. Redis is then paused (SIGSTOP) or
killed (SIGKILL, restarted on the same port) for ``--outage`` seconds (5), and the workers
keep calling for a while after the heal (:mod:`redisguard._demo_fleet` runs the workers).

The only difference between the two columns is the workers' environment:

* **before**: ``REDISGUARD_SHARED_BREAKERS=0``: one breaker per process (the default);
* **after**: ``REDISGUARD_SHARED_BREAKERS=1``: one host-wide breaker, no code change.

Every run gets its own ``REDISGUARD_SHARED_DIR`` (a fresh temporary directory), so no two
runs, and no run and anything else on the host, share a segment.

Every call records its start, duration, outcome (served / fallback after a failed call /
fallback because the breaker rejected it) and the worker's breaker state just before and
after it. Reported, per fault and column (median over ``--reps`` [min-max]):

* **failed calls before every worker is open**: calls across the host that reached Redis
  and failed (timed out when paused, refused when killed) between the fault and the moment
  the last worker saw its breaker open. Target (after): <= failure_threshold + workers (one
  call in flight per worker when the host-wide breaker opens).
* **fault -> every worker open**: until the breaker state of every worker was open (each
  worker samples it every 2 ms in a watcher thread), so that every new call is rejected.
  Target (after): <= 2 socket timeouts (0.5 s). Shown below it: when the last call admitted
  before that moment ended (it still waits out its socket timeout).
* **trial calls after the heal**: calls that reached Redis while their worker's breaker was
  not closed. Target (after): <= half_open_max_attempts (3) host-wide.
* **heal -> every worker closed**. Target (after): no worse than before (medians, with
  50 ms of slack for scheduling noise on a shared machine).

Recovery: the breakers keep the default ``reset_timeout`` (30 s), longer than the run, so
every recovery here is the prober's: it PINGs every 100 ms while the breaker is open and
half-opens it when Redis answers. That is the mechanism a deployment relies on, it recovers
within one probe interval (a short ``reset_timeout`` would instead send a timed-out trial
call into the outage every period, from every worker in the before column), and with
host-shared breakers one prober per host is elected, so the trial calls measure the
host-wide half-open limit and nothing else.

Run::

    python benchmarks/bench_fleet.py              # 3 reps x pause, kill x before, after: ~2 min
    python benchmarks/bench_fleet.py --quick      # 1 rep, 2 s outage: ~25 s
    python benchmarks/bench_fleet.py --json out.json --faults pause --reps 5
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import redis
from _common import exit_status, no_redis_server, only_critical, write_json

import redisguard
from redisguard import BreakerConfig
from redisguard._demo_fleet import FLEET_FAULTS, FleetOptions, FleetRun, run_fleet
from redisguard.testing import RedisServer

__all__ = ["MODES", "Settings", "format_report", "main", "run_benchmarks"]

MODES = ("before", "after")  # REDISGUARD_SHARED_BREAKERS=0, =1
CLOSE_SLACK_S = 0.05


@dataclass(frozen=True)
class Settings:
    """How many workers, how fast, how long."""

    faults: tuple[str, ...] = FLEET_FAULTS
    reps: int = 3
    workers: int = 8
    rate: float = 100.0
    socket_timeout: float = 0.25
    warmup: float = 0.5
    outage: float = 5.0
    after: float = 2.0

    @classmethod
    def quick(cls) -> Settings:
        """One repetition, a 2 s outage: a smoke run (the before column still opens)."""
        return cls(reps=1, outage=2.0, after=1.0, warmup=0.3)

    def options(self, fault: str, mode: str) -> FleetOptions:
        return FleetOptions(
            workers=self.workers,
            rate=self.rate,
            fault=fault,
            shared=mode == "after",
            socket_timeout=self.socket_timeout,
            warmup=self.warmup,
            outage=self.outage,
            after=self.after,
        )


def _spread(values: Sequence[float | int | None]) -> dict[str, float | None]:
    known = [v for v in values if v is not None]
    if not known:
        return {"median": None, "min": None, "max": None, "missing": len(values)}
    return {
        "median": statistics.median(known),
        "min": min(known),
        "max": max(known),
        "missing": len(values) - len(known),
    }


def _summary(runs: list[FleetRun]) -> dict[str, Any]:
    return {
        "failed_before_all_open": _spread([r.failed_before_all_open for r in runs]),
        "all_open_s": _spread([r.all_open_s for r in runs]),
        "all_observed_open_s": _spread([r.all_observed_open_s for r in runs]),
        "trials": _spread([r.trials for r in runs]),
        "all_closed_s": _spread([r.all_closed_s for r in runs]),
        "failed_call_s": _spread([r.failed_call_s for r in runs]),
        "shared": all(r.shared for r in runs),
        "all_closed_at_end": all(r.all_closed_at_end for r in runs),
        "errors": [e for r in runs for e in r.errors],
    }


def _targets(settings: Settings, before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """Issue 10's targets for the after column; counts and times judged on the worst rep."""
    config = BreakerConfig()
    failed_limit = config.failure_threshold + settings.workers
    open_limit = 2 * settings.socket_timeout
    before_closed = before["all_closed_s"]["median"]
    after_closed = after["all_closed_s"]["median"]

    def at_most(spread: dict[str, Any], limit: float) -> bool:
        return spread["missing"] == 0 and spread["max"] is not None and spread["max"] <= limit

    return {
        "failed_before_all_open": {
            "limit": failed_limit,
            "met": at_most(after["failed_before_all_open"], failed_limit),
        },
        "all_open_s": {"limit": open_limit, "met": at_most(after["all_open_s"], open_limit)},
        "trials": {
            "limit": config.half_open_max_attempts,
            "met": at_most(after["trials"], config.half_open_max_attempts),
        },
        "all_closed_s": {
            "limit": None if before_closed is None else before_closed + CLOSE_SLACK_S,
            "met": before_closed is not None
            and after_closed is not None
            and after["all_closed_s"]["missing"] == 0
            and after_closed <= before_closed + CLOSE_SLACK_S,
        },
        "shared": {"limit": True, "met": after["shared"] and not before["shared"]},
        "recovered": {
            "limit": True,
            "met": after["all_closed_at_end"] and not after["errors"] and not before["errors"],
        },
    }


def run_benchmarks(
    settings: Settings, progress: Callable[[str], None] = lambda line: None
) -> dict[str, Any]:
    """Every fault x repetition x column (alternating, so drift hits both); JSON-ready."""
    rows = []
    for fault in settings.faults:
        runs: dict[str, list[FleetRun]] = {mode: [] for mode in MODES}
        with RedisServer() as server:
            for rep in range(settings.reps):
                for mode in MODES:
                    with tempfile.TemporaryDirectory(prefix="rg-bench-fleet-") as shared_dir:
                        run = run_fleet(
                            server, settings.options(fault, mode), shared_dir=shared_dir
                        )
                    runs[mode].append(run)
                    progress(
                        f"  {fault:5} {mode:6} rep {rep + 1}: {run.failed_before_all_open} failed, "
                        f"all open {_ms(run.all_open_s)}, {run.trials} trials, "
                        f"all closed {_ms(run.all_closed_s)}"
                    )
        before, after = _summary(runs["before"]), _summary(runs["after"])
        rows.append(
            {
                "fault": fault,
                "before": before,
                "after": after,
                "targets": _targets(settings, before, after),
                "runs": {mode: [r.as_dict() for r in runs[mode]] for mode in MODES},
            }
        )
    return {
        "settings": asdict(settings),
        "environment": {
            "redisguard": redisguard.__version__,
            "redisguard_file": redisguard.__file__,
            "redis_py": redis.__version__,
            "python": sys.version.split()[0],
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        },
        "rows": rows,
    }


# -- report ---------------------------------------------------------------------------------------
def _ms(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds * 1e3:.0f} ms"


def _cell(spread: dict[str, Any], unit: str) -> str:
    def one(value: float | None) -> str:
        if value is None:
            return "never"
        return _ms(value) if unit == "s" else f"{value:g}"

    text = one(spread["median"])
    if spread["min"] != spread["max"]:
        text += f" [{one(spread['min'])}-{one(spread['max'])}]"
    if spread["missing"]:
        text += f" ({spread['missing']} never)"
    return text


_METRICS = (
    ("failed_before_all_open", "failed calls before every worker is open", "n", "<= {:g}"),
    ("all_open_s", "fault -> every worker open", "s", "<= {}"),
    ("trials", "trial calls after the heal (host-wide)", "n", "<= {:g}"),
    ("all_closed_s", "heal -> every worker closed", "s", "<= before + 50 ms ({})"),
)


def format_report(report: dict[str, Any]) -> str:
    """A Markdown table: before and after side by side, per fault."""
    s = report["settings"]
    env = report["environment"]
    lines = [
        f"redisguard {env['redisguard']} from {env['redisguard_file']}",
        f"redis-py {env['redis_py']}, Python {env['python']}, {env['machine']}; "
        f"{s['workers']} forked workers x {s['rate']:g} GET/s, socket timeout "
        f"{_ms(s['socket_timeout'])}, outage {s['outage']:g} s, {s['reps']} rep(s): "
        "median [min-max]",
        "",
        "| fault | figure | before: per process | after: host-shared | target (after) | met |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        for key, label, unit, target in _METRICS:
            limit = row["targets"][key]["limit"]
            shown = "?" if limit is None else (_ms(limit) if unit == "s" else limit)
            lines.append(
                f"| {row['fault']} | {label} | {_cell(row['before'][key], unit)} "
                f"| {_cell(row['after'][key], unit)} | {target.format(shown)} "
                f"| {'yes' if row['targets'][key]['met'] else 'NO'} |"
            )
        lines.append(
            f"| {row['fault']} | (fault -> the last call admitted before that ended) "
            f"| {_cell(row['before']['all_observed_open_s'], 's')} "
            f"| {_cell(row['after']['all_observed_open_s'], 's')} | | |"
        )
        shared = row["targets"]["shared"]["met"]
        recovered = row["targets"]["recovered"]["met"]
        lines.append(
            f"| {row['fault']} | Breaker.stats().shared (before / after) "
            f"| {row['before']['shared']} | {row['after']['shared']} | False / True "
            f"| {'yes' if shared else 'NO'} |"
        )
        lines.append(
            f"| {row['fault']} | every worker closed at the end, no error "
            f"| {row['before']['all_closed_at_end']} | {row['after']['all_closed_at_end']} "
            f"| True | {'yes' if recovered else 'NO'} |"
        )
        failed = row["before"]["failed_call_s"]["median"], row["after"]["failed_call_s"]["median"]
        lines.append(
            f"| {row['fault']} | (median failed call) | {_ms(failed[0])} | {_ms(failed[1])} | | |"
        )
    return "\n".join(lines)


def missed_targets(report: dict[str, Any]) -> list[str]:
    """``fault/target`` for every target the after column missed."""
    return [
        f"{row['fault']}/{key}"
        for row in report["rows"]
        for key, target in row["targets"].items()
        if not target["met"]
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 rep, 2 s outage (~25 s)")
    parser.add_argument("--faults", default=",".join(FLEET_FAULTS))
    parser.add_argument("--reps", type=int)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--outage", type=float, help="seconds (default 5)")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--check", action="store_true", help="exit 1 if a target is missed")
    args = parser.parse_args(argv)
    settings = Settings.quick() if args.quick else Settings()
    faults = tuple(f for f in args.faults.split(",") if f)
    unknown = set(faults) - set(FLEET_FAULTS)
    if unknown or not faults:
        parser.error(f"unknown fault: {', '.join(sorted(unknown)) or '(none given)'}")
    settings = replace(settings, faults=faults)
    for name in ("reps", "workers", "outage"):
        value = getattr(args, name)
        if value is not None:
            if not value > 0:
                parser.error(f"--{name} must be positive, got {value!r}")
            settings = replace(settings, **{name: value})
    if no_redis_server():
        return 2
    started = time.monotonic()
    with only_critical("redisguard"):
        report = run_benchmarks(settings, progress=lambda line: print(line, file=sys.stderr))
    print(format_report(report))
    print(f"took {time.monotonic() - started:.0f} s")
    write_json(args.json, report)
    missed = missed_targets(report)
    return exit_status(missed, check=args.check, what="targets missed (after column)")


if __name__ == "__main__":
    sys.exit(main())
