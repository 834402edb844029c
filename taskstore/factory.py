"""Building the task store that the settings select (DESIGN §10)."""

from __future__ import annotations

from config.settings import Settings
from taskstore.base import TaskStore


def build_store(settings: Settings) -> TaskStore:
    """The configured store: Postgres when ``DATABASE_URL`` is set, else SQLite. Connects lazily."""
    if settings.database_url is not None:
        from taskstore.postgres import PostgresTaskStore

        return PostgresTaskStore(settings.database_url.get_secret_value(), max_size=settings.db_pool_max())
    from taskstore.sqlite import SqliteTaskStore

    return SqliteTaskStore(settings.sqlite_path)
