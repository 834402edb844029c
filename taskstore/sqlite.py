"""The embedded default :class:`~taskstore.base.TaskStore`: one SQLite file.

WAL mode lets several worker processes share the file; each thread keeps its own
connection. Multi-statement transitions run in ``BEGIN IMMEDIATE`` transactions,
so the compare-and-set and the run row commit together. Timestamps are stored as
UTC text (``YYYY-MM-DD HH:MM:SS.ffffff``), which sorts correctly and matches
SQLite's ``CURRENT_TIMESTAMP``.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

from taskstore import sqlite_approvals, sqlite_views
from taskstore.base import new_id
from taskstore.errors import DuplicateTask, StoreUnavailable
from taskstore.models import (
    Agent,
    ApprovalRequest,
    Claim,
    CleanupResult,
    DueSchedule,
    FiredSchedule,
    Firing,
    NewAgent,
    NewTask,
    Overview,
    QueueCounts,
    QueuedTask,
    RetentionPolicy,
    Run,
    StalledTask,
    Step,
    StepKind,
    StepRecord,
    StepStatus,
    Task,
    TaskFilter,
    TaskKey,
    TaskSummary,
    Usage,
    WaitingTask,
)
from taskstore.rows import agent_from_row, in_order, run_from_row, step_from_row, task_from_row
from taskstore.rules import (
    FIRING_BUSY_STATUSES,
    FIRING_RESETS,
    STALLED_ERROR,
    STALLED_LIMIT_ERROR,
    USAGE_COLUMNS,
    accepts_sql,
    run_usage_sql,
    step_end,
    task_usage_sql,
    unrunnable_statuses,
)
from taskstore.schema import (
    AGENTS,
    MIGRATIONS,
    MIGRATIONS_TABLE,
    RUNS,
    STEPS,
    TASKS,
    ColumnType,
    CreateTable,
    all_columns,
    table_columns,
)
from taskstore.sqlite_steps import FINISH_STEP, GET_STEPS, RECORD_STEP, START_STEP, run_spent
from taskstore.storable import storable_json, storable_text

_TIME_FORMAT = "%Y-%m-%d %H:%M:%S.%f"
_TASK_USAGE = task_usage_sql(":{}")
_RUN_USAGE = run_usage_sql(":{}")
_ACCEPTS_MARK_QUEUED = accepts_sql("mark_queued")
_ACCEPTS_REVERT_QUEUED = accepts_sql("revert_queued")
#: The task is still held by the attempt ``:run_id`` (every transition that finishes an attempt).
_HOLDS = f"id = :id AND {accepts_sql('finish')} AND current_run_id = :run_id"


def encode_time(value: datetime | None) -> str | None:
    """UTC text for a timestamp column."""
    return None if value is None else value.astimezone(UTC).strftime(_TIME_FORMAT)


def _decode_time(value: str | None) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(value)
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _org_at_capacity(conn: sqlite3.Connection, task_id: str, cap: int) -> bool:
    """Whether the task's organization already runs ``cap`` tasks (inside the claim's transaction)."""
    row = conn.execute(
        "SELECT count(*) FROM ai_agent_tasks WHERE status = 'running' AND organization_id ="
        " (SELECT organization_id FROM ai_agent_tasks WHERE id = ?)",
        (task_id,),
    ).fetchone()
    return bool(row and row[0] >= cap)


def _since(value: str) -> datetime:
    decoded = _decode_time(value)
    assert decoded is not None  # the queries select NOT NULL columns
    return decoded


def _column_types(table: CreateTable) -> dict[str, ColumnType]:
    return {column.name: column.type for column in all_columns(table)}


_DECODERS: dict[ColumnType, Any] = {
    "timestamp": _decode_time,
    "json": lambda value: None if value is None else json.loads(value),
    "text_array": lambda value: json.loads(value) if value else [],
    "bool": lambda value: None if value is None else bool(value),
    "money": lambda value: None if value is None else Decimal(str(value)),
}
_TYPES = {**_column_types(AGENTS), **_column_types(TASKS), **_column_types(RUNS), **_column_types(STEPS)}
_ENCODERS: dict[ColumnType, Any] = {
    "timestamp": encode_time,
    "json": lambda value: _json(value),
    "text_array": lambda value: json.dumps(list(value or ())),
    "bool": lambda value: None if value is None else int(value),
    "money": lambda value: None if value is None else str(value),
}


def encode_value(column: str, value: Any) -> Any:
    """``value`` as SQLite stores it in ``column`` (the inverse of the row decoding)."""
    if isinstance(value, Enum):
        value = value.value
    encoder = _ENCODERS.get(_TYPES.get(column, "text"))
    return encoder(value) if encoder else value


def _new_columns(table: CreateTable, fields_of: type[Any]) -> tuple[str, ...]:
    """The columns of ``table`` a new record (``NewAgent``, ``NewTask``) gives values for, minus ``id``."""
    given = {field.name for field in fields(fields_of)}
    return tuple(name for name in table_columns(table) if name in given and name != "id")


def _new_row(columns: tuple[str, ...], record: Any) -> dict[str, Any]:
    """The encoded values of ``record`` for ``columns``."""
    return {name: encode_value(name, getattr(record, name)) for name in columns}


#: Columns an insert takes from a ``NewAgent``/``NewTask``; ``id``, status and timestamps are the store's.
_NEW_AGENT_COLUMNS = _new_columns(AGENTS, NewAgent)
_NEW_TASK_COLUMNS = _new_columns(TASKS, NewTask)
_EXTRACTS = ", ".join(f"json_extract(value, '$.{name}')" for name in ("id", *_NEW_TASK_COLUMNS))
_INSERT_TASKS = (
    f"INSERT INTO ai_agent_tasks (id, {', '.join(_NEW_TASK_COLUMNS)}, status, created_at, updated_at)"
    f" SELECT {_EXTRACTS}, 'pending', :now, :now FROM json_each(:rows) RETURNING *"
)


def _decode(row: sqlite3.Row, prefix: str = "") -> dict[str, Any]:
    values: dict[str, Any] = {}
    for key in row.keys():  # noqa: SIM118 - sqlite3.Row has no __iter__ over keys
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :]
        decoder = _DECODERS.get(_TYPES.get(name, "text"))
        values[name] = decoder(row[key]) if decoder else row[key]
    return values


def _tasks(rows: Iterable[sqlite3.Row]) -> list[Task]:
    return [task_from_row(_decode(row)) for row in rows]


def _json(value: Any) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"))


class SqliteTaskStore:
    """Task store on one SQLite file, safe for several threads and processes."""

    def __init__(self, path: str | Path, *, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self._busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._migrated = False

    def __repr__(self) -> str:
        return f"SqliteTaskStore({str(self.path)!r})"

    # --- connections --------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        """A new connection: WAL (for a file), foreign keys, autocommit; ``:memory:`` is a private one."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite database {str(self.path)!r}: {exc}") from exc
        return conn

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection, opened (and the file migrated) on first use."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        conn = self._open()
        with self._lock:
            self._connections.append(conn)
        self._local.conn = conn
        if not self._migrated:
            self._apply_migrations(conn)
        return conn

    @contextmanager
    def _borrow(self) -> Iterator[sqlite3.Connection]:
        """The connection one operation (a query or a whole transaction) uses.

        The seam for sharing: here each thread has its own connection; a subclass may
        instead hand out one shared connection under a lock (see ``taskstore/memory.py``).
        """
        yield self._connect()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            with self._borrow() as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite error on {str(self.path)!r}: {exc}") from exc

    def _query(self, sql: str, params: Mapping[str, Any] | tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        try:
            with self._borrow() as conn:
                return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite error on {str(self.path)!r}: {exc}") from exc

    def _apply_migrations(self, conn: sqlite3.Connection) -> list[str]:
        applied: list[str] = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            exists = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (MIGRATIONS_TABLE,)
            ).fetchone()
            done = (
                {row[0] for row in conn.execute(f"SELECT name FROM {MIGRATIONS_TABLE}")} if exists else set()
            )
            for migration in MIGRATIONS:
                if migration.name in done:
                    continue
                # executescript() would commit our transaction: run the statements one by one.
                for statement in _statements(migration.render("sqlite")):
                    conn.execute(statement)
                applied.append(migration.name)
            if applied:  # other connections reload the schema (a rewritten CHECK is not seen otherwise)
                version = conn.execute("PRAGMA schema_version").fetchone()[0]
                conn.execute(f"PRAGMA schema_version = {int(version) + 1}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        self._migrated = True
        return applied

    def migrate(self) -> list[str]:
        try:
            with self._borrow() as conn:
                return self._apply_migrations(conn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot migrate SQLite database {str(self.path)!r}: {exc}") from exc

    def reserve_connections(self, count: int) -> None:
        return None  # one connection per thread already

    def close(self) -> None:
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()
        self._local = threading.local()

    # --- agents and tasks -------------------------------------------------

    def create_agent(self, agent: NewAgent, *, now: datetime) -> Agent:
        return agent_from_row(self._insert("ai_agents", _NEW_AGENT_COLUMNS, agent, now))

    def _insert(
        self, table: str, columns: tuple[str, ...], record: NewAgent | NewTask, now: datetime, **values: Any
    ) -> dict[str, Any]:
        """Insert ``record`` (its ``columns``, plus ``values``) with fresh timestamps: the decoded new row."""
        stamp = encode_time(now)
        row = {"id": record.id or new_id(), **_new_row(columns, record), **values}
        row.update(created_at=stamp, updated_at=stamp)
        names = ", ".join(row)
        marks = ", ".join(f":{name}" for name in row)
        with self._transaction() as conn:
            rows = conn.execute(f"INSERT INTO {table} ({names}) VALUES ({marks}) RETURNING *", row).fetchall()
        return _decode(rows[0])

    def ensure_schema(self) -> None:
        """Apply what is missing: an embedded database belongs to the worker that opens it."""
        self.migrate()

    def get_agent(self, agent_id: str) -> Agent | None:
        rows = self._query("SELECT * FROM ai_agents WHERE id = ?", (agent_id,))
        return agent_from_row(_decode(rows[0])) if rows else None

    def create_task(self, task: NewTask, *, now: datetime) -> Task:
        return task_from_row(self._insert("ai_agent_tasks", _NEW_TASK_COLUMNS, task, now, status="pending"))

    def create_runnable_task(self, task: NewTask, *, kinds: Collection[str], now: datetime) -> Task | None:
        """One ``INSERT … SELECT … WHERE EXISTS (the agent)`` statement."""
        stamp = encode_time(now)
        row = {"id": task.id or new_id(), **_new_row(_NEW_TASK_COLUMNS, task), "status": "pending"}
        row.update(created_at=stamp, updated_at=stamp, kinds=json.dumps(sorted(kinds)))
        names = [name for name in row if name != "kinds"]
        with self._transaction() as conn:
            rows = conn.execute(
                f"INSERT INTO ai_agent_tasks ({', '.join(names)}) SELECT {', '.join(f':{n}' for n in names)}"
                " WHERE EXISTS (SELECT 1 FROM ai_agents WHERE id = :agent_id AND is_active"
                " AND organization_id = :organization_id AND kind IN (SELECT value FROM json_each(:kinds)))"
                " RETURNING *",
                row,
            ).fetchall()
        return task_from_row(_decode(rows[0])) if rows else None

    def get_task(self, task_id: str) -> Task | None:
        rows = self._query("SELECT * FROM ai_agent_tasks WHERE id = ?", (task_id,))
        return task_from_row(_decode(rows[0])) if rows else None

    def create_tasks(self, tasks: Sequence[NewTask], *, now: datetime) -> list[Task]:
        """One ``INSERT … SELECT FROM json_each(:rows)`` statement: all rows or none."""
        if not tasks:
            return []
        ids = [task.id or new_id() for task in tasks]
        rows = [
            {"id": task_id, **_new_row(_NEW_TASK_COLUMNS, task)}
            for task_id, task in zip(ids, tasks, strict=True)
        ]
        params = {"rows": json.dumps(rows, separators=(",", ":")), "now": encode_time(now)}
        with self._transaction() as conn:
            try:
                inserted = conn.execute(_INSERT_TASKS, params).fetchall()
            except sqlite3.IntegrityError as exc:
                if "UNIQUE" not in str(exc):
                    raise
                raise DuplicateTask(
                    f"a task id is given twice or already exists ({exc}); nothing inserted"
                ) from exc
        return in_order(_tasks(inserted), ids)

    def get_tasks(self, task_ids: Sequence[str]) -> list[Task]:
        rows = self._query(
            "SELECT * FROM ai_agent_tasks WHERE id IN (SELECT value FROM json_each(?))",
            (json.dumps(task_ids),),
        )
        return in_order(_tasks(rows), task_ids, missing_ok=True)

    def get_runs(self, task_id: str) -> list[Run]:
        rows = self._query(
            "SELECT * FROM ai_agent_task_runs WHERE task_id = ? ORDER BY attempt, started_at", (task_id,)
        )
        return [run_from_row(_decode(row)) for row in rows]

    # --- transitions --------------------------------------------------------

    def _update_task(self, sql: str, params: Mapping[str, Any]) -> Task | None:
        with self._transaction() as conn:
            tasks = _tasks(conn.execute(sql, params))
        return tasks[0] if tasks else None

    def mark_queued(
        self, task_id: str, *, priority: int | None, run_at: datetime, now: datetime
    ) -> Task | None:
        tasks = self._mark_queued([task_id], priority=priority, run_at=run_at, now=now)
        return tasks[0] if tasks else None

    def revert_queued(self, task_id: str, *, queued_at: datetime, now: datetime) -> bool:
        return bool(self._revert_queued([task_id], queued_at=queued_at, now=now))

    def queue_runnable_task(
        self,
        task_id: str,
        *,
        kinds: Collection[str],
        priority: int | None,
        run_at: datetime,
        now: datetime,
    ) -> QueuedTask | None:
        """One ``UPDATE … WHERE EXISTS (the agent)``, then the agent's kind, in one write transaction."""
        params = {
            "id": task_id,
            "kinds": json.dumps(sorted(kinds)),
            "priority": priority,
            "run_at": encode_time(run_at),
            "now": encode_time(now),
        }
        with self._transaction() as conn:
            updated = conn.execute(
                "UPDATE ai_agent_tasks SET status = 'queued', priority = COALESCE(:priority, priority),"
                " run_at = :run_at, queued_at = :now, archived_at = NULL, updated_at = :now"
                f" WHERE id = :id AND {_ACCEPTS_MARK_QUEUED} AND EXISTS (SELECT 1 FROM ai_agents a"
                " WHERE a.id = ai_agent_tasks.agent_id AND a.is_active"
                " AND a.kind IN (SELECT value FROM json_each(:kinds))) RETURNING *",
                params,
            ).fetchall()
            if not updated:
                return None
            task = task_from_row(_decode(updated[0]))
            kind = conn.execute("SELECT kind FROM ai_agents WHERE id = ?", (task.agent_id,)).fetchone()
        return QueuedTask(task, kind[0])

    def queue_runnable_tasks(
        self,
        task_ids: Sequence[str],
        *,
        kinds: Collection[str],
        priority: int | None,
        run_at: datetime,
        now: datetime,
    ) -> list[QueuedTask] | None:
        """A count of the runnable pending ones, then one ``UPDATE``, in one write transaction."""
        params = {
            "ids": json.dumps(list(task_ids)),
            "kinds": json.dumps(sorted(kinds)),
            "priority": priority,
            "run_at": encode_time(run_at),
            "now": encode_time(now),
        }
        runnable = (
            f"id IN (SELECT value FROM json_each(:ids)) AND {_ACCEPTS_MARK_QUEUED} AND EXISTS (SELECT 1"
            " FROM ai_agents a WHERE a.id = ai_agent_tasks.agent_id AND a.is_active"
            " AND a.kind IN (SELECT value FROM json_each(:kinds)))"
        )
        with self._transaction() as conn:
            row = conn.execute(f"SELECT count(*) FROM ai_agent_tasks WHERE {runnable}", params).fetchone()
            if row is None or row[0] != len(task_ids):
                return None
            updated = conn.execute(
                "UPDATE ai_agent_tasks SET status = 'queued', priority = COALESCE(:priority, priority),"
                " run_at = :run_at, queued_at = :now, archived_at = NULL, updated_at = :now"
                f" WHERE {runnable} RETURNING *",
                params,
            ).fetchall()
            kinds_of = dict(
                conn.execute(
                    "SELECT id, kind FROM ai_agents WHERE id IN"
                    " (SELECT agent_id FROM ai_agent_tasks WHERE id IN (SELECT value FROM json_each(:ids)))",
                    params,
                ).fetchall()
            )
        tasks = in_order(_tasks(updated), task_ids)
        return [QueuedTask(task, kinds_of[task.agent_id]) for task in tasks]

    def mark_queued_many(
        self, task_ids: Sequence[str], *, priority: int | None, run_at: datetime, now: datetime
    ) -> list[Task] | None:
        return self._mark_queued(task_ids, priority=priority, run_at=run_at, now=now)

    def revert_queued_many(self, task_ids: Sequence[str], *, queued_at: datetime, now: datetime) -> int:
        return self._revert_queued(task_ids, queued_at=queued_at, now=now)

    def _mark_queued(
        self, task_ids: Sequence[str], *, priority: int | None, run_at: datetime, now: datetime
    ) -> list[Task] | None:
        """A count of the pending ones, then one ``UPDATE``, in one write transaction: all or none."""
        ids = json.dumps(list(task_ids))
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT count(*) FROM ai_agent_tasks"
                f" WHERE id IN (SELECT value FROM json_each(?)) AND {_ACCEPTS_MARK_QUEUED}",
                (ids,),
            ).fetchone()
            if row is None or row[0] != len(task_ids):
                return None
            updated = conn.execute(
                "UPDATE ai_agent_tasks SET status = 'queued', priority = COALESCE(:priority, priority),"
                " run_at = :run_at, queued_at = :now, archived_at = NULL, updated_at = :now"
                f" WHERE id IN (SELECT value FROM json_each(:ids)) AND {_ACCEPTS_MARK_QUEUED} RETURNING *",
                {"ids": ids, "priority": priority, "run_at": encode_time(run_at), "now": encode_time(now)},
            ).fetchall()
        return in_order(_tasks(updated), task_ids)

    def _revert_queued(self, task_ids: Sequence[str], *, queued_at: datetime, now: datetime) -> int:
        with self._transaction() as conn:
            reverted = conn.execute(
                "UPDATE ai_agent_tasks SET status = 'pending', run_at = NULL, queued_at = NULL,"
                " updated_at = :now WHERE id IN (SELECT value FROM json_each(:ids))"
                f" AND {_ACCEPTS_REVERT_QUEUED} AND queued_at = :queued_at RETURNING id",
                {
                    "ids": json.dumps(list(task_ids)),
                    "queued_at": encode_time(queued_at),
                    "now": encode_time(now),
                },
            ).fetchall()
        return len(reverted)

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
        stamp = encode_time(now)
        with self._transaction() as conn:
            if max_running_in_org is not None and _org_at_capacity(conn, task_id, max_running_in_org):
                return None
            rows = conn.execute(
                "UPDATE ai_agent_tasks SET status = 'running', attempts = attempts + 1,"
                " current_run_id = :run_id, worker_id = :worker_id, lease_expires_at = :lease_until,"
                " started_at = :now, run_at = NULL, updated_at = :now"
                f" WHERE id = :id AND {accepts_sql('claim')} RETURNING *",
                {
                    "id": task_id,
                    "run_id": run_id,
                    "worker_id": worker_id,
                    "now": stamp,
                    "lease_until": encode_time(lease_until),
                },
            ).fetchall()
            if not rows:
                return None
            task = task_from_row(_decode(rows[0]))
            conn.execute(
                "INSERT INTO ai_agent_task_runs (id, task_id, attempt, status, worker_id, started_at)"
                " VALUES (?, ?, ?, 'running', ?, ?)",
                (run_id, task_id, task.attempts, worker_id, stamp),
            )
            agent_rows = conn.execute("SELECT * FROM ai_agents WHERE id = ?", (task.agent_id,)).fetchall()
            steps = tuple(step_from_row(_decode(row)) for row in conn.execute(GET_STEPS, (task_id,)))
        agent = agent_from_row(_decode(agent_rows[0])) if agent_rows else None
        return Claim(task=task, agent=agent, run_id=run_id, steps=steps)

    def complete(
        self,
        task_id: str,
        run_id: str,
        *,
        result: dict[str, Any],
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
        step: StepRecord | None = None,
    ) -> bool:
        return self._finish(
            "status = 'completed', result = :result, error = NULL, completed_at = :now, archived_at = NULL",
            "completed",
            self._finish_params(task_id, run_id, usage, transcript, now, result=_json(storable_json(result))),
            step,
        )

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
        params = self._finish_params(
            task_id, run_id, usage, transcript, now, error=storable_text(error),
            stacktrace=storable_text(stacktrace), retry_at=encode_time(retry_at),
        )  # fmt: skip
        return self._finish(
            "status = CASE WHEN :retry_at IS NULL THEN 'failed' ELSE 'queued' END,"
            " failed_at = CASE WHEN :retry_at IS NULL THEN :now ELSE failed_at END,"
            " queued_at = CASE WHEN :retry_at IS NULL THEN queued_at ELSE :now END,"
            " error = :error, run_at = :retry_at, archived_at = NULL",
            "failed",
            params,
        )

    @staticmethod
    def _finish_params(
        task_id: str,
        run_id: str,
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
        **values: Any,
    ) -> dict[str, Any]:
        """The parameters of :meth:`_finish`: the attempt, its usage and transcript, plus ``values``."""
        params = {"id": task_id, "run_id": run_id, "now": encode_time(now), "error": None, "stacktrace": None}
        params.update({column: getattr(usage, column) for column in USAGE_COLUMNS})
        cost = None if usage.cost_usd is None else str(usage.cost_usd)
        return {**params, "cost_usd": cost, "transcript": _json(storable_json(transcript)), **values}

    def _finish(
        self, sets: str, run_status: str, params: dict[str, Any], step: StepRecord | None = None
    ) -> bool:
        """End the attempt ``params`` name if the task still holds it: the task gets ``sets`` (and the
        lease released, the usage added), the run ``run_status``, and ``step`` (the run's last step) is
        recorded; in one transaction."""
        with self._transaction() as conn:
            if step is not None:  # first, while the run still holds the task (as record_step checks)
                conn.execute(RECORD_STEP, _record_params(params["id"], params["run_id"], step))
            updated = conn.execute(
                f"UPDATE ai_agent_tasks SET {sets}, worker_id = NULL, lease_expires_at = NULL,"
                f" updated_at = :now, {_TASK_USAGE} WHERE {_HOLDS}",
                params,
            ).rowcount
            if updated:
                conn.execute(
                    "UPDATE ai_agent_task_runs SET status = :status, finished_at = :now, error = :error,"
                    f" stacktrace = :stacktrace, {_RUN_USAGE}, transcript = :transcript WHERE id = :run_id",
                    {**params, "status": run_status},
                )
        return bool(updated)

    def renew_leases(
        self, held: Sequence[tuple[str, str]], *, lease_until: datetime, now: datetime
    ) -> list[str]:
        if not held:
            return []
        renew = f"UPDATE ai_agent_tasks SET lease_expires_at = :lease_until WHERE {_HOLDS} RETURNING id"
        stamp = encode_time(lease_until)
        with self._transaction() as conn:
            rows = [
                conn.execute(renew, {"lease_until": stamp, "id": task_id, "run_id": run_id}).fetchone()
                for task_id, run_id in held
            ]
        return [row[0] for row in rows if row is not None]

    def recover_stalled(
        self, *, max_stalled_count: int, now: datetime, limit: int = 100
    ) -> list[StalledTask]:
        stamp = encode_time(now)
        recovered: list[StalledTask] = []
        with self._transaction() as conn:
            expired = conn.execute(
                "SELECT t.id, t.current_run_id, t.stalled_count, t.attempts, a.kind FROM ai_agent_tasks t"
                " LEFT JOIN ai_agents a ON a.id = t.agent_id"
                " WHERE t.status = 'running' AND t.lease_expires_at < ?"
                " ORDER BY t.lease_expires_at, t.id LIMIT ?",
                (stamp, limit),
            ).fetchall()
            for row in expired:
                stalled_count = row["stalled_count"] + 1
                requeue = stalled_count <= max_stalled_count
                # The run's usage is what its completed model calls recorded in the step ledger.
                spent = run_spent(conn, row["id"], row["current_run_id"])
                conn.execute(
                    "UPDATE ai_agent_tasks SET stalled_count = :stalled_count, worker_id = NULL,"
                    f" lease_expires_at = NULL, updated_at = :now, error = :error, {_TASK_USAGE},"
                    + (
                        " status = 'queued', attempts = attempts - 1, run_at = :now, queued_at = :now"
                        if requeue
                        else " status = 'failed', failed_at = :now"
                    )
                    + " WHERE id = :id",
                    {
                        "id": row["id"],
                        "stalled_count": stalled_count,
                        "now": stamp,
                        "error": STALLED_ERROR if requeue else STALLED_LIMIT_ERROR,
                        **spent,
                    },
                )
                conn.execute(
                    "UPDATE ai_agent_task_runs SET status = 'stalled', finished_at = :now, error = :error,"
                    f" {_RUN_USAGE} WHERE id = :run_id",
                    {"now": stamp, "error": STALLED_ERROR, "run_id": row["current_run_id"], **spent},
                )
                attempts = row["attempts"] - 1 if requeue else row["attempts"]
                recovered.append(StalledTask(row["id"], row["kind"], requeue, stalled_count, attempts))
        return recovered

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
        return self._finish(
            "status = 'queued', attempts = attempts - 1, postponed_count = postponed_count + 1,"
            " run_at = :run_at, queued_at = :now",
            "postponed",
            self._finish_params(
                task_id,
                run_id,
                usage,
                transcript,
                now,
                error=storable_text(reason),
                run_at=encode_time(run_at),
            ),
        )

    def find_pending(self, *, created_before: datetime, limit: int = 500) -> list[WaitingTask]:
        return self._waiting(
            "t.status = 'pending' AND t.task_type = 'adhoc'", "created_at", created_before, limit
        )

    def find_queued(self, *, queued_before: datetime, limit: int = 1000) -> list[WaitingTask]:
        return self._waiting("t.status = 'queued'", "queued_at", queued_before, limit)

    def _waiting(self, where: str, since: str, before: datetime, limit: int) -> list[WaitingTask]:
        """Tasks matching ``where`` whose ``since`` column is before ``before``, oldest first."""
        rows = self._query(
            f"SELECT t.id, t.{since} AS since, a.kind FROM ai_agent_tasks t LEFT JOIN ai_agents a"
            f" ON a.id = t.agent_id WHERE {where} AND t.{since} < ? ORDER BY t.{since}, t.id LIMIT ?",
            (encode_time(before), limit),
        )
        return [WaitingTask(row["id"], row["kind"], _since(row["since"])) for row in rows]

    def touch_queued(self, task_id: str, *, queued_at: datetime, now: datetime) -> bool:
        with self._transaction() as conn:
            updated = conn.execute(
                "UPDATE ai_agent_tasks SET queued_at = ?, updated_at = ?"
                " WHERE id = ? AND status = 'queued' AND queued_at = ?",
                (encode_time(now), encode_time(now), task_id, encode_time(queued_at)),
            ).rowcount
        return bool(updated)

    def fail_unrunnable(
        self, task_id: str, *, error: str, now: datetime, idle_too: bool = False
    ) -> Task | None:
        return self._update_task(
            "UPDATE ai_agent_tasks SET status = 'failed', error = :error, run_at = NULL,"
            " failed_at = :now, updated_at = :now"
            " WHERE id = :id AND status IN (SELECT value FROM json_each(:statuses)) RETURNING *",
            {
                "id": task_id,
                "error": storable_text(error),
                "now": encode_time(now),
                "statuses": json.dumps(unrunnable_statuses(idle_too)),
            },
        )

    def list_failed(self, *, limit: int = 100, offset: int = 0) -> list[Task]:
        rows = self._query(
            "SELECT * FROM ai_agent_tasks WHERE status = 'failed' AND archived_at IS NULL"
            " ORDER BY failed_at DESC, id DESC LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return _tasks(rows)

    def request_cancel(self, task_id: str, *, now: datetime) -> Task | None:
        return self._update_task(
            "UPDATE ai_agent_tasks SET cancel_requested_at = :now, updated_at = :now"
            f" WHERE id = :id AND {accepts_sql('request_cancel')} RETURNING *",
            {"id": task_id, "now": encode_time(now)},
        )

    def cancel_requested(self, task_id: str) -> bool:
        rows = self._query(
            "SELECT cancel_requested_at IS NOT NULL FROM ai_agent_tasks WHERE id = ?", (task_id,)
        )
        return bool(rows and rows[0][0])

    def finish_cancelled(
        self,
        task_id: str,
        run_id: str,
        *,
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
    ) -> bool:
        return self._finish(
            "status = 'cancelled', run_at = NULL",
            "cancelled",
            self._finish_params(task_id, run_id, usage, transcript, now, error="cancelled on request"),
        )

    def organization_spend(self, organization_id: str, *, since: datetime) -> Decimal:
        rows = self._query(
            "SELECT COALESCE(SUM(r.cost_usd), 0) FROM ai_agent_task_runs r JOIN ai_agent_tasks t"
            " ON t.id = r.task_id WHERE t.organization_id = ? AND r.started_at >= ?",
            (organization_id, encode_time(since)),
        )
        return Decimal(str(rows[0][0]))

    def set_schedule(
        self, task_id: str, *, cron: str, timezone: str, next_run_at: datetime, now: datetime
    ) -> Task | None:
        return self._update_task(
            "UPDATE ai_agent_tasks SET schedule_cron = :cron, schedule_timezone = :tz, next_run_at = :next,"
            " updated_at = :now WHERE id = :id AND task_type = 'scheduled' RETURNING *",
            {
                "id": task_id,
                "cron": cron,
                "tz": timezone,
                "next": encode_time(next_run_at),
                "now": encode_time(now),
            },
        )

    def clear_schedule(self, task_id: str, *, now: datetime) -> Task | None:
        return self._update_task(
            "UPDATE ai_agent_tasks SET schedule_cron = NULL, next_run_at = NULL, updated_at = :now"
            " WHERE id = :id AND schedule_cron IS NOT NULL RETURNING *",
            {"id": task_id, "now": encode_time(now)},
        )

    def due_schedules(self, *, now: datetime, limit: int = 1000) -> list[DueSchedule]:
        rows = self._query(
            "SELECT id, schedule_cron, COALESCE(schedule_timezone, 'UTC') AS tz, next_run_at"
            " FROM ai_agent_tasks"
            " WHERE schedule_cron IS NOT NULL AND next_run_at <= ? ORDER BY next_run_at, id LIMIT ?",
            (encode_time(now), limit),
        )
        return [DueSchedule(row[0], row[1], row[2], _since(row[3])) for row in rows]

    def fire_schedules(self, firings: list[Firing], *, now: datetime) -> list[FiredSchedule]:
        stamp = encode_time(now)
        fired: list[FiredSchedule] = []
        with self._transaction() as conn:
            for firing in firings:
                row = conn.execute(
                    "SELECT t.status, t.priority, t.organization_id, a.kind FROM ai_agent_tasks t"
                    " LEFT JOIN ai_agents a ON a.id = t.agent_id"
                    " WHERE t.id = ? AND t.schedule_cron IS NOT NULL AND t.next_run_at = ?",
                    (firing.task_id, encode_time(firing.due_at)),
                ).fetchone()
                if row is None:
                    continue
                busy = row["status"] in FIRING_BUSY_STATUSES
                resets = "" if busy else ", " + FIRING_RESETS.format(now=":now")
                conn.execute(
                    f"UPDATE ai_agent_tasks SET next_run_at = :next, updated_at = :now{resets}"
                    " WHERE id = :id",
                    {"id": firing.task_id, "next": encode_time(firing.next_run_at), "now": stamp},
                )
                if not busy:  # a new firing: the previous one's step ledger goes
                    conn.execute("DELETE FROM ai_agent_task_steps WHERE task_id = ?", (firing.task_id,))
                kind, priority, organization_id = row["kind"], row["priority"], row["organization_id"]
                fired.append(FiredSchedule(firing.task_id, kind, not busy, priority, organization_id))
        return fired

    def list_schedules(self, *, limit: int = 100, offset: int = 0) -> list[Task]:
        rows = self._query(
            "SELECT * FROM ai_agent_tasks WHERE schedule_cron IS NOT NULL"
            " ORDER BY next_run_at IS NULL, next_run_at, id LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return _tasks(rows)

    def cancel(self, task_id: str, *, now: datetime) -> Task | None:
        with self._transaction() as conn:
            row = sqlite_approvals.cancel(conn, {"task_id": task_id, "now": encode_time(now)})
        return None if row is None else task_from_row(_decode(row))

    def requeue_failed(
        self, task_id: str, *, run_at: datetime, now: datetime, resume: bool = False
    ) -> Task | None:
        firing = "firing" if resume else "firing + 1"
        with self._transaction() as conn:
            tasks = _tasks(
                conn.execute(
                    "UPDATE ai_agent_tasks SET status = 'queued', attempts = 0, stalled_count = 0,"
                    " error = NULL, postponed_count = 0, cancel_requested_at = NULL, run_at = :run_at,"
                    " queued_at = :now, failed_at = NULL, archived_at = NULL, updated_at = :now,"
                    f" firing = {firing}"
                    f" WHERE id = :id AND {accepts_sql('requeue_failed')} RETURNING *",
                    {"id": task_id, "run_at": encode_time(run_at), "now": encode_time(now)},
                )
            )
            if tasks and not resume:  # a new firing: the old one's step ledger goes
                conn.execute(
                    "DELETE FROM ai_agent_task_steps WHERE task_id = ? AND firing < ?",
                    (task_id, tasks[0].firing),
                )
        return tasks[0] if tasks else None

    # --- the step ledger ------------------------------------------------------

    def start_step(
        self,
        task_id: str,
        run_id: str,
        *,
        firing: int,
        seq: int,
        kind: StepKind,
        name: str,
        input: dict[str, Any],
        replaces: str | None,
        now: datetime,
    ) -> bool:
        params = {
            "id": new_id(),
            "task_id": task_id,
            "run_id": run_id,
            "firing": firing,
            "seq": seq,
            "kind": StepKind(kind).value,
            "name": storable_text(name),
            "input": _json(storable_json(input)),
            "replaces": replaces,
            "now": encode_time(now),
        }
        with self._transaction() as conn:
            return bool(conn.execute(START_STEP, params).rowcount)

    def finish_step(
        self,
        task_id: str,
        run_id: str,
        *,
        firing: int,
        seq: int,
        status: StepStatus,
        output: dict[str, Any] | None,
        input_tokens: int = 0,
        output_tokens: int = 0,
        cost_usd: Decimal | None = None,
        error: str | None = None,
        now: datetime,
    ) -> bool:
        params = {
            "task_id": task_id,
            "run_id": run_id,
            "firing": firing,
            "seq": seq,
            "status": step_end(status),
            "output": _json(storable_json(output)),
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cost_usd": None if cost_usd is None else str(cost_usd),
            "error": storable_text(error),
            "now": encode_time(now),
        }
        with self._transaction() as conn:
            return bool(conn.execute(FINISH_STEP, params).rowcount)

    def record_step(self, task_id: str, run_id: str, step: StepRecord) -> bool:
        with self._transaction() as conn:
            return bool(conn.execute(RECORD_STEP, _record_params(task_id, run_id, step)).rowcount)

    def get_steps(self, task_id: str) -> list[Step]:
        return [step_from_row(_decode(row)) for row in self._query(GET_STEPS, (task_id,))]

    # --- approvals ------------------------------------------------------------

    def await_step(
        self,
        task_id: str,
        run_id: str,
        *,
        firing: int,
        seq: int,
        name: str,
        input: dict[str, Any],
        approval: dict[str, Any],
        replaces: str | None,
        now: datetime,
    ) -> bool:
        params = {
            "id": new_id(),
            "task_id": task_id,
            "run_id": run_id,
            "firing": firing,
            "seq": seq,
            "name": storable_text(name),
            "input": _json(storable_json(input)),
            "approval": _json(storable_json(approval)),
            "replaces": replaces,
            "now": encode_time(now),
        }
        with self._transaction() as conn:
            return bool(conn.execute(sqlite_approvals.AWAIT_STEP, params).rowcount)

    def await_approval(
        self,
        task_id: str,
        run_id: str,
        *,
        reason: str,
        usage: Usage,
        transcript: list[dict[str, Any]] | None,
        now: datetime,
    ) -> bool:
        return self._finish(
            sqlite_approvals.AWAIT_APPROVAL_SETS,
            "awaiting_approval",
            self._finish_params(task_id, run_id, usage, transcript, now, error=storable_text(reason)),
        )

    def decide_approval(
        self, task_id: str, *, decision: dict[str, Any], output: dict[str, Any] | None, now: datetime
    ) -> Task | None:
        params = {
            "task_id": task_id,
            "decision": _json(storable_json(decision)),
            "output": _json(storable_json(output)),
            "now": encode_time(now),
        }
        with self._transaction() as conn:
            row = sqlite_approvals.decide(conn, params)
        return None if row is None else task_from_row(_decode(row))

    def expire_approval(
        self, task_id: str, *, waiting_before: datetime, error: str, now: datetime
    ) -> Task | None:
        params = {
            "task_id": task_id,
            "before": encode_time(waiting_before),
            "error": storable_text(error),
            "now": encode_time(now),
        }
        with self._transaction() as conn:
            row = sqlite_approvals.expire(conn, params)
        return None if row is None else task_from_row(_decode(row))

    def list_approvals(
        self, *, limit: int = 100, offset: int = 0, waiting_before: datetime | None = None
    ) -> list[ApprovalRequest]:
        params = {"limit": limit, "offset": offset, "before": encode_time(waiting_before)}
        with self._transaction() as conn:  # one consistent read of the list, its tasks and steps
            found = conn.execute(sqlite_approvals.LIST_APPROVALS, params).fetchall()
            tasks = {
                row["id"]: task_from_row(_decode(row))
                for row in conn.execute(
                    "SELECT * FROM ai_agent_tasks WHERE id IN (SELECT value FROM json_each(?))",
                    (json.dumps([row["task_id"] for row in found]),),
                )
            }
            steps = {
                row["id"]: step_from_row(_decode(row))
                for row in conn.execute(
                    "SELECT * FROM ai_agent_task_steps WHERE id IN (SELECT value FROM json_each(?))",
                    (json.dumps([row["step_id"] for row in found if row["step_id"] is not None]),),
                )
            }
        return [
            ApprovalRequest(tasks[row["task_id"]], None if row["step_id"] is None else steps[row["step_id"]])
            for row in found
        ]

    # --- queue views --------------------------------------------------------

    def queue_counts(self, *, now: datetime) -> QueueCounts:
        rows = self._query(
            "SELECT"
            " COALESCE(SUM(status = 'queued' AND (run_at IS NULL OR run_at <= :now)), 0) AS waiting,"
            " COALESCE(SUM(status = 'queued' AND run_at > :now), 0) AS delayed,"
            " COALESCE(SUM(status = 'running'), 0) AS active,"
            " COALESCE(SUM(status = 'completed'), 0) AS completed,"
            " COALESCE(SUM(status = 'failed'), 0) AS failed,"
            " COALESCE(SUM(status = 'awaiting_approval'), 0) AS awaiting_approval"
            " FROM ai_agent_tasks"
            " WHERE status IN ('queued', 'running', 'completed', 'failed', 'awaiting_approval')"
            " AND archived_at IS NULL",
            {"now": encode_time(now)},
        )
        return QueueCounts(**{key: int(rows[0][key]) for key in rows[0].keys()})  # noqa: SIM118

    def cleanup(self, policy: RetentionPolicy, *, now: datetime) -> CleanupResult:
        stamp = encode_time(now)
        with self._transaction() as conn:
            completed = self._archive(
                conn, "completed", "completed_at", policy.completed_age_s, policy.completed_count, now
            )
            failed = self._archive(conn, "failed", "failed_at", policy.failed_age_s, policy.failed_count, now)
            deleted = [
                conn.execute(
                    f"DELETE FROM {table} WHERE task_id IN"
                    " (SELECT id FROM ai_agent_tasks WHERE archived_at = :now)",
                    {"now": stamp},
                ).rowcount
                for table in ("ai_agent_task_runs", "ai_agent_task_steps")
            ]
        return CleanupResult(completed, failed, *deleted)

    # --- the operator's views and actions (reads in taskstore/sqlite_views.py) --------

    def _decoded(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        return [_decode(row) for row in self._query(sql, params)]

    def list_tasks(
        self,
        task_filter: TaskFilter,
        *,
        limit: int,
        after: TaskKey | None = None,
        before: TaskKey | None = None,
    ) -> list[TaskSummary]:
        return sqlite_views.list_tasks(
            self._decoded, encode_time, task_filter, limit=limit, after=after, before=before
        )

    def overview(self, *, now: datetime, organization_id: str | None = None, top: int = 20) -> Overview:
        return sqlite_views.overview(
            self._decoded, encode_time, now=now, organization_id=organization_id, top=top
        )

    def disable_schedule(self, task_id: str, *, now: datetime) -> Task | None:
        return self._update_task(
            "UPDATE ai_agent_tasks SET next_run_at = NULL, updated_at = :now"
            " WHERE id = :id AND schedule_cron IS NOT NULL AND next_run_at IS NOT NULL RETURNING *",
            {"id": task_id, "now": encode_time(now)},
        )

    def enable_schedule(self, task_id: str, *, next_run_at: datetime, now: datetime) -> Task | None:
        return self._update_task(
            "UPDATE ai_agent_tasks SET next_run_at = :next, updated_at = :now"
            " WHERE id = :id AND schedule_cron IS NOT NULL AND next_run_at IS NULL RETURNING *",
            {"id": task_id, "next": encode_time(next_run_at), "now": encode_time(now)},
        )

    def fire_schedule_now(self, task_id: str, *, now: datetime) -> Task | None:
        busy = ", ".join(f"'{status}'" for status in FIRING_BUSY_STATUSES)
        with self._transaction() as conn:
            fired = _tasks(
                conn.execute(
                    f"UPDATE ai_agent_tasks SET {FIRING_RESETS.format(now=':now')}, updated_at = :now"
                    f" WHERE id = :id AND schedule_cron IS NOT NULL AND status NOT IN ({busy}) RETURNING *",
                    {"id": task_id, "now": encode_time(now)},
                )
            )
            if fired:  # a new firing: the previous one's step ledger goes
                conn.execute("DELETE FROM ai_agent_task_steps WHERE task_id = ?", (task_id,))
        return fired[0] if fired else None

    @staticmethod
    def _archive(
        conn: sqlite3.Connection, status: str, column: str, age_s: int, keep: int, now: datetime
    ) -> int:
        return conn.execute(
            f"UPDATE ai_agent_tasks SET archived_at = :now, updated_at = :now WHERE id IN ("
            f" SELECT id FROM (SELECT id, {column} AS finished, ROW_NUMBER() OVER"
            f" (ORDER BY {column} DESC, id DESC) AS rank FROM ai_agent_tasks"
            f" WHERE status = :status AND archived_at IS NULL AND schedule_cron IS NULL)"
            f" WHERE rank > :keep OR finished < :cutoff)",
            {
                "now": encode_time(now),
                "status": status,
                "keep": keep,
                "cutoff": encode_time(now - timedelta(seconds=age_s)),
            },
        ).rowcount


def _record_params(task_id: str, run_id: str, step: StepRecord) -> dict[str, Any]:
    """The parameters of :data:`~taskstore.sqlite_steps.RECORD_STEP`."""
    return {
        "id": new_id(),
        "task_id": task_id,
        "run_id": run_id,
        "firing": step.firing,
        "seq": step.seq,
        "kind": StepKind(step.kind).value,
        "name": storable_text(step.name),
        "status": step_end(step.status),
        "input": _json(storable_json(step.input)),
        "output": _json(storable_json(step.output)),
        "input_tokens": step.input_tokens,
        "output_tokens": step.output_tokens,
        "cost_usd": None if step.cost_usd is None else str(step.cost_usd),
        "started_at": encode_time(step.started_at),
        "finished_at": encode_time(step.finished_at),
        "error": storable_text(step.error),
        "replaces": step.replaces,
    }


def _statements(script: str) -> list[str]:
    """The statements of a rendered migration (no comments; our DDL has no ``;`` inside literals)."""
    code = "\n".join(line for line in script.splitlines() if not line.strip().startswith("--"))
    return [statement.strip() for statement in code.split(";") if statement.strip()]
