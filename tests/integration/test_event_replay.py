"""A task's events rebuilt from the database once its stream has expired (or was never written)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
import redis

from actors.events import Event, stream_key
from taskstore import InMemoryTaskStore, TaskStatus, TaskStore
from taskstore.postgres import PostgresTaskStore
from tests.harness import Harness, redis_harness, wait_until

pytestmark = pytest.mark.integration

TOOL_SCRIPT = {
    "script": [
        {"tool": "calculate", "arguments": {"expression": "131900 - 120400"}},
        {"answer": "Revenue grew by 11500."},
    ]
}
ENDED = (TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED)


@pytest.fixture(params=["memory", pytest.param("postgres")])
def store(request: pytest.FixtureRequest) -> TaskStore:
    if request.param == "memory":
        return InMemoryTaskStore()
    postgres: PostgresTaskStore = request.getfixturevalue("postgres_store")
    return postgres


@pytest.fixture
def app(store: TaskStore, redis_url: str) -> Iterator[Harness]:
    # Streams of ended tasks expire one second after their last event
    with redis_harness(store, redis_url, events_ttl_s=1) as harness:
        yield harness


def run_to_end(app: Harness, task_id: str) -> None:
    with app.worker():
        wait_until(lambda: app.store.get_task(task_id).status in ENDED, what="the task to end")  # type: ignore[union-attr]
    app.runtime.events.flush(5)


def expire(app: Harness, task_id: str) -> None:
    client: redis.Redis = app.broker.client  # type: ignore[attr-defined]
    wait_until(lambda: not client.exists(stream_key(task_id)), timeout_s=10, what="the stream to expire")


def read(app: Harness, task_id: str, **kwargs: Any) -> list[Event]:
    return list(app.queue.events(task_id, follow=False, **kwargs))


def types(events: list[Event]) -> list[str]:
    return [event.type for event in events]


def comparable(event: Event) -> tuple[str, dict[str, Any]]:
    """What a live event and its replay share: the type and the data both carry."""
    shared = (
        "provider",
        "input_tokens",
        "output_tokens",
        "cost_usd",
        "tool_calls",
        "name",
        "call_id",
        "is_error",
    )
    return event.type, {key: event.data[key] for key in shared if key in event.data}


def test_after_the_stream_expired_the_run_is_replayed_from_the_ledger(app: Harness) -> None:
    # Given a tool-using task that completed, and whose events were read live
    task_id = app.task(context=TOOL_SCRIPT)
    app.queue.add_task(task_id)
    run_to_end(app, task_id)
    live = read(app, task_id)

    # When its stream expires
    expire(app, task_id)
    replayed = read(app, task_id)

    # Then the same events come back, in the same order, rebuilt from the ledger and marked replayed
    assert (
        types(replayed)
        == types(live)
        == [
            "queued",
            "running",
            "llm_started",
            "llm_completed",
            "tool_started",
            "tool_completed",
            "llm_started",
            "llm_completed",
            "completed",
        ]
    )
    assert [comparable(event) for event in replayed] == [comparable(event) for event in live]
    assert all(event.data["replayed"] is True and event.task_id == task_id for event in replayed)
    ids = [tuple(map(int, event.id.split("-"))) for event in replayed]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert replayed[1].data["run_id"] == live[1].data["run_id"]
    # no prompt or output text: AGENTQ_TRACE_CONTENT is off
    assert all(not {"content", "arguments", "result", "output"} & set(event.data) for event in replayed)

    # after= works on replayed ids; a follow of an ended task replays and stops
    assert read(app, task_id, after=replayed[4].id) == replayed[5:]
    assert types(list(app.queue.events(task_id, follow=True, timeout_s=30))) == types(replayed)


def test_a_replay_shows_retries_and_the_final_failure(app: Harness) -> None:
    task_id = app.task(app.agent(kind="crashing"))
    app.queue.add_task(task_id)
    run_to_end(app, task_id)
    expire(app, task_id)

    events = read(app, task_id)

    assert types(events) == ["queued", "running", "retrying", "running", "retrying", "running", "failed"]
    assert [event.data["attempt"] for event in events if event.type == "running"] == [1, 2, 3]
    assert (
        events[2].data["error"] == "crash in attempt 1" and events[-1].data["error"] == "crash in attempt 3"
    )


def test_a_replay_shows_a_postponement(app: Harness) -> None:
    task_id = app.task(app.agent(kind="throttled"), context={"throttle": 1, "postpone_ms": 20})
    app.queue.add_task(task_id)
    run_to_end(app, task_id)
    expire(app, task_id)

    events = read(app, task_id)

    assert types(events)[:4] == ["queued", "running", "postponed", "running"]
    assert types(events)[-1] == "completed" and "rate limited" in events[2].data["reason"]


def test_a_replay_of_a_task_removed_while_waiting_is_queued_then_cancelled(app: Harness) -> None:
    task_id = app.task()
    app.queue.add_task(task_id, None, 60_000)
    app.queue.remove_job(task_id)
    app.runtime.events.flush(5)
    expire(app, task_id)

    assert types(read(app, task_id)) == ["queued", "cancelled"]


def test_a_replay_after_retry_job_shows_only_the_current_firing(
    app: Harness, use_agent: Callable[[str, str], None]
) -> None:
    # Given a task that failed for good, then was retried with a working agent and completed
    task_id = app.task(app.agent(kind="capped"))
    app.queue.add_task(task_id)
    run_to_end(app, task_id)
    use_agent(task_id, app.agent())
    app.queue.retry_job(task_id)
    run_to_end(app, task_id)
    expire(app, task_id)

    # When its events are replayed, the retried firing is what the ledger describes
    events = read(app, task_id)

    assert types(events) == ["queued", "running", "llm_started", "llm_completed", "completed"]
    assert events[1].data["attempt"] == 1


def test_with_trace_content_a_replay_carries_tool_arguments_results_and_the_answer(
    store: TaskStore, redis_url: str
) -> None:
    with redis_harness(store, redis_url, events_ttl_s=1, trace_content=True) as app:
        task_id = app.task(context=TOOL_SCRIPT)
        app.queue.add_task(task_id)
        run_to_end(app, task_id)
        expire(app, task_id)
        events = {event.type: event.data for event in reversed(read(app, task_id))}  # first of each type

    assert events["tool_started"]["arguments"] == {"expression": "131900 - 120400"}
    assert events["tool_completed"]["result"] == "11500"
    assert events["completed"]["output"] == "Revenue grew by 11500."


def test_a_follow_of_a_task_whose_events_were_never_published_ends_with_its_replay(
    store: TaskStore, redis_url: str
) -> None:
    # Given workers that publish no events (AGENTQ_EVENTS_ENABLED=false) and a follower already waiting
    with redis_harness(store, redis_url, events_enabled=False) as app:
        task_id = app.task(context=TOOL_SCRIPT)
        seen: list[Event] = []

        def follow() -> None:
            seen.extend(list(app.queue.events(task_id, timeout_s=60)))

        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        app.queue.add_task(task_id)
        run_to_end(app, task_id)

        # Then the follow ends by itself once the task has ended, with the database's account of it
        follower.join(timeout=30)
        assert not follower.is_alive()
    assert types(seen)[0] == "queued" and types(seen)[-1] == "completed"
    assert all(event.data.get("replayed") for event in seen)


@pytest.fixture
def use_agent(request: pytest.FixtureRequest, store: TaskStore) -> Callable[[str, str], None]:
    """Point a task at another agent (a row edit, as an operator fixing the task would make)."""

    def edit(task_id: str, agent_id: str) -> None:
        if isinstance(store, InMemoryTaskStore):
            store.update_row("ai_agent_tasks", task_id, agent_id=agent_id)
            return
        with psycopg.connect(request.getfixturevalue("postgres_url"), autocommit=True) as conn:
            conn.execute("UPDATE ai_agent_tasks SET agent_id = %s WHERE id = %s", (agent_id, task_id))

    return edit
