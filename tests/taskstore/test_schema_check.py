"""``ensure_schema``: Postgres refuses a database that lacks a migration (naming it); SQLite applies it."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from taskstore import SchemaMissing
from taskstore.postgres import PostgresTaskStore
from taskstore.schema import MIGRATIONS
from taskstore.sqlite import SqliteTaskStore
from tests.services import temporary_database

pytestmark = pytest.mark.integration


def test_postgres_names_every_missing_migration_then_accepts_the_migrated_database() -> None:
    with temporary_database() as url:
        store = PostgresTaskStore(url)
        try:
            with pytest.raises(SchemaMissing, match="lacks migration\\(s\\) 0001_initial, 0002_supabase"):
                store.ensure_schema()
            with psycopg.connect(url, autocommit=True) as conn:
                for migration in MIGRATIONS[:-1]:
                    conn.execute(migration.path().read_text(encoding="utf-8").encode())
            with pytest.raises(SchemaMissing, match=f"lacks migration\\(s\\) {MIGRATIONS[-1].name}: run"):
                store.ensure_schema()

            store.migrate()

            store.ensure_schema()
        finally:
            store.close()


def test_postgres_calls_into_a_missing_schema_raise_schema_missing_not_a_driver_error() -> None:
    with temporary_database() as url:
        store = PostgresTaskStore(url)
        try:
            with pytest.raises(SchemaMissing, match="run `agentq migrate`"):
                store.get_task("00000000-0000-4000-8000-000000000000")
        finally:
            store.close()


def test_sqlite_applies_what_is_missing(tmp_path: Path) -> None:
    store = SqliteTaskStore(tmp_path / "fresh.db")
    try:
        store.ensure_schema()

        assert store.get_task("00000000-0000-4000-8000-000000000000") is None
        assert store.migrate() == []
    finally:
        store.close()
