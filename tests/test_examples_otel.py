"""The exporter examples, imported and run as scripts, checked against real receivers.

* ``otlp_export.py`` sends spans to an OTLP/HTTP receiver started on 127.0.0.1 that
  decodes the protobuf requests (tests/otlp_receiver.py).
* ``prometheus_metrics.py`` is scraped over HTTP and parsed with prometheus_client's parser.
* ``console_export.py`` prints JSON lines that are parsed back.
* ``alert_on_open.py`` delivers alerts off the calling thread, to a callback or a webhook.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from otlp_receiver import OtlpReceiver, ReceivedSpan

from redisguard.testing import RedisServer, free_port

pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
# The prometheus extra needs a newer SDK than the rest (see setup.cfg): only its tests skip.
needs_prometheus = pytest.mark.skipif(
    importlib.util.find_spec("opentelemetry.exporter.prometheus") is None,
    reason="the prometheus extra (opentelemetry-exporter-prometheus) is not installed",
)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ServerFactory = Callable[..., RedisServer]


def load_example(name: str) -> ModuleType:
    """Import ``examples/<name>.py`` as a module (importing it must have no side effects)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being created
    spec.loader.exec_module(module)
    return module


def script_env(**extra: str) -> dict[str, str]:
    """The environment for an example run as a script: no Redis URL, no stray OTel config."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("OTEL_") and k not in {"REDIS_URL", "REDISGUARD_TRACE_SUCCESS"}
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env


def run_script(name: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run an example as ``python examples/<name>.py``; return its stdout (rc must be 0)."""
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / f"{name}.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or script_env(),
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture
def durable_server(redis_server_factory: ServerFactory) -> RedisServer:
    """A server whose data survives a kill, as the examples' private server does."""
    return redis_server_factory(appendonly=True)


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    """A running OTLP/HTTP receiver on 127.0.0.1."""
    with OtlpReceiver() as running:
        yield running


def fallback_spans(spans: list[ReceivedSpan], operation: str) -> list[ReceivedSpan]:
    return [
        s
        for s in spans
        if s.name == f"redisguard {operation}"
        and s.attributes.get("redisguard.outcome") == "fallback"
    ]


# -- OTLP ----------------------------------------------------------------------------------------
def test_otlp_example_exports_fallback_spans(
    receiver: OtlpReceiver, durable_server: RedisServer
) -> None:
    """run() sends one span per fallback over OTLP/HTTP, with redisguard's attributes."""
    example = load_example("otlp_export")
    provider = example.make_tracer_provider(receiver.traces_url, service_name="checkout")
    try:
        answers = example.run(
            durable_server.url,
            provider,
            break_redis=durable_server.kill,
            mend_redis=durable_server.start,
        )
    finally:
        provider.shutdown()
    assert answers == ["alice"] * 5 + [None] * 5 + ["alice"] * 5

    spans = fallback_spans(receiver.spans, "session.get")
    assert len(spans) == 5
    tried = [s for s in spans if not s.attributes["redisguard.short_circuited"]]
    skipped = [s for s in spans if s.attributes["redisguard.short_circuited"]]
    # The first call's three attempts reach the breaker's threshold; the rest never
    # touch Redis.
    assert len(tried) == 1
    assert tried[0].attributes["redisguard.attempts"] == 3
    for span in tried:
        assert span.attributes["db.system.name"] == "redis"
        assert span.attributes["redisguard.operation"] == "session.get"
        assert span.attributes["redisguard.breaker"] == "sessions"
        assert span.attributes["redisguard.circuit_state"] == "closed"
        assert span.attributes["error.type"] == "redis.exceptions.ConnectionError"
        assert span.status_code == "STATUS_CODE_ERROR"
        assert "exception" in [name for name, _ in span.events]
    for span in skipped:
        assert span.attributes["redisguard.circuit_state"] == "open"
        assert span.attributes["redisguard.attempts"] == 0
    assert {s.resource["service.name"] for s in receiver.spans} == {"checkout"}
    assert {s.scope for s in spans} == {"redisguard"}
    assert set(receiver.content_types) == {"application/x-protobuf"}


def test_otlp_example_against_a_dead_redis_only_falls_back(receiver: OtlpReceiver) -> None:
    """Pointed at a port where nothing listens, every call falls back and is exported."""
    example = load_example("otlp_export")
    provider = example.make_tracer_provider(receiver.traces_url)
    try:
        answers = example.run(f"redis://127.0.0.1:{free_port()}/0", provider, calls=4)
    finally:
        provider.shutdown()
    assert answers == [None] * 4
    assert len(fallback_spans(receiver.spans, "session.get")) == 4


