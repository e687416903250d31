"""The global providers, configured after redisguard was imported and used (in a subprocess).

``set_tracer_provider`` / ``set_meter_provider`` work once per process, so this test runs its
scenario in a fresh interpreter and reads what it exported as JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

from redisguard.testing import free_port

SCENARIO = textwrap.dedent(
    """
    import json, sys
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    import redisguard

    client = redis.Redis.from_url(sys.argv[1], socket_connect_timeout=0.25,
                                  socket_timeout=0.25, retry=Retry(NoBackoff(), 0))
    redisguard.get_breaker("redis", redisguard.BreakerConfig(failure_threshold=100))

    # Decorated before any SDK exists: redisguard must pick the SDK up when it appears.
    @redisguard.redis_guarded(name="late.get", fallback="stale", retry=None)
    def get():
        return client.get("k")

    before = [get(), get()]  # no SDK yet: no spans, but the tallies count

    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tracer_provider)
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))

    after = [get(), get(), get()]

    points = []
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                for p in m.data.data_points:
                    points.append([m.name, dict(p.attributes), getattr(p, "value", None)])
    print(json.dumps({
        "answers": before + after,
        "spans": [[s.name, dict(s.attributes)] for s in exporter.get_finished_spans()],
        "metrics": points,
    }))
    """
)


def run_scenario(url: str) -> dict[str, Any]:
    """Run SCENARIO in a fresh interpreter; return what it printed."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OTEL_") and k != "REDISGUARD_TRACE_SUCCESS"
    }
    done = subprocess.run(
        [sys.executable, "-c", SCENARIO, url],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_sdk_configured_after_import_and_decoration_receives_telemetry() -> None:
    """Spans and metrics reach a global SDK set after decorating; earlier calls still count."""
    result = run_scenario(f"redis://127.0.0.1:{free_port()}/0")

    assert result["answers"] == ["stale"] * 5
    # Only the three calls made once the SDK existed could produce spans.
    assert len(result["spans"]) == 3
    for name, attributes in result["spans"]:
        assert name == "redisguard late.get"
        assert attributes["redisguard.outcome"] == "fallback"
        assert attributes["error.type"] == "redis.exceptions.ConnectionError"
    metrics = {
        (name, tuple(sorted(attributes.items()))): value
        for name, attributes, value in result["metrics"]
    }
    # Counting is in-process, so the two calls made before the SDK existed are included.
    key = (("operation", "late.get"), ("result", "fallback"))
    assert metrics["redis_operations", key] == 5
    assert metrics["circuit_breaker_failures", (("name", "redis"),)] == 5
    assert metrics["circuit_breaker_state", (("name", "redis"),)] == 0
