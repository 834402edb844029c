"""The step ledger's statements on SQLite, shared by the SQLite and in-memory stores.

The same compare-and-set rules as the Postgres family's ``agentq_start_step``/``agentq_finish_step``
(``taskstore/sql/functions.sql``): a step is written only by the run that holds the task in the
step's firing; a started step not completed may be taken over by a later run that found it.
"""

from __future__ import annotations

import sqlite3
from typing import Any

from taskstore.rules import accepts_sql

#: The task is held by run ``:run_id`` in firing ``:firing``.
_HELD = (
    "EXISTS (SELECT 1 FROM ai_agent_tasks WHERE id = :task_id"
    f" AND {accepts_sql('finish')} AND current_run_id = :run_id AND firing = :firing)"
)

START_STEP = (
    "INSERT INTO ai_agent_task_steps AS s"
    " (id, task_id, run_id, firing, seq, kind, name, status, input, started_at)"
    " SELECT :id, :task_id, :run_id, :firing, :seq, :kind, :name, 'started', :input, :now"
    f" WHERE {_HELD}"
    " ON CONFLICT (task_id, firing, seq) DO UPDATE"
    " SET run_id = excluded.run_id, kind = excluded.kind, name = excluded.name, status = 'started',"
    " input = excluded.input, output = NULL, input_tokens = 0, output_tokens = 0, cost_usd = NULL,"
    " started_at = excluded.started_at, finished_at = NULL, error = NULL"
    " WHERE s.status <> 'completed' AND (s.run_id = excluded.run_id OR s.run_id = :replaces)"
)

FINISH_STEP = (
    "UPDATE ai_agent_task_steps SET status = :status, output = :output, input_tokens = :input_tokens,"
    " output_tokens = :output_tokens, cost_usd = :cost_usd, error = :error, finished_at = :now"
    " WHERE task_id = :task_id AND firing = :firing AND seq = :seq AND run_id = :run_id"
    " AND (status = 'started' OR (status = :status AND finished_at = :now))"
    f" AND {_HELD}"
)

#: A whole step, started and ended, in one go (``record_step``; ``complete(step=…)``).
RECORD_STEP = (
    "INSERT INTO ai_agent_task_steps AS s (id, task_id, run_id, firing, seq, kind, name, status, input,"
    " output, input_tokens, output_tokens, cost_usd, started_at, finished_at, error)"
    " SELECT :id, :task_id, :run_id, :firing, :seq, :kind, :name, :status, :input, :output, :input_tokens,"
    " :output_tokens, :cost_usd, :started_at, :finished_at, :error"
    f" WHERE {_HELD}"
    " ON CONFLICT (task_id, firing, seq) DO UPDATE SET run_id = excluded.run_id, kind = excluded.kind,"
    " name = excluded.name, status = excluded.status, input = excluded.input, output = excluded.output,"
    " input_tokens = excluded.input_tokens, output_tokens = excluded.output_tokens,"
    " cost_usd = excluded.cost_usd, started_at = excluded.started_at, finished_at = excluded.finished_at,"
    " error = excluded.error"
    " WHERE (s.status <> 'completed' AND (s.run_id = excluded.run_id OR s.run_id = :replaces))"
    " OR (s.run_id = excluded.run_id AND s.status = excluded.status AND s.finished_at = excluded.finished_at)"
)

GET_STEPS = (
    "SELECT s.* FROM ai_agent_task_steps s JOIN ai_agent_tasks t ON t.id = s.task_id AND t.firing = s.firing"
    " WHERE s.task_id = ? ORDER BY s.seq"
)

#: The usage of a run's completed model calls: what a stalled run spent (its worker never wrote it).
_SPENT = (
    "SELECT COALESCE(SUM(input_tokens), 0) AS input_tokens, COALESCE(SUM(output_tokens), 0) AS output_tokens,"
    " COALESCE(SUM(json_extract(output, '$.usage.cached_input_tokens')), 0) AS cached_input_tokens,"
    " COALESCE(SUM(json_extract(output, '$.usage.reasoning_tokens')), 0) AS reasoning_tokens,"
    " CASE WHEN COUNT(*) > 0 AND COUNT(cost_usd) = COUNT(*) THEN SUM(cost_usd) END AS cost_usd"
    " FROM ai_agent_task_steps WHERE task_id = ? AND run_id = ? AND kind = 'llm' AND status = 'completed'"
)


def run_spent(conn: sqlite3.Connection, task_id: str, run_id: str | None) -> dict[str, Any]:
    """The tokens and cost (text, ``None`` when unknown or nothing was spent) recorded by a run's steps."""
    row = conn.execute(_SPENT, (task_id, run_id)).fetchone()
    spent = {key: row[key] for key in row.keys()}  # noqa: SIM118 - sqlite3.Row has no __iter__ over keys
    spent["cost_usd"] = None if spent["cost_usd"] is None else str(spent["cost_usd"])
    return spent