def test_otlp_example_runs_as_a_script(receiver: OtlpReceiver) -> None:
    """The script starts its own Redis, breaks it, and the collector gets the spans."""
    out = run_script(
        "otlp_export", env=script_env(OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint)
    )
    assert "answers: ['alice'" in out
    spans = receiver.wait_for(lambda spans: len(fallback_spans(spans, "session.get")) >= 5)
    assert len(fallback_spans(spans, "session.get")) == 5
    assert {s.resource["service.name"] for s in spans} == {"redisguard-example"}


# -- Prometheus ----------------------------------------------------------------------------------
def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """GET ``url`` and parse it: (sample name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=5) as response:
        assert response.status == 200
        text = response.read().decode()
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def check_seed_series(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]) -> None:
    """The design document's series, by exact name and labels, after one outage and recovery."""
    cache = (("name", "cache"),)
    assert samples["circuit_breaker_state", cache] == 0
    assert samples["circuit_breaker_failures_total", cache] == 3
    assert samples["circuit_breaker_successes_total", cache] == 10
    # The first failed call's three attempts open the circuit; four calls are rejected.
    assert samples["circuit_breaker_rejections_total", cache] == 4

    def ops(result: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return "redis_operations_total", (("operation", "price.get"), ("result", result))

    assert samples[ops("success")] == 10
    assert samples[ops("fallback")] == 5
    assert samples[ops("error")] == 0
    opened = (("from", "closed"), ("name", "cache"), ("to", "open"))
    assert samples["circuit_breaker_transitions_total", opened] == 1
    assert samples["redis_operation_retries_total", (("operation", "price.get"),)] == 1
    count = "redis_degraded_call_duration_seconds_count"
    assert samples[count, (("operation", "price.get"), ("result", "fallback"))] == 1
    names = {name for name, _ in samples}
    assert "target_info" not in names
    assert not any(key.startswith("otel_scope") for _, labels in samples for key, _ in labels)


@needs_prometheus
def test_prometheus_example_serves_the_seed_series(durable_server: RedisServer) -> None:
    """serve_metrics() + run(): a scrape shows exactly the seed's names and labels."""
    example = load_example("prometheus_metrics")
    endpoint = example.serve_metrics(0)
    try:
        answers = example.run(
            durable_server.url,
            endpoint.meter_provider,
            break_redis=durable_server.kill,
            mend_redis=durable_server.start,
        )
        assert answers == ["9.99"] * 5 + ["list-price"] * 5 + ["9.99"] * 5
        check_seed_series(scrape(endpoint.url))
    finally:
        endpoint.close()


def read_line(process: subprocess.Popen[str], marker: str, timeout: float) -> str:
    """Read the child's stdout until a line containing ``marker`` (bounded wait)."""
    stdout = process.stdout
    assert stdout is not None
    lines: queue.SimpleQueue[str] = queue.SimpleQueue()
    # A thread, because select() cannot see lines already buffered by the text wrapper.

    def pump() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if marker in line:
            return line
    raise AssertionError(f"no {marker!r} line from the example (rc={process.poll()})")


@needs_prometheus
def test_prometheus_example_runs_as_a_script() -> None:
    """The script serves /metrics after its outage; a scrape shows the seed's series."""
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "prometheus_metrics.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=script_env(),
    )
    try:
        line = read_line(process, "Serving metrics at ", timeout=30)
        check_seed_series(scrape(line.split("Serving metrics at ", 1)[1].strip()))
        process.send_signal(signal.SIGINT)  # the script stops serving and exits cleanly
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


# -- console -------------------------------------------------------------------------------------
def parse_console(text: str) -> tuple[list[dict[str, Any]], dict[tuple[str, str, str], int]]:
    """Split the console output into spans and redis_operations points by (op, result)."""
    spans: list[dict[str, Any]] = []
    operations: dict[tuple[str, str, str], int] = {}
    for line in text.splitlines():
        if not line.startswith("{"):
            continue
        document = json.loads(line)
        if "resource_metrics" not in document:
            spans.append(document)
            continue
        for resource_metrics in document["resource_metrics"]:
            for scope_metrics in resource_metrics["scope_metrics"]:
                for metric in scope_metrics["metrics"]:
                    for point in metric["data"]["data_points"]:
                        attributes = point["attributes"]
                        key = (
                            metric["name"],
                            attributes.get("operation", attributes.get("name", "")),
                            attributes.get("result", ""),
                        )
                        operations[key] = point.get("value", point.get("count", 0))
    return spans, operations


