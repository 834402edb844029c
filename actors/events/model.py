"""A live event as readers see it, its id, and the Redis key of a task's stream.

An event is ``{"id", "type", "task_id", "at", "data"}`` (:meth:`Event.to_dict`). Its id is the Redis
Stream entry id, ``<milliseconds>-<sequence>``; events replayed from the database (the stream
expired) get ids of the same form from their timestamps, so ``after`` works across both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from actors.errors import InvalidArgument
from config.errors import short_repr
from middleware.events import TERMINAL_EVENTS

__all__ = [
    "STREAM_PREFIX",
    "Event",
    "EventId",
    "InvalidEventId",
    "parse_event_id",
    "stream_key",
]

#: Prefix of every task's stream key: ``agentq:events:<task id>`` (the broker's namespace is ``agentq``).
STREAM_PREFIX = "agentq:events:"
#: Largest part of an id Redis accepts (an unsigned 64-bit integer).
_MAX_PART = 2**64 - 1
_ID = re.compile(r"(\d{1,20})-(\d{1,20})")


class InvalidEventId(InvalidArgument):
    """An event id that is not ``<milliseconds>-<sequence>`` (a Redis Stream id: ``1733000000000-0``)."""

    def __init__(self, value: object) -> None:
        super().__init__(
            f"event id {short_repr(value)} is not '<milliseconds>-<sequence>' (e.g. '1733000000000-0'):"
            " pass the id of an event you received, or None to read from the beginning"
        )
        self.value = value


@dataclass(frozen=True, order=True)
class EventId:
    """An event id, ordered as Redis orders stream entries."""

    ms: int
    seq: int = 0

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    def next(self) -> EventId:
        """The smallest id after this one."""
        return EventId(self.ms, self.seq + 1)


#: The id before every event.
BEGINNING = EventId(0, 0)


def parse_event_id(value: object) -> EventId:
    """``value`` as an :class:`EventId`.

    Raises:
        InvalidEventId: ``value`` is not a string ``<milliseconds>-<sequence>`` of two unsigned 64-bit
            integers.
    """
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if not isinstance(value, str):
        raise InvalidEventId(value)
    match = _ID.fullmatch(value)
    if match is None:
        raise InvalidEventId(value)
    ms, seq = int(match.group(1)), int(match.group(2))
    if ms > _MAX_PART or seq > _MAX_PART:
        raise InvalidEventId(value)
    return EventId(ms, seq)


def id_at(when: datetime) -> EventId:
    """The first id at ``when``'s millisecond."""
    return EventId(max(0, int(when.timestamp() * 1000)))


def stream_key(task_id: str) -> str:
    """The Redis key of ``task_id``'s stream."""
    return STREAM_PREFIX + task_id


@dataclass(frozen=True)
class Event:
    """One event of a task.

    Attributes:
        id: ``<milliseconds>-<sequence>``; pass it as ``after`` to read the events after this one.
        type: One of :class:`~middleware.events.EventType`'s values (a ``str``).
        task_id: The task's id.
        at: When it happened, ISO-8601 in UTC.
        data: Details by type (tokens, cost, latency, error …); never secrets, and prompt or output text
            only with ``AGENTQ_TRACE_CONTENT=true``. Replayed events carry ``"replayed": true``.
    """

    id: str
    type: str
    task_id: str
    at: str
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def terminal(self) -> bool:
        """Whether the task ends with this event (completed, failed or cancelled)."""
        return self.type in TERMINAL_EVENTS

    def to_dict(self) -> dict[str, Any]:
        """The event as ``{"id", "type", "task_id", "at", "data"}`` (JSON-friendly)."""
        return {"id": self.id, "type": self.type, "task_id": self.task_id, "at": self.at, "data": self.data}


def iso(when: datetime) -> str:
    """``when`` as ISO-8601 in UTC."""
    return when.astimezone(UTC).isoformat()
