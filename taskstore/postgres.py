"""The Postgres :class:`~taskstore.base.TaskStore`: the ``agentq_*`` functions over psycopg 3 and a pool.

Every method is one call of its SQL function (see :mod:`taskstore.sql_store`), so one round trip:
``SELECT * FROM agentq_claim(p_task_id => %(p_task_id)s::uuid, …)``. Claims, completions and step
writes that concurrent threads make at once share one call of ``agentq_claim_many``/
``agentq_complete_many``/``agentq_record_steps`` (:class:`~taskstore.group_commit.GroupCommit`). The
pool opens on first use, never at construction, and works through Supabase's transaction pooler when
built with ``prepare_threshold=None``.
"""

from __future__ import annotations

import functools
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from config.settings import DB_POOL_CAP
from taskstore.errors import DuplicateTask, SchemaMissing, StoreUnavailable, TaskStoreError
from taskstore.group_commit import GroupCommit
from taskstore.models import Claim
from taskstore.rows import AGENT_COLUMNS, TASK_COLUMNS
from taskstore.rules import USAGE_COLUMNS
from taskstore.schema import MIGRATIONS, MIGRATIONS_TABLE
from taskstore.sql_store import Applied, SqlFunctionStore, decode_claim, json_item, signatures

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


class PostgresTaskStore(SqlFunctionStore):
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
        # Without group commit every write goes straight to its single-task call.
        self._claims: Callable[[Row], Claim | None] = self._claim_alone
        self._completions: Callable[[Row], bool] = self._complete_one
        self._steps: Callable[[Row], bool] = self._step_one
        if group_commit:
            wait_s = waiter_timeout_s(timeout_s, statement_timeout_ms)
            self._claims = GroupCommit(self._claim_alone, self._claim_many, wait_timeout_s=wait_s).submit
            self._completions = GroupCommit(
                self._complete_one, self._complete_many, wait_timeout_s=wait_s
            ).submit
            self._steps = GroupCommit(self._step_one, self._steps_many, wait_timeout_s=wait_s).submit

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
        except (psycopg.errors.UndefinedFunction, psycopg.errors.UndefinedTable) as exc:
            raise SchemaMissing(
                f"the database lacks the agentq schema ({exc.diag.message_primary}): run `agentq migrate`"
            ) from exc
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"Postgres unavailable: {exc}") from exc

    def _fetch(self, query: str | sql.Composed, params: dict[str, Any] | Sequence[Any] = ()) -> list[Row]:
        with self._connection() as conn:
            return conn.execute(query, params).fetchall()

    def _call(self, function: str, params: dict[str, Any], applied: Applied = None) -> Any:
        """``SELECT … FROM function(…)``; psycopg never re-sends, so ``applied`` is not needed."""
        signature = signatures()[function]
        values = {name: _argument(value, signature.params[name]) for name, value in params.items()}
        try:
            rows = self._fetch(_call_query(function, tuple(params)), values)
        except psycopg.errors.UniqueViolation as exc:
            raise DuplicateTask(f"an id is given twice or already exists; nothing inserted ({exc})") from exc
        if not signature.returns_rows:
            return rows[0][function]
        shape = _result_shape(function)
        return [_nest(row, shape) for row in rows] if shape else rows

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

    def ensure_schema(self) -> None:
        """Raise :class:`SchemaMissing` when a migration of :data:`MIGRATIONS` is not applied."""
        rows = self._fetch(
            "SELECT COALESCE((SELECT array_agg(name) FROM agentq_schema_migrations), '{}') AS names"
            if self._has_migrations_table()
            else "SELECT '{}'::text[] AS names"
        )
        present = set(rows[0]["names"])
        missing = [migration.name for migration in MIGRATIONS if migration.name not in present]
        if missing:
            raise SchemaMissing(
                f"the database lacks migration(s) {', '.join(missing)}: run `agentq migrate` with this "
                "DATABASE_URL (or apply taskstore/migrations/*.sql in order)"
            )

    def _has_migrations_table(self) -> bool:
        rows = self._fetch("SELECT to_regclass(%s) IS NOT NULL AS ok", (MIGRATIONS_TABLE,))
        return bool(rows[0]["ok"])

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

    # --- group commit -----------------------------------------------------------

    def _submit_claim(self, item: Row) -> Claim | None:
        return self._claims(item)

    def _claim_alone(self, item: Row) -> Claim | None:
        """An uncapped claim written alone: ``agentq_claim_many`` with one item, whose rows psycopg reads
        typed (``agentq_claim`` answers a ``jsonb`` object, for PostgREST; a capped claim still uses it)."""
        return self._claim_many([item])[0]

    def _claim_many(self, batch: Sequence[Row]) -> list[Claim | None]:
        """Claims for several messages in one call (:class:`GroupCommit`), in ``batch`` order."""
        params = {
            "p_task_ids": [item["task_id"] for item in batch],
            "p_run_ids": [item["run_id"] for item in batch],
            "p_worker_ids": [item["worker_id"] for item in batch],
            "p_lease_until": [item["lease_until"] for item in batch],
            "p_now": [item["now"] for item in batch],
        }
        claims = {claim.run_id: claim for claim in map(decode_claim, self._call("agentq_claim_many", params))}
        return [claims.get(item["run_id"]) for item in batch]

    def _submit_completion(self, item: Row) -> bool:
        return self._completions(item)

    def _submit_step(self, item: Row) -> bool:
        return self._steps(item)

    def _steps_many(self, batch: Sequence[Row]) -> list[bool]:
        """Step writes of several runs in one call (:class:`GroupCommit`), in ``batch`` order."""
        return [
            bool(answer)
            for answer in self._call("agentq_record_steps", {"p_steps": [json_item(item) for item in batch]})
        ]

    def _complete_many(self, batch: Sequence[Row]) -> list[bool]:
        """Completes several runs in one call (:class:`GroupCommit`), in ``batch`` order."""
        params = {
            f"p_{plural}": [item[name] for item in batch]
            for name, plural in (
                ("task_id", "task_ids"),
                ("run_id", "run_ids"),
                ("now", "now"),
                ("result", "results"),
                ("transcript", "transcripts"),
                *((column, column) for column in (*USAGE_COLUMNS, "cost_usd")),
                ("step", "steps"),
            )
        }
        rows = self._call("agentq_complete_many", params)
        completed = {row["agentq_complete_many"] for row in rows}
        return [item["run_id"] in completed for item in batch]


