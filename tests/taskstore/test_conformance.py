"""One suite, every TaskStore: memory, SQLite and Postgres obey the same rules."""

from __future__ import annotations

import threading
from datetime import timedelta
from decimal import Decimal

import pytest

from taskstore import (
    DuplicateTask,
    Firing,
    NewTask,
    RetentionPolicy,
    RunStatus,
    TaskStatus,
    TaskStore,
    Usage,
    new_id,
)
from tests.conftest import Clock, make_agent

ORG = "22222222-2222-4222-8222-222222222222"
LEASE = timedelta(seconds=30)


def new_task(store: TaskStore, clock: Clock, **fields: object) -> str:
    agent_id = make_agent(store, clock())
    values: dict[str, object] = {"agent_id": agent_id, "organization_id": ORG, "title": "Weekly report"}
    values.update(fields)
    return store.create_task(NewTask(**values), now=clock()).id  # type: ignore[arg-type]


def queued_task(store: TaskStore, clock: Clock, **fields: object) -> str:
    task_id = new_task(store, clock, **fields)
    assert store.mark_queued(task_id, priority=None, run_at=clock(), now=clock()) is not None
    return task_id


def test_created_tasks_are_pending_with_their_fields(store: TaskStore, clock: Clock) -> None:
    task_id = new_task(store, clock, description="Revenue", context={"week": 47, "tags": ["a"]}, priority=7)

    task = store.get_task(task_id)

    assert task is not None
    assert task.status == TaskStatus.PENDING
    assert (task.title, task.description, task.priority) == ("Weekly report", "Revenue", 7)
    assert task.context == {"week": 47, "tags": ["a"]}
    assert task.attempts == 0 and task.max_attempts == 3
    assert task.created_at == clock()


def test_agents_round_trip(store: TaskStore, clock: Clock) -> None:
    agent_id = make_agent(store, clock(), allowed_tools=("calculate", "get_current_time"), max_turns=4)

    agent = store.get_agent(agent_id)

    assert agent is not None
    assert agent.allowed_tools == ("calculate", "get_current_time")
    assert agent.kind == "general" and agent.provider == "scripted" and agent.is_active is True
    assert agent.max_turns == 4


def test_unknown_ids_read_as_none(store: TaskStore) -> None:
    assert store.get_task(new_id()) is None
    assert store.get_agent(new_id()) is None
    assert store.get_runs(new_id()) == []


def test_mark_queued_is_a_compare_and_set_from_pending(store: TaskStore, clock: Clock) -> None:
    task_id = new_task(store, clock)
    due = clock() + timedelta(seconds=5)

    first = store.mark_queued(task_id, priority=9, run_at=due, now=clock())
    second = store.mark_queued(task_id, priority=1, run_at=due, now=clock())

    assert first is not None and first.status == TaskStatus.QUEUED and first.priority == 9
    assert first.run_at == due and first.queued_at == clock()
    assert second is None
    task = store.get_task(task_id)
    assert task is not None and task.priority == 9


def test_mark_queued_without_priority_keeps_the_rows(store: TaskStore, clock: Clock) -> None:
    task_id = new_task(store, clock, priority=3)

    task = store.mark_queued(task_id, priority=None, run_at=clock(), now=clock())

    assert task is not None and task.priority == 3


def test_revert_queued_only_undoes_the_same_enqueue(store: TaskStore, clock: Clock) -> None:
    task_id = new_task(store, clock)
    queued = store.mark_queued(task_id, priority=None, run_at=clock(), now=clock())
    assert queued is not None and queued.queued_at is not None

    assert (
        store.revert_queued(task_id, queued_at=queued.queued_at - timedelta(seconds=1), now=clock()) is False
    )
    assert store.revert_queued(task_id, queued_at=queued.queued_at, now=clock()) is True
    task = store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.PENDING


# --- the producer's one-statement paths ------------------------------------------------------------

KINDS = frozenset({"general", "research"})


def test_create_runnable_task_inserts_for_an_active_agent_of_a_known_kind(
    store: TaskStore, clock: Clock
) -> None:
    agent_id = make_agent(store, clock(), organization_id=ORG, kind="research")
    new = NewTask(agent_id=agent_id, organization_id=ORG, title="Brief", context={"a": 1}, priority=7)

    task = store.create_runnable_task(new, kinds=KINDS, now=clock())

    assert task is not None and task.status == TaskStatus.PENDING
    assert (task.agent_id, task.title, task.context, task.priority) == (agent_id, "Brief", {"a": 1}, 7)
    assert task.created_at == clock() and store.get_task(task.id) == task


@pytest.mark.parametrize(
    ("agent_fields", "task_org", "kinds"),
    [
        ({"is_active": False}, ORG, KINDS),
        ({}, "33333333-3333-4333-8333-333333333333", KINDS),
        ({"kind": "unknown"}, ORG, KINDS),
        ({}, ORG, frozenset()),
    ],
    ids=["inactive", "other-organization", "kind-without-actor", "no-kinds"],
)
def test_create_runnable_task_inserts_nothing_for_an_agent_that_cannot_run_it(
    store: TaskStore, clock: Clock, agent_fields: dict[str, object], task_org: str, kinds: frozenset[str]
) -> None:
    agent_id = make_agent(store, clock(), organization_id=ORG, **agent_fields)
    new = NewTask(agent_id=agent_id, organization_id=task_org, title="Brief", id=new_id())

    assert store.create_runnable_task(new, kinds=kinds, now=clock()) is None
    assert store.get_task(new.id) is None  # type: ignore[arg-type]


