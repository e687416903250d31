"""A minimal OTLP/HTTP trace receiver for tests: decodes what an exporter really sends.

It listens on 127.0.0.1 only, accepts ``POST /v1/traces`` with a protobuf
``ExportTraceServiceRequest`` (optionally gzip-compressed), and keeps every span it
receives, flattened to :class:`ReceivedSpan` so tests can assert on plain values.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

__all__ = ["OtlpReceiver", "ReceivedSpan"]

TRACES_PATH = "/v1/traces"


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as it arrived over the wire.

    Attributes:
        name: The span name.
        trace_id: Hex trace id.
        span_id: Hex span id.
        parent_span_id: Hex parent span id, or "" for a root span.
        attributes: Span attributes, decoded to Python values.
        events: (name, attributes) of each span event.
        status_code: The OTLP status code name (``STATUS_CODE_ERROR`` ...).
        status_message: The status description.
        resource: Resource attributes (``service.name`` ...).
        scope: The instrumentation scope name.
    """

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    attributes: dict[str, Any]
    events: list[tuple[str, dict[str, Any]]]
    status_code: str
    status_message: str
    resource: dict[str, Any] = field(default_factory=dict)
    scope: str = ""


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def _attributes(pairs: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pair: KeyValue
    for pair in pairs:
        out[pair.key] = _value(pair.value)
    return out


def decode(body: bytes) -> list[ReceivedSpan]:
    """Flatten one ``ExportTraceServiceRequest`` into spans."""
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    spans: list[ReceivedSpan] = []
    for resource_spans in request.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            for span in scope_spans.spans:
                status = span.status
                spans.append(
                    ReceivedSpan(
                        name=span.name,
                        trace_id=span.trace_id.hex(),
                        span_id=span.span_id.hex(),
                        parent_span_id=span.parent_span_id.hex(),
                        attributes=_attributes(span.attributes),
                        events=[(e.name, _attributes(e.attributes)) for e in span.events],
                        status_code=type(status).StatusCode.Name(status.code),
                        status_message=status.message,
                        resource=resource,
                        scope=scope_spans.scope.name,
                    )
                )
    return spans


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if self.path != TRACES_PATH:
            self._reply(404, b"")
            return
        if self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        try:
            spans = decode(body)
        except Exception:  # a malformed body is the exporter's bug: say so, keep serving
            self._reply(400, b"")
            return
        self.server.receiver._add(spans, self.headers.get("Content-Type", ""))
        self._reply(200, ExportTraceServiceResponse().SerializeToString())

    def _reply(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output quiet


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: OtlpReceiver


class OtlpReceiver:
    """An OTLP/HTTP traces endpoint on 127.0.0.1 (a free port), served from a thread.

    Use as a context manager; :attr:`endpoint` is the base URL to give an exporter
    (``OTEL_EXPORTER_OTLP_ENDPOINT``), :attr:`traces_url` the full traces URL.
    """

    def __init__(self) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="otlp-receiver", daemon=True
        )
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self.content_types: list[str] = []

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def traces_url(self) -> str:
        """``http://127.0.0.1:<port>/v1/traces``."""
        return self.endpoint + TRACES_PATH

    def _add(self, spans: list[ReceivedSpan], content_type: str) -> None:
        with self._lock:
            self._spans.extend(spans)
            self.content_types.append(content_type)

    @property
    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far."""
        with self._lock:
            return list(self._spans)

    def wait_for(
        self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float = 5.0
    ) -> list[ReceivedSpan]:
        """Wait until ``predicate(spans)`` holds; return the spans (raises on timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.spans
            if predicate(spans):
                return spans
            if time.monotonic() > deadline:
                raise TimeoutError(f"OTLP receiver: condition not met; got {len(spans)} spans")
            time.sleep(0.01)

    def start(self) -> OtlpReceiver:
        """Start serving; returns ``self``."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
