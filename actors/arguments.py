"""Checks of the queue's public arguments (docs/architecture.md, *Bad input*).

Each check raises an :class:`~config.errors.AgentQueueError` subclass naming the bad value; a check of
one item of a list argument names the item too (``tasks[3]: …``), keeping the error's type.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from typing import Any

from actors.errors import (
    AgentInactive,
    AgentOrganizationMismatch,
    InvalidArgument,
    InvalidDelay,
    InvalidPriority,
)
from config.errors import AgentQueueError, short_repr
from taskstore import (
    Agent,
    AgentNotFound,
    InvalidTransition,
    NewTask,
    Task,
    TaskFilter,
    TaskKey,
    TaskStatus,
    normalize_id,
)

#: Longest delay Dramatiq's Redis broker accepts (7 days).
MAX_DELAY_MS = 7 * 24 * 3600 * 1000
#: Longest task ``title``, in characters: a title is a short label, shown in lists and logs.
MAX_TITLE_CHARS = 500
#: Longest task ``description``, in characters (about 5,000 tokens of prompt); larger inputs
#: belong in ``context`` (bounded by ``AGENTQ_MAX_CONTEXT_BYTES``) or behind a tool.
MAX_DESCRIPTION_CHARS = 20_000
#: Most items in one ``create_tasks`` or ``add_tasks`` call (one statement, one Redis transaction);
#: split larger batches.
MAX_BATCH = 1_000


#: ``create_task``'s keyword arguments: what each item of ``create_tasks`` may hold.
TASK_FIELDS = ("agent_id", "organization_id", "title", "description", "context", "priority", "task_type")
_REQUIRED_TASK_FIELDS = ("agent_id", "organization_id", "title")


def task_fields(fields: object) -> dict[str, Any]:
    """One item of ``create_tasks``: a mapping of ``create_task``'s keyword arguments."""
    if not isinstance(fields, Mapping):
        raise InvalidArgument(f"{short_repr(fields)} is not a mapping of create_task's arguments")
    unknown = sorted(short_repr(name) for name in fields if name not in TASK_FIELDS)
    if unknown:
        raise InvalidArgument(
            f"unknown argument(s) {', '.join(unknown)}; create_task takes {', '.join(TASK_FIELDS)}"
        )
    missing = [name for name in _REQUIRED_TASK_FIELDS if name not in fields]
    if missing:
        raise InvalidArgument(f"missing argument(s) {', '.join(missing)}")
    return dict(fields)


@contextmanager
def item(name: str, index: int) -> Iterator[None]:
    """Name the item of a list argument in the error raised for it: ``tasks[3]: …`` (same error type)."""
    try:
        yield
    except AgentQueueError as exc:
        exc.args = (f"{name}[{index}]: {exc}", *exc.args[1:])
        raise


def check_batch(name: str, items: object, what: str) -> Sequence[Any]:
    """A bulk call's list argument: a sequence (not a str or mapping) of at most :data:`MAX_BATCH` items."""
    if isinstance(items, str | bytes | Mapping) or not isinstance(items, Sequence):
        raise InvalidArgument(f"{name} {short_repr(items)} must be a sequence of {what}")
    if len(items) > MAX_BATCH:
        raise InvalidArgument(f"{name} has {len(items)} items; at most {MAX_BATCH} per call, split the batch")
    return items


def unstorable_text(value: object) -> str | None:
    """Why a database cannot store ``value`` (a string, or strings and keys inside lists and dicts): a NUL
    character or a lone surrogate, which neither Postgres text nor JSON(B) accepts; ``None`` if it can."""
    if isinstance(value, str):
        if "\x00" in value:
            return "a NUL character (U+0000)"
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "a lone surrogate (not valid Unicode)"
        return None
    if isinstance(value, Mapping):
        items: list[object] = [*value.keys(), *value.values()]
        return next(filter(None, map(unstorable_text, items)), None)
    if isinstance(value, list | tuple):
        return next(filter(None, map(unstorable_text, value)), None)
    return None


def check_storable(name: str, value: object) -> None:
    """:class:`InvalidArgument` naming ``name`` when :func:`unstorable_text` finds something."""
    problem = unstorable_text(value)
    if problem is not None:
        raise InvalidArgument(
            f"{name} {short_repr(value)} contains {problem}, which the database cannot store"
        )


def check_title(title: object) -> None:
    """A task title: a non-blank string of at most :data:`MAX_TITLE_CHARS` characters."""
    if not isinstance(title, str) or not title.strip():
        raise InvalidArgument(f"title {short_repr(title)} must be a non-empty string")
    check_storable("title", title)
    if len(title) > MAX_TITLE_CHARS:
        raise InvalidArgument(
            f"title {short_repr(title)} is longer than {MAX_TITLE_CHARS} characters;"
            " put the details in description or context"
        )


