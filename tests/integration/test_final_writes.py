"""Nothing stays ``running``: final writes the database refuses or cannot take, and claims during an
outage, on real Postgres (through a TCP proxy the tests cut) with the real middleware stack."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest

from actors.agent_actor import AgentActor, AgentFunction, AgentJob, agent_actor
from middleware import StalledJobs, task_lifecycle
from middleware.task_lifecycle import AttemptResult, TaskLifecycle
from taskstore import RunStatus, TaskStatus, Usage, utcnow
from taskstore.postgres import PostgresTaskStore
from tests.acceptance.processes import TcpProxy
from tests.harness import Harness, stub_harness, wait_until

pytestmark = pytest.mark.integration

LIFECYCLE = "agentq.lifecycle"
PUT_BACK = "task store unavailable"
#: More tokens than the ``int`` usage columns hold: Postgres refuses the write (a data error).
TOO_MANY_TOKENS = 3_000_000_000


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    with TcpProxy() as proxy:
        yield proxy


@pytest.fixture
def proxied_store(
    postgres_store: PostgresTaskStore, postgres_url: str, proxy: TcpProxy
) -> Iterator[PostgresTaskStore]:
    """The store on the session's (emptied) database, through ``proxy``; gives up on a connection in 1 s."""
    store = PostgresTaskStore(proxy.through(postgres_url), max_size=4, timeout_s=1.0)
    yield store
    store.close()


@pytest.fixture
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Final writes retried twice, quickly, instead of for about 30 s."""
    monkeypatch.setattr(task_lifecycle, "_STORE_RETRY_DELAYS", (0.05, 0.05))


def declare(app: Harness, kind: str, **options: Any) -> Callable[[AgentFunction], AgentActor]:
    return agent_actor(
        kind=kind,
        store=app.store,
        orchestrator=app.runtime.orchestrator,
        broker=app.broker,
        budget=app.runtime.budget,
        **options,
    )


def lifecycle_of(app: Harness) -> TaskLifecycle:
    return next(m for m in app.broker.middleware if isinstance(m, TaskLifecycle))


def test_a_result_the_database_refuses_becomes_a_failed_attempt_with_a_readable_error(
    postgres_store: PostgresTaskStore, caplog: pytest.LogCaptureFixture
) -> None:
    with stub_harness(postgres_store) as app:

        @declare(app, "huge_usage", max_retries=1)
        def huge_usage(job: AgentJob) -> AttemptResult:
            return AttemptResult(result={"output": "ok"}, usage=Usage(input_tokens=TOO_MANY_TOKENS))

        task_id = app.task(app.agent(kind="huge_usage"))
        app.queue.add_task(task_id)
        with caplog.at_level(logging.INFO, logger=LIFECYCLE), app.worker() as worker:
            app.drain(worker)

    task = postgres_store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.FAILED, task
    assert task.error is not None
    assert task.error.startswith(f"the end of this attempt of task {task_id} could not be stored: ")
    assert "out of range" in task.error
    assert [run.status for run in postgres_store.get_runs(task_id)] == [RunStatus.FAILED, RunStatus.FAILED]
    refused = [m for m in caplog.messages if "the task store refused to record how run" in m]
    assert len(refused) == 2 and all(m.startswith(f"[AgentTaskQueue] ✗ Job {task_id}: ") for m in refused)
    assert f"[AgentTaskQueue] ⚠ Job {task_id} moved to dead letter queue after 2 attempts" in caplog.messages
    assert lifecycle_of(app).attempts.held() == []


@pytest.mark.usefixtures("fast_retries")
def test_a_final_write_the_database_cannot_take_releases_the_attempt_for_stalled_recovery(
    proxied_store: PostgresTaskStore,
    postgres_store: PostgresTaskStore,
    proxy: TcpProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with stub_harness(proxied_store) as app:

        @declare(app, "outage_at_the_end")
        def outage_at_the_end(job: AgentJob) -> AttemptResult:
            if job.task.stalled_count == 0:
                proxy.cut()  # the database goes away while the agent runs
            return AttemptResult(result={"output": f"done after {job.task.stalled_count} stall(s)"})

        task_id = app.task(app.agent(kind="outage_at_the_end"))
        app.queue.add_task(task_id)
        lifecycle = lifecycle_of(app)
        with caplog.at_level(logging.INFO, logger=LIFECYCLE), app.worker() as worker:
            app.drain(worker)
            released = [m for m in caplog.messages if "released: it will be recovered as stalled" in m]
            assert len(released) == 1 and released[0].startswith(f"[AgentTaskQueue] ✗ Job {task_id}: ")
            assert lifecycle.attempts.held() == []
            proxy.restore()  # reads below go straight to the database: the pool reconnects in its time
            task = postgres_store.get_task(task_id)
            assert task is not None and task.status == TaskStatus.RUNNING

            # The lease is not renewed any more, so once it runs out the task is recovered and re-run.
            later = utcnow() + timedelta(milliseconds=lifecycle.lease_ms + 1000)
            stalled = StalledJobs(postgres_store, lifecycle.attempts, clock=lambda: later)
            stalled.renew()
            assert [item.task_id for item in stalled.recover(app.broker)] == [task_id]
            app.drain(worker)

    task = postgres_store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.COMPLETED
    assert task.result == {"output": "done after 1 stall(s)"}
    assert [run.status for run in postgres_store.get_runs(task_id)] == [
        RunStatus.STALLED,
        RunStatus.COMPLETED,
    ]


def test_a_claim_while_the_database_is_unreachable_puts_the_message_back(
    proxied_store: PostgresTaskStore,
    postgres_store: PostgresTaskStore,
    proxy: TcpProxy,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with stub_harness(proxied_store) as app:
        task_id = app.task()
        app.queue.add_task(task_id)
        proxy.cut()
        with caplog.at_level(logging.INFO, logger=LIFECYCLE), app.worker(threads=1) as worker:
            wait_until(lambda: any(PUT_BACK in m for m in caplog.messages), timeout_s=15, what="a put-back")
            proxy.restore()  # the database is back before the message is offered again
            app.drain(worker)

    task = postgres_store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.COMPLETED
    assert task.attempts == 1 and len(postgres_store.get_runs(task_id)) == 1  # no attempt consumed
    put_back = next(m for m in caplog.messages if PUT_BACK in m)
    assert put_back.startswith("[AgentTaskQueue] Could not claim the task of message ")


def test_a_model_answer_with_a_nul_completes_on_postgres_without_it(
    postgres_store: PostgresTaskStore,
) -> None:
    answer = "forty\x00two \ud800"
    with stub_harness(postgres_store) as app:

        @declare(app, "nul_answer")
        def nul_answer(job: AgentJob) -> AttemptResult:
            return AttemptResult(
                result={"output": answer, "score": float("nan")},
                transcript=[{"type": "model", "content": answer}],
            )

        task_id = app.task(app.agent(kind="nul_answer"))
        app.queue.add_task(task_id)
        with app.worker() as worker:
            app.drain(worker)

    task = postgres_store.get_task(task_id)
    assert task is not None and task.status == TaskStatus.COMPLETED, task
    assert task.result == {"output": "fortytwo \ufffd", "score": None}
    [run] = postgres_store.get_runs(task_id)
    assert run.transcript == [{"type": "model", "content": "fortytwo \ufffd"}]
