"""Export redisguard's spans to an OpenTelemetry collector over OTLP/HTTP.

Every fallback, every call that raised to its caller and every call that needed a retry
produces a ``redisguard <operation>`` span. This example sends them to any OTLP/HTTP
endpoint (an OpenTelemetry Collector, Jaeger, Tempo, Honeycomb, ...).

Run it::

    pip install "redisguard[otlp]"            # opentelemetry-sdk + exporter-otlp-proto-http
    python examples/otlp_export.py            # private redis-server, simulated outage
    python examples/otlp_export.py redis://localhost:6379/0

The collector address comes from the standard variables ``OTEL_EXPORTER_OTLP_ENDPOINT``
(base URL, ``/v1/traces`` is appended) or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (full URL);
the default is ``http://localhost:4318/v1/traces``. The Redis URL comes from the first
argument or ``$REDIS_URL``; with neither, a private ``redis-server`` is started, killed
mid-run and restarted, so the spans show the whole story: fallbacks, the circuit opening,
short-circuited calls, and recovery.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections.abc import Callable

from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import TracerProvider as ApiTracerProvider

import redisguard

__all__ = ["main", "make_tracer_provider", "run"]

BREAKER = redisguard.BreakerConfig(failure_threshold=3, reset_timeout=0.5)


def make_tracer_provider(
    endpoint: str | None = None, service_name: str = "redisguard-example"
) -> TracerProvider:
    """An SDK tracer provider that batches spans to an OTLP/HTTP endpoint.

    Args:
        endpoint: The full traces URL (``http://host:4318/v1/traces``); None reads the
            standard ``OTEL_EXPORTER_OTLP_*`` variables.
        service_name: The ``service.name`` resource attribute.
    """
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return provider


def run(
    redis_url: str,
    tracer_provider: ApiTracerProvider,
    *,
    calls: int = 5,
    break_redis: Callable[[], object] | None = None,
    mend_redis: Callable[[], object] | None = None,
) -> list[str | None]:
    """Look up sessions through a guarded function; return what each call answered.

    Args:
        redis_url: Where Redis is.
        tracer_provider: Where redisguard's spans go.
        calls: Lookups per phase.
        break_redis: Called between the healthy and the degraded phase (e.g. kill the
            server); None runs a single phase against whatever ``redis_url`` is.
        mend_redis: Called after the degraded phase; the example then waits for the
            breaker's reset timeout and shows the recovery.
    """
    client = redisguard.connect(redis_url, check=False, decode_responses=True)
    redisguard.get_breaker("sessions", BREAKER)

    @redisguard.redis_guarded(
        name="session.get",
        breaker="sessions",
        fallback=None,  # "no session": the user logs in again instead of seeing an error
        tracer_provider=tracer_provider,
    )
    def get_session(session_id: str) -> str | None:
        value = client.get(f"session:{session_id}")
        return None if value is None else str(value)

    answers: list[str | None] = []
    try:
        if break_redis is not None:
            client.set("session:42", "alice")
            answers += [get_session("42") for _ in range(calls)]
            break_redis()
        answers += [get_session("42") for _ in range(calls)]
        if mend_redis is not None:
            mend_redis()
            time.sleep(BREAKER.reset_timeout)
            answers += [get_session("42") for _ in range(calls)]
    finally:
        client.close()
    return answers


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("redis_url", nargs="?", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--endpoint", help="OTLP/HTTP traces URL (default: OTEL_* variables)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    provider = make_tracer_provider(args.endpoint)
    try:
        if args.redis_url:
            answers = run(args.redis_url, provider)
        else:
            from redisguard.testing import RedisServer

            with RedisServer(appendonly=True) as server:  # data survives the outage
                answers = run(
                    server.url, provider, break_redis=server.kill, mend_redis=server.start
                )
        print("answers:", answers)
        print("circuit:", redisguard.get_breaker("sessions").stats().as_dict())
    finally:
        provider.shutdown()  # flushes the batch processor
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
