"""Serve redisguard's metrics on a Prometheus ``/metrics`` endpoint.

The series come out exactly as the design document names them::

    circuit_breaker_state{name}                      0 closed, 1 half-open, 2 open
    circuit_breaker_failures_total{name}
    circuit_breaker_successes_total{name}
    circuit_breaker_rejections_total{name}
    circuit_breaker_transitions_total{name,from,to}
    redis_operations_total{operation,result}         success | fallback | error
    redis_operation_retries_total{operation}
    redis_degraded_call_duration_seconds_bucket{operation,result,le}

Run it::

    pip install "redisguard[prometheus]"   # opentelemetry-sdk + exporter-prometheus
    python examples/prometheus_metrics.py              # private redis-server, an outage
    python examples/prometheus_metrics.py redis://localhost:6379/0 --port 9464
    curl -s http://127.0.0.1:9464/metrics | grep -E '^(circuit_breaker|redis_)'

``PrometheusMetricReader(disable_target_info=True, scope_info_enabled=False)`` drops the
``target_info`` metric and the ``otel_scope_*`` labels, and a private ``CollectorRegistry``
keeps the series from doubling if something else also uses the default registry.
"""

from __future__ import annotations

import argparse
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import prometheus_client
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.metrics import MeterProvider as ApiMeterProvider
from opentelemetry.sdk.metrics import MeterProvider

import redisguard

__all__ = ["MetricsEndpoint", "main", "run", "serve_metrics"]

BREAKER = redisguard.BreakerConfig(failure_threshold=3, reset_timeout=0.5)


@dataclass
class MetricsEndpoint:
    """A running ``/metrics`` endpoint and the meter provider that feeds it."""

    meter_provider: MeterProvider
    registry: prometheus_client.CollectorRegistry
    server: WSGIServer
    thread: threading.Thread
    host: str

    @property
    def url(self) -> str:
        """The scrape URL."""
        return f"http://{self.host}:{self.server.server_port}/metrics"

    def close(self) -> None:
        """Stop serving and shut the meter provider down."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        self.meter_provider.shutdown()


def serve_metrics(port: int = 9464, host: str = "127.0.0.1") -> MetricsEndpoint:
    """Start a ``/metrics`` HTTP endpoint backed by an OpenTelemetry meter provider.

    Args:
        port: TCP port; 0 picks a free one (read :attr:`MetricsEndpoint.url`).
        host: Address to bind; loopback by default, ``0.0.0.0`` to let Prometheus in.
    """
    registry = prometheus_client.CollectorRegistry()
    reader = PrometheusMetricReader(
        disable_target_info=True, scope_info_enabled=False, registry=registry
    )
    provider = MeterProvider(metric_readers=[reader])
    server, thread = prometheus_client.start_http_server(port, addr=host, registry=registry)
    return MetricsEndpoint(provider, registry, server, thread, host)


def run(
    redis_url: str,
    meter_provider: ApiMeterProvider,
    *,
    calls: int = 5,
    break_redis: Callable[[], object] | None = None,
    mend_redis: Callable[[], object] | None = None,
) -> list[str]:
    """Read a cached price through a guarded function; return what each call answered.

    Args:
        redis_url: Where Redis is.
        meter_provider: Where redisguard's metrics go.
        calls: Lookups per phase.
        break_redis: Called between the healthy and the degraded phase (e.g. kill the
            server); None runs a single phase against whatever ``redis_url`` is.
        mend_redis: Called after the degraded phase; the example then waits for the
            breaker's reset timeout and shows the recovery.
    """
    client = redisguard.connect(redis_url, check=False, decode_responses=True)
    redisguard.get_breaker("cache", BREAKER)

    @redisguard.redis_guarded(
        name="price.get", breaker="cache", fallback="list-price", meter_provider=meter_provider
    )
    def get_price(sku: str) -> str:
        value = client.get(f"price:{sku}")
        return "list-price" if value is None else str(value)

    answers: list[str] = []
    try:
        if break_redis is not None:
            client.set("price:sku-1", "9.99")
            answers += [get_price("sku-1") for _ in range(calls)]
            break_redis()
        answers += [get_price("sku-1") for _ in range(calls)]
        if mend_redis is not None:
            mend_redis()
            time.sleep(BREAKER.reset_timeout)
            answers += [get_price("sku-1") for _ in range(calls)]
    finally:
        client.close()
    return answers


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point: serve until Ctrl-C (or ``--linger`` seconds)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("redis_url", nargs="?", default=os.environ.get("REDIS_URL"))
    parser.add_argument("--port", type=int, default=9464, help="0 picks a free port")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--linger", type=float, default=None, help="seconds to keep serving")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    endpoint = serve_metrics(args.port, args.host)
    try:
        if args.redis_url:
            answers = run(args.redis_url, endpoint.meter_provider)
        else:
            from redisguard.testing import RedisServer

            with RedisServer(appendonly=True) as server:  # data survives the outage
                answers = run(
                    server.url,
                    endpoint.meter_provider,
                    break_redis=server.kill,
                    mend_redis=server.start,
                )
        print("answers:", answers)
        print(f"Serving metrics at {endpoint.url}", flush=True)
        deadline = None if args.linger is None else time.monotonic() + args.linger
        while deadline is None or time.monotonic() < deadline:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        endpoint.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
