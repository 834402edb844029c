"""A task's live events as Server-Sent Events (``GET /api/tasks/{id}/events``).

The default source, :func:`row_events`, follows what the task store holds: it reads the task and its runs
every :data:`POLL_S` and emits ``status`` when the task's status or attempts change and ``run`` when a run
starts or ends; it ends with ``end`` once the task is finished (completed, failed or cancelled), or after
``timeout_s``. Event ids are ``<updated_at>|<runs>`` so a reconnecting browser (``Last-Event-ID``) resumes
without repeating what it saw. Issue 15's event stream replaces it through
:attr:`dashboard.extensions.Extensions.event_source`.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool

from actors.task_queue import Job
from dashboard.extensions import TaskEvent
from taskstore import TaskStatus, utcnow

#: Seconds between two reads of a followed task.
POLL_S = 1.0
#: Longest a stream stays open (a browser reconnects by itself).
TIMEOUT_S = 600.0
#: Statuses after which nothing more happens to a task (until someone retries it).
FINISHED = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


def row_events(
    read: Callable[[], Job], *, poll_s: float = POLL_S, timeout_s: float = TIMEOUT_S
) -> Callable[[str | None], AsyncIterator[TaskEvent]]:
    """The default event source of one task: ``read()`` returns its job (task and runs)."""

    async def follow(after: str | None) -> AsyncIterator[TaskEvent]:
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


def sse(event: TaskEvent) -> str:
    """``event`` in the text/event-stream format."""
    payload: dict[str, Any] = {"id": event.id, "type": event.type, "task_id": event.task_id}
    payload.update(at=event.at.isoformat(), data=event.data)
    return f"id: {event.id}\nevent: {event.type}\ndata: {json.dumps(payload)}\n\n"
