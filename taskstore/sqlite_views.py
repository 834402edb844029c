"""The SQLite store's reads for the operator's views (the dashboard): the task listing and the overview.

The same rules as ``agentq_list_tasks`` and ``agentq_overview`` in ``taskstore/sql/functions.sql``, in
SQLite's dialect. :class:`~taskstore.sqlite.SqliteTaskStore` passes in how it runs a query (rows decoded
into Python values) and how it writes a timestamp, so this module needs nothing else of it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from taskstore.models import (
    SUMMARY_ERROR_CHARS,
    MinuteCount,
    OrganizationSpend,
    Overview,
    TaskFilter,
    TaskKey,
    TaskStatus,
    TaskSummary,
)
from taskstore.rules import overview_windows, title_pattern

#: Runs ``sql`` with ``params`` and returns its rows decoded (timestamps, money, JSON).
Query = Callable[[str, Mapping[str, Any]], list[dict[str, Any]]]
#: A timestamp as the store writes it.
Stamp = Callable[[datetime], str | None]

_SUMMARY_COLUMNS = (
    "t.id, t.title, t.status, t.priority, t.task_type, t.agent_id, t.organization_id, t.attempts,"
    f" t.max_attempts, substr(t.error, 1, {SUMMARY_ERROR_CHARS}) AS error, t.cost_usd, t.schedule_cron,"
    " t.next_run_at, t.created_at, t.updated_at, t.started_at, t.completed_at, t.failed_at, t.archived_at,"
    " a.name AS agent_name, a.kind AS kind"
)


def list_tasks(
    query: Query,
    stamp: Stamp,
    task_filter: TaskFilter,
    *,
    limit: int,
    after: TaskKey | None,
    before: TaskKey | None,
) -> list[TaskSummary]:
    """See :meth:`taskstore.base.TaskStore.list_tasks`."""
    conditions, params = _filter_conditions(task_filter, stamp)
    direction = "DESC"
    if after is not None:
        conditions.append("(t.created_at, t.id) < (:key_created, :key_id)")
        params.update(key_created=stamp(after.created_at), key_id=after.id)
    elif before is not None:
        conditions.append("(t.created_at, t.id) > (:key_created, :key_id)")
        params.update(key_created=stamp(before.created_at), key_id=before.id)
        direction = "ASC"
    where = " AND ".join(conditions) or "1"
    rows = query(
        f"SELECT {_SUMMARY_COLUMNS} FROM ai_agent_tasks t LEFT JOIN ai_agents a ON a.id = t.agent_id"
        f" WHERE {where} ORDER BY t.created_at {direction}, t.id {direction} LIMIT :limit",
        {**params, "limit": limit},
    )
    summaries = [_summary(row) for row in rows]
    return summaries[::-1] if direction == "ASC" else summaries


def _filter_conditions(task_filter: TaskFilter, stamp: Stamp) -> tuple[list[str], dict[str, Any]]:
    """The ``WHERE`` conditions and parameters of the filters given."""
    conditions: list[str] = []
    params: dict[str, Any] = {}
    status = task_filter.status.value if task_filter.status is not None else None
    simple = (
        ("status", status, "t.status = :status"),
        ("agent_id", task_filter.agent_id, "t.agent_id = :agent_id"),
        ("organization_id", task_filter.organization_id, "t.organization_id = :organization_id"),
        ("kind", task_filter.kind, "t.agent_id IN (SELECT k.id FROM ai_agents k WHERE k.kind = :kind)"),
        ("created_from", _stamp_or_none(stamp, task_filter.created_from), "t.created_at >= :created_from"),
        ("created_to", _stamp_or_none(stamp, task_filter.created_to), "t.created_at < :created_to"),
        ("title", title_pattern(task_filter.title), "t.title LIKE :title ESCAPE '\\'"),
    )
    for name, value, condition in simple:
        if value is not None:
            conditions.append(condition)
            params[name] = value
    return conditions, params


def _stamp_or_none(stamp: Stamp, value: datetime | None) -> str | None:
    return stamp(value) if value is not None else None


def _summary(row: Mapping[str, Any]) -> TaskSummary:
    return TaskSummary(
        id=row["id"],
        title=row["title"],
        status=TaskStatus(row["status"]),
        priority=row["priority"],
        task_type=row["task_type"],
        agent_id=row["agent_id"],
        organization_id=row["organization_id"],
        agent_name=row["agent_name"],
        kind=row["kind"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        error=row["error"],
        cost_usd=row["cost_usd"],
        schedule_cron=row["schedule_cron"],
        next_run_at=row["next_run_at"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        started_at=row["started_at"],
        completed_at=row["completed_at"],
        failed_at=row["failed_at"],
        archived_at=row["archived_at"],
    )


def overview(query: Query, stamp: Stamp, *, now: datetime, organization_id: str | None, top: int) -> Overview:
    """See :meth:`taskstore.base.TaskStore.overview`."""
    hour_ago, day_start, month_start = overview_windows(now)
    org = "" if organization_id is None else " AND t.organization_id = :org"
    params: dict[str, Any] = {
        "org": organization_id,
        "now": stamp(now),
        "hour_ago": stamp(hour_ago),
        "day_start": stamp(day_start),
        "month_start": stamp(month_start),
        "top": top,
    }
    counts = {
        row["status"]: row["n"]
        for row in query(
            "SELECT t.status AS status, count(*) AS n FROM ai_agent_tasks t"
            f" WHERE t.archived_at IS NULL{org} GROUP BY t.status",
            params,
        )
    }
    split = query(
        "SELECT COALESCE(SUM(t.run_at IS NULL OR t.run_at <= :now), 0) AS waiting,"
        " COALESCE(SUM(t.run_at > :now), 0) AS delayed"
        f" FROM ai_agent_tasks t WHERE t.status = 'queued' AND t.archived_at IS NULL{org}",
        params,
    )[0]
    counts.update(waiting=int(split["waiting"]), delayed=int(split["delayed"]))
    minutes = _per_minute(query, org, params)
    return Overview(
        counts=counts,
        completed_last_hour=sum(minute.completed for minute in minutes),
        failed_last_hour=sum(minute.failed for minute in minutes),
        per_minute=minutes,
        depth_by_priority={
            row["priority"]: row["n"]
            for row in query(
                "SELECT t.priority AS priority, count(*) AS n FROM ai_agent_tasks t"
                f" WHERE t.status = 'queued' AND t.archived_at IS NULL{org} GROUP BY t.priority",
                params,
            )
        },
        depth_by_organization=tuple(
            (row["organization_id"], row["n"])
            for row in query(
                "SELECT t.organization_id AS organization_id, count(*) AS n FROM ai_agent_tasks t"
                f" WHERE t.status = 'queued' AND t.archived_at IS NULL{org} GROUP BY t.organization_id"
                " ORDER BY n DESC, t.organization_id LIMIT :top",
                params,
            )
        ),
        spend=_spend(query, org, params),
    )


def _per_minute(query: Query, org: str, params: Mapping[str, Any]) -> tuple[MinuteCount, ...]:
    rows = query(
        "SELECT f.minute AS minute, SUM(f.outcome = 'completed') AS completed,"
        " SUM(f.outcome = 'failed') AS failed FROM ("
        " SELECT substr(t.completed_at, 1, 16) AS minute, 'completed' AS outcome FROM ai_agent_tasks t"
        f"  WHERE t.status = 'completed' AND t.completed_at >= :hour_ago{org}"
        " UNION ALL"
        " SELECT substr(t.failed_at, 1, 16), 'failed' FROM ai_agent_tasks t"
        f"  WHERE t.status = 'failed' AND t.failed_at >= :hour_ago{org}"
        ") f GROUP BY f.minute ORDER BY f.minute",
        params,
    )
    return tuple(
        MinuteCount(
            datetime.fromisoformat(f"{row['minute']}:00").replace(tzinfo=UTC),
            int(row["completed"]),
            int(row["failed"]),
        )
        for row in rows
    )


def _spend(query: Query, org: str, params: Mapping[str, Any]) -> tuple[OrganizationSpend, ...]:
    """As ``organization_spend`` sums it (SQLite's SUM of NUMERIC values), per organization."""
    rows = query(
        "SELECT t.organization_id AS organization_id,"
        " COALESCE(SUM(CASE WHEN r.started_at >= :day_start THEN r.cost_usd END), 0) AS today,"
        " COALESCE(SUM(r.cost_usd), 0) AS month"
        " FROM ai_agent_task_runs r JOIN ai_agent_tasks t ON t.id = r.task_id"
        f" WHERE r.started_at >= :month_start{org}"
        " GROUP BY t.organization_id ORDER BY month DESC, t.organization_id LIMIT :top",
        params,
    )
    return tuple(
        OrganizationSpend(row["organization_id"], Decimal(str(row["today"])), Decimal(str(row["month"])))
        for row in rows
    )
