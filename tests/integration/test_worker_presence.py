"""Worker presence on the real Redis: a worker publishes itself and the tasks it runs, and vanishes."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from middleware.attempts import process_worker_id
from middleware.presence import WorkerPresence, presence_key, read_workers
from taskstore.sqlite import SqliteTaskStore
from tests.harness import Harness, redis_harness, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def app(sqlite_store: SqliteTaskStore, redis_url: str) -> Iterator[Harness]:
    with redis_harness(sqlite_store, redis_url) as harness:
        presence = next(m for m in harness.broker.middleware if isinstance(m, WorkerPresence))
        presence.refresh_s = 0.05
        yield harness


def test_a_running_worker_publishes_its_host_pid_threads_queues_and_running_tasks(app: Harness) -> None:
    client, namespace = app.broker.client, app.broker.namespace  # type: ignore[attr-defined]
    task_id = app.task(context={"script": [{"answer": "done", "sleep_ms": 1500}]})

    with app.worker(threads=3):
        wait_until(lambda: len(read_workers(client, namespace)) == 1, timeout_s=10, what="the record")
        app.queue.add_task(task_id)
        wait_until(
            lambda: read_workers(client, namespace)[0].running == (task_id,), timeout_s=10, what="the task"
        )
        (worker,) = read_workers(client, namespace)
        assert (worker.host, worker.pid, worker.threads) == (socket.gethostname(), os.getpid(), 3)
        assert "general" in worker.queues and not any(q.endswith(".DQ") for q in worker.queues)
        assert worker.worker_id == process_worker_id()
        assert worker.broker_id == app.broker.broker_id  # type: ignore[attr-defined]
        assert worker.last_seen >= worker.started_at
        assert 0 < client.ttl(presence_key(app.broker)) <= 30
        wait_until(lambda: read_workers(client, namespace)[0].running == (), timeout_s=15, what="the end")

    assert read_workers(client, namespace) == []


def test_malformed_and_expired_records_are_left_out(app: Harness) -> None:
    client, namespace = app.broker.client, app.broker.namespace  # type: ignore[attr-defined]
    client.set(f"{namespace}:worker:garbage", "{not json")
    client.set(f"{namespace}:worker:partial", '{"host": "h"}')
    client.set(f"{namespace}:worker:gone", "{}", px=1)

    wait_until(lambda: client.get(f"{namespace}:worker:gone") is None, timeout_s=5, what="expiry")
    assert read_workers(client, namespace) == []
