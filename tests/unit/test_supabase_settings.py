"""Store selection and the Supabase settings: secrets never echoed, bad URLs named."""

from __future__ import annotations

import pytest

from config.errors import ConfigError
from config.settings import load_settings
from taskstore import build_store
from taskstore.postgres import PostgresTaskStore
from taskstore.sqlite import SqliteTaskStore
from taskstore.supabase import SupabaseTaskStore

KEY = "sb_secret_do_not_print_me"
NAMES = (
    "SUPABASE_URL",
    "SUPABASE_SERVICE_ROLE_KEY",
    "SUPABASE_SECRET_KEY",
    "DATABASE_URL",
    "AGENTQ_DB_PREPARED_STATEMENTS",
)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("key_variable", ["SUPABASE_SERVICE_ROLE_KEY", "SUPABASE_SECRET_KEY"])
def test_supabase_url_and_a_service_key_select_the_supabase_store(
    monkeypatch: pytest.MonkeyPatch, key_variable: str
) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://abcd.supabase.co/")
    monkeypatch.setenv(key_variable, KEY)
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/x")  # Supabase wins

    settings = load_settings()
    store = build_store(settings)

    assert settings.store_backend() == "supabase"
    assert isinstance(store, SupabaseTaskStore)
    assert store._client is None  # no connection at construction
    assert KEY not in repr(store) and KEY not in repr(settings)


def test_without_a_key_supabase_url_alone_falls_through_to_database_url_then_sqlite(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SUPABASE_URL", "https://abcd.supabase.co")
    assert load_settings().store_backend() == "sqlite"
    assert isinstance(build_store(load_settings()), SqliteTaskStore)
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/x")
    assert isinstance(build_store(load_settings()), PostgresTaskStore)


def test_a_bad_supabase_url_names_the_variable_and_never_echoes_the_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SUPABASE_URL", "abcd.supabase.co")
    monkeypatch.setenv("SUPABASE_SECRET_KEY", KEY)

    with pytest.raises(ConfigError) as caught:
        load_settings()

    assert "SUPABASE_URL='abcd.supabase.co'" in str(caught.value)
    assert KEY not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "setting", "threshold"),
    [
        ("postgresql://u@db.abcd.supabase.co:5432/postgres", None, 5),
        ("postgresql://u@aws-0-eu.pooler.supabase.com:6543/postgres", None, None),
        ("postgresql://u@aws-0-eu.pooler.supabase.com:6543/postgres", "true", 5),
        ("postgresql://u@127.0.0.1:5432/postgres", "false", None),
    ],
)
def test_prepared_statements_are_off_for_the_transaction_pooler(
    monkeypatch: pytest.MonkeyPatch, url: str, setting: str | None, threshold: int | None
) -> None:
    monkeypatch.setenv("DATABASE_URL", url)
    if setting is not None:
        monkeypatch.setenv("AGENTQ_DB_PREPARED_STATEMENTS", setting)

    settings = load_settings()
    store = build_store(settings)

    assert settings.db_prepare_threshold() == threshold
    assert isinstance(store, PostgresTaskStore) and store._prepare_threshold == threshold
