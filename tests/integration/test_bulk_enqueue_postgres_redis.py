"""``create_tasks`` and ``add_tasks`` on the real services: Postgres, the lane broker on Redis, a worker."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any, cast

import dramatiq
import psycopg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from actors.broker.factory import build_broker
from actors.broker.lanes import LaneBroker
from actors.errors import BrokerUnavailable, InvalidContext, UnknownAgentKind
from actors.runtime import build_runtime
from middleware import build_middleware
from taskstore import InvalidTaskId, InvalidTransition, TaskNotFound, TaskStatus, new_id
from taskstore.postgres import PostgresTaskStore
from tests.harness import ORG, OTHER_ORG, Harness, declare_kinds, harness_settings, redis_harness, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def app(postgres_store: PostgresTaskStore, redis_url: str) -> Iterator[Harness]:
    with redis_harness(postgres_store, redis_url) as harness:
        yield harness


def create(app: Harness, count: int, agent_id: str | None = None, **fields: Any) -> list[str]:
    agent_id = agent_id or app.agent()
    batch = [
        {"agent_id": agent_id, "organization_id": ORG, "title": f"Task {n}", **fields} for n in range(count)
    ]
    return [task.id for task in app.queue.create_tasks(batch)]


def statuses(app: Harness, task_ids: list[str]) -> list[TaskStatus]:
    return [task.status for task in app.store.get_tasks(task_ids)]


def lane_broker(app: Harness) -> LaneBroker:
    assert isinstance(app.broker, LaneBroker)
    return app.broker


def messages_in_redis(app: Harness) -> int:
    client = lane_broker(app).client
    return sum(int(client.hlen(key)) for key in client.scan_iter(match="agentq:*.msgs"))


def lanes(app: Harness, queue: str = "general") -> dict[str, list[str]]:
    """Task ids waiting in each lane list (``p<priority>.o.<organization>``) of ``queue``."""
    client = lane_broker(app).client
    found: dict[str, list[str]] = {}
    for key in client.scan_iter(match=f"agentq:{queue}.p*.o.*"):
        name = key.decode().removeprefix(f"agentq:{queue}.")
        payloads = client.hmget(f"agentq:{queue}.msgs", client.lrange(key, 0, -1))
        found[name] = [dramatiq.Message.decode(cast(bytes, data)).args[0] for data in payloads]
    return found


def test_tasks_created_and_added_in_bulk_are_all_run_by_a_worker(app: Harness) -> None:
    task_ids = create(app, 60)

    jobs = app.queue.add_tasks(task_ids)

    assert [job.id for job in jobs] == task_ids
    assert statuses(app, task_ids) == [TaskStatus.QUEUED] * 60
    assert messages_in_redis(app) == 60
    assert app.queue.get_queue_stats().waiting == 60
    with app.worker(threads=4):
        wait_until(lambda: set(statuses(app, task_ids)) == {TaskStatus.COMPLETED}, what="60 completed tasks")
    assert all(len(app.store.get_runs(task_id)) == 1 for task_id in task_ids)


def test_priorities_and_organizations_land_in_their_lanes(app: Harness) -> None:
    urgent = create(app, 2, priority=9)
    routine = create(app, 2, priority=2)
    other = create(app, 1, app.agent(organization_id=OTHER_ORG), organization_id=OTHER_ORG, priority=2)

    app.queue.add_tasks([*routine, *other, *urgent])

    assert lanes(app) == {f"p9.o.{ORG}": urgent, f"p2.o.{ORG}": routine, f"p2.o.{OTHER_ORG}": other}
    order = [dramatiq.Message.decode(data).args[0] for data in lane_broker(app).fetch("general", 5)]
    assert order == [*urgent, routine[0], *other, routine[1]]  # priority first, then organizations' turns


def test_a_priority_given_to_add_tasks_overrides_every_rows(app: Harness) -> None:
    task_ids = create(app, 3, priority=1)

    jobs = app.queue.add_tasks(task_ids, priority=7)

    assert {job.priority for job in jobs} == {7}
    assert lanes(app) == {f"p7.o.{ORG}": task_ids}


def test_delayed_tasks_wait_in_the_delay_queue_then_run(app: Harness) -> None:
    task_ids = create(app, 3)

    app.queue.add_tasks(task_ids, delay_ms=400)

    client = lane_broker(app).client
    assert client.llen("agentq:general.DQ") == 3 and lanes(app) == {}
    assert app.queue.get_queue_stats().delayed == 3
    with app.worker(threads=2):
        wait_until(lambda: set(statuses(app, task_ids)) == {TaskStatus.COMPLETED}, what="the delayed tasks")
    for task in app.store.get_tasks(task_ids):
        assert task.queued_at is not None and task.started_at is not None
        assert (task.started_at - task.queued_at).total_seconds() >= 0.4


@pytest.mark.parametrize("problem", ["queued", "missing", "malformed", "unknown_kind", "repeated"])
def test_one_bad_task_anywhere_in_the_list_changes_nothing(
    app: Harness, postgres_url: str, problem: str
) -> None:
    task_ids = create(app, 5)
    bad: Any
    if problem == "queued":
        bad = create(app, 1)[0]
        app.queue.add_task(bad)
    elif problem == "unknown_kind":
        agent_id = app.agent()
        bad = create(app, 1, agent_id)[0]
        with psycopg.connect(postgres_url, autocommit=True) as conn:  # its kind changed after the insert
            conn.execute("UPDATE ai_agents SET kind = 'astrology' WHERE id = %s", (agent_id,))
    else:
        bad = {"missing": new_id(), "malformed": "not-a-task-id", "repeated": task_ids[0]}[problem]
    error = {
        "queued": InvalidTransition,
        "missing": TaskNotFound,
        "malformed": InvalidTaskId,
        "unknown_kind": UnknownAgentKind,
        "repeated": ValueError,
    }[problem]
    before = messages_in_redis(app)

    with pytest.raises(error):
        app.queue.add_tasks([*task_ids[:3], bad, *task_ids[3:]])

    assert statuses(app, task_ids) == [TaskStatus.PENDING] * 5
    assert {task.queued_at for task in app.store.get_tasks(task_ids)} == {None}
    assert messages_in_redis(app) == before


def test_a_bad_item_in_create_tasks_inserts_nothing(app: Harness) -> None:
    agent_id = app.agent()
    batch: list[dict[str, Any]] = [
        {"agent_id": agent_id, "organization_id": ORG, "title": f"Task {n}"} for n in range(4)
    ]
    batch[3]["context"] = {"when": object()}

    with pytest.raises(InvalidContext, match=r"^tasks\[3\]: context is not JSON-serialisable"):
        app.queue.create_tasks(batch)

    assert app.store.find_pending(created_before=app.queue.clock() + timedelta(minutes=1)) == []


def test_with_redis_down_add_tasks_raises_and_every_task_stays_pending(
    postgres_store: PostgresTaskStore, redis_url: str
) -> None:
    # Port 1 on localhost: nothing listens, the connection is refused at once.
    with redis_harness(postgres_store, "redis://127.0.0.1:1/0") as down:
        task_ids = create(down, 4)
        for delay_ms in (0, 1000):
            with pytest.raises(BrokerUnavailable, match="they stay pending"):
                down.queue.add_tasks(task_ids, priority=9, delay_ms=delay_ms)

            tasks = down.store.get_tasks(task_ids)
            assert {(task.status, task.queued_at, task.run_at) for task in tasks} == {
                (TaskStatus.PENDING, None, None)
            }

    # Nothing half-done is left behind: with Redis back, the same tasks are added and run.
    with redis_harness(postgres_store, redis_url) as app:
        app.queue.add_tasks(task_ids)
        with app.worker(threads=2):
            wait_until(lambda: set(statuses(app, task_ids)) == {TaskStatus.COMPLETED}, what="completion")


def test_every_task_of_a_batch_gets_its_own_publish_span_parenting_its_processing(
    postgres_store: PostgresTaskStore, redis_url: str
) -> None:
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    config = harness_settings(redis_url=redis_url)
    broker = build_broker(
        config, postgres_store, middleware=build_middleware(config, postgres_store, tracer_provider=provider)
    )
    broker.emit_after("process_boot")
    app = Harness(
        runtime := build_runtime(config, store=postgres_store, broker=broker), declare_kinds(runtime)
    )
    try:
        task_ids = create(app, 4)
        app.queue.add_tasks(task_ids)
        with app.worker(threads=2):
            wait_until(
                lambda: set(statuses(app, task_ids)) == {TaskStatus.COMPLETED}, what="4 completed tasks"
            )
    finally:
        broker.close()

    finished = spans.get_finished_spans()
    publishes = [span for span in finished if span.name == "general publish"]
    processes = [span for span in finished if span.name == "general process"]
    assert len(publishes) == 4 and len(processes) == 4
    assert {span.status.status_code for span in publishes} == {StatusCode.UNSET}
    assert {span.parent.span_id for span in processes if span.parent} == {
        span.context.span_id for span in publishes
    }
