"""Turning database rows into records, shared by the SQL stores.

Rows arrive here already decoded into Python values (text ids, aware datetimes,
dicts and lists); each store owns the decoding of its own driver's values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from taskstore.models import Agent, Run, RunStatus, Step, StepKind, StepStatus, Task, TaskStatus
from taskstore.schema import AGENTS, RUNS, STEPS, TASKS, table_columns

TASK_COLUMNS = table_columns(TASKS)
AGENT_COLUMNS = table_columns(AGENTS)
RUN_COLUMNS = table_columns(RUNS)
STEP_COLUMNS = table_columns(STEPS)


def agent_from_row(row: Mapping[str, Any], prefix: str = "") -> Agent:
    """An :class:`Agent` from a decoded ``ai_agents`` row (its columns named ``prefix`` + column)."""
    values = {name: row[prefix + name] for name in AGENT_COLUMNS}
    values["allowed_tools"] = tuple(values["allowed_tools"] or ())
    values["is_active"] = bool(values["is_active"])
    values["stream"] = bool(values["stream"])
    values["approval_tools"] = tuple(values["approval_tools"] or ())
    return Agent(**values)


def task_from_row(row: Mapping[str, Any], prefix: str = "") -> Task:
    """A :class:`Task` from a decoded ``ai_agent_tasks`` row (its columns named ``prefix`` + column)."""
    values = {name: row[prefix + name] for name in TASK_COLUMNS}
    values["status"] = TaskStatus(values["status"])
    values["context"] = values["context"] if values["context"] is not None else {}
    return Task(**values)


def run_from_row(row: Mapping[str, Any]) -> Run:
    """A :class:`Run` from a decoded ``ai_agent_task_runs`` row."""
    values = {name: row[name] for name in RUN_COLUMNS}
    values["status"] = RunStatus(values["status"])
    return Run(**values)


def step_from_row(row: Mapping[str, Any]) -> Step:
    """A :class:`Step` from a decoded ``ai_agent_task_steps`` row."""
    values = {name: row[name] for name in STEP_COLUMNS}
    values["kind"] = StepKind(values["kind"])
    values["status"] = StepStatus(values["status"])
    return Step(**values)


def prefixed(prefix: str, columns: tuple[str, ...], alias: str) -> str:
    """``alias.col AS prefix_col, …`` for selecting two tables' columns side by side."""
    return ", ".join(f"{alias}.{column} AS {prefix}{column}" for column in columns)


def in_order(tasks: Iterable[Task], ids: Sequence[str], *, missing_ok: bool = False) -> list[Task]:
    """``tasks`` in the order of ``ids`` (a bulk statement returns rows in any order).

    Raises KeyError for an id without a task unless ``missing_ok`` (then it is left out).
    """
    by_id = {task.id: task for task in tasks}
    return [by_id[task_id] for task_id in ids if not missing_ok or task_id in by_id]
