"""Print redisguard's spans and metrics to the console (one JSON document per line).

The quickest way to see what redisguard emits, with nothing to install but the SDK::

    pip install "redisguard[otel]"
    python examples/console_export.py              # private redis-server, an outage
    python examples/console_export.py redis://localhost:6379/0
    python examples/console_export.py | jq 'select(.name? | startswith("redisguard"))'

Spans print as they end (``SimpleSpanProcessor``); metrics print once, when the meter
provider shuts down at the end (a ``PeriodicExportingMetricReader`` with a long interval).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor

import redisguard

__all__ = ["main", "run"]

BREAKER = redisguard.BreakerConfig(failure_threshold=3, reset_timeout=0.5)


def run(
    redis_url: str,
    *,
    out: TextIO = sys.stdout,
    calls: int = 5,
    break_redis: Callable[[], object] | None = None,
    mend_redis: Callable[[], object] | None = None,
) -> list[int]:
    """Count page views through a guarded function, printing spans and metrics to ``out``.

    Args:
        redis_url: Where Redis is.
        out: Where the JSON lines go.
        calls: Calls per phase.
        break_redis: Called between the healthy and the degraded phase (e.g. kill the
            server); None runs a single phase against whatever ``redis_url`` is.
        mend_redis: Called after the degraded phase; the example then waits for the
            breaker's reset timeout and shows the recovery.

    Returns:
        What each call answered (0 is the fallback).
    """
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(
        SimpleSpanProcessor(
            ConsoleSpanExporter(out=out, formatter=lambda span: span.to_json(indent=None) + "\n")
        )
    )
    exporter = ConsoleMetricExporter(
        out=out, formatter=lambda data: data.to_json(indent=None) + "\n"
    )
    # A long interval: the reader exports once more when the provider shuts down.
    meter_provider = MeterProvider(
        metric_readers=[PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)]
    )
    client = redisguard.connect(redis_url, check=False)
    redisguard.get_breaker("counters", BREAKER)

    @redisguard.redis_guarded(
        name="views.incr",
        breaker="counters",
        fallback=0,  # a lost page view is acceptable; an error page is not
        trace_success=True,  # also show the happy path's spans in this demo
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
    )
    def count_view(page: str) -> int:
        return int(client.incr(f"views:{page}"))

    answers: list[int] = []
    try:
        answers += [count_view("home") for _ in range(calls)]
        if break_redis is not None:
            break_redis()
            answers += [count_view("home") for _ in range(calls)]
        if mend_redis is not None:
            mend_redis()
            time.sleep(BREAKER.reset_timeout)
            answers += [count_view("home") for _ in range(calls)]
    finally:
        client.close()
        tracer_provider.shutdown()
        meter_provider.shutdown()
    return answers


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("redis_url", nargs="?", default=os.environ.get("REDIS_URL"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.redis_url:
        answers = run(args.redis_url)
    else:
        from redisguard.testing import RedisServer

        with RedisServer(appendonly=True) as server:  # data survives the outage
            answers = run(server.url, break_redis=server.kill, mend_redis=server.start)
    print("answers:", answers, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
