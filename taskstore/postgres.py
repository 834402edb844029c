"""The Postgres :class:`~taskstore.base.TaskStore` (psycopg 3 with a connection pool).

Each transition is one statement, so one round trip: the claim updates the task,
inserts the run and reads the agent in a single data-modifying CTE; finishing a
run updates the task and its run together. The pool opens on first use, never at
construction, and works through Supabase's transaction pooler when built with
``prepare_threshold=None``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from config.settings import DB_POOL_CAP
from taskstore.base import new_id
from taskstore.errors import DuplicateTask, StoreUnavailable, TaskStoreError
from taskstore.group_commit import GroupCommit
from taskstore.models import (
    Agent,
    Claim,
    CleanupResult,
    DueSchedule,
    FiredSchedule,
    Firing,
    NewAgent,
    NewTask,
    QueueCounts,
    RetentionPolicy,
    Run,
    StalledTask,
    Task,
    Usage,
    WaitingTask,
)
from taskstore.rows import (
    AGENT_COLUMNS,
    TASK_COLUMNS,
    agent_from_row,
    in_order,
    prefixed,
    run_from_row,
    task_from_row,
)
from taskstore.rules import (
    STALLED_ERROR,
    STALLED_LIMIT_ERROR,
    USAGE_COLUMNS,
    run_usage_sql,
    task_usage_sql,
    unrunnable_statuses,
)
from taskstore.schema import MIGRATIONS, MIGRATIONS_TABLE
from taskstore.storable import storable_json, storable_text

T = TypeVar("T")
Row = dict[str, Any]

#: Most connections a worker process opens on its own account (``AGENTQ_DB_POOL_SIZE`` may set more).
MAX_POOL = DB_POOL_CAP
#: Connections beyond one per worker thread (producers, the stats query, the main thread).
_HEADROOM = 4
#: Advisory lock key held while migrating, so concurrent ``agentq migrate`` runs serialise.
_MIGRATION_LOCK = 0x6167656E7471  # "agentq"
#: TCP keepalives on every store connection, unless ``DATABASE_URL`` sets its own: a server that
#: vanished mid-statement is noticed within about a minute instead of never.
KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}
#: Seconds the keepalives above take to declare a silent connection dead (idle + interval * count).
_KEEPALIVE_DEAD_S = 60
#: Seconds to open a connection, unless ``DATABASE_URL`` sets ``connect_timeout``.
CONNECT_TIMEOUT_S = 10

_CLAIM = f"""
WITH claimed AS (
    UPDATE ai_agent_tasks
       SET status = 'running', attempts = attempts + 1, current_run_id = %(run_id)s,
           worker_id = %(worker_id)s, lease_expires_at = %(lease_until)s,
           started_at = %(now)s, run_at = NULL, updated_at = %(now)s
     WHERE id = %(id)s AND status = 'queued'
 RETURNING *
), run AS (
    INSERT INTO ai_agent_task_runs (id, task_id, attempt, status, worker_id, started_at)
    SELECT %(run_id)s, id, attempts, 'running', %(worker_id)s, %(now)s FROM claimed
)
SELECT {prefixed("t_", TASK_COLUMNS, "t")}, {prefixed("a_", AGENT_COLUMNS, "a")}
  FROM claimed t LEFT JOIN ai_agents a ON a.id = t.agent_id
"""

#: :data:`_CLAIM` for several tasks at once (group commit); a row per task actually claimed.
_CLAIM_MANY = f"""
WITH wanted AS (
    SELECT * FROM unnest(%(id)s::uuid[], %(run_id)s::uuid[], %(worker_id)s::text[],
                         %(lease_until)s::timestamptz[], %(now)s::timestamptz[])
        AS w(id, run_id, worker_id, lease_until, now)
), claimed AS (
    UPDATE ai_agent_tasks t
       SET status = 'running', attempts = t.attempts + 1, current_run_id = w.run_id,
           worker_id = w.worker_id, lease_expires_at = w.lease_until,
           started_at = w.now, run_at = NULL, updated_at = w.now
      FROM wanted w
     WHERE t.id = ANY(%(id)s::uuid[]) AND t.id = w.id AND t.status = 'queued'
 RETURNING t.*
), run AS (
    INSERT INTO ai_agent_task_runs (id, task_id, attempt, status, worker_id, started_at)
    SELECT current_run_id, id, attempts, 'running', worker_id, started_at FROM claimed
)
SELECT {prefixed("t_", TASK_COLUMNS, "t")}, {prefixed("a_", AGENT_COLUMNS, "a")}
  FROM claimed t LEFT JOIN ai_agents a ON a.id = t.agent_id
"""

_TASK_USAGE = task_usage_sql("%({})s")
_RUN_USAGE = run_usage_sql("%({})s")

_FINISH = """
WITH task AS (
    UPDATE ai_agent_tasks
       SET status = {status}, {status_time}error = %(error)s, result = COALESCE(%(result)s, result),
           run_at = %(retry_at)s, archived_at = NULL, updated_at = %(now)s,
           worker_id = NULL, lease_expires_at = NULL,
           {task_usage}
     WHERE id = %(id)s AND status = 'running' AND current_run_id = %(run_id)s
 RETURNING id
)
UPDATE ai_agent_task_runs
   SET status = %(run_status)s, finished_at = %(now)s, error = %(error)s, stacktrace = %(stacktrace)s,
       {run_usage}, transcript = %(transcript)s
 WHERE id = %(run_id)s AND EXISTS (SELECT 1 FROM task)
