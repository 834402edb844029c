"""Per-process OpenTelemetry set-up: an SDK tracer provider exporting OTLP over HTTP.

Nothing happens at import. :func:`configure_tracing` runs once per process — from
``Tracing.after_process_boot`` in workers, from the first enqueue in producers — and
installs a global :class:`~opentelemetry.sdk.trace.TracerProvider` with a batch OTLP/HTTP
exporter **only** when an endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), ``OTEL_SDK_DISABLED`` is not true and
``OTEL_TRACES_EXPORTER`` is not ``none``. Otherwise the API's no-op provider stays: spans
are non-recording and cost well under a microsecond each. An application that installed
its own provider keeps it.

The SDK reads the other standard variables itself: ``OTEL_SERVICE_NAME`` /
``OTEL_RESOURCE_ATTRIBUTES`` (default service name ``agentq``), ``OTEL_TRACES_SAMPLER`` /
``OTEL_TRACES_SAMPLER_ARG``, ``OTEL_EXPORTER_OTLP_HEADERS``, ``OTEL_BSP_*``.
:func:`shutdown_tracing` flushes and shuts the provider down (``after_worker_shutdown``;
producers are flushed by the SDK's ``atexit`` hook).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import dramatiq
from opentelemetry import trace

from config.logs import use_json
from config.redaction import install_redaction, register_settings
from config.settings import Settings

logger = logging.getLogger("agentq.telemetry")

#: Service name when ``OTEL_SERVICE_NAME`` is not set.
DEFAULT_SERVICE_NAME = "agentq"

_lock = threading.Lock()
_provider: object | None = None
_configured = False


def configure_tracing(settings: Settings) -> bool:
    """Install the OTLP/HTTP exporting tracer provider if ``settings`` ask for it; True if installed."""
    global _configured, _provider
    with _lock:
        if _configured:
            return _provider is not None
        _configured = True
        register_settings(settings)
        if not settings.tracing_enabled():
            return False
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        attributes = {} if settings.otel_service_name else {SERVICE_NAME: DEFAULT_SERVICE_NAME}
        provider = TracerProvider(resource=Resource.create(attributes))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        trace.set_tracer_provider(provider)
        if trace.get_tracer_provider() is not provider:
            logger.info("A tracer provider was already installed; agentq spans go to it")
            provider.shutdown()
            return False
        _provider = provider
        logger.info("Exporting traces over OTLP/HTTP")
        return True


def shutdown_tracing() -> None:
    """Flush pending spans and shut the exporting provider down (no-op when none was installed)."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
    if provider is not None:
        from opentelemetry.sdk.trace import TracerProvider

        assert isinstance(provider, TracerProvider)
        provider.force_flush()
        provider.shutdown()


class Redaction(dramatiq.Middleware):
    """Secrets stay in: at worker boot (and a producer's first enqueue) register the configured
    secrets with :mod:`config.redaction` and redact every line the root logger's handlers write."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._registered = False

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        install_redaction(self.settings)

    def before_enqueue(
        self, broker: dramatiq.Broker, message: dramatiq.Message[Any], delay: int | None
    ) -> None:
        if not self._registered:
            self._registered = True
            register_settings(self.settings)


class JsonLogs(dramatiq.Middleware):
    """``AGENTQ_LOG_FORMAT=json`` in ``dramatiq actors``: JSON log lines from each worker process."""

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        use_json()


__all__ = ["DEFAULT_SERVICE_NAME", "JsonLogs", "Redaction", "configure_tracing", "shutdown_tracing"]
