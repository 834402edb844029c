"""Wiring settings into a store, a broker, an orchestrator and the queue facade."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import dramatiq

from actors.broker import build_broker
from actors.task_queue import AgentTaskQueue
from config.settings import Settings
from orchestrator import Orchestrator
from taskstore import RetentionPolicy, TaskStore, build_store, utcnow


@dataclass
class Runtime:
    """Everything a process needs, built from one :class:`Settings`. Connects lazily."""

    settings: Settings
    store: TaskStore
    broker: dramatiq.Broker
    queue: AgentTaskQueue
    _orchestrator: Orchestrator | None = field(default=None, repr=False)

    def orchestrator(self) -> Orchestrator:
        """The orchestrator, built on first use."""
        if self._orchestrator is None:
            self._orchestrator = Orchestrator()
        return self._orchestrator


def build_runtime(
    settings: Settings,
    *,
    store: TaskStore | None = None,
    broker: dramatiq.Broker | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> Runtime:
    """A runtime from ``settings``; ``store`` and ``broker`` may be supplied (tests)."""
    store = store if store is not None else build_store(settings)
    broker = broker if broker is not None else build_broker(settings, store, clock=clock)
    retention = RetentionPolicy(
        completed_age_s=settings.keep_completed_age_s,
        completed_count=settings.keep_completed_count,
        failed_age_s=settings.keep_failed_age_s,
        failed_count=settings.keep_failed_count,
    )
    queue = AgentTaskQueue(
        store,
        broker,
        max_attempts=settings.max_attempts,
        max_context_bytes=settings.max_context_bytes,
        retention=retention,
        clock=clock,
    )
    return Runtime(settings=settings, store=store, broker=broker, queue=queue)
