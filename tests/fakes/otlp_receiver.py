"""A local OTLP/HTTP trace receiver: ``POST /v1/traces`` with protobuf bodies, decoded and kept.

Point ``OTEL_EXPORTER_OTLP_ENDPOINT`` at :attr:`OTLPReceiver.endpoint`; the real
``opentelemetry-exporter-otlp-proto-http`` exporter posts ``ExportTraceServiceRequest``
messages (gzip when ``OTEL_EXPORTER_OTLP_COMPRESSION=gzip``). :meth:`spans` flattens them.
"""

from __future__ import annotations

import gzip
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

__all__ = ["OTLPReceiver", "ReceivedSpan"]


@dataclass(frozen=True)
class ReceivedSpan:
    """One span as exported: ids in hex, attributes as plain Python values."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    status_code: int
    service_name: str
    events: tuple[str, ...]


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(item) for item in value.array_value.values]
    return getattr(value, kind) if kind else None


class OTLPReceiver:
    """A threaded HTTP server on 127.0.0.1 that accepts OTLP/HTTP protobuf trace exports."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        #: The headers of every POST, in order (lower-cased names).
        self.headers: list[dict[str, str]] = []
        #: When set, every export is answered with this HTTP status and nothing is kept.
        self.reject_with: int | None = None
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver._lock:
                    receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                if receiver.reject_with is not None:
                    self.send_response(receiver.reject_with)
                    self.send_header("content-length", "0")
                    self.end_headers()
                    return
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                if self.path != "/v1/traces":
                    self.send_response(404)
                    self.end_headers()
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                with receiver._lock:
                    receiver.requests.append(request)
                payload = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """The base URL for ``OTEL_EXPORTER_OTLP_ENDPOINT`` (the exporter appends ``/v1/traces``)."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            requests = list(self.requests)
        spans = []
        for request in requests:
            for resource_spans in request.resource_spans:
                resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        spans.append(
                            ReceivedSpan(
                                name=span.name,
                                trace_id=span.trace_id.hex(),
                                span_id=span.span_id.hex(),
                                parent_span_id=span.parent_span_id.hex(),
                                kind=span.kind,
                                attributes={a.key: _value(a.value) for a in span.attributes},
                                status_code=span.status.code,
                                service_name=str(resource.get("service.name", "")),
                                events=tuple(event.name for event in span.events),
                            )
                        )
        return spans

    def wait_for(self, predicate: Callable[[list[ReceivedSpan]], bool], timeout_s: float = 30) -> None:
        """Wait (bounded) until ``predicate(spans)`` holds."""
        deadline = time.monotonic() + timeout_s
        while not predicate(self.spans()):
            if time.monotonic() > deadline:
                names = sorted(span.name for span in self.spans())
                raise AssertionError(f"spans not received in {timeout_s}s; got {names}")
            time.sleep(0.05)

    def __enter__(self) -> Self:
        self.thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