def test_console_example_prints_spans_and_metrics(durable_server: RedisServer) -> None:
    """run() prints a JSON span per call (successes too) and the metrics once at the end."""
    example = load_example("console_export")
    out = io.StringIO()
    answers = example.run(
        durable_server.url,
        out=out,
        break_redis=durable_server.kill,
        mend_redis=durable_server.start,
    )
    assert answers == [1, 2, 3, 4, 5, 0, 0, 0, 0, 0, 6, 7, 8, 9, 10]
    spans, points = parse_console(out.getvalue())
    outcomes = [s["attributes"]["redisguard.outcome"] for s in spans]
    assert outcomes == ["success"] * 5 + ["fallback"] * 5 + ["success"] * 5
    assert all(s["name"] == "redisguard views.incr" for s in spans)
    assert points["redis_operations", "views.incr", "success"] == 10
    assert points["redis_operations", "views.incr", "fallback"] == 5
    assert points["circuit_breaker_state", "counters", ""] == 0


def test_console_example_runs_as_a_script() -> None:
    """The script prints parseable spans and metrics on stdout and nothing else."""
    out = run_script("console_export")
    spans, points = parse_console(out)
    assert len(spans) == 15
    assert points["redis_operations", "views.incr", "fallback"] == 5
    assert all(line.startswith("{") for line in out.splitlines())


# -- alerts --------------------------------------------------------------------------------------
def test_alert_example_alerts_off_the_calling_thread(durable_server: RedisServer) -> None:
    """A slow notifier never slows the call that trips the breaker; alerts still arrive."""
    example = load_example("alert_on_open")
    received: list[Any] = []
    threads: set[str] = set()

    def slow_notify(alert: Any) -> None:
        threads.add(threading.current_thread().name)
        time.sleep(0.3)  # a slow webhook
        received.append(alert)

    started = time.perf_counter()
    answers = example.run(
        durable_server.url,
        slow_notify,
        break_redis=durable_server.kill,
        mend_redis=durable_server.start,
    )
    elapsed = time.perf_counter() - started
    assert answers == ["on"] * 5 + [None] * 5 + ["on"] * 5
    # run() sleeps 0.5 s for the reset timeout; two 0.3 s notifications on the calling
    # thread would have pushed it past 1.1 s.
    assert elapsed < 1.1
    assert threads == {"alert-on-open"}
    assert [(a.status, a.previous_state, a.state) for a in received] == [
        ("firing", "closed", "open"),
        ("resolved", "half-open", "closed"),
    ]
    assert received[0].breaker == "redis"
    assert received[0].failure_count == 3
    assert received[0].reopened is False


def test_alert_listener_reports_reopen_and_survives_a_failing_notifier(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A re-open is flagged; a notifier that raises is logged and later alerts still go out."""
    example = load_example("alert_on_open")
    received: list[Any] = []

    def flaky(alert: Any) -> None:
        if not received and alert.status == "firing" and not alert.reopened:
            received.append("boom")
            raise RuntimeError("webhook down")
        received.append(alert)

    from redisguard import get_breaker

    breaker = get_breaker("redis")
    listener = example.AlertOnOpen(flaky)
    breaker.add_listener(listener)
    caplog.set_level(logging.ERROR, logger="alert_on_open")
    try:
        breaker.open()
        breaker.half_open()
        breaker.open()
        breaker.close()
        assert listener.flush(timeout=5)
    finally:
        listener.close()
    assert received[0] == "boom"
    assert [(a.status, a.reopened) for a in received[1:]] == [("firing", True), ("resolved", False)]
    (record,) = [r for r in caplog.records if r.name == "alert_on_open"]
    assert record.getMessage() == "alert delivery failed for breaker redis"
    assert record.exc_info is not None


class _Hook(BaseHTTPRequestHandler):
    bodies: list[bytes]

    def do_POST(self) -> None:
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_alert_webhook_posts_json() -> None:
    """webhook(url) POSTs each alert as JSON to a local endpoint."""
    example = load_example("alert_on_open")
    bodies: list[bytes] = []
    handler = type("Hook", (_Hook,), {"bodies": bodies})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hooks/redis"
        example.webhook(url)(
            example.Alert(
                breaker="redis",
                status="firing",
                state="open",
                previous_state="closed",
                reopened=False,
                failure_count=5,
                at="2024-01-01T00:00:00+00:00",
            )
        )
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    (body,) = bodies
    assert json.loads(body)["status"] == "firing"
    assert json.loads(body)["failure_count"] == 5


def test_alert_example_runs_as_a_script() -> None:
    """The script prints a FIRING alert when its Redis dies and RESOLVED when it is back."""
    out = run_script("alert_on_open")
    assert "[FIRING] circuit 'redis': closed -> open" in out
    assert "[RESOLVED] circuit 'redis': half-open -> closed" in out
