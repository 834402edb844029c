"""Dramatiq's ``Retries`` for ordinary actors only.

Agent tasks retry through the task store (``middleware.task_lifecycle``): attempts are
counted in the database, backoff is ``AGENTQ_BACKOFF_MS * 2**(n-1)``, and exhausted
tasks are dead-lettered as ``failed`` rows rather than in Redis. Ordinary actors that
share the broker keep Dramatiq's own behaviour.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Retries as DramatiqRetries

from middleware.agent_messages import agent_kind


class Retries(DramatiqRetries):
    """``dramatiq.middleware.Retries`` that leaves agent-task messages to ``TaskLifecycle``."""

    def after_process_message(
        self,
        broker: dramatiq.Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        if agent_kind(broker, message) is not None:
            return
        super().after_process_message(broker, message, result=result, exception=exception)  # type: ignore[no-untyped-call]
