"""Postgres-specific behaviour beyond the conformance suite."""

from __future__ import annotations

import subprocess
import sys
import uuid

import psycopg
import pytest
import redis

from taskstore import NewAgent, utcnow
from taskstore.postgres import MAX_POOL, PostgresTaskStore
from tests.acceptance.processes import ROOT, command_env
from tests.harness import ORG

pytestmark = pytest.mark.integration


def test_the_pool_grows_to_the_worker_thread_count_up_to_a_cap_and_never_shrinks(postgres_url: str) -> None:
    store = PostgresTaskStore(postgres_url, max_size=6)
    try:
        store.create_agent(
            NewAgent(provider="scripted", model="scripted-1", organization_id=ORG, name="a"), now=utcnow()
        )  # opens the pool
        store.reserve_connections(20)
        store.reserve_connections(2)
        assert store._get_pool().get_stats()["pool_max"] == 24
        store.reserve_connections(512)  # 512 threads share a bounded pool, not 516 server connections
        assert store._get_pool().get_stats()["pool_max"] == MAX_POOL
    finally:
        store.close()


#: A producer that imports ``actors`` (building the runtime), then, once told, uses Redis and Postgres.
PRODUCER = """
import sys
import actors
print("imported", flush=True)
sys.stdin.readline()
actors.agent_task_queue.is_paused()
actors.agent_task_queue.get_queue_stats()
print("used", flush=True)
sys.stdin.readline()
"""


def postgres_connections(postgres_url: str, name: str) -> int:
    """Connections the Postgres server holds for the application ``name``."""
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", (name,)
        ).fetchone()
    assert row is not None
    return int(row[0])


def redis_connections(redis_url: str, name: str) -> int:
    """Connections the Redis server holds for the client ``name`` (``CLIENT LIST``)."""
    client = redis.Redis.from_url(redis_url)
    try:
        return sum(1 for entry in client.client_list() if entry.get("name") == name)
    finally:
        client.close()


def connections(postgres_url: str, redis_url: str, name: str) -> tuple[int, int]:
    """Connections the servers hold for clients named ``name``: (Postgres, Redis)."""
    return postgres_connections(postgres_url, name), redis_connections(redis_url, name)


def test_nothing_connects_before_first_use(postgres_url: str, redis_url: str) -> None:
    # Given a producer process whose connections carry a name of their own
    name = f"agentq-lazy-{uuid.uuid4().hex[:12]}"
    env = command_env(
        DATABASE_URL=f"{postgres_url}?application_name={name}", REDIS_URL=f"{redis_url}?client_name={name}"
    )
    producer = subprocess.Popen(
        [sys.executable, "-c", PRODUCER],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert producer.stdin is not None and producer.stdout is not None
    try:
        # When it has imported ``actors`` (settings, store, broker, middleware, facade): no connection
        assert producer.stdout.readline() == "imported\n"
        assert connections(postgres_url, redis_url, name) == (0, 0)

        # Then its first use connects to both
        producer.stdin.write("\n")
        producer.stdin.flush()
        assert producer.stdout.readline() == "used\n"
        on_postgres, on_redis = connections(postgres_url, redis_url, name)
        assert on_postgres >= 1 and on_redis >= 1
        producer.stdin.write("\n")
        producer.stdin.flush()
        assert producer.wait(timeout=30) == 0
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait()


def test_a_store_opens_no_connection_until_its_first_query(postgres_url: str) -> None:
    name = f"agentq-lazy-{uuid.uuid4().hex[:12]}"
    store = PostgresTaskStore(f"{postgres_url}?application_name={name}")
    try:
        store.reserve_connections(10)
        assert postgres_connections(postgres_url, name) == 0

        store.get_agent(str(uuid.uuid4()))
        assert postgres_connections(postgres_url, name) >= 1
    finally:
        store.close()
