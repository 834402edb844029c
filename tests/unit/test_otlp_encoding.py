"""The direct OTLP encoder writes the SDK encoder's bytes, checked by parsing with opentelemetry-proto."""

from __future__ import annotations

import logging

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk_encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from config.otlp_encoding import encode_spans


def parsed(body: bytes) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    request.ParseFromString(body)
    return request


def record(build: object, *, resource: Resource | None = None) -> list[ReadableSpan]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=resource or Resource.create({"service.name": "agentq-test"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    assert callable(build)
    build(provider)
    provider.shutdown()
    return list(exporter.get_finished_spans())


def assert_same_as_sdk(spans: list[ReadableSpan]) -> None:
    expected = sdk_encode_spans(spans)
    assert parsed(encode_spans(spans)) == expected
    assert encode_spans(spans) == expected.SerializePartialToString()


def test_a_tasks_spans_encode_as_the_sdk_encodes_them() -> None:
    def build(provider: TracerProvider) -> None:
        queue = provider.get_tracer("agentq.dramatiq")
        agent = provider.get_tracer(
            "agentq.orchestrator", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.30.0"
        )
        remote = SpanContext(
            0xABC, 0xDEF, is_remote=True, trace_flags=TraceFlags(1), trace_state=TraceState([("k", "v")])
        )
        parent = trace.set_span_in_context(NonRecordingSpan(remote))
        with (
            queue.start_as_current_span(
                "general process",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes={"messaging.system": "dramatiq", "agentq.attempt": 1, "agentq.skipped": False},
            ),
            agent.start_as_current_span("invoke_agent analyst") as run,
        ):
            with agent.start_as_current_span("chat gpt-4o-mini", kind=SpanKind.CLIENT) as chat:
                chat.set_attributes(
                    {
                        "gen_ai.usage.input_tokens": 1_000_000,
                        "gen_ai.request.temperature": 0.2,
                        "gen_ai.response.finish_reasons": ("stop", "length"),
                        "agentq.flags": (True, False),
                        "agentq.counts": (1, -2, 2**63 - 1),
                        "agentq.ratios": (0.5, -1e300),
                        "agentq.text": "ünïcödé ✓ " + "x" * 300,
                        "agentq.empty": "",
                        "agentq.negative": -(2**63),
                    }
                )
            run.add_event("exception", {"exception.type": "RuntimeError", "exception.message": "boom"})
            run.set_status(Status(StatusCode.ERROR, "RuntimeError: boom"))
        with queue.start_as_current_span(
            "general publish",
            kind=SpanKind.PRODUCER,
            links=[Link(remote, {"agentq.why": "retry"}), Link(SpanContext(0x1, 0x2, is_remote=False))],
        ) as publish:
            publish.set_status(Status(StatusCode.OK))
        for kind in SpanKind:
            queue.start_span(f"kind {kind.name}", kind=kind).end()

    assert_same_as_sdk(record(build))


def test_resources_scopes_and_schema_urls_group_as_in_the_sdk() -> None:
    def build(provider: TracerProvider) -> None:
        for name in ("a", "b", "a"):
            provider.get_tracer(name).start_span(f"span from {name}").end()

    resource = Resource.create(
        {"service.name": "w", "deployment.environment": "test"}, "https://example.com/s"
    )
    assert_same_as_sdk(record(build, resource=resource))
    assert_same_as_sdk([])


def test_limits_dropped_counts_and_a_batch_of_many_spans() -> None:
    from opentelemetry.sdk.trace import SpanLimits

    exporter = InMemorySpanExporter()
    provider = TracerProvider(span_limits=SpanLimits(max_span_attributes=2, max_events=1, max_links=1))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("limits")
    links = [Link(SpanContext(i + 1, i + 1, is_remote=True)) for i in range(3)]
    with tracer.start_as_current_span("limited", links=links, attributes={"a": 1, "b": 2, "c": 3}) as span:
        span.add_event("one")
        span.add_event("two")
    for index in range(600):
        tracer.start_span(f"span {index}", attributes={"index": index}).end()
    spans = list(exporter.get_finished_spans())
    assert spans[0].dropped_attributes and spans[0].dropped_events and spans[0].dropped_links
    assert_same_as_sdk(spans)


def test_a_value_otlp_cannot_hold_drops_that_attribute_and_logs_it(caplog: pytest.LogCaptureFixture) -> None:
    def build(provider: TracerProvider) -> None:
        span = provider.get_tracer("t").start_span("big int")
        span.set_attribute("kept", "yes")
        span.set_attribute("too.big", 2**64)  # the SDK takes it; OTLP's int64 cannot hold it
        span.end()

    [span] = record(build)
    with caplog.at_level(logging.ERROR, logger="agentq.telemetry"):
        request = parsed(encode_spans([span]))
    [encoded] = request.resource_spans[0].scope_spans[0].spans
    assert [attribute.key for attribute in encoded.attributes] == ["kept"]
    assert "too.big" in caplog.text
    assert request == sdk_encode_spans([span])  # the SDK's encoder drops it too