def check_description(description: object) -> None:
    """A task description: None or a string of at most :data:`MAX_DESCRIPTION_CHARS` characters."""
    if description is not None and not isinstance(description, str):
        raise InvalidArgument(f"description {short_repr(description)} must be a string or None")
    if description is not None and len(description) > MAX_DESCRIPTION_CHARS:
        raise InvalidArgument(
            f"description {short_repr(description)} is longer than {MAX_DESCRIPTION_CHARS} characters;"
            " put large inputs in context or behind a tool"
        )
    check_storable("description", description)


def check_ids(task_ids: object) -> list[str]:
    """``add_tasks``' ids (at most :data:`MAX_BATCH`), each normalized; an id given twice is an error."""
    task_ids = check_batch("task_ids", task_ids, "task ids")
    ids: list[str] = []
    seen: dict[str, int] = {}
    for index, value in enumerate(task_ids):
        with item("task_ids", index):
            task_id = normalize_id(value)
            if task_id in seen:
                raise InvalidArgument(
                    f"task id {task_id!r} is given twice (also at task_ids[{seen[task_id]}])"
                )
        seen[task_id] = index
        ids.append(task_id)
    return ids


def check_agent(agent: Agent | None, task: NewTask) -> None:
    """The agent of a new task: it exists, is active, and belongs to the task's organization."""
    if agent is None:
        raise AgentNotFound(task.agent_id)
    if not agent.is_active:
        raise AgentInactive(task.agent_id)
    if agent.organization_id != task.organization_id:
        raise AgentOrganizationMismatch(task.agent_id, task.organization_id)


def check_pending(task: Task) -> None:
    """The task can be queued: it is ``pending``."""
    if task.status != TaskStatus.PENDING:
        hint = "use retry_job for a failed task" if task.status == TaskStatus.FAILED else ""
        raise InvalidTransition(task.id, task.status.value, TaskStatus.QUEUED.value, hint)


def check_delay(delay_ms: object) -> None:
    """A delay in milliseconds: an int from 0 to 7 days."""
    if isinstance(delay_ms, bool) or not isinstance(delay_ms, int) or not 0 <= delay_ms <= MAX_DELAY_MS:
        raise InvalidDelay(delay_ms)


def check_page(limit: object, offset: object) -> None:
    """Paging arguments: non-negative ints."""
    for name, value in (("limit", limit), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidArgument(f"{name} {short_repr(value)} must be a non-negative int")


def check_priority(priority: object) -> None:
    """A priority: an int from 0 to 10."""
    if isinstance(priority, bool) or not isinstance(priority, int) or not 0 <= priority <= 10:
        raise InvalidPriority(priority)


#: Most tasks one ``list_tasks`` page holds.
MAX_PAGE = 500
#: Longest ``kind`` or title text a task filter takes.
MAX_FILTER_CHARS = 200


def check_page_size(limit: object) -> int:
    """A page size: an int from 1 to :data:`MAX_PAGE`."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_PAGE:
        raise InvalidArgument(f"limit {short_repr(limit)} must be an int from 1 to {MAX_PAGE}")
    return limit


def check_task_filter(task_filter: object) -> TaskFilter:
    """A :class:`~taskstore.TaskFilter` with its ids normalized, its text bounded and its times aware."""
    if task_filter is None:
        return TaskFilter()
    if not isinstance(task_filter, TaskFilter):
        raise InvalidArgument(f"task_filter {short_repr(task_filter)} must be a taskstore.TaskFilter")
    if task_filter.status is not None and not isinstance(task_filter.status, TaskStatus):
        raise InvalidArgument(f"status {short_repr(task_filter.status)} must be a TaskStatus")
    for name in ("kind", "title"):
        value = getattr(task_filter, name)
        if value is not None and (not isinstance(value, str) or not value or len(value) > MAX_FILTER_CHARS):
            raise InvalidArgument(f"{name} {short_repr(value)} must be 1 to {MAX_FILTER_CHARS} characters")
    for name in ("created_from", "created_to"):
        value = getattr(task_filter, name)
        if value is not None and (not isinstance(value, datetime) or value.tzinfo is None):
            raise InvalidArgument(f"{name} {short_repr(value)} must be a timezone-aware datetime")
    return replace(
        task_filter,
        agent_id=None if task_filter.agent_id is None else normalize_id(task_filter.agent_id, "agent id"),
        organization_id=(
            None
            if task_filter.organization_id is None
            else normalize_id(task_filter.organization_id, "organization id")
        ),
    )


def check_task_key(name: str, key: object) -> TaskKey | None:
    """A page boundary: ``None`` or a :class:`~taskstore.TaskKey` with an aware time and a task id."""
    if key is None:
        return None
    aware = isinstance(key, TaskKey) and isinstance(key.created_at, datetime) and key.created_at.tzinfo
    if not isinstance(key, TaskKey) or not aware:
        raise InvalidArgument(f"{name} {short_repr(key)} must be a TaskKey with a timezone-aware created_at")
    return TaskKey(key.created_at, normalize_id(key.id))
