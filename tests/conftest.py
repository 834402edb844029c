"""Shared fixtures: real services, stores, and a controllable clock."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
import redis

from taskstore import InMemoryTaskStore, NewAgent, TaskStore
from taskstore.postgres import PostgresTaskStore
from taskstore.sqlite import SqliteTaskStore
from taskstore.supabase import SupabaseTaskStore
from tests.fakes.postgrest import FakePostgrest
from tests.services import redis_client, temporary_database

TRUNCATE = "TRUNCATE ai_agent_task_steps, ai_agent_task_runs, ai_agent_tasks, ai_agents"
#: The service key the PostgREST test double accepts (a made-up secret key).
FAKE_SERVICE_KEY = "sb_secret_test_only_not_a_real_key"
FAKE_ANON_KEY = "sb_publishable_test_only"


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


@pytest.fixture
def postgres_unprepared_store(postgres_url: str) -> Iterator[PostgresTaskStore]:
    """The Postgres store as configured for Supabase's transaction pooler: no prepared statements."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(TRUNCATE)
    store = PostgresTaskStore(postgres_url, max_size=8, prepare_threshold=None)
    yield store
    store.close()


@pytest.fixture(scope="session")
def fake_postgrest(postgres_url: str) -> Iterator[FakePostgrest]:
    """A PostgREST double on the session's migrated database (service key: ``FAKE_SERVICE_KEY``)."""
    with FakePostgrest(postgres_url, service_key=FAKE_SERVICE_KEY, anon_key=FAKE_ANON_KEY) as server:
        yield server


@pytest.fixture
def supabase_store(fake_postgrest: FakePostgrest, postgres_url: str) -> Iterator[SupabaseTaskStore]:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(TRUNCATE)
    store = SupabaseTaskStore(fake_postgrest.url, FAKE_SERVICE_KEY)
    yield store
    store.close()


@pytest.fixture
def supabase_live_store(request: pytest.FixtureRequest) -> Iterator[SupabaseTaskStore]:
    """The Supabase store on a real project (opt-in: ``-m supabase_live`` with ``SUPABASE_URL`` set).

    It deletes every row of the three tables first: use a throwaway project.
    """
    if "supabase_live" not in (request.config.getoption("-m") or ""):
        pytest.skip("runs only when selected with -m supabase_live (it empties the project's tables)")
    url = os.environ.get("SUPABASE_URL")
    key = os.environ.get("SUPABASE_SERVICE_ROLE_KEY") or os.environ.get("SUPABASE_SECRET_KEY")
    if not url or not key:
        pytest.skip("set SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY (or SUPABASE_SECRET_KEY) to run")
    store = SupabaseTaskStore(url, key)
    store.migrate()
    client = store._get_client()
    for table in ("ai_agent_task_runs", "ai_agent_tasks", "ai_agents"):
        client.table(table).delete().neq("id", "00000000-0000-0000-0000-000000000000").execute()
    yield store
    store.close()


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.integration),
        pytest.param("postgres_unprepared", marks=pytest.mark.integration),
        pytest.param("supabase", marks=pytest.mark.integration),
        pytest.param("supabase_live", marks=pytest.mark.supabase_live),
    ]
)
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
    """Create an agent with sensible defaults (the offline ``scripted`` provider); returns its id."""
    values: dict[str, object] = {
        "organization_id": "11111111-1111-4111-8111-111111111111",
        "name": "Test agent",
        "provider": "scripted",
        "model": "scripted-1",
    }
    values.update(fields)
    return store.create_agent(NewAgent(**values), now=now).id  # type: ignore[arg-type]