RETURNING id
"""

#: Completing several runs at once (group commit); returns the ids of the runs completed.
_COMPLETE_MANY = f"""
WITH done AS (
    SELECT * FROM unnest(%(id)s::uuid[], %(run_id)s::uuid[], %(now)s::timestamptz[], %(result)s::jsonb[],
                         %(transcript)s::jsonb[], {", ".join(f"%({c})s::integer[]" for c in USAGE_COLUMNS)},
                         %(cost_usd)s::numeric[])
        AS d(id, run_id, now, result, transcript, {", ".join(USAGE_COLUMNS)}, cost_usd)
), task AS (
    UPDATE ai_agent_tasks t
       SET status = 'completed', completed_at = d.now, error = NULL, result = COALESCE(d.result, t.result),
           run_at = NULL, archived_at = NULL, updated_at = d.now, worker_id = NULL, lease_expires_at = NULL,
           {", ".join(f"{c} = t.{c} + d.{c}" for c in USAGE_COLUMNS)},
           cost_usd = t.cost_usd + COALESCE(d.cost_usd, 0)
      FROM done d
     WHERE t.id = ANY(%(id)s::uuid[]) AND t.id = d.id
       AND t.status = 'running' AND t.current_run_id = d.run_id
 RETURNING t.current_run_id AS run_id
)
UPDATE ai_agent_task_runs r
   SET status = 'completed', finished_at = d.now, error = NULL, stacktrace = NULL,
       {", ".join(f"{c} = d.{c}" for c in USAGE_COLUMNS)}, cost_usd = d.cost_usd, transcript = d.transcript
  FROM done d JOIN task ON task.run_id = d.run_id
 WHERE r.id = ANY(%(run_id)s::uuid[]) AND r.id = d.run_id
RETURNING r.id
"""

_RECOVER_STALLED = """
WITH expired AS (
    SELECT id FROM ai_agent_tasks
     WHERE status = 'running' AND lease_expires_at < %(now)s
     ORDER BY lease_expires_at, id
     LIMIT %(limit)s
       FOR UPDATE SKIP LOCKED
), recovered AS (
    UPDATE ai_agent_tasks t
       SET stalled_count = t.stalled_count + 1,
           status = CASE WHEN t.stalled_count + 1 > %(max)s THEN 'failed' ELSE 'queued' END,
           attempts = CASE WHEN t.stalled_count + 1 > %(max)s THEN t.attempts ELSE t.attempts - 1 END,
           error = CASE WHEN t.stalled_count + 1 > %(max)s THEN %(limit_error)s ELSE %(error)s END,
           failed_at = CASE WHEN t.stalled_count + 1 > %(max)s THEN %(now)s ELSE t.failed_at END,
           run_at = CASE WHEN t.stalled_count + 1 > %(max)s THEN NULL ELSE %(now)s END,
           queued_at = CASE WHEN t.stalled_count + 1 > %(max)s THEN t.queued_at ELSE %(now)s END,
           worker_id = NULL, lease_expires_at = NULL, updated_at = %(now)s
      FROM expired
     WHERE t.id = expired.id AND t.status = 'running'
 RETURNING t.id, t.status, t.stalled_count, t.attempts, t.agent_id, t.current_run_id
), runs AS (
    UPDATE ai_agent_task_runs r SET status = 'stalled', finished_at = %(now)s, error = %(error)s
      FROM recovered WHERE r.id = recovered.current_run_id
)
SELECT recovered.*, a.kind FROM recovered LEFT JOIN ai_agents a ON a.id = recovered.agent_id
"""

_POSTPONE = f"""
WITH task AS (
    UPDATE ai_agent_tasks
       SET status = 'queued', attempts = attempts - 1, postponed_count = postponed_count + 1,
           run_at = %(run_at)s, queued_at = %(now)s, worker_id = NULL, lease_expires_at = NULL,
           updated_at = %(now)s, {_TASK_USAGE}
     WHERE id = %(id)s AND status = 'running' AND current_run_id = %(run_id)s
 RETURNING id
)
UPDATE ai_agent_task_runs
   SET status = 'postponed', finished_at = %(now)s, error = %(error)s, {_RUN_USAGE},
       transcript = %(transcript)s
 WHERE id = %(run_id)s AND EXISTS (SELECT 1 FROM task)
RETURNING id
"""

_WAITING = """
SELECT t.id, t.{column} AS since, a.kind FROM ai_agent_tasks t LEFT JOIN ai_agents a ON a.id = t.agent_id
 WHERE t.status = %(status)s AND t.{column} < %(before)s {extra}
 ORDER BY t.{column}, t.id LIMIT %(limit)s
