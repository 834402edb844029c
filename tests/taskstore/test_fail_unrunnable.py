"""Every store fails a task nothing can run (no run, no attempt), from the statuses it is asked to."""

from __future__ import annotations

from datetime import timedelta

from taskstore import RunStatus, TaskStatus, TaskStore, Usage, new_id
from tests.conftest import Clock
from tests.taskstore.test_conformance import LEASE, new_task, queued_task


def test_a_waiting_task_is_failed_without_a_run(store: TaskStore, clock: Clock) -> None:
    pending, queued = new_task(store, clock), queued_task(store, clock)
    later = clock.advance(1)

    for task_id in (pending, queued):
        task = store.fail_unrunnable(task_id, error="agent kind 'x' has no actor\x00", now=later)
        assert task is not None and task.status == TaskStatus.FAILED
        assert (task.error, task.failed_at, task.run_at, task.attempts) == (
            "agent kind 'x' has no actor",
            later,
            None,
            0,
        )
        assert store.get_runs(task_id) == []
    assert {task.id for task in store.list_failed()} == {pending, queued}


def test_only_waiting_tasks_unless_idle_ones_are_asked_for(store: TaskStore, clock: Clock) -> None:
    running, finished = queued_task(store, clock), queued_task(store, clock)
    for task_id in (running, finished):
        assert store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    [run] = store.get_runs(finished)
    store.complete(finished, run.id, result={"ok": 1}, usage=Usage(), transcript=None, now=clock())
    later = clock() + timedelta(seconds=1)

    assert store.fail_unrunnable(running, error="e", now=later, idle_too=True) is None
    assert store.fail_unrunnable(finished, error="e", now=later) is None
    assert store.fail_unrunnable(new_id(), error="e", now=later) is None
    idle = store.fail_unrunnable(finished, error="bad schedule", now=later, idle_too=True)

    assert idle is not None and (idle.status, idle.error) == (TaskStatus.FAILED, "bad schedule")
    assert [run.status for run in store.get_runs(finished)] == [RunStatus.COMPLETED]
    assert store.get_task(running).status == TaskStatus.RUNNING  # type: ignore[union-attr]
