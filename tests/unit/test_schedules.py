"""Per-task schedules: validation, one firing per slot, missed slots, overlap, removal (StubBroker)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from actors.errors import InvalidArgument
from actors.schedules.cron import InvalidCronExpression, UnknownTimezone
from actors.schedules.tick import dispatch_due_schedules
from taskstore import InMemoryTaskStore, InvalidTaskId, RunStatus, TaskNotFound, TaskStatus, new_id
from tests.harness import Harness, stub_harness

LIFECYCLE = "agentq.lifecycle"
#: A Wednesday, 10:00 UTC.
WEDNESDAY = datetime(2027, 1, 6, 10, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(WEDNESDAY)


@pytest.fixture
def app(clock: Clock) -> Iterator[Harness]:
    with stub_harness(InMemoryTaskStore()) as harness:
        harness.queue.clock = clock
        yield harness


def messages_waiting(app: Harness) -> int:
    return sum(len(queue.queue) for queue in app.broker.queues.values())


def test_add_scheduled_task_stores_the_schedule_and_logs_the_next_run(
    app: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = app.task(task_type="scheduled")

    with caplog.at_level(logging.INFO, logger=LIFECYCLE):
        job = app.queue.add_scheduled_task(task_id, "0 9 * * 1", "America/New_York")

    # Next Monday 09:00 EST = 14:00 UTC.
    assert job.task.next_run_at == datetime(2027, 1, 11, 14, 0, tzinfo=UTC)
    assert (job.task.schedule_cron, job.task.schedule_timezone, job.status) == (
        "0 9 * * 1",
        "America/New_York",
        TaskStatus.PENDING,
    )
    assert any(
        "next run at 2027-01-11T14:00:00+00:00 (2027-01-11T09:00:00-05:00)" in m for m in caplog.messages
    )
    assert messages_waiting(app) == 0


def test_the_timezone_defaults_to_the_rows_then_utc(app: Harness) -> None:
    paris = app.task(task_type="scheduled")
    store = app.store
    assert isinstance(store, InMemoryTaskStore)
    store.update_row("ai_agent_tasks", paris, schedule_timezone="Europe/Paris")
    plain = app.task(task_type="scheduled")

    assert app.queue.add_scheduled_task(paris, "@daily").task.next_run_at == datetime(
        2027, 1, 6, 23, 0, tzinfo=UTC
    )
    assert app.queue.add_scheduled_task(plain, "@daily").task.next_run_at == datetime(
        2027, 1, 7, 0, 0, tzinfo=UTC
    )


@pytest.mark.parametrize(
    ("cron", "timezone", "error", "needle"),
    [
        ("61 * * * *", None, InvalidCronExpression, "'61 \\* \\* \\* \\*'"),
        ("* * *", None, InvalidCronExpression, "'\\* \\* \\*'"),
        ("@reboot", None, InvalidCronExpression, "'@reboot'"),
        ("0 9 * * 1", "Mars/Olympus", UnknownTimezone, "'Mars/Olympus'"),
    ],
)
def test_bad_cron_or_time_zone_is_refused_and_nothing_stored(
    app: Harness, cron: str, timezone: str | None, error: type[Exception], needle: str
) -> None:
    task_id = app.task(task_type="scheduled")

    with pytest.raises(error, match=needle):
        app.queue.add_scheduled_task(task_id, cron, timezone)

    task = app.store.get_task(task_id)
    assert task is not None and task.schedule_cron is None and task.next_run_at is None


def test_ad_hoc_missing_and_malformed_tasks_cannot_be_scheduled(app: Harness) -> None:
    adhoc = app.task()
    with pytest.raises(InvalidArgument, match=f"task '{adhoc}' is an ad-hoc task"):
        app.queue.add_scheduled_task(adhoc, "* * * * *")
    assert app.store.get_task(adhoc).schedule_cron is None  # type: ignore[union-attr]
    with pytest.raises(TaskNotFound):
        app.queue.add_scheduled_task(new_id(), "* * * * *")
    with pytest.raises(InvalidTaskId):
        app.queue.add_scheduled_task("tomorrow", "* * * * *")


def test_a_due_schedule_fires_runs_and_moves_to_its_next_slot(app: Harness, clock: Clock) -> None:
    task_id = app.task(task_type="scheduled")
    app.queue.add_scheduled_task(task_id, "*/15 * * * *")
    clock.now = WEDNESDAY + timedelta(minutes=15, seconds=2)

    report = dispatch_due_schedules(app.store, app.broker, now=clock.now)

    assert report.started == 1
    task = app.store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.QUEUED
    assert task.next_run_at == WEDNESDAY + timedelta(minutes=30)
    with app.worker() as worker:
        app.drain(worker)
    assert [run.status for run in app.store.get_runs(task_id)] == [RunStatus.COMPLETED]


def test_after_downtime_missed_slots_fire_once(app: Harness, clock: Clock) -> None:
    task_id = app.task(task_type="scheduled")
    app.queue.add_scheduled_task(task_id, "* * * * *")
    clock.now = WEDNESDAY + timedelta(hours=3, seconds=5)  # 180 slots missed

    first = dispatch_due_schedules(app.store, app.broker, now=clock.now)
    second = dispatch_due_schedules(app.store, app.broker, now=clock.now)

    assert (first.started, second.started) == (1, 0)
    assert messages_waiting(app) == 1
    assert app.store.get_task(task_id).next_run_at == WEDNESDAY + timedelta(hours=3, minutes=1)  # type: ignore[union-attr]


def test_two_schedulers_ticking_at_once_fire_each_schedule_once(app: Harness, clock: Clock) -> None:
    ids = [app.task(task_type="scheduled") for _ in range(50)]
    for task_id in ids:
        app.queue.add_scheduled_task(task_id, "* * * * *")
    clock.now = WEDNESDAY + timedelta(minutes=1)
    reports = []
    barrier = threading.Barrier(2)

    def tick() -> None:
        barrier.wait(timeout=10)
        reports.append(dispatch_due_schedules(app.store, app.broker, now=clock.now, batch_size=7))

    threads = [threading.Thread(target=tick) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sum(report.started for report in reports) == 50
    assert messages_waiting(app) == 50


def test_a_firing_while_the_previous_run_is_still_running_is_skipped(app: Harness, clock: Clock) -> None:
    task_id = app.task(task_type="scheduled")
    app.queue.add_scheduled_task(task_id, "* * * * *")
    clock.now = WEDNESDAY + timedelta(minutes=1)
    dispatch_due_schedules(app.store, app.broker, now=clock.now)
    app.store.claim(
        task_id, run_id=new_id(), worker_id="w", lease_until=clock.now + timedelta(minutes=5), now=clock.now
    )
    clock.now += timedelta(minutes=1)

    report = dispatch_due_schedules(app.store, app.broker, now=clock.now)

    assert (report.started, report.skipped) == (0, 1)
    assert app.store.get_task(task_id).status == TaskStatus.RUNNING  # type: ignore[union-attr]


def test_remove_job_on_a_scheduled_task_stops_future_firings(app: Harness, clock: Clock) -> None:
    task_id = app.task(task_type="scheduled")
    app.queue.add_scheduled_task(task_id, "* * * * *")

    app.queue.remove_job(task_id)
    clock.now = WEDNESDAY + timedelta(minutes=5)

    assert dispatch_due_schedules(app.store, app.broker, now=clock.now).started == 0
    assert app.queue.list_schedules() == []
    assert app.store.get_task(task_id).status == TaskStatus.CANCELLED  # type: ignore[union-attr]


def test_a_schedule_corrupted_in_the_database_is_disabled_not_retried_forever(
    app: Harness, clock: Clock
) -> None:
    task_id = app.task(task_type="scheduled")
    app.store.set_schedule(task_id, cron="not cron", timezone="UTC", next_run_at=WEDNESDAY, now=WEDNESDAY)

    report = dispatch_due_schedules(app.store, app.broker, now=clock.now)

    assert report.disabled == 1
    assert app.store.get_task(task_id).schedule_cron is None  # type: ignore[union-attr]
