"""Exporting traces: a per-process OpenTelemetry SDK tracer provider sending OTLP over HTTP.

The spans themselves are made by :mod:`middleware.tracing` (messages) and
:mod:`orchestrator.tracing` (the agent loop); this module only decides where they go.
Nothing happens at import. :func:`configure_tracing` runs once per process — from
:class:`middleware.tracing.Tracing`'s ``after_process_boot`` in workers, from the first enqueue
in producers — and installs a global :class:`~opentelemetry.sdk.trace.TracerProvider` with a batch OTLP/HTTP
exporter (:class:`config.otlp_exporter.DirectOTLPSpanExporter`, or the SDK's own with
``AGENTQ_TRACE_ENCODER=sdk``) **only** when an endpoint is configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
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
from typing import TYPE_CHECKING

from opentelemetry import trace

from config.redaction import register_settings
from config.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

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
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        attributes = {} if settings.otel_service_name else {SERVICE_NAME: DEFAULT_SERVICE_NAME}
        provider = TracerProvider(resource=Resource.create(attributes))
        provider.add_span_processor(BatchSpanProcessor(span_exporter(settings)))
        trace.set_tracer_provider(provider)
        if trace.get_tracer_provider() is not provider:
            logger.info("A tracer provider was already installed; agentq spans go to it")
            provider.shutdown()
            return False
        _provider = provider
        logger.info("Exporting traces over OTLP/HTTP (%s encoding)", settings.trace_encoder)
        return True


def span_exporter(settings: Settings) -> SpanExporter:
    """The OTLP/HTTP exporter ``AGENTQ_TRACE_ENCODER`` asks for: ``direct`` (default) or the SDK's ``sdk``."""
    if settings.trace_encoder == "sdk":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from config.otlp_exporter import DirectOTLPSpanExporter

    return DirectOTLPSpanExporter()


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


__all__ = ["DEFAULT_SERVICE_NAME", "configure_tracing", "shutdown_tracing", "span_exporter"]
