"""Log setup of ``dramatiq actors`` worker processes.

``dramatiq`` configures logging itself, so each worker process finishes the setup at boot, as the
``agentq`` CLI does in :func:`config.logs.configure_logging`: the HTTP clients' per-request lines
are left out (:func:`config.logs.quiet_http_clients`) and, with ``AGENTQ_LOG_FORMAT=json``, the root
handlers get :class:`config.logs.JsonFormatter`.
"""

from __future__ import annotations

import dramatiq

from config.logs import quiet_http_clients, use_json


class WorkerLogs(dramatiq.Middleware):
    """At worker boot: no line per provider HTTP request; JSON log lines when ``json_lines``."""

    def __init__(self, *, json_lines: bool = False) -> None:
        self.json_lines = json_lines

    def after_process_boot(self, broker: dramatiq.Broker) -> None:
        quiet_http_clients()
        if self.json_lines:
            use_json()


__all__ = ["WorkerLogs"]
