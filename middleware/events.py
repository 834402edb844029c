"""What the middleware publish as live events, and the sink they publish to (docs/architecture.md,
*Live events*).

A task's events go to a Redis Stream written by :class:`actors.events.EventPublisher`; the middleware
(and the facade) see only :class:`EventSink`, so nothing here imports ``actors``. :data:`NO_EVENTS`
drops everything: events switched off (``AGENTQ_EVENTS_ENABLED=false``), or a broker without Redis.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

__all__ = ["NO_EVENTS", "ORDERING_WAIT_S", "TERMINAL_EVENTS", "EventSink", "EventType", "NoEvents"]

#: Longest a publisher waits for earlier events to reach Redis before a message is sent that other
#: processes react to (``queued`` before the task's message, ``retrying`` before its re-send), so that
#: their events come after; a slow or unreachable Redis is not waited for longer.
ORDERING_WAIT_S = 1.0


class EventType(enum.StrEnum):
    """The type of a live event."""

    #: The task was queued: ``add_task``/``add_tasks``/``retry_job``, a bare ``send``, a schedule's firing.
    QUEUED = "queued"
    #: A worker claimed the task: an attempt (a run) started.
    RUNNING = "running"
    #: A model call is about to be made.
    LLM_STARTED = "llm_started"
    #: Text the model streamed (agents with ``stream``), gathered over a few milliseconds.
    LLM_DELTA = "llm_delta"
    #: A model call ended: tokens, cost and latency (or its error).
    LLM_COMPLETED = "llm_completed"
    #: A tool call is about to run.
    TOOL_STARTED = "tool_started"
    #: A tool call ended (or timed out).
    TOOL_COMPLETED = "tool_completed"
    #: The attempt failed (or stalled); the task runs again after a backoff.
    RETRYING = "retrying"
    #: The attempt was postponed (rate limit, Retry-After) without using an attempt.
    POSTPONED = "postponed"
    #: The task finished with a result.
    COMPLETED = "completed"
    #: The task failed for good (dead letter).
    FAILED = "failed"
    #: The task was cancelled (``remove_job``).
    CANCELLED = "cancelled"
    #: The run stopped at a tool call a person must approve; the task waits (no worker thread held).
    APPROVAL_REQUESTED = "approval_requested"
    #: A person approved the waiting tool call; the task is queued to resume (the tool runs once).
    APPROVED = "approved"
    #: A person rejected the waiting tool call; the task resumes with the rejection as the tool's result.
    REJECTED = "rejected"


#: Events after which a task does nothing more unless queued again (a new firing, ``retry_job``).
TERMINAL_EVENTS = frozenset({EventType.COMPLETED, EventType.FAILED, EventType.CANCELLED})


class EventSink(Protocol):
    """Where live events go. Publishing never raises and never waits on the network."""

    def publish(self, task_id: str, type: EventType, data: Mapping[str, Any] | None = None) -> None:
        """Publish one event of ``task_id`` (``data``: JSON-friendly values)."""

    def publish_many(self, events: Sequence[tuple[str, EventType, Mapping[str, Any]]]) -> None:
        """Publish ``(task_id, type, data)`` events in this order, together."""

    def flush(self, timeout_s: float = ORDERING_WAIT_S) -> bool:
        """Wait (at most ``timeout_s``) until the events published so far are in Redis; ``False`` if not."""


class NoEvents:
    """An :class:`EventSink` that drops every event."""

    def publish(self, task_id: str, type: EventType, data: Mapping[str, Any] | None = None) -> None:
        """Drop the event."""

    def publish_many(self, events: Sequence[tuple[str, EventType, Mapping[str, Any]]]) -> None:
        """Drop the events."""

    def flush(self, timeout_s: float = ORDERING_WAIT_S) -> bool:
        """Nothing to wait for."""
        return True


#: The sink that drops everything.
NO_EVENTS = NoEvents()
