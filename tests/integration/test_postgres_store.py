"""Postgres-specific behaviour beyond the conformance suite."""

from __future__ import annotations

import pytest

from taskstore import NewAgent, utcnow
from taskstore.postgres import MAX_POOL, PostgresTaskStore
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


def test_nothing_connects_before_first_use() -> None:
    store = PostgresTaskStore("postgresql://nobody@127.0.0.1:1/none")
    store.reserve_connections(10)
    store.close()
