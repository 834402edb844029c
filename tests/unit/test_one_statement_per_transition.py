"""Each transition of the Postgres family has exactly one SQL body, and both stores call it."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

import pytest

from taskstore.schema import MIGRATIONS, SQLFile
from taskstore.sql_store import FUNCTIONS_SQL, signatures

TASKSTORE = Path(__file__).resolve().parents[2] / "taskstore"
#: The Python of the Postgres family: the shared store and its two transports.
POSTGRES_FAMILY = ("sql_store.py", "postgres.py", "supabase.py")
TABLES = r"(ai_agents|ai_agent_tasks|ai_agent_task_runs|ai_organization_members)"
DML = re.compile(
    rf"\b(UPDATE\s+{TABLES}|INSERT\s+INTO\s+{TABLES}|DELETE\s+FROM\s+{TABLES}|FROM\s+{TABLES})\b", re.I
)


def test_every_agentq_function_is_defined_once_in_the_current_sql() -> None:
    text = FUNCTIONS_SQL.read_text(encoding="utf-8")
    defined = Counter(re.findall(r"CREATE\s+(?:OR\s+REPLACE\s+)?FUNCTION\s+(agentq_\w+)", text, re.I))

    assert defined, "no agentq_* function found"
    assert [name for name, count in defined.items() if count > 1] == []
    assert set(defined) == set(signatures())


def test_the_python_stores_hold_no_sql_on_the_tables_only_function_calls() -> None:
    for name in POSTGRES_FAMILY:
        source = (TASKSTORE / name).read_text(encoding="utf-8")
        assert DML.findall(source) == [], f"taskstore/{name} writes or reads a table itself"
        assert ".table(" not in source, f"taskstore/{name} uses PostgREST table filters"


def test_the_stores_call_every_function_and_only_defined_ones() -> None:
    called = set()
    for name in POSTGRES_FAMILY:
        called |= set(re.findall(r"\"(agentq_\w+)\"", (TASKSTORE / name).read_text(encoding="utf-8")))

    assert called == set(signatures())


def test_the_latest_migration_installs_the_current_functions() -> None:
    installs = [
        migration.name
        for migration in MIGRATIONS
        for operation in migration.operations
        if isinstance(operation, SQLFile) and operation.path == "functions.sql"
    ]

    assert installs == [MIGRATIONS[-1].name]


@pytest.mark.parametrize("function", ["agentq_create_runnable_task", "agentq_create_tasks"])
def test_the_static_task_inserts_list_exactly_the_columns_a_new_task_row_has(function: str) -> None:
    """The task inserts spell their columns (a static statement keeps its plan): they must be
    the keys of the row the store sends, built from ``taskstore/schema.py``'s columns."""
    import re
    from datetime import UTC, datetime

    from taskstore import NewTask
    from taskstore.rows import TASK_COLUMNS
    from taskstore.sql_store import FUNCTIONS_SQL, new_row

    text = FUNCTIONS_SQL.read_text(encoding="utf-8")
    body = text[text.index(f"FUNCTION {function}(") :]
    listed = re.search(r"INSERT INTO ai_agent_tasks \((.*?)\)", body, re.DOTALL)
    assert listed is not None
    row = new_row(NewTask(agent_id="a", organization_id="o", title="t"), TASK_COLUMNS, datetime.now(UTC))
    row["status"] = "pending"
    columns = [name.strip() for name in listed[1].split(",")]
    assert sorted(columns) == sorted(row)
    selected = re.search(r"SELECT (.*?)\s+FROM jsonb_populate_record(set)?\(", body, re.DOTALL)
    assert selected is not None
    assert [name.strip() for name in selected[1].split(",")] == [f"r.{name}" for name in columns]
