"""Building the task store that the settings select (README, *Configuration*)."""

from __future__ import annotations

from config.settings import Settings
from taskstore.base import TaskStore


def build_store(settings: Settings) -> TaskStore:
    """The configured store, connecting lazily: Supabase when ``SUPABASE_URL`` and a service key
    (``SUPABASE_SERVICE_ROLE_KEY`` or ``SUPABASE_SECRET_KEY``) are set, else Postgres when
    ``DATABASE_URL`` is set, else SQLite."""
    backend = settings.store_backend()
    if backend == "supabase":
        from taskstore.supabase import SupabaseTaskStore

        key = settings.supabase_key()
        assert settings.supabase_url is not None and key is not None
        return SupabaseTaskStore(settings.supabase_url, key.get_secret_value())
    if backend == "postgres":
        from taskstore.postgres import PostgresTaskStore

        assert settings.database_url is not None
        return PostgresTaskStore(
            settings.database_url.get_secret_value(),
            max_size=settings.db_pool_max(),
            prepare_threshold=settings.db_prepare_threshold(),
            group_commit=settings.db_group_commit,
            statement_timeout_ms=settings.db_statement_timeout_ms,
        )
    from taskstore.sqlite import SqliteTaskStore

    return SqliteTaskStore(settings.sqlite_path)