"""

_FIRE_SCHEDULES = """
WITH firing AS (
    SELECT * FROM unnest(%(ids)s::uuid[], %(due)s::timestamptz[], %(next)s::timestamptz[]) AS f(id, due, next)
), target AS (
    SELECT t.id, f.next, t.status IN ('queued', 'running') AS busy
      FROM ai_agent_tasks t JOIN firing f ON f.id = t.id
     WHERE t.schedule_cron IS NOT NULL AND t.next_run_at = f.due
       FOR UPDATE OF t
), fired AS (
    UPDATE ai_agent_tasks t
       SET next_run_at = target.next, updated_at = %(now)s,
           status = CASE WHEN target.busy THEN t.status ELSE 'queued' END,
           last_run_at = CASE WHEN target.busy THEN t.last_run_at ELSE %(now)s END,
           queued_at = CASE WHEN target.busy THEN t.queued_at ELSE %(now)s END,
           run_at = CASE WHEN target.busy THEN t.run_at ELSE %(now)s END,
           attempts = CASE WHEN target.busy THEN t.attempts ELSE 0 END,
           stalled_count = CASE WHEN target.busy THEN t.stalled_count ELSE 0 END,
           postponed_count = CASE WHEN target.busy THEN t.postponed_count ELSE 0 END,
           error = CASE WHEN target.busy THEN t.error ELSE NULL END,
           cancel_requested_at = CASE WHEN target.busy THEN t.cancel_requested_at ELSE NULL END,
           archived_at = CASE WHEN target.busy THEN t.archived_at ELSE NULL END
      FROM target WHERE t.id = target.id
 RETURNING t.id, t.agent_id, t.priority, t.organization_id, target.busy
)
SELECT fired.id, fired.priority, fired.organization_id, fired.busy, a.kind
  FROM fired LEFT JOIN ai_agents a ON a.id = fired.agent_id
"""

_ARCHIVE = """
UPDATE ai_agent_tasks SET archived_at = %(now)s, updated_at = %(now)s
 WHERE id IN (
    SELECT id FROM (
        SELECT id, {column} AS finished, row_number() OVER (ORDER BY {column} DESC, id DESC) AS rank
          FROM ai_agent_tasks
         WHERE status = %(status)s AND archived_at IS NULL AND schedule_cron IS NULL
    ) ranked
     WHERE rank > %(keep)s OR finished < %(cutoff)s
 )
"""

#: Columns a bulk insert takes from each task; the rest are defaults.
_NEW_TASK_COLUMNS = {
    "id": "uuid",
    "agent_id": "uuid",
    "organization_id": "uuid",
    "title": "text",
    "description": "text",
    "task_type": "text",
    "context": "jsonb",
    "priority": "integer",
    "max_attempts": "integer",
    "schedule_timezone": "text",
}

_INSERT_TASKS = f"""
INSERT INTO ai_agent_tasks ({", ".join(_NEW_TASK_COLUMNS)}, status, created_at, updated_at)
SELECT new.*, 'pending', %(now)s, %(now)s
  FROM unnest({", ".join(f"%({name})s::{kind}[]" for name, kind in _NEW_TASK_COLUMNS.items())}) AS new
RETURNING *
"""

#: ``pending → queued`` for every task of ``ids`` or, if any is missing or not pending, for none. The
#: rows are locked in id order (no deadlock between two batches), re-checked after any wait.
_MARK_QUEUED_MANY = """
WITH target AS (
    SELECT id FROM ai_agent_tasks
     WHERE id = ANY(%(ids)s::uuid[]) AND status = 'pending'
     ORDER BY id
       FOR UPDATE
)
UPDATE ai_agent_tasks t
   SET status = 'queued', priority = COALESCE(%(priority)s, t.priority), run_at = %(run_at)s,
       queued_at = %(now)s, archived_at = NULL, updated_at = %(now)s
  FROM target
 WHERE t.id = target.id AND (SELECT count(*) FROM target) = cardinality(%(ids)s::uuid[])