def test_create_runnable_task_for_a_missing_agent_inserts_nothing(store: TaskStore, clock: Clock) -> None:
    new = NewTask(agent_id=new_id(), organization_id=ORG, title="Brief", id=new_id())

    assert store.create_runnable_task(new, kinds=KINDS, now=clock()) is None
    assert store.get_task(new.id) is None  # type: ignore[arg-type]


def test_queue_runnable_task_queues_and_names_the_agents_kind(store: TaskStore, clock: Clock) -> None:
    agent_id = make_agent(store, clock(), organization_id=ORG, kind="research")
    task_id = store.create_task(
        NewTask(agent_id=agent_id, organization_id=ORG, title="t", priority=3), now=clock()
    ).id
    due = clock() + timedelta(seconds=5)

    first = store.queue_runnable_task(task_id, kinds=KINDS, priority=None, run_at=due, now=clock())
    second = store.queue_runnable_task(task_id, kinds=KINDS, priority=9, run_at=due, now=clock())

    assert first is not None and first.agent_kind == "research"
    assert first.task.status == TaskStatus.QUEUED and first.task.priority == 3
    assert first.task.run_at == due and first.task.queued_at == clock()
    assert second is None
    assert store.get_task(task_id) == first.task


@pytest.mark.parametrize(
    ("agent_fields", "kinds"),
    [({"is_active": False}, KINDS), ({"kind": "unknown"}, KINDS), ({}, frozenset())],
    ids=["inactive", "kind-without-actor", "no-kinds"],
)
def test_queue_runnable_task_changes_nothing_for_an_agent_that_cannot_run_it(
    store: TaskStore, clock: Clock, agent_fields: dict[str, object], kinds: frozenset[str]
) -> None:
    agent_id = make_agent(store, clock(), organization_id=ORG, **agent_fields)
    task_id = store.create_task(NewTask(agent_id=agent_id, organization_id=ORG, title="t"), now=clock()).id

    assert store.queue_runnable_task(task_id, kinds=kinds, priority=None, run_at=clock(), now=clock()) is None
    task = store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.PENDING and task.queued_at is None


def test_queue_runnable_task_of_a_missing_task_is_none(store: TaskStore, clock: Clock) -> None:
    assert (
        store.queue_runnable_task(new_id(), kinds=KINDS, priority=None, run_at=clock(), now=clock()) is None
    )


# --- many tasks at once (bulk enqueue) ---------------------------------------------------------


def new_tasks(store: TaskStore, clock: Clock, count: int, **fields: object) -> list[str]:
    agent_id = make_agent(store, clock())
    batch = [
        NewTask(agent_id=agent_id, organization_id=ORG, title=f"Report {n}", **fields)  # type: ignore[arg-type]
        for n in range(count)
    ]
    return [task.id for task in store.create_tasks(batch, now=clock())]


def statuses(store: TaskStore, task_ids: list[str]) -> list[TaskStatus]:
    return [task.status for task in store.get_tasks(task_ids)]


def test_create_tasks_inserts_every_task_pending_in_the_given_order(store: TaskStore, clock: Clock) -> None:
    agent_id = make_agent(store, clock())
    batch = [
        NewTask(agent_id=agent_id, organization_id=ORG, title="First", context={"week": 47, "tags": ["a"]}),
        NewTask(agent_id=agent_id, organization_id=ORG, title="Second", description="Revenue", priority=9),
        NewTask(agent_id=agent_id, organization_id=ORG, title="Third", task_type="scheduled", max_attempts=5),
    ]

    created = store.create_tasks(batch, now=clock())

    assert [task.title for task in created] == ["First", "Second", "Third"]
    assert created == [store.get_task(task.id) for task in created]
    first, second, third = created
    assert first.context == {"week": 47, "tags": ["a"]} and first.priority == 5 and first.description is None
    assert (second.description, second.priority, second.context) == ("Revenue", 9, {})
    assert (third.task_type, third.max_attempts, third.attempts) == ("scheduled", 5, 0)
    assert {task.status for task in created} == {TaskStatus.PENDING}
    assert {task.created_at for task in created} == {clock()}
    assert store.create_tasks([], now=clock()) == []


def test_create_tasks_inserts_nothing_when_one_row_is_refused(store: TaskStore, clock: Clock) -> None:
    existing = new_task(store, clock)
    agent_id = make_agent(store, clock())
    fresh = [new_id(), new_id()]
    batch = [
        NewTask(agent_id=agent_id, organization_id=ORG, title="ok", id=fresh[0]),
        NewTask(agent_id=agent_id, organization_id=ORG, title="taken id", id=existing),
        NewTask(agent_id=agent_id, organization_id=ORG, title="ok too", id=fresh[1]),
    ]

    with pytest.raises(DuplicateTask):
        store.create_tasks(batch, now=clock())

    assert store.get_tasks(fresh) == []
    task = store.get_task(existing)
    assert task is not None and task.title == "Weekly report"


def test_get_tasks_reads_the_existing_ones_in_the_given_order(store: TaskStore, clock: Clock) -> None:
    first, second = new_tasks(store, clock, 2)

    tasks = store.get_tasks([second, new_id(), first])

    assert [task.id for task in tasks] == [second, first]
    assert store.get_tasks([]) == []


