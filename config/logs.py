"""Log output: the lifecycle lines as they are (``text``), or one JSON object per line (``json``).

The lines themselves are part of the public contract (see docs/architecture.md, the opening).

``AGENTQ_LOG_FORMAT=json`` makes each record ``{"time", "level", "logger", "message",
"trace_id", "span_id", "process", "thread"}`` (plus ``exc_info`` when there is one); the
ids are the current OpenTelemetry span's, so a log line leads to its trace. The ``agentq``
CLI calls :func:`configure_logging`; ``dramatiq actors`` configures logging itself, so
its worker processes switch their root handlers' formatter at boot
(:class:`middleware.worker_logs.WorkerLogs`).

Both leave out the line ``httpx`` (``httpx2`` under the OpenAI and Anthropic SDKs) writes at ``INFO`` for
every HTTP request (the model calls): one per model call drowns the lifecycle lines and costs CPU at
thousands of runs in flight. A level configured for those loggers is kept.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from opentelemetry import trace

from config.redaction import install_redaction
from config.settings import Settings


class JsonFormatter(logging.Formatter):
    """One JSON object per record, carrying the current trace and span ids."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        if record.exc_info:
            # ``exc_text`` when set: already formatted (and redacted) by ``config.redaction``.
            entry["exc_info"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


#: Loggers that write a line per HTTP request at ``INFO``; raised to ``WARNING`` unless configured.
HTTP_CLIENT_LOGGERS = ("httpx", "httpcore", "httpx2", "httpcore2")


def quiet_http_clients() -> None:
    """Raise :data:`HTTP_CLIENT_LOGGERS` to ``WARNING`` where no level was set for them."""
    for name in HTTP_CLIENT_LOGGERS:
        client_logger = logging.getLogger(name)
        if client_logger.level == logging.NOTSET:
            client_logger.setLevel(logging.WARNING)


def use_json(root: logging.Logger | None = None) -> None:
    """Give every handler of ``root`` (default: the root logger) the JSON formatter."""
    for handler in (root or logging.getLogger()).handlers:
        handler.setFormatter(JsonFormatter())


def configure_logging(settings: Settings) -> None:
    """Configure the root logger for a command: level from the settings, text or JSON lines."""
    logging.basicConfig(level=settings.log_level, format="%(message)s")
    quiet_http_clients()
    if settings.log_format == "json":
        use_json()
    install_redaction(settings)


__all__ = ["HTTP_CLIENT_LOGGERS", "JsonFormatter", "configure_logging", "quiet_http_clients", "use_json"]
