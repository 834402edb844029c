"""Human approval of tool calls on every TaskStore: a run's step waits, the task waits in
``awaiting_approval`` (no worker, no attempt), one decision queues it again, the wait times out or is
cancelled."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any

from taskstore import (
    Firing,
    RunStatus,
    StepKind,
    StepStatus,
    TaskStatus,
    TaskStore,
    Usage,
    new_id,
)
from taskstore.rules import approval_time
from tests.conftest import Clock
from tests.taskstore.test_conformance import LEASE, queued_task, running_task, scheduled_task
from tests.taskstore.test_step_ledger import finish, start

ARGUMENTS = {"turn": 1, "call_id": "call_1", "arguments": {"amount": 30}, "reasoning": "The customer asked."}


def waiting_task(store: TaskStore, clock: Clock, **fields: Any) -> tuple[str, str]:
    """A task whose run made one model call and then waits for approval of tool ``refund`` (step 1)."""
    task_id, run_id = running_task(store, clock)
    assert start(store, clock, task_id, run_id, 0)
    assert finish(store, clock, task_id, run_id, 0, input_tokens=7)
    assert await_step(store, clock, task_id, run_id)
    assert store.await_approval(
        task_id,
        run_id,
        reason="awaiting approval of tool 'refund'",
        usage=Usage(input_tokens=7, output_tokens=2),
        transcript=[{"type": "model", "turn": 1}],
        now=clock(),
    )
    return task_id, run_id


def await_step(
    store: TaskStore, clock: Clock, task_id: str, run_id: str, seq: int = 1, replaces: str | None = None
) -> bool:
    return store.await_step(
        task_id,
        run_id,
        firing=0,
        seq=seq,
        name="refund",
        input=ARGUMENTS,
        approval={"requested_at": approval_time(clock())},
        replaces=replaces,
        now=clock(),
    )


def decision(verdict: str, clock: Clock, **values: str) -> dict[str, Any]:
    return {"decision": verdict, "decided_at": approval_time(clock()), **values}


def test_a_run_that_waits_frees_the_task_without_using_the_attempt(store: TaskStore, clock: Clock) -> None:
    requested = clock()
    task_id, run_id = waiting_task(store, clock)

    task = store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.AWAITING_APPROVAL
    assert (task.attempts, task.worker_id, task.lease_expires_at) == (0, None, None)
    assert (task.approval_requested_at, task.input_tokens, task.output_tokens) == (requested, 7, 2)
    [run] = store.get_runs(task_id)
    assert (run.id, run.status, run.finished_at) == (run_id, RunStatus.AWAITING_APPROVAL, requested)
    assert run.error == "awaiting approval of tool 'refund'" and run.input_tokens == 7
    model, tool = store.get_steps(task_id)
    assert model.approval is None and model.status == StepStatus.COMPLETED
    assert (tool.seq, tool.kind, tool.name, tool.status) == (1, StepKind.TOOL, "refund", "awaiting_approval")
    assert (tool.input, tool.started_at, tool.finished_at) == (ARGUMENTS, requested, None)
    assert tool.approval == {"requested_at": approval_time(requested)}
    # nothing of a running attempt is left to renew or recover
    assert store.renew_leases([(task_id, run_id)], lease_until=clock() + LEASE, now=clock()) == []
    assert store.recover_stalled(max_stalled_count=1, now=clock() + timedelta(days=30)) == []


def test_only_the_run_that_holds_the_task_may_make_it_wait(store: TaskStore, clock: Clock) -> None:
    task_id, run_id = running_task(store, clock)
    other = new_id()

    assert not await_step(store, clock, task_id, other)
    assert not store.await_approval(task_id, other, reason="x", usage=Usage(), transcript=None, now=clock())
    assert store.get_steps(task_id) == []
    assert store.get_task(task_id).status == TaskStatus.RUNNING  # type: ignore[union-attr]
    # a completed step is never turned into a wait
    assert start(store, clock, task_id, run_id, 0, kind=StepKind.TOOL, name="refund")
    assert finish(store, clock, task_id, run_id, 0)
    assert not await_step(store, clock, task_id, run_id, seq=0)


def test_an_approval_queues_the_task_and_records_the_decision_on_the_step(
    store: TaskStore, clock: Clock
) -> None:
    task_id, waited_run = waiting_task(store, clock)
    requested = approval_time(clock())
    clock.advance(60)
    verdict = decision("approved", clock, decided_by="ana@example.com", note="ok, under the limit")

    task = store.decide_approval(task_id, decision=verdict, output=None, now=clock())

    assert task is not None and task.status == TaskStatus.QUEUED
    assert (task.queued_at, task.run_at, task.approval_requested_at) == (clock(), clock(), None)
    tool = store.get_steps(task_id)[1]
    assert tool.status == StepStatus.AWAITING_APPROVAL and tool.output is None  # the resumed run runs it
    assert tool.approval == {"requested_at": requested, **verdict}
    # the resumed run takes the step over from the run that waited, keeping the decision
    claim = store.claim(task_id, run_id=new_id(), worker_id="w2", lease_until=clock() + LEASE, now=clock())
    assert claim is not None and claim.task.attempts == 1
    assert start(
        store, clock, task_id, claim.run_id, 1, kind=StepKind.TOOL, name="refund", replaces=waited_run
    )
    assert finish(store, clock, task_id, claim.run_id, 1, output={"content": "refunded", "is_error": False})
    tool = store.get_steps(task_id)[1]
    assert (tool.status, tool.run_id, tool.approval) == (StepStatus.COMPLETED, claim.run_id, tool.approval)
    assert tool.approval is not None and tool.approval["decision"] == "approved"


def test_a_rejection_completes_the_step_with_the_result_the_model_is_given(
    store: TaskStore, clock: Clock
) -> None:
    task_id, _ = waiting_task(store, clock)
    clock.advance(5)
    output = {"content": "rejected by a person: not this customer", "is_error": True}
    verdict = decision("rejected", clock, decided_by="bo", note="not this customer")

    task = store.decide_approval(task_id, decision=verdict, output=output, now=clock())

    assert task is not None and task.status == TaskStatus.QUEUED
    tool = store.get_steps(task_id)[1]
    assert (tool.status, tool.output, tool.finished_at) == (StepStatus.COMPLETED, output, clock())
    assert tool.approval is not None and tool.approval["decision"] == "rejected"
    assert tool.approval["note"] == "not this customer"


def test_only_one_of_two_decisions_at_once_is_taken(store: TaskStore, clock: Clock) -> None:
    task_id, _ = waiting_task(store, clock)
    barrier = threading.Barrier(4)
    results: list[object] = []

    def decide(index: int) -> None:
        barrier.wait()
        verdict = decision("approved", clock, decided_by=f"approver-{index}")
        results.append(store.decide_approval(task_id, decision=verdict, output=None, now=clock()))

    threads = [threading.Thread(target=decide, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sum(result is not None for result in results) == 1
    approval = store.get_steps(task_id)[1].approval
    assert approval is not None and approval["decided_by"].startswith("approver-")


def test_a_decision_for_a_task_that_waits_for_nothing_changes_nothing(store: TaskStore, clock: Clock) -> None:
    queued = queued_task(store, clock)
    running, _ = running_task(store, clock)
    verdict = decision("approved", clock)

    for task_id in (queued, running, new_id()):
        assert store.decide_approval(task_id, decision=verdict, output=None, now=clock()) is None
    assert store.get_task(queued).status == TaskStatus.QUEUED  # type: ignore[union-attr]
    assert store.get_task(running).status == TaskStatus.RUNNING  # type: ignore[union-attr]


def test_a_wait_older_than_the_timeout_fails_the_task_and_its_step(store: TaskStore, clock: Clock) -> None:
    task_id, _ = waiting_task(store, clock)
    requested = clock()
    clock.advance(3600)

    assert (
        store.expire_approval(task_id, waiting_before=requested, error="approval timed out", now=clock())
        is None
    )
    task = store.expire_approval(
        task_id, waiting_before=requested + timedelta(seconds=1), error="approval timed out", now=clock()
    )

    assert task is not None and task.status == TaskStatus.FAILED
    assert (task.error, task.failed_at, task.approval_requested_at, task.attempts) == (
        "approval timed out",
        clock(),
        None,
        0,
    )
    tool = store.get_steps(task_id)[1]
    assert (tool.status, tool.error, tool.finished_at) == (StepStatus.FAILED, "approval timed out", clock())
    assert tool.approval == {
        "requested_at": approval_time(requested),
        "decision": "timed_out",
        "decided_at": approval_time(clock()),
    }
    assert (
        store.decide_approval(task_id, decision=decision("approved", clock), output=None, now=clock()) is None
    )
    assert [job.id for job in store.list_failed()] == [task_id]


def test_cancelling_a_wait_cancels_the_task_and_fails_its_step(store: TaskStore, clock: Clock) -> None:
    task_id, _ = waiting_task(store, clock)
    clock.advance(1)

    cancelled = store.cancel(task_id, now=clock())

    assert cancelled is not None and cancelled.status == TaskStatus.CANCELLED
    assert cancelled.approval_requested_at is None
    tool = store.get_steps(task_id)[1]
    assert (tool.status, tool.error) == (StepStatus.FAILED, "cancelled")
    assert tool.approval is not None and tool.approval["decision"] == "cancelled"
    assert tool.approval["decided_at"] == approval_time(clock())


def test_waiting_tasks_are_listed_oldest_first_with_the_step_they_wait_for(
    store: TaskStore, clock: Clock
) -> None:
    first, _ = waiting_task(store, clock)
    clock.advance(10)
    second, _ = waiting_task(store, clock)
    clock.advance(10)
    stepless, run_id = running_task(store, clock)  # a wait with no step (a row edited by hand)
    assert store.await_approval(stepless, run_id, reason="x", usage=Usage(), transcript=None, now=clock())
    queued_task(store, clock)

    listed = store.list_approvals()

    assert [(item.task.id, item.step is not None) for item in listed] == [
        (first, True),
        (second, True),
        (stepless, False),
    ]
    step = listed[0].step
    assert step is not None and (step.name, step.input, step.status) == (
        "refund",
        ARGUMENTS,
        "awaiting_approval",
    )
    assert [item.task.id for item in store.list_approvals(limit=1, offset=1)] == [second]
    before = clock() - timedelta(seconds=15)
    assert [item.task.id for item in store.list_approvals(waiting_before=before)] == [first]


def test_waiting_tasks_are_counted_apart_and_not_as_running(store: TaskStore, clock: Clock) -> None:
    waiting_task(store, clock)
    running_task(store, clock)

    counts = store.queue_counts(now=clock())

    assert (counts.awaiting_approval, counts.active, counts.waiting) == (1, 1, 0)


def test_an_organization_cap_does_not_count_waiting_tasks(store: TaskStore, clock: Clock) -> None:
    waiting_task(store, clock)
    other = queued_task(store, clock)

    claim = store.claim(
        other, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock(), max_running_in_org=1
    )

    assert claim is not None


def test_a_schedule_firing_while_its_task_waits_only_moves_on(store: TaskStore, clock: Clock) -> None:
    task_id = scheduled_task(store, clock)
    due = store.get_task(task_id).next_run_at  # type: ignore[union-attr]
    assert due is not None
    fired = store.fire_schedules([Firing(task_id, due, due + timedelta(minutes=1))], now=clock())
    assert [firing.started for firing in fired] == [True]
    claim = store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert claim is not None
    assert store.await_step(
        task_id,
        claim.run_id,
        firing=claim.task.firing,
        seq=0,
        name="refund",
        input=ARGUMENTS,
        approval={"requested_at": approval_time(clock())},
        replaces=None,
        now=clock(),
    )
    assert store.await_approval(
        task_id, claim.run_id, reason="x", usage=Usage(), transcript=None, now=clock()
    )
    next_due = due + timedelta(minutes=1)

    [again] = store.fire_schedules([Firing(task_id, next_due, next_due + timedelta(minutes=1))], now=clock())

    task = store.get_task(task_id)
    assert not again.started and task is not None and task.status == TaskStatus.AWAITING_APPROVAL
    assert task.next_run_at == next_due + timedelta(minutes=1) and len(store.get_steps(task_id)) == 1
