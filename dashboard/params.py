"""Query parameters of the task list (pages and API) parsed into the queue's arguments.

A malformed parameter raises :class:`BadParameter`, which the dashboard answers with 400 naming it.
Times are ISO 8601; one without an offset is UTC (what the browser's ``datetime-local`` inputs send).
Page cursors are opaque to clients: ``base64url("<created_at ISO>|<task id>")``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from actors.arguments import MAX_FILTER_CHARS, MAX_PAGE
from config.errors import AgentQueueError, short_repr
from taskstore import TaskFilter, TaskKey, TaskStatus, normalize_id

#: Rows per page unless ``limit`` says otherwise.
DEFAULT_PAGE = 50
#: Query parameters of the task filter, in the order forms show them.
FILTER_PARAMS = ("status", "agent", "organization", "kind", "from", "to", "title")


class BadParameter(AgentQueueError, ValueError):
    """A query or form parameter that cannot be used; the message names it and its value."""

    def __init__(self, name: str, value: object, expected: str) -> None:
        super().__init__(f"parameter {name!r}: {short_repr(value)} is not {expected}")
        self.name = name


@dataclass(frozen=True)
class ListQuery:
    """A page of the task list as asked for: the filter, the size, and the cursor."""

    task_filter: TaskFilter
    limit: int
    after: TaskKey | None
    before: TaskKey | None
    #: The filter's parameters as given (non-empty ones), to build the links of other pages.
    given: dict[str, str]


def parse_list_query(params: Mapping[str, str], *, organization_id: str | None = None) -> ListQuery:
    """The task list's query; ``organization_id`` (an operator bound to one) overrides ``organization``."""
    given = {name: params[name].strip() for name in FILTER_PARAMS if params.get(name, "").strip()}
    task_filter = parse_filter(given)
    if organization_id is not None:
        given.pop("organization", None)
        task_filter = replace(task_filter, organization_id=organization_id)
    after = parse_cursor("after", params.get("after"))
    before = parse_cursor("before", params.get("before"))
    if after is not None and before is not None:
        raise BadParameter("before", params.get("before"), "allowed together with 'after'")
    return ListQuery(task_filter, parse_limit(params.get("limit")), after, before, given)


def parse_filter(given: Mapping[str, str]) -> TaskFilter:
    """A :class:`TaskFilter` from the non-empty filter parameters."""
    status = given.get("status")
    if status is not None and status not in TaskStatus._value2member_map_:
        raise BadParameter("status", status, f"one of {', '.join(TaskStatus._value2member_map_)}")
    for name in ("kind", "title"):
        if len(given.get(name, "")) > MAX_FILTER_CHARS:
            raise BadParameter(name, given[name], f"at most {MAX_FILTER_CHARS} characters")
    created_from, created_to = parse_time("from", given.get("from")), parse_time("to", given.get("to"))
    return TaskFilter(
        status=TaskStatus(status) if status is not None else None,
        agent_id=parse_uuid("agent", given.get("agent")),
        organization_id=parse_uuid("organization", given.get("organization")),
        kind=given.get("kind"),
        created_from=created_from,
        created_to=created_to,
        title=given.get("title"),
    )


def parse_uuid(name: str, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return normalize_id(value)
    except ValueError:
        raise BadParameter(name, value, "a UUID") from None


def parse_time(name: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise BadParameter(name, value, "an ISO 8601 time such as 2026-12-01T09:30") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def parse_limit(value: str | None) -> int:
    if value is None or value == "":
        return DEFAULT_PAGE
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise BadParameter("limit", value, f"a whole number from 1 to {MAX_PAGE}")
    return int(value)


def encode_cursor(key: TaskKey) -> str:
    """The opaque cursor of a page boundary."""
    return base64.urlsafe_b64encode(f"{key.created_at.isoformat()}|{key.id}".encode()).decode().rstrip("=")


def parse_cursor(name: str, value: str | None) -> TaskKey | None:
    if not value:
        return None
    try:
        text = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        created, _, task_id = text.partition("|")
        moment = datetime.fromisoformat(created)
        if moment.tzinfo is None:
            raise ValueError("naive")
        return TaskKey(moment, normalize_id(task_id))
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadParameter(name, value, "a page cursor from this dashboard") from None
