"""The schema has one source of truth: the shipped SQL files are its rendering."""

from __future__ import annotations

import sqlite3

from taskstore.schema import MIGRATIONS, render_all


def test_shipped_migration_files_equal_the_rendered_schema() -> None:
    for migration in MIGRATIONS:
        assert migration.path().read_text(encoding="utf-8") == migration.render("postgres"), (
            f"{migration.path()} is stale: regenerate it from taskstore/schema.py"
        )


def test_the_sqlite_rendering_applies_twice_and_records_itself() -> None:
    conn = sqlite3.connect(":memory:")
    script = render_all("sqlite")

    conn.executescript(script)
    conn.executescript(script)

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
    } <= columns


def test_the_supabase_cli_migration_is_every_migration_rendered_for_postgres() -> None:
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[2] / "supabase" / "migrations" / "20260101000000_agentq.sql"
    assert shipped.read_text(encoding="utf-8") == render_all("postgres"), (
        f"{shipped} is stale: regenerate it with render_all('postgres') from taskstore/schema.py"
    )