def test_mark_queued_many_queues_every_task_at_once(store: TaskStore, clock: Clock) -> None:
    kept = new_tasks(store, clock, 3, priority=2)
    overridden = new_tasks(store, clock, 2)
    due = clock() + timedelta(seconds=5)

    queued = store.mark_queued_many(kept, priority=None, run_at=due, now=clock())
    again = store.mark_queued_many(overridden, priority=8, run_at=clock(), now=clock())

    assert queued is not None and [task.id for task in queued] == kept
    assert {(task.status, task.priority, task.run_at, task.queued_at) for task in queued} == {
        (TaskStatus.QUEUED, 2, due, clock())
    }
    assert queued == store.get_tasks(kept)
    assert again is not None and {task.priority for task in store.get_tasks(overridden)} == {8}


def test_mark_queued_many_changes_nothing_when_one_task_is_not_pending(
    store: TaskStore, clock: Clock
) -> None:
    pending = new_tasks(store, clock, 3)
    already = queued_task(store, clock)

    assert store.mark_queued_many([*pending, already], priority=9, run_at=clock(), now=clock()) is None
    assert store.mark_queued_many([*pending, new_id()], priority=9, run_at=clock(), now=clock()) is None

    assert statuses(store, pending) == [TaskStatus.PENDING] * 3
    assert {task.priority for task in store.get_tasks(pending)} == {5}


