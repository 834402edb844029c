"""A task's live events as Server-Sent Events (``GET /api/tasks/{id}/events``).

Two sources:

* :func:`queue_events` (the default) reads the task's live event stream through the facade,
  ``agent_task_queue.events`` (queued, running, model and tool calls with streamed text, retrying,
  completed …; rebuilt from the database once the stream has expired), polling it every
  :data:`EVENTS_POLL_S` so that a closed browser is noticed within that time;
* :func:`row_events` follows the task's row and runs only (``status`` and ``run`` events), for a queue
  whose broker has no Redis streams.

Either ends with an ``end`` event once the task is finished, or after :data:`TIMEOUT_S`; a reconnecting
browser resumes after the last id it saw (``Last-Event-ID``). An extension may supply another source
(:attr:`dashboard.extensions.Extensions.event_source`).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool

from actors.task_queue import AgentTaskQueue, Job
from dashboard.extensions import EventSource, TaskEvent
from taskstore import TaskStatus, utcnow

#: Seconds between two reads of a followed task's row (:func:`row_events`).
POLL_S = 1.0
#: Seconds between two reads of a task's event stream (:func:`queue_events`).
EVENTS_POLL_S = 0.3
#: Longest a stream stays open (a browser reconnects by itself).
TIMEOUT_S = 600.0
#: Statuses after which nothing more happens to a task (until someone retries it).
FINISHED = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


def row_events(
    read: Callable[[], Job], *, poll_s: float = POLL_S, timeout_s: float = TIMEOUT_S
) -> EventSource:
    """The event source of one task's row and runs: ``read()`` returns its job (the source's ``task_id``
    argument is that job's)."""

    async def follow(task_id: str, after: str | None) -> AsyncIterator[TaskEvent]:
        seen_runs: dict[str, str] = {}
        last_status: tuple[str, int] | None = None
        deadline = time.monotonic() + timeout_s
        while True:
            job = await run_in_threadpool(read)
            task = job.task
            marker = f"{task.updated_at.isoformat()}|{len(job.runs)}"
            if marker != after:
                for run in job.runs:
                    state = run.status.value
                    if seen_runs.get(run.id) != state:
                        seen_runs[run.id] = state
                        data = {"run_id": run.id, "attempt": run.attempt, "status": state, "error": run.error}
                        yield TaskEvent(marker, "run", task.id, run.finished_at or run.started_at, data)
                if (task.status.value, task.attempts) != last_status:
                    last_status = (task.status.value, task.attempts)
                    data = {"status": task.status.value, "attempts": task.attempts, "error": task.error}
                    yield TaskEvent(marker, "status", task.id, task.updated_at, data)
                after = marker
            if task.status in FINISHED:
                yield TaskEvent(marker, "end", task.id, utcnow(), {"status": task.status.value})
                return
            if time.monotonic() > deadline:
                return
            await asyncio.sleep(poll_s)

    return follow


def queue_events(
    queue: AgentTaskQueue, *, poll_s: float = EVENTS_POLL_S, timeout_s: float = TIMEOUT_S
) -> EventSource:
    """The event source reading ``queue.events`` (the task's stream, or its replay from the database)."""

    async def follow(task_id: str, after: str | None) -> AsyncIterator[TaskEvent]:
        deadline = time.monotonic() + timeout_s
        last = after
        while time.monotonic() < deadline:
            batch = await run_in_threadpool(_read_events, queue, task_id, last)
            for event in batch:
                last = event.id
                yield TaskEvent(event.id, event.type, task_id, datetime.fromisoformat(event.at), event.data)
                if event.terminal:
                    yield TaskEvent(event.id, "end", task_id, utcnow(), {"status": event.type})
                    return
            await asyncio.sleep(poll_s)

    return follow


def _read_events(queue: AgentTaskQueue, task_id: str, after: str | None) -> list[Any]:
    return list(queue.events(task_id, after=after, follow=False))


def sse(event: TaskEvent) -> str:
    """``event`` in the text/event-stream format."""
    payload: dict[str, Any] = {"id": event.id, "type": event.type, "task_id": event.task_id}
    payload.update(at=event.at.isoformat(), data=event.data)
    return f"id: {event.id}\nevent: {event.type}\ndata: {json.dumps(payload)}\n\n"
