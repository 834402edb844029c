"""The direct-encoding OTLP/HTTP exporter against the local OTLP receiver, and AGENTQ_TRACE_ENCODER."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode

from config.errors import ConfigError
from config.otlp_exporter import DirectOTLPSpanExporter
from config.settings import load_settings
from config.trace_export import span_exporter
from tests.fakes.otlp_receiver import OTLPReceiver


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OTLPReceiver]:
    for name in (
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_HEADERS",
    ):
        monkeypatch.delenv(name, raising=False)
    with OTLPReceiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        yield receiver


def finished_spans() -> list:  # type: ignore[type-arg]
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "agentq-worker"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("agentq.dramatiq")
    with (
        tracer.start_as_current_span(
            "general process", kind=SpanKind.CONSUMER, attributes={"agentq.attempt": 2}
        ),
        tracer.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as chat,
    ):
        chat.set_status(Status(StatusCode.ERROR, "RateLimitError"))
        chat.add_event("exception", {"exception.type": "RateLimitError"})
    provider.shutdown()
    return list(memory.get_finished_spans())


@pytest.mark.parametrize("compression", ["none", "gzip"])
def test_the_receiver_decodes_what_the_direct_exporter_posts(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch, compression: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", compression)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme")
    exporter = DirectOTLPSpanExporter()
    assert exporter.direct

    result = exporter.export(finished_spans())
    exporter.shutdown()  # type: ignore[no-untyped-call]

    assert result == SpanExportResult.SUCCESS
    chat, process = sorted(receiver.spans(), key=lambda span: span.name)
    assert (process.name, process.kind, process.attributes) == ("general process", 5, {"agentq.attempt": 2})
    assert (chat.name, chat.kind, chat.parent_span_id) == ("chat gpt-4o-mini", 3, process.span_id)
    assert chat.trace_id == process.trace_id and chat.status_code == 2 and chat.events == ("exception",)
    assert process.service_name == "agentq-worker"
    [headers] = receiver.headers
    assert headers["content-type"] == "application/x-protobuf" and headers["x-tenant"] == "acme"
    assert headers.get("content-encoding", "none") == ("gzip" if compression == "gzip" else "none")


def test_a_refused_export_is_a_failure(receiver: OTLPReceiver) -> None:
    receiver.reject_with = 400
    exporter = DirectOTLPSpanExporter()

    assert exporter.export(finished_spans()) == SpanExportResult.FAILURE
    assert receiver.spans() == [] and len(receiver.headers) == 1  # 400 is not retried
    exporter.shutdown()  # type: ignore[no-untyped-call]


def test_the_encoder_setting_picks_the_exporter(
    receiver: OTLPReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AGENTQ_TRACE_ENCODER", raising=False)
    direct = span_exporter(load_settings())
    sdk = span_exporter(load_settings(trace_encoder="sdk"))

    assert isinstance(direct, DirectOTLPSpanExporter)
    assert type(sdk) is OTLPSpanExporter
    # The SDK's exporter sends the same request the direct one does.
    spans = finished_spans()
    assert sdk.export(spans) == direct.export(spans) == SpanExportResult.SUCCESS
    assert receiver.requests[0] == receiver.requests[1]
    monkeypatch.setenv("AGENTQ_TRACE_ENCODER", "json")
    with pytest.raises(ConfigError, match="AGENTQ_TRACE_ENCODER"):
        load_settings()
