"""The middleware that hands the configured secrets to :mod:`config.redaction` in every process.

Once registered they are redacted before anything reaches the database, logs, traces or Sentry
(see docs/architecture.md, *Failure paths*).
"""

from __future__ import annotations

from typing import Any

import dramatiq

from config.redaction import install_redaction, register_settings
from config.settings import Settings


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


__all__ = ["Redaction"]