#: The columns of the tables whose row type a function's ``RETURNS TABLE`` result may hold.
_ROW_TYPES: dict[str, tuple[str, ...]] = {"ai_agent_tasks": TASK_COLUMNS, "ai_agents": AGENT_COLUMNS}
#: Result columns as :func:`_nest` rebuilds them: a name and, for a row type, ``(selected, column)`` pairs.
Shape = tuple[tuple[str, tuple[tuple[str, str], ...] | None], ...]


@functools.cache
def _result_shape(function: str) -> Shape:
    """How a ``RETURNS TABLE`` row of ``function`` is selected: a row-typed column (``task
    ai_agent_tasks``) one field at a time, so psycopg decodes each by its type; empty for other results."""
    columns = signatures()[function].columns
    if not any(kind in _ROW_TYPES for kind in columns.values()):
        return ()
    return tuple(
        (
            name,
            tuple((f"{name}.{column}", column) for column in _ROW_TYPES[kind])
            if kind in _ROW_TYPES
            else None,
        )
        for name, kind in columns.items()
    )


def _nest(row: Row, shape: Shape) -> Row:
    """A selected row as the function's row, each row-typed column back as a dict (``None``: a NULL row,
    whose ``id``, the first column, is NULL), as PostgREST returns it."""
    nested: Row = {}
    for name, fields in shape:
        if fields is None:
            nested[name] = row[name]
        else:
            nested[name] = None if row[fields[0][0]] is None else {column: row[key] for key, column in fields}
    return nested


@functools.cache
def _call_query(function: str, names: tuple[str, ...]) -> str:
    """``SELECT * FROM function(name => %(name)s::type, …)``, rendered once per function and arguments; a
    row-typed result column is selected field by field (:func:`_result_shape`)."""
    types = signatures()[function].params
    arguments = sql.SQL(", ").join(
        sql.SQL("{} => {}::{}").format(sql.Identifier(name), sql.Placeholder(name), sql.SQL(types[name]))
        for name in names
    )
    call = sql.SQL("{}({})").format(sql.Identifier(function), arguments)
    if not (shape := _result_shape(function)):
        return sql.SQL("SELECT * FROM {}").format(call).as_string()
    selected = sql.SQL(", ").join(
        sql.SQL("r.{}").format(sql.Identifier(name))
        if fields is None
        else sql.SQL(", ").join(
            sql.SQL("(r.{}).{} AS {}").format(
                sql.Identifier(name), sql.Identifier(column), sql.Identifier(key)
            )
            for key, column in fields
        )
        for name, fields in shape
    )
    return sql.SQL("SELECT {} FROM {} r").format(selected, call).as_string()


def _argument(value: Any, kind: str) -> Any:
    """``value`` as psycopg sends it for a parameter of SQL type ``kind``: JSON wrapped, an array as the
    text of an array literal (cast in the query), which costs a fraction of adapting a list item by item."""
    if value is None:
        return None
    if kind == "jsonb":
        return Jsonb(value)
    if kind.endswith("[]") and isinstance(value, list | tuple):
        return _array(value, as_json=kind == "jsonb[]")
    return value


def _array(values: Sequence[Any], *, as_json: bool) -> str:
    """A Postgres array literal of ``values`` (text, timestamps, numbers, or JSON values when ``as_json``)."""
    items = []
    for value in values:
        if value is None:
            items.append("NULL")
            continue
        if as_json:
            text = json.dumps(value)
        elif isinstance(value, datetime):
            text = value.isoformat()
        else:
            text = str(value)
        items.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(items) + "}"
