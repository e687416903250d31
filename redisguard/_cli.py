"""The ``redisguard`` command line: ``redisguard demo``, ``redisguard soak``, ``version``.

Argument parsing only; what the demo does lives in :mod:`redisguard._demo`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from . import _demo
from ._version import __version__

__all__ = ["build_parser", "main"]

_DEMO_DESCRIPTION = """\
Run a session-store workload through @redis_guarded and break Redis under it:
healthy -> outage (fault injected) -> recovery (fault healed) -> healthy again.
Prints a timeline (breaker transitions, fault, first fallback, recovery) and a summary
per phase (calls, successes, fallbacks, p50/p99 latency).

Without --url the demo starts a private redis-server on a free 127.0.0.1 port and stops
it at the end. With --url it never kills, pauses, reconfigures or stops your server:
faults are injected by a TCP proxy in front of it, and it writes only redisguard-demo:*
keys (deleted at the end). Passwords in URLs are never printed.

With --workers N the demo forks N worker processes (as gunicorn -w N does) that share one
host-wide breaker (REDISGUARD_SHARED_BREAKERS=1), pauses (or kills) its private Redis and
prints, per worker, when its breaker opened and closed again, and the host-wide count of
timed-out calls: the fleet trips together and recovers with one round of trial calls.

The demo's breaker also breaks on slow calls: it opens when --slow-call-rate percent of
the last 2 x --minimum-calls calls took longer than --slow-call-ms, even though they all
succeeded (see --fault latency).
"""

_FAULT_HELP = """\
kill: SIGKILL the private server, then restart it on the same port;
pause: SIGSTOP / SIGCONT it;
blackhole: the proxy drops all bytes;
reset: the proxy sends TCP RST on every connection, repeatedly;
latency: a brownout: the proxy delays every reply by --latency-ms (30 ms), below the
  socket timeout; calls succeed slowly until the slow-call rate opens the breaker, trial
  calls follow, and it closes once the delay is gone (--latency-ms above
  --socket-timeout makes every call time out instead: an outage);
oom: the private server refuses writes (maxmemory 1 byte, noeviction: -OOM) and still
  serves reads: writes fall back, reads keep coming from Redis; then memory is freed;
all: each in turn (only proxy faults with --url).
Default: kill, or blackhole with --url."""


def _positive(kind: Callable[[str], float]) -> Callable[[str], float]:
    """An argparse type: ``kind(text)``, rejected unless it is > 0."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return value

    return parse


