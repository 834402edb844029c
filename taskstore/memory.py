"""An in-memory :class:`~taskstore.base.TaskStore` for tests: the SQLite store on a private database.

Every transition is the SQLite store's own SQL, so the two cannot disagree. A plain
``:memory:`` database exists per connection, and shared-cache mode takes table locks
that ignore the busy timeout, so the store keeps one connection for all threads and
serializes its use with a lock.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from taskstore.rows import AGENT_COLUMNS, RUN_COLUMNS, STEP_COLUMNS, TASK_COLUMNS
from taskstore.sqlite import SqliteTaskStore, encode_value

_COLUMNS = {
    "ai_agents": AGENT_COLUMNS,
    "ai_agent_tasks": TASK_COLUMNS,
    "ai_agent_task_runs": RUN_COLUMNS,
    "ai_agent_task_steps": STEP_COLUMNS,
}


def _columns(table: str) -> tuple[str, ...]:
    try:
        return _COLUMNS[table]
    except KeyError:
        raise KeyError(f"no table {table!r}; the tables are {sorted(_COLUMNS)}") from None


class InMemoryTaskStore(SqliteTaskStore):
    """A thread-safe, process-local task store; each instance has its own empty database."""

    def __init__(self) -> None:
        super().__init__(":memory:")
        self._shared_lock = threading.RLock()
        self._shared = self._open()  # the path ":memory:" opens a new, private database
        self._apply_migrations(self._shared)

    def __repr__(self) -> str:
        return "InMemoryTaskStore()"

    @contextmanager
    def _borrow(self) -> Iterator[sqlite3.Connection]:
        with self._shared_lock:
            yield self._shared

    def close(self) -> None:
        """Nothing to release: the data lives as long as the store (tests read it after a worker stops)."""

    def reset(self) -> None:
        """Forget everything."""
        with self._transaction() as conn:
            for table in ("ai_agent_task_steps", "ai_agent_task_runs", "ai_agent_tasks", "ai_agents"):
                conn.execute(f"DELETE FROM {table}")

    # --- test aids: set up states the protocol has no transition for --------

    def update_row(self, table: str, row_id: str, **values: Any) -> None:
        """Overwrite columns of one row, e.g. ``update_row("ai_agents", agent_id, is_active=False)``.

        Values are Python values as the records hold them (enums, datetimes, dicts), encoded
        like the store's own writes. Raises KeyError for an unknown table, column or row.
        """
        unknown = set(values) - set(_columns(table))
        if unknown:
            raise KeyError(f"{table} has no column {sorted(unknown)}")
        assignments = ", ".join(f"{name} = :{name}" for name in values)
        params = {name: encode_value(name, value) for name, value in values.items()}
        with self._transaction() as conn:
            updated = conn.execute(
                f"UPDATE {table} SET {assignments} WHERE id = :row_id", {**params, "row_id": row_id}
            ).rowcount
        if not updated:
            raise KeyError(f"no {table} row {row_id!r}")

    def delete_row(self, table: str, row_id: str) -> None:
        """Delete one row (a task's runs go with it). Raises KeyError for an unknown table or row."""
        _columns(table)
        with self._transaction() as conn:
            if not conn.execute(f"DELETE FROM {table} WHERE id = ?", (row_id,)).rowcount:
                raise KeyError(f"no {table} row {row_id!r}")

    def count_rows(self, table: str) -> int:
        """How many rows ``table`` holds. Raises KeyError for an unknown table."""
        _columns(table)
        return int(self._query(f"SELECT count(*) FROM {table}")[0][0])
