"""The JSON shapes of the API, and the values pages show: records in, plain data out.

Everything the store holds that may carry a secret a user or a provider put there (context, result,
transcripts, errors, stack traces, steps' inputs and outputs) passes through :func:`config.redaction`
first, so an API key pasted into a task's context is shown as ``[Filtered]``. Nothing here reads the
settings: no key, DSN or database URL can appear in a page or a response.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from actors.approvals import PendingApproval
from actors.task_queue import Job, TaskPage
from config.redaction import redact, redact_data
from dashboard.params import encode_cursor
from dashboard.service import OverviewView
from middleware.presence import WorkerInfo
from taskstore import Run, Step, Task, TaskSummary


def record(value: Mapping[str, Any]) -> dict[str, Any]:
    """A mapping of values as JSON-ready data (see :func:`plain`)."""
    return {str(key): plain(item) for key, item in value.items()}


def plain(value: Any) -> Any:
    """``value`` as JSON-ready data: times as ISO 8601, decimals as strings, enums as their values."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def summary_json(item: TaskSummary) -> dict[str, Any]:
    return record(
        {
            "id": item.id,
            "title": item.title,
            "status": item.status,
            "priority": item.priority,
            "task_type": item.task_type,
            "agent_id": item.agent_id,
            "agent_name": item.agent_name,
            "kind": item.kind,
            "organization_id": item.organization_id,
            "attempts": item.attempts,
            "max_attempts": item.max_attempts,
            "error": redact(item.error) if item.error else None,
            "cost_usd": item.cost_usd,
            "schedule_cron": item.schedule_cron,
            "next_run_at": item.next_run_at,
            "created_at": item.created_at,
            "updated_at": item.updated_at,
            "started_at": item.started_at,
            "completed_at": item.completed_at,
            "failed_at": item.failed_at,
            "archived_at": item.archived_at,
        }
    )


def page_json(page: TaskPage) -> dict[str, Any]:
    return {
        "items": [summary_json(item) for item in page.items],
        "older": encode_cursor(page.older) if page.older else None,
        "newer": encode_cursor(page.newer) if page.newer else None,
    }


_TASK_FIELDS = (
    "id", "agent_id", "organization_id", "title", "description", "task_type", "status", "priority",
    "schedule_cron", "schedule_timezone", "next_run_at", "last_run_at", "max_attempts", "attempts",
    "stalled_count", "postponed_count", "input_tokens", "output_tokens", "cached_input_tokens",
    "reasoning_tokens", "cost_usd", "cancel_requested_at", "queued_at", "started_at", "completed_at",
    "failed_at", "archived_at", "created_at", "updated_at", "run_at", "worker_id",
)  # fmt: skip


def task_json(task: Task) -> dict[str, Any]:
    data: dict[str, Any] = {name: plain(getattr(task, name)) for name in _TASK_FIELDS}
    data.update(
        context=plain(redact_data(task.context)),
        result=plain(redact_data(task.result)) if task.result is not None else None,
        error=redact(task.error) if task.error else None,
    )
    return data


def run_json(run: Run, trace_url: str | None) -> dict[str, Any]:
    return record(
        {
            "id": run.id,
            "attempt": run.attempt,
            "status": run.status,
            "worker_id": run.worker_id,
            "started_at": run.started_at,
            "finished_at": run.finished_at,
            "error": redact(run.error) if run.error else None,
            "stacktrace": redact(run.stacktrace) if run.stacktrace else None,
            "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens,
            "cached_input_tokens": run.cached_input_tokens,
            "reasoning_tokens": run.reasoning_tokens,
            "cost_usd": run.cost_usd,
            "transcript": redact_data(run.transcript) if run.transcript is not None else None,
            "trace_id": run.trace_id,
            "trace_url": trace_url,
        }
    )


def step_json(step: Step) -> dict[str, Any]:
    return record(
        {
            "seq": step.seq,
            "kind": step.kind,
            "name": step.name,
            "status": step.status,
            "run_id": step.run_id,
            "started_at": step.started_at,
            "finished_at": step.finished_at,
            "latency_ms": latency_ms(step.started_at, step.finished_at),
            "input_tokens": step.input_tokens,
            "output_tokens": step.output_tokens,
            "cost_usd": step.cost_usd,
            "input": redact_data(step.input),
            "output": redact_data(step.output),
            "error": redact(step.error) if step.error else None,
        }
    )


def job_json(job: Job, runs: list[dict[str, Any]], steps: list[Step]) -> dict[str, Any]:
    return {
        "task": task_json(job.task),
        "pending_approval": approval_json(job.pending_approval) if job.pending_approval else None,
        "attempts_made": job.attempts_made,
        "failed_reason": redact(job.failed_reason) if job.failed_reason else None,
        "runs": runs,
        "steps": [step_json(step) for step in steps],
    }


def overview_json(view: OverviewView) -> dict[str, Any]:
    overview = view.overview
    return record(
        {
            "paused": view.paused,
            "counts": overview.counts,
            "last_hour": {
                "completed": overview.completed_last_hour,
                "failed": overview.failed_last_hour,
                "failure_rate": view.failure_rate,
                "per_minute": [
                    {"minute": item.minute, "completed": item.completed, "failed": item.failed}
                    for item in overview.per_minute
                ],
            },
            "depth_by_priority": {
                str(key): value for key, value in sorted(overview.depth_by_priority.items())
            },
            "depth_by_organization": [
                {"organization_id": org, "queued": count} for org, count in overview.depth_by_organization
            ],
            "spend": [
                {
                    "organization_id": row.organization_id,
                    "today_usd": row.today,
                    "month_usd": row.month,
                    "monthly_cap_usd": row.cap,
                }
                for row in view.spend
            ],
        }
    )


def schedule_json(task: Task) -> dict[str, Any]:
    return record(
        {
            "task_id": task.id,
            "title": task.title,
            "organization_id": task.organization_id,
            "cron": task.schedule_cron,
            "timezone": task.schedule_timezone or "UTC",
            "enabled": task.next_run_at is not None,
            "next_run_at": task.next_run_at,
            "last_run_at": task.last_run_at,
            "status": task.status,
        }
    )


def approval_json(item: PendingApproval) -> dict[str, Any]:
    return record(
        {
            "task_id": item.task_id,
            "title": item.title,
            "organization_id": item.organization_id,
            "agent_id": item.agent_id,
            "tool": item.tool,
            "arguments": redact_data(item.arguments),
            "reasoning": redact(item.reasoning) if item.reasoning else None,
            "since": item.since,
            "seq": item.seq,
            "call_id": item.call_id,
        }
    )


def worker_json(worker: WorkerInfo) -> dict[str, Any]:
    return {
        "host": worker.host,
        "pid": worker.pid,
        "threads": worker.threads,
        "queues": list(worker.queues),
        "running": list(worker.running),
        "worker_id": worker.worker_id,
        "started_at": datetime.fromtimestamp(worker.started_at, UTC).isoformat(),
        "last_seen": datetime.fromtimestamp(worker.last_seen, UTC).isoformat(),
    }


def latency_ms(start: datetime | None, end: datetime | None) -> int | None:
    if start is None or end is None:
        return None
    return int((end - start).total_seconds() * 1000)


def pretty(value: Any) -> str:
    """``value`` as indented JSON text (for ``<pre>``; autoescaped by the templates)."""
    return json.dumps(plain(redact_data(value)), indent=2, ensure_ascii=False, sort_keys=False)
