"""The ``redisguard`` command line: ``demo``, ``soak``, ``doctor`` and ``version``.

Argument parsing only; what the demo does lives in :mod:`redisguard._demo`.
"""

from __future__ import annotations

import argparse
import json
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


_DOCTOR_DESCRIPTION = """\
Read a configuration and a live Redis and report the risks, each with the fix: the
client's timeouts and retry, the breaker against the time Redis needs to load its data,
the server's eviction, persistence, idle timeout and busy-reply-threshold, replicas,
Sentinel and Cluster state; then predict what an outage does to each worker's capacity
(Shopify's "Your Circuit Breaker is Misconfigured" model) and suggest thresholds.

It only reads (PING, INFO, ROLE, CONFIG GET of named settings, SENTINEL MASTER/CKQUORUM,
CLUSTER INFO) and never prints a password. The breaker settings come from the
REDIS_CIRCUIT_BREAKER_* environment variables unless given here.

Exit status: 0; 1 with --strict when a finding is high risk; 2 when Redis did not answer
or the arguments are invalid.
"""


def _doctor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url", help="the Redis to inspect (default $REDIS_URL; none: configuration only)"
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--strict", action="store_true", help="exit 1 when any finding is high risk"
    )
    parser.add_argument(
        "--use",
        choices=("cache", "store"),
        default="cache",
        help="what Redis holds: a cache (losing keys is fine) or a store (sessions, "
        "counters: no acknowledged write may be lost); default: %(default)s",
    )
    group = parser.add_argument_group("workload (for the outage prediction)")
    group.add_argument(
        "--rate",
        type=_positive(float),
        default=100.0,
        metavar="RPS",
        help="requests per second, all workers together (default: %(default)s)",
    )
    group.add_argument(
        "--workers",
        type=_positive(int),
        default=8,
        metavar="N",
        help="workers serving requests, one at a time each (default: %(default)s)",
    )
    group.add_argument(
        "--calls-per-request",
        type=_positive(int),
        default=1,
        metavar="N",
        help="guarded Redis calls per request (default: %(default)s)",
    )
    group.add_argument(
        "--request-ms",
        type=_positive(float),
        default=10.0,
        metavar="MS",
        help="time a request takes besides Redis (default: %(default)s)",
    )
    group.add_argument(
        "--workers-per-breaker",
        type=_positive(int),
        metavar="N",
        help="workers sharing one breaker (threads per process; default 1, or "
        "all with REDISGUARD_SHARED_BREAKERS)",
    )
    group.add_argument(
        "--outage",
        type=_positive(float),
        default=30.0,
        metavar="SECONDS",
        help="outage length to model (default: %(default)s)",
    )
    client = parser.add_argument_group("client and guard (default: redisguard.connect())")
    client.add_argument(
        "--socket-timeout",
        type=_positive(float),
        default=0.25,
        metavar="SECONDS",
        help="the client's socket_timeout (default: %(default)s)",
    )
    client.add_argument(
        "--no-socket-timeout", action="store_true", help="the client sets no socket_timeout"
    )
    client.add_argument(
        "--socket-connect-timeout",
        type=_positive(float),
        default=0.25,
        metavar="SECONDS",
        help="the client's socket_connect_timeout (default: %(default)s)",
    )
    client.add_argument(
        "--no-socket-connect-timeout",
        action="store_true",
        help="the client sets no socket_connect_timeout",
    )
    client.add_argument(
        "--redis-py-retries",
        type=int,
        default=0,
        metavar="N",
        help="retries redis-py itself makes (redis.Redis() default: 10; "
        "default here: %(default)s, as redisguard.connect())",
    )
    client.add_argument(
        "--failure-threshold",
        type=_positive(int),
        metavar="N",
        help="breaker failures before it opens (default: $REDIS_CIRCUIT_BREAKER_"
        "FAILURE_THRESHOLD, else 5)",
    )
    client.add_argument(
        "--reset-timeout",
        type=_positive(float),
        metavar="SECONDS",
        help="seconds the breaker stays open (default: $REDIS_CIRCUIT_BREAKER_"
        "RESET_TIMEOUT ms, else 30)",
    )
    client.add_argument(
        "--half-open-attempts",
        type=_positive(int),
        metavar="N",
        help="concurrent half-open trial calls (default: $REDIS_CIRCUIT_BREAKER_"
        "HALF_OPEN_ATTEMPTS, else 3)",
    )
    client.add_argument(
        "--attempts",
        type=_positive(int),
        default=3,
        metavar="N",
        help="guard retry attempts (default: %(default)s)",
    )
    client.add_argument(
        "--deadline",
        type=_positive(float),
        default=0.5,
        metavar="SECONDS",
        help="guard retry deadline (default: %(default)s)",
    )


def _doctor(args: argparse.Namespace) -> int:
    """``redisguard doctor``."""
    import dataclasses  # noqa: PLC0415
    import os  # noqa: PLC0415

    from . import doctor  # noqa: PLC0415 - only this command reads a server
    from ._config import BreakerConfig, RetryPolicy  # noqa: PLC0415
    from ._errors import ConfigError  # noqa: PLC0415

    try:
        config = BreakerConfig.from_env()
        overrides = {
            "failure_threshold": args.failure_threshold,
            "reset_timeout": args.reset_timeout,
            "half_open_max_attempts": args.half_open_attempts,
        }
        config = dataclasses.replace(
            config, **{k: v for k, v in overrides.items() if v is not None}
        )
        retry = RetryPolicy(attempts=args.attempts, deadline=args.deadline)
        workload = doctor.Workload(
            rate=args.rate,
            workers=args.workers,
            calls_per_request=args.calls_per_request,
            request_time=args.request_ms / 1000,
            workers_per_breaker=args.workers_per_breaker,
            use=args.use,
        )
        settings = doctor.ClientSettings(
            socket_timeout=None if args.no_socket_timeout else args.socket_timeout,
            socket_connect_timeout=None
            if args.no_socket_connect_timeout
            else args.socket_connect_timeout,
            redis_py_retries=args.redis_py_retries,
        )
        report = doctor.diagnose(
            args.url if args.url is not None else os.environ.get("REDIS_URL") or None,
            config=config,
            retry=retry,
            workload=workload,
            client_settings=settings,
            outage=args.outage,
        )
    except ConfigError as exc:
        print(f"redisguard doctor: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.format_text())
    if not report.reachable:
        return 2
    return 1 if args.strict and report.high_risk else 0


def build_parser() -> argparse.ArgumentParser:
    """The ``redisguard`` argument parser (``demo``, ``soak``, ``doctor``, ``version``)."""
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
    doctor = commands.add_parser(
        "doctor",
        help="report the risks in a Redis and a redisguard configuration, with the fixes",
        description=_DOCTOR_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _doctor_arguments(doctor)

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
    if args.command == "doctor":
        return _doctor(args)
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
