"""JSON log lines from ``dramatiq actors`` worker processes (``AGENTQ_LOG_FORMAT=json``).

``dramatiq`` configures logging itself, so each worker process switches its root handlers to
:class:`config.logs.JsonFormatter` at boot; the ``agentq`` CLI uses
:func:`config.logs.configure_logging` instead.
"""

from __future__ import annotations

import dramatiq

from config.logs import use_json


class JsonLogs(dramatiq.Middleware):
    """``AGENTQ_LOG_FORMAT=json`` in ``dramatiq actors``: JSON log lines from each worker process."""

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        use_json()


__all__ = ["JsonLogs"]
