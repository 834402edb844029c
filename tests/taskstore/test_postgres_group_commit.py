"""Postgres claims and completions written in batches keep every per-task rule of the single statements."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from taskstore import RunStatus, StepKind, StepRecord, StepStatus, TaskStatus, Usage, new_id
from taskstore.postgres import PostgresTaskStore
from taskstore.sql_store import complete_item, step_json
from tests.conftest import Clock
from tests.taskstore.test_conformance import LEASE, new_task, queued_task

pytestmark = pytest.mark.integration


@pytest.fixture(params=["postgres", "postgres_unprepared"])
def pg(request: pytest.FixtureRequest) -> PostgresTaskStore:
    return request.getfixturevalue(f"{request.param}_store")  # type: ignore[no-any-return]


#: Text that an array literal must quote and escape (the batch functions' arguments travel as literals).
ODD_TEXT = 'say "hi", {x} \\ NULL é'


def claim_params(task_id: str, clock: Clock, worker: str = "w1") -> dict[str, object]:
    return {
        "task_id": task_id,
        "run_id": new_id(),
        "worker_id": worker,
        "now": clock(),
        "lease_until": clock() + LEASE,
    }


def test_a_batch_claims_only_queued_tasks_and_each_task_once(pg: PostgresTaskStore, clock: Clock) -> None:
    first, second = queued_task(pg, clock), queued_task(pg, clock)
    pending = new_task(pg, clock)
    twice = [claim_params(second, clock, "w1"), claim_params(second, clock, "w2")]
    odd_worker = 'host "a", {b}\\c NULL'
    batch = [
        claim_params(first, clock, odd_worker),
        claim_params(pending, clock),
        *twice,
        claim_params(new_id(), clock),
    ]

    claims = pg._claim_many(batch)

    assert claims[0] is not None and claims[0].task.id == first and claims[0].run_id == batch[0]["run_id"]
    assert claims[0].task.status == TaskStatus.RUNNING and claims[0].task.attempts == 1
    assert claims[0].agent is not None and claims[0].task.worker_id == odd_worker
    assert claims[0].task.started_at == clock() and claims[0].task.lease_expires_at == clock() + LEASE
    assert claims[1] is None and claims[4] is None
    won = [claim for claim in claims[2:4] if claim is not None]
    assert len(won) == 1 and won[0].task.id == second
    runs = pg.get_runs(second)
    assert [(run.id, run.status) for run in runs] == [(won[0].run_id, RunStatus.RUNNING)]
    task = pg.get_task(pending)
    assert task is not None and task.status == TaskStatus.PENDING


def test_a_batch_completes_only_current_runs_and_adds_usage(pg: PostgresTaskStore, clock: Clock) -> None:
    ids = [queued_task(pg, clock) for _ in range(3)]
    claims = pg._claim_many([claim_params(task_id, clock) for task_id in ids])
    assert all(claim is not None for claim in claims)
    run_ids = [claim.run_id for claim in claims if claim is not None]
    clock.advance(2)
    usage = Usage(input_tokens=10, output_tokens=5, cost_usd=Decimal("0.25"))
    batch = [
        _complete_params(ids[0], run_ids[0], clock, usage, {"output": "a"}),
        _complete_params(ids[1], new_id(), clock, usage, {"output": "stale run"}),
        _complete_params(ids[2], run_ids[2], clock, Usage(), {"output": ODD_TEXT, "null": None}),
    ]

    assert pg._complete_many(batch) == [True, False, True]

    done = pg.get_task(ids[0])
    assert done is not None and done.status == TaskStatus.COMPLETED and done.result == {"output": "a"}
    assert done.completed_at == clock() and done.lease_expires_at is None
    assert (done.input_tokens, done.output_tokens, done.cost_usd) == (10, 5, Decimal("0.25"))
    [run] = pg.get_runs(ids[0])
    assert run.status == RunStatus.COMPLETED and run.cost_usd == Decimal("0.25")
    assert run.transcript == [{"role": "user", "content": "hi"}] and run.finished_at == clock()
    still = pg.get_task(ids[1])
    assert still is not None and still.status == TaskStatus.RUNNING
    free = pg.get_task(ids[2])
    assert free is not None and free.status == TaskStatus.COMPLETED and free.cost_usd == 0
    assert free.result == {"output": ODD_TEXT, "null": None}


@pytest.fixture
def solo_store(postgres_url: str, postgres_store: PostgresTaskStore) -> Iterator[PostgresTaskStore]:
    """A Postgres store with group commit off (``AGENTQ_DB_GROUP_COMMIT=false``), on the emptied tables."""
    store = PostgresTaskStore(postgres_url, max_size=8, group_commit=False)
    yield store
    store.close()


@pytest.mark.parametrize("variant", ["grouped", "solo"])
def test_concurrent_claims_and_completions_are_exact(
    variant: str, request: pytest.FixtureRequest, clock: Clock
) -> None:
    """16 threads, two messages per task: each task is claimed once, completed once, usage counted once."""
    fixture = "postgres_store" if variant == "grouped" else "solo_store"
    pg: PostgresTaskStore = request.getfixturevalue(fixture)
    ids = [queued_task(pg, clock) for _ in range(60)]
    pg.reserve_connections(16)
    work = [task_id for task_id in ids for _ in range(2)]
    lock = threading.Lock()
    claimed: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            while True:
                with lock:
                    if not work:
                        return
                    task_id = work.pop()
                claim = pg.claim(
                    task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock()
                )
                if claim is None:
                    continue
                with lock:
                    claimed.append(task_id)
                usage = Usage(input_tokens=3)
                assert pg.complete(
                    task_id,
                    claim.run_id,
                    result={"output": task_id},
                    usage=usage,
                    transcript=None,
                    now=clock(),
                )
        except BaseException as exc:  # surfaced by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()

    assert errors == []
    assert sorted(claimed) == sorted(ids)
    for task_id in ids:
        task = pg.get_task(task_id)
        assert task is not None and task.status == TaskStatus.COMPLETED
        assert task.input_tokens == 3 and task.result == {"output": task_id}
        assert [run.status for run in pg.get_runs(task_id)] == [RunStatus.COMPLETED]


def _complete_params(
    task_id: str, run_id: str, clock: Clock, usage: Usage, result: dict[str, object]
) -> dict[str, object]:
    return complete_item(task_id, run_id, result, usage, [{"role": "user", "content": "hi"}], clock())


def test_a_batch_of_step_writes_keeps_each_writes_order_and_rules(
    pg: PostgresTaskStore, clock: Clock
) -> None:
    held, other = queued_task(pg, clock), queued_task(pg, clock)
    claims = pg._claim_many([claim_params(held, clock), claim_params(other, clock)])
    assert claims[0] is not None and claims[1] is not None
    run, other_run = claims[0].run_id, claims[1].run_id
    recorded = StepRecord(0, 2, StepKind.LLM, "m", {}, clock(), StepStatus.COMPLETED, {"n": 1}, clock())
    step = {"p_task_id": held, "p_run_id": run, "p_firing": 0, "p_now": clock()}
    start = {
        "op": "start",
        "p_kind": "tool",
        "p_name": 'send "x", {y}',
        "p_input": {"a": [1, None]},
        "p_replaces": None,
    }
    batch: list[dict[str, Any]] = [
        {**step, **start, "p_seq": 0},
        {
            **step,
            "op": "finish",
            "p_seq": 0,
            "p_status": "completed",
            "p_output": {"content": "ok"},
            "p_input_tokens": 3,
            "p_output_tokens": 1,
            "p_cost_usd": Decimal("0.5"),
            "p_error": None,
        },
        {**step, **start, "p_seq": 0},  # completed a moment ago in this batch: refused
        {**step, **start, "p_seq": 1, "p_run_id": other_run},  # a run that does not hold the task
        {**step, **start, "p_seq": 1},
        {**step, "op": "finish", "p_seq": 1, "p_status": "failed", "p_output": None, "p_error": "boom"},
        {"op": "record", "p_task_id": held, "p_run_id": run, "p_step": step_json(recorded)},
        {"op": "record", "p_task_id": held, "p_run_id": other_run, "p_step": step_json(recorded)},
    ]

    assert pg._steps_many(batch) == [True, True, False, False, True, True, True, False]

    first, second, third = pg.get_steps(held)
    assert (third.seq, third.status, third.output, third.started_at) == (2, "completed", {"n": 1}, clock())
    assert (first.name, first.status, first.output, first.input) == (
        'send "x", {y}',
        "completed",
        {"content": "ok"},
        {"a": [1, None]},
    )
    assert (first.input_tokens, first.output_tokens, first.cost_usd) == (3, 1, Decimal("0.5"))
    assert (second.run_id, second.status, second.error, second.output) == (run, "failed", "boom", None)
    assert pg.get_steps(other) == []


def test_concurrent_step_writes_are_batched_and_each_applied(
    postgres_store: PostgresTaskStore, clock: Clock
) -> None:
    ids = [queued_task(postgres_store, clock) for _ in range(16)]
    claims = [
        postgres_store.claim(
            task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock()
        )
        for task_id in ids
    ]
    barrier = threading.Barrier(len(ids))
    answers: list[bool] = []

    def write(claim: Any) -> None:
        barrier.wait()
        for seq in range(5):
            answers.append(
                postgres_store.start_step(
                    claim.task.id,
                    claim.run_id,
                    firing=0,
                    seq=seq,
                    kind=StepKind.LLM,
                    name="m",
                    input={"seq": seq},
                    replaces=None,
                    now=clock(),
                )
            )

    threads = [threading.Thread(target=write, args=(claim,)) for claim in claims]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert answers == [True] * 80
    for task_id in ids:
        assert [step.input for step in postgres_store.get_steps(task_id)] == [
            {"seq": seq} for seq in range(5)
        ]
