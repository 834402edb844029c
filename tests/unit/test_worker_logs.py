"""Worker log setup: JSON lines carry the current trace and span ids, text lines stay verbatim, and the
HTTP clients write no line per request."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import dramatiq
import pytest
from opentelemetry.sdk.trace import TracerProvider

from config.logs import HTTP_CLIENT_LOGGERS, JsonFormatter
from middleware import build_middleware
from middleware.worker_logs import WorkerLogs
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


def test_every_worker_sets_up_its_logs_and_json_lines_only_when_asked() -> None:
    (text,) = [
        m for m in build_middleware(harness_settings(), InMemoryTaskStore()) if isinstance(m, WorkerLogs)
    ]
    stack = build_middleware(harness_settings(log_format="json"), InMemoryTaskStore())
    (json_lines,) = [m for m in stack if isinstance(m, WorkerLogs)]

    assert (text.json_lines, json_lines.json_lines) == (False, True)


@pytest.fixture
def http_loggers() -> Iterator[list[logging.Logger]]:
    loggers = [logging.getLogger(name) for name in HTTP_CLIENT_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.NOTSET)
    yield loggers
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


def test_at_boot_the_http_clients_write_no_line_per_request(
    http_loggers: list[logging.Logger], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    broker = dramatiq.get_broker()

    WorkerLogs().after_process_boot(broker)
    logging.getLogger("httpx").info(
        'HTTP Request: POST http://127.0.0.1/v1/chat/completions "HTTP/1.1 200 OK"'
    )
    logging.getLogger("httpx").warning("a warning still shows")

    assert [logger.level for logger in http_loggers] == [logging.WARNING] * len(http_loggers)
    assert [r.getMessage() for r in caplog.records if r.name == "httpx"] == ["a warning still shows"]


def test_a_level_set_for_an_http_client_is_kept(http_loggers: list[logging.Logger]) -> None:
    http_loggers[0].setLevel(logging.DEBUG)

    WorkerLogs().after_process_boot(dramatiq.get_broker())

    assert http_loggers[0].level == logging.DEBUG