def test_of_two_overlapping_batches_racing_exactly_one_is_queued(store: TaskStore, clock: Clock) -> None:
    ids = new_tasks(store, clock, 9)
    batches = [ids[:5], ids[4:]]  # both hold ids[4]
    results: dict[int, object] = {}
    barrier = threading.Barrier(2)

    def mark(index: int) -> None:
        barrier.wait(timeout=10)
        results[index] = store.mark_queued_many(batches[index], priority=None, run_at=clock(), now=clock())

    threads = [threading.Thread(target=mark, args=(index,)) for index in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    winners = [index for index, result in results.items() if result is not None]
    assert len(winners) == 1
    loser = 1 - winners[0]
    assert statuses(store, batches[winners[0]]) == [TaskStatus.QUEUED] * 5
    assert statuses(store, [i for i in batches[loser] if i != ids[4]]) == [TaskStatus.PENDING] * 4


def test_revert_queued_many_only_undoes_the_same_enqueue(store: TaskStore, clock: Clock) -> None:
    mine = new_tasks(store, clock, 3)
    assert store.mark_queued_many(mine, priority=None, run_at=clock(), now=clock()) is not None
    clock.advance(1)
    other = queued_task(store, clock)  # queued by another enqueue, at another time

    reverted = store.revert_queued_many([*mine, other], queued_at=clock() - timedelta(seconds=1), now=clock())

    assert reverted == 3
    assert statuses(store, mine) == [TaskStatus.PENDING] * 3
    assert {task.queued_at for task in store.get_tasks(mine)} == {None}
    assert statuses(store, [other]) == [TaskStatus.QUEUED]


def test_claim_moves_queued_to_running_and_opens_a_run(store: TaskStore, clock: Clock) -> None:
    task_id = queued_task(store, clock)
    run_id = new_id()

    claim = store.claim(task_id, run_id=run_id, worker_id="w1", lease_until=clock() + LEASE, now=clock())

    assert claim is not None
    assert claim.task.status == TaskStatus.RUNNING and claim.task.attempts == 1
    assert claim.task.current_run_id == run_id and claim.run_id == run_id
    assert claim.agent is not None and claim.agent.id == claim.task.agent_id
    [run] = store.get_runs(task_id)
    assert (run.id, run.attempt, run.status, run.worker_id) == (run_id, 1, RunStatus.RUNNING, "w1")


def test_only_one_of_many_concurrent_claims_wins(store: TaskStore, clock: Clock) -> None:
    task_id = queued_task(store, clock)
    results: list[object] = []
    barrier = threading.Barrier(8)

    def contend() -> None:
        barrier.wait(timeout=10)
        results.append(
            store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
        )

    threads = [threading.Thread(target=contend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert sum(result is not None for result in results) == 1
    assert len(store.get_runs(task_id)) == 1


@pytest.mark.parametrize("status_setup", ["pending", "running", "completed", "cancelled"])
def test_claim_refuses_tasks_that_are_not_queued(store: TaskStore, clock: Clock, status_setup: str) -> None:
    task_id = new_task(store, clock)
    if status_setup != "pending":
        store.mark_queued(task_id, priority=None, run_at=clock(), now=clock())
    if status_setup in ("running", "completed"):
        claim = store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
        assert claim is not None
        if status_setup == "completed":
            store.complete(
                task_id, claim.run_id, result={"output": "x"}, usage=Usage(), transcript=None, now=clock()
            )
    if status_setup == "cancelled":
        store.cancel(task_id, now=clock())

    assert (
        store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock()) is None
    )


def test_complete_records_result_usage_and_closes_the_run(store: TaskStore, clock: Clock) -> None:
    task_id = queued_task(store, clock)
    claim = store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert claim is not None
    later = clock.advance(2)

    done = store.complete(
        task_id,
        claim.run_id,
        result={"output": "42"},
        usage=Usage(10, 5),
        transcript=[{"type": "model", "content": "42"}],
        now=later,
    )

    assert done is True
    task = store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.COMPLETED
    assert task.result == {"output": "42"} and task.completed_at == later
    assert (task.input_tokens, task.output_tokens) == (10, 5)
    [run] = store.get_runs(task_id)
    assert run.status == RunStatus.COMPLETED and run.finished_at == later
    assert run.transcript == [{"type": "model", "content": "42"}]
    assert (run.input_tokens, run.output_tokens) == (10, 5)


#: What Postgres refuses: NUL in text/jsonb, lone surrogates, and NaN/Infinity in jsonb.
REFUSED = "a\x00b\ud800c"
STORED = "ab\ufffdc"


def test_values_postgres_refuses_are_stripped_the_same_way_by_every_store(
    store: TaskStore, clock: Clock
) -> None:
    done_id = queued_task(store, clock)
    done = store.claim(done_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    failed_id = queued_task(store, clock)
    failed = store.claim(failed_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert done is not None and failed is not None
    transcript = [{"type": "model", REFUSED: [REFUSED, float("nan"), float("inf"), 1.5]}]

    assert store.complete(
        done_id,
        done.run_id,
        result={"output": REFUSED, "score": float("-inf"), "nested": {"k": [REFUSED]}},
        usage=Usage(),
        transcript=transcript,
        now=clock(),
    )
    assert store.fail_attempt(
        failed_id,
        failed.run_id,
        error=f"boom {REFUSED}",
        stacktrace=f"Traceback {REFUSED}",
        usage=Usage(),
        transcript=transcript,
        retry_at=None,
        now=clock(),
    )

    cleaned = [{"type": "model", STORED: [STORED, None, None, 1.5]}]
    task = store.get_task(done_id)
    assert task is not None and task.status == TaskStatus.COMPLETED
    assert task.result == {"output": STORED, "score": None, "nested": {"k": [STORED]}}
    [run] = store.get_runs(done_id)
    assert run.transcript == cleaned
    failed_task = store.get_task(failed_id)
    assert failed_task is not None and failed_task.status == TaskStatus.FAILED
    assert failed_task.error == f"boom {STORED}"
    [failed_run] = store.get_runs(failed_id)
    assert (failed_run.error, failed_run.stacktrace) == (f"boom {STORED}", f"Traceback {STORED}")
    assert failed_run.transcript == cleaned


def test_a_postponement_reason_postgres_refuses_is_stripped(store: TaskStore, clock: Clock) -> None:
    task_id = queued_task(store, clock)
    claim = store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert claim is not None

    assert store.postpone(
        task_id,
        claim.run_id,
        reason=f"wait {REFUSED}",
        run_at=clock(),
        usage=Usage(),
        transcript=[{"content": REFUSED}],
        now=clock(),
    )

    [run] = store.get_runs(task_id)
    assert run.error == f"wait {STORED}" and run.transcript == [{"content": STORED}]


def test_finishing_is_refused_for_a_run_that_no_longer_holds_the_task(store: TaskStore, clock: Clock) -> None:
    task_id = queued_task(store, clock)
    claim = store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert claim is not None

    assert store.complete(task_id, new_id(), result={}, usage=Usage(), transcript=None, now=clock()) is False
    assert (
        store.complete(task_id, claim.run_id, result={}, usage=Usage(), transcript=None, now=clock()) is True
    )
    assert (
        store.complete(task_id, claim.run_id, result={}, usage=Usage(), transcript=None, now=clock()) is False
    )
    assert (
        store.fail_attempt(
            task_id,
            claim.run_id,
            error="late",
            stacktrace=None,
            usage=Usage(),
            transcript=None,
            retry_at=None,
            now=clock(),
        )
        is False
    )
    task = store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.COMPLETED


def test_a_failed_attempt_with_retry_goes_back_to_queued(store: TaskStore, clock: Clock) -> None:
    task_id = queued_task(store, clock)
    claim = store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert claim is not None
    retry_at = clock() + timedelta(seconds=2)

    assert store.fail_attempt(
        task_id,
        claim.run_id,
        error="boom",
        stacktrace="Traceback ...",
        usage=Usage(3, 1),
        transcript=None,
        retry_at=retry_at,
        now=clock(),
    )

    task = store.get_task(task_id)
    assert task is not None
    assert (task.status, task.error, task.run_at, task.attempts) == (TaskStatus.QUEUED, "boom", retry_at, 1)
    [run] = store.get_runs(task_id)
    assert (run.status, run.error, run.stacktrace) == (RunStatus.FAILED, "boom", "Traceback ...")
    second = store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert second is not None and second.task.attempts == 2
    assert [run.attempt for run in store.get_runs(task_id)] == [1, 2]


def test_a_final_failure_ends_failed_and_can_be_requeued_with_fresh_attempts(
    store: TaskStore, clock: Clock
) -> None:
    task_id = queued_task(store, clock)
    claim = store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert claim is not None

    assert store.fail_attempt(
        task_id,
        claim.run_id,
        error="fatal",
        stacktrace=None,
        usage=Usage(),
        transcript=None,
        retry_at=None,
        now=clock(),
    )
    failed = store.get_task(task_id)
    assert failed is not None and failed.status == TaskStatus.FAILED and failed.failed_at == clock()

    requeued = store.requeue_failed(task_id, run_at=clock(), now=clock())
    assert requeued is not None
    assert (requeued.status, requeued.attempts, requeued.error) == (TaskStatus.QUEUED, 0, None)
    assert store.requeue_failed(task_id, run_at=clock(), now=clock()) is None


def test_cancel_applies_to_pending_and_queued_only(store: TaskStore, clock: Clock) -> None:
    pending = new_task(store, clock)
    queued = queued_task(store, clock)
    running = queued_task(store, clock)
    assert (
        store.claim(running, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
        is not None
    )

    assert store.cancel(pending, now=clock()) is not None
    assert store.cancel(queued, now=clock()) is not None
    assert store.cancel(running, now=clock()) is None
    assert (
        store.claim(queued, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock()) is None
    )
    statuses = [store.get_task(task_id).status for task_id in (pending, queued, running)]  # type: ignore[union-attr]
    assert statuses == [TaskStatus.CANCELLED, TaskStatus.CANCELLED, TaskStatus.RUNNING]


def test_queue_counts_split_waiting_delayed_active_and_finished(store: TaskStore, clock: Clock) -> None:
    new_task(store, clock)  # pending: not counted
    queued_task(store, clock)
    delayed = new_task(store, clock)
    store.mark_queued(delayed, priority=None, run_at=clock() + timedelta(seconds=60), now=clock())
    running = queued_task(store, clock)
    store.claim(running, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    done = queued_task(store, clock)
    claim = store.claim(done, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert claim is not None
    store.complete(done, claim.run_id, result={}, usage=Usage(), transcript=None, now=clock())
    bad = queued_task(store, clock)
    claim = store.claim(bad, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert claim is not None
    store.fail_attempt(
        bad,
        claim.run_id,
        error="x",
        stacktrace=None,
        usage=Usage(),
        transcript=None,
        retry_at=None,
        now=clock(),
    )

    counts = store.queue_counts(now=clock())
    assert (counts.waiting, counts.delayed, counts.active, counts.completed, counts.failed) == (1, 1, 1, 1, 1)

    later = store.queue_counts(now=clock() + timedelta(seconds=61))
    assert (later.waiting, later.delayed) == (2, 0)


def _finish(store: TaskStore, clock: Clock, *, fail: bool = False) -> str:
    task_id = queued_task(store, clock)
    claim = store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert claim is not None
    if fail:
        store.fail_attempt(
            task_id,
            claim.run_id,
            error="x",
            stacktrace=None,
            usage=Usage(),
            transcript=None,
            retry_at=None,
            now=clock(),
        )
    else:
        store.complete(task_id, claim.run_id, result={}, usage=Usage(), transcript=None, now=clock())
    return task_id


def test_cleanup_archives_by_age_and_count_but_never_deletes_tasks(store: TaskStore, clock: Clock) -> None:
    old = _finish(store, clock)
    old_failure = _finish(store, clock, fail=True)
    clock.advance(3600)
    recent = []
    for _ in range(3):
        recent.append(_finish(store, clock))
        clock.advance(1)
    clock.advance(600)
    policy = RetentionPolicy(completed_age_s=1800, completed_count=2, failed_age_s=1800, failed_count=10)

    result = store.cleanup(policy, now=clock())

    assert (result.archived_completed, result.archived_failed) == (2, 1)
    assert result.deleted_runs == 3
    assert store.get_task(old) is not None and store.get_task(old).archived_at == clock()  # type: ignore[union-attr]
    assert store.get_task(old_failure).archived_at == clock()  # type: ignore[union-attr]
    kept = [task_id for task_id in recent if store.get_task(task_id).archived_at is None]  # type: ignore[union-attr]
    assert kept == recent[1:]
    counts = store.queue_counts(now=clock())
    assert (counts.completed, counts.failed) == (2, 0)
    assert store.get_runs(old) == [] and len(store.get_runs(recent[2])) == 1
    assert store.cleanup(policy, now=clock()) == type(result)(0, 0, 0)


def test_migrate_is_idempotent(store: TaskStore) -> None:
    store.migrate()
    assert store.migrate() == []


# --- leases, stalled tasks, postponements ---------------------------------------------------------


def running_task(store: TaskStore, clock: Clock, worker: str = "w") -> tuple[str, str]:
    task_id = queued_task(store, clock)
    claim = store.claim(task_id, run_id=new_id(), worker_id=worker, lease_until=clock() + LEASE, now=clock())
    assert claim is not None
    return task_id, claim.run_id


def test_a_claim_leases_the_task_to_its_worker_and_renewal_extends_only_the_held_attempts(
    store: TaskStore, clock: Clock
) -> None:
    mine, my_run = running_task(store, clock, "worker-a")
    theirs, _ = running_task(store, clock, "worker-b")
    later = clock() + timedelta(minutes=5)

    renewed = store.renew_leases([(mine, my_run)], lease_until=later, now=clock())

    assert renewed == [mine]
    assert store.get_task(mine).lease_expires_at == later  # type: ignore[union-attr]
    assert store.get_task(theirs).lease_expires_at == clock() + LEASE  # type: ignore[union-attr]
    assert store.get_task(mine).worker_id == "worker-a"  # type: ignore[union-attr]
    assert store.renew_leases([], lease_until=later, now=clock()) == []


def test_a_running_row_of_the_same_worker_that_is_not_held_is_not_renewed_and_expires(
    store: TaskStore, clock: Clock
) -> None:
    held, held_run = running_task(store, clock, "worker-a")
    orphan, _ = running_task(store, clock, "worker-a")  # its attempt ended without its final write
    clock.advance(20)

    renewed = store.renew_leases([(held, held_run)], lease_until=clock() + LEASE, now=clock())
    clock.advance(20)

    assert renewed == [held]
    recovered = store.recover_stalled(max_stalled_count=1, now=clock())
    assert [(item.task_id, item.requeued) for item in recovered] == [(orphan, True)]
    assert store.get_task(held).status == TaskStatus.RUNNING  # type: ignore[union-attr]


def test_renewal_skips_a_task_now_held_by_another_run(store: TaskStore, clock: Clock) -> None:
    task_id, old_run = running_task(store, clock, "worker-a")
    clock.advance(31)
    store.recover_stalled(max_stalled_count=5, now=clock())
    new_claim = store.claim(
        task_id, run_id=new_id(), worker_id="worker-a", lease_until=clock() + LEASE, now=clock()
    )
    assert new_claim is not None

    renewed = store.renew_leases([(task_id, old_run)], lease_until=clock() + 10 * LEASE, now=clock())

    assert renewed == []
    assert store.get_task(task_id).lease_expires_at == clock() + LEASE  # type: ignore[union-attr]


def test_expired_leases_are_recovered_once_and_requeued_without_consuming_the_attempt(
    store: TaskStore, clock: Clock
) -> None:
    task_id, run_id = running_task(store, clock, "dead-worker")
    renewed, live_run = running_task(store, clock, "live-worker")
    clock.advance(31)
    store.renew_leases([(renewed, live_run)], lease_until=clock() + LEASE, now=clock())

    first = store.recover_stalled(max_stalled_count=1, now=clock())
    second = store.recover_stalled(max_stalled_count=1, now=clock())

    assert [(item.task_id, item.kind, item.requeued, item.stalled_count) for item in first] == [
        (task_id, "general", True, 1)
    ]
    assert second == []
    task = store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.QUEUED
    assert (task.stalled_count, task.attempts, task.worker_id, task.lease_expires_at) == (1, 0, None, None)
    [run] = store.get_runs(task_id)
    assert run.id == run_id and run.status == RunStatus.STALLED
    assert store.get_task(renewed).status == TaskStatus.RUNNING  # type: ignore[union-attr]


def test_a_task_that_stalls_past_the_limit_fails_with_the_seed_reason(store: TaskStore, clock: Clock) -> None:
    task_id, _ = running_task(store, clock)
    clock.advance(31)
    [first] = store.recover_stalled(max_stalled_count=1, now=clock())
    assert first.requeued
    store.claim(task_id, run_id=new_id(), worker_id="w2", lease_until=clock() + LEASE, now=clock())
    clock.advance(31)

    [second] = store.recover_stalled(max_stalled_count=1, now=clock())

    assert not second.requeued and second.stalled_count == 2
    task = store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.FAILED
    assert task.error == "job stalled more than allowable limit"
    assert [run.status for run in store.get_runs(task_id)] == [RunStatus.STALLED, RunStatus.STALLED]


def test_leases_still_valid_are_not_recovered(store: TaskStore, clock: Clock) -> None:
    running_task(store, clock)
    assert store.recover_stalled(max_stalled_count=1, now=clock() + timedelta(seconds=29)) == []


def test_a_finished_run_gives_up_its_lease(store: TaskStore, clock: Clock) -> None:
    task_id, run_id = running_task(store, clock)
    store.complete(task_id, run_id, result={}, usage=Usage(), transcript=None, now=clock())
    task = store.get_task(task_id)
    assert task is not None and (task.worker_id, task.lease_expires_at) == (None, None)
    assert store.recover_stalled(max_stalled_count=1, now=clock() + timedelta(hours=1)) == []


def test_postponing_requeues_without_consuming_the_attempt(store: TaskStore, clock: Clock) -> None:
    task_id, run_id = running_task(store, clock)
    later = clock() + timedelta(seconds=20)

    assert store.postpone(
        task_id, run_id, reason="rate limited", run_at=later, usage=Usage(7, 0), transcript=None, now=clock()
    )

    task = store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.QUEUED
    assert (task.attempts, task.postponed_count, task.run_at, task.input_tokens) == (0, 1, later, 7)
    [run] = store.get_runs(task_id)
    assert run.status == RunStatus.POSTPONED and run.error == "rate limited"
    assert (
        store.postpone(
            task_id, run_id, reason="again", run_at=later, usage=Usage(), transcript=None, now=clock()
        )
        is False
    )
    assert store.queue_counts(now=clock()).delayed == 1


def test_a_retry_marks_when_it_was_requeued(store: TaskStore, clock: Clock) -> None:
    task_id, run_id = running_task(store, clock)
    clock.advance(5)
    store.fail_attempt(
        task_id,
        run_id,
        error="x",
        stacktrace=None,
        usage=Usage(),
        transcript=None,
        retry_at=clock() + timedelta(seconds=2),
        now=clock(),
    )
    assert store.get_task(task_id).queued_at == clock()  # type: ignore[union-attr]


# --- reconciliation and dead letters -------------------------------------------------------------


def test_find_pending_returns_old_adhoc_pending_tasks_with_their_kind(store: TaskStore, clock: Clock) -> None:
    old = new_task(store, clock)
    new_task(store, clock, task_type="scheduled")
    clock.advance(60)
    new_task(store, clock)

    found = store.find_pending(created_before=clock() - timedelta(seconds=30))

    assert [(item.task_id, item.kind) for item in found] == [(old, "general")]


def test_find_queued_and_touch_queued_let_one_reconciler_win(store: TaskStore, clock: Clock) -> None:
    old = queued_task(store, clock)
    clock.advance(60)
    queued_task(store, clock)

    [found] = store.find_queued(queued_before=clock() - timedelta(seconds=30))

    assert found.task_id == old and found.kind == "general"
    assert store.touch_queued(old, queued_at=found.since, now=clock()) is True
    assert store.touch_queued(old, queued_at=found.since, now=clock()) is False
    assert store.find_queued(queued_before=clock() - timedelta(seconds=30)) == []


def test_list_failed_lists_dead_letters_newest_first(store: TaskStore, clock: Clock) -> None:
    first = _finish(store, clock, fail=True)
    clock.advance(1)
    second = _finish(store, clock, fail=True)
    _finish(store, clock)

    assert [task.id for task in store.list_failed()] == [second, first]
    assert [task.id for task in store.list_failed(limit=1, offset=1)] == [first]


# --- usage, cost, budgets, cancellation -----------------------------------------------------------


def test_usage_and_cost_accumulate_per_task_and_are_kept_per_run(store: TaskStore, clock: Clock) -> None:
    task_id, run_id = running_task(store, clock)
    store.fail_attempt(
        task_id,
        run_id,
        error="x",
        stacktrace=None,
        transcript=None,
        retry_at=clock(),
        now=clock(),
        usage=Usage(100, 20, cached_input_tokens=40, reasoning_tokens=5, cost_usd=Decimal("0.00125")),
    )
    second = store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert second is not None
    store.complete(
        task_id, second.run_id, result={}, transcript=None, now=clock(), usage=Usage(10, 2, cost_usd=None)
    )  # an unknown model's price records no cost

    task = store.get_task(task_id)
    assert task is not None
    assert (task.input_tokens, task.output_tokens, task.cached_input_tokens, task.reasoning_tokens) == (
        110,
        22,
        40,
        5,
    )
    assert task.cost_usd == Decimal("0.00125")
    first_run, second_run = store.get_runs(task_id)
    assert first_run.cost_usd == Decimal("0.00125") and second_run.cost_usd is None
    assert (first_run.cached_input_tokens, first_run.reasoning_tokens) == (40, 5)


def test_organization_spend_sums_the_organizations_runs_since_a_moment(
    store: TaskStore, clock: Clock
) -> None:
    month_start = clock()
    for cost in ("0.50", "1.25"):
        task_id, run_id = running_task(store, clock)
        store.complete(
            task_id,
            run_id,
            result={},
            transcript=None,
            now=clock(),
            usage=Usage(1, 1, cost_usd=Decimal(cost)),
        )

    assert store.organization_spend(ORG, since=month_start) == Decimal("1.75")
    assert store.organization_spend(ORG, since=clock() + timedelta(seconds=1)) == 0
    assert store.organization_spend("99999999-9999-4999-8999-999999999999", since=month_start) == 0


def test_a_running_task_can_be_asked_to_stop_and_ends_cancelled(store: TaskStore, clock: Clock) -> None:
    task_id, run_id = running_task(store, clock)
    assert store.cancel_requested(task_id) is False

    assert store.request_cancel(task_id, now=clock()) is not None
    assert store.cancel_requested(task_id) is True
    assert store.finish_cancelled(task_id, run_id, usage=Usage(3, 1), transcript=None, now=clock()) is True

    task = store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.CANCELLED and task.input_tokens == 3
    [run] = store.get_runs(task_id)
    assert run.status == RunStatus.CANCELLED
    assert store.request_cancel(task_id, now=clock()) is None  # no longer running
    assert store.finish_cancelled(task_id, run_id, usage=Usage(), transcript=None, now=clock()) is False


def test_agents_keep_their_limits_base_url_and_fallback(store: TaskStore, clock: Clock) -> None:
    agent_id = make_agent(
        store,
        clock(),
        provider="openai",
        model="gpt-4o-mini",
        base_url="http://127.0.0.1:9/v1",
        tool_timeout_s=5.0,
        run_time_limit_s=120.0,
        fallback_provider="anthropic",
        fallback_model="claude-haiku-4-5",
    )
    agent = store.get_agent(agent_id)
    assert agent is not None
    assert (agent.base_url, agent.tool_timeout_s, agent.run_time_limit_s) == (
        "http://127.0.0.1:9/v1",
        5.0,
        120.0,
    )
    assert (agent.fallback_provider, agent.fallback_model) == ("anthropic", "claude-haiku-4-5")


# --- schedules ----------------------------------------------------------------------------------------


def scheduled_task(store: TaskStore, clock: Clock, next_run_at: timedelta = timedelta(0)) -> str:
    task_id = new_task(store, clock, task_type="scheduled")
    assert store.set_schedule(
        task_id, cron="* * * * *", timezone="Europe/Paris", next_run_at=clock() + next_run_at, now=clock()
    )
    return task_id


def test_a_schedule_is_stored_only_on_a_scheduled_task_and_can_be_cleared(
    store: TaskStore, clock: Clock
) -> None:
    adhoc = new_task(store, clock)
    assert (
        store.set_schedule(adhoc, cron="0 9 * * 1", timezone="UTC", next_run_at=clock(), now=clock()) is None
    )
    task_id = scheduled_task(store, clock)
    task = store.get_task(task_id)
    assert task is not None and (task.schedule_cron, task.schedule_timezone) == ("* * * * *", "Europe/Paris")

    assert store.clear_schedule(task_id, now=clock()) is not None
    assert store.clear_schedule(task_id, now=clock()) is None
    assert store.get_task(task_id).next_run_at is None  # type: ignore[union-attr]
    assert store.list_schedules() == []


def test_due_schedules_are_fired_once_even_when_two_schedulers_race(store: TaskStore, clock: Clock) -> None:
    due = [scheduled_task(store, clock) for _ in range(3)]
    scheduled_task(store, clock, timedelta(minutes=5))  # not due yet
    found = store.due_schedules(now=clock())
    assert sorted(item.task_id for item in found) == sorted(due)
    firings = [Firing(item.task_id, item.next_run_at, clock() + timedelta(minutes=1)) for item in found]

    first = store.fire_schedules(firings, now=clock())
    second = store.fire_schedules(firings, now=clock())  # the other scheduler, same tick

    assert sorted(item.task_id for item in first) == sorted(due)
    assert all(item.started and item.kind == "general" for item in first)
    assert second == []
    task = store.get_task(due[0])
    assert task is not None and task.status == TaskStatus.QUEUED and task.last_run_at == clock()
    assert task.next_run_at == clock() + timedelta(minutes=1) and task.attempts == 0
    assert store.due_schedules(now=clock()) == []


def test_a_firing_while_the_previous_run_is_active_only_moves_the_schedule(
    store: TaskStore, clock: Clock
) -> None:
    task_id = scheduled_task(store, clock)
    [due] = store.due_schedules(now=clock())
    store.fire_schedules([Firing(task_id, due.next_run_at, clock() + timedelta(minutes=1))], now=clock())
    claim = store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert claim is not None
    clock.advance(60)

    [again] = store.fire_schedules([Firing(task_id, clock(), clock() + timedelta(minutes=1))], now=clock())

    assert again.started is False
    task = store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.RUNNING and task.current_run_id == claim.run_id
    assert task.next_run_at == clock() + timedelta(minutes=1)


def test_a_finished_scheduled_task_fires_again_with_fresh_attempts(store: TaskStore, clock: Clock) -> None:
    task_id = scheduled_task(store, clock)
    [due] = store.due_schedules(now=clock())
    store.fire_schedules([Firing(task_id, due.next_run_at, clock() + timedelta(minutes=1))], now=clock())
    claim = store.claim(task_id, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock())
    assert claim is not None
    store.fail_attempt(
        task_id,
        claim.run_id,
        error="x",
        stacktrace=None,
        usage=Usage(),
        transcript=None,
        retry_at=None,
        now=clock(),
    )
    clock.advance(60)

    [fired] = store.fire_schedules([Firing(task_id, clock(), clock() + timedelta(minutes=1))], now=clock())

    task = store.get_task(task_id)
    assert fired.started and task is not None
    assert (task.status, task.attempts, task.error) == (TaskStatus.QUEUED, 0, None)


def test_list_schedules_orders_by_next_run(store: TaskStore, clock: Clock) -> None:
    later = scheduled_task(store, clock, timedelta(hours=2))
    sooner = scheduled_task(store, clock, timedelta(hours=1))
    assert [task.id for task in store.list_schedules()] == [sooner, later]


def test_a_claim_under_an_organization_cap_waits_for_a_running_task_to_end(
    store: TaskStore, clock: Clock
) -> None:
    first, first_run = running_task(store, clock)
    second = queued_task(store, clock)

    refused = store.claim(
        second, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock(), max_running_in_org=1
    )
    assert refused is None and store.get_task(second).status == TaskStatus.QUEUED  # type: ignore[union-attr]

    store.complete(first, first_run, result={}, usage=Usage(), transcript=None, now=clock())
    claimed = store.claim(
        second, run_id=new_id(), worker_id="w", lease_until=clock() + LEASE, now=clock(), max_running_in_org=1
    )
    assert claimed is not None


def test_queue_runnable_tasks_queues_all_with_their_agents_kinds_in_the_given_order(
    store: TaskStore, clock: Clock
) -> None:
    research = make_agent(store, clock(), organization_id=ORG, kind="research")
    general = make_agent(store, clock(), organization_id=ORG)
    ids = [
        store.create_task(NewTask(agent_id=agent_id, organization_id=ORG, title="t"), now=clock()).id
        for agent_id in (research, general, research)
    ]
    due = clock() + timedelta(seconds=5)

    queued = store.queue_runnable_tasks(ids[::-1], kinds=KINDS, priority=4, run_at=due, now=clock())

    assert queued is not None
    assert [item.task.id for item in queued] == ids[::-1]
    assert [item.agent_kind for item in queued] == ["research", "general", "research"]
    assert all(item.task.status == TaskStatus.QUEUED and item.task.priority == 4 for item in queued)
    assert all(item.task.run_at == due and item.task.queued_at == clock() for item in queued)
    assert store.queue_runnable_tasks(ids, kinds=KINDS, priority=None, run_at=due, now=clock()) is None


@pytest.mark.parametrize("spoiler", ["missing", "not-pending", "inactive-agent", "kind-without-actor"])
def test_queue_runnable_tasks_changes_none_when_one_cannot_be_queued(
    store: TaskStore, clock: Clock, spoiler: str
) -> None:
    good = [new_task(store, clock) for _ in range(2)]
    if spoiler == "missing":
        bad = new_id()
    elif spoiler == "not-pending":
        bad = queued_task(store, clock)
    else:
        fields = {"is_active": False} if spoiler == "inactive-agent" else {"kind": "unknown"}
        agent_id = make_agent(store, clock(), organization_id=ORG, **fields)
        bad = store.create_task(NewTask(agent_id=agent_id, organization_id=ORG, title="t"), now=clock()).id

    queued = store.queue_runnable_tasks([*good, bad], kinds=KINDS, priority=None, run_at=clock(), now=clock())

    assert queued is None
    assert all(store.get_task(task_id).status == TaskStatus.PENDING for task_id in good)  # type: ignore[union-attr]
