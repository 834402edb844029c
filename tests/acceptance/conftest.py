"""Fixtures shared by the acceptance tests: real worker processes and a producer on the real Redis."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from taskstore.postgres import PostgresTaskStore
from tests.acceptance.processes import WorkerProcess
from tests.harness import Harness, redis_harness


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``dramatiq actors`` processes with ``start(env, name, *args)`` (extra dramatiq arguments, e.g.
    ``"--queues", "general"``); all are killed at teardown."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], name: str = "worker", *args: str) -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path / f"{name}-{len(started)}.log", args=args)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()


@pytest.fixture
def app(postgres_store: PostgresTaskStore, redis_url: str) -> Iterator[Harness]:
    """A producer (queue, store, kinds) on the test's Postgres database and Redis."""
    with redis_harness(postgres_store, redis_url) as harness:
        yield harness
