"""Live events: a Redis Stream per task, followed live or replayed from the database.

docs/architecture.md, *Live events*: every transition (``queued``, ``running``, ``retrying``,
``postponed``, ``completed``, ``failed``, ``cancelled``) and every model and tool call
(``llm_started``, ``llm_delta``, ``llm_completed``, ``tool_started``, ``tool_completed``) of a task is
published to ``agentq:events:<task id>`` (:mod:`actors.events.publisher`, from the middleware, the
facade and :class:`EventHooks`); ``agent_task_queue.events(...)`` reads them
(:mod:`actors.events.reader`), rebuilding them from the step ledger when the stream has expired
(:mod:`actors.events.replay`).
"""

from __future__ import annotations

from actors.events.hooks import EventHooks
from actors.events.model import Event, InvalidEventId, parse_event_id, stream_key
from actors.events.publisher import EventPublisher, event_sink
from actors.events.reader import EventReader, EventsUnavailable
from actors.events.text import describe, event_line
from middleware.events import NO_EVENTS, TERMINAL_EVENTS, EventSink, EventType

__all__ = [
    "NO_EVENTS",
    "TERMINAL_EVENTS",
    "Event",
    "EventHooks",
    "EventPublisher",
    "EventReader",
    "EventSink",
    "EventType",
    "EventsUnavailable",
    "InvalidEventId",
    "describe",
    "event_line",
    "event_sink",
    "parse_event_id",
    "stream_key",
]