RETURNING t.*
"""


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.adapters.register_loader("uuid", psycopg.types.string.TextLoader)
    conn.execute("SET TIME ZONE 'UTC'")


def pool_conninfo(
    conninfo: str, *, statement_timeout_ms: int, connect_timeout_s: int = CONNECT_TIMEOUT_S
) -> str:
    """``conninfo`` plus the store's keepalives, connect timeout and statement timeout.

    A parameter that ``conninfo`` (``DATABASE_URL``) already sets wins; ``sslmode`` and every other
    parameter pass through unchanged. The statement timeout travels in the startup ``options``
    (``-c statement_timeout=…``), not as a ``SET``, which a transaction-mode pooler would not keep.
    ``statement_timeout_ms=0`` adds none.
    """
    try:
        given = conninfo_to_dict(conninfo)
    except psycopg.ProgrammingError as exc:
        raise TaskStoreError(f"DATABASE_URL is not a valid Postgres URL or conninfo: {exc}") from None
    defaults = {**KEEPALIVES, "connect_timeout": str(connect_timeout_s)}
    extra = {key: value for key, value in defaults.items() if key not in given}
    options = str(given.get("options") or "")
    if statement_timeout_ms and "statement_timeout" not in options:
        extra["options"] = f"{options} -c statement_timeout={statement_timeout_ms}".strip()
    return make_conninfo(conninfo, **extra)


def waiter_timeout_s(pool_timeout_s: float, statement_timeout_ms: int) -> float:
    """Longest a group-commit waiter waits for other threads' writes: two writes, each a connection
    wait plus a statement (bounded by the statement timeout, else by the keepalives), and a margin."""
    statement_s = statement_timeout_ms / 1000 if statement_timeout_ms else _KEEPALIVE_DEAD_S
    return 2 * (pool_timeout_s + statement_s) + 5


class PostgresTaskStore:
    """Task store on PostgreSQL (or Supabase's Postgres), shared by any number of processes.

    Args:
        conninfo: A ``postgresql://`` URL or libpq conninfo; its own parameters win over ours.
        max_size: Most pooled connections.
        prepare_threshold: psycopg's; ``None`` for a transaction-mode pooler.
        timeout_s: Longest wait for a pooled connection.
        group_commit: Batch the claims and completions of concurrent threads.
        statement_timeout_ms: Postgres ``statement_timeout`` of every connection (0 = none); a
            statement cancelled by it raises :class:`StoreUnavailable`, as an outage does.
    """

    def __init__(
        self,
        conninfo: str,
        *,
        max_size: int = 10,
        prepare_threshold: int | None = 5,
        timeout_s: float = 30.0,
        group_commit: bool = True,
        statement_timeout_ms: int = 30_000,
    ) -> None:
        self._conninfo = pool_conninfo(conninfo, statement_timeout_ms=statement_timeout_ms)
        self._max_size = max_size
        self._prepare_threshold = prepare_threshold
        self._timeout_s = timeout_s
        self._statement_timeout_ms = statement_timeout_ms
        self._pool: ConnectionPool[psycopg.Connection[Row]] | None = None
        self._lock = threading.Lock()
        # Without group commit every write goes straight to its single-row statement.
        self._claim: Callable[[dict[str, Any]], Claim | None] = self._claim_one
        self._complete: Callable[[dict[str, Any]], bool] = self._complete_one
        if group_commit:
            wait_s = waiter_timeout_s(timeout_s, statement_timeout_ms)
            self._claim = GroupCommit(self._claim_one, self._claim_many, wait_timeout_s=wait_s).submit
            self._complete = GroupCommit(
                self._complete_one, self._complete_many, wait_timeout_s=wait_s
            ).submit

    def __repr__(self) -> str:
        return f"PostgresTaskStore(max_size={self._max_size})"

    # --- connections --------------------------------------------------------

    def _get_pool(self) -> ConnectionPool[psycopg.Connection[Row]]:
        with self._lock:
            if self._pool is None:
                pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
                    self._conninfo,
                    min_size=1,
                    max_size=self._max_size,
                    open=False,
                    timeout=self._timeout_s,
                    configure=_configure,
                    kwargs={
                        "autocommit": True,
                        "row_factory": dict_row,
                        "prepare_threshold": self._prepare_threshold,
                    },
                    name="agentq",
                )
                pool.open(wait=False)
                self._pool = pool
            return self._pool

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Row]]:
        try:
            with self._get_pool().connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise StoreUnavailable(f"no Postgres connection within {self._timeout_s:g} s: {exc}") from exc
        except psycopg.errors.QueryCanceled as exc:
            timeout = f"statement_timeout {self._statement_timeout_ms} ms"
            raise StoreUnavailable(f"Postgres statement cancelled ({timeout}): {exc}") from exc
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"Postgres unavailable: {exc}") from exc

    def _fetch(self, query: str | sql.Composed, params: dict[str, Any] | Sequence[Any] = ()) -> list[Row]:
        with self._connection() as conn:
            return conn.execute(query, params).fetchall()

    def _one(self, query: str | sql.Composed, params: dict[str, Any], build: Callable[[Row], T]) -> T | None:
        rows = self._fetch(query, params)
        return build(rows[0]) if rows else None

    def migrate(self) -> list[str]:
        applied: list[str] = []
        with self._connection() as conn, conn.transaction():
            conn.execute("SET LOCAL statement_timeout = 0")  # waiting for another migrator, long DDL
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL AS ok", (MIGRATIONS_TABLE,)).fetchone()
            done: set[str] = set()
            if exists and exists["ok"]:
                done = {row["name"] for row in conn.execute(f"SELECT name FROM {MIGRATIONS_TABLE}")}
            for migration in MIGRATIONS:
                if migration.name not in done:
                    conn.execute(migration.path().read_text(encoding="utf-8").encode())
                    applied.append(migration.name)
        return applied

    def reserve_connections(self, count: int) -> None:
        with self._lock:
            # Threads hold a connection only for one statement, so past MAX_POOL they take turns
            # rather than exhaust the server's max_connections (100 by default).
            wanted = min(count + _HEADROOM, max(self._max_size, MAX_POOL))
            if wanted <= self._max_size:
                return
            self._max_size = wanted
            if self._pool is not None:
                self._pool.resize(min_size=1, max_size=self._max_size)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    # --- agents and tasks -------------------------------------------------

    def create_agent(self, agent: NewAgent, *, now: datetime) -> Agent:
        row = {
            "id": agent.id or new_id(),
            "organization_id": agent.organization_id,
            "name": agent.name,
            "kind": agent.kind,
            "provider": agent.provider,
            "model": agent.model,
            "system_prompt": agent.system_prompt,
            "allowed_tools": list(agent.allowed_tools),
            "temperature": agent.temperature,
            "max_tokens": agent.max_tokens,
            "max_turns": agent.max_turns,
            "is_active": agent.is_active,
            "base_url": agent.base_url,
            "tool_timeout_s": agent.tool_timeout_s,
            "run_time_limit_s": agent.run_time_limit_s,
            "fallback_provider": agent.fallback_provider,
            "fallback_model": agent.fallback_model,
            "created_at": now,
            "updated_at": now,
        }
        return agent_from_row(self._insert("ai_agents", row))

    def _insert(self, table: str, row: dict[str, Any]) -> Row:
        query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING *").format(
            sql.Identifier(table),
            sql.SQL(", ").join(map(sql.Identifier, row)),
            sql.SQL(", ").join(map(sql.Placeholder, row)),
        )
        return self._fetch(query, row)[0]

    def get_agent(self, agent_id: str) -> Agent | None:
        return self._one("SELECT * FROM ai_agents WHERE id = %(id)s", {"id": agent_id}, agent_from_row)

    def create_task(self, task: NewTask, *, now: datetime) -> Task:
        row = {
            "id": task.id or new_id(),
            "agent_id": task.agent_id,
            "organization_id": task.organization_id,
            "title": task.title,
            "description": task.description,
            "task_type": task.task_type,
            "context": Jsonb(task.context),
            "status": "pending",
            "priority": task.priority,
            "max_attempts": task.max_attempts,
            "schedule_timezone": task.schedule_timezone,
            "created_at": now,
            "updated_at": now,
        }
        return task_from_row(self._insert("ai_agent_tasks", row))

    def get_task(self, task_id: str) -> Task | None:
        return self._one("SELECT * FROM ai_agent_tasks WHERE id = %(id)s", {"id": task_id}, task_from_row)

    def get_runs(self, task_id: str) -> list[Run]:
        rows = self._fetch(
            "SELECT * FROM ai_agent_task_runs WHERE task_id = %(id)s ORDER BY attempt, started_at",
            {"id": task_id},
        )
        return [run_from_row(row) for row in rows]

    # --- many tasks at once (bulk enqueue) -------------------------------------

    def create_tasks(self, tasks: Sequence[NewTask], *, now: datetime) -> list[Task]:
        """One ``INSERT … SELECT FROM unnest(…)`` statement: all rows or none."""
        if not tasks:
            return []
        ids = [task.id or new_id() for task in tasks]
        params: dict[str, Any] = {
            "id": ids,
            "agent_id": [task.agent_id for task in tasks],
            "organization_id": [task.organization_id for task in tasks],
            "title": [task.title for task in tasks],
            "description": [task.description for task in tasks],
            "task_type": [task.task_type for task in tasks],
            "context": [Jsonb(task.context) for task in tasks],
            "priority": [task.priority for task in tasks],
            "max_attempts": [task.max_attempts for task in tasks],
            "schedule_timezone": [task.schedule_timezone for task in tasks],
            "now": now,
        }
        try:
            rows = self._fetch(_INSERT_TASKS, params)
        except psycopg.errors.UniqueViolation as exc:
            raise DuplicateTask(
                f"a task id is given twice or already exists; nothing inserted ({exc})"
            ) from exc
        return in_order(map(task_from_row, rows), ids)

    def get_tasks(self, task_ids: Sequence[str]) -> list[Task]:
        rows = self._fetch("SELECT * FROM ai_agent_tasks WHERE id = ANY(%(ids)s::uuid[])", {"ids": task_ids})
        return in_order(map(task_from_row, rows), task_ids, missing_ok=True)

    def mark_queued_many(
        self, task_ids: Sequence[str], *, priority: int | None, run_at: datetime, now: datetime
    ) -> list[Task] | None:
        """One statement (see :data:`_MARK_QUEUED_MANY`): all of them or none."""
        rows = self._fetch(
            _MARK_QUEUED_MANY, {"ids": task_ids, "priority": priority, "run_at": run_at, "now": now}
        )
        if len(rows) != len(task_ids):
            return None
        return in_order(map(task_from_row, rows), task_ids)

    def revert_queued_many(self, task_ids: Sequence[str], *, queued_at: datetime, now: datetime) -> int:
        rows = self._fetch(
            "UPDATE ai_agent_tasks SET status = 'pending', run_at = NULL, queued_at = NULL,"
            " updated_at = %(now)s WHERE id = ANY(%(ids)s::uuid[]) AND status = 'queued'"
            " AND queued_at = %(queued_at)s RETURNING id",
            {"ids": task_ids, "queued_at": queued_at, "now": now},
        )
        return len(rows)

    # --- transitions --------------------------------------------------------

    def mark_queued(
        self, task_id: str, *, priority: int | None, run_at: datetime, now: datetime
    ) -> Task | None:
        return self._one(
            "UPDATE ai_agent_tasks SET status = 'queued', priority = COALESCE(%(priority)s, priority),"
            " run_at = %(run_at)s, queued_at = %(now)s, archived_at = NULL, updated_at = %(now)s"
            " WHERE id = %(id)s AND status = 'pending' RETURNING *",
            {"id": task_id, "priority": priority, "run_at": run_at, "now": now},
            task_from_row,
        )

    def revert_queued(self, task_id: str, *, queued_at: datetime, now: datetime) -> bool:
        rows = self._fetch(
            "UPDATE ai_agent_tasks SET status = 'pending', run_at = NULL, queued_at = NULL,"
            " updated_at = %(now)s"
            " WHERE id = %(id)s AND status = 'queued' AND queued_at = %(queued_at)s RETURNING id",
            {"id": task_id, "queued_at": queued_at, "now": now},
        )
        return bool(rows)

    def claim(
        self,
        task_id: str,
        *,
        run_id: str,
        worker_id: str,
        lease_until: datetime,
        now: datetime,
        max_running_in_org: int | None = None,
    ) -> Claim | None:
        params = {
            "id": task_id,
            "run_id": run_id,
            "worker_id": worker_id,
            "now": now,
            "lease_until": lease_until,
        }
        if max_running_in_org is None:
            return self._claim(params)
        rows = self._claim_capped(params, max_running_in_org)
        return _claim_from_row(rows[0]) if rows else None

    def _claim_one(self, params: dict[str, Any]) -> Claim | None:
        rows = self._fetch(_CLAIM, params)
        return _claim_from_row(rows[0]) if rows else None

    def _claim_many(self, batch: Sequence[dict[str, Any]]) -> list[Claim | None]:
        """Claims for several messages in one statement (:class:`GroupCommit`), in ``batch`` order."""
        columns = ("id", "run_id", "worker_id", "lease_until", "now")
        claimed = self._fetch(
            _CLAIM_MANY, {name: _array([params[name] for params in batch]) for name in columns}
        )
        claims = {claim.run_id: claim for claim in map(_claim_from_row, claimed)}
        return [claims.get(params["run_id"]) for params in batch]

    def _claim_capped(self, params: dict[str, Any], cap: int) -> list[Row]:
        """Claim under a per-organization cap: the organization's advisory lock serialises its claims,
        and the count is read after taking it (a fresh snapshot), so the cap holds under concurrency."""
        with self._connection() as conn, conn.transaction():
            org = conn.execute(
                "SELECT organization_id FROM ai_agent_tasks WHERE id = %(id)s AND status = 'queued'", params
            ).fetchone()
            if org is None:
                return []
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s::text))", (org["organization_id"],))
            running = conn.execute(
                "SELECT count(*) AS n FROM ai_agent_tasks WHERE organization_id = %s AND status = 'running'",
                (org["organization_id"],),
            ).fetchone()
            if running is not None and running["n"] >= cap:
                return []
            return conn.execute(_CLAIM, params).fetchall()

    def complete(
        self,
        task_id: str,
        run_id: str,
        *,
        result: dict[str, Any],
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
    ) -> bool:
        params = _finish_params(task_id, run_id, usage, transcript, now)
        params.update(result=Jsonb(storable_json(result)), run_status="completed")
        return self._complete(params)

    def _complete_one(self, params: dict[str, Any]) -> bool:
        return bool(self._fetch(_finish_query("completed", "completed_at"), params))

    def _complete_many(self, batch: Sequence[dict[str, Any]]) -> list[bool]:
        """Completes several runs in one statement (:class:`GroupCommit`), in ``batch`` order."""
        params: dict[str, Any] = {
            name: _array([item[name] for item in batch])
            for name in ("id", "run_id", "now", *USAGE_COLUMNS, "cost_usd")
        }
        params["result"] = [item["result"] for item in batch]
        params["transcript"] = [item["transcript"] for item in batch]
        completed = {row["id"] for row in self._fetch(_COMPLETE_MANY, params)}
        return [item["run_id"] in completed for item in batch]

    def fail_attempt(
        self,
        task_id: str,
        run_id: str,
        *,
        error: str,
        stacktrace: str | None,
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        retry_at: datetime | None,
        now: datetime,
    ) -> bool:
        final = retry_at is None
        query = _finish_query("failed" if final else "queued", "failed_at" if final else "queued_at")
        params = _finish_params(task_id, run_id, usage, transcript, now)
        params.update(
            error=storable_text(error),
            stacktrace=storable_text(stacktrace),
            retry_at=retry_at,
            run_status="failed",
        )
        return bool(self._fetch(query, params))

    def renew_leases(
        self, held: Sequence[tuple[str, str]], *, lease_until: datetime, now: datetime
    ) -> list[str]:
        if not held:
            return []
        rows = self._fetch(
            "UPDATE ai_agent_tasks SET lease_expires_at = %(until)s"
            " WHERE id = ANY(%(ids)s::uuid[]) AND current_run_id = ANY(%(runs)s::uuid[])"
            " AND status = 'running' RETURNING id",
            {
                "until": lease_until,
                "ids": _array([task_id for task_id, _ in held]),
                "runs": _array([run_id for _, run_id in held]),
            },
        )
        return [str(row["id"]) for row in rows]

    def recover_stalled(
        self, *, max_stalled_count: int, now: datetime, limit: int = 100
    ) -> list[StalledTask]:
        rows = self._fetch(
            _RECOVER_STALLED,
            {
                "now": now,
                "limit": limit,
                "max": max_stalled_count,
                "error": STALLED_ERROR,
                "limit_error": STALLED_LIMIT_ERROR,
            },
        )
        return [
            StalledTask(
                row["id"], row["kind"], row["status"] == "queued", row["stalled_count"], row["attempts"]
            )
            for row in rows
        ]

    def postpone(
        self,
        task_id: str,
        run_id: str,
        *,
        reason: str,
        run_at: datetime,
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
    ) -> bool:
        params = _finish_params(task_id, run_id, usage, transcript, now)
        params.update(error=storable_text(reason), run_at=run_at)
        return bool(self._fetch(_POSTPONE, params))

    def _waiting(
        self, status: str, column: str, before: datetime, limit: int, extra: str = ""
    ) -> list[WaitingTask]:
        query = sql.SQL(_WAITING).format(column=sql.Identifier(column), extra=sql.SQL(extra))
        rows = self._fetch(query, {"status": status, "before": before, "limit": limit})
        return [WaitingTask(row["id"], row["kind"], row["since"]) for row in rows]

    def find_pending(self, *, created_before: datetime, limit: int = 500) -> list[WaitingTask]:
        return self._waiting("pending", "created_at", created_before, limit, "AND t.task_type = 'adhoc'")

    def find_queued(self, *, queued_before: datetime, limit: int = 1000) -> list[WaitingTask]:
        return self._waiting("queued", "queued_at", queued_before, limit)

    def touch_queued(self, task_id: str, *, queued_at: datetime, now: datetime) -> bool:
        rows = self._fetch(
            "UPDATE ai_agent_tasks SET queued_at = %(now)s, updated_at = %(now)s"
            " WHERE id = %(id)s AND status = 'queued' AND queued_at = %(queued_at)s RETURNING id",
            {"id": task_id, "queued_at": queued_at, "now": now},
        )
        return bool(rows)

    def fail_unrunnable(
        self, task_id: str, *, error: str, now: datetime, idle_too: bool = False
    ) -> Task | None:
        return self._one(
            "UPDATE ai_agent_tasks SET status = 'failed', error = %(error)s, run_at = NULL,"
            " failed_at = %(now)s, updated_at = %(now)s"
            " WHERE id = %(id)s AND status = ANY(%(statuses)s::text[]) RETURNING *",
            {
                "id": task_id,
                "error": storable_text(error),
                "now": now,
                "statuses": list(unrunnable_statuses(idle_too)),
            },
            task_from_row,
        )

    def list_failed(self, *, limit: int = 100, offset: int = 0) -> list[Task]:
        rows = self._fetch(
            "SELECT * FROM ai_agent_tasks WHERE status = 'failed' AND archived_at IS NULL"
            " ORDER BY failed_at DESC, id DESC LIMIT %(limit)s OFFSET %(offset)s",
            {"limit": limit, "offset": offset},
        )
        return [task_from_row(row) for row in rows]

    def request_cancel(self, task_id: str, *, now: datetime) -> Task | None:
        return self._one(
            "UPDATE ai_agent_tasks SET cancel_requested_at = %(now)s, updated_at = %(now)s"
            " WHERE id = %(id)s AND status = 'running' RETURNING *",
            {"id": task_id, "now": now},
            task_from_row,
        )

    def cancel_requested(self, task_id: str) -> bool:
        rows = self._fetch(
            "SELECT cancel_requested_at IS NOT NULL AS requested FROM ai_agent_tasks WHERE id = %(id)s",
            {"id": task_id},
        )
        return bool(rows and rows[0]["requested"])

    def finish_cancelled(
        self,
        task_id: str,
        run_id: str,
        *,
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
    ) -> bool:
        params = _finish_params(task_id, run_id, usage, transcript, now)
        params.update(error="cancelled on request", run_status="cancelled")
        return bool(self._fetch(_finish_query("cancelled", None), params))

    def organization_spend(self, organization_id: str, *, since: datetime) -> Decimal:
        rows = self._fetch(
            "SELECT COALESCE(SUM(r.cost_usd), 0) AS spent FROM ai_agent_task_runs r"
            " JOIN ai_agent_tasks t ON t.id = r.task_id"
            " WHERE t.organization_id = %(org)s AND r.started_at >= %(since)s",
            {"org": organization_id, "since": since},
        )
        return Decimal(rows[0]["spent"])

    def set_schedule(
        self, task_id: str, *, cron: str, timezone: str, next_run_at: datetime, now: datetime
    ) -> Task | None:
        return self._one(
            "UPDATE ai_agent_tasks SET schedule_cron = %(cron)s, schedule_timezone = %(tz)s,"
            " next_run_at = %(next)s, updated_at = %(now)s WHERE id = %(id)s AND task_type = 'scheduled'"
            " RETURNING *",
            {"id": task_id, "cron": cron, "tz": timezone, "next": next_run_at, "now": now},
            task_from_row,
        )

    def clear_schedule(self, task_id: str, *, now: datetime) -> Task | None:
        return self._one(
            "UPDATE ai_agent_tasks SET schedule_cron = NULL, next_run_at = NULL, updated_at = %(now)s"
            " WHERE id = %(id)s AND schedule_cron IS NOT NULL RETURNING *",
            {"id": task_id, "now": now},
            task_from_row,
        )

    def due_schedules(self, *, now: datetime, limit: int = 1000) -> list[DueSchedule]:
        rows = self._fetch(
            "SELECT id, schedule_cron, COALESCE(schedule_timezone, 'UTC') AS tz, next_run_at"
            " FROM ai_agent_tasks"
            " WHERE schedule_cron IS NOT NULL AND next_run_at <= %(now)s"
            " ORDER BY next_run_at, id LIMIT %(limit)s",
            {"now": now, "limit": limit},
        )
        return [DueSchedule(row["id"], row["schedule_cron"], row["tz"], row["next_run_at"]) for row in rows]

    def fire_schedules(self, firings: list[Firing], *, now: datetime) -> list[FiredSchedule]:
        if not firings:
            return []
        params = {
            "ids": [firing.task_id for firing in firings],
            "due": [firing.due_at for firing in firings],
            "next": [firing.next_run_at for firing in firings],
            "now": now,
        }
        rows = self._fetch(_FIRE_SCHEDULES, params)
        return [
            FiredSchedule(row["id"], row["kind"], not row["busy"], row["priority"], row["organization_id"])
            for row in rows
        ]

    def list_schedules(self, *, limit: int = 100, offset: int = 0) -> list[Task]:
        rows = self._fetch(
            "SELECT * FROM ai_agent_tasks WHERE schedule_cron IS NOT NULL"
            " ORDER BY next_run_at NULLS LAST, id LIMIT %(limit)s OFFSET %(offset)s",
            {"limit": limit, "offset": offset},
        )
        return [task_from_row(row) for row in rows]

    def cancel(self, task_id: str, *, now: datetime) -> Task | None:
        return self._one(
            "UPDATE ai_agent_tasks SET status = 'cancelled', run_at = NULL, updated_at = %(now)s"
            " WHERE id = %(id)s AND status IN ('pending', 'queued') RETURNING *",
            {"id": task_id, "now": now},
            task_from_row,
        )

    def requeue_failed(self, task_id: str, *, run_at: datetime, now: datetime) -> Task | None:
        return self._one(
            "UPDATE ai_agent_tasks SET status = 'queued', attempts = 0, stalled_count = 0, error = NULL,"
            " postponed_count = 0, cancel_requested_at = NULL,"
            " run_at = %(run_at)s, queued_at = %(now)s, failed_at = NULL, archived_at = NULL,"
            " updated_at = %(now)s"
            " WHERE id = %(id)s AND status = 'failed' RETURNING *",
            {"id": task_id, "run_at": run_at, "now": now},
            task_from_row,
        )

    # --- queue views --------------------------------------------------------

    def queue_counts(self, *, now: datetime) -> QueueCounts:
        rows = self._fetch(
            "SELECT"
            " count(*) FILTER (WHERE status = 'queued' AND (run_at IS NULL OR run_at <= %(now)s)) AS waiting,"
            " count(*) FILTER (WHERE status = 'queued' AND run_at > %(now)s) AS delayed,"
            " count(*) FILTER (WHERE status = 'running') AS active,"
            " count(*) FILTER (WHERE status = 'completed' AND archived_at IS NULL) AS completed,"
            " count(*) FILTER (WHERE status = 'failed' AND archived_at IS NULL) AS failed"
            " FROM ai_agent_tasks WHERE status IN ('queued', 'running', 'completed', 'failed')",
            {"now": now},
        )
        return QueueCounts(**{key: int(value) for key, value in rows[0].items()})

    def cleanup(self, policy: RetentionPolicy, *, now: datetime) -> CleanupResult:
        with self._connection() as conn, conn.transaction():
            counts = []
            for status, column, age_s, keep in (
                ("completed", "completed_at", policy.completed_age_s, policy.completed_count),
                ("failed", "failed_at", policy.failed_age_s, policy.failed_count),
            ):
                cursor = conn.execute(
                    sql.SQL(_ARCHIVE).format(column=sql.Identifier(column)),
                    {"now": now, "status": status, "keep": keep, "cutoff": now - timedelta(seconds=age_s)},
                )
                counts.append(cursor.rowcount)
            deleted = conn.execute(
                "DELETE FROM ai_agent_task_runs WHERE task_id IN"
                " (SELECT id FROM ai_agent_tasks WHERE archived_at = %(now)s)",
                {"now": now},
            ).rowcount
        return CleanupResult(counts[0], counts[1], deleted)


def _array(values: list[Any]) -> str:
    """A Postgres array literal of ``values`` (str, datetime, int, Decimal or None), cast in the query.

    Group-commit statements pass their columns this way: building the literal costs a fraction
    of adapting a Python list element by element.
    """
    items = []
    for value in values:
        if value is None:
            items.append("NULL")
            continue
        text = value.isoformat() if isinstance(value, datetime) else str(value)
        items.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(items) + "}"


def _claim_from_row(row: Row) -> Claim:
    agent = agent_from_row(row, "a_") if row["a_id"] is not None else None
    task = task_from_row(row, "t_")
    assert task.current_run_id is not None
    return Claim(task=task, agent=agent, run_id=task.current_run_id)


@functools.cache
def _finish_query(status: str, status_time: str | None) -> str:
    """The finishing statement: the task becomes ``status``, stamping ``status_time`` if given.

    Rendered once per variant: composing it per call cost more client CPU than executing it.
    """
    stamp = sql.SQL("{} = %(now)s, ").format(sql.Identifier(status_time)) if status_time else sql.SQL("")
    return (
        sql.SQL(_FINISH)
        .format(
            status=sql.Literal(status),
            status_time=stamp,
            task_usage=sql.SQL(_TASK_USAGE),
            run_usage=sql.SQL(_RUN_USAGE),
        )
        .as_string()
    )


def _finish_params(
    task_id: str, run_id: str, usage: Usage, transcript: list[dict[str, Any]] | None, now: datetime
) -> dict[str, Any]:
    return {
        "id": task_id,
        "run_id": run_id,
        "now": now,
        "error": None,
        "stacktrace": None,
        "result": None,
        "retry_at": None,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_input_tokens": usage.cached_input_tokens,
        "reasoning_tokens": usage.reasoning_tokens,
        "cost_usd": usage.cost_usd,
        "transcript": Jsonb(storable_json(transcript)) if transcript is not None else None,
    }
