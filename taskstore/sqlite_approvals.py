"""Human approval of tool calls on SQLite, shared by the SQLite and in-memory stores.

The same compare-and-set rules as the Postgres family's ``agentq_await_step``, ``agentq_await_approval``,
``agentq_decide_approval``, ``agentq_expire_approval``, ``agentq_cancel`` and ``agentq_list_approvals``
(``taskstore/sql/functions.sql``). Each function runs inside the caller's write transaction.
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

AWAIT_STEP = (
    "INSERT INTO ai_agent_task_steps AS s"
    " (id, task_id, run_id, firing, seq, kind, name, status, input, started_at, approval)"
    " SELECT :id, :task_id, :run_id, :firing, :seq, 'tool', :name, 'awaiting_approval', :input, :now,"
    " :approval"
    f" WHERE {_HELD}"
    " ON CONFLICT (task_id, firing, seq) DO UPDATE"
    " SET run_id = excluded.run_id, kind = 'tool', name = excluded.name, status = 'awaiting_approval',"
    " input = excluded.input, output = NULL, input_tokens = 0, output_tokens = 0, cost_usd = NULL,"
    " started_at = excluded.started_at, finished_at = NULL, error = NULL, approval = excluded.approval"
    " WHERE s.status <> 'completed' AND (s.run_id = excluded.run_id OR s.run_id = :replaces)"
)

#: Columns ``running → awaiting_approval`` sets on the task (with the lease released and the usage added).
AWAIT_APPROVAL_SETS = (
    "status = 'awaiting_approval', attempts = attempts - 1, approval_requested_at = :now, run_at = NULL"
)

#: A time as approval records write it, from a ``:now`` stored as ``YYYY-MM-DD HH:MM:SS.ffffff`` (UTC).
_ISO_NOW = "replace(:now, ' ', 'T') || '+00:00'"

_DECIDE_TASK = (
    "UPDATE ai_agent_tasks SET status = 'queued', approval_requested_at = NULL, queued_at = :now,"
    f" run_at = :now, updated_at = :now WHERE id = :task_id AND {accepts_sql('decide_approval')} RETURNING *"
)
_DECIDE_STEP = (
    "UPDATE ai_agent_task_steps SET approval = json_patch(COALESCE(approval, '{}'), :decision),"
    " status = CASE WHEN :output IS NULL THEN status ELSE 'completed' END,"
    " output = COALESCE(:output, output),"
    " finished_at = CASE WHEN :output IS NULL THEN finished_at ELSE :now END"
    " WHERE task_id = :task_id AND firing = :firing AND status = 'awaiting_approval'"
)
_EXPIRE_TASK = (
    "UPDATE ai_agent_tasks SET status = 'failed', error = :error, failed_at = :now,"
    " approval_requested_at = NULL, run_at = NULL, updated_at = :now"
    " WHERE id = :task_id AND status = 'awaiting_approval'"
    " AND (approval_requested_at IS NULL OR approval_requested_at < :before) RETURNING *"
)
_CANCEL_TASK = (
    "UPDATE ai_agent_tasks SET status = 'cancelled', run_at = NULL, approval_requested_at = NULL,"
    f" updated_at = :now WHERE id = :task_id AND {accepts_sql('cancel')} RETURNING *"
)
#: The step a wait was for ends ``failed`` with ``:error``, its decision ``:decision`` (timed out, cancelled).
_END_WAITING_STEP = (
    "UPDATE ai_agent_task_steps SET status = 'failed', error = :error, finished_at = :now,"
    " approval = json_patch(COALESCE(approval, '{}'),"
    f" json_object('decision', :decision, 'decided_at', {_ISO_NOW}))"
    " WHERE task_id = :task_id AND firing = :firing AND status = 'awaiting_approval'"
)

LIST_APPROVALS = (
    "SELECT t.id AS task_id, s.id AS step_id FROM ai_agent_tasks t"
    " LEFT JOIN ai_agent_task_steps s"
    " ON s.task_id = t.id AND s.firing = t.firing AND s.status = 'awaiting_approval'"
    " WHERE t.status = 'awaiting_approval'"
    " AND (:before IS NULL OR t.approval_requested_at IS NULL OR t.approval_requested_at < :before)"
    " ORDER BY t.approval_requested_at IS NOT NULL, t.approval_requested_at, t.id LIMIT :limit OFFSET :offset"
)


def decide(conn: sqlite3.Connection, params: dict[str, Any]) -> sqlite3.Row | None:
    """``awaiting_approval → queued`` and the waiting step's decision (``:decision``, ``:output``): the
    task row, or None when it was not awaiting approval."""
    row = conn.execute(_DECIDE_TASK, params).fetchone()
    if row is not None:
        conn.execute(_DECIDE_STEP, {**params, "firing": row["firing"]})
    return row  # type: ignore[no-any-return]


def expire(conn: sqlite3.Connection, params: dict[str, Any]) -> sqlite3.Row | None:
    """``awaiting_approval → failed`` (``:error``) for a wait older than ``:before``; its step ends failed."""
    row = conn.execute(_EXPIRE_TASK, params).fetchone()
    if row is not None:
        conn.execute(_END_WAITING_STEP, {**params, "firing": row["firing"], "decision": "timed_out"})
    return row  # type: ignore[no-any-return]


def cancel(conn: sqlite3.Connection, params: dict[str, Any]) -> sqlite3.Row | None:
    """``pending/queued/awaiting_approval → cancelled``; a step that waited for approval ends failed
    "cancelled"."""
    row = conn.execute(_CANCEL_TASK, params).fetchone()
    if row is not None:
        step = {**params, "firing": row["firing"], "decision": "cancelled", "error": "cancelled"}
        conn.execute(_END_WAITING_STEP, step)
    return row  # type: ignore[no-any-return]
