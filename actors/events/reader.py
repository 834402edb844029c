"""Reading a task's events: its Redis Stream, followed live, or the database when the stream is gone.

:meth:`EventReader.events` checks its arguments and that the task exists before it returns, so a
bad call fails at once, not at the first ``next()``. Then it yields:

1. if the task's stream does not exist (it expired ``AGENTQ_EVENTS_TTL_S`` after the task ended, or
   Redis lost it) and the task has been queued: the events :func:`~actors.events.replay.replay`
   rebuilds from the database; an ended task stops there;
2. the stream's events after ``after`` (or the last replayed one), read with ``XREAD``; with
   ``follow``, new ones as they are added, waiting at most :data:`BLOCK_S` per ``XREAD BLOCK``, until
   a terminal event (``completed``, ``failed``, ``cancelled``) is the last one, or ``timeout_s`` has
   passed. A follow whose stream is still missing after a wait asks the database: a task that ended
   meanwhile (its events were not published, e.g. ``AGENTQ_EVENTS_ENABLED=false``) is replayed, and
   the follow ends.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from typing import Any

import redis

from actors.errors import InvalidArgument
from actors.events.model import BEGINNING, STREAM_PREFIX, Event, EventId, parse_event_id, stream_key
from actors.events.replay import replay
from config.errors import AgentQueueError, short_repr
from taskstore import Task, TaskNotFound, TaskStatus, TaskStore, normalize_id

__all__ = ["BLOCK_S", "READ_COUNT", "EventReader", "EventsUnavailable"]

logger = logging.getLogger("agentq.events")

#: Longest one ``XREAD BLOCK`` waits (below the shortest Redis socket timeout allowed, 2 s).
BLOCK_S = 1.0
#: Most stream entries read per ``XREAD``.
READ_COUNT = 1000
_ENDED = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


class EventsUnavailable(AgentQueueError):
    """The task's events could not be read: Redis did not answer, or the broker has no Redis."""


class EventReader:
    """Reads tasks' events (see the module docstring).

    Args:
        client: The Redis client holding the streams; None: only the database (no live events).
        store: Where tasks, runs and the step ledger are.
        record_content: Whether replayed events may carry prompt and output text (``AGENTQ_TRACE_CONTENT``).
        block_s: Longest one blocking read waits.
        clock: Monotonic seconds, for ``timeout_s``.
    """

    def __init__(
        self,
        client: redis.Redis | None,
        store: TaskStore,
        *,
        record_content: bool = False,
        block_s: float = BLOCK_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.client = client
        self.store = store
        self.record_content = record_content
        self.block_s = block_s
        self.clock = clock

    def events(
        self, task_id: str, after: str | None = None, follow: bool = True, timeout_s: float | None = None
    ) -> Iterator[Event]:
        """The task's events after ``after`` (None: from the beginning); see the module docstring.

        Raises:
            InvalidTaskId: ``task_id`` is not a UUID.
            InvalidEventId: ``after`` is not an event id (``<milliseconds>-<sequence>``).
            InvalidArgument: ``follow`` is not a bool, or ``timeout_s`` is not a positive number of seconds.
            TaskNotFound: No task has this id.
            EventsUnavailable: There is no Redis to read from (while reading: Redis stopped answering).
        """
        task_id = normalize_id(task_id)
        start = BEGINNING if after is None else parse_event_id(after)
        if not isinstance(follow, bool):
            raise InvalidArgument(f"follow {short_repr(follow)} must be True or False")
        deadline = None if timeout_s is None else self.clock() + _timeout(timeout_s)
        task = self.store.get_task(task_id)
        if task is None:
            raise TaskNotFound(task_id)
        if self.client is None:
            raise EventsUnavailable(f"the events of task {task_id} are in Redis, and this broker has none")
        return self._read(self.client, task, start, follow, deadline)

    def _read(
        self, client: redis.Redis, task: Task, start: EventId, follow: bool, deadline: float | None
    ) -> Iterator[Event]:
        key = stream_key(task.id)
        last = start
        if not self._exists(client, key) and task.status != TaskStatus.PENDING:
            for event in self._replay(task, last):
                last = parse_event_id(event.id)
                yield event
            if task.status in _ENDED or not follow:
                return
        ended = False
        while True:
            batch = self._xread(client, key, last, None)
            if not batch:
                if not follow or ended:
                    return
                wait = self.block_s if deadline is None else min(self.block_s, deadline - self.clock())
                if wait <= 0:
                    return
                batch = self._xread(client, key, last, wait)
                if not batch:
                    late = self._ended_without_stream(client, key, task.id, last)
                    if late is not None:
                        yield from late
                        return
                    continue
            for event in batch:
                last = parse_event_id(event.id)
                ended = event.terminal
                yield event

    def _replay(self, task: Task, after: EventId) -> list[Event]:
        events = replay(
            task,
            self.store.get_runs(task.id),
            self.store.get_steps(task.id),
            record_content=self.record_content,
        )
        return [event for event in events if parse_event_id(event.id) > after]

    def _ended_without_stream(
        self, client: redis.Redis, key: str, task_id: str, last: EventId
    ) -> list[Event] | None:
        """While following a stream that does not exist: the replayed rest of a task that has ended."""
        if self._exists(client, key):
            return None
        task = self.store.get_task(task_id)
        if task is None or task.status not in _ENDED:
            return None
        return self._replay(task, last)

    @staticmethod
    def _exists(client: redis.Redis, key: str) -> bool:
        try:
            return bool(client.exists(key))
        except redis.RedisError as exc:
            raise EventsUnavailable(f"Redis did not answer while reading events: {exc}") from exc

    def _xread(self, client: redis.Redis, key: str, after: EventId, wait_s: float | None) -> list[Event]:
        block = None if wait_s is None else max(1, int(wait_s * 1000))
        try:
            reply: Any = client.xread({key: str(after)}, count=READ_COUNT, block=block)
        except redis.RedisError as exc:
            raise EventsUnavailable(f"Redis did not answer while reading events: {exc}") from exc
        task_id = key.removeprefix(STREAM_PREFIX)
        return [
            event for entry_id, fields in _entries(reply) if (event := _decode(task_id, entry_id, fields))
        ]


def _entries(reply: Any) -> list[tuple[Any, dict[Any, Any]]]:
    """The entries of one stream in an ``XREAD`` reply: ``[[key, entries]]`` (RESP2) or
    ``{key: [entries]}`` (RESP3); empty when nothing was read."""
    if not reply:
        return []
    if isinstance(reply, dict):
        [value] = reply.values()
        return list(value[0]) if value else []
    return list(reply[0][1])


def _decode(task_id: str, entry_id: Any, fields: dict[Any, Any]) -> Event | None:
    """A stream entry as an :class:`Event`; ``None`` (logged) for an entry we did not write."""
    values = {_text(name): _text(value) for name, value in fields.items()}
    try:
        data = json.loads(values.get("data") or "{}")
    except json.JSONDecodeError:
        data = None
    if not isinstance(data, dict) or "type" not in values or "at" not in values:
        logger.warning("Skipping entry %s of the events of task %s: not an event", _text(entry_id), task_id)
        return None
    return Event(_text(entry_id), values["type"], task_id, values["at"], data)


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else str(value)


def _timeout(value: object) -> float:
    """``timeout_s`` checked: a positive, finite number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise InvalidArgument(f"timeout_s {short_repr(value)} must be a positive number of seconds, or None")
    return float(value)
