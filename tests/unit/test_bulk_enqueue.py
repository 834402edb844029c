"""``create_tasks`` and ``add_tasks`` on a StubBroker and the in-memory store: checks first, all or none."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from actors.errors import (
    AgentInactive,
    AgentOrganizationMismatch,
    InvalidArgument,
    InvalidContext,
    InvalidDelay,
    InvalidPriority,
    UnknownAgentKind,
)
from config.errors import AgentQueueError
from taskstore import (
    Agent,
    AgentNotFound,
    InMemoryTaskStore,
    InvalidTaskId,
    InvalidTransition,
    TaskNotFound,
    TaskStatus,
    new_id,
)
from tests.harness import ORG, OTHER_ORG, Harness, stub_harness

LIFECYCLE = "agentq.lifecycle"


class CountingStore(InMemoryTaskStore):
    """The in-memory store, counting the agent reads and the task inserts."""

    def __init__(self) -> None:
        super().__init__()
        self.agent_reads = 0
        self.bulk_inserts = 0

    def get_agent(self, agent_id: str) -> Agent | None:
        self.agent_reads += 1
        return super().get_agent(agent_id)

    def create_tasks(self, tasks: Sequence[Any], *, now: Any) -> Any:
        self.bulk_inserts += 1
        return super().create_tasks(tasks, now=now)


@pytest.fixture
def store() -> CountingStore:
    return CountingStore()


@pytest.fixture
def app(store: CountingStore) -> Iterator[Harness]:
    with stub_harness(store) as harness:
        yield harness


def messages_waiting(app: Harness) -> int:
    return sum(len(queue.queue) for queue in app.broker.queues.values())


def deactivate(app: Harness, agent_id: str) -> None:
    store = app.store
    assert isinstance(store, InMemoryTaskStore)
    store.update_row("ai_agents", agent_id, is_active=False)


def statuses(app: Harness, task_ids: list[str]) -> list[TaskStatus]:
    return [app.store.get_task(task_id).status for task_id in task_ids]  # type: ignore[union-attr]


def items(agent_id: str, count: int, **fields: Any) -> list[dict[str, Any]]:
    return [
        {"agent_id": agent_id, "organization_id": ORG, "title": f"Task {n}", **fields} for n in range(count)
    ]


# --- create_tasks -----------------------------------------------------------------------------


def test_create_tasks_inserts_every_task_at_once_reading_each_agent_once(
    app: Harness, store: CountingStore
) -> None:
    first, second = app.agent(), app.agent()
    batch = [
        *items(first, 3),
        {"agent_id": second, "organization_id": ORG, "title": "Other", "priority": 9, "context": {"k": 1}},
        {"agent_id": first, "organization_id": ORG, "title": "Cron", "task_type": "scheduled"},
    ]
    store.agent_reads = 0

    tasks = app.queue.create_tasks(batch)

    assert [task.title for task in tasks] == ["Task 0", "Task 1", "Task 2", "Other", "Cron"]
    assert {task.status for task in tasks} == {TaskStatus.PENDING}
    assert (tasks[3].priority, tasks[3].context, tasks[3].agent_id) == (9, {"k": 1}, second)
    assert tasks[4].task_type == "scheduled" and tasks[0].max_attempts == 3
    assert (store.agent_reads, store.bulk_inserts) == (2, 1)
    assert app.queue.create_tasks([]) == []


@pytest.mark.parametrize(
    ("field", "value", "error", "needle"),
    [
        ("agent_id", "not-a-uuid", InvalidTaskId, "tasks[2]: agent id 'not-a-uuid' is not a UUID"),
        ("organization_id", 42, InvalidTaskId, "tasks[2]: organization id 42"),
        ("priority", 11, InvalidPriority, "tasks[2]: priority 11"),
        ("priority", True, InvalidPriority, "tasks[2]: priority True"),
        ("title", "", InvalidArgument, "tasks[2]: title '' must be a non-empty string"),
        ("description", 7, InvalidArgument, "tasks[2]: description 7"),
        ("task_type", "weekly", InvalidArgument, "tasks[2]: task_type 'weekly'"),
        ("context", {"x": float("nan")}, InvalidContext, "tasks[2]: context is not JSON-serialisable"),
        ("context", {"blob": "x" * 70_000}, InvalidContext, "tasks[2]: context is 70012 bytes"),
        ("agent_id", new_id(), AgentNotFound, "tasks[2]: agent '"),
    ],
)
def test_create_tasks_names_the_bad_item_and_inserts_nothing(
    app: Harness, field: str, value: object, error: type[Exception], needle: str
) -> None:
    batch = items(app.agent(), 4)
    batch[2][field] = value

    with pytest.raises(error) as caught:
        app.queue.create_tasks(batch)

    assert str(caught.value).startswith(needle)
    assert isinstance(caught.value, AgentQueueError)
    assert app.store.count_rows("ai_agent_tasks") == 0  # type: ignore[attr-defined]


def test_create_tasks_checks_every_item_before_any_agent(app: Harness, store: CountingStore) -> None:
    batch = [*items(new_id(), 1), *items(app.agent(), 2)]
    batch[2]["priority"] = -1
    store.agent_reads = 0

    with pytest.raises(InvalidPriority, match=r"tasks\[2\]"):
        app.queue.create_tasks(batch)

    assert store.agent_reads == 0


def test_create_tasks_refuses_inactive_and_foreign_agents_naming_the_item(app: Harness) -> None:
    inactive, foreign = app.agent(is_active=False), app.agent(organization_id=OTHER_ORG)

    with pytest.raises(AgentInactive, match=rf"^tasks\[1\]: agent '{inactive}' is inactive"):
        app.queue.create_tasks([*items(app.agent(), 1), *items(inactive, 1)])
    with pytest.raises(AgentOrganizationMismatch, match=r"^tasks\[0\]: "):
        app.queue.create_tasks(items(foreign, 2))

    assert app.store.count_rows("ai_agent_tasks") == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("batch", "needle"),
    [
        ("not a list", "must be a sequence of mappings"),
        ({"agent_id": "x"}, "must be a sequence of mappings"),
        (["title"], r"tasks\[0\]: 'title' is not a mapping"),
        ([{"title": "t", "organization_id": ORG}], r"tasks\[0\]: missing argument\(s\) agent_id"),
        ([{"title": "t", "agent": "a"}], r"tasks\[0\]: unknown argument\(s\) 'agent'"),
    ],
)
def test_create_tasks_refuses_what_is_not_a_list_of_create_task_arguments(
    app: Harness, batch: Any, needle: str
) -> None:
    with pytest.raises(InvalidArgument, match=needle):
        app.queue.create_tasks(batch)


# --- add_tasks --------------------------------------------------------------------------------


def test_add_tasks_queues_every_task_and_logs_the_seed_line_for_each(
    app: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    task_ids = [task.id for task in app.queue.create_tasks(items(app.agent(), 3, priority=2))]

    with caplog.at_level(logging.INFO, logger=LIFECYCLE):
        jobs = app.queue.add_tasks(task_ids)

    assert [job.id for job in jobs] == task_ids
    assert {(job.status, job.priority) for job in jobs} == {(TaskStatus.QUEUED, 2)}
    assert statuses(app, task_ids) == [TaskStatus.QUEUED] * 3
    for task_id in task_ids:
        assert f"[AgentTaskQueue] Task {task_id} added to queue (priority: 2, delay: 0ms)" in caplog.messages
    assert messages_waiting(app) == 3
    assert app.queue.add_tasks([]) == []


def test_add_tasks_with_a_priority_and_a_delay_sets_both_on_every_task(app: Harness) -> None:
    task_ids = [app.task(), app.task()]

    jobs = app.queue.add_tasks(task_ids, 8, 60_000)

    assert {job.priority for job in jobs} == {8}
    stats = app.queue.get_queue_stats()
    assert (stats.waiting, stats.delayed) == (0, 2)


def test_the_worker_runs_every_task_added_at_once(app: Harness) -> None:
    task_ids = [task.id for task in app.queue.create_tasks(items(app.agent(), 5))]
    app.queue.add_tasks(task_ids)

    with app.worker() as worker:
        app.drain(worker)

    assert statuses(app, task_ids) == [TaskStatus.COMPLETED] * 5


@pytest.mark.parametrize(
    ("args", "error", "needle"),
    [
        ({"priority": 42}, InvalidPriority, "priority 42"),
        ({"priority": 2.5}, InvalidPriority, "priority 2.5"),
        ({"delay_ms": -1}, InvalidDelay, "delay_ms -1"),
        ({"delay_ms": "10"}, InvalidDelay, "delay_ms '10'"),
    ],
)
def test_add_tasks_rejects_bad_arguments_and_enqueues_nothing(
    app: Harness, args: dict[str, Any], error: type[Exception], needle: str
) -> None:
    task_ids = [app.task(), app.task()]

    with pytest.raises(error, match=needle):
        app.queue.add_tasks(task_ids, **args)

    assert statuses(app, task_ids) == [TaskStatus.PENDING] * 2
    assert messages_waiting(app) == 0


def test_add_tasks_rejects_malformed_and_repeated_ids_naming_them(app: Harness) -> None:
    task_id = app.task()

    with pytest.raises(InvalidTaskId, match=r"^task_ids\[1\]: task id 'nope' is not a UUID"):
        app.queue.add_tasks([task_id, "nope"])
    with pytest.raises(InvalidArgument, match=rf"^task_ids\[2\]: task id '{task_id}' is given twice"):
        app.queue.add_tasks([task_id, app.task(), task_id])
    with pytest.raises(InvalidArgument, match="must be a sequence of task ids"):
        app.queue.add_tasks(task_id)

    assert statuses(app, [task_id]) == [TaskStatus.PENDING]
    assert messages_waiting(app) == 0


@pytest.mark.parametrize("problem", ["missing", "queued", "failed", "unknown_kind", "inactive_agent"])
def test_one_task_add_task_would_refuse_fails_the_whole_batch_with_its_error(
    app: Harness, problem: str
) -> None:
    good = [app.task(), app.task()]
    bad = new_id() if problem == "missing" else app.task()
    if problem == "unknown_kind":  # the agent's kind changed after the task was created
        assert isinstance(app.store, InMemoryTaskStore)
        agent_id = app.store.get_task(bad).agent_id  # type: ignore[union-attr]
        app.store.update_row("ai_agents", agent_id, kind="astrology")
    if problem == "queued":
        app.queue.add_task(bad)
    elif problem == "failed":
        assert isinstance(app.store, InMemoryTaskStore)
        app.store.update_row("ai_agent_tasks", bad, status=TaskStatus.FAILED)
    elif problem == "inactive_agent":
        deactivate(app, app.store.get_task(bad).agent_id)  # type: ignore[union-attr]
    waiting = messages_waiting(app)
    expected: dict[str, tuple[type[Exception], str]] = {
        "missing": (TaskNotFound, f"task '{bad}' does not exist"),
        "queued": (InvalidTransition, f"task '{bad}' is queued"),
        "failed": (InvalidTransition, "use retry_job for a failed task"),
        "unknown_kind": (UnknownAgentKind, "agent kind 'astrology' has no actor"),
        "inactive_agent": (AgentInactive, "is inactive"),
    }
    error, needle = expected[problem]

    with pytest.raises(error, match=needle):
        app.queue.add_tasks([good[0], bad, good[1]])

    assert statuses(app, good) == [TaskStatus.PENDING] * 2
    assert messages_waiting(app) == waiting


def test_the_first_offending_task_names_the_error(app: Harness) -> None:
    queued, missing = app.task(), new_id()
    app.queue.add_task(queued)

    with pytest.raises(TaskNotFound, match=missing):
        app.queue.add_tasks([app.task(), missing, queued])
    with pytest.raises(InvalidTransition, match=queued):
        app.queue.add_tasks([app.task(), queued, missing])


def test_a_task_queued_by_someone_else_meanwhile_fails_the_batch_and_changes_nothing(
    app: Harness, store: CountingStore
) -> None:
    task_ids = [app.task() for _ in range(3)]
    queue_runnable_tasks = store.queue_runnable_tasks

    def raced(ids: Sequence[str], **kwargs: Any) -> Any:
        # Another producer queues the second task just before add_tasks' one statement.
        store.mark_queued(ids[1], priority=None, run_at=kwargs["now"], now=kwargs["now"])
        return queue_runnable_tasks(ids, **kwargs)

    store.queue_runnable_tasks = raced  # type: ignore[method-assign,assignment]

    with pytest.raises(InvalidTransition, match=rf"task '{task_ids[1]}' is queued"):
        app.queue.add_tasks(task_ids)

    assert statuses(app, [task_ids[0], task_ids[2]]) == [TaskStatus.PENDING] * 2
    assert messages_waiting(app) == 0
