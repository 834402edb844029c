"""The schema (docs/architecture.md, *Task store*), defined once and rendered for Postgres and SQLite.

:data:`MIGRATIONS` is the single source of truth. The Postgres rendering of each
migration is shipped as ``taskstore/migrations/<name>.sql`` — the exact file a
Supabase user applies — and a test keeps the files equal to the rendering. The
SQLite store applies the SQLite rendering of the same migrations.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

Dialect = Literal["postgres", "sqlite"]
ColumnType = Literal["uuid", "text", "int", "real", "money", "bool", "json", "timestamp", "text_array"]

#: Directory holding the rendered Postgres migrations.
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
#: Hand-written Postgres SQL: ``functions.sql`` (every current ``agentq_*`` function), who may call
#: them (``function_grants.sql``) and, in ``history/``, what earlier migrations shipped (never edited).
SQL_DIR = Path(__file__).parent / "sql"
#: Table that records which migrations a database has.
MIGRATIONS_TABLE = "agentq_schema_migrations"

_TYPES: dict[ColumnType, tuple[str, str]] = {
    "uuid": ("uuid", "TEXT"),
    "text": ("text", "TEXT"),
    "int": ("integer", "INTEGER"),
    "real": ("double precision", "REAL"),
    "money": ("numeric(16, 8)", "NUMERIC"),
    "bool": ("boolean", "INTEGER"),
    "json": ("jsonb", "TEXT"),
    "timestamp": ("timestamptz", "TEXT"),
    "text_array": ("text[]", "TEXT"),
}


@dataclass(frozen=True)
class Column:
    """One column. ``default`` is SQL valid in both dialects; ``pg_default`` is Postgres-only."""

    name: str
    type: ColumnType
    nullable: bool = True
    default: str | None = None
    pg_default: str | None = None
    check: str | None = None
    primary_key: bool = False
    references: str | None = None

    def render(self, dialect: Dialect) -> str:
        sql_type = _TYPES[self.type][0 if dialect == "postgres" else 1]
        parts = [self.name, sql_type]
        if self.primary_key:
            parts.append("PRIMARY KEY")
        elif not self.nullable:
            parts.append("NOT NULL")
        default = self.pg_default if dialect == "postgres" and self.pg_default else self.default
        if default is not None:
            parts.append(f"DEFAULT {default}")
        if self.check:
            parts.append(f"CHECK ({self.check})")
        if self.references:
            parts.append(f"REFERENCES {self.references}")
        return " ".join(parts)


@dataclass(frozen=True)
class CreateTable:
    """``CREATE TABLE IF NOT EXISTS``."""

    name: str
    columns: tuple[Column, ...]

    def render(self, dialect: Dialect) -> str:
        body = ",\n".join(f"    {column.render(dialect)}" for column in self.columns)
        return f"CREATE TABLE IF NOT EXISTS {self.name} (\n{body}\n);"


@dataclass(frozen=True)
class AddColumn:
    """``ALTER TABLE … ADD COLUMN`` (``IF NOT EXISTS`` on Postgres; SQLite relies on the migrations table)."""

    table: str
    column: Column

    def render(self, dialect: Dialect) -> str:
        guard = " IF NOT EXISTS" if dialect == "postgres" else ""
        return f"ALTER TABLE {self.table} ADD COLUMN{guard} {self.column.render(dialect)};"


@dataclass(frozen=True)
class CreateIndex:
    """``CREATE [UNIQUE] INDEX IF NOT EXISTS``, optionally partial."""

    name: str
    table: str
    columns: tuple[str, ...]
    where: str | None = None
    unique: bool = False

    def render(self, dialect: Dialect) -> str:
        where = f" WHERE {self.where}" if self.where else ""
        unique = "UNIQUE " if self.unique else ""
        columns = ", ".join(self.columns)
        return f"CREATE {unique}INDEX IF NOT EXISTS {self.name} ON {self.table} ({columns}){where};"


@dataclass(frozen=True)
class RawSQL:
    """Dialect-specific SQL written by hand; a dialect given ``None`` skips it (e.g. SQLite has no RLS)."""

    postgres: str | None = None
    sqlite: str | None = None

    def render(self, dialect: Dialect) -> str:
        return (self.postgres if dialect == "postgres" else self.sqlite) or ""


@dataclass(frozen=True)
class SQLFile:
    """Postgres-only SQL kept in a file of ``taskstore/sql/`` (SQLite skips it), read when rendered."""

    path: str

    def render(self, dialect: Dialect) -> str:
        if dialect != "postgres":
            return ""
        return (SQL_DIR / self.path).read_text(encoding="utf-8").rstrip("\n")


@dataclass(frozen=True)
class WidenCheck:
    """Let a column's ``CHECK (column IN (…))`` accept more values (the rows already there all pass).

    Postgres drops the constraint by its default name (``<table>_<column>_check``) and adds the wider one.
    SQLite cannot alter a constraint: the table's stored definition is rewritten in place, the way SQLite
    documents for loosening a CHECK (``writable_schema``; ``RESET`` reloads the schema; the store bumps
    ``schema_version`` so other connections reload it too). Both apply twice harmlessly.
    """

    table: str
    column: str
    before: str
    after: str

    def render(self, dialect: Dialect) -> str:
        old, new = f"CHECK ({self.column} IN ({self.before}))", f"CHECK ({self.column} IN ({self.after}))"
        if dialect == "postgres":
            name = f"{self.table}_{self.column}_check"
            return (
                f"ALTER TABLE {self.table} DROP CONSTRAINT IF EXISTS {name};\n\n"
                f"ALTER TABLE {self.table} ADD CONSTRAINT {name} {new};"
            )
        quoted_old, quoted_new = old.replace("'", "''"), new.replace("'", "''")
        return (
            "PRAGMA writable_schema = ON;\n\n"
            f"UPDATE sqlite_master SET sql = replace(sql, '{quoted_old}', '{quoted_new}')"
            f" WHERE type = 'table' AND name = '{self.table}';\n\n"
            "PRAGMA writable_schema = RESET;"
        )


Operation = CreateTable | AddColumn | CreateIndex | RawSQL | SQLFile | WidenCheck


@dataclass(frozen=True)
class Migration:
    """A named, ordered set of schema operations."""

    name: str
    operations: tuple[Operation, ...]

    def render(self, dialect: Dialect) -> str:
        """The migration as one SQL script, recording itself in :data:`MIGRATIONS_TABLE`."""
        once = (
            "applying it twice is safe"
            if dialect == "postgres"
            else "the SQLite store applies it once (SQLite cannot add a column only if it is missing)"
        )
        statements = [
            f"-- Agent Task Queue schema migration {self.name} ({dialect}).",
            f"-- Generated from taskstore/schema.py; {once}.",
            _migrations_table(dialect),
            *(text for text in (operation.render(dialect) for operation in self.operations) if text),
            f"INSERT INTO {MIGRATIONS_TABLE} (name) VALUES ('{self.name}') ON CONFLICT (name) DO NOTHING;",
        ]
        return "\n\n".join(statements) + "\n"

    def path(self) -> Path:
        """Where the Postgres rendering is shipped."""
        return MIGRATIONS_DIR / f"{self.name}.sql"


def _migrations_table(dialect: Dialect) -> str:
    table = CreateTable(
        MIGRATIONS_TABLE,
        (
            Column("name", "text", primary_key=True),
            Column("applied_at", "timestamp", nullable=False, default="CURRENT_TIMESTAMP"),
        ),
    )
    return table.render(dialect)


_NOW = "CURRENT_TIMESTAMP"
#: The statuses each table's CHECK allowed when it was created (0001, 0006), and since ``0008_approvals``.
_STATUSES = "'pending', 'queued', 'running', 'completed', 'failed', 'cancelled'"
_STATUSES_0008 = f"{_STATUSES}, 'awaiting_approval'"
_RUN_STATUSES = "'running', 'completed', 'failed', 'postponed', 'stalled', 'cancelled'"
_RUN_STATUSES_0008 = f"{_RUN_STATUSES}, 'awaiting_approval'"
_STEP_STATUSES = "'started', 'completed', 'failed'"
_STEP_STATUSES_0008 = f"{_STEP_STATUSES}, 'awaiting_approval'"

AGENTS = CreateTable(
    "ai_agents",
    (
        Column("id", "uuid", primary_key=True, pg_default="gen_random_uuid()"),
        Column("organization_id", "uuid", nullable=False),
        Column("name", "text", nullable=False),
        Column("kind", "text", nullable=False, default="'general'"),
        Column("provider", "text", nullable=False, default="'scripted'"),
        Column("model", "text", nullable=False, default="'scripted-1'"),
        Column("system_prompt", "text"),
        Column("allowed_tools", "text_array", nullable=False, default="'[]'", pg_default="'{}'"),
        Column("temperature", "real"),
        Column("max_tokens", "int", check="max_tokens IS NULL OR max_tokens > 0"),
        Column("max_turns", "int", nullable=False, default="10", check="max_turns > 0"),
        Column("base_url", "text"),
        Column("tool_timeout_s", "real", nullable=False, default="30", check="tool_timeout_s > 0"),
        Column("run_time_limit_s", "real", check="run_time_limit_s IS NULL OR run_time_limit_s > 0"),
        Column("fallback_provider", "text"),
        Column("fallback_model", "text"),
        Column("is_active", "bool", nullable=False, default="TRUE"),
        Column("created_at", "timestamp", nullable=False, default=_NOW),
        Column("updated_at", "timestamp", nullable=False, default=_NOW),
    ),
)

TASKS = CreateTable(
    "ai_agent_tasks",
    (
        Column("id", "uuid", primary_key=True, pg_default="gen_random_uuid()"),
        Column("agent_id", "uuid", nullable=False, references="ai_agents (id)"),
        Column("organization_id", "uuid", nullable=False),
        Column("title", "text", nullable=False),
        Column("description", "text"),
        Column(
            "task_type",
            "text",
            nullable=False,
            default="'adhoc'",
            check="task_type IN ('adhoc', 'scheduled')",
        ),
        Column("context", "json", nullable=False, default="'{}'"),
        Column("status", "text", nullable=False, default="'pending'", check=f"status IN ({_STATUSES})"),
        Column("priority", "int", nullable=False, default="5", check="priority BETWEEN 0 AND 10"),
        Column("schedule_cron", "text"),
        Column("schedule_timezone", "text"),
        Column("next_run_at", "timestamp"),
        Column("last_run_at", "timestamp"),
        Column("max_attempts", "int", nullable=False, default="3", check="max_attempts > 0"),
        Column("attempts", "int", nullable=False, default="0"),
        Column("stalled_count", "int", nullable=False, default="0"),
        Column("result", "json"),
        Column("error", "text"),
        Column("run_at", "timestamp"),
        Column("current_run_id", "uuid"),
        Column("worker_id", "text"),
        Column("lease_expires_at", "timestamp"),
        Column("postponed_count", "int", nullable=False, default="0"),
        Column("input_tokens", "int", nullable=False, default="0"),
        Column("output_tokens", "int", nullable=False, default="0"),
        Column("cached_input_tokens", "int", nullable=False, default="0"),
        Column("reasoning_tokens", "int", nullable=False, default="0"),
        Column("cost_usd", "money", nullable=False, default="0"),
        Column("cancel_requested_at", "timestamp"),
        Column("queued_at", "timestamp"),
        Column("started_at", "timestamp"),
        Column("completed_at", "timestamp"),
        Column("failed_at", "timestamp"),
        Column("archived_at", "timestamp"),
        Column("created_at", "timestamp", nullable=False, default=_NOW),
        Column("updated_at", "timestamp", nullable=False, default=_NOW),
    ),
)

RUNS = CreateTable(
    "ai_agent_task_runs",
    (
        Column("id", "uuid", primary_key=True, pg_default="gen_random_uuid()"),
        Column("task_id", "uuid", nullable=False, references="ai_agent_tasks (id) ON DELETE CASCADE"),
        Column("attempt", "int", nullable=False),
        Column(
            "status",
            "text",
            nullable=False,
            check=f"status IN ({_RUN_STATUSES})",
        ),
        Column("worker_id", "text"),
        Column("started_at", "timestamp", nullable=False, default=_NOW),
        Column("finished_at", "timestamp"),
        Column("error", "text"),
        Column("stacktrace", "text"),
        Column("input_tokens", "int", nullable=False, default="0"),
        Column("output_tokens", "int", nullable=False, default="0"),
        Column("cached_input_tokens", "int", nullable=False, default="0"),
        Column("reasoning_tokens", "int", nullable=False, default="0"),
        #: NULL when a model's price is unknown (no cost rather than a wrong one).
        Column("cost_usd", "money"),
        Column("transcript", "json"),
        Column("trace_id", "text"),
    ),
)

#: The task's current firing: 0 at creation, + 1 when a schedule fires it or ``retry_job`` starts it afresh.
#: Steps of the step ledger belong to one firing.
TASK_FIRING = Column("firing", "int", nullable=False, default="0")
#: Stream the agent's model output as ``llm_delta`` events.
AGENT_STREAM = Column("stream", "bool", nullable=False, default="FALSE")

#: Tools whose calls wait for a person's approval (besides those declared ``requires_approval`` in code).
AGENT_APPROVAL_TOOLS = Column(
    "approval_tools", "text_array", nullable=False, default="'[]'", pg_default="'{}'"
)
#: When the task started waiting in ``awaiting_approval`` (NULL in every other status).
TASK_APPROVAL_REQUESTED_AT = Column("approval_requested_at", "timestamp")
#: A tool step's approval: ``{"requested_at", "decision", "decided_by", "decided_at", "note"}`` (NULL for
#: every step that needed none).
STEP_APPROVAL = Column("approval", "json")

STEPS = CreateTable(
    "ai_agent_task_steps",
    (
        Column("id", "uuid", primary_key=True, pg_default="gen_random_uuid()"),
        Column("task_id", "uuid", nullable=False, references="ai_agent_tasks (id) ON DELETE CASCADE"),
        #: The run that last wrote the step (a later attempt takes over a step left unfinished).
        Column("run_id", "uuid", nullable=False),
        Column("firing", "int", nullable=False),
        Column("seq", "int", nullable=False, check="seq >= 0"),
        Column("kind", "text", nullable=False, check="kind IN ('llm', 'tool')"),
        #: The model of a model call, the tool of a tool call.
        Column("name", "text", nullable=False),
        Column("status", "text", nullable=False, check=f"status IN ({_STEP_STATUSES})"),
        Column("input", "json"),
        Column("output", "json"),
        Column("input_tokens", "int", nullable=False, default="0"),
        Column("output_tokens", "int", nullable=False, default="0"),
        #: NULL when a model's price is unknown, and for tool calls.
        Column("cost_usd", "money"),
        Column("started_at", "timestamp", nullable=False),
        Column("finished_at", "timestamp"),
        Column("error", "text"),
    ),
)

#: 0001/0002 indexes that 0007's cover (same leading columns), dropped so that writes keep as many indexes.
_DROP_SUPERSEDED_INDEXES = (
    "DROP INDEX IF EXISTS ai_agent_tasks_status_idx;\n"
    "DROP INDEX IF EXISTS ai_agent_tasks_agent_idx;\n"
    "DROP INDEX IF EXISTS ai_agent_tasks_organization_idx;"
)

#: Every migration, oldest first.
MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        "0001_initial",
        (
            AGENTS,
            TASKS,
            RUNS,
            CreateIndex("ai_agents_organization_idx", "ai_agents", ("organization_id",)),
            CreateIndex("ai_agent_tasks_status_idx", "ai_agent_tasks", ("status", "run_at")),
            CreateIndex(
                "ai_agent_tasks_lease_idx",
                "ai_agent_tasks",
                ("lease_expires_at",),
                where="status = 'running'",
            ),
            CreateIndex(
                "ai_agent_tasks_pending_idx", "ai_agent_tasks", ("created_at",), where="status = 'pending'"
            ),
            CreateIndex(
                "ai_agent_tasks_queued_idx", "ai_agent_tasks", ("queued_at",), where="status = 'queued'"
            ),
            CreateIndex(
                "ai_agent_tasks_organization_idx", "ai_agent_tasks", ("organization_id", "created_at")
            ),
            CreateIndex(
                "ai_agent_tasks_completed_idx",
                "ai_agent_tasks",
                ("completed_at",),
                where="status = 'completed'",
            ),
            CreateIndex(
                "ai_agent_tasks_failed_idx", "ai_agent_tasks", ("failed_at",), where="status = 'failed'"
            ),
            CreateIndex("ai_agent_task_runs_task_idx", "ai_agent_task_runs", ("task_id", "attempt")),
            CreateIndex("ai_agent_task_runs_started_idx", "ai_agent_task_runs", ("started_at",)),
        ),
    ),
    Migration(
        "0002_supabase",
        (
            # Indexes for the remaining worker queries: due/listed schedules, lease renewal, the FK.
            CreateIndex(
                "ai_agent_tasks_schedule_idx",
                "ai_agent_tasks",
                ("next_run_at",),
                where="schedule_cron IS NOT NULL",
            ),
            CreateIndex(
                "ai_agent_tasks_worker_idx", "ai_agent_tasks", ("worker_id",), where="status = 'running'"
            ),
            CreateIndex("ai_agent_tasks_agent_idx", "ai_agent_tasks", ("agent_id",)),
            # Postgres only (SQLite skips these): Supabase roles, RLS, the first agentq_* functions, grants.
            SQLFile("history/supabase_compat.sql"),
            SQLFile("history/members_table.sql"),
            SQLFile("history/updated_at_trigger.sql"),
            SQLFile("history/row_level_security.sql"),
            SQLFile("history/0002_supabase_functions.sql"),
            SQLFile("history/grants.sql"),
        ),
    ),
    Migration(
        "0003_bulk_enqueue",
        (
            # Postgres only: the Supabase store's functions for create_tasks/add_tasks, then the
            # grants again so the new functions are callable by service_role only.
            SQLFile("history/0003_bulk_enqueue_functions.sql"),
            SQLFile("history/grants.sql"),
        ),
    ),
    Migration(
        "0004_hardening",
        (
            # Postgres only: members write only their own columns, as pending tasks, with agents of
            # the task's organization (column privileges, WITH CHECK policies and a trigger). Members
            # insert id, agent_id, organization_id, title, description, context, priority, status and
            # task_type (only as 'pending' and 'adhoc'), and update the first six of those.
            SQLFile("history/member_task_writes.sql"),
            # New agents default to a real provider. SQLite cannot change a column default without
            # rebuilding the table, and every store writes provider and model explicitly from
            # NewAgent, so its default is never read: SQLite keeps the 0001 default.
            SQLFile("history/agent_provider_defaults.sql"),
        ),
    ),
    Migration(
        "0005_one_statement",
        (
            # Postgres only: every transition and read of the Postgres family as an agentq_* function,
            # called by both the Postgres and the Supabase store; then who may call them (service_role
            # only). The tables' privileges stay as 0004 left them.
            SQLFile("history/0005_functions.sql"),
            SQLFile("function_grants.sql"),
        ),
    ),
    Migration(
        "0006_step_ledger",
        (
            # The step ledger: every model call and tool call of a task's current firing, so a run
            # that is retried or recovered goes on after the last completed step.
            AddColumn("ai_agent_tasks", TASK_FIRING),
            AddColumn("ai_agents", AGENT_STREAM),
            STEPS,
            CreateIndex(
                "ai_agent_task_steps_key", "ai_agent_task_steps", ("task_id", "firing", "seq"), unique=True
            ),
            # Postgres only: members read their organizations' steps, only service_role writes; the
            # functions whose arguments changed are dropped, then the current functions installed.
            SQLFile("history/0006_step_ledger.sql"),
            SQLFile("history/0006_functions.sql"),
            SQLFile("function_grants.sql"),
        ),
    ),
    Migration(
        "0007_dashboard",
        (
            # The dashboard's task list pages by (created_at, id), newest first (agentq_list_tasks), alone
            # or within one status, agent or organization; each index serves one filter in that order.
            CreateIndex("ai_agent_tasks_created_idx", "ai_agent_tasks", ("created_at", "id")),
            CreateIndex(
                "ai_agent_tasks_status_created_idx", "ai_agent_tasks", ("status", "created_at", "id")
            ),
            CreateIndex(
                "ai_agent_tasks_agent_created_idx", "ai_agent_tasks", ("agent_id", "created_at", "id")
            ),
            CreateIndex(
                "ai_agent_tasks_organization_created_idx",
                "ai_agent_tasks",
                ("organization_id", "created_at", "id"),
            ),
            # Counts by status (waiting and delayed too) and queue depth by organization and priority,
            # of everyone or one organization, read only tasks not archived (finished jobs past
            # retention are): index-only, and small once retention runs. Supersedes 0001's
            # (status, run_at) index, as the agent and organization ones above supersede theirs.
            CreateIndex(
                "ai_agent_tasks_live_idx",
                "ai_agent_tasks",
                ("status", "organization_id", "priority", "run_at"),
                where="archived_at IS NULL",
            ),
            RawSQL(
                postgres=_DROP_SUPERSEDED_INDEXES,
                sqlite=_DROP_SUPERSEDED_INDEXES,
            ),
            # The kind filter looks up the agents of a kind.
            CreateIndex("ai_agents_kind_idx", "ai_agents", ("kind",)),
            # Postgres only: a trigram index for the title search (where pg_trgm may be created), the
            # dashboard's functions (only those: see the file) and who may call them.
            SQLFile("history/title_search.sql"),
            SQLFile("history/0007_dashboard_functions.sql"),
            SQLFile("function_grants.sql"),
        ),
    ),
    Migration(
        "0008_approvals",
        (
            # Human approval of tool calls: the tools an agent may run only once a person approved the
            # call, the status a task waits in (using no worker and no attempt), since when it waits, and
            # the decision (who, when, note) on the step that waited.
            AddColumn("ai_agents", AGENT_APPROVAL_TOOLS),
            AddColumn("ai_agent_tasks", TASK_APPROVAL_REQUESTED_AT),
            AddColumn("ai_agent_task_steps", STEP_APPROVAL),
            WidenCheck("ai_agent_tasks", "status", _STATUSES, _STATUSES_0008),
            WidenCheck("ai_agent_task_runs", "status", _RUN_STATUSES, _RUN_STATUSES_0008),
            WidenCheck("ai_agent_task_steps", "status", _STEP_STATUSES, _STEP_STATUSES_0008),
            CreateIndex(
                "ai_agent_tasks_awaiting_idx",
                "ai_agent_tasks",
                ("approval_requested_at",),
                where="status = 'awaiting_approval'",
            ),
            # Postgres only: the agentq_* functions of 0008 (0006's: sql/history/0006_functions.sql).
            SQLFile("history/0008_functions.sql"),
            SQLFile("function_grants.sql"),
        ),
    ),
    Migration(
        "0009_claim_rows",
        (
            # Postgres only: the claims answer rows instead of a built jsonb and the group-commit batches take
            # typed arrays (the drain's cost, issue 14): those functions are dropped, then the current
            # functions installed.
            SQLFile("history/0009_claim_rows.sql"),
            SQLFile("history/0009_functions.sql"),
            SQLFile("function_grants.sql"),
        ),
    ),
    Migration(
        "0010_status_tests",
        (
            # Postgres only: the transitions find their tasks by primary key whatever the statistics say;
            # their status tests no longer match an index (see the head of functions.sql).
            SQLFile("history/0010_functions.sql"),
            SQLFile("function_grants.sql"),
        ),
    ),
    Migration(
        "0011_kept_plans",
        (
            # Postgres only: the drain's batch functions keep one plan per session, found by key (see the head
            # of functions.sql); PL/pgSQL planned their statements again on every call.
            SQLFile("functions.sql"),
            SQLFile("function_grants.sql"),
        ),
    ),
)


def render_all(dialect: Dialect, migrations: Iterable[Migration] = MIGRATIONS) -> str:
    """Every migration rendered for ``dialect``, in order."""
    return "\n".join(migration.render(dialect) for migration in migrations)


def all_columns(table: CreateTable) -> tuple[Column, ...]:
    """The columns of ``table``: those it was created with, then those later migrations added."""
    added = tuple(
        operation.column
        for migration in MIGRATIONS
        for operation in migration.operations
        if isinstance(operation, AddColumn) and operation.table == table.name
    )
    return table.columns + added


def table_columns(table: CreateTable) -> tuple[str, ...]:
    """Column names of ``table`` in order: created with, then added by later migrations."""
    return tuple(column.name for column in all_columns(table))
