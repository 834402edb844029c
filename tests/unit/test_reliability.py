"""Postponements, stalled tasks, shutdown cut-offs, reconciliation and dead letters (StubBroker, memory)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta

import pytest
from dramatiq import Worker

from middleware import Reconciler, StalledJobs
from middleware.attempts import AttemptRegistry
from taskstore import Claim, InMemoryTaskStore, RunStatus, TaskStatus, new_id, utcnow
from tests.harness import Harness, stub_harness, wait_until

LIFECYCLE = "agentq.lifecycle"


@pytest.fixture
def app() -> Iterator[Harness]:
    with stub_harness(InMemoryTaskStore(), max_postpones=3) as harness:
        yield harness


def middleware_of(app: Harness, kind: type) -> object:
    return next(m for m in app.broker.middleware if isinstance(m, kind))


def test_a_postponed_attempt_does_not_count(app: Harness, caplog: pytest.LogCaptureFixture) -> None:
    task_id = app.task(app.agent(kind="throttled"), context={"throttle": 2})
    app.queue.add_task(task_id)

    with caplog.at_level(logging.INFO, logger=LIFECYCLE), app.worker() as worker:
        app.drain(worker)

    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.COMPLETED
    assert job.attempts_made == 1 and job.task.postponed_count == 2
    assert [run.status for run in job.runs] == [RunStatus.POSTPONED, RunStatus.POSTPONED, RunStatus.COMPLETED]
    assert (
        caplog.messages.count(
            f"[AgentTaskQueue] Job {task_id} postponed for 10ms: rate limited; retry after 10ms"
        )
        == 2
    )
    assert not any("failed" in message for message in caplog.messages)


def test_postponements_past_the_cap_use_attempts_so_a_throttled_task_still_ends(app: Harness) -> None:
    task_id = app.task(app.agent(kind="throttled"), context={"throttle": 1000})
    app.queue.add_task(task_id)

    with app.worker() as worker:
        app.drain(worker)

    task = app.store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.FAILED
    assert (task.postponed_count, task.attempts) == (3, 3)


def test_a_stalled_task_is_recovered_once_logged_and_run_again(
    app: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = app.task()
    app.queue.add_task(task_id)
    # A worker that died mid-run: it claimed the task, its lease ran out, its message was acked.
    app.store.claim(
        task_id, run_id=new_id(), worker_id="dead", lease_until=utcnow() - timedelta(seconds=1), now=utcnow()
    )
    stalled = middleware_of(app, StalledJobs)
    assert isinstance(stalled, StalledJobs)

    with caplog.at_level(logging.INFO, logger=LIFECYCLE), app.worker() as worker:
        app.drain(worker)  # the original message is skipped: the task is running
        recovered = stalled.recover(app.broker)
        assert stalled.recover(app.broker) == []
        app.drain(worker)

    assert [item.task_id for item in recovered] == [task_id]
    task = app.store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.COMPLETED and task.stalled_count == 1
    assert [run.status for run in app.store.get_runs(task_id)] == [RunStatus.STALLED, RunStatus.COMPLETED]
    assert caplog.messages.count(f"[AgentTaskQueue] ⚠ Job {task_id} stalled - worker may have crashed") == 1


def test_a_task_stalling_past_the_limit_is_dead_lettered(
    app: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = app.task()
    app.queue.add_task(task_id)
    stalled = middleware_of(app, StalledJobs)
    assert isinstance(stalled, StalledJobs)
    with caplog.at_level(logging.INFO, logger=LIFECYCLE):
        for _ in range(2):
            app.store.claim(task_id, run_id=new_id(), worker_id="dead", lease_until=utcnow(), now=utcnow())
            stalled.recover(app.broker)

    job = app.queue.get_job(task_id)
    assert job is not None and job.status == TaskStatus.FAILED
    assert job.failed_reason == "job stalled more than allowable limit"
    assert (
        f"[AgentTaskQueue] ✗ Job {task_id} failed: job stalled more than allowable limit" in caplog.messages
    )
    assert [job.id for job in app.queue.list_dead_letters()] == [task_id]


def test_renewal_keeps_leases_alive_and_flags_runs_taken_over_elsewhere(app: Harness) -> None:
    task_id = app.task()
    app.queue.add_task(task_id)
    attempts = AttemptRegistry()
    stalled = StalledJobs(app.store, attempts, interval_ms=60_000)
    claim = app.store.claim(task_id, run_id=new_id(), worker_id="me", lease_until=utcnow(), now=utcnow())
    assert claim is not None
    attempt = attempts.add("message-1", claim)

    stalled.renew()
    assert app.store.get_task(task_id).lease_expires_at > utcnow() + timedelta(seconds=50)  # type: ignore[union-attr,operator]
    assert not attempt.lost

    app.store.recover_stalled(max_stalled_count=5, now=utcnow() + timedelta(minutes=5))  # taken over
    stalled.renew()
    assert attempt.lost


def test_the_reconciler_enqueues_a_task_its_producer_left_pending(
    app: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    forgotten = app.task()
    reconciler = Reconciler(app.store, pending_grace_ms=60_000, clock=lambda: utcnow() + timedelta(minutes=2))

    with caplog.at_level(logging.INFO, logger=LIFECYCLE), app.worker() as worker:
        report = reconciler.reconcile(app.broker)
        app.drain(worker)

    assert report.enqueued_pending == 1
    assert app.store.get_task(forgotten).status == TaskStatus.COMPLETED  # type: ignore[union-attr]
    assert (
        f"[AgentTaskQueue] Job {forgotten} was left pending by its producer; enqueueing it" in caplog.messages
    )


def test_the_reconciler_leaves_young_pending_tasks_and_scheduled_ones_alone(app: Harness) -> None:
    young = app.task()
    scheduled = app.task(task_type="scheduled")
    reconciler = Reconciler(
        app.store, pending_grace_ms=60_000, clock=lambda: utcnow() + timedelta(seconds=30)
    )

    assert reconciler.reconcile(app.broker).enqueued_pending == 0
    later = Reconciler(app.store, pending_grace_ms=60_000, clock=lambda: utcnow() + timedelta(minutes=5))
    assert later.reconcile(app.broker).enqueued_pending == 1
    assert app.store.get_task(young).status == TaskStatus.QUEUED  # type: ignore[union-attr]
    assert app.store.get_task(scheduled).status == TaskStatus.PENDING  # type: ignore[union-attr]


def test_retry_dead_letters_requeues_every_failed_job(app: Harness) -> None:
    crashing = app.agent(kind="crashing")
    ids = [app.task(crashing) for _ in range(3)]
    for task_id in ids:
        app.queue.add_task(task_id)
    with app.worker() as worker:
        app.drain(worker)
        assert sorted(job.id for job in app.queue.list_dead_letters()) == sorted(ids)

        assert app.queue.retry_dead_letters() == 3
        assert app.queue.list_dead_letters() == []
        app.drain(worker)

    assert all(len(app.store.get_runs(task_id)) == 6 for task_id in ids)


def test_dead_letter_listing_validates_its_arguments(app: Harness) -> None:
    with pytest.raises(ValueError, match="limit -1"):
        app.queue.list_dead_letters(limit=-1)
    with pytest.raises(ValueError, match="offset True"):
        app.queue.list_dead_letters(offset=True)


def test_a_task_outliving_the_shutdown_deadline_is_cut_off_and_recovered_as_stalled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with stub_harness(InMemoryTaskStore(), shutdown_timeout_ms=100) as app:
        task_id = app.task(context={"script": [{"answer": "late", "sleep_ms": 800}]})
        app.queue.add_task(task_id)
        worker = Worker(app.broker, worker_timeout=20, worker_threads=1)
        worker.start()
        wait_until(lambda: app.store.get_task(task_id).status == TaskStatus.RUNNING, what="the task to start")  # type: ignore[union-attr]

        with caplog.at_level(logging.INFO, logger=LIFECYCLE):
            worker.stop()

        task = app.store.get_task(task_id)
        assert task is not None and task.status == TaskStatus.RUNNING and task.result is None
        assert (
            f"[AgentTaskQueue] Job {task_id} cut off by shutdown; it will be recovered as stalled"
            in caplog.messages
        )
        recovered = app.store.recover_stalled(max_stalled_count=1, now=utcnow() + timedelta(minutes=1))
        assert [(item.task_id, item.requeued) for item in recovered] == [(task_id, True)]


def claimed_by(app: Harness, worker_id: str) -> Claim:
    task_id = app.task()
    app.queue.add_task(task_id)
    claim = app.store.claim(task_id, run_id=new_id(), worker_id=worker_id, lease_until=utcnow(), now=utcnow())
    assert claim is not None
    return claim


def test_renewal_leaves_alone_a_running_row_of_this_worker_whose_attempt_it_no_longer_holds(
    app: Harness,
) -> None:
    """An attempt whose final write failed is gone from memory: its row must expire and be recovered."""
    attempts = AttemptRegistry()
    stalled = StalledJobs(app.store, attempts, interval_ms=60_000)
    held, orphan = claimed_by(app, "me"), claimed_by(app, "me")
    attempts.add("held", held)

    stalled.renew()

    recovered = app.store.recover_stalled(max_stalled_count=5, now=utcnow() + timedelta(seconds=1))
    assert [item.task_id for item in recovered] == [orphan.task.id]
    assert app.store.get_task(held.task.id).status == TaskStatus.RUNNING  # type: ignore[union-attr]


def test_a_finishing_attempt_stays_renewed_until_released(app: Harness) -> None:
    attempts = AttemptRegistry()
    stalled = StalledJobs(app.store, attempts, interval_ms=60_000)
    claim = claimed_by(app, "me")
    attempts.add("message-1", claim)
    finishing = attempts.finishing("message-1")
    assert finishing is not None and attempts.running() == []

    stalled.renew()
    renewed_until = app.store.get_task(claim.task.id).lease_expires_at  # type: ignore[union-attr]
    attempts.release(finishing)
    stalled.renew()

    assert renewed_until is not None and renewed_until > utcnow() + timedelta(seconds=50)
    assert app.store.get_task(claim.task.id).lease_expires_at == renewed_until  # type: ignore[union-attr]
    assert attempts.held() == []
