"""The schema has one source of truth: the shipped SQL files are its rendering."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from taskstore.schema import MIGRATIONS, render_all
from taskstore.sqlite import SqliteTaskStore


def test_shipped_migration_files_equal_the_rendered_schema() -> None:
    for migration in MIGRATIONS:
        assert migration.path().read_text(encoding="utf-8") == migration.render("postgres"), (
            f"{migration.path()} is stale: regenerate it from taskstore/schema.py"
        )


def test_the_sqlite_rendering_applies_and_records_itself_and_the_store_migrates_once(tmp_path: Path) -> None:
    conn = sqlite3.connect(":memory:")

    conn.executescript(render_all("sqlite"))

    names = [row[0] for row in conn.execute("SELECT name FROM agentq_schema_migrations")]
    assert names == [migration.name for migration in MIGRATIONS]
    columns = {row[1] for row in conn.execute("PRAGMA table_info(ai_agent_tasks)")}
    assert {
        "priority",
        "schedule_cron",
        "next_run_at",
        "stalled_count",
        "max_attempts",
        "attempts",
        "firing",
    } <= columns
    # The store applies each migration once, however often it is asked (columns cannot be added twice).
    store = SqliteTaskStore(tmp_path / "agentq.db")
    store.migrate()  # the first use of a connection applies them all
    assert store.migrate() == []
    assert SqliteTaskStore(tmp_path / "agentq.db").migrate() == []
    applied = sqlite3.connect(tmp_path / "agentq.db").execute("SELECT name FROM agentq_schema_migrations")
    assert [row[0] for row in applied] == [migration.name for migration in MIGRATIONS]
    store.close()


#: The Supabase CLI's migration files, oldest first, and the migrations each renders: every schema change
#: ships as a new file, so a project that applied the earlier ones gets only what is new.
SUPABASE_FILES = {
    "20260101000000_agentq.sql": ("0001_initial", "0002_supabase"),
    "20261128000000_bulk_enqueue_agentq.sql": ("0003_bulk_enqueue",),
    "20261201000000_hardening_agentq.sql": ("0004_hardening",),
    "20261202000000_one_statement_agentq.sql": ("0005_one_statement",),
    "20261203000000_step_ledger_agentq.sql": ("0006_step_ledger",),
    "20261207000000_dashboard_agentq.sql": ("0007_dashboard",),
    "20261208000000_approvals_agentq.sql": ("0008_approvals",),
    "20261209000000_claim_rows_agentq.sql": ("0009_claim_rows",),
    "20261210000000_status_tests_agentq.sql": ("0010_status_tests",),
    "20261211000000_kept_plans_agentq.sql": ("0011_kept_plans",),
}


def test_the_supabase_cli_migrations_render_every_migration_once_in_order() -> None:
    folder = Path(__file__).resolve().parents[2] / "supabase" / "migrations"
    by_name = {migration.name: migration for migration in MIGRATIONS}

    assert sorted(path.name for path in folder.glob("*.sql")) == list(SUPABASE_FILES)
    assert [name for names in SUPABASE_FILES.values() for name in names] == list(by_name)
    for file, names in SUPABASE_FILES.items():
        rendered = render_all("postgres", [by_name[name] for name in names])
        assert (folder / file).read_text(encoding="utf-8") == rendered, (
            f"{folder / file} is stale: regenerate it with render_all('postgres', …) from taskstore/schema.py"
        )
