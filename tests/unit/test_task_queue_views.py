"""The facade's operator views and schedule controls (StubBroker + in-memory store)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from actors.errors import InvalidArgument, ScheduleNotChanged, UnknownAgentKind
from actors.schedules.tick import dispatch_due_schedules
from taskstore import (
    InMemoryTaskStore,
    InvalidTaskId,
    TaskFilter,
    TaskKey,
    TaskNotFound,
    TaskStatus,
    new_id,
)
from tests.harness import ORG, OTHER_ORG, Harness, stub_harness

LIFECYCLE = "agentq.lifecycle"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2027, 1, 6, 10, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def app(clock: Clock) -> Iterator[Harness]:
    with stub_harness(InMemoryTaskStore()) as harness:
        harness.queue.clock = clock
        yield harness


def messages_waiting(app: Harness) -> int:
    return sum(len(queue.queue) for queue in app.broker.queues.values())


def tasks(app: Harness, clock: Clock, count: int) -> list[str]:
    """``count`` tasks, one a second; newest first."""
    agent_id = app.agent()
    created = []
    for index in range(count):
        created.append(app.task(agent_id, title=f"Task {index}"))
        clock.advance(1)
    return created[::-1]


def test_list_tasks_pages_both_ways_with_the_keys_of_its_neighbours(app: Harness, clock: Clock) -> None:
    newest_first = tasks(app, clock, 5)

    first = app.queue.list_tasks(limit=2)
    second = app.queue.list_tasks(limit=2, after=first.older)
    last = app.queue.list_tasks(limit=2, after=second.older)
    back = app.queue.list_tasks(limit=2, before=last.newer)
    front = app.queue.list_tasks(limit=2, before=back.newer)

    assert [item.id for item in first.items + second.items + last.items] == newest_first
    assert first.newer is None and first.older == first.items[-1].key
    assert second.newer == second.items[0].key and second.older is not None
    assert last.older is None and len(last.items) == 1
    assert [item.id for item in back.items] == [item.id for item in second.items]
    assert back.older == back.items[-1].key and back.newer == back.items[0].key
    assert [item.id for item in front.items] == newest_first[:2] and front.newer is None
    assert app.queue.list_tasks(limit=5).older is None


def test_list_tasks_filters_and_normalizes_ids(app: Harness, clock: Clock) -> None:
    mine = tasks(app, clock, 2)
    other = app.task(app.agent(organization_id=OTHER_ORG), organization_id=OTHER_ORG)

    page = app.queue.list_tasks(TaskFilter(organization_id=OTHER_ORG.upper()))

    assert [item.id for item in page.items] == [other]
    assert {item.id for item in app.queue.list_tasks(TaskFilter(organization_id=ORG)).items} == set(mine)
    assert app.queue.list_tasks(TaskFilter(status=TaskStatus.FAILED)).items == []


@pytest.mark.parametrize(
    ("arguments", "error", "names"),
    [
        ({"limit": 0}, InvalidArgument, "limit 0"),
        ({"limit": 501}, InvalidArgument, "limit 501"),
        ({"limit": True}, InvalidArgument, "limit True"),
        ({"task_filter": {"status": "failed"}}, InvalidArgument, "task_filter {'status': 'failed'}"),
        ({"task_filter": TaskFilter(status="failed")}, InvalidArgument, "status 'failed'"),  # type: ignore[arg-type]
        ({"task_filter": TaskFilter(agent_id="nope")}, InvalidTaskId, "agent id 'nope'"),
        ({"task_filter": TaskFilter(organization_id="x")}, InvalidTaskId, "organization id 'x'"),
        ({"task_filter": TaskFilter(kind="")}, InvalidArgument, "kind ''"),
        ({"task_filter": TaskFilter(title="t" * 201)}, InvalidArgument, "title 'tttt"),
        (
            {"task_filter": TaskFilter(created_from=datetime(2027, 1, 1))},  # noqa: DTZ001 - naive on purpose
            InvalidArgument,
            "created_from",
        ),
        ({"after": "cursor"}, InvalidArgument, "after 'cursor'"),
        ({"before": TaskKey(datetime(2027, 1, 1, tzinfo=UTC), "x")}, InvalidTaskId, "task id 'x'"),
        (
            {
                "after": TaskKey(datetime(2027, 1, 1, tzinfo=UTC), new_id()),
                "before": TaskKey(datetime(2027, 1, 1, tzinfo=UTC), new_id()),
            },
            InvalidArgument,
            "not both",
        ),
    ],
)
def test_list_tasks_refuses_bad_arguments_naming_them(
    app: Harness, arguments: dict[str, object], error: type[Exception], names: str
) -> None:
    with pytest.raises(error, match=names.replace("(", r"\(").replace("{", r"\{").replace("[", r"\[")):
        app.queue.list_tasks(**arguments)  # type: ignore[arg-type]


def test_get_overview_reads_the_store_for_one_organization_or_all(app: Harness, clock: Clock) -> None:
    tasks(app, clock, 2)
    other = app.task(app.agent(organization_id=OTHER_ORG), organization_id=OTHER_ORG)
    app.queue.add_task(other)

    assert app.queue.get_overview().counts == {"pending": 2, "queued": 1, "waiting": 1, "delayed": 0}
    assert app.queue.get_overview(OTHER_ORG.upper()).counts == {"queued": 1, "waiting": 1, "delayed": 0}
    with pytest.raises(InvalidTaskId, match="organization id 'acme'"):
        app.queue.get_overview("acme")


def scheduled(app: Harness) -> str:
    task_id = app.task(task_type="scheduled")
    app.queue.add_scheduled_task(task_id, "0 9 * * *", "Europe/Paris")
    return task_id


def test_a_schedule_is_disabled_then_enabled_from_its_next_slot(
    app: Harness, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = scheduled(app)

    with caplog.at_level(logging.INFO, logger=LIFECYCLE):
        disabled = app.queue.disable_schedule(task_id)
    clock.advance(2 * 86400)
    assert dispatch_due_schedules(app.store, app.broker, now=clock()).started == 0
    with caplog.at_level(logging.INFO, logger=LIFECYCLE):
        enabled = app.queue.enable_schedule(task_id)

    assert disabled.task.next_run_at is None and disabled.task.schedule_cron == "0 9 * * *"
    # 2027-01-08 10:00 UTC = 11:00 in Paris: the next 09:00 Paris is 2027-01-09 08:00 UTC.
    assert enabled.task.next_run_at == datetime(2027, 1, 9, 8, 0, tzinfo=UTC)
    assert f"Schedule of job {task_id} disabled" in caplog.text
    assert f"Schedule of job {task_id} enabled; next run at 2027-01-09T08:00:00+00:00" in caplog.text
    with pytest.raises(ScheduleNotChanged, match="its schedule is not disabled"):
        app.queue.enable_schedule(task_id)
    app.queue.disable_schedule(task_id)
    with pytest.raises(ScheduleNotChanged, match="already disabled"):
        app.queue.disable_schedule(task_id)


def test_schedule_controls_refuse_tasks_without_a_schedule(app: Harness) -> None:
    adhoc = app.task()

    for control in (app.queue.disable_schedule, app.queue.enable_schedule, app.queue.run_schedule_now):
        with pytest.raises(ScheduleNotChanged, match=f"task '{adhoc}': has no schedule"):
            control(adhoc)
        with pytest.raises(TaskNotFound):
            control(new_id())
        with pytest.raises(InvalidTaskId, match="job id 'nope'"):
            control("nope")


def test_run_schedule_now_queues_a_fresh_run_and_keeps_the_next_slot(
    app: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = scheduled(app)
    next_run = app.queue._task(task_id).next_run_at

    with caplog.at_level(logging.INFO, logger=LIFECYCLE):
        job = app.queue.run_schedule_now(task_id)

    assert (job.status, job.attempts_made, job.task.next_run_at) == (TaskStatus.QUEUED, 0, next_run)
    assert messages_waiting(app) == 1
    assert f"Task {task_id} added to queue (priority: 5, delay: 0ms)" in caplog.text
    with pytest.raises(ScheduleNotChanged, match="its run is queued"):
        app.queue.run_schedule_now(task_id)
    assert messages_waiting(app) == 1


def test_run_schedule_now_of_a_task_nothing_can_run_changes_nothing(app: Harness) -> None:
    task_id = scheduled(app)
    store = app.store
    assert isinstance(store, InMemoryTaskStore)
    store.update_row("ai_agents", app.queue._task(task_id).agent_id, kind="no_such_kind")

    with pytest.raises(UnknownAgentKind):
        app.queue.run_schedule_now(task_id)

    assert app.queue._task(task_id).status == TaskStatus.PENDING and messages_waiting(app) == 0
