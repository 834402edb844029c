"""JSON log lines carry the current trace and span ids; the default text lines stay verbatim."""

from __future__ import annotations

import json
import logging

from opentelemetry.sdk.trace import TracerProvider

from config.logs import JsonFormatter
from middleware import build_middleware
from middleware.json_logs import JsonLogs
from taskstore import InMemoryTaskStore
from tests.harness import harness_settings


def record(message: str) -> logging.LogRecord:
    return logging.LogRecord("agentq.lifecycle", logging.INFO, __file__, 1, message, (), None)


def test_a_json_line_inside_a_span_carries_its_trace_and_span_ids() -> None:
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        line = JsonFormatter().format(record("[AgentTaskQueue] ✓ Job 1 completed"))

    entry = json.loads(line)
    assert entry["message"] == "[AgentTaskQueue] ✓ Job 1 completed" and entry["level"] == "INFO"
    assert entry["trace_id"] == format(span.get_span_context().trace_id, "032x")
    assert entry["span_id"] == format(span.get_span_context().span_id, "016x")
    assert "trace_id" not in json.loads(JsonFormatter().format(record("outside")))


def test_json_logs_are_added_to_the_worker_stack_only_when_asked() -> None:
    assert not any(isinstance(m, JsonLogs) for m in build_middleware(harness_settings(), InMemoryTaskStore()))
    stack = build_middleware(harness_settings(log_format="json"), InMemoryTaskStore())
    assert any(isinstance(m, JsonLogs) for m in stack)
