"""Where views that other parts of the project add plug into the dashboard.

Three seams, each tested with a registered example (tests/dashboard/test_extensions.py):

* :class:`TaskPanel` — a section of the task page, given the job (e.g. approvals waiting on the task, when
  the approvals of issue 16 land: ``get_job(...).pending_approval``).
* :class:`ExtraPage` — a page of its own with a navigation link and, optionally, its JSON twin (e.g. the
  approvals queue, or the provider limits and budgets in use of issue 17's ``agentq limits``).
* :data:`EventSource` — where ``GET /api/tasks/{id}/events`` and the task page's live view read a task's
  events. The default, :func:`dashboard.events.row_events`, follows the task's row and runs (status,
  attempts, run started / ended); issue 15's ``agent_task_queue.events(task_id, after, follow, timeout_s)``
  replaces it with the full stream (model deltas, tool calls).

Panels and pages render with the dashboard's Jinja2 environment (autoescaped), so what they show from the
database is escaped like the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

    from actors.task_queue import Job


@dataclass(frozen=True)
class TaskEvent:
    """One event of a task's stream (the names of issue 15's events: id, type, task_id, at, data)."""

    id: str
    type: str
    task_id: str
    at: datetime
    data: dict[str, Any]


#: ``(task_id, after_event_id)`` → the task's events from there on, ending when the task is finished.
EventSource = Callable[[str, str | None], AsyncIterator[TaskEvent]]


@dataclass(frozen=True)
class TaskPanel:
    """A section of the task page: ``template`` (a Jinja2 template name under the dashboard's loader, or
    a template given as text with ``source``) rendered with ``context(job)``; ``None`` hides it."""

    title: str
    context: Callable[[Job], dict[str, Any] | None]
    template: str | None = None
    source: str | None = None


@dataclass(frozen=True)
class ExtraPage:
    """A page of its own: ``path`` (under ``/``), its navigation label, and its endpoint. The link to an
    ``admin_only`` page is hidden from read-only and organization tokens, to a ``global_only`` one from
    organization tokens (the endpoint itself decides what it refuses); every page needs a login."""

    path: str
    label: str
    endpoint: Callable[[Request], Awaitable[Response]]
    admin_only: bool = False
    methods: tuple[str, ...] = ("GET",)
    #: Whether the page has a navigation link (an API route has none).
    nav: bool = True
    #: Shown to operators of every organization only (not to a token bound to one).
    global_only: bool = False


@dataclass
class Extensions:
    """The panels, pages and event source of one dashboard."""

    task_panels: list[TaskPanel] = field(default_factory=list)
    pages: list[ExtraPage] = field(default_factory=list)
    event_source: EventSource | None = None
