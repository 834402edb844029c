"""The step ledger on every TaskStore: compare-and-set writes by the run that holds the task, one
firing at a time, the usage of a stalled run, retention."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from taskstore import (
    Claim,
    Firing,
    NewAgent,
    RetentionPolicy,
    RunStatus,
    StepKind,
    StepRecord,
    StepStatus,
    TaskStatus,
    TaskStore,
    Usage,
    new_id,
)
from tests.conftest import Clock
from tests.taskstore.test_conformance import LEASE, ORG, queued_task, running_task, scheduled_task


def start(
    store: TaskStore,
    clock: Clock,
    task_id: str,
    run_id: str,
    seq: int,
    *,
    kind: StepKind = StepKind.LLM,
    name: str = "gpt-4o-mini",
    firing: int = 0,
    replaces: str | None = None,
    input: dict[str, Any] | None = None,
) -> bool:
    return store.start_step(
        task_id,
        run_id,
        firing=firing,
        seq=seq,
        kind=kind,
        name=name,
        input=input if input is not None else {"turn": 1},
        replaces=replaces,
        now=clock(),
    )


def finish(
    store: TaskStore,
    clock: Clock,
    task_id: str,
    run_id: str,
    seq: int,
    *,
    status: StepStatus = StepStatus.COMPLETED,
    firing: int = 0,
    **values: Any,
) -> bool:
    values.setdefault("output", {"content": "ok"})
    return store.finish_step(task_id, run_id, firing=firing, seq=seq, status=status, now=clock(), **values)


def stall(store: TaskStore, clock: Clock, task_id: str) -> Claim:
    """Let the running task's lease expire, recover it and claim it again: the new attempt's claim."""
    clock.advance(LEASE.total_seconds() + 1)
    recovered = store.recover_stalled(max_stalled_count=5, now=clock())
    assert [stalled.task_id for stalled in recovered] == [task_id]
    claim = store.claim(task_id, run_id=new_id(), worker_id="w2", lease_until=clock() + LEASE, now=clock())
    assert claim is not None
    return claim


def test_a_step_is_written_started_then_completed_with_its_output_and_usage(
    store: TaskStore, clock: Clock
) -> None:
    task_id, run_id = running_task(store, clock)
    started_at = clock()

    assert start(store, clock, task_id, run_id, 0, input={"turn": 1, "provider": "openai", "model": "m"})
    [step] = store.get_steps(task_id)
    assert (step.seq, step.kind, step.name, step.status) == (
        0,
        StepKind.LLM,
        "gpt-4o-mini",
        StepStatus.STARTED,
    )
    assert step.input == {"turn": 1, "provider": "openai", "model": "m"} and step.output is None
    assert (step.task_id, step.run_id, step.firing, step.started_at) == (task_id, run_id, 0, started_at)
    assert step.finished_at is None and step.cost_usd is None and step.error is None

    clock.advance(2)
    output = {"content": "Ünïcode ✓", "tool_calls": [{"id": "call_1", "arguments": {"x": [1, 2.5, None]}}]}
    assert finish(
        store,
        clock,
        task_id,
        run_id,
        0,
        output=output,
        input_tokens=12,
        output_tokens=5,
        cost_usd=Decimal("0.00012345"),
    )
    assert start(store, clock, task_id, run_id, 1, kind=StepKind.TOOL, name="calculate")

    first, second = store.get_steps(task_id)
    assert (first.status, first.output, first.finished_at) == (StepStatus.COMPLETED, output, clock())
    assert (first.input_tokens, first.output_tokens, first.cost_usd) == (12, 5, Decimal("0.00012345"))
    assert (second.seq, second.kind, second.name, second.status) == (1, StepKind.TOOL, "calculate", "started")
    assert first.id != second.id


def test_a_failed_step_keeps_its_error(store: TaskStore, clock: Clock) -> None:
    task_id, run_id = running_task(store, clock)
    start(store, clock, task_id, run_id, 0)

    assert finish(store, clock, task_id, run_id, 0, status=StepStatus.FAILED, output=None, error="boom")

    [step] = store.get_steps(task_id)
    assert (step.status, step.error, step.output) == (StepStatus.FAILED, "boom", None)


def test_a_step_cannot_end_started(store: TaskStore, clock: Clock) -> None:
    task_id, run_id = running_task(store, clock)
    start(store, clock, task_id, run_id, 0)

    with pytest.raises(ValueError, match="completed or failed"):
        finish(store, clock, task_id, run_id, 0, status=StepStatus.STARTED)


def test_step_writes_of_a_run_that_does_not_hold_the_task_are_refused(store: TaskStore, clock: Clock) -> None:
    task_id, run_id = running_task(store, clock)
    assert start(store, clock, task_id, run_id, 0)

    assert not start(store, clock, task_id, new_id(), 1)  # a run that never held it
    assert not start(store, clock, task_id, run_id, 1, firing=1)  # another firing
    assert not start(store, clock, new_id(), run_id, 0)  # no such task
    assert not finish(store, clock, task_id, new_id(), 0)
    assert not finish(store, clock, task_id, run_id, 0, firing=1)

    new_run = stall(store, clock, task_id).run_id  # recovered as stalled, claimed by another worker

    assert not finish(store, clock, task_id, run_id, 0)  # the stale worker
    assert not start(store, clock, task_id, run_id, 1)
    [step] = store.get_steps(task_id)
    assert (step.run_id, step.status) == (run_id, StepStatus.STARTED)
    store.complete(task_id, new_run, result={}, usage=Usage(), transcript=None, now=clock())
    assert not start(store, clock, task_id, new_run, 1)  # finished: nobody holds it
    assert [step.seq for step in store.get_steps(task_id)] == [0]


def test_writing_the_same_step_again_is_accepted_but_a_completed_step_is_never_rewritten(
    store: TaskStore, clock: Clock
) -> None:
    task_id, run_id = running_task(store, clock)
    assert start(store, clock, task_id, run_id, 0)
    assert start(store, clock, task_id, run_id, 0)  # a re-sent write
    assert finish(store, clock, task_id, run_id, 0, output={"content": "first"})
    assert finish(
        store, clock, task_id, run_id, 0, output={"content": "first"}
    )  # re-sent: same end, same now

    clock.advance(1)
    assert not finish(store, clock, task_id, run_id, 0, output={"content": "second"})
    assert not start(store, clock, task_id, run_id, 0)
    assert not finish(store, clock, task_id, run_id, 5)  # never started
    [step] = store.get_steps(task_id)
    assert (step.status, step.output) == (StepStatus.COMPLETED, {"content": "first"})


def test_a_run_restarts_its_own_failed_step(store: TaskStore, clock: Clock) -> None:
    task_id, run_id = running_task(store, clock)
    start(store, clock, task_id, run_id, 0, name="primary-model")
    finish(store, clock, task_id, run_id, 0, status=StepStatus.FAILED, output=None, error="503")

    assert start(store, clock, task_id, run_id, 0, name="fallback-model")  # the fallback takes the same step
    assert finish(store, clock, task_id, run_id, 0, input_tokens=3)

    [step] = store.get_steps(task_id)
    assert (step.name, step.status, step.error, step.input_tokens) == ("fallback-model", "completed", None, 3)


def test_a_later_run_takes_over_an_unfinished_step_only_from_the_run_it_found_it_from(
    store: TaskStore, clock: Clock
) -> None:
    task_id, first_run = running_task(store, clock)
    start(store, clock, task_id, first_run, 0)
    finish(store, clock, task_id, first_run, 0)
    start(store, clock, task_id, first_run, 1, kind=StepKind.TOOL, name="send_invoice")
    second_run = stall(store, clock, task_id).run_id

    assert not start(store, clock, task_id, second_run, 0, replaces=first_run)  # completed: never again
    assert not start(store, clock, task_id, second_run, 1, kind=StepKind.TOOL, name="send_invoice")
    assert not start(store, clock, task_id, second_run, 1, kind=StepKind.TOOL, replaces=new_id())
    assert start(
        store, clock, task_id, second_run, 1, kind=StepKind.TOOL, name="send_invoice", replaces=first_run
    )
    assert finish(store, clock, task_id, second_run, 1)

    first, second = store.get_steps(task_id)
    assert (first.run_id, first.status) == (first_run, StepStatus.COMPLETED)
    assert (second.run_id, second.status, second.finished_at) == (second_run, StepStatus.COMPLETED, clock())


def test_concurrent_resends_of_one_step_write_one_row(store: TaskStore, clock: Clock) -> None:
    task_id, run_id = running_task(store, clock)
    results: list[bool] = []
    barrier = threading.Barrier(4)

    def write() -> None:
        barrier.wait()
        results.append(start(store, clock, task_id, run_id, 0))

    threads = [threading.Thread(target=write) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert results == [True] * 4  # the same run: every write is the same step, applied idempotently
    assert len(store.get_steps(task_id)) == 1


def test_a_claim_reads_the_steps_of_the_firing_it_resumes(store: TaskStore, clock: Clock) -> None:
    task_id = queued_task(store, clock)
    first = store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert first is not None and first.steps == ()
    start(store, clock, task_id, first.run_id, 0)
    finish(store, clock, task_id, first.run_id, 0, output={"content": "hi"}, input_tokens=4)
    start(store, clock, task_id, first.run_id, 1, kind=StepKind.TOOL, name="calculate")

    again = stall(store, clock, task_id)

    assert again.steps == tuple(store.get_steps(task_id))
    assert [(step.seq, step.status, step.run_id) for step in again.steps] == [
        (0, StepStatus.COMPLETED, first.run_id),
        (1, StepStatus.STARTED, first.run_id),
    ]
    assert again.steps[0].output == {"content": "hi"} and again.steps[0].input_tokens == 4


def test_get_steps_reads_the_current_firing_in_seq_order(store: TaskStore, clock: Clock) -> None:
    task_id, run_id = running_task(store, clock)
    for seq in (2, 0, 1):
        assert start(store, clock, task_id, run_id, seq)

    assert [step.seq for step in store.get_steps(task_id)] == [0, 1, 2]
    assert store.get_steps(new_id()) == []


def fail_for_good(store: TaskStore, clock: Clock, task_id: str, run_id: str) -> None:
    assert store.fail_attempt(
        task_id,
        run_id,
        error="x",
        stacktrace=None,
        usage=Usage(),
        transcript=None,
        retry_at=None,
        now=clock(),
    )


def test_retry_starts_a_new_firing_without_the_old_steps_unless_resumed(
    store: TaskStore, clock: Clock
) -> None:
    task_id, run_id = running_task(store, clock)
    start(store, clock, task_id, run_id, 0)
    finish(store, clock, task_id, run_id, 0)
    fail_for_good(store, clock, task_id, run_id)

    resumed = store.requeue_failed(task_id, run_at=clock(), now=clock(), resume=True)

    assert resumed is not None and resumed.firing == 0
    assert [step.seq for step in store.get_steps(task_id)] == [0]
    claim = store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert claim is not None and claim.task.firing == 0
    assert start(store, clock, task_id, claim.run_id, 1)
    fail_for_good(store, clock, task_id, claim.run_id)

    fresh = store.requeue_failed(task_id, run_at=clock(), now=clock())

    assert fresh is not None and fresh.firing == 1 and store.get_task(task_id).firing == 1  # type: ignore[union-attr]
    assert store.get_steps(task_id) == []
    claim = store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert claim is not None
    assert not start(store, clock, task_id, claim.run_id, 0, firing=0)  # the old firing is over
    assert start(store, clock, task_id, claim.run_id, 0, firing=1)
    assert [(step.firing, step.seq) for step in store.get_steps(task_id)] == [(1, 0)]


def test_each_firing_of_a_schedule_starts_a_fresh_ledger(store: TaskStore, clock: Clock) -> None:
    task_id = scheduled_task(store, clock)
    [due] = store.due_schedules(now=clock())
    store.fire_schedules([Firing(task_id, due.next_run_at, clock() + timedelta(minutes=1))], now=clock())
    claim = store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert claim is not None and claim.task.firing == 1
    start(store, clock, task_id, claim.run_id, 0, firing=1)
    clock.advance(60)
    # a firing due while the run is still going only moves the schedule: same firing, same ledger
    store.fire_schedules([Firing(task_id, clock(), clock() + timedelta(minutes=1))], now=clock())
    assert store.get_task(task_id).firing == 1 and len(store.get_steps(task_id)) == 1  # type: ignore[union-attr]
    finish(store, clock, task_id, claim.run_id, 0, firing=1)
    store.complete(task_id, claim.run_id, result={}, usage=Usage(), transcript=None, now=clock())
    clock.advance(60)

    [fired] = store.fire_schedules([Firing(task_id, clock(), clock() + timedelta(minutes=1))], now=clock())

    assert fired.started and store.get_task(task_id).firing == 2  # type: ignore[union-attr]
    assert store.get_steps(task_id) == []


def test_a_stalled_runs_usage_is_what_its_completed_model_calls_recorded(
    store: TaskStore, clock: Clock
) -> None:
    task_id, run_id = running_task(store, clock)
    usage = {
        "input_tokens": 100,
        "output_tokens": 10,
        "cached_input_tokens": 40,
        "reasoning_tokens": 3,
        "cache_creation_input_tokens": 0,
    }
    for seq, cost in ((0, "0.001"), (2, "0.002")):
        start(store, clock, task_id, run_id, seq)
        spent: dict[str, Any] = {"input_tokens": 100, "output_tokens": 10, "cost_usd": Decimal(cost)}
        finish(store, clock, task_id, run_id, seq, output={"usage": usage}, **spent)
    start(store, clock, task_id, run_id, 1, kind=StepKind.TOOL, name="calculate")
    finish(store, clock, task_id, run_id, 1, output={"content": "4"})
    start(store, clock, task_id, run_id, 3)  # in flight when the worker died: nothing known

    stall(store, clock, task_id)

    task = store.get_task(task_id)
    [stalled, _] = store.get_runs(task_id)
    assert task is not None and stalled.status == RunStatus.STALLED
    for record in (task, stalled):
        assert (record.input_tokens, record.output_tokens) == (200, 20)
        assert (record.cached_input_tokens, record.reasoning_tokens) == (80, 6)
    assert stalled.cost_usd == Decimal("0.003") and task.cost_usd == Decimal("0.003")


def test_a_stalled_run_with_an_unpriced_call_records_no_cost(store: TaskStore, clock: Clock) -> None:
    task_id, run_id = running_task(store, clock)
    for seq, cost in ((0, Decimal("0.5")), (1, None)):
        start(store, clock, task_id, run_id, seq)
        finish(store, clock, task_id, run_id, seq, input_tokens=7, cost_usd=cost)

    stall(store, clock, task_id)

    stalled = store.get_runs(task_id)[0]
    task = store.get_task(task_id)
    assert stalled.input_tokens == 14 and stalled.cost_usd is None
    assert task is not None and task.input_tokens == 14 and task.cost_usd == 0


def test_a_stalled_run_without_steps_records_no_usage(store: TaskStore, clock: Clock) -> None:
    task_id, _ = running_task(store, clock)

    stall(store, clock, task_id)

    stalled = store.get_runs(task_id)[0]
    assert (stalled.input_tokens, stalled.cost_usd) == (0, None)
    assert store.get_task(task_id).cost_usd == 0  # type: ignore[union-attr]


def test_cleanup_deletes_the_steps_of_archived_jobs(store: TaskStore, clock: Clock) -> None:
    task_id, run_id = running_task(store, clock)
    start(store, clock, task_id, run_id, 0)
    finish(store, clock, task_id, run_id, 0)
    store.complete(task_id, run_id, result={}, usage=Usage(), transcript=None, now=clock())
    kept, kept_run = running_task(store, clock)
    start(store, clock, kept, kept_run, 0)
    clock.advance(7200)

    result = store.cleanup(RetentionPolicy(completed_age_s=3600), now=clock())

    assert (result.archived_completed, result.deleted_runs, result.deleted_steps) == (1, 1, 1)
    assert store.get_steps(task_id) == [] and len(store.get_steps(kept)) == 1


def test_step_payloads_are_stored_as_every_store_can(store: TaskStore, clock: Clock) -> None:
    task_id, run_id = running_task(store, clock)
    text = "nul\x00 and lone \ud800 surrogate " + "x" * 50_000

    assert start(store, clock, task_id, run_id, 0, name="to\x00ol", input={"text": text, "n": float("nan")})
    assert finish(store, clock, task_id, run_id, 0, output={"content": text}, error=None)

    [step] = store.get_steps(task_id)
    cleaned = "nul and lone \ufffd surrogate " + "x" * 50_000
    assert step.name == "tool" and step.input == {"text": cleaned, "n": None}
    assert step.output == {"content": cleaned}


def test_new_tasks_start_at_firing_zero_and_agents_may_stream(store: TaskStore, clock: Clock) -> None:
    task_id = queued_task(store, clock)
    agent = store.create_agent(NewAgent(organization_id=ORG, name="streamer", stream=True), now=clock())

    assert store.get_task(task_id).firing == 0  # type: ignore[union-attr]
    assert store.get_agent(agent.id).stream is True  # type: ignore[union-attr]
    claim = store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert claim is not None and claim.agent is not None and claim.agent.stream is False
    assert claim.task.status == TaskStatus.RUNNING and claim.task.firing == 0


def model_call(
    clock: Clock,
    seq: int = 0,
    *,
    status: StepStatus = StepStatus.COMPLETED,
    replaces: str | None = None,
    **end: Any,
) -> StepRecord:
    """A model call ended now, started a second ago."""
    values: dict[str, Any] = {"output": {"content": "hi"}, "input_tokens": 7, "output_tokens": 2}
    values.update(end)
    started = clock() - timedelta(seconds=1)
    return StepRecord(
        0,
        seq,
        StepKind.LLM,
        "gpt-4o-mini",
        {"turn": 1},
        started,
        status,
        finished_at=clock(),
        replaces=replaces,
        **values,
    )


def test_a_whole_step_is_recorded_in_one_write(store: TaskStore, clock: Clock) -> None:
    task_id, run_id = running_task(store, clock)
    record = model_call(clock, cost_usd=Decimal("0.001"))

    assert store.record_step(task_id, run_id, record)
    assert store.record_step(task_id, run_id, record)  # a re-sent write: the same end

    [step] = store.get_steps(task_id)
    assert (step.seq, step.kind, step.name, step.status) == (
        0,
        StepKind.LLM,
        "gpt-4o-mini",
        StepStatus.COMPLETED,
    )
    assert (step.input, step.output) == ({"turn": 1}, {"content": "hi"})
    assert (step.started_at, step.finished_at) == (clock() - timedelta(seconds=1), clock())
    assert (step.input_tokens, step.output_tokens, step.cost_usd) == (7, 2, Decimal("0.001"))
    clock.advance(1)
    assert not store.record_step(task_id, run_id, model_call(clock, output={"content": "again"}))
    assert store.get_steps(task_id)[0].output == {"content": "hi"}


def test_a_recorded_step_follows_the_start_steps_rules(store: TaskStore, clock: Clock) -> None:
    task_id, first_run = running_task(store, clock)
    assert store.record_step(
        task_id, first_run, model_call(clock, status=StepStatus.FAILED, output=None, error="503")
    )
    assert store.record_step(task_id, first_run, model_call(clock, 0))  # the fallback, same step
    assert store.record_step(task_id, first_run, model_call(clock, 1, status=StepStatus.FAILED, output=None))
    assert not store.record_step(task_id, new_id(), model_call(clock, 2))  # a run that does not hold it
    second_run = stall(store, clock, task_id).run_id

    assert not store.record_step(task_id, first_run, model_call(clock, 2))  # the stale worker
    assert not store.record_step(task_id, second_run, model_call(clock, 1))  # found nothing: not a takeover
    assert store.record_step(task_id, second_run, model_call(clock, 1, replaces=first_run))
    assert not store.record_step(task_id, second_run, model_call(clock, 0, replaces=first_run))  # completed

    steps = store.get_steps(task_id)
    assert [(step.seq, step.status, step.run_id) for step in steps] == [
        (0, StepStatus.COMPLETED, first_run),
        (1, StepStatus.COMPLETED, second_run),
    ]
    with pytest.raises(ValueError, match="completed or failed"):
        store.record_step(task_id, second_run, model_call(clock, 3, status=StepStatus.STARTED))


def test_the_last_step_is_recorded_with_the_runs_completion(store: TaskStore, clock: Clock) -> None:
    task_id, run_id = running_task(store, clock)
    last = model_call(clock, output={"content": "the answer"}, cost_usd=Decimal("0.25"))

    assert store.complete(
        task_id,
        run_id,
        result={"output": "the answer"},
        usage=Usage(7, 2),
        transcript=None,
        now=clock(),
        step=last,
    )

    [step] = store.get_steps(task_id)
    assert (step.status, step.output, step.finished_at) == (
        StepStatus.COMPLETED,
        {"content": "the answer"},
        clock(),
    )
    assert (step.input_tokens, step.output_tokens, step.cost_usd) == (7, 2, Decimal("0.25"))
    assert store.get_task(task_id).status == TaskStatus.COMPLETED  # type: ignore[union-attr]


def test_a_refused_completion_records_no_last_step(store: TaskStore, clock: Clock) -> None:
    task_id, run_id = running_task(store, clock)
    new_run = stall(store, clock, task_id).run_id

    assert not store.complete(
        task_id, run_id, result={}, usage=Usage(), transcript=None, now=clock(), step=model_call(clock)
    )

    assert store.get_steps(task_id) == []
    assert store.get_task(task_id).current_run_id == new_run  # type: ignore[union-attr]


def test_runs_completing_at_once_each_record_their_last_step(store: TaskStore, clock: Clock) -> None:
    runs = [running_task(store, clock) for _ in range(6)]
    barrier = threading.Barrier(len(runs))
    done: list[bool] = []

    def complete(task_id: str, run_id: str) -> None:
        barrier.wait()
        last = model_call(clock, output={"content": task_id})
        done.append(
            store.complete(
                task_id, run_id, result={}, usage=Usage(1), transcript=None, now=clock(), step=last
            )
        )

    threads = [threading.Thread(target=complete, args=run) for run in runs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert done == [True] * len(runs)
    for task_id, _ in runs:
        [step] = store.get_steps(task_id)
        assert (step.status, step.output) == (StepStatus.COMPLETED, {"content": task_id})
