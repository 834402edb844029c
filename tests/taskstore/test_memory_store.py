"""The in-memory store is the SQLite store on a private database, shared safely by threads."""

from __future__ import annotations

import inspect
import threading

import pytest

from taskstore import InMemoryTaskStore, NewTask, TaskStatus, TaskStore, new_id
from taskstore.sqlite import SqliteTaskStore
from tests.conftest import Clock, make_agent
from tests.taskstore.test_conformance import LEASE, ORG, new_task, queued_task


def test_it_states_no_transition_of_its_own() -> None:
    protocol = {
        name for name, _ in inspect.getmembers(TaskStore, inspect.isfunction) if not name.startswith("_")
    }
    own = protocol & set(vars(InMemoryTaskStore))
    assert issubclass(InMemoryTaskStore, SqliteTaskStore)
    assert own == {"close"}  # every rule is the SQLite store's SQL


def test_each_store_has_its_own_database(clock: Clock) -> None:
    first, second = InMemoryTaskStore(), InMemoryTaskStore()
    task_id = new_task(first, clock)

    assert first.get_task(task_id) is not None
    assert second.get_task(task_id) is None
    assert second.count_rows("ai_agent_tasks") == 0


def test_threads_share_it_without_lock_errors(clock: Clock) -> None:
    store = InMemoryTaskStore()
    agent_id = make_agent(store, clock())
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(40):
                task = store.create_task(NewTask(agent_id, ORG, "t"), now=clock())
                store.mark_queued(task.id, priority=None, run_at=clock(), now=clock())
                claim = store.claim(
                    task.id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock()
                )
                assert claim is not None
                store.queue_counts(now=clock())
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert store.queue_counts(now=clock()).active == 8 * 40


def test_update_row_writes_python_values_through_sql(clock: Clock) -> None:
    store = InMemoryTaskStore()
    task_id = queued_task(store, clock)
    task = store.get_task(task_id)
    assert task is not None

    store.update_row("ai_agent_tasks", task_id, status=TaskStatus.FAILED, context={"a": [1]})
    store.update_row("ai_agents", task.agent_id, is_active=False, allowed_tools=("search",))

    updated, agent = store.get_task(task_id), store.get_agent(task.agent_id)
    assert updated is not None and (updated.status, updated.context) == (TaskStatus.FAILED, {"a": [1]})
    assert agent is not None and (agent.is_active, agent.allowed_tools) == (False, ("search",))
    assert [t.id for t in store.list_failed()] == [task_id]


def test_delete_row_takes_the_runs_along(clock: Clock) -> None:
    store = InMemoryTaskStore()
    task_id = queued_task(store, clock)
    assert store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())

    store.delete_row("ai_agent_tasks", task_id)

    assert store.get_task(task_id) is None
    assert store.count_rows("ai_agent_task_runs") == 0


def test_the_test_aids_refuse_unknown_tables_columns_and_rows(clock: Clock) -> None:
    store = InMemoryTaskStore()
    task_id = new_task(store, clock)

    with pytest.raises(KeyError, match="no table 'tasks'"):
        store.count_rows("tasks")
    with pytest.raises(KeyError, match="no column"):
        store.update_row("ai_agent_tasks", task_id, colour="red")
    with pytest.raises(KeyError, match="no ai_agent_tasks row"):
        store.update_row("ai_agent_tasks", new_id(), title="x")
    with pytest.raises(KeyError, match="no ai_agent_tasks row"):
        store.delete_row("ai_agent_tasks", new_id())


def test_close_keeps_the_data_and_reset_forgets_it(clock: Clock) -> None:
    store = InMemoryTaskStore()
    task_id = new_task(store, clock)

    store.close()
    assert store.get_task(task_id) is not None
    store.reset()
    assert store.get_task(task_id) is None and store.count_rows("ai_agents") == 0