def _soak_arguments(parser: argparse.ArgumentParser) -> None:
    from .testing import _soak  # noqa: PLC0415 - keeps `redisguard demo` start-up light

    _soak.add_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    """The ``redisguard`` argument parser (subcommands ``demo``, ``soak`` and ``version``)."""
    parser = argparse.ArgumentParser(
        prog="redisguard",
        description="Keep Redis-backed services working when Redis does not.",
    )
    parser.add_argument("--version", action="version", version=f"redisguard {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("version", help="print the version", description="Print the version.")
    soak = commands.add_parser(
        "soak",
        help="run the chaos soak: every fault kind, repeatedly, under a mixed workload",
        description=(
            "Drive the guarded stores from threads and asyncio tasks against a private "
            "redis-server (appendfsync always) while kill, pause, blackhole, reset, latency, "
            "LOADING, brownout (latency below the socket timeout) and OOM (writes refused) "
            "faults repeat; verify nothing acknowledged is lost, only typed errors "
            "escape, every outage cycles the breaker and no secret is logged. Exit 0 when "
            "every invariant held."
        ),
    )
    _soak_arguments(soak)

    demo = commands.add_parser(
        "demo",
        help="watch a guarded workload ride out a Redis outage",
        description=_DEMO_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--url",
        help="use this Redis server instead of a private one (never killed, paused or "
        "reconfigured)",
    )
    demo.add_argument(
        "--fault",
        choices=(*_demo.FAULTS, "all"),
        help=_FAULT_HELP,
    )
    demo.add_argument(
        "--duration",
        "--phase-seconds",
        dest="phase_seconds",
        type=_positive(float),
        default=2.5,
        metavar="SECONDS",
        help="length of each phase (default: %(default)s)",
    )
    demo.add_argument(
        "--rate",
        type=_positive(float),
        default=200.0,
        metavar="CALLS",
        help="workload calls per second (default: %(default)s)",
    )
    demo.add_argument(
        "--failure-threshold",
        type=_positive(int),
        default=3,
        metavar="N",
        help="breaker failures before it opens (default: %(default)s)",
    )
    demo.add_argument(
        "--reset-timeout",
        type=_positive(float),
        default=1.0,
        metavar="SECONDS",
        help="seconds the breaker stays open before a trial call (default: %(default)s)",
    )
    demo.add_argument(
        "--socket-timeout",
        type=_positive(float),
        default=0.2,
        metavar="SECONDS",
        help="client socket and connect timeout (default: %(default)s)",
    )
    demo.add_argument(
        "--latency-ms",
        type=_positive(float),
        default=30.0,
        metavar="MS",
        help="delay added by the latency fault: below --socket-timeout a brownout, above it "
        "an outage (default: %(default)s)",
    )
    demo.add_argument(
        "--slow-call-ms",
        type=_positive(float),
        default=10.0,
        metavar="MS",
        help="a call slower than this counts as slow (breaker slow_call_duration; "
        "default: %(default)s)",
    )
    demo.add_argument(
        "--slow-call-rate",
        type=_positive(float),
        default=50.0,
        metavar="PERCENT",
        help="the breaker opens when this share of recent calls was slow "
        "(slow_call_rate_threshold; default: %(default)s)",
    )
    demo.add_argument(
        "--minimum-calls",
        type=_positive(int),
        default=10,
        metavar="N",
        help="calls the slow-call rate needs before it judges; the window is the last 2 x N "
        "calls (default: %(default)s)",
    )
    demo.add_argument(
        "--workload",
        choices=_demo.WORKLOADS,
        default="session",
        help="session: session reads and refreshes through @redis_guarded; cache: "
        "@cached lookups that serve stale values from the in-process L1 while Redis is "
        "down (default: %(default)s)",
    )
    demo.add_argument(
        "--otel",
        choices=_demo.OTEL_MODES,
        default="none",
        help="none, or console: spans to stderr and a metrics table at the end "
        "(needs opentelemetry-sdk)",
    )
    demo.add_argument(
        "--workers",
        type=_positive(int),
        metavar="N",
        help="fork N worker processes sharing one host-wide breaker (1-64); --fault pause "
        "(default) or kill, --rate is split between them, each phase lasts --duration, and "
        "recovery is the prober's (--reset-timeout is not used)",
    )
    output = demo.add_mutually_exclusive_group()
    output.add_argument("--quiet", action="store_true", help="print only the summary table")
    output.add_argument(
        "--json", action="store_true", help="print only a JSON summary (timeline and phases)"
    )
    demo.add_argument(
        "--verbose", action="store_true", help="also show redisguard's log records on stderr"
    )
    demo.add_argument(
        "--plot",
        metavar="FILE",
        help="write a timeline chart (.svg or .png; needs matplotlib): latency and outcome "
        "per call, breaker state, outages shaded",
    )
    return parser


def _fleet_demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``redisguard demo --workers N``."""
    from . import _demo_fleet  # noqa: PLC0415 - only this mode forks workers

    refused = [
        flag
        for flag, given in (
            ("--url", args.url is not None),
            ("--otel", args.otel != "none"),
            ("--plot", args.plot is not None),
            ("--workload", args.workload != "session"),
        )
        if given
    ]
    if refused:
        parser.error(f"--workers runs on a private redis-server only; drop {', '.join(refused)}")
    fault = args.fault or "pause"
    if fault not in _demo_fleet.FLEET_FAULTS:
        parser.error(f"--workers injects --fault pause or kill, not {fault!r}")
    if args.workers > 64:
        parser.error(f"--workers must be at most 64, got {args.workers}")
    options = _demo_fleet.FleetOptions(
        workers=args.workers,
        rate=args.rate / args.workers,
        fault=fault,
        shared=True,
        socket_timeout=args.socket_timeout,
        outage=args.phase_seconds,
        after=args.phase_seconds,
        failure_threshold=args.failure_threshold,
    )
    return _demo_fleet.fleet_main(options, as_json=args.json, quiet=args.quiet)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``redisguard`` command; return the exit status.

    Args:
        argv: Arguments without the program name; ``sys.argv[1:]`` when None.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "version":
        print(f"redisguard {__version__}")
        return 0
    if args.command == "soak":
        from .testing import _soak  # noqa: PLC0415 - only this command needs the soak

        return _soak.run_from_args(args)
    if args.command != "demo":
        parser.print_help(sys.stderr)
        return 2
    if args.workers is not None:
        return _fleet_demo(parser, args)
    options = _demo.DemoOptions(
        url=args.url,
        fault=args.fault,
        phase_seconds=args.phase_seconds,
        rate=args.rate,
        failure_threshold=args.failure_threshold,
        reset_timeout=args.reset_timeout,
        socket_timeout=args.socket_timeout,
        latency_ms=args.latency_ms,
        slow_call_ms=args.slow_call_ms,
        slow_call_rate=args.slow_call_rate,
        minimum_calls=args.minimum_calls,
        otel=args.otel,
        workload=args.workload,
    )
    return _demo.main(
        options, as_json=args.json, quiet=args.quiet, verbose=args.verbose, plot=args.plot
    )
