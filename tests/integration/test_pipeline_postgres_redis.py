"""The pipeline on the real services: Postgres store, Redis broker, an in-process worker."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from dramatiq.brokers.redis import RedisBroker

from actors.broker.lanes import LaneBroker
from actors.errors import BrokerUnavailable
from middleware.task_lifecycle import QUEUED_OPTION
from taskstore import InMemoryTaskStore, TaskStatus, Usage, new_id, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.harness import Harness, redis_harness, wait_until

pytestmark = pytest.mark.integration

#: Options of a message re-sent for an already queued task, as a redelivery looks.
REDELIVERY: dict[str, Any] = {QUEUED_OPTION: True}


@pytest.fixture
def app(postgres_store: PostgresTaskStore, redis_url: str) -> Iterator[Harness]:
    with redis_harness(postgres_store, redis_url) as harness:
        yield harness


def statuses(app: Harness, task_ids: list[str]) -> list[TaskStatus]:
    return [app.store.get_task(task_id).status for task_id in task_ids]  # type: ignore[union-attr]


def test_stats_are_exact_before_and_after_a_worker_drains_the_queue(app: Harness) -> None:
    agent_id = app.agent()
    task_ids = [app.task(agent_id) for _ in range(25)]
    for task_id in task_ids:
        app.queue.add_task(task_id, 5, 0)
    before = app.queue.get_queue_stats()
    assert (before.waiting, before.active, before.completed) == (25, 0, 0)

    with app.worker(threads=4):
        wait_until(lambda: set(statuses(app, task_ids)) == {TaskStatus.COMPLETED}, what="25 completed tasks")

    after = app.queue.get_queue_stats()
    assert (after.waiting, after.active, after.completed, after.failed) == (0, 0, 25, 0)
    assert all(len(app.store.get_runs(task_id)) == 1 for task_id in task_ids)


def test_a_redelivered_message_never_runs_a_completed_task_again(app: Harness) -> None:
    task_id = app.task()
    app.queue.add_task(task_id)
    with app.worker():
        wait_until(lambda: statuses(app, [task_id]) == [TaskStatus.COMPLETED], what="completion")
        for _ in range(3):
            app.kinds["general"].send_with_options(args=(task_id,), **REDELIVERY)
        sentinel = app.task()
        app.queue.add_task(sentinel)
        wait_until(lambda: statuses(app, [sentinel]) == [TaskStatus.COMPLETED], what="the sentinel task")

    assert len(app.store.get_runs(task_id)) == 1


def test_failures_retry_then_dead_letter_with_runs_in_postgres(app: Harness) -> None:
    task_id = app.task(app.agent(kind="crashing"))
    app.queue.add_task(task_id)

    with app.worker():
        wait_until(lambda: statuses(app, [task_id]) == [TaskStatus.FAILED], what="the dead letter")

    job = app.queue.get_job(task_id)
    assert job is not None and job.attempts_made == 3 and len(job.stacktrace) == 3
    assert job.failed_reason == "crash in attempt 3"


def test_add_task_with_redis_down_raises_and_leaves_the_task_pending() -> None:
    # Port 1 on localhost: nothing listens, the connection is refused at once.
    with redis_harness(InMemoryTaskStore(), "redis://127.0.0.1:1/0") as app:
        task_id = app.task()

        with pytest.raises(BrokerUnavailable, match="stays pending"):
            app.queue.add_task(task_id)

        assert app.store.get_task(task_id).status == TaskStatus.PENDING  # type: ignore[union-attr]
        with pytest.raises(BrokerUnavailable):
            app.kinds["general"].send(task_id)
        assert app.store.get_task(task_id).status == TaskStatus.PENDING  # type: ignore[union-attr]


def test_add_tasks_and_retry_job_with_redis_down_put_the_tasks_back() -> None:
    store = InMemoryTaskStore()
    with redis_harness(store, "redis://127.0.0.1:1/0") as app:
        agent_id = app.agent()
        batch = [app.task(agent_id) for _ in range(2)]
        failed = app.task(agent_id)
        now = utcnow()
        store.mark_queued(failed, priority=None, run_at=now, now=now)
        claim = store.claim(
            failed, run_id=new_id(), worker_id="w", lease_until=now + timedelta(minutes=1), now=now
        )
        assert claim is not None
        store.fail_attempt(
            failed,
            claim.run_id,
            error="x",
            stacktrace=None,
            usage=Usage(),
            transcript=None,
            retry_at=None,
            now=now,
        )

        with pytest.raises(BrokerUnavailable, match="the 2 tasks; they stay pending"):
            app.queue.add_tasks(batch)
        with pytest.raises(BrokerUnavailable, match="stays pending"):
            app.queue.retry_job(failed)

        assert [store.get_task(task_id).status for task_id in [*batch, failed]] == [  # type: ignore[union-attr]
            TaskStatus.PENDING
        ] * 3


def test_the_reconciler_resends_messages_lost_in_a_redis_flush_exactly_once(app: Harness) -> None:
    from middleware import Reconciler

    agent_id = app.agent()
    lost = [app.task(agent_id) for _ in range(5)]
    for task_id in lost:
        app.queue.add_task(task_id)
    assert isinstance(app.broker, RedisBroker)
    app.broker.client.flushdb()  # Redis restarted without persistence: every message is gone
    kept = app.task(agent_id)
    app.queue.add_task(kept)
    later = Reconciler(app.store, interval_ms=1000, clock=lambda: utcnow() + timedelta(seconds=5))

    report = later.reconcile(app.broker)
    again = later.reconcile(app.broker)

    assert (report.resent_queued, again.resent_queued) == (5, 0)
    with app.worker(threads=4):
        wait_until(
            lambda: set(statuses(app, [*lost, kept])) == {TaskStatus.COMPLETED}, what="every task to complete"
        )
    assert all(len(app.store.get_runs(task_id)) == 1 for task_id in [*lost, kept])


def test_forced_maintenance_returns_a_dead_workers_messages_to_the_queue(app: Harness) -> None:
    from middleware.redis_messages import requeue_dead_workers, task_ids_in_flight

    task_id = app.task()
    app.queue.add_task(task_id)
    broker = app.broker
    assert isinstance(broker, RedisBroker)
    # A worker fetches the message, then dies: its id sits in its ack set, its heartbeat goes stale.
    dead = LaneBroker(client=broker.client, namespace=broker.namespace, heartbeat_timeout=1)
    consumer = dead.consume("general", prefetch=1, timeout=100)
    assert next(consumer) is not None
    broker.client.zadd(f"{broker.namespace}:__heartbeats__", {dead.broker_id: 0})
    assert broker.client.llen(f"{broker.namespace}:general") == 0
    assert task_id in task_ids_in_flight(broker, ["general"])

    live = RedisBroker(client=broker.client, namespace=broker.namespace, heartbeat_timeout=1000)  # type: ignore[no-untyped-call]
    requeue_dead_workers(live, ["general"])

    assert broker.client.llen(f"{broker.namespace}:general") == 1
