"""Shared fixtures: real services, stores, and a controllable clock."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import redis

from taskstore import InMemoryTaskStore, NewAgent, TaskStore
from taskstore.postgres import PostgresTaskStore
from taskstore.sqlite import SqliteTaskStore
from tests.services import redis_client, temporary_database

TRUNCATE = "TRUNCATE ai_agent_task_runs, ai_agent_tasks, ai_agents"


class Clock:
    """A clock tests move by hand."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A migrated Postgres database for the whole session."""
    with temporary_database() as url:
        store = PostgresTaskStore(url, max_size=4)
        store.migrate()
        store.close()
        yield url


@pytest.fixture
def postgres_store(postgres_url: str) -> Iterator[PostgresTaskStore]:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(TRUNCATE)
    store = PostgresTaskStore(postgres_url, max_size=8)
    yield store
    store.close()


@pytest.fixture
def sqlite_store(tmp_path) -> Iterator[SqliteTaskStore]:  # type: ignore[no-untyped-def]
    store = SqliteTaskStore(tmp_path / "agentq.db")
    yield store
    store.close()


@pytest.fixture(params=["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def store(request: pytest.FixtureRequest) -> TaskStore:
    """Every task store implementation, for the conformance suite."""
    if request.param == "memory":
        return InMemoryTaskStore()
    return request.getfixturevalue(f"{request.param}_store")  # type: ignore[no-any-return]


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A flushed Redis database (db 15), flushed again afterwards."""
    from tests.services import REDIS_URL

    client = redis_client()
    client.flushdb()
    yield REDIS_URL
    with contextlib.suppress(redis.RedisError):
        client.flushdb()
    client.close()


def make_agent(store: TaskStore, now: datetime, **fields: object) -> str:
    """Create an agent with sensible defaults; returns its id."""
    values: dict[str, object] = {
        "organization_id": "11111111-1111-4111-8111-111111111111",
        "name": "Test agent",
    }
    values.update(fields)
    return store.create_agent(NewAgent(**values), now=now).id  # type: ignore[arg-type]
